//! `tandem probe ready|health --addr HOST:PORT`: asks a daemon's plain-HTTP
//! listener (its `metrics_listen`) whether it is alive or serving, prints
//! the JSON answer and exits 0 only on 200. For container healthchecks and
//! scripts on hosts without curl.

use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Endpoint {
    /// `/health`: the process is alive and answers.
    Health,
    /// `/ready`: it serves (controller: knows a leader and the layout;
    /// replicator: holds a controller view under a current lease).
    Ready,
}

#[derive(clap::Args)]
pub struct Args {
    /// Which page to ask.
    #[arg(value_enum)]
    pub endpoint: Endpoint,
    /// The daemon's `metrics_listen` address.
    #[arg(long)]
    pub addr: String,
    /// Upper bound on the whole request, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let path = match args.endpoint {
        Endpoint::Health => "/health",
        Endpoint::Ready => "/ready",
    };
    let (status, body) = tokio::time::timeout(Duration::from_millis(args.timeout_ms), get(&args.addr, path))
        .await
        .map_err(|_| anyhow::anyhow!("{} did not answer {path} within {} ms", args.addr, args.timeout_ms))??;
    print!("{body}");
    if status != 200 {
        anyhow::bail!("{} answered {path} with HTTP {status}", args.addr);
    }
    Ok(())
}

/// One HTTP/1.0 GET (the server closes after answering): status and body.
async fn get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("cannot connect to {addr}"))?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await.with_context(|| format!("cannot send to {addr}"))?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.with_context(|| format!("cannot read the answer of {addr}"))?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| anyhow::anyhow!("{addr} answered something that is not HTTP"))?;
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok()).ok_or_else(|| anyhow::anyhow!("{addr} answered without an HTTP status"))?;
    Ok((status, body.to_string()))
}
