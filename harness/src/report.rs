//! The run's verdict, written as `summary.json` and told to a person: which step failed, what it
//! waited for and how long, the console tail, and where every artifact is.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::expect::{Judgement, Outcome, StepStatus, Verdict};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub scenario: String,
    pub file: String,
    pub started_at: String,
    pub accel: String,
    pub timeout_scale: f64,
    /// `passed`, `failed`, `interrupted` or `error` (the harness itself could not run the boot).
    pub verdict: String,
    /// Whether the run did what the scenario expects (an expected failure counts as ok).
    pub ok: bool,
    pub message: String,
    pub failed_step: Option<FailedStep>,
    pub steps: Vec<StepSummary>,
    /// Seconds from the lab's start to the end of the steps.
    pub duration_s: f64,
    /// Seconds from the lab's start to each guest's QEMU start.
    pub qemu_started_at: BTreeMap<String, f64>,
    /// Artifact files, relative to the run directory, with what each holds.
    pub artifacts: Vec<Artifact>,
    pub console_tail: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailedStep {
    pub name: String,
    pub reason: String,
    pub waited_s: f64,
    pub within_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepSummary {
    pub name: String,
    pub node: String,
    pub status: String,
    pub started_at: f64,
    pub met_at: Option<f64>,
    pub waited_s: f64,
    pub within_s: f64,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Artifact {
    pub path: String,
    pub what: String,
}

impl Summary {
    /// A summary for a run that never reached its steps (lab or services failed to start).
    pub fn error(scenario: &str, file: &Path, message: String) -> Summary {
        Summary {
            scenario: scenario.to_string(),
            file: file.display().to_string(),
            started_at: now_rfc3339(),
            accel: String::new(),
            timeout_scale: 1.0,
            verdict: "error".into(),
            ok: false,
            message,
            failed_step: None,
            steps: Vec::new(),
            duration_s: 0.0,
            qemu_started_at: BTreeMap::new(),
            artifacts: Vec::new(),
            console_tail: BTreeMap::new(),
        }
    }

    pub fn from_outcome(base: Summary, outcome: &Outcome, judgement: &Judgement) -> Summary {
        let verdict = match &outcome.verdict {
            Verdict::Passed => "passed",
            Verdict::Failed { .. } => "failed",
            Verdict::Interrupted { .. } => "interrupted",
        };
        let failed_step = match &outcome.verdict {
            Verdict::Failed {
                step,
                reason,
                waited,
                within,
            } => Some(FailedStep {
                name: step.clone(),
                reason: reason.clone(),
                waited_s: *waited,
                within_s: *within,
            }),
            Verdict::Interrupted { step } => Some(FailedStep {
                name: step.clone(),
                reason: "interrupted (Ctrl-C or SIGTERM)".into(),
                waited_s: 0.0,
                within_s: 0.0,
            }),
            Verdict::Passed => None,
        };
        let steps = outcome
            .steps
            .iter()
            .map(|s| StepSummary {
                name: s.name.clone(),
                node: s.node.clone(),
                status: match s.status {
                    StepStatus::Met => "met",
                    StepStatus::Failed => "failed",
                    StepStatus::Skipped => "skipped",
                }
                .into(),
                started_at: s.started_at,
                met_at: s.met_at,
                waited_s: s.waited,
                within_s: s.within,
                detail: s.detail.clone(),
            })
            .collect();
        Summary {
            verdict: verdict.into(),
            ok: judgement.ok,
            message: judgement.message.clone(),
            failed_step,
            steps,
            console_tail: outcome.console_tails.clone(),
            ..base
        }
    }

    pub fn write(&self, run_dir: &Path) -> std::io::Result<PathBuf> {
        let p = run_dir.join("summary.json");
        let tmp = run_dir.join(".summary.json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&tmp, &p)?;
        Ok(p)
    }

    pub fn read(run_dir: &Path) -> std::io::Result<Summary> {
        let bytes = std::fs::read(run_dir.join("summary.json"))?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
    }
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// The report a person reads at the end of a run.
pub fn render_text(s: &Summary, run_dir: &Path) -> String {
    let mut o = String::new();
    let head = if s.ok { "OK" } else { "NOT OK" };
    let _ = writeln!(
        o,
        "{head}: scenario {} {} in {:.1}s ({}{})",
        s.scenario,
        s.verdict.to_uppercase(),
        s.duration_s,
        if s.accel.is_empty() { "?" } else { &s.accel },
        if (s.timeout_scale - 1.0).abs() > f64::EPSILON {
            format!(", timeouts x{}", s.timeout_scale)
        } else {
            String::new()
        }
    );
    if !s.message.is_empty() {
        let _ = writeln!(o, "  {}", s.message);
    }
    if !s.steps.is_empty() {
        let _ = writeln!(o, "  {:<8} {:>8} {:>8}  step", "status", "at", "took");
        for st in &s.steps {
            let mark = match st.status.as_str() {
                "met" => "ok",
                "failed" if s.verdict == "interrupted" => "STOPPED",
                "failed" => "FAILED",
                _ => "-",
            };
            let at = st
                .met_at
                .map(|t| format!("{t:.1}s"))
                .unwrap_or_else(|| "-".into());
            let took = if st.status == "skipped" {
                "-".to_string()
            } else {
                format!("{:.1}s", st.waited_s)
            };
            let _ = writeln!(o, "  {mark:<8} {at:>8} {took:>8}  {}", st.name);
        }
    }
    if let Some(f) = &s.failed_step {
        let _ = writeln!(o, "  failing step: {}", f.name);
        let _ = writeln!(o, "  reason: {}", f.reason);
        if f.within_s > 0.0 {
            let _ = writeln!(
                o,
                "  waited {:.1}s of the {:.0}s it was allowed",
                f.waited_s, f.within_s
            );
        }
    }
    if !s.ok || s.verdict != "passed" {
        for (node, tail) in &s.console_tail {
            let _ = writeln!(o, "  last {} console lines of {node}:", tail.len());
            for l in tail {
                let _ = writeln!(o, "    | {l}");
            }
        }
    }
    let _ = writeln!(o, "  artifacts: {}", run_dir.display());
    for a in &s.artifacts {
        let _ = writeln!(o, "    {:<28} {}", a.path, a.what);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_summary_round_trips_and_renders() {
        let dir = std::env::temp_dir().join(format!("nbh-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = Summary::error(
            "demo",
            Path::new("scenarios/demo.yaml"),
            "tgtd did not start".into(),
        );
        s.artifacts.push(Artifact {
            path: "tgtd.log".into(),
            what: "iSCSI target log".into(),
        });
        s.write(&dir).unwrap();
        let back = Summary::read(&dir).unwrap();
        assert_eq!(back.verdict, "error");
        assert!(!back.ok);
        let text = render_text(&back, &dir);
        assert!(text.starts_with("NOT OK: scenario demo ERROR"), "{text}");
        assert!(text.contains("tgtd did not start"), "{text}");
        assert!(text.contains("tgtd.log"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
