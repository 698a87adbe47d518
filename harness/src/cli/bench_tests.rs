//! Unit tests of `bench`.

use super::*;

/// A passed run of the default scenario, as `run` wrote its summary.
fn recorded_summary() -> Summary {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests-data/summary-passed.json"),
    )
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn stats() {
    assert_eq!(Stat::of(&[]), None);
    assert_eq!(
        Stat::of(&[3.0, 1.0, 2.0]),
        Some(Stat {
            median: 2.0,
            min: 1.0,
            max: 3.0,
            q1: 1.5,
            q3: 2.5,
            n: 3,
        })
    );
    assert_eq!(Stat::of(&[4.0, 1.0, 2.0, 3.0]).map(|s| s.median), Some(2.5));
    // Five runs: the quartiles are the 2nd and the 4th value, whatever the outliers do.
    let five = Stat::of(&[30.0, 16.0, 17.0, 15.0, 16.5]).unwrap();
    assert_eq!((five.min, five.q1, five.median), (15.0, 16.0, 16.5));
    assert_eq!((five.q3, five.max, five.n), (17.0, 30.0, 5));
    assert_eq!(five.iqr(), 1.0);
    // Four: interpolated, a quarter and three quarters of the way along.
    let four = Stat::of(&[10.0, 20.0, 30.0, 40.0]).unwrap();
    assert_eq!((four.q1, four.median, four.q3), (17.5, 25.0, 32.5));
    // One run has no spread.
    let one = Stat::of(&[7.0]).unwrap();
    assert_eq!(
        (one.min, one.q1, one.median, one.q3, one.max),
        (7.0, 7.0, 7.0, 7.0, 7.0)
    );
    assert_eq!(one.iqr(), 0.0);
}

#[test]
fn quartile_ranges_overlap_or_not() {
    let a = Stat::of(&[10.0, 11.0, 12.0, 13.0, 14.0]).unwrap(); // IQR 11..13
    let b = Stat::of(&[12.5, 13.5, 14.0, 15.0, 16.0]).unwrap(); // IQR 13.5..15
    let c = Stat::of(&[12.0, 13.0, 14.0, 15.0, 16.0]).unwrap(); // IQR 13..15: touches a
    assert!(!a.quartiles_overlap(&b) && !b.quartiles_overlap(&a));
    assert!(a.quartiles_overlap(&c) && c.quartiles_overlap(&a));
    assert!(a.quartiles_overlap(&a));
}

#[test]
fn the_arms_alternate() {
    use Arm::{Bare, Harness};
    assert_eq!(
        schedule(3, true),
        [
            (Harness, 1),
            (Bare, 1),
            (Harness, 2),
            (Bare, 2),
            (Harness, 3),
            (Bare, 3)
        ]
    );
    // Without a bare arm, the harness runs alone.
    assert_eq!(schedule(2, false), [(Harness, 1), (Harness, 2)]);
    assert!(schedule(0, true).is_empty());
    // The default: 5 of each, never two of one arm in a row.
    let five = schedule(5, true);
    assert_eq!(five.len(), 10);
    assert!(five.windows(2).all(|w| w[0].0 != w[1].0), "{five:?}");
    let labels: Vec<String> = five.iter().copied().map(label).collect();
    assert_eq!(labels[..3], ["harness 1", "bare 1", "harness 2"]);
}

#[test]
fn a_bare_arm_only_where_the_proxy_changes_nothing() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let lets_through = |name: &str| {
        let s = crate::scenario::load(&dir.join(format!("{name}.yaml"))).unwrap();
        run::login_faults(&s).lets_all_through()
    };
    assert!(lets_through("debian-ibft-e1000"));
    // Refused logins, a late target, an address ACL: only the proxy does these.
    assert!(!lets_through("iscsi-late"));
    assert!(!lets_through("power-outage"));
    assert!(!lets_through("nic-order-broken"));
}

#[test]
fn the_ratio_is_of_the_medians_and_each_arm_keeps_its_spread() {
    let s = recorded_summary();
    let step = "root mounted from the iSCSI disk";
    // Five harness runs whose root mount lands 0, 1, 2, 3 and 12 s later than recorded.
    let qemu0 = first_qemu_start(&s).unwrap();
    let recorded = s
        .steps
        .iter()
        .find(|t| t.name == step)
        .unwrap()
        .met_at
        .unwrap()
        - qemu0;
    let shifted = |d: f64| {
        let mut s = s.clone();
        for t in s.steps.iter_mut().filter(|t| t.name == step) {
            t.met_at = t.met_at.map(|m| m + d);
        }
        (s, 0.0, PathBuf::from("h"))
    };
    let runs: Vec<_> = [0.0, 1.0, 2.0, 3.0, 12.0].map(shifted).into();
    let b = summarize("debian-ibft-e1000", &runs);
    let bare_run = |at: f64, ok: bool| {
        let mut s = s.clone();
        s.ok = ok;
        s.steps.truncate(1);
        s.steps[0].started_at = 2.0;
        s.steps[0].met_at = ok.then_some(2.0 + at);
        (s, PathBuf::from("bare"))
    };
    let r = recorded;
    // Five bare runs, one of which never reached the text: it counts as a run, not a time.
    let bare = vec![
        bare_run(r - 2.0, true),
        bare_run(r - 1.0, true),
        bare_run(r + 9.0, true),
        bare_run(r, true),
        bare_run(0.0, false),
    ];
    let c = compare_bare(step, "EXT4-fs", &b, &bare).unwrap();
    assert_eq!(
        (c.bare_runs, c.bare_passed, c.harness.n, c.bare.n),
        (5, 4, 5, 4)
    );
    let near = |a: f64, b: f64| (a - b).abs() < 1e-9;
    // Harness: r+0 .. r+12, median r+2, quartiles r+1 and r+3.
    assert!(near(c.harness.median, r + 2.0), "{c:?}");
    assert!(
        near(c.harness.q1, r + 1.0) && near(c.harness.q3, r + 3.0),
        "{c:?}"
    );
    assert!(
        near(c.harness.min, r) && near(c.harness.max, r + 12.0),
        "{c:?}"
    );
    // Bare: r-2, r-1, r, r+9: median r-0.5, quartiles r-1.25 and r+2.25.
    assert!(near(c.bare.median, r - 0.5), "{c:?}");
    assert!(
        near(c.bare.q1, r - 1.25) && near(c.bare.q3, r + 2.25),
        "{c:?}"
    );
    assert!(near(c.ratio, (r + 2.0) / (r - 0.5)), "{c:?}");
    assert!(c.quartiles_overlap, "{c:?}");
    let mut b = b;
    b.bare = Some(c);
    let text = render(&b);
    assert!(text.contains("the interquartile ranges overlap"), "{text}");
    assert!(text.contains("in 4 of 5 runs"), "{text}");
    let json = serde_json::to_value(&b).unwrap();
    assert!(json["bare"]["harness"]["q3"].is_number(), "{json}");
    assert_eq!(json["bare"]["quartiles_overlap"], true);
}

#[test]
fn summarizes_a_recorded_run() {
    let s = recorded_summary();
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
    // Both harness runs are the same recording, both bare runs the same time: no spread,
    // and the ranges lie apart.
    assert_eq!((c.harness.iqr(), c.bare.iqr()), (0.0, 0.0));
    assert!(!c.quartiles_overlap);
    let mut b = b;
    b.bare = Some(c);
    let text = render(&b);
    assert!(text.contains("ratio harness/bare 1.100 (+10.0%)"), "{text}");
    assert!(text.contains("do not overlap"), "{text}");
    assert!(
        text.contains(&format!("IQR {:.1}..{:.1}", h / 1.1, h / 1.1)),
        "{text}"
    );
    assert!(text.contains("2 runs"), "{text}");

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
    assert!(
        band.note.contains(&format!("IQR {h:.1}..{h:.1}, against")),
        "{}",
        band.note
    );
    let svg = picture(&b, &runs, &bare);
    assert!(svg.contains("data-label=\"run 2\"") && svg.contains("data-label=\"bare 1\""));
}

#[test]
fn a_fleets_time_is_its_slowest_nodes_root() {
    let one = recorded_summary();
    // One node: no fleet figure.
    let b = summarize("x", &[(one.clone(), 1.0, PathBuf::from("a"))]);
    assert!(b.every_node_root.is_none());
    // The same run as two nodes, node02 powered on 2 s later and 5 s slower to its root.
    let mut two = one.clone();
    let mut second: Vec<_> = one.steps.clone();
    for st in &mut second {
        st.node = "node02".into();
        st.name = format!("{} (node02)", st.name);
        st.met_at = st.met_at.map(|t| t + 7.0);
    }
    two.steps.extend(second);
    let qemu0 = one.qemu_started_at["node01"];
    two.qemu_started_at.insert("node02".into(), qemu0 + 2.0);
    let root01 = one
        .steps
        .iter()
        .find(|st| st.phase == Some(crate::scenario::Phase::RootMounted))
        .and_then(|st| st.met_at)
        .unwrap();
    let b = summarize("x", &[(two, 1.0, PathBuf::from("a"))]);
    let r = b.every_node_root.clone().unwrap();
    assert!((r.median - (root01 + 7.0 - qemu0)).abs() < 1e-9, "{r:?}");
    assert!(render(&b).contains("every node's root mounted"));
}

#[test]
fn side_by_side_shows_the_steps_both_have_with_the_ratio_of_medians() {
    let s = recorded_summary();
    let a = summarize("bios", &[(s.clone(), 1.0, PathBuf::from("a"))]);
    let mut b = summarize("uefi", &[(s, 1.0, PathBuf::from("b"))]);
    // The UEFI twin has no SeaBIOS step, and reaches the root 1.5 times as late.
    b.reached_at.retain(|(n, _)| n != "firmware");
    for (_, st) in &mut b.reached_at {
        st.median *= 1.5;
    }
    let out = render_beside(&a, &b);
    assert!(
        out.contains("bios (1 of 1 passed) | uefi (1 of 1 passed)"),
        "{out}"
    );
    let root = out
        .lines()
        .find(|l| l.contains("root mounted from the iSCSI disk"))
        .unwrap_or_else(|| panic!("no root line: {out}"));
    assert!(root.trim_end().ends_with("1.50"), "{root}");
    let firmware_row = |l: &&str| l.split("  ").find(|c| !c.is_empty()) == Some("firmware");
    assert!(!out.lines().any(|l| firmware_row(&l)), "{out}");
    assert!(out.lines().any(|l| l.contains("firmware again")), "{out}");

    let mut none = b.clone();
    none.reached_at.clear();
    assert!(render_beside(&a, &none).contains("no step name in common"));
}
