//! Prometheus text exposition: a small builder for the text format, and the
//! families every daemon exports alike (`tandem_build_info`, `process_*`).
//! Each daemon renders its own figures on every scrape (no background
//! collection), so what Prometheus sees is what the daemon knows at that
//! moment. [`crate::endpoints`] serves the page.
//!
//! The page carries operational figures only (no contract data, no PII, no
//! keys).

use std::fmt::Write;
use std::sync::Arc;

/// What a scrape returns, rendered on demand.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// The text format, one metric family at a time.
#[derive(Default)]
pub struct Text {
    out: String,
}

/// One labelled series of a histogram (see [`Text::histogram`]).
pub struct HistogramSample {
    pub labels: Vec<(&'static str, String)>,
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum: f64,
}

/// Kind of a metric family.
#[derive(Clone, Copy)]
pub enum Kind {
    Gauge,
    Counter,
}

impl Text {
    pub fn new() -> Self {
        Self::default()
    }

    /// A family with one sample per (labels, value). A family with no
    /// samples still gets its HELP and TYPE lines, so dashboards can tell
    /// "none" from "not exported".
    pub fn family(&mut self, name: &str, kind: Kind, help: &str, samples: &[(Vec<(&str, String)>, f64)]) -> &mut Self {
        let kind = match kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            self.out.push_str(name);
            if !labels.is_empty() {
                let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
                let _ = write!(self.out, "{{{}}}", labels.join(","));
            }
            let _ = writeln!(self.out, " {value}");
        }
        self
    }

    /// A family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) -> &mut Self {
        self.family(name, kind, help, &[(Vec::new(), value)])
    }

    pub fn finish(self) -> String {
        self.out
    }

    /// A histogram family: per labels, the count in each bucket (not yet
    /// cumulative; `bounds` are the buckets' upper bounds, ascending), the
    /// total count and the sum of the observations.
    pub fn histogram(&mut self, name: &str, help: &str, bounds: &[f64], samples: &[HistogramSample]) -> &mut Self {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for h in samples {
            let labels: Vec<String> = h.labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let with_le = |le: &str| {
                let mut l = labels.clone();
                l.push(format!("le=\"{le}\""));
                l.join(",")
            };
            let mut cumulative = 0;
            for (bound, n) in bounds.iter().zip(&h.buckets) {
                cumulative += n;
                let _ = writeln!(self.out, "{name}_bucket{{{}}} {cumulative}", with_le(&bound.to_string()));
            }
            let _ = writeln!(self.out, "{name}_bucket{{{}}} {}", with_le("+Inf"), h.count);
            let labels = if labels.is_empty() { String::new() } else { format!("{{{}}}", labels.join(",")) };
            let _ = writeln!(self.out, "{name}_sum{labels} {}\n{name}_count{labels} {}", h.sum, h.count);
        }
        self
    }

    /// `tandem_build_info` (which build runs, as labels) and the standard
    /// `process_*` families Prometheus client libraries export: resident
    /// memory, CPU seconds, open file descriptors and their limit, start
    /// time. Read from /proc/self; a family /proc cannot give is left out.
    pub fn build_and_process(&mut self, daemon: &str) -> &mut Self {
        let b = crate::version::current();
        self.family(
            "tandem_build_info",
            Kind::Gauge,
            "Which build this daemon runs (always 1; the labels say it).",
            &[(vec![("daemon", daemon.to_string()), ("version", b.version), ("commit", b.commit), ("built", b.built)], 1.0)],
        );
        let p = crate::process::read();
        if let Some(v) = p.resident_bytes {
            self.single("process_resident_memory_bytes", Kind::Gauge, "Resident memory size in bytes.", v as f64);
        }
        if let Some(v) = p.virtual_bytes {
            self.single("process_virtual_memory_bytes", Kind::Gauge, "Virtual memory size in bytes.", v as f64);
        }
        if let Some(v) = p.cpu_seconds {
            self.single("process_cpu_seconds_total", Kind::Counter, "User and system CPU time spent in seconds.", v);
        }
        if let Some(v) = p.open_fds {
            self.single("process_open_fds", Kind::Gauge, "Number of open file descriptors.", v as f64);
        }
        if let Some(v) = p.max_fds {
            self.single("process_max_fds", Kind::Gauge, "Maximum number of open file descriptors.", v as f64);
        }
        if let Some(v) = p.start_time_seconds {
            self.single("process_start_time_seconds", Kind::Gauge, "Start time of the process since unix epoch in seconds.", v);
        }
        self
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_in_the_text_format() {
        let mut t = Text::new();
        t.family("tandem_lag_entries", Kind::Gauge, "Entries behind.", &[(vec![("peer", "b".into())], 3.0), (vec![("peer", "c\"x".into())], 0.0)]);
        t.single("tandem_up", Kind::Gauge, "Up.", 1.0);
        assert_eq!(
            t.finish(),
            "# HELP tandem_lag_entries Entries behind.\n# TYPE tandem_lag_entries gauge\n\
             tandem_lag_entries{peer=\"b\"} 3\ntandem_lag_entries{peer=\"c\\\"x\"} 0\n\
             # HELP tandem_up Up.\n# TYPE tandem_up gauge\ntandem_up 1\n"
        );
    }

    #[test]
    fn histograms_render_cumulative_buckets() {
        let mut t = Text::new();
        let sample = HistogramSample { labels: vec![("op", "get".into())], buckets: vec![2, 0, 1], count: 4, sum: 7.5 };
        t.histogram("tandem_x_seconds", "X.", &[0.1, 1.0, 5.0], &[sample]);
        assert_eq!(
            t.finish(),
            "# HELP tandem_x_seconds X.\n# TYPE tandem_x_seconds histogram\n\
             tandem_x_seconds_bucket{op=\"get\",le=\"0.1\"} 2\ntandem_x_seconds_bucket{op=\"get\",le=\"1\"} 2\n\
             tandem_x_seconds_bucket{op=\"get\",le=\"5\"} 3\ntandem_x_seconds_bucket{op=\"get\",le=\"+Inf\"} 4\n\
             tandem_x_seconds_sum{op=\"get\"} 7.5\ntandem_x_seconds_count{op=\"get\"} 4\n"
        );
    }
}
