//! A real S3-compatible server for the tests: moto's server mode (PyPI
//! `moto[server]`). `./dev` installs it in a virtualenv and sets
//! `TANDEM_MOTO_SERVER`; without that variable, `moto_server` is looked up
//! on the PATH. A test that needs it fails (never skips) without it.
//!
//! moto keeps objects in memory: a restarted server is empty.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, WAIT};

pub struct S3Server {
    child: Option<Child>,
    pub port: u16,
    log: PathBuf,
}

impl S3Server {
    /// Starts a server on a free loopback port, logging to `log_dir/name.log`.
    pub fn start(log_dir: &Path, name: &str) -> S3Server {
        let mut s = S3Server { child: None, port: free_port(), log: log_dir.join(format!("{name}.log")) };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let program = std::env::var("TANDEM_MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start moto's S3 server ({program}): {e}. `./dev test` installs it (pip: moto[server]); or set TANDEM_MOTO_SERVER")
            });
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while self.request("GET", "/", "").map(|(status, _)| status) != Some(200) {
            assert!(Instant::now() < deadline, "moto's S3 server did not answer on port {} within {WAIT:?}", self.port);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One HTTP/1.1 request; (status, body), or None when nothing answers.
    /// moto checks no signatures, so none is made.
    fn request(&self, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
        super::http(&format!("127.0.0.1:{}", self.port), method, path, body)
    }

    pub fn create_bucket(&self, bucket: &str) {
        let (status, body) = self.request("PUT", &format!("/{bucket}"), "").expect("moto answers");
        assert_eq!(status, 200, "cannot create bucket {bucket}: {body}");
    }

    /// The keys in `bucket` under `prefix` (up to 1000, which the tests
    /// stay well under).
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let (status, body) = self.request("GET", &format!("/{bucket}?list-type=2&prefix={prefix}"), "").expect("moto answers");
        assert_eq!(status, 200, "cannot list bucket {bucket}: {body}");
        body.split("<Key>").skip(1).filter_map(|k| k.split_once("</Key>").map(|(k, _)| k.to_string())).collect()
    }

    /// SIGKILL: the store stops answering at once, mid-request.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty: moto keeps nothing).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}
