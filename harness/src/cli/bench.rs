//! `bench`: the same scenario N times in a row, with the median and spread of every step's
//! duration, so a change to an image or the chain shows up as numbers, not as a flaky timeout.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::cli::run::{self, RunOptions};
use crate::report::timeline::MedianBand;
use crate::report::Summary;

/// The median and spread of one quantity over the runs.
///
/// The spread is given twice: min..max, which shows every outlier, and the interquartile range
/// (`q1..q3`, the middle half of the runs). The IQR is chosen over a standard deviation because
/// it goes with the median that the figures and the harness/bare ratio are made of: one run
/// slowed by a neighbour's load (the usual outlier on a shared machine) moves it little, where it
/// would inflate a standard deviation, and a boot time's spread is not symmetric anyway (a run
/// can be much slower than usual, not much faster). With 5 runs it is the 2nd to the 4th value.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// First and third quartiles, linearly interpolated between the sorted values (as
    /// numpy's and R's defaults do).
    pub q1: f64,
    pub q3: f64,
    /// How many values.
    pub n: usize,
}

impl Stat {
    pub fn of(values: &[f64]) -> Option<Stat> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Some(Stat {
            median: quantile(&v, 0.5),
            min: v[0],
            max: v[n - 1],
            q1: quantile(&v, 0.25),
            q3: quantile(&v, 0.75),
            n,
        })
    }

    /// `(min..max)`, in seconds to a tenth, as the tables print the spread.
    pub fn span(&self) -> String {
        format!("({:.1}..{:.1})", self.min, self.max)
    }

    /// `q3 - q1`.
    pub fn iqr(&self) -> f64 {
        self.q3 - self.q1
    }

    /// Whether the two interquartile ranges share any time: if they do, a difference of the
    /// medians is within the run-to-run spread.
    pub fn quartiles_overlap(&self, other: &Stat) -> bool {
        self.q1 <= other.q3 && other.q1 <= self.q3
    }
}

/// The `p` quantile of sorted, non-empty values, interpolated between the two nearest ranks.
fn quantile(sorted: &[f64], p: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * p;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// One arm of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    /// A normal `run`: login proxy, console handling, step engine.
    Harness,
    /// The same guest, QEMU command line and services, the guest talking to tgtd directly; the
    /// raw serial output is only scanned for one text.
    Bare,
}

/// The order of the runs: `n` of each arm, alternating (harness, bare, harness, bare, ...), so
/// that a change in the machine's load during the benchmark falls on both arms alike instead of
/// on whichever ran last. Each run with its number within its arm, from 1.
pub fn schedule(n: usize, bare: bool) -> Vec<(Arm, usize)> {
    (1..=n)
        .flat_map(|i| std::iter::once((Arm::Harness, i)).chain(bare.then_some((Arm::Bare, i))))
        .collect()
}

fn label((arm, i): (Arm, usize)) -> String {
    match arm {
        Arm::Harness => format!("harness {i}"),
        Arm::Bare => format!("bare {i}"),
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
    /// The runs in the order they ran: `harness 1`, `bare 1`, `harness 2`, ...
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub order: Vec<String>,
    /// The same boot without the harness's login proxy, console handling and step engine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bare: Option<BareComparison>,
    /// The picture of the medians over every run (`bench-*.svg`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub picture: Option<PathBuf>,
    /// A fleet: seconds from the first QEMU start until every node's root-mounted step was met.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub every_node_root: Option<Stat>,
    /// Peak resident memory of everything a run started (guests, services, lab), MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_peak_mib: Option<Stat>,
    /// Peak disk held by a run's scratch folder (its disk copy or overlays), MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_peak_mib: Option<Stat>,
}

/// Time from QEMU start to one console text: harness-driven runs against bare ones (same lab,
/// services and QEMU command line, but the guest talks to tgtd directly, without the login
/// proxy, and the raw serial bytes are only scanned for the text).
#[derive(Debug, Clone, Serialize)]
pub struct BareComparison {
    pub step: String,
    pub text: String,
    /// Each arm's median and spread (see [`Stat`] for why the interquartile range).
    pub harness: Stat,
    pub bare: Stat,
    /// harness median / bare median: 1.05 means the harness-driven boot took 5 % longer.
    pub ratio: f64,
    /// The arms' interquartile ranges overlap: the ratio's distance from 1 is within the
    /// run-to-run spread.
    pub quartiles_overlap: bool,
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
        quartiles_overlap: h.quartiles_overlap(&b),
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
    // Each run's slowest node to its root: the time the whole fleet took.
    let every_node_root: Vec<f64> = passed
        .iter()
        .filter(|(s, _, _)| s.qemu_started_at.len() > 1)
        .filter_map(|(s, _, _)| {
            let qemu0 = first_qemu_start(s)?;
            let roots: Vec<&crate::report::StepSummary> = s
                .steps
                .iter()
                .filter(|st| st.phase == Some(crate::scenario::Phase::RootMounted))
                .collect();
            let nodes: std::collections::BTreeSet<&str> =
                roots.iter().map(|st| st.node.as_str()).collect();
            (nodes.len() == s.qemu_started_at.len())
                .then(|| roots.iter().filter_map(|st| st.met_at).fold(0.0, f64::max) - qemu0)
        })
        .collect();
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
        order: Vec::new(),
        bare: None,
        to_qemu_start: None,
        picture: None,
        every_node_root: Stat::of(&every_node_root),
        memory_peak_mib: None,
        disk_peak_mib: None,
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
            t.span(),
            a.median,
            a.span()
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
    if let Some(r) = &b.every_node_root {
        let _ = writeln!(
            o,
            "  every node's root mounted, from the first QEMU start: median {:.1}s ({:.1}..{:.1})",
            r.median, r.min, r.max
        );
    }
    for (what, st) in [
        (
            "memory, peak of everything the run started",
            &b.memory_peak_mib,
        ),
        ("disk, peak of the run's scratch folder", &b.disk_peak_mib),
    ] {
        if let Some(st) = st {
            let _ = writeln!(
                o,
                "  {what}: median {:.0} MiB ({:.0}..{:.0})",
                st.median, st.min, st.max
            );
        }
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
            "  `{}`, seconds from QEMU start: median, interquartile range, (min..max)",
            c.text
        );
        for (what, st) in [
            ("harness (a normal `run`)", &c.harness),
            ("bare QEMU (tgtd direct, no steps)", &c.bare),
        ] {
            let _ = writeln!(
                o,
                "    {:<36} {:>6.1}s  IQR {:<11}  {:<13}  {} runs",
                what,
                st.median,
                format!("{:.1}..{:.1}", st.q1, st.q3),
                st.span(),
                st.n
            );
        }
        let _ = writeln!(
            o,
            "    ratio harness/bare {:.3} ({:+.1}%); {}; bare QEMU reached the text in {} of {} runs",
            c.ratio,
            100.0 * (c.ratio - 1.0),
            if c.quartiles_overlap {
                "the interquartile ranges overlap: within the run-to-run spread"
            } else {
                "the interquartile ranges do not overlap"
            },
            c.bare_passed,
            c.bare_runs
        );
    }
    o
}

/// The step `bench` times bare QEMU against by default: the kernel's root-mount line.
pub const COMPARE_STEP: &str = "root mounted from the iSCSI disk";

/// Two benchmarks side by side (e.g. one scenario under BIOS and its UEFI twin): each step
/// both have, by name, in the first one's order, with the time since QEMU started at which it
/// was met (median and spread) and the second's median over the first's.
pub fn render_beside(a: &BenchReport, b: &BenchReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "bench side by side: {} ({} of {} passed) | {} ({} of {} passed)",
        a.scenario, a.passed, a.runs, b.scenario, b.passed, b.runs
    );
    let _ = writeln!(
        o,
        "  {:<46} {:>9} {:>15}   {:>9} {:>15}   {:>6}",
        "step (time since QEMU start)", "a med", "(min..max)", "b med", "(min..max)", "b/a"
    );
    let mut shared = 0;
    for (name, x) in &a.reached_at {
        let Some((_, y)) = b.reached_at.iter().find(|(n, _)| n == name) else {
            continue;
        };
        shared += 1;
        let _ = writeln!(
            o,
            "  {:<46} {:>8.1}s {:>15}   {:>8.1}s {:>15}   {:>6}",
            name,
            x.median,
            x.span(),
            y.median,
            y.span(),
            if x.median > 0.0 {
                format!("{:.2}", y.median / x.median)
            } else {
                "-".into()
            }
        );
    }
    if shared == 0 {
        let _ = writeln!(o, "  (the two scenarios have no step name in common)");
    }
    o
}

/// Runs the scenario `n` times and, when the scenario has a console step named `compare` and
/// an iSCSI plan that lets every login through, `n` bare runs that only wait for that step's
/// text, interleaved with them (see [`schedule`]); writes `bench-<stamp>.json` and
/// `bench-<stamp>.svg` next to the run directories.
pub fn bench(
    path: &Path,
    n: usize,
    opts: &RunOptions,
    compare: &str,
) -> miette::Result<(BenchReport, PathBuf)> {
    let scenario = crate::scenario::load(path)?;
    let name = scenario.name.clone();
    let text = scenario.steps.iter().find_map(|s| match &s.action {
        crate::scenario::Action::Console(t) if s.name == compare => Some(t.clone()),
        _ => None,
    });
    let text = match text {
        None => {
            eprintln!(
                "bench: no console step named {compare:?} in {}: no bare comparison",
                path.display()
            );
            None
        }
        // The bare arm has no login proxy, and only the proxy refuses, drops, keeps out or
        // turns away logins: the guest would boot another way.
        Some(_) if !run::login_faults(&scenario).lets_all_through() => {
            eprintln!(
                "bench: {} refuses, drops or filters iSCSI logins, which only the login proxy \
                 does: no bare comparison",
                path.display()
            );
            None
        }
        Some(t) => Some(t),
    };
    let bare_opts = RunOptions {
        bare_until: text.clone(),
        keep: false,
        console: None,
        ..opts.clone()
    };
    let mut runs = Vec::new();
    let mut to_qemu = Vec::new();
    let mut bare = Vec::new();
    let (mut memory, mut disk) = (Vec::new(), Vec::new());
    let order = schedule(n, text.is_some());
    for &(arm, i) in &order {
        match arm {
            Arm::Harness => {
                eprintln!("bench: run {i} of {n}");
                let t = Instant::now();
                let sampler = crate::cli::bench_sampler::Sampler::start(opts.runs_dir.join(&name));
                let r = run::run_scenario(path, opts);
                let peaks = sampler.stop();
                let r = r?;
                let wall = t.elapsed().as_secs_f64();
                const MIB: f64 = 1024.0 * 1024.0;
                if r.summary.as_ref().is_some_and(|s| s.ok) {
                    memory.push(peaks.memory as f64 / MIB);
                    disk.push(peaks.disk as f64 / MIB);
                }
                if let Some(s) = r.summary {
                    // The lab's clock starts as the lab process starts, a few milliseconds
                    // after the host side hands over: the sum is a slight underestimate.
                    if let Some(first) = first_qemu_start(&s) {
                        to_qemu.push(r.host_setup_s + first);
                    }
                    runs.push((s, wall, r.run_dir));
                }
            }
            Arm::Bare => {
                eprintln!("bench: bare QEMU run {i} of {n}");
                let r = run::run_scenario(path, &bare_opts)?;
                if let Some(s) = r.summary {
                    bare.push((s, r.run_dir));
                }
            }
        }
    }
    let mut report = summarize(&name, &runs);
    report.to_qemu_start = Stat::of(&to_qemu);
    report.memory_peak_mib = Stat::of(&memory);
    report.disk_peak_mib = Stat::of(&disk);
    report.order = order.into_iter().map(label).collect();
    if let Some(text) = &text {
        report.bare = compare_bare(compare, text, &report, &bare);
    }
    let stamp = crate::support::paths::run_stamp();
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
    let steps: Vec<crate::report::timeline::BandStep> = report
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
            "harness/bare QEMU ratio {:.3} (`{}` at {:.1} s, IQR {:.1}..{:.1}, against {:.1} s, IQR {:.1}..{:.1})",
            c.ratio,
            c.text,
            c.harness.median,
            c.harness.q1,
            c.harness.q3,
            c.bare.median,
            c.bare.q1,
            c.bare.q3
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
    crate::report::timeline::render_svg_with(&labelled, Some(&band(report, runs)))
}

#[cfg(test)]
#[path = "bench_tests.rs"]
mod tests;
