//! Latency samples and their summary (percentiles), printed as a table row or JSON.

use std::time::Duration;

use serde_json::{Value, json};

/// Percentiles of a set of durations, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    /// Nearest-rank percentiles; all zero for no samples.
    pub fn of(samples: &[Duration]) -> Summary {
        if samples.is_empty() {
            return Summary::default();
        }
        let mut v: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        v.sort_by(f64::total_cmp);
        let q = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Summary { count: v.len(), p50: q(0.50), p95: q(0.95), p99: q(0.99), max: v[v.len() - 1] }
    }

    pub fn json(&self) -> Value {
        json!({"count": self.count, "p50_ms": r3(self.p50), "p95_ms": r3(self.p95), "p99_ms": r3(self.p99), "max_ms": r3(self.max)})
    }

    /// `p50 1.23 ms  p95 …` for a human table.
    pub fn line(&self) -> String {
        format!(
            "n={:<6} p50 {:>8.2} ms  p95 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
            self.count, self.p50, self.p95, self.p99, self.max
        )
    }
}

/// Rounds to 3 decimals for JSON output.
pub fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Sum of the Prometheus samples of `metric` whose labels contain every `key="value"` in
/// `labels` (one of the values when several are given for a key, e.g. verdicts).
pub fn metric_sum(text: &str, metric: &str, labels: &[(&str, &[&str])]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(metric)?;
            let (labelset, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once('}')?,
                None => ("", rest),
            };
            let ok = labels.iter().all(|(k, vals)| vals.iter().any(|v| labelset.contains(&format!("{k}=\"{v}\""))));
            (ok && (rest.starts_with('{') || rest.starts_with(' '))).then(|| value.trim().parse::<f64>().ok())?
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = Summary::of(&v);
        assert_eq!((s.count, s.p50, s.p95, s.p99, s.max), (100, 50.0, 95.0, 99.0, 100.0));
        assert_eq!(Summary::of(&[]).count, 0);
    }

    #[test]
    fn metric_sum_filters_labels() {
        let t = "# HELP x\nvc_total{kind=\"presence\",verdict=\"accepted\"} 3\nvc_total{kind=\"presence\",verdict=\"ignored\"} 2\n\
                 vc_total{kind=\"room_info\",verdict=\"accepted\"} 7\nvc_total_other 9\nvc_peers 4\n";
        assert_eq!(metric_sum(t, "vc_total", &[("kind", &["presence"]), ("verdict", &["accepted", "ignored"])]), 5.0);
        assert_eq!(metric_sum(t, "vc_peers", &[]), 4.0);
    }
}
