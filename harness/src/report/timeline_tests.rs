//! Unit tests of `timeline`.

use super::*;
use crate::report::{FailedStep, FaultKind};
use roxmltree::{Document, Node};
use std::collections::BTreeMap;

const PASSED: &str = include_str!("../../tests-data/summary-passed.json");
/// A real power-outage run: DHCP, HTTP and iSCSI kept down for 25, 40 and 55 s, ten
/// connections reset meanwhile.
const OUTAGE: &str = include_str!("../../tests-data/summary-power-outage.json");

fn step(name: &str, status: &str, started: f64, met: Option<f64>, waited: f64) -> StepSummary {
    StepSummary {
        name: name.into(),
        node: "node01".into(),
        status: status.into(),
        started_at: started,
        met_at: met,
        waited_s: waited,
        within_s: 60.0,
        slow: false,
        phase: test_phase(name),
        detail: format!("detail of {name}"),
    }
}

/// The phases the test runs' steps end, as their scenarios would type them.
fn test_phase(name: &str) -> Option<Phase> {
    Some(match name {
        "firmware" | "iPXE started" => Phase::Firmware,
        "DHCP lease" => Phase::Dhcp,
        "boot script fetched" => Phase::BootScript,
        "sanboot" | "iPXE iSCSI login" => Phase::Sanboot,
        "kernel found the iBFT" => Phase::Kernel,
        "initramfs iSCSI login" | "initramfs login seen by the target" => Phase::InitramfsLogin,
        "root mounted from the iSCSI disk" => Phase::RootMounted,
        "marker done" | "shell ready" => Phase::Os,
        "ask for a reboot" | "kernel restarts" | "firmware again" => Phase::Reboot,
        _ => return None,
    })
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
        timeout_why: String::new(),
        verdict: "failed".into(),
        ok: false,
        message: format!("failed at step `kernel found the iBFT`: {reason}"),
        failed_step: Some(FailedStep {
            name: "kernel found the iBFT".into(),
            cause: Some(crate::scenario::Cause::Timeout),
            evidence: Vec::new(),
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

const SVG_NS: &str = "http://www.w3.org/2000/svg";

/// The whole picture through a real XML parser, which refuses anything not well-formed
/// (unbalanced tags, unquoted attributes, a raw `<` or a bare `&`, an unknown entity, a
/// second root); the one root is `svg` in the SVG namespace.
fn parse(svg: &str) -> Document<'_> {
    let doc =
        Document::parse(svg).unwrap_or_else(|e| panic!("not well-formed XML: {e}\n{svg:.300}"));
    let root = doc.root_element();
    assert!(
        root.has_tag_name((SVG_NS, "svg")),
        "root element {:?}",
        root.tag_name()
    );
    doc
}

fn assert_well_formed(svg: &str) {
    parse(svg);
}

/// The `tag` elements of class `class` under `node`, in drawing order.
fn of_class<'a, 'i>(node: Node<'a, 'i>, tag: &str, class: &str) -> Vec<Node<'a, 'i>> {
    node.descendants()
        .filter(|n| n.has_tag_name((SVG_NS, tag)) && n.attribute("class") == Some(class))
        .collect()
}

/// The elements `tag` under `node`, in drawing order.
fn elements<'a, 'i>(node: Node<'a, 'i>, tag: &str) -> Vec<Node<'a, 'i>> {
    node.descendants()
        .filter(|n| n.has_tag_name((SVG_NS, tag)))
        .collect()
}

/// A number attribute of `node`.
fn num(node: Node, name: &str) -> f64 {
    let v = node
        .attribute(name)
        .unwrap_or_else(|| panic!("no {name} on {node:?}"));
    v.parse()
        .unwrap_or_else(|e| panic!("{name}=\"{v}\" on {node:?}: {e}"))
}

/// The text of each element `tag` under `node` (its first text, unescaped).
fn texts<'a>(node: Node<'a, '_>, tag: &str) -> Vec<&'a str> {
    elements(node, tag)
        .into_iter()
        .map(|n| n.text().unwrap_or(""))
        .collect()
}

/// The `data-label` of each run, top to bottom.
fn run_labels<'a>(doc: &'a Document) -> Vec<&'a str> {
    of_class(doc.root_element(), "g", "run")
        .into_iter()
        .map(|r| r.attribute("data-label").expect("a run without a label"))
        .collect()
}

/// Per row: (phase, x, width) of each bar in drawing order.
fn bars(svg: &str) -> Vec<Vec<(String, f64, f64)>> {
    let doc = parse(svg);
    let root = doc.root_element();
    for seg in of_class(root, "rect", "seg") {
        assert!(
            seg.ancestors()
                .any(|a| a.has_tag_name((SVG_NS, "g")) && a.attribute("class") == Some("row")),
            "bar outside a row: {seg:?}"
        );
    }
    of_class(root, "g", "row")
        .into_iter()
        .map(|row| {
            of_class(row, "rect", "seg")
                .into_iter()
                .map(|seg| {
                    let phase = seg.attribute("data-phase").expect("a bar without a phase");
                    (phase.to_string(), num(seg, "x"), num(seg, "width"))
                })
                .collect()
        })
        .collect()
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
fn every_phase_has_a_style_and_the_legend_follows_boot_order() {
    for p in Phase::ALL {
        assert!(
            PHASES.iter().any(|x| x.name == p.label()),
            "{} has no style",
            p.label()
        );
    }
    let order: Vec<&str> = Phase::ALL.iter().map(|p| p.label()).collect();
    let styled: Vec<&str> = PHASES
        .iter()
        .map(|p| p.name)
        .filter(|n| *n != OTHER)
        .collect();
    assert_eq!(order, styled);
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
    let doc = parse(&svg);
    assert!(
        of_class(doc.root_element(), "rect", "seg")
            .iter()
            .all(|r| r.attribute("fill") != Some(FAILED_FILL)),
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
    let doc = parse(&svg);
    let failed = of_class(doc.root_element(), "rect", "seg")
        .into_iter()
        .find(|r| r.attribute("data-phase") == Some("kernel"))
        .unwrap();
    assert_eq!(failed.attribute("fill"), Some(FAILED_FILL), "{failed:?}");
    assert!(!svg.contains("root mounted from the iSCSI disk"));
    assert!(svg.contains("FAILED"));
    // The failed bar runs for the time the step waited: 60 s of the 66.1 s run.
    let (_, x, w) = row.last().unwrap();
    let scale = (PLOT_X1 - PLOT_X0) / 70.0;
    assert!((w - 60.0 * scale).abs() < 1.0, "width {w}");
    assert!((x - (PLOT_X0 + 6.1 * scale)).abs() < 1.0, "x {x}");
}

#[test]
fn a_mark_is_drawn_at_the_time_its_step_was_met() {
    let svg = render_svg(&[("run-a".into(), failed_summary())]);
    // `sanboot` was met by a record at 6.05 s, after a step met at 6.1 s.
    let scale = (PLOT_X1 - PLOT_X0) / 70.0;
    let doc = parse(&svg);
    let tick = of_class(doc.root_element(), "g", "tick")
        .into_iter()
        .find(|t| {
            texts(*t, "title")
                .iter()
                .any(|s| s.starts_with("sanboot: met at 6.050"))
        })
        .expect("a mark for sanboot");
    let x = num(elements(tick, "line")[0], "x1");
    assert!((x - (PLOT_X0 + 6.05 * scale)).abs() < 0.15, "x {x}");
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
    assert_eq!(run_labels(&parse(&svg)), ["passed", "failed"]);
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

/// (service, x, y, width, height) of the hatched rect of each outage band.
fn bands(svg: &str) -> Vec<(String, f64, f64, f64, f64)> {
    let doc = parse(svg);
    let hatch = format!("url(#{HATCH_ID})");
    of_class(doc.root_element(), "g", "outage")
        .into_iter()
        .map(|g| {
            let rect = elements(g, "rect")
                .into_iter()
                .find(|r| r.attribute("fill") == Some(hatch.as_str()))
                .unwrap_or_else(|| panic!("no hatched rect in {g:?}"));
            (
                g.attribute("data-service").unwrap().to_string(),
                num(rect, "x"),
                num(rect, "y"),
                num(rect, "width"),
                num(rect, "height"),
            )
        })
        .collect()
}

fn x_of(t: f64, t_end: f64) -> f64 {
    PLOT_X0 + t / t_end * (PLOT_X1 - PLOT_X0)
}

#[test]
fn outages_are_hatched_bands_and_single_faults_are_markers() {
    let s: Summary = serde_json::from_str(OUTAGE).unwrap();
    assert_eq!(s.faults.len(), 13);
    let svg = render_svg(&[("20261125T085415Z-24564".into(), s)]);
    assert_well_formed(&svg);
    assert_monotonic(&svg);
    assert!(
        !svg.contains("<script") && !svg.contains("onmouse"),
        "plain SVG"
    );
    assert!(svg.contains(&format!("<pattern id=\"{HATCH_ID}\"")));

    // One lane per service, in boot order, each from its `down` record to `started`.
    let b = bands(&svg);
    let services: Vec<&str> = b.iter().map(|(sv, ..)| sv.as_str()).collect();
    assert_eq!(services, ["iscsi", "http", "dhcp"], "in the records' order");
    let lane_of = |sv: &str| b.iter().find(|(s, ..)| s == sv).unwrap().clone();
    let (dhcp, http, iscsi) = (lane_of("dhcp"), lane_of("http"), lane_of("iscsi"));
    assert!(dhcp.2 < http.2 && http.2 < iscsi.2, "staircase: {b:?}");
    for (_, _, _, _, h) in &b {
        assert!(
            (h * 3.0 - (BAR_H + 2.0 * BAND_PAD)).abs() < 0.2,
            "three lanes: {b:?}"
        );
    }
    // 82.1 s of run: the scale runs to 90 s.
    for ((_, x, _, w, _), (start, end)) in
        [dhcp, http, iscsi]
            .iter()
            .zip([(0.087, 25.024), (0.087, 40.002), (0.086, 55.001)])
    {
        assert!((x - x_of(start, 90.0)).abs() < 0.2, "{x} for {start}");
        assert!((x + w - x_of(end, 90.0)).abs() < 0.2, "{} for {end}", x + w);
    }
    let doc = parse(&svg);
    let root = doc.root_element();
    assert!(texts(root, "text").contains(&"dhcp down"));
    let tips = texts(root, "title");
    assert!(tips
        .iter()
        .any(|t| t.starts_with("http down from 0.1 s to 40.0 s (39.9 s)")));

    // Ten resets, each a marker with its own tooltip, under the bar and not a step tick.
    let markers = of_class(root, "g", "fault");
    assert_eq!(markers.len(), 10, "{markers:?}");
    assert!(markers
        .iter()
        .all(|m| m.attribute("data-kind") == Some("reset")));
    assert_eq!(
        tips.iter()
            .filter(|t| t.starts_with("31.249 s: http reset a connection from 10.77.0.198"))
            .count(),
        1
    );
    assert_eq!(
        elements(root, "polygon").len(),
        10 + 1,
        "ten markers and the legend's"
    );

    assert!(svg.contains("3 service outages and 10 injected faults"));
    let legend = texts(of_class(root, "g", "legend")[0], "text");
    assert!(legend.contains(&LEGEND_OUTAGE), "{legend:?}");
    assert!(legend.contains(&LEGEND_FAULT), "{legend:?}");
}

fn two_node_summary(faults: Vec<InjectedFault>) -> Summary {
    let mut s = failed_summary();
    let mut other = step("firmware", "met", 0.2, Some(0.5), 0.3);
    other.node = "node02".into();
    s.steps.push(other);
    s.qemu_started_at.insert("node02".into(), 0.2);
    s.faults = faults;
    s
}

fn single(at: f64, node: Option<&str>, kind: FaultKind) -> InjectedFault {
    InjectedFault {
        at,
        until: None,
        service: "iscsi".into(),
        kind,
        node: node.map(str::to_string),
        what: format!("fault at {at} <with> & markup"),
    }
}

#[test]
fn a_fault_is_marked_on_its_node_and_an_open_outage_runs_to_the_end() {
    let s = two_node_summary(vec![
        InjectedFault {
            at: 0.1,
            until: None,
            service: "http".into(),
            kind: FaultKind::Outage,
            node: None,
            what: "http down until 90s (start_after), still down when the run ended".into(),
        },
        single(3.0, Some("node02"), FaultKind::LoginRefused),
        single(4.0, None, FaultKind::LoginDropped),
        single(5.0, Some("node09"), FaultKind::Other),
    ]);
    let svg = render_svg(&[("run".into(), s)]);
    assert_well_formed(&svg);
    assert!(svg.contains("fault at 3 &lt;with&gt; &amp; markup"));
    let doc = parse(&svg);
    let rows = of_class(doc.root_element(), "g", "row");
    assert_eq!(rows.len(), 2);
    let kinds = |row: Node| -> Vec<String> {
        of_class(row, "g", "fault")
            .iter()
            .map(|t| t.attribute("data-kind").unwrap().to_string())
            .collect()
    };
    // node01 does not get node02's refusal; an unknown or missing node goes on every row.
    assert_eq!(kinds(rows[0]), ["login_dropped", "other"]);
    assert_eq!(kinds(rows[1]), ["login_refused", "login_dropped", "other"]);
    // The outage covers both rows, to the end of the 66.1 s run, as one full-height lane.
    let b = bands(&svg);
    assert_eq!(b.len(), 2);
    for (_, x, _, w, h) in &b {
        assert!((x + w - x_of(66.1, 70.0)).abs() < 0.2, "{b:?}");
        assert!((h - (BAR_H + 2.0 * BAND_PAD)).abs() < 0.01);
    }
    assert!(svg.contains("to the end of the run"));
}

#[test]
fn a_summary_without_faults_draws_none_and_keeps_the_legend_short() {
    let old: Summary = serde_json::from_str(PASSED).unwrap();
    assert!(old.faults.is_empty(), "written before faults were listed");
    let svg = render_svg(&[("old".into(), old.clone())]);
    assert_well_formed(&svg);
    for absent in [
        "<pattern",
        "class=\"outage\"",
        "class=\"fault\"",
        LEGEND_OUTAGE,
        LEGEND_FAULT,
        "injected",
    ] {
        assert!(!svg.contains(absent), "{absent}");
    }
    // Next to a run with faults it keeps no marks, while the legend explains the other's.
    let outage: Summary = serde_json::from_str(OUTAGE).unwrap();
    let both = render_svg(&[("old".into(), old), ("outage".into(), outage)]);
    assert_well_formed(&both);
    assert_monotonic(&both);
    let doc = parse(&both);
    let runs = of_class(doc.root_element(), "g", "run");
    assert!(!runs[0]
        .descendants()
        .any(|n| matches!(n.attribute("class"), Some("fault" | "outage"))));
    assert_eq!(of_class(runs[1], "g", "fault").len(), 10);
    let legend = texts(of_class(doc.root_element(), "g", "legend")[0], "text");
    assert!(legend.contains(&LEGEND_OUTAGE), "{legend:?}");
}

#[test]
fn write_for_run_puts_the_picture_next_to_the_summary() {
    let tmp = tempfile::Builder::new()
        .prefix("nbh-timeline-")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("summary.json"), PASSED).unwrap();
    let p = write_for_run(dir).unwrap();
    assert_eq!(p, dir.join("timeline.svg"));
    let svg = std::fs::read_to_string(&p).unwrap();
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert_eq!(
        run_labels(&parse(&svg)),
        [dir.file_name().unwrap().to_string_lossy()]
    );
    tmp.close().unwrap();
}

#[test]
fn a_median_band_groups_steps_into_phases_and_draws_the_spread() {
    use Phase::*;
    let steps: Vec<BandStep> = vec![
        ("firmware".to_string(), Some(Firmware), 0.2, 0.1, 0.3),
        ("DHCP lease".to_string(), Some(Dhcp), 5.5, 5.4, 5.9),
        (
            "boot script fetched".to_string(),
            Some(BootScript),
            5.6,
            5.5,
            6.0,
        ),
        (
            "kernel found the iBFT".to_string(),
            Some(Kernel),
            14.0,
            13.0,
            15.0,
        ),
        (
            "initramfs iSCSI login".to_string(),
            Some(InitramfsLogin),
            16.0,
            15.5,
            17.0,
        ),
        (
            "initramfs login seen by the target".to_string(),
            Some(InitramfsLogin),
            15.9,
            15.4,
            17.0,
        ),
        (
            "root mounted from the iSCSI disk".to_string(),
            Some(RootMounted),
            16.5,
            16.4,
            16.6,
        ),
    ];
    let mut band = MedianBand::from_steps("median of 3 passed runs".into(), &steps, 0.2);
    let names: Vec<&str> = band.phases.iter().map(|p| p.phase).collect();
    assert_eq!(
        names,
        [
            "firmware",
            "DHCP",
            "boot script",
            "kernel",
            "initramfs login",
            "root mounted"
        ]
    );
    let login = &band.phases[4];
    // Two steps in one phase; the second's earlier median does not move the end back.
    assert_eq!(login.steps.len(), 2);
    assert!((login.start - 14.2).abs() < 1e-9 && (login.end - 16.2).abs() < 1e-9);
    assert!((login.end_max - 17.2).abs() < 1e-9);
    for w in band.phases.windows(2) {
        assert!(w[0].end <= w[1].start + 1e-9, "{w:?}");
    }
    band.note = "bare QEMU ratio 0.977 <&>".into();
    band.marks.push(("bare QEMU median".into(), 16.9));
    let passed: Summary = serde_json::from_str(PASSED).unwrap();
    let svg = render_svg_with(&[("run 1".into(), passed)], Some(&band));
    assert_well_formed(&svg);
    let doc = parse(&svg);
    let drawn = of_class(doc.root_element(), "g", "band");
    assert_eq!(drawn.len(), 1);
    let drawn = drawn[0];
    assert_eq!(of_class(drawn, "g", "spread").len(), 6);
    assert_eq!(of_class(drawn, "g", "mark").len(), 1);
    assert!(texts(drawn, "text").contains(&"bare QEMU ratio 0.977 <&>"));
    assert!(svg.contains("ratio 0.977 &lt;&amp;&gt;"));
    assert!(svg.contains("Benchmark: debian-ibft-e1000, median of 3 passed runs"));
    // The run below keeps its own rows.
    assert_eq!(
        drawn
            .next_sibling_element()
            .and_then(|n| n.attribute("class")),
        Some("run")
    );
    assert_eq!(run_labels(&doc), ["run 1"]);
    assert!(!render_svg(&[]).contains("class=\"band\""));
}
