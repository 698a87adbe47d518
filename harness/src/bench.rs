//! `bench`: the same scenario N times in a row, with the median and spread of every step's
//! duration, so a change to an image or the chain shows up as numbers, not as a flaky timeout.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::report::Summary;
use crate::run::{self, RunOptions};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stat {
    pub fn of(values: &[f64]) -> Option<Stat> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Stat {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub scenario: String,
    pub runs: usize,
    pub passed: usize,
    /// Step name -> time it took (from the previous step's end), over the runs where it was met.
    pub steps: Vec<(String, Stat)>,
    /// Step name -> time since QEMU started when it was met.
    pub reached_at: Vec<(String, Stat)>,
    /// Wall time of each whole `run`, image check and teardown included.
    pub wall: Option<Stat>,
    /// Wall time outside the lab's own clock: image check, disk copy, namespaces, teardown.
    pub overhead: Option<Stat>,
    pub run_dirs: Vec<PathBuf>,
}

/// Folds the summaries of passed runs into per-step statistics.
pub fn summarize(scenario: &str, runs: &[(Summary, f64, PathBuf)]) -> BenchReport {
    let passed: Vec<&(Summary, f64, PathBuf)> = runs.iter().filter(|(s, _, _)| s.ok).collect();
    let mut order: Vec<String> = Vec::new();
    let mut took: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut reached: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (s, _, _) in &passed {
        let qemu0 = s
            .qemu_started_at
            .values()
            .cloned()
            .fold(f64::INFINITY, f64::min);
        let qemu0 = if qemu0.is_finite() { qemu0 } else { 0.0 };
        for st in &s.steps {
            let Some(at) = st.met_at else { continue };
            if !order.contains(&st.name) {
                order.push(st.name.clone());
            }
            took.entry(st.name.clone()).or_default().push(st.waited_s);
            reached.entry(st.name.clone()).or_default().push(at - qemu0);
        }
    }
    let per = |m: &BTreeMap<String, Vec<f64>>| -> Vec<(String, Stat)> {
        order
            .iter()
            .filter_map(|n| Stat::of(m.get(n)?).map(|s| (n.clone(), s)))
            .collect()
    };
    let wall: Vec<f64> = passed.iter().map(|(_, w, _)| *w).collect();
    let overhead: Vec<f64> = passed.iter().map(|(s, w, _)| w - s.duration_s).collect();
    BenchReport {
        scenario: scenario.to_string(),
        runs: runs.len(),
        passed: passed.len(),
        steps: per(&took),
        reached_at: per(&reached),
        wall: Stat::of(&wall),
        overhead: Stat::of(&overhead),
        run_dirs: runs.iter().map(|(_, _, d)| d.clone()).collect(),
    }
}

pub fn render(b: &BenchReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "bench {}: {} of {} runs passed",
        b.scenario, b.passed, b.runs
    );
    let _ = writeln!(
        o,
        "  {:<40} {:>9} {:>15}   {:>9} {:>15}",
        "step", "took med", "(min..max)", "at med", "(min..max)"
    );
    for ((name, t), (_, a)) in b.steps.iter().zip(&b.reached_at) {
        let _ = writeln!(
            o,
            "  {:<40} {:>8.1}s {:>15}   {:>8.1}s {:>15}",
            name,
            t.median,
            format!("({:.1}..{:.1})", t.min, t.max),
            a.median,
            format!("({:.1}..{:.1})", a.min, a.max)
        );
    }
    if let (Some(w), Some(h)) = (&b.wall, &b.overhead) {
        let _ = writeln!(
            o,
            "  whole run: median {:.1}s; outside the boot (image check, disk copy, lab set-up, teardown): median {:.1}s ({:.1}..{:.1}), {:.1}% of the run",
            w.median,
            h.median,
            h.min,
            h.max,
            100.0 * h.median / w.median.max(f64::EPSILON)
        );
    }
    o
}

/// Runs the scenario `n` times; writes `bench-<stamp>.json` next to the run directories.
pub fn bench(path: &Path, n: usize, opts: &RunOptions) -> miette::Result<(BenchReport, PathBuf)> {
    let mut runs = Vec::new();
    let mut name = String::new();
    for i in 0..n {
        eprintln!("bench: run {} of {n}", i + 1);
        let t = Instant::now();
        let r = run::run_scenario(path, opts)?;
        let wall = t.elapsed().as_secs_f64();
        name = r.scenario.clone();
        if let Some(s) = r.summary {
            runs.push((s, wall, r.run_dir));
        }
    }
    let report = summarize(&name, &runs);
    let out = opts
        .runs_dir
        .join(&name)
        .join(format!("bench-{}.json", crate::paths::run_stamp()));
    let json = serde_json::to_vec_pretty(&report).map_err(|e| miette::miette!("{e}"))?;
    std::fs::write(&out, json).map_err(|e| miette::miette!("{}: {e}", out.display()))?;
    Ok((report, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats() {
        assert_eq!(Stat::of(&[]), None);
        assert_eq!(
            Stat::of(&[3.0, 1.0, 2.0]),
            Some(Stat {
                median: 2.0,
                min: 1.0,
                max: 3.0
            })
        );
        assert_eq!(Stat::of(&[4.0, 1.0, 2.0, 3.0]).map(|s| s.median), Some(2.5));
    }

    #[test]
    fn summarizes_a_recorded_run() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests-data/summary-passed.json"),
        )
        .unwrap();
        let s: Summary = serde_json::from_str(&text).unwrap();
        let wall = s.duration_s + 2.0;
        let runs = vec![
            (s.clone(), wall, PathBuf::from("a")),
            (s.clone(), wall, PathBuf::from("b")),
        ];
        let b = summarize("debian-ibft-e1000", &runs);
        assert_eq!((b.runs, b.passed), (2, 2));
        assert_eq!(b.steps.len(), s.steps.len());
        let (name, root) = b
            .reached_at
            .iter()
            .find(|(n, _)| n == "root mounted from the iSCSI disk")
            .unwrap();
        assert!(root.median > 10.0, "{name}: {root:?}");
        assert!((b.overhead.as_ref().unwrap().median - 2.0).abs() < 1e-6);
        let text = render(&b);
        assert!(text.contains("2 of 2 runs passed"), "{text}");
        assert!(text.contains("root mounted from the iSCSI disk"), "{text}");
    }
}
