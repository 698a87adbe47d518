//! `bench`: the same scenario N times in a row, with the median and spread of every step's
//! duration, so a change to an image or the chain shows up as numbers, not as a flaky timeout.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::report::Summary;
use crate::run::{self, RunOptions};
use crate::timeline::MedianBand;

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
    /// From the start of `run` to QEMU's start: the host side's set-up plus the lab's (network,
    /// services) up to the first QEMU process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_qemu_start: Option<Stat>,
    pub run_dirs: Vec<PathBuf>,
    /// The same boot without the harness's console handling and step engine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bare: Option<BareComparison>,
    /// The picture of the medians over every run (`bench-*.svg`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub picture: Option<PathBuf>,
}

/// Time from QEMU start to one console text: harness-driven runs against bare ones (same lab,
/// services and QEMU command line, raw serial bytes scanned for the text).
#[derive(Debug, Clone, Serialize)]
pub struct BareComparison {
    pub step: String,
    pub text: String,
    pub harness: Stat,
    pub bare: Stat,
    /// harness median / bare median: 1.05 means the harness-driven boot took 5 % longer.
    pub ratio: f64,
    pub bare_runs: usize,
    pub bare_passed: usize,
    pub bare_run_dirs: Vec<PathBuf>,
}

/// Folds bare runs (their one step's time since QEMU start) against the harness-driven
/// median for the same text.
pub fn compare_bare(
    step: &str,
    text: &str,
    harness: &BenchReport,
    bare: &[(Summary, PathBuf)],
) -> Option<BareComparison> {
    let h = harness
        .reached_at
        .iter()
        .find(|(n, _)| n == step)?
        .1
        .clone();
    let times: Vec<f64> = bare
        .iter()
        .filter(|(s, _)| s.ok)
        .filter_map(|(s, _)| {
            let st = s.steps.first()?;
            Some(st.met_at? - st.started_at)
        })
        .collect();
    let b = Stat::of(&times)?;
    Some(BareComparison {
        step: step.to_string(),
        text: text.to_string(),
        ratio: h.median / b.median.max(f64::EPSILON),
        harness: h,
        bare: b,
        bare_runs: bare.len(),
        bare_passed: times.len(),
        bare_run_dirs: bare.iter().map(|(_, d)| d.clone()).collect(),
    })
}

/// When the run's first QEMU started, on the lab's clock.
fn first_qemu_start(s: &Summary) -> Option<f64> {
    s.qemu_started_at.values().cloned().reduce(f64::min)
}

/// Folds the summaries of passed runs into per-step statistics.
pub fn summarize(scenario: &str, runs: &[(Summary, f64, PathBuf)]) -> BenchReport {
    let passed: Vec<&(Summary, f64, PathBuf)> = runs.iter().filter(|(s, _, _)| s.ok).collect();
    let mut order: Vec<String> = Vec::new();
    let mut took: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut reached: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (s, _, _) in &passed {
        let qemu0 = first_qemu_start(s).unwrap_or(0.0);
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
        bare: None,
        to_qemu_start: None,
        picture: None,
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
    if let Some(q) = &b.to_qemu_start {
        let _ = writeln!(
            o,
            "  from `run` to QEMU start: median {:.2}s ({:.2}..{:.2})",
            q.median, q.min, q.max
        );
    }
    if let Some(c) = &b.bare {
        let _ = writeln!(
            o,
            "  bare QEMU ({} of {} runs reached it): `{}` at median {:.1}s ({:.1}..{:.1}); driven by the harness {:.1}s: ratio {:.3} ({:+.1}%)",
            c.bare_passed,
            c.bare_runs,
            c.text,
            c.bare.median,
            c.bare.min,
            c.bare.max,
            c.harness.median,
            c.ratio,
            100.0 * (c.ratio - 1.0)
        );
    }
    o
}

/// The step `bench` times bare QEMU against by default: the kernel's root-mount line.
pub const COMPARE_STEP: &str = "root mounted from the iSCSI disk";

/// Runs the scenario `n` times, then, when the scenario has a console step named `compare`,
/// `n` bare runs that only wait for that step's text; writes `bench-<stamp>.json` next to the
/// run directories.
pub fn bench(
    path: &Path,
    n: usize,
    opts: &RunOptions,
    compare: &str,
) -> miette::Result<(BenchReport, PathBuf)> {
    let scenario = crate::scenario::load(path)?;
    let mut runs = Vec::new();
    let mut to_qemu = Vec::new();
    let name = scenario.name.clone();
    for i in 0..n {
        eprintln!("bench: run {} of {n}", i + 1);
        let t = Instant::now();
        let r = run::run_scenario(path, opts)?;
        let wall = t.elapsed().as_secs_f64();
        if let Some(s) = r.summary {
            // The lab's clock starts as the lab process starts, a few milliseconds after the
            // host side hands over: the sum is a slight underestimate.
            if let Some(first) = first_qemu_start(&s) {
                to_qemu.push(r.host_setup_s + first);
            }
            runs.push((s, wall, r.run_dir));
        }
    }
    let mut report = summarize(&name, &runs);
    let mut bare = Vec::new();
    report.to_qemu_start = Stat::of(&to_qemu);
    let text = scenario.steps.iter().find_map(|s| match &s.action {
        crate::scenario::Action::Console(t) if s.name == compare => Some(t.clone()),
        _ => None,
    });
    match text {
        None => eprintln!(
            "bench: no console step named {compare:?} in {}: no bare comparison",
            path.display()
        ),
        Some(text) => {
            let bare_opts = RunOptions {
                bare_until: Some(text.clone()),
                keep: false,
                console: None,
                ..opts.clone()
            };
            for i in 0..n {
                eprintln!("bench: bare QEMU run {} of {n}", i + 1);
                let r = run::run_scenario(path, &bare_opts)?;
                if let Some(s) = r.summary {
                    bare.push((s, r.run_dir));
                }
            }
            report.bare = compare_bare(compare, &text, &report, &bare);
        }
    }
    let stamp = crate::paths::run_stamp();
    let dir = opts.runs_dir.join(&name);
    let svg_path = dir.join(format!("bench-{stamp}.svg"));
    let svg = picture(&report, &runs, &bare);
    std::fs::write(&svg_path, svg).map_err(|e| miette::miette!("{}: {e}", svg_path.display()))?;
    report.picture = Some(svg_path);
    let out = dir.join(format!("bench-{stamp}.json"));
    let json = serde_json::to_vec_pretty(&report).map_err(|e| miette::miette!("{e}"))?;
    std::fs::write(&out, json).map_err(|e| miette::miette!("{}: {e}", out.display()))?;
    Ok((report, out))
}

/// The phase medians as a band over every run of the benchmark, harness-driven and bare, on one
/// time scale (the lab's clock, like each run's own `timeline.svg`).
pub fn band(report: &BenchReport, runs: &[(Summary, f64, PathBuf)]) -> MedianBand {
    let starts: Vec<f64> = runs
        .iter()
        .filter(|(s, _, _)| s.ok)
        .filter_map(|(s, _, _)| first_qemu_start(s))
        .collect();
    let offset = Stat::of(&starts).map(|s| s.median).unwrap_or(0.0);
    // Each step's phase as the scenario typed it (the runs share one scenario).
    let phase_of = |name: &str| {
        runs.iter()
            .flat_map(|(s, _, _)| &s.steps)
            .find(|st| st.name == name)
            .and_then(|st| st.phase)
    };
    let steps: Vec<crate::timeline::BandStep> = report
        .reached_at
        .iter()
        .map(|(n, st)| (n.clone(), phase_of(n), st.median, st.min, st.max))
        .collect();
    let mut band = MedianBand::from_steps(
        format!("median of {} passed runs", report.passed),
        &steps,
        offset,
    );
    // The ratio first: the line is clipped to the picture's width.
    let mut note = Vec::new();
    if let Some(c) = &report.bare {
        note.push(format!(
            "harness/bare QEMU ratio {:.3} (`{}` at {:.1} s against {:.1} s)",
            c.ratio, c.text, c.harness.median, c.bare.median
        ));
        band.marks.push((
            format!("bare QEMU median for `{}`", c.step),
            c.bare.median + offset,
        ));
    }
    if let Some(q) = &report.to_qemu_start {
        note.push(format!("run to QEMU start: median {:.2} s", q.median));
    }
    if let Some(h) = &report.overhead {
        note.push(format!("outside the boot: median {:.1} s", h.median));
    }
    band.note = note.join("; ");
    band
}

fn picture(
    report: &BenchReport,
    runs: &[(Summary, f64, PathBuf)],
    bare: &[(Summary, PathBuf)],
) -> String {
    let labelled: Vec<(String, Summary)> = runs
        .iter()
        .enumerate()
        .map(|(i, (s, _, _))| (format!("run {}", i + 1), s.clone()))
        .chain(
            bare.iter()
                .enumerate()
                .map(|(i, (s, _))| (format!("bare {}", i + 1), s.clone())),
        )
        .collect();
    crate::timeline::render_svg_with(&labelled, Some(&band(report, runs)))
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

        // Two bare runs that reached the text 10 % sooner than the harness-driven median.
        let h = root.median;
        let bare_run = |at: f64| {
            let mut s = s.clone();
            s.ok = true;
            s.steps.truncate(1);
            s.steps[0].started_at = 1.0;
            s.steps[0].met_at = Some(1.0 + at);
            (s, PathBuf::from("bare"))
        };
        let bare = vec![bare_run(h / 1.1), bare_run(h / 1.1)];
        let c = compare_bare(
            "root mounted from the iSCSI disk",
            "EXT4-fs (sda1): mounted filesystem",
            &b,
            &bare,
        )
        .unwrap();
        assert!((c.ratio - 1.1).abs() < 1e-9, "{c:?}");
        assert_eq!((c.bare_runs, c.bare_passed), (2, 2));
        let mut b = b;
        b.bare = Some(c);
        assert!(
            render(&b).contains("ratio 1.100 (+10.0%)"),
            "{}",
            render(&b)
        );
        assert!(compare_bare("no such step", "x", &b, &bare).is_none());

        // The picture's band: phases on the runs' clock, the bare median marked.
        let band = band(&b, &runs);
        let qemu0 = first_qemu_start(&s).unwrap();
        let root = band
            .phases
            .iter()
            .find(|p| p.phase == "root mounted")
            .unwrap();
        assert!((root.end - (h + qemu0)).abs() < 1e-9, "{root:?}");
        assert_eq!(band.marks.len(), 1);
        assert!(band.note.contains("ratio 1.100"), "{}", band.note);
        let svg = picture(&b, &runs, &bare);
        assert!(svg.contains("data-label=\"run 2\"") && svg.contains("data-label=\"bare 1\""));
    }
}
