//! Unit tests of `report`.

use super::*;

#[test]
fn an_orphaned_run_gets_an_interrupted_summary_and_a_summarized_one_keeps_its_own() {
    let runs = tempfile::tempdir().unwrap();
    let dead = runs.path().join("scen/20261125T000001Z-2");
    std::fs::create_dir_all(&dead).unwrap();
    std::fs::write(dead.join("console-node01.log"), b"SeaBIOS").unwrap();
    record_orphaned_run(&dead);
    let s = Summary::read(&dead).unwrap();
    assert_eq!(s.verdict, "interrupted");
    assert_eq!(s.scenario, "scen");
    assert_eq!(s.artifacts[0].path, "console-node01.log");
    // A second sweep over a run that has its summary leaves it alone.
    let mut own = s.clone();
    own.message = "its own".into();
    own.write(&dead).unwrap();
    record_orphaned_run(&dead);
    assert_eq!(Summary::read(&dead).unwrap().message, "its own");
}

fn ev(at: f64, kind: EventKind) -> Event {
    Event { at, kind }
}

fn service(name: &str, state: &str) -> EventKind {
    EventKind::Service {
        service: name.into(),
        state: state.into(),
    }
}

fn node01(mac: &str) -> Option<String> {
    (mac == "52:54:00:aa:00:24").then(|| "node01".to_string())
}

#[test]
fn outages_run_from_down_to_started_and_single_faults_name_their_node() {
    let peer: std::net::IpAddr = "10.77.0.198".parse().unwrap();
    let events = vec![
        ev(0.08, service("iscsi", "started")),
        ev(0.09, service("http", "down until 40s (start_after)")),
        ev(0.09, service("dhcp", "down until 25s (start_after)")),
        ev(25.02, service("dhcp", "started")),
        ev(
            31.18,
            EventKind::Dhcp {
                message: "DHCPACK".into(),
                mac: "52:54:00:aa:00:24".into(),
                ip: Some("10.77.0.198".parse().unwrap()),
                hostname: Some("node01".into()),
                boot_file: None,
                netmask: None,
                router: None,
            },
        ),
        ev(
            31.25,
            EventKind::Refused {
                service: "http".into(),
                peer,
                reason: "down until 40s (fault plan start_after)".into(),
            },
        ),
        ev(40.0, service("http", "started")),
        ev(
            40.6,
            EventKind::HttpRequest {
                method: "GET".into(),
                path: "/menu.ipxe".into(),
                status: 503,
                peer,
                fault: Some("injected fault".into()),
            },
        ),
        // A real 404 is the scenario's own business, not an injected fault.
        ev(
            40.7,
            EventKind::HttpRequest {
                method: "GET".into(),
                path: "/nope".into(),
                status: 404,
                peer,
                fault: None,
            },
        ),
        ev(
            41.0,
            EventKind::IscsiLoginFailed {
                initiator: "iqn.2026-11.lab:node01".into(),
                target: "iqn.2026-11.lab:node01-root".into(),
                source_ip: peer,
                result: "refused: fault plan refuses the first 2 logins".into(),
                session_type: "Normal".into(),
                status: None,
                answered_by: None,
            },
        ),
        ev(
            41.5,
            EventKind::IscsiLoginFailed {
                initiator: "iqn.2026-11.lab:node01".into(),
                target: "iqn.2026-11.lab:wrong".into(),
                source_ip: "10.77.0.9".parse().unwrap(),
                result: "rejected by target (class 2 detail 3)".into(),
                session_type: "Normal".into(),
                status: None,
                answered_by: None,
            },
        ),
        ev(
            42.0,
            EventKind::IscsiLoginFailed {
                initiator: String::new(),
                target: String::new(),
                source_ip: "10.77.0.9".parse().unwrap(),
                result: "dropped: fault plan drops the first 1 logins".into(),
                session_type: "Normal".into(),
                status: None,
                answered_by: None,
            },
        ),
        ev(80.0, service("http", "stopped")),
    ];
    let faults = injected_faults(&events, &node01);
    let kinds: Vec<(FaultKind, &str)> = faults
        .iter()
        .map(|f| (f.kind, f.service.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (FaultKind::Outage, "http"),
            (FaultKind::Outage, "dhcp"),
            (FaultKind::Reset, "http"),
            (FaultKind::HttpError, "http"),
            (FaultKind::LoginRefused, "iscsi"),
            (FaultKind::LoginDropped, "iscsi"),
        ]
    );
    assert_eq!((faults[0].at, faults[0].until), (0.09, Some(40.0)));
    assert_eq!(faults[1].until, Some(25.02));
    assert_eq!(
        faults[1].what,
        "dhcp down until 25s (start_after), started at 25.0 s"
    );
    assert_eq!(faults[0].node, None, "an outage hits every node");
    assert_eq!(faults[2].node.as_deref(), Some("node01"));
    assert!(faults[3].what.contains("GET /menu.ipxe"), "{:?}", faults[3]);
    assert!(faults[3].what.contains("503 (injected fault)"));
    assert_eq!(faults[5].node, None, "an address no lease names");
    assert!(faults[5].what.contains("unnamed initiator"));
    assert!(faults.iter().all(|f| f.what.lines().count() == 1));
}

#[test]
fn an_outage_that_never_ends_stays_open() {
    let events = vec![
        ev(0.1, service("iscsi", "down until 55s (start_after)")),
        ev(30.0, service("iscsi", "stopped")),
    ];
    let faults = injected_faults(&events, &|_| None);
    assert_eq!(faults.len(), 1);
    assert_eq!(faults[0].until, None);
    assert!(
        faults[0].what.ends_with("then stopped at 30.0 s"),
        "{}",
        faults[0].what
    );
    let late = injected_faults(&events[..1], &|_| None);
    assert!(late[0].what.ends_with("still down when the run ended"));
}

#[test]
fn machine_actions_and_qemu_events_are_listed_with_their_node() {
    let machine = |node: &str, action: &str| EventKind::Machine {
        node: node.into(),
        action: action.into(),
    };
    let qmp = |event: &str, data: serde_json::Value| EventKind::Qmp {
        node: "node01".into(),
        event: event.into(),
        data,
    };
    let events = vec![
        ev(10.0, machine("node01", "link down on 52:54:00:aa:00:61")),
        ev(12.0, machine("node02", "link down on 52:54:00:aa:00:62")),
        ev(20.5, machine("node01", "link up on 52:54:00:aa:00:61")),
        ev(30.0, machine("node01", "hard reset")),
        ev(
            30.1,
            qmp(
                "RESET",
                serde_json::json!({"guest": false, "reason": "host-qmp-system-reset"}),
            ),
        ),
        // The harness stopping QEMU after the steps.
        ev(
            40.0,
            qmp(
                "SHUTDOWN",
                serde_json::json!({"guest": false, "reason": "host-signal"}),
            ),
        ),
        ev(50.0, machine("node01", "power cut")),
        ev(60.0, machine("node01", "power on")),
    ];
    let faults = injected_faults(&events, &|_| None);
    assert_eq!(faults.len(), 5, "{faults:#?}");
    assert_eq!(
        (faults[4].kind, faults[4].until),
        (FaultKind::Outage, Some(60.0))
    );
    assert_eq!(faults[4].what, "node01: power cut, back on at 60.0 s");
    // node01's cable: out from 10 s to 20.5 s; node02's never put back.
    assert_eq!(
        (faults[0].kind, faults[0].until),
        (FaultKind::Outage, Some(20.5))
    );
    assert_eq!(faults[0].node.as_deref(), Some("node01"));
    assert!(
        faults[0].what.ends_with("back up at 20.5 s"),
        "{}",
        faults[0].what
    );
    assert_ne!(
        faults[0].service, faults[1].service,
        "one lane per node's NIC"
    );
    assert_eq!(faults[1].until, None);
    assert!(faults[1].what.ends_with("still down when the run ended"));
    assert_eq!((faults[2].kind, faults[2].at), (FaultKind::Machine, 30.0));
    assert_eq!(faults[2].what, "node01: hard reset");
    assert_eq!(faults[3].kind, FaultKind::QmpEvent);
    assert!(faults[3]
        .what
        .starts_with("QEMU reported RESET for node01: "));
}

#[test]
fn summaries_without_faults_still_read_and_unknown_kinds_survive() {
    let old = include_str!("../../tests-data/summary-passed.json");
    let s: Summary = serde_json::from_str(old).unwrap();
    assert!(s.faults.is_empty());
    let newer = r#"{"at": 1.0, "service": "dhcp", "kind": "lease_stolen", "what": "x"}"#;
    let f: InjectedFault = serde_json::from_str(newer).unwrap();
    assert_eq!((f.kind, f.until, f.node), (FaultKind::Other, None, None));
}

#[test]
fn a_harness_panic_names_its_task_and_step() {
    let outcome = Outcome {
        verdict: Verdict::HarnessPanic {
            step: "DHCP lease".into(),
            task: "dhcp-log".into(),
            message: "boom".into(),
        },
        steps: vec![crate::expect::StepResult {
            name: "DHCP lease".into(),
            node: "node01".into(),
            status: StepStatus::Failed,
            started_at: 1.0,
            met_at: None,
            waited: 0.5,
            within: 60.0,
            slow: false,
            phase: None,
            detail: "harness task `dhcp-log` panicked: boom".into(),
        }],
        console_tails: BTreeMap::new(),
    };
    let judgement = crate::expect::judge(&outcome, None);
    let base = Summary::error("demo", Path::new("demo.yaml"), String::new());
    let s = Summary::from_outcome(base, &outcome, &judgement);
    assert_eq!(s.verdict, HARNESS_PANIC);
    assert!(!s.ok);
    let failed = s.failed_step.as_ref().unwrap();
    assert_eq!(failed.name, "DHCP lease");
    assert_eq!(failed.reason, "harness task `dhcp-log` panicked: boom");
    let text = render_text(&s, Path::new("/tmp/run"));
    assert!(text.contains("PANIC "), "{text}");
    assert_eq!(
        crate::cli::run::lab_exit_code(&s),
        crate::cli::run::EXIT_HARNESS_PANIC
    );
}

#[test]
fn error_summary_round_trips_and_renders() {
    let tmp = tempfile::Builder::new()
        .prefix("nbh-report-")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    let mut s = Summary::error(
        "demo",
        Path::new("scenarios/demo.yaml"),
        "tgtd did not start".into(),
    );
    s.artifacts.push(Artifact {
        path: "tgtd.log".into(),
        what: "iSCSI target log".into(),
    });
    s.write(dir).unwrap();
    let back = Summary::read(dir).unwrap();
    assert_eq!(back.verdict, "error");
    assert!(!back.ok);
    let text = render_text(&back, dir);
    assert!(text.starts_with("NOT OK: scenario demo ERROR"), "{text}");
    assert!(text.contains("tgtd did not start"), "{text}");
    assert!(text.contains("tgtd.log"), "{text}");
    tmp.close().unwrap();
}
