//! The boot timeline picture: one SVG per run (`timeline.svg`), or one comparing several runs
//! (`netboot-harness report --svg`). Each node of each run is a row of horizontal bars, one per
//! boot phase, with a tick where each step was met; runs are stacked on the same time scale so
//! a phase that got slower stands out.
//!
//! Longer than 700 lines: it is one picture, and its layout constants (rows, lanes, label
//! widths) are shared by every part of the drawing; split across files they would be read in
//! one place and used in another. Its tests live in `timeline_tests.rs`.
//!
//! Phases come from the summary's steps alone: a step's segment runs from the previous met step
//! of the same node (or from the node's QEMU start) to the time this step was met, and the
//! step's typed `phase` (from the scenario) decides its colour. Consecutive steps of one phase
//! make one bar; a step without a phase is drawn as its own bar, "other". Times are seconds from
//! the lab's start, like the text report's `at` column.
//!
//! Injected faults come from the summary's `faults`: a service the fault plan kept down is a
//! hatched band over every node row for the time it was down, one lane per late service, and a
//! single fault (a reset connection, a refused or dropped login, an HTTP error the plan
//! answered) is a small triangle under its node's bar.
//!
//! The SVG is written by hand because no maintained crate makes it simpler: `svg` 0.18 is a
//! generic element builder (untyped name/value attributes, numbers at full precision, its own
//! line breaks) that would take over only the escaping and the closing tags while the layout
//! stays here, and `plotters` 0.3 draws charts without the per-element `<title>` tooltips and
//! `data-*` attributes this picture carries; the tests parse the whole output with `roxmltree`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::report::{FaultKind, InjectedFault, StepSummary, Summary};
use crate::scenario::Phase;

/// A boot phase as drawn: name, fill colour and the colour of a label written on that fill.
#[derive(Debug, Clone, Copy)]
pub struct PhaseStyle {
    pub name: &'static str,
    pub fill: &'static str,
    pub ink: &'static str,
}

/// The phases in boot order; the legend lists them in this order.
pub const PHASES: &[PhaseStyle] = &[
    PhaseStyle {
        name: "firmware",
        fill: "#4e79a7",
        ink: "#ffffff",
    },
    PhaseStyle {
        name: "DHCP",
        fill: "#76b7b2",
        ink: "#1a1a1a",
    },
    PhaseStyle {
        name: "boot script",
        fill: "#59a14f",
        ink: "#ffffff",
    },
    PhaseStyle {
        name: "sanboot",
        fill: "#edc948",
        ink: "#1a1a1a",
    },
    PhaseStyle {
        name: "kernel",
        fill: "#b07aa1",
        ink: "#ffffff",
    },
    PhaseStyle {
        name: "initramfs login",
        fill: "#9c755f",
        ink: "#ffffff",
    },
    PhaseStyle {
        name: "root mounted",
        fill: "#f28e2b",
        ink: "#1a1a1a",
    },
    PhaseStyle {
        name: "OS",
        fill: "#8cd17d",
        ink: "#1a1a1a",
    },
    PhaseStyle {
        name: "reboot",
        fill: "#79706e",
        ink: "#ffffff",
    },
    PhaseStyle {
        name: OTHER,
        fill: "#d3d3d3",
        ink: "#1a1a1a",
    },
];

/// The phase of a step no keyword matches.
pub const OTHER: &str = "other";

const FAILED_FILL: &str = "#d62728";
/// Hatching, edges and markers of injected faults: darker than any phase, and not the failed red.
const FAULT_INK: &str = "#7a0c0c";
const HATCH_ID: &str = "nbh-outage-hatch";
const OK_INK: &str = "#1b7a2e";
const FONT: &str = "system-ui, -apple-system, 'Segoe UI', 'DejaVu Sans', Arial, sans-serif";

// Layout, in SVG units (pixels at 100 %).
const WIDTH: f64 = 1200.0;
const PLOT_X0: f64 = 120.0;
const PLOT_X1: f64 = WIDTH - 30.0;
const BAR_H: f64 = 20.0;
/// Room under each bar for the fault markers.
const ROW_H: f64 = 34.0;
/// How far an outage band and a tick reach above and below the bar.
const BAND_PAD: f64 = 3.0;
const MARKER_H: f64 = 7.0;
const RUN_HEAD_H: f64 = 22.0;
const MESSAGE_H: f64 = 16.0;
const RUN_GAP: f64 = 14.0;
/// Rough width of one character of the 11 px label font, to decide whether a label fits.
const CHAR_W: f64 = 6.4;

fn phase_style(name: &str) -> &'static PhaseStyle {
    PHASES
        .iter()
        .find(|p| p.name == name)
        .unwrap_or(&PHASES[PHASES.len() - 1])
}

/// A benchmark's result drawn above its runs: one bar per phase from the median time the phase
/// began to the median time it ended, with a whisker over the spread of its end.
#[derive(Debug, Clone, PartialEq)]
pub struct MedianBand {
    /// e.g. "median of 3 runs".
    pub label: String,
    pub phases: Vec<MedianPhase>,
    /// One line under the band's title: overhead, bare-QEMU ratio.
    pub note: String,
    /// Single times worth a mark on the band (name, seconds), e.g. bare QEMU's median.
    pub marks: Vec<(String, f64)>,
}

/// A step of a [`MedianBand`]: name, phase, and the median, fastest and slowest time it was
/// reached.
pub type BandStep = (String, Option<Phase>, f64, f64, f64);

/// One phase of a [`MedianBand`], in seconds on the runs' clock.
#[derive(Debug, Clone, PartialEq)]
pub struct MedianPhase {
    pub phase: &'static str,
    /// The steps that end inside this phase, in order.
    pub steps: Vec<String>,
    pub start: f64,
    pub end: f64,
    /// Fastest and slowest end of the phase over the runs.
    pub end_min: f64,
    pub end_max: f64,
}

impl MedianBand {
    /// Groups consecutive steps (name, phase, median, min, max of the time each was reached)
    /// into phases the way a run's row does; `offset` moves times onto the runs' clock.
    pub fn from_steps(label: String, steps: &[BandStep], offset: f64) -> Self {
        let mut phases: Vec<MedianPhase> = Vec::new();
        let mut cursor = offset;
        for (name, phase, median, min, max) in steps {
            let phase = phase.map_or(OTHER, Phase::label);
            // Medians of times that rise in every run rise too, but a service record can be
            // stamped a little before the console step listed ahead of it.
            let end = (median + offset).max(cursor);
            match phases.last_mut() {
                Some(last) if last.phase == phase && phase != OTHER => {
                    last.end = end;
                    last.end_min = min + offset;
                    last.end_max = max + offset;
                    last.steps.push(name.clone());
                }
                _ => phases.push(MedianPhase {
                    phase,
                    steps: vec![name.clone()],
                    start: cursor,
                    end,
                    end_min: min + offset,
                    end_max: max + offset,
                }),
            }
            cursor = end;
        }
        MedianBand {
            label,
            phases,
            note: String::new(),
            marks: Vec::new(),
        }
    }

    fn t_max(&self) -> f64 {
        self.phases
            .iter()
            .map(|p| p.end_max.max(p.end))
            .chain(self.marks.iter().map(|(_, t)| *t))
            .fold(0.0, f64::max)
    }
}

/// One bar: a phase (or one unmapped or failed step) from `start` to `end`.
#[derive(Debug)]
struct Segment<'a> {
    phase: &'static str,
    start: f64,
    end: f64,
    steps: Vec<&'a StepSummary>,
    /// Set for the failed step's bar: why it failed.
    failure: Option<String>,
    /// A step of its own (unmapped or failed): never merged with its neighbours.
    alone: bool,
}

/// A step's tick: where it is drawn (never before the previous step) and the step.
#[derive(Debug)]
struct Tick<'a> {
    at: f64,
    step: &'a StepSummary,
}

#[derive(Debug)]
struct Row<'a> {
    node: String,
    segments: Vec<Segment<'a>>,
    ticks: Vec<Tick<'a>>,
}

/// Nodes in the order their first step appears, then any node that had no step.
fn nodes_of(s: &Summary) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let names = s
        .steps
        .iter()
        .map(|st| &st.node)
        .chain(s.qemu_started_at.keys());
    for n in names {
        if !out.contains(n) {
            out.push(n.clone());
        }
    }
    out
}

fn rows_of(s: &Summary) -> Vec<Row<'_>> {
    nodes_of(s)
        .into_iter()
        .map(|node| {
            let mut cursor = s.qemu_started_at.get(&node).copied().unwrap_or(0.0);
            let mut segments: Vec<Segment> = Vec::new();
            let mut ticks = Vec::new();
            for st in s.steps.iter().filter(|st| st.node == node) {
                let (end, failure) = match st.status.as_str() {
                    "met" => (st.met_at.unwrap_or(st.started_at + st.waited_s), None),
                    "failed" => {
                        let reason = s
                            .failed_step
                            .as_ref()
                            .filter(|f| f.name == st.name)
                            .map(|f| f.reason.clone())
                            .unwrap_or_else(|| st.detail.clone());
                        (st.started_at + st.waited_s, Some(reason))
                    }
                    _ => continue,
                };
                // Service records are timed when they happened, which can be a little before
                // the console step that came first: the bars stay in step order, the step's
                // mark stays at the time it happened.
                let happened = end;
                let end = end.max(cursor);
                let mapped = st.phase.map(Phase::label);
                let phase = mapped.unwrap_or(OTHER);
                let alone = mapped.is_none() || failure.is_some();
                match segments.last_mut() {
                    Some(last) if !alone && !last.alone && last.phase == phase => {
                        last.end = end;
                        last.steps.push(st);
                    }
                    _ => segments.push(Segment {
                        phase,
                        start: cursor,
                        end,
                        steps: vec![st],
                        failure,
                        alone,
                    }),
                }
                ticks.push(Tick {
                    at: happened,
                    step: st,
                });
                cursor = end;
            }
            Row {
                node,
                segments,
                ticks,
            }
        })
        .collect()
}

/// A step between ticks: 1, 2 or 5 times a power of ten (or whole minutes), about a dozen.
fn tick_step(t_max: f64) -> f64 {
    const STEPS: [f64; 15] = [
        0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0,
        3600.0,
    ];
    STEPS
        .into_iter()
        .find(|s| t_max / s <= 16.0)
        .unwrap_or(7200.0)
}

pub(super) fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            // Characters XML 1.0 does not allow at all.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t') => o.push('\u{fffd}'),
            c => o.push(c),
        }
    }
    o
}

/// At most `max` characters, with an ellipsis when cut.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut o: String = s.chars().take(max.saturating_sub(1)).collect();
        o.push('…');
        o
    }
}

fn fits(label: &str, width: f64) -> bool {
    label.chars().count() as f64 * CHAR_W + 8.0 <= width
}

fn verdict_words(s: &Summary) -> String {
    match s.verdict.as_str() {
        "failed" if s.ok => "FAILED as expected".to_string(),
        v => v.to_uppercase(),
    }
}

/// The picture of one or more runs, stacked on one time scale. `label` names each run (the
/// run directory's name, usually).
pub fn render_svg(runs: &[(String, Summary)]) -> String {
    render_svg_with(runs, None)
}

/// [`render_svg`] with a benchmark's medians drawn above the runs.
pub fn render_svg_with(runs: &[(String, Summary)], band: Option<&MedianBand>) -> String {
    let rows: Vec<Vec<Row>> = runs.iter().map(|(_, s)| rows_of(s)).collect();
    let t_max = runs
        .iter()
        .map(|(_, s)| s.duration_s)
        .chain(
            rows.iter()
                .flatten()
                .flat_map(|r| r.segments.iter().map(|g| g.end)),
        )
        .chain(
            runs.iter()
                .flat_map(|(_, s)| &s.faults)
                .flat_map(|f| [Some(f.at), f.until].into_iter().flatten()),
        )
        .chain(band.map(MedianBand::t_max))
        .filter(|t| t.is_finite())
        .fold(1.0_f64, f64::max);
    let step = tick_step(t_max);
    let t_end = (t_max / step).ceil() * step;
    let x = |t: f64| PLOT_X0 + (t.clamp(0.0, t_end) / t_end) * (PLOT_X1 - PLOT_X0);

    // Heights first: the grid lines span every run.
    let axis_y = 62.0;
    let runs_top = axis_y + 10.0;
    let run_h = |(i, (_, s)): (usize, &(String, Summary))| {
        let message = if s.verdict == "passed" {
            0.0
        } else {
            MESSAGE_H
        };
        RUN_HEAD_H + message + ROW_H * rows[i].len().max(1) as f64 + RUN_GAP
    };
    let band_h = if band.is_some() {
        RUN_HEAD_H + MESSAGE_H + ROW_H + RUN_GAP
    } else {
        0.0
    };
    let runs_h: f64 = band_h + runs.iter().enumerate().map(run_h).sum::<f64>();
    let bottom_axis_y = runs_top + runs_h + 4.0;
    let legend_y = bottom_axis_y + 30.0;
    // QEMU's own events are drawn, but only injected faults bring the legend's fault marks.
    let with_faults = runs
        .iter()
        .any(|(_, s)| s.faults.iter().any(|f| f.kind != FaultKind::QmpEvent));
    let legend_rows = legend_layout(with_faults)
        .last()
        .map(|(_, _, _, r)| r + 1)
        .unwrap_or(1);
    let height = legend_y + 22.0 * legend_rows as f64 + 6.0;

    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="{}" font-size="12">"#,
        esc(FONT)
    );
    let _ = writeln!(o, "<title>netboot-harness boot timeline</title>");
    let _ = writeln!(
        o,
        r##"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>"##
    );
    if with_faults {
        let _ = writeln!(
            o,
            r#"<defs><pattern id="{HATCH_ID}" patternUnits="userSpaceOnUse" width="6" height="6" patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="6" stroke="{FAULT_INK}" stroke-width="2" stroke-opacity="0.6"/></pattern></defs>"#
        );
    }
    let title = match (runs, band) {
        (_, Some(b)) => format!(
            "Benchmark: {}, {}",
            runs.first()
                .map(|(_, s)| s.scenario.as_str())
                .unwrap_or("?"),
            b.label
        ),
        ([(_, s)], None) => format!(
            "Boot timeline: {} {} in {:.1} s",
            s.scenario,
            verdict_words(s),
            s.duration_s
        ),
        (_, None) => format!("Boot timeline: {} runs on one time scale", runs.len()),
    };
    let _ = writeln!(
        o,
        r#"<text x="12" y="24" font-size="16" font-weight="bold">{}</text>"#,
        esc(&title)
    );
    let _ = writeln!(
        o,
        r##"<text x="12" y="42" font-size="11" fill="#555555">seconds since the lab started; one bar per boot phase, a tick where each step was met{} (hover for details)</text>"##,
        if with_faults {
            ", hatched while a service was kept down, a triangle at each injected fault"
        } else {
            ""
        }
    );

    // Time axis: labels above and below, grid lines through every run.
    let _ = writeln!(o, r##"<g class="axis" font-size="11" fill="#444444">"##);
    let mut t = 0.0;
    while t <= t_end + 1e-9 {
        let xt = x(t);
        let _ = writeln!(
            o,
            r##"<line x1="{xt:.1}" y1="{:.1}" x2="{xt:.1}" y2="{bottom_axis_y:.1}" stroke="#e3e3e3" stroke-width="1"/>"##,
            axis_y + 4.0
        );
        for y in [axis_y, bottom_axis_y + 14.0] {
            let _ = writeln!(
                o,
                r#"<text x="{xt:.1}" y="{y:.1}" text-anchor="middle">{} s</text>"#,
                fmt_secs(t)
            );
        }
        t += step;
    }
    let _ = writeln!(o, "</g>");

    let mut y = runs_top;
    if let Some(b) = band {
        render_band(&mut o, b, y, &x);
        y += band_h;
    }
    for ((label, s), rows) in runs.iter().zip(&rows) {
        let _ = writeln!(
            o,
            r#"<g class="run" data-label="{}" data-verdict="{}">"#,
            esc(label),
            esc(&s.verdict)
        );
        let verdict_ink = if s.ok { OK_INK } else { FAILED_FILL };
        let accel = if s.accel.is_empty() { "?" } else { &s.accel };
        let _ = writeln!(
            o,
            r#"<text x="12" y="{:.1}"><tspan font-weight="bold">{}</tspan>  {}  <tspan font-weight="bold" fill="{verdict_ink}">{}</tspan> in {:.1} s ({}, started {}){}</text>"#,
            y + 15.0,
            esc(label),
            esc(&s.scenario),
            esc(&verdict_words(s)),
            s.duration_s,
            esc(accel),
            esc(&s.started_at),
            esc(&fault_count_words(&s.faults))
        );
        y += RUN_HEAD_H;
        if s.verdict != "passed" {
            let _ = writeln!(
                o,
                r##"<text x="24" y="{:.1}" font-size="11" fill="#555555">{}</text>"##,
                y + 10.0,
                esc(&clip(&s.message, 170))
            );
            y += MESSAGE_H;
        }
        if rows.is_empty() {
            let _ = writeln!(
                o,
                r##"<text x="{PLOT_X0}" y="{:.1}" fill="#555555">no steps ran</text>"##,
                y + 14.0
            );
            y += ROW_H;
        }
        let faults = RunFaults::of(s, rows);
        for row in rows {
            render_row(&mut o, row, y, &x, &faults);
            y += ROW_H;
        }
        y += RUN_GAP;
        let _ = writeln!(o, "</g>");
    }

    // Legend.
    let _ = writeln!(o, r#"<g class="legend" font-size="11">"#);
    for (name, swatch, lx, line) in legend_layout(with_faults) {
        let ly = legend_y + 22.0 * line as f64;
        match swatch {
            Swatch::Fill(fill) => {
                let _ = write!(
                    o,
                    r##"<rect x="{lx:.1}" y="{:.1}" width="12" height="12" fill="{fill}" stroke="#555555" stroke-width="0.5"/>"##,
                    ly - 10.0
                );
            }
            Swatch::Hatch => {
                let _ = write!(
                    o,
                    r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="12" fill="url(#{HATCH_ID})" stroke="{FAULT_INK}" stroke-width="1"/>"#,
                    ly - 10.0
                );
            }
            Swatch::Marker => {
                let _ = write!(o, "{}", marker_shape(lx + 6.0, ly - 9.0));
            }
        }
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 16.0,
            ly,
            esc(name)
        );
    }
    let _ = writeln!(o, "</g>");
    o.push_str("</svg>\n");
    o
}

fn legend_item_w(name: &str) -> f64 {
    16.0 + name.chars().count() as f64 * CHAR_W + 18.0
}

/// What a legend entry shows before its name.
#[derive(Debug, Clone, Copy)]
enum Swatch {
    Fill(&'static str),
    Hatch,
    Marker,
}

/// Legend names of the fault entries, shown only when a run has faults.
const LEGEND_OUTAGE: &str = "service down (start_after, down window)";
const LEGEND_FAULT: &str = "injected fault";

/// (name, swatch, x, line) of each legend entry: every phase, the failed colour and, when a
/// run has any, the two fault marks, wrapped to the width.
fn legend_layout(with_faults: bool) -> Vec<(&'static str, Swatch, f64, usize)> {
    let fault_items = [
        (LEGEND_OUTAGE, Swatch::Hatch),
        (LEGEND_FAULT, Swatch::Marker),
    ];
    let items = PHASES
        .iter()
        .map(|p| (p.name, Swatch::Fill(p.fill)))
        .chain([("failed step", Swatch::Fill(FAILED_FILL))])
        .chain(fault_items.into_iter().filter(|_| with_faults));
    let mut out = Vec::new();
    let (mut at, mut line) = (12.0, 0usize);
    for (name, fill) in items {
        let w = legend_item_w(name);
        if at + w > WIDTH - 12.0 {
            at = 12.0;
            line += 1;
        }
        out.push((name, fill, at, line));
        at += w;
    }
    out
}

/// A run's faults as drawn: outages with their lane and end, single faults apart.
struct RunFaults<'a> {
    /// (fault, lane, end): an outage still open at the end of the run is drawn to that end.
    outages: Vec<(&'a InjectedFault, usize, f64)>,
    lanes: usize,
    singles: Vec<&'a InjectedFault>,
    /// The run's node rows, to tell a fault on another row from one on no row.
    nodes: Vec<&'a str>,
}

impl<'a> RunFaults<'a> {
    fn of(s: &'a Summary, rows: &'a [Row<'a>]) -> Self {
        // One lane per service, so overlapping outages (DHCP, HTTP and iSCSI after a power
        // cut) stay apart instead of darkening one band; lanes in the order a boot needs the
        // services, so the usual late starts read as a staircase.
        let (outage_faults, singles): (Vec<&InjectedFault>, Vec<&InjectedFault>) =
            s.faults.iter().partition(|f| f.kind.is_outage());
        let boot_order = |sv: &str| {
            ["dhcp", "http", "iscsi"]
                .iter()
                .position(|b| *b == sv)
                .unwrap_or(usize::MAX)
        };
        let mut services: Vec<&str> = outage_faults.iter().map(|f| f.service.as_str()).collect();
        services.sort_by_key(|sv| (boot_order(sv), *sv));
        services.dedup();
        let outages = outage_faults
            .into_iter()
            .map(|f| {
                let lane = services.iter().position(|sv| *sv == f.service).unwrap_or(0);
                (f, lane, f.until.unwrap_or(s.duration_s).max(f.at))
            })
            .collect();
        RunFaults {
            outages,
            lanes: services.len().max(1),
            singles,
            nodes: rows.iter().map(|r| r.node.as_str()).collect(),
        }
    }
}

fn fault_count_words(faults: &[InjectedFault]) -> String {
    let outages = faults.iter().filter(|f| f.kind.is_outage()).count();
    // QEMU's own events are drawn but were not injected.
    let singles = faults
        .iter()
        .filter(|f| !f.kind.is_outage() && f.kind != FaultKind::QmpEvent)
        .count();
    let plural = |n: usize, one: &str, many: &str| match n {
        1 => format!("1 {one}"),
        n => format!("{n} {many}"),
    };
    match (outages, singles) {
        (0, 0) => String::new(),
        (0, n) => format!("; {}", plural(n, "injected fault", "injected faults")),
        (o, 0) => format!("; {}", plural(o, "service outage", "service outages")),
        (o, n) => format!(
            "; {} and {}",
            plural(o, "service outage", "service outages"),
            plural(n, "injected fault", "injected faults")
        ),
    }
}

/// A small triangle pointing up at time `cx`, its tip at `tip_y`.
fn marker_shape(cx: f64, tip_y: f64) -> String {
    let half = MARKER_H * 0.6;
    format!(
        r##"<polygon points="{cx:.1},{tip_y:.1} {:.1},{:.1} {:.1},{:.1}" fill="{FAULT_INK}" stroke="#ffffff" stroke-width="0.8"/>"##,
        cx - half,
        tip_y + MARKER_H,
        cx + half,
        tip_y + MARKER_H
    )
}

fn render_outages(o: &mut String, faults: &RunFaults, y: f64, x: &dyn Fn(f64) -> f64) {
    let top = y - BAND_PAD;
    let lane_h = (BAR_H + 2.0 * BAND_PAD) / faults.lanes as f64;
    for (f, lane, end) in &faults.outages {
        let x0 = x(f.at);
        let w = (x(*end) - x0).max(1.0);
        let ly = top + lane_h * *lane as f64;
        let tip = format!(
            "{} down from {:.1} s to {}\n{}",
            f.service,
            f.at,
            match f.until {
                Some(t) => format!("{t:.1} s ({:.1} s)", t - f.at),
                None => "the end of the run".to_string(),
            },
            f.what
        );
        // A white wash first: the bars under the band stay visible but read as "meanwhile".
        let _ = writeln!(
            o,
            r##"<g class="outage" data-service="{}"><rect x="{x0:.1}" y="{ly:.1}" width="{w:.1}" height="{lane_h:.1}" fill="#ffffff" fill-opacity="0.25"/><rect x="{x0:.1}" y="{ly:.1}" width="{w:.1}" height="{lane_h:.1}" fill="url(#{HATCH_ID})" stroke="{FAULT_INK}" stroke-width="0.8"/><title>{}</title></g>"##,
            esc(&f.service),
            esc(&tip)
        );
        let label = format!("{} down", f.service);
        let font = (lane_h - 0.5).clamp(9.0, 11.0);
        let inside = label.chars().count() as f64 * CHAR_W * font / 11.0 + 6.0 <= w;
        let (lx, anchor) = if inside {
            (x0 + w - 3.0, "end")
        } else {
            (x0 + w + 3.0, "start")
        };
        let _ = writeln!(
            o,
            r##"<text x="{lx:.1}" y="{:.1}" font-size="{font:.0}" font-weight="bold" text-anchor="{anchor}" fill="{FAULT_INK}" stroke="#ffffff" stroke-width="2.5" paint-order="stroke" pointer-events="none">{}</text>"##,
            ly + lane_h / 2.0 + font * 0.35,
            esc(&label)
        );
    }
}

fn render_markers(o: &mut String, row: &Row, faults: &RunFaults, y: f64, x: &dyn Fn(f64) -> f64) {
    // A fault no lease ties to a node of this run is shown on every row.
    let here = |f: &&&InjectedFault| match &f.node {
        Some(n) => n == &row.node || !faults.nodes.contains(&n.as_str()),
        None => true,
    };
    for f in faults.singles.iter().filter(here) {
        let _ = writeln!(
            o,
            r#"<g class="fault" data-kind="{}" data-service="{}">{}<title>{}</title></g>"#,
            f.kind.as_str(),
            esc(&f.service),
            marker_shape(x(f.at), y + BAR_H + BAND_PAD + 1.0),
            esc(&format!("{:.3} s: {}", f.at, f.what))
        );
    }
}

fn render_row(o: &mut String, row: &Row, y: f64, x: &dyn Fn(f64) -> f64, faults: &RunFaults) {
    let _ = writeln!(o, r#"<g class="row" data-node="{}">"#, esc(&row.node));
    let _ = writeln!(
        o,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
        PLOT_X0 - 8.0,
        y + BAR_H / 2.0 + 4.0,
        esc(&row.node)
    );
    // Labels go on after any outage band, so a band dims a bar but not its name.
    let mut labels = String::new();
    for g in &row.segments {
        let x0 = x(g.start);
        // A phase of a few milliseconds still gets a visible sliver.
        let w = (x(g.end) - x0).max(1.0);
        let style = phase_style(g.phase);
        let fill = if g.failure.is_some() {
            FAILED_FILL
        } else {
            style.fill
        };
        let mut tip = match &g.failure {
            Some(reason) => format!(
                "FAILED: {} after {:.1} s\n{}",
                g.steps[0].name, g.steps[0].waited_s, reason
            ),
            None => format!(
                "{}: {:.1} s to {:.1} s ({:.1} s)",
                g.phase,
                g.start,
                g.end,
                g.end - g.start
            ),
        };
        for st in &g.steps {
            let _ = write!(tip, "\n  {}", st.name);
        }
        let _ = writeln!(
            o,
            r#"<rect class="seg" data-phase="{}" x="{x0:.1}" y="{y:.1}" width="{w:.1}" height="{BAR_H}" fill="{fill}"><title>{}</title></rect>"#,
            esc(g.phase),
            esc(&tip)
        );
        let (label, ink) = match &g.failure {
            Some(_) => (format!("✕ {}", g.steps[0].name), "#ffffff"),
            None if g.alone => (g.steps[0].name.clone(), style.ink),
            None => (g.phase.to_string(), style.ink),
        };
        if fits(&label, w) {
            let _ = writeln!(
                labels,
                r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="{ink}" pointer-events="none">{}</text>"#,
                x0 + w / 2.0,
                y + BAR_H / 2.0 + 4.0,
                esc(&label)
            );
        } else if g.failure.is_some() {
            // The failure must be readable at a glance even when its bar is a sliver.
            let _ = writeln!(
                labels,
                r#"<text x="{:.1}" y="{:.1}" font-size="11" font-weight="bold" fill="{FAILED_FILL}">{}</text>"#,
                x0 + w + 4.0,
                y + BAR_H / 2.0 + 4.0,
                esc(&label)
            );
        }
    }
    render_outages(o, faults, y, x);
    o.push_str(&labels);
    for t in &row.ticks {
        let xt = x(t.at);
        let st = t.step;
        let when = match st.met_at {
            Some(m) => format!("met at {m:.3} s after {:.1} s", st.waited_s),
            None => format!("{} after {:.1} s", st.status, st.waited_s),
        };
        let _ = writeln!(
            o,
            r##"<g class="tick"><line x1="{xt:.1}" y1="{:.1}" x2="{xt:.1}" y2="{:.1}" stroke="#1a1a1a" stroke-width="1.2"/><rect x="{:.1}" y="{:.1}" width="6" height="{:.1}" fill="#000000" fill-opacity="0"><title>{}</title></rect></g>"##,
            y - 3.0,
            y + BAR_H + 3.0,
            xt - 3.0,
            y - 3.0,
            BAR_H + 6.0,
            esc(&format!("{}: {when}\n{}", st.name, clip(&st.detail, 300)))
        );
    }
    render_markers(o, row, faults, y, x);
    let _ = writeln!(o, "</g>");
}

fn render_band(o: &mut String, b: &MedianBand, y: f64, x: &dyn Fn(f64) -> f64) {
    let _ = writeln!(o, r#"<g class="band" data-label="{}">"#, esc(&b.label));
    let _ = writeln!(
        o,
        r#"<text x="12" y="{:.1}"><tspan font-weight="bold">{}</tspan>  per phase: bar to the median end, whisker over the fastest..slowest run</text>"#,
        y + 15.0,
        esc(&b.label)
    );
    let _ = writeln!(
        o,
        r##"<text x="24" y="{:.1}" font-size="11" fill="#555555">{}</text>"##,
        y + RUN_HEAD_H + 10.0,
        esc(&clip(&b.note, 170))
    );
    let y = y + RUN_HEAD_H + MESSAGE_H;
    let _ = writeln!(
        o,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="end">median</text>"#,
        PLOT_X0 - 8.0,
        y + BAR_H / 2.0 + 4.0
    );
    for p in &b.phases {
        let x0 = x(p.start);
        let w = (x(p.end) - x0).max(1.0);
        let style = phase_style(p.phase);
        let tip = format!(
            "{}: median {:.1} s to {:.1} s ({:.1} s); ends between {:.1} and {:.1} s\n  {}",
            p.phase,
            p.start,
            p.end,
            p.end - p.start,
            p.end_min,
            p.end_max,
            p.steps.join("\n  ")
        );
        let _ = writeln!(
            o,
            r#"<rect class="seg" data-phase="{}" x="{x0:.1}" y="{y:.1}" width="{w:.1}" height="{BAR_H}" fill="{}"><title>{}</title></rect>"#,
            esc(p.phase),
            style.fill,
            esc(&tip)
        );
        let label = format!("{} {:.1}s", p.phase, p.end - p.start);
        if fits(&label, w) {
            let _ = writeln!(
                o,
                r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="{}" pointer-events="none">{}</text>"#,
                x0 + w / 2.0,
                y + BAR_H / 2.0 + 4.0,
                style.ink,
                esc(&label)
            );
        }
        // The whisker sits under the bar so it never hides a label.
        let (w0, w1) = (x(p.end_min), x(p.end_max));
        let wy = y + BAR_H + 5.0;
        let _ = writeln!(
            o,
            r##"<g class="spread"><line x1="{w0:.1}" y1="{wy:.1}" x2="{w1:.1}" y2="{wy:.1}" stroke="#1a1a1a" stroke-width="1"/><line x1="{w0:.1}" y1="{:.1}" x2="{w0:.1}" y2="{:.1}" stroke="#1a1a1a"/><line x1="{w1:.1}" y1="{:.1}" x2="{w1:.1}" y2="{:.1}" stroke="#1a1a1a"/></g>"##,
            wy - 3.0,
            wy + 3.0,
            wy - 3.0,
            wy + 3.0
        );
    }
    for (name, t) in &b.marks {
        let xt = x(*t);
        let _ = writeln!(
            o,
            r##"<g class="mark"><line x1="{xt:.1}" y1="{:.1}" x2="{xt:.1}" y2="{:.1}" stroke="{FAULT_INK}" stroke-width="2" stroke-dasharray="3,2"/><title>{}</title></g>"##,
            y - 4.0,
            y + BAR_H + 8.0,
            esc(&format!("{name}: {t:.1} s"))
        );
    }
    let _ = writeln!(o, "</g>");
}

fn fmt_secs(t: f64) -> String {
    if (t - t.round()).abs() < 1e-9 {
        format!("{}", t.round() as i64)
    } else {
        format!("{t:.1}")
    }
}

/// Reads `summary.json` of a run and writes `timeline.svg` next to it.
pub fn write_for_run(run_dir: &Path) -> std::io::Result<PathBuf> {
    let summary = Summary::read(run_dir)?;
    let label = run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| run_dir.display().to_string());
    let svg = render_svg(&[(label, summary)]);
    let out = run_dir.join("timeline.svg");
    std::fs::write(&out, svg)?;
    Ok(out)
}

#[cfg(test)]
#[path = "timeline_tests.rs"]
mod tests;
