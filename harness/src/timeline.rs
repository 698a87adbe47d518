//! The boot timeline picture: one SVG per run (`timeline.svg`), or one comparing several runs
//! (`netboot-harness report --svg`). Each node of each run is a row of horizontal bars, one per
//! boot phase, with a tick where each step was met; runs are stacked on the same time scale so
//! a phase that got slower stands out.
//!
//! Phases come from the summary's steps alone: a step's segment runs from the previous met step
//! of the same node (or from the node's QEMU start) to the time this step was met, and the step
//! name decides the phase through [`PHASE_KEYWORDS`]. Consecutive steps of one phase make one
//! bar; a step no keyword matches is drawn as its own bar, "other". Times are seconds from the
//! lab's start, like the text report's `at` column.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::report::{StepSummary, Summary};

/// A boot phase as drawn: name, fill colour and the colour of a label written on that fill.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    pub name: &'static str,
    pub fill: &'static str,
    pub ink: &'static str,
}

/// The phases in boot order; the legend lists them in this order.
pub const PHASES: &[Phase] = &[
    Phase {
        name: "firmware",
        fill: "#4e79a7",
        ink: "#ffffff",
    },
    Phase {
        name: "DHCP",
        fill: "#76b7b2",
        ink: "#1a1a1a",
    },
    Phase {
        name: "boot script",
        fill: "#59a14f",
        ink: "#ffffff",
    },
    Phase {
        name: "sanboot",
        fill: "#edc948",
        ink: "#1a1a1a",
    },
    Phase {
        name: "kernel",
        fill: "#b07aa1",
        ink: "#ffffff",
    },
    Phase {
        name: "initramfs login",
        fill: "#9c755f",
        ink: "#ffffff",
    },
    Phase {
        name: "root mounted",
        fill: "#f28e2b",
        ink: "#1a1a1a",
    },
    Phase {
        name: "marker/shell",
        fill: "#8cd17d",
        ink: "#1a1a1a",
    },
    Phase {
        name: "reboot",
        fill: "#79706e",
        ink: "#ffffff",
    },
    Phase {
        name: OTHER,
        fill: "#d3d3d3",
        ink: "#1a1a1a",
    },
];

/// The phase of a step no keyword matches.
pub const OTHER: &str = "other";

/// Step-name keyword -> phase. The first keyword found in the step name (ignoring case) wins,
/// so the more specific ones come first ("firmware again" before "firmware", "restart" before
/// "kernel"). A step names the phase it *ends*: "iPXE started" closes the firmware phase, "DHCP
/// lease" the DHCP phase. Default step names (`console "SeaBIOS"`, `http_get "/boot.ipxe"`,
/// ...) are covered as far as they say what they wait for.
pub const PHASE_KEYWORDS: &[(&str, &str)] = &[
    ("firmware again", "reboot"),
    ("reboot", "reboot"),
    ("restart", "reboot"),
    ("ipxe started", "firmware"),
    ("firmware", "firmware"),
    ("seabios", "firmware"),
    ("dhcp", "DHCP"),
    ("boot script", "boot script"),
    ("http_get", "boot script"),
    ("sanboot", "sanboot"),
    ("san device", "sanboot"),
    ("ipxe iscsi", "sanboot"),
    ("kernel", "kernel"),
    ("ibft detected", "kernel"),
    ("initramfs", "initramfs login"),
    ("dracut", "initramfs login"),
    ("root mounted", "root mounted"),
    ("root=", "root mounted"),
    ("marker", "marker/shell"),
    ("shell", "marker/shell"),
];

const FAILED_FILL: &str = "#d62728";
const OK_INK: &str = "#1b7a2e";
const FONT: &str = "system-ui, -apple-system, 'Segoe UI', 'DejaVu Sans', Arial, sans-serif";

// Layout, in SVG units (pixels at 100 %).
const WIDTH: f64 = 1200.0;
const PLOT_X0: f64 = 120.0;
const PLOT_X1: f64 = WIDTH - 30.0;
const BAR_H: f64 = 20.0;
const ROW_H: f64 = 32.0;
const RUN_HEAD_H: f64 = 22.0;
const MESSAGE_H: f64 = 16.0;
const RUN_GAP: f64 = 14.0;
/// Rough width of one character of the 11 px label font, to decide whether a label fits.
const CHAR_W: f64 = 6.4;

/// The phase a step belongs to, or `None` when no keyword matches.
pub fn phase_of(step_name: &str) -> Option<&'static str> {
    let lower = step_name.to_lowercase();
    PHASE_KEYWORDS
        .iter()
        .find(|(k, _)| lower.contains(k))
        .map(|(_, p)| *p)
}

fn phase_style(name: &str) -> &'static Phase {
    PHASES
        .iter()
        .find(|p| p.name == name)
        .unwrap_or(&PHASES[PHASES.len() - 1])
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
                // the console step that came first: keep the picture in step order.
                let end = end.max(cursor);
                let mapped = phase_of(&st.name);
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
                ticks.push(Tick { at: end, step: st });
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

fn esc(s: &str) -> String {
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
    let rows: Vec<Vec<Row>> = runs.iter().map(|(_, s)| rows_of(s)).collect();
    let t_max = runs
        .iter()
        .map(|(_, s)| s.duration_s)
        .chain(
            rows.iter()
                .flatten()
                .flat_map(|r| r.segments.iter().map(|g| g.end)),
        )
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
    let runs_h: f64 = runs.iter().enumerate().map(run_h).sum();
    let bottom_axis_y = runs_top + runs_h + 4.0;
    let legend_y = bottom_axis_y + 30.0;
    let legend_rows = legend_layout()
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
    let title = match runs {
        [(_, s)] => format!(
            "Boot timeline: {} {} in {:.1} s",
            s.scenario,
            verdict_words(s),
            s.duration_s
        ),
        _ => format!("Boot timeline: {} runs on one time scale", runs.len()),
    };
    let _ = writeln!(
        o,
        r#"<text x="12" y="24" font-size="16" font-weight="bold">{}</text>"#,
        esc(&title)
    );
    let _ = writeln!(
        o,
        r##"<text x="12" y="42" font-size="11" fill="#555555">seconds since the lab started; one bar per boot phase, a tick where each step was met (hover a bar or tick for details)</text>"##
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
            r#"<text x="12" y="{:.1}"><tspan font-weight="bold">{}</tspan>  {}  <tspan font-weight="bold" fill="{verdict_ink}">{}</tspan> in {:.1} s ({}, started {})</text>"#,
            y + 15.0,
            esc(label),
            esc(&s.scenario),
            esc(&verdict_words(s)),
            s.duration_s,
            esc(accel),
            esc(&s.started_at)
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
        for row in rows {
            render_row(&mut o, row, y, &x);
            y += ROW_H;
        }
        y += RUN_GAP;
        let _ = writeln!(o, "</g>");
    }

    // Legend.
    let _ = writeln!(o, r#"<g class="legend" font-size="11">"#);
    for (name, fill, lx, line) in legend_layout() {
        let ly = legend_y + 22.0 * line as f64;
        let _ = writeln!(
            o,
            r##"<rect x="{lx:.1}" y="{:.1}" width="12" height="12" fill="{fill}" stroke="#555555" stroke-width="0.5"/><text x="{:.1}" y="{:.1}">{}</text>"##,
            ly - 10.0,
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

/// (name, fill, x, line) of each legend entry: every phase and the failed colour, wrapped to
/// the width.
fn legend_layout() -> Vec<(&'static str, &'static str, f64, usize)> {
    let items = PHASES
        .iter()
        .map(|p| (p.name, p.fill))
        .chain([("failed step", FAILED_FILL)]);
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

fn render_row(o: &mut String, row: &Row, y: f64, x: &dyn Fn(f64) -> f64) {
    let _ = writeln!(o, r#"<g class="row" data-node="{}">"#, esc(&row.node));
    let _ = writeln!(
        o,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
        PLOT_X0 - 8.0,
        y + BAR_H / 2.0 + 4.0,
        esc(&row.node)
    );
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
                o,
                r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="{ink}" pointer-events="none">{}</text>"#,
                x0 + w / 2.0,
                y + BAR_H / 2.0 + 4.0,
                esc(&label)
            );
        } else if g.failure.is_some() {
            // The failure must be readable at a glance even when its bar is a sliver.
            let _ = writeln!(
                o,
                r#"<text x="{:.1}" y="{:.1}" font-size="11" font-weight="bold" fill="{FAILED_FILL}">{}</text>"#,
                x0 + w + 4.0,
                y + BAR_H / 2.0 + 4.0,
                esc(&label)
            );
        }
    }
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
mod tests {
    use super::*;
    use crate::report::FailedStep;
    use std::collections::BTreeMap;

    const PASSED: &str = include_str!("../tests-data/summary-passed.json");

    fn step(name: &str, status: &str, started: f64, met: Option<f64>, waited: f64) -> StepSummary {
        StepSummary {
            name: name.into(),
            node: "node01".into(),
            status: status.into(),
            started_at: started,
            met_at: met,
            waited_s: waited,
            within_s: 60.0,
            detail: format!("detail of {name}"),
        }
    }

    /// A run that fails at the kernel step, with characters XML must escape in its reason.
    fn failed_summary() -> Summary {
        let reason = "waited 60s for \"iBFT detected\" <on the console> & gave up";
        Summary {
            scenario: "demo".into(),
            file: "scenarios/demo.yaml".into(),
            started_at: "2026-11-24T23:27:29Z".into(),
            accel: "tcg".into(),
            timeout_scale: 1.0,
            verdict: "failed".into(),
            ok: false,
            message: format!("failed at step `kernel found the iBFT`: {reason}"),
            failed_step: Some(FailedStep {
                name: "kernel found the iBFT".into(),
                reason: reason.into(),
                waited_s: 60.0,
                within_s: 60.0,
            }),
            steps: vec![
                step("firmware", "met", 0.1, Some(0.3), 0.2),
                step("DHCP lease", "met", 0.3, Some(5.9), 5.6),
                step("an unmapped step", "met", 5.9, Some(6.0), 0.1),
                step("another unmapped step", "met", 6.0, Some(6.1), 0.1),
                // A service record timed a little before the previous step.
                step("sanboot", "met", 6.1, Some(6.05), 0.0),
                step("kernel found the iBFT", "failed", 6.1, None, 60.0),
                step(
                    "root mounted from the iSCSI disk",
                    "skipped",
                    66.1,
                    None,
                    0.0,
                ),
            ],
            duration_s: 66.1,
            qemu_started_at: BTreeMap::from([("node01".to_string(), 0.1)]),
            artifacts: Vec::new(),
            console_tail: BTreeMap::new(),
            faults: Vec::new(),
        }
    }

    /// Balanced tags, one root `svg`, no raw `<` or bare `&` in text or attribute values.
    fn assert_well_formed(svg: &str) {
        let mut stack: Vec<String> = Vec::new();
        let mut roots = 0;
        let mut rest = svg;
        while let Some(open) = rest.find('<') {
            check_text(&rest[..open]);
            let after = &rest[open + 1..];
            let close = tag_end(after).unwrap_or_else(|| panic!("unclosed tag at {after:.60}"));
            let tag = &after[..close];
            rest = &after[close + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                let top = stack.pop().unwrap_or_else(|| panic!("stray </{name}>"));
                assert_eq!(top, name.trim(), "</{name}> closes <{top}>");
                continue;
            }
            let name: String = tag
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '/')
                .collect();
            assert!(
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()),
                "bad tag <{tag}>"
            );
            check_text(tag);
            if stack.is_empty() {
                roots += 1;
                assert_eq!(name, "svg", "root element");
            }
            if !tag.ends_with('/') {
                stack.push(name);
            }
        }
        check_text(rest);
        assert!(stack.is_empty(), "unclosed: {stack:?}");
        assert_eq!(roots, 1);
    }

    /// End of a tag: the first `>` outside a quoted attribute value.
    fn tag_end(s: &str) -> Option<usize> {
        let mut quote = None;
        for (i, c) in s.char_indices() {
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, '>') => return Some(i),
                (Some(_), '<') => panic!("raw < in an attribute: {s:.80}"),
                _ => {}
            }
        }
        None
    }

    fn check_text(t: &str) {
        for (i, _) in t.match_indices('&') {
            let ent = &t[i..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                    .iter()
                    .any(|e| ent.starts_with(e)),
                "bare & in {t:.80}"
            );
        }
    }

    fn attr(tag: &str, name: &str) -> Option<String> {
        let key = format!(" {name}=\"");
        let i = tag.find(&key)? + key.len();
        Some(tag[i..i + tag[i..].find('"')?].to_string())
    }

    /// Per row: (phase, x, width) of each bar in drawing order.
    fn bars(svg: &str) -> Vec<Vec<(String, f64, f64)>> {
        let mut rows = Vec::new();
        for line in svg.lines() {
            if line.starts_with("<g class=\"row\"") {
                rows.push(Vec::new());
            }
            if line.starts_with("<rect class=\"seg\"") {
                let num = |n| attr(line, n).unwrap().parse::<f64>().unwrap();
                rows.last_mut().expect("bar outside a row").push((
                    attr(line, "data-phase").unwrap(),
                    num("x"),
                    num("width"),
                ));
            }
        }
        rows
    }

    fn assert_monotonic(svg: &str) {
        for row in bars(svg) {
            for w in row.windows(2) {
                let ((_, xa, wa), (_, xb, _)) = (&w[0], &w[1]);
                // Bars may overlap by the 1 px a sliver is widened to, never more.
                assert!(
                    xb >= xa && *xb + 1.05 >= xa + wa,
                    "bars out of order: {w:?}"
                );
            }
        }
    }

    #[test]
    fn keywords_map_the_project_step_names_to_phases() {
        for (name, phase) in [
            ("firmware", "firmware"),
            ("iPXE started", "firmware"),
            ("DHCP lease", "DHCP"),
            ("boot script fetched", "boot script"),
            ("sanboot", "sanboot"),
            ("iPXE iSCSI login", "sanboot"),
            ("kernel found the iBFT", "kernel"),
            ("initramfs iSCSI login", "initramfs login"),
            ("dracut brings up the iBFT NIC", "initramfs login"),
            ("initramfs login seen by the target", "initramfs login"),
            ("root mounted from the iSCSI disk", "root mounted"),
            ("marker done", "marker/shell"),
            ("shell ready", "marker/shell"),
            ("ask for a reboot", "reboot"),
            ("kernel restarts", "reboot"),
            ("firmware again", "reboot"),
            ("console \"SeaBIOS\"", "firmware"),
            ("http_get \"/boot.ipxe\"", "boot script"),
        ] {
            assert_eq!(phase_of(name), Some(phase), "{name}");
        }
        assert_eq!(phase_of("the iBFT NIC carries the address"), None);
        for (_, p) in PHASE_KEYWORDS {
            assert!(PHASES.iter().any(|x| x.name == *p), "{p} has no style");
        }
    }

    #[test]
    fn real_passed_run_shows_every_phase_in_order() {
        let s: Summary = serde_json::from_str(PASSED).unwrap();
        let svg = render_svg(&[("20261124T232729Z-32173".into(), s)]);
        assert_well_formed(&svg);
        assert_monotonic(&svg);
        let rows = bars(&svg);
        assert_eq!(rows.len(), 1, "one node");
        let phases: Vec<&str> = rows[0].iter().map(|(p, _, _)| p.as_str()).collect();
        let expected: Vec<&str> = PHASES
            .iter()
            .map(|p| p.name)
            .filter(|p| *p != OTHER)
            .collect();
        assert_eq!(phases, expected);
        assert!(svg.contains("PASSED"), "verdict in the header");
        assert!(svg.contains("in 72.4 s"), "total time in the header");
        assert!(
            !svg.lines()
                .any(|l| l.starts_with("<rect class=\"seg\"") && l.contains(FAILED_FILL)),
            "no red bar in a passed run"
        );
        // The last bar ends at the last step, at the right edge of the time range.
        let (_, x, w) = rows[0].last().unwrap();
        assert!(x + w <= PLOT_X1 + 0.1);
    }

    #[test]
    fn failed_step_is_red_with_its_reason_and_skipped_steps_are_not_drawn() {
        let svg = render_svg(&[("run-a".into(), failed_summary())]);
        assert_well_formed(&svg);
        assert_monotonic(&svg);
        assert!(
            svg.contains(
                "waited 60s for &quot;iBFT detected&quot; &lt;on the console&gt; &amp; gave up"
            ),
            "{svg}"
        );
        let row = &bars(&svg)[0];
        let phases: Vec<&str> = row.iter().map(|(p, _, _)| p.as_str()).collect();
        // Unmapped steps stay separate; the failed step is a bar of its own.
        assert_eq!(
            phases,
            ["firmware", "DHCP", "other", "other", "sanboot", "kernel"]
        );
        let failed = svg
            .lines()
            .find(|l| l.contains("data-phase=\"kernel\""))
            .unwrap();
        assert!(failed.contains(FAILED_FILL), "{failed}");
        assert!(!svg.contains("root mounted from the iSCSI disk"));
        assert!(svg.contains("FAILED"));
        // The failed bar runs for the time the step waited: 60 s of the 66.1 s run.
        let (_, x, w) = row.last().unwrap();
        let scale = (PLOT_X1 - PLOT_X0) / 70.0;
        assert!((w - 60.0 * scale).abs() < 1.0, "width {w}");
        assert!((x - (PLOT_X0 + 6.1 * scale)).abs() < 1.0, "x {x}");
    }

    #[test]
    fn runs_share_one_time_scale() {
        let passed: Summary = serde_json::from_str(PASSED).unwrap();
        let svg = render_svg(&[
            ("passed".into(), passed),
            ("failed".into(), failed_summary()),
        ]);
        assert_well_formed(&svg);
        assert_monotonic(&svg);
        let rows = bars(&svg);
        assert_eq!(rows.len(), 2);
        // DHCP ends at 6.0 s in the first run and 5.9 s in the second: same scale, same place.
        let dhcp_end = |r: &Vec<(String, f64, f64)>| {
            let (_, x, w) = r.iter().find(|(p, _, _)| p == "DHCP").unwrap();
            x + w
        };
        assert!((dhcp_end(&rows[0]) - dhcp_end(&rows[1])).abs() < 3.0);
        assert!(svg.contains("2 runs on one time scale"));
        assert!(svg.contains("data-label=\"passed\"") && svg.contains("data-label=\"failed\""));
    }

    #[test]
    fn a_run_without_steps_still_renders() {
        let s = Summary::error("demo", Path::new("x.yaml"), "tgtd did not start".into());
        let svg = render_svg(&[("err".into(), s)]);
        assert_well_formed(&svg);
        assert!(svg.contains("no steps ran"));
        assert!(svg.contains("tgtd did not start"));
        assert!(svg.contains("ERROR"));
    }

    #[test]
    fn write_for_run_puts_the_picture_next_to_the_summary() {
        let dir = std::env::temp_dir().join(format!("nbh-timeline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("summary.json"), PASSED).unwrap();
        let p = write_for_run(&dir).unwrap();
        assert_eq!(p, dir.join("timeline.svg"));
        let svg = std::fs::read_to_string(&p).unwrap();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.contains(&format!(
            "data-label=\"{}\"",
            dir.file_name().unwrap().to_string_lossy()
        )));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
