//! The scenarios: each starts its own testnet, measures, and returns a [`Report`] whose
//! `ok` is its correctness condition.

pub mod convergence;
pub mod crash;
pub mod cascade;
pub mod lecture;
pub mod load;
pub mod partition;
pub mod relay;
pub mod stage_partition;
pub mod turn;

use serde_json::Value;

/// What a scenario found.
#[derive(Debug, Clone)]
pub struct Report {
    pub scenario: &'static str,
    /// The correctness condition held.
    pub ok: bool,
    /// Why not, when `ok` is false (or why it was skipped).
    pub failures: Vec<String>,
    /// Figures, for `--json`.
    pub figures: Value,
    /// The human table.
    pub table: String,
}

impl Report {
    pub fn json(&self) -> Value {
        let mut v = self.figures.clone();
        v["scenario"] = self.scenario.into();
        v["ok"] = self.ok.into();
        v["failures"] = self.failures.clone().into();
        v
    }

    /// Turns a failed report into an error (for tests).
    pub fn check(self) -> anyhow::Result<Report> {
        if self.ok {
            Ok(self)
        } else {
            anyhow::bail!("{} failed: {:?}\n{}", self.scenario, self.failures, self.table)
        }
    }
}

/// The milliseconds of a duration, 3 decimals.
pub fn ms(d: std::time::Duration) -> f64 {
    crate::stats::r3(d.as_secs_f64() * 1e3)
}
