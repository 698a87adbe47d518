//! Unit tests of `per_node`: one row per node in the text report and in the run's JUnit file.

use std::collections::BTreeMap;

use super::per_node::{junit, render, rows};
use super::{FailedStep, StepSummary, Summary};
use crate::scenario::Phase;

fn step(
    node: &str,
    name: &str,
    status: &str,
    met: Option<f64>,
    phase: Option<Phase>,
) -> StepSummary {
    StepSummary {
        name: format!("{name} ({node})"),
        node: node.into(),
        status: status.into(),
        started_at: 0.0,
        met_at: met,
        waited_s: 0.0,
        within_s: 60.0,
        slow: false,
        phase,
        detail: String::new(),
    }
}

/// Three nodes: node01 got through, node02's root step failed (a reason XML must escape),
/// node03 was still on its way when the run ended.
fn fleet_run() -> Summary {
    let reason = "waited 300s for \"EXT4-fs (sda1): mounted\" <console> & gave up";
    let root = Some(Phase::RootMounted);
    Summary {
        scenario: "fleet-x".into(),
        file: "scenarios/fleet-x.yaml".into(),
        started_at: "2026-11-30T15:00:00Z".into(),
        accel: "tcg".into(),
        timeout_scale: 1.0,
        timeout_why: String::new(),
        verdict: "failed".into(),
        ok: false,
        message: String::new(),
        failed_step: Some(FailedStep {
            name: "root (node02)".into(),
            cause: Some(crate::scenario::Cause::Timeout),
            evidence: Vec::new(),
            reason: reason.into(),
            waited_s: 300.0,
            within_s: 300.0,
        }),
        steps: vec![
            step("node01", "firmware", "met", Some(0.4), None),
            step("node02", "firmware", "met", Some(2.5), None),
            step("node03", "firmware", "met", Some(4.6), None),
            step("node01", "root", "met", Some(31.0), root),
            step("node02", "root", "failed", None, root),
            step("node03", "root", "skipped", None, root),
        ],
        duration_s: 302.5,
        qemu_started_at: BTreeMap::from([
            ("node01".to_string(), 0.1),
            ("node02".to_string(), 2.1),
            ("node03".to_string(), 4.1),
        ]),
        artifacts: Vec::new(),
        console_tail: BTreeMap::new(),
        faults: Vec::new(),
    }
}

#[test]
fn each_node_gets_its_own_row_with_how_far_it_got() {
    let r = rows(&fleet_run());
    let brief: Vec<(&str, &str, Option<f64>, usize, usize)> = r
        .iter()
        .map(|x| (x.node.as_str(), x.status, x.root_at, x.met, x.steps))
        .collect();
    assert_eq!(
        brief,
        [
            ("node01", "passed", Some(31.0), 2, 2),
            ("node02", "failed", None, 1, 2),
            ("node03", "not reached", None, 1, 2),
        ]
    );
    assert_eq!(r[1].failed.as_deref(), Some("root (node02)"));
    assert_eq!(r[2].powered_on_at, Some(4.1));
    // From its own power-on, not the run's start.
    assert!((r[0].took_s - 30.9).abs() < 1e-9, "{}", r[0].took_s);
    let text = render(&r);
    assert!(text.contains("node02     failed"), "{text}");
    assert!(text.contains("FAILED: root (node02)"), "{text}");
    assert!(text.contains("root (node01) at 31.0s"), "{text}");
}

#[test]
fn an_interrupted_node_is_stopped_not_failed() {
    let mut s = fleet_run();
    s.verdict = "interrupted".into();
    let r = rows(&s);
    assert_eq!(r[1].status, "stopped");
    let text = render(&r);
    assert!(
        text.contains("STOPPED in: root (node02)") && !text.contains("FAILED"),
        "{text}"
    );
}

fn child<'a, 'i>(c: &roxmltree::Node<'a, 'i>, tag: &str) -> Option<roxmltree::Node<'a, 'i>> {
    c.children().find(|n| n.has_tag_name(tag))
}

#[test]
fn the_junit_file_has_one_test_case_per_node() {
    let xml = junit(&fleet_run());
    let doc = roxmltree::Document::parse(&xml).expect("well-formed XML");
    let suite = doc
        .descendants()
        .find(|n| n.has_tag_name("testsuite"))
        .unwrap();
    assert_eq!(suite.attribute("name"), Some("fleet-x"));
    assert_eq!(suite.attribute("tests"), Some("3"));
    assert_eq!(suite.attribute("failures"), Some("1"));
    let cases: Vec<_> = suite
        .children()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    let names: Vec<_> = cases.iter().filter_map(|c| c.attribute("name")).collect();
    assert_eq!(names, ["node01", "node02", "node03"]);
    assert!(child(&cases[0], "failure").is_none() && child(&cases[0], "skipped").is_none());
    let failure = child(&cases[1], "failure").unwrap();
    assert!(failure
        .attribute("message")
        .unwrap()
        .contains("\"EXT4-fs (sda1): mounted\" <console> & gave up"));
    assert!(child(&cases[2], "skipped")
        .unwrap()
        .attribute("message")
        .unwrap()
        .contains("1 of 2 met"));
    // The node's steps, and only its own, are the case's output.
    let out = child(&cases[0], "system-out").unwrap().text().unwrap();
    assert!(
        out.contains("root (node01)") && !out.contains("node02"),
        "{out}"
    );
}
