//! One row per node: in a fleet the question is "which node, and how far did it get", which a
//! list of 50 steps answers badly. The same rows go into the text report and into the run's
//! own JUnit file (`junit.xml`: one test case per node, so CI shows a fleet node by node).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{Summary, HARNESS_PANIC};
use crate::scenario::Phase;

/// How far one node got.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRow {
    pub node: String,
    /// `passed` (every step of the node met), `failed` (one of its steps failed), `stopped`
    /// (the run was interrupted or the harness failed during its step) or `not reached` (the
    /// run ended on another node's failure before this node's steps were done).
    pub status: &'static str,
    pub powered_on_at: Option<f64>,
    /// When its root-mounted step was met (a step with `phase: root-mounted`).
    pub root_at: Option<f64>,
    pub met: usize,
    pub steps: usize,
    /// Its last step met, with the time.
    pub last_met: Option<(String, f64)>,
    /// The step of this node that failed.
    pub failed: Option<String>,
    /// Seconds from its power-on to its last step met.
    pub took_s: f64,
}

/// Every node of the run, in the order the steps and QEMU starts name them.
pub fn rows(s: &Summary) -> Vec<NodeRow> {
    let mut names: Vec<&String> = Vec::new();
    for n in s
        .qemu_started_at
        .keys()
        .chain(s.steps.iter().map(|st| &st.node))
    {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    names.sort();
    names
        .into_iter()
        .map(|node| {
            let own: Vec<_> = s.steps.iter().filter(|st| &st.node == node).collect();
            let met: Vec<_> = own.iter().filter(|st| st.status == "met").collect();
            let failed = own.iter().find(|st| st.status == "failed");
            let status = match failed {
                Some(_) if s.verdict == "interrupted" || s.verdict == HARNESS_PANIC => "stopped",
                Some(_) => "failed",
                None if met.len() == own.len() => "passed",
                None => "not reached",
            };
            let last_met = met
                .iter()
                .filter_map(|st| st.met_at.map(|t| (st.name.clone(), t)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            let powered_on_at = s.qemu_started_at.get(node).copied();
            NodeRow {
                node: node.clone(),
                status,
                powered_on_at,
                root_at: met
                    .iter()
                    .filter(|st| st.phase == Some(Phase::RootMounted))
                    .find_map(|st| st.met_at),
                met: met.len(),
                steps: own.len(),
                took_s: last_met
                    .as_ref()
                    .map(|(_, t)| t - powered_on_at.unwrap_or(0.0))
                    .unwrap_or(0.0),
                last_met,
                failed: failed.map(|st| st.name.clone()),
            }
        })
        .collect()
}

/// The rows as the text report shows them (for runs of more than one node).
pub fn render(rows: &[NodeRow]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "  {:<10} {:<11} {:>8} {:>8} {:>7}  last step met, or the one that failed",
        "node", "status", "power-on", "root", "steps"
    );
    let secs = |t: Option<f64>| t.map(|t| format!("{t:.1}s")).unwrap_or_else(|| "-".into());
    for r in rows {
        let what = match (&r.failed, &r.last_met) {
            (Some(f), _) if r.status == "stopped" => format!("STOPPED in: {f}"),
            (Some(f), _) => format!("FAILED: {f}"),
            (None, Some((name, at))) => format!("{name} at {at:.1}s"),
            (None, None) => "-".into(),
        };
        let _ = writeln!(
            o,
            "  {:<10} {:<11} {:>8} {:>8} {:>7}  {what}",
            r.node,
            r.status,
            secs(r.powered_on_at),
            secs(r.root_at),
            format!("{}/{}", r.met, r.steps),
        );
    }
    o
}

/// A JUnit file with one test case per node; its steps are the case's output.
pub fn junit(s: &Summary) -> String {
    let rows = rows(s);
    let esc = super::timeline::esc;
    let failures = rows
        .iter()
        .filter(|r| matches!(r.status, "failed" | "stopped"))
        .count();
    let mut o = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        o,
        "<testsuites name=\"netboot-harness\" tests=\"{}\" failures=\"{failures}\" time=\"{:.3}\">",
        rows.len(),
        s.duration_s
    );
    let _ = writeln!(
        o,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" time=\"{:.3}\" timestamp=\"{}\">",
        esc(&s.scenario),
        rows.len(),
        s.duration_s,
        esc(&s.started_at)
    );
    for r in &rows {
        let _ = writeln!(
            o,
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\">",
            esc(&s.scenario),
            esc(&r.node),
            r.took_s
        );
        match r.status {
            "failed" | "stopped" => {
                let reason = s
                    .failed_step
                    .as_ref()
                    .filter(|f| Some(&f.name) == r.failed.as_ref())
                    .map(|f| f.reason.clone())
                    .unwrap_or_else(|| format!("the run was {}", s.verdict));
                let _ = writeln!(
                    o,
                    "      <failure message=\"{}\" type=\"{}\">{}</failure>",
                    esc(&format!("{}: {reason}", r.failed.as_deref().unwrap_or("?"))),
                    esc(r.status),
                    esc(&reason)
                );
            }
            "not reached" => {
                let _ = writeln!(
                    o,
                    "      <skipped message=\"{}\"/>",
                    esc(&format!(
                        "the run ended ({}) before this node's steps were done: {} of {} met",
                        s.verdict, r.met, r.steps
                    ))
                );
            }
            _ => {}
        }
        let mut out = String::new();
        for st in s.steps.iter().filter(|st| st.node == r.node) {
            let at = st
                .met_at
                .map(|t| format!("{t:.1}s"))
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(out, "{:<8} {at:>8}  {}", st.status, st.name);
        }
        let _ = writeln!(o, "      <system-out>{}</system-out>", esc(&out));
        let _ = writeln!(o, "    </testcase>");
    }
    let _ = writeln!(o, "  </testsuite>\n</testsuites>");
    o
}

/// Writes `junit.xml` into the run directory.
pub fn write_junit(s: &Summary, run_dir: &Path) -> std::io::Result<PathBuf> {
    let p = run_dir.join("junit.xml");
    std::fs::write(&p, junit(s))?;
    Ok(p)
}
