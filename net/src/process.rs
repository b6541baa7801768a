//! The process's own resource use, read from Linux's /proc, for the
//! `process_*` metric families. Each figure is optional: a /proc that does
//! not give one (another OS, a hardened container) leaves it out rather
//! than reporting a made-up zero.

#[derive(Debug, Default, PartialEq)]
pub struct Usage {
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

/// /proc reports CPU times in USER_HZ, which the kernel fixes at 100 for
/// every user-space ABI (sysconf(_SC_CLK_TCK)).
const TICKS_PER_SECOND: f64 = 100.0;

pub fn read() -> Usage {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let boot = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64);
    parse(&status, &stat, &boot, &limits, open_fds)
}

/// The figures from the texts of /proc/self/status, /proc/self/stat,
/// /proc/stat and /proc/self/limits.
fn parse(status: &str, stat: &str, boot: &str, limits: &str, open_fds: Option<u64>) -> Usage {
    let kib = |key: &str| {
        status.lines().find_map(|l| l.strip_prefix(key)).and_then(|rest| rest.split_whitespace().next()).and_then(|v| v.parse::<u64>().ok()).map(|v| v * 1024)
    };
    // Fields after the command name, which is in parentheses and may hold
    // spaces: the state is field 3, utime 14, stime 15, starttime 22.
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let cpu_seconds = match (field(14), field(15)) {
        (Some(u), Some(s)) => Some((u + s) as f64 / TICKS_PER_SECOND),
        _ => None,
    };
    let btime = boot.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse::<u64>().ok());
    let start_time_seconds = match (btime, field(22)) {
        (Some(b), Some(t)) => Some(b as f64 + t as f64 / TICKS_PER_SECOND),
        _ => None,
    };
    let max_fds =
        limits.lines().find_map(|l| l.strip_prefix("Max open files")).and_then(|rest| rest.split_whitespace().next()).and_then(|v| v.parse::<u64>().ok());
    Usage { resident_bytes: kib("VmRSS:"), virtual_bytes: kib("VmSize:"), cpu_seconds, open_fds, max_fds, start_time_seconds }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_come_from_the_proc_texts() {
        let status = "Name:\ttandem\nVmSize:\t  2048 kB\nVmRSS:\t    512 kB\n";
        // A command name with a space and a parenthesis in it.
        let stat = "42 (tan dem)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 1000 2097152 128 18446744073709551615";
        let boot = "cpu  1 2 3\nbtime 1700000000\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 4096                 files\n";
        let u = parse(status, stat, boot, limits, Some(7));
        assert_eq!(u.resident_bytes, Some(512 * 1024));
        assert_eq!(u.virtual_bytes, Some(2048 * 1024));
        assert_eq!(u.cpu_seconds, Some(3.0));
        assert_eq!(u.start_time_seconds, Some(1_700_000_010.0));
        assert_eq!(u.max_fds, Some(1024));
        assert_eq!(u.open_fds, Some(7));
    }

    #[test]
    fn a_missing_proc_gives_no_figures() {
        assert_eq!(parse("", "", "", "", None), Usage::default());
    }

    #[test]
    fn this_process_reports_its_memory_and_descriptors() {
        let u = read();
        assert!(u.resident_bytes.unwrap_or(0) > 0, "{u:?}");
        assert!(u.open_fds.unwrap_or(0) > 0, "{u:?}");
    }
}
