//! Service-record steps: matching, consumption, time order, session types.

use crate::expect::test_rig::*;
use crate::expect::*;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn failure_text_after_the_awaited_record_does_not_count_for_that_step() {
    let mut r = rig("after-record");
    let s = scenario(vec![
        (
            "boot script fetched",
            Action::HttpGet("/boot.ipxe".into()),
            2000,
        ),
        (
            "sanboot",
            Action::Console("Booting from SAN device 0x80".into()),
            2000,
        ),
    ]);
    r.events.push(EventKind::HttpRequest {
        method: "GET".into(),
        path: "/boot.ipxe".into(),
        status: 200,
        peer: "10.77.0.128".parse().unwrap(),
        fault: None,
    });
    // The failure is printed later, and is already there when the first step looks.
    tokio::time::sleep(Duration::from_millis(20)).await;
    r.writer
        .write_all(b"Could not open SAN device: No such device\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    assert_eq!(out.steps[0].status, StepStatus::Met, "{:?}", out.verdict);
    match &out.verdict {
        Verdict::Failed { step, reason, .. } => {
            assert_eq!(step, "sanboot");
            assert!(reason.contains("Could not open SAN device"), "{reason}");
        }
        v => panic!("{v:?}"),
    }
}

#[tokio::test]
async fn service_steps_consume_one_record_each() {
    let r = rig("svc");
    let login = || Action::IscsiLogin {
        initiator: Some("iqn.2026-11.lab:node01".parse().unwrap()),
        target: None,
        from: None,
        mac: None,
        session: SessionType::Normal,
        portal: None,
    };
    let s = scenario(vec![("l1", login(), 500), ("l2", login(), 300)]);
    r.events.push(login_record(
        "IQN.2026-11.lab:node01",
        "10.77.0.128",
        None,
        "Normal",
    ));
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    assert_eq!(out.steps[0].status, StepStatus::Met);
    assert_eq!(out.steps[1].status, StepStatus::Failed);
    assert!(
        matches!(&out.verdict, Verdict::Failed { reason, .. } if reason.contains("an iSCSI login (normal session) from iqn.2026-11.lab:node01")),
        "{:?}",
        out.verdict
    );
}

#[tokio::test]
async fn all_logins_waits_for_enough_and_fails_on_a_stranger() {
    let r = rig("all");
    let all = || Action::AllLogins {
        initiator: Some("iqn.2026-11.lab:node01".parse().unwrap()),
        target: None,
        from: Some("10.77.0.41".parse().unwrap()),
        mac: None,
        at_least: 2,
        portal: None,
    };
    let login = |ip: &str| {
        login_record(
            "iqn.2026-11.lab:node01",
            ip,
            Some("52:54:00:aa:00:41"),
            "Normal",
        )
    };
    r.events.push(login("10.77.0.41"));
    // One login is too few: the step waits, then times out.
    let s = scenario(vec![("all", all(), 300)]);
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    assert_eq!(out.steps[0].status, StepStatus::Failed);
    assert!(
        matches!(&out.verdict, Verdict::Failed { reason, .. } if reason.contains("waited")),
        "{:?}",
        out.verdict
    );
    r.events.push(login("10.77.0.41"));
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    assert_eq!(out.steps[0].status, StepStatus::Met, "{:?}", out.verdict);
    assert!(
        out.steps[0].detail.starts_with("2 logins"),
        "{}",
        out.steps[0].detail
    );
    // A login from another address fails the step at once, naming that login.
    r.events.push(login("10.77.0.130"));
    let s = scenario(vec![("all", all(), 5000)]);
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    assert!(out.steps[0].waited < 1.0, "{}", out.steps[0].waited);
    assert!(
        matches!(&out.verdict, Verdict::Failed { reason, .. } if reason.contains("10.77.0.130")),
        "{:?}",
        out.verdict
    );
}

#[tokio::test]
async fn no_login_is_met_by_others_logins_and_failed_by_any_attempt_of_its_own() {
    let r = rig("none");
    let none = || Action::NoLogin {
        initiator: Some("iqn.2026-11.lab:local01".parse().unwrap()),
        from: Some("10.77.0.61".parse().unwrap()),
        mac: Some("52:54:00:aa:00:61".parse().unwrap()),
    };
    let s = scenario(vec![("none", none(), 5000)]);
    // Another node's logins: met at once, saying how many it looked at.
    r.events.push(login_record(
        "iqn.2026-11.lab:san01",
        "10.77.0.62",
        Some("52:54:00:aa:00:62"),
        "Normal",
    ));
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    assert_eq!(out.steps[0].status, StepStatus::Met, "{:?}", out.verdict);
    assert!(out.steps[0].waited < 1.0, "{}", out.steps[0].waited);
    assert!(
        out.steps[0].detail.contains("1 login"),
        "{}",
        out.steps[0].detail
    );
    // Each of its names alone fails it: a discovery session from its MAC under another IQN...
    let theirs = [
        login_record(
            "iqn.2026-11.lab:other",
            "10.77.0.99",
            Some("52:54:00:AA:00:61"),
            "Discovery",
        ),
        // ...its address...
        login_record("iqn.2026-11.lab:other", "10.77.0.61", None, "Normal"),
        // ...its IQN from elsewhere...
        login_record("IQN.2026-11.lab:LOCAL01", "10.77.0.99", None, "Normal"),
        // ...and a login the target refused.
        EventKind::IscsiLoginFailed {
            initiator: "iqn.2026-11.lab:other".into(),
            target: "iqn.2026-11.lab:local01-root".into(),
            source_ip: "10.77.0.61".parse().unwrap(),
            result: "rejected by target (class 2 detail 1)".into(),
            session_type: "Normal".into(),
            status: None,
            answered_by: Some("target".into()),
        },
    ];
    for (i, record) in theirs.into_iter().enumerate() {
        let r = rig(&format!("none-{i}"));
        r.events.push(record);
        let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
        assert_eq!(out.steps[0].status, StepStatus::Failed, "record {i}");
        assert!(out.steps[0].waited < 1.0, "{}", out.steps[0].waited);
        assert!(
            matches!(&out.verdict, Verdict::Failed { reason, .. } if reason.contains("should not have been made")),
            "record {i}: {:?}",
            out.verdict
        );
    }
}

/// "Every login is node01's", at least one, on `portal` if given.
fn node01_logins(portal: Option<crate::scenario::Portal>) -> Action {
    Action::AllLogins {
        initiator: Some("iqn.2026-11.lab:node01".parse().unwrap()),
        target: None,
        from: None,
        mac: None,
        at_least: 1,
        portal,
    }
}

#[tokio::test]
async fn a_login_step_with_a_portal_takes_only_a_login_on_that_portal() {
    let r = rig("portal");
    let on = |portal| Action::IscsiLogin {
        initiator: Some("iqn.2026-11.lab:node01".parse().unwrap()),
        target: None,
        from: None,
        mac: None,
        session: SessionType::Normal,
        portal: Some(portal),
    };
    let mut first = login_record("iqn.2026-11.lab:node01", "10.77.0.71", None, "Normal");
    if let EventKind::IscsiLogin { portal, .. } = &mut first {
        *portal = Some(crate::scenario::Portal::First);
    }
    r.events.push(first);
    let s = scenario(vec![("second", on(crate::scenario::Portal::Second), 300)]);
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    assert_eq!(out.steps[0].status, StepStatus::Failed, "{:?}", out.verdict);
    assert!(
        matches!(&out.verdict, Verdict::Failed { reason, .. } if reason.contains("on the second portal")),
        "{:?}",
        out.verdict
    );
    let s = scenario(vec![("first", on(crate::scenario::Portal::First), 300)]);
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    assert_eq!(out.steps[0].status, StepStatus::Met, "{:?}", out.verdict);
    // "Every login on the second portal": the one on the first fails it at once.
    let all = node01_logins(Some(crate::scenario::Portal::Second));
    let s = scenario(vec![("all on the second", all, 5000)]);
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    assert_eq!(out.steps[0].status, StepStatus::Failed, "{:?}", out.verdict);
    assert!(out.steps[0].waited < 1.0, "{}", out.steps[0].waited);
}

#[tokio::test]
async fn chain_steps_tell_the_two_acks_apart_by_boot_file() {
    let r = rig("chain");
    let mac: crate::scenario::MacAddr = "52:54:00:aa:00:41".parse().unwrap();
    let ack = |boot_file: Option<&str>| Action::DhcpAck {
        mac: Some(mac),
        hostname: None,
        boot_file: boot_file.map(String::from),
    };
    let s = scenario(vec![
        ("rom", ack(Some("undionly.kpxe")), 500),
        (
            "tftp",
            Action::TftpSent {
                file: "undionly.kpxe".into(),
                mac: Some(mac),
            },
            500,
        ),
        ("chained", ack(Some("http://10.77.0.1/boot.ipxe")), 300),
    ]);
    let dhcp_ack = |file: &str| EventKind::Dhcp {
        message: "DHCPACK".into(),
        mac: "52:54:00:aa:00:41".into(),
        ip: Some("10.77.0.227".parse().unwrap()),
        hostname: None,
        boot_file: Some(file.into()),
        netmask: None,
        router: None,
    };
    r.events.push(dhcp_ack("undionly.kpxe"));
    r.events.push(EventKind::TftpSent {
        file: "undionly.kpxe".into(),
        peer: "10.77.0.227".parse().unwrap(),
        mac: Some("52:54:00:aa:00:41".into()),
    });
    // A chain loop: the second stage is handed undionly.kpxe again.
    r.events.push(dhcp_ack("undionly.kpxe"));
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    assert_eq!(out.steps[0].status, StepStatus::Met);
    assert_eq!(out.steps[1].status, StepStatus::Met);
    assert_eq!(
        out.steps[2].status,
        StepStatus::Failed,
        "{:?}",
        out.steps[2]
    );
    assert!(out.steps[2]
        .detail
        .contains("with boot file http://10.77.0.1/boot.ipxe"));
}

#[tokio::test]
async fn dhcp_and_http_steps_match_their_records() {
    let r = rig("dhcp");
    let s = scenario(vec![
        (
            "dhcp",
            Action::DhcpAck {
                mac: Some("52:54:00:aa:00:01".parse().unwrap()),
                hostname: Some("node01".into()),
                boot_file: None,
            },
            500,
        ),
        ("http", Action::HttpGet("/boot.ipxe".into()), 500),
    ]);
    r.events.push(EventKind::HttpRequest {
        method: "GET".into(),
        path: "/boot.ipxe".into(),
        status: 404,
        peer: "10.77.0.128".parse().unwrap(),
        fault: None,
    });
    r.events.push(EventKind::Dhcp {
        message: "DHCPOFFER".into(),
        mac: "52:54:00:aa:00:01".into(),
        ip: None,
        hostname: Some("node01".into()),
        boot_file: None,
        netmask: None,
        router: None,
    });
    r.events.push(EventKind::Dhcp {
        message: "DHCPACK".into(),
        mac: "52:54:00:aa:00:01".into(),
        ip: Some("10.77.0.128".parse().unwrap()),
        hostname: Some("node01".into()),
        boot_file: None,
        netmask: None,
        router: None,
    });
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    assert_eq!(out.steps[0].status, StepStatus::Met);
    // A 404 is not a fetched boot script.
    assert_eq!(out.steps[1].status, StepStatus::Failed);
}

#[tokio::test]
async fn a_record_before_the_step_it_follows_cannot_meet_a_step() {
    let mut r = rig("ordered-records");
    let login = || Action::IscsiLogin {
        initiator: Some("iqn.2026-11.lab:node01".parse().unwrap()),
        target: None,
        from: None,
        mac: None,
        session: SessionType::Normal,
        portal: None,
    };
    // iPXE's login, long before the initramfs's console line.
    r.events.push_at(
        0.0,
        login_record("iqn.2026-11.lab:node01", "10.77.0.128", None, "Normal"),
    );
    let s = scenario(vec![
        (
            "initramfs login",
            Action::Console("operational now".into()),
            3000,
        ),
        ("seen by the target", login(), 400),
    ]);
    let mut w = std::mem::replace(&mut r.writer, tokio::io::duplex(1).0);
    let feeder = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2300)).await;
        w.write_all(b"Connection1:0 to [target: x] is operational now\r\n")
            .await
            .unwrap();
        w
    });
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    assert_eq!(out.steps[0].status, StepStatus::Met);
    assert!(
        matches!(&out.verdict, Verdict::Failed { step, cause: Cause::Timeout, .. } if step == "seen by the target"),
        "the earlier record met the step: {:?}",
        out.verdict
    );
    drop(feeder.await.unwrap());
}

#[tokio::test]
async fn a_record_just_before_its_console_line_meets_the_step_and_an_old_one_does_not() {
    let mut r = rig("ordered-records-2");
    let login = Action::IscsiLogin {
        initiator: Some("iqn.2026-11.lab:node01".parse().unwrap()),
        target: None,
        from: None,
        mac: None,
        session: SessionType::Normal,
        portal: None,
    };
    r.events.push_at(
        0.0,
        login_record("iqn.2026-11.lab:node01", "10.77.0.128", None, "Normal"),
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The target answers, then the initiator says so on its console.
    let answered = r.events.clock().now();
    r.events.push(login_record(
        "iqn.2026-11.lab:node01",
        "10.77.0.128",
        None,
        "Normal",
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    r.writer
        .write_all(b"Connection1:0 to [target: x] is operational now\r\n")
        .await
        .unwrap();
    let s = scenario(vec![
        (
            "initramfs login",
            Action::Console("operational now".into()),
            3000,
        ),
        ("seen by the target", login, 400),
    ]);
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    assert!(out.verdict.passed(), "{:?}", out.verdict);
    let met = out.steps[1].met_at.unwrap();
    assert!(met >= answered, "met by the old record at {met}");
}

#[tokio::test]
async fn a_discovery_session_is_not_a_login() {
    let r = rig("discovery");
    let login = |session| Action::IscsiLogin {
        initiator: Some("iqn.2026-11.lab:node01".parse().unwrap()),
        target: None,
        from: None,
        mac: None,
        session,
        portal: None,
    };
    r.events.push(login_record(
        "iqn.2026-11.lab:node01",
        "10.77.0.128",
        None,
        "Discovery",
    ));
    let s = scenario(vec![("login", login(SessionType::Normal), 300)]);
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    assert!(
        matches!(
            &out.verdict,
            Verdict::Failed {
                cause: Cause::Timeout,
                ..
            }
        ),
        "a discovery session met a login step: {:?}",
        out.verdict
    );
    let s = scenario(vec![("discovery", login(SessionType::Discovery), 300)]);
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    assert!(out.verdict.passed(), "{:?}", out.verdict);
    // Nor does it count among "every login" of a boot.
    let all = node01_logins(None);
    let s = scenario(vec![("all", all, 300)]);
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    assert!(!out.verdict.passed(), "{:?}", out.verdict);
}

#[tokio::test]
async fn all_logins_in_a_fleet_are_each_nodes_own() {
    let r = rig("fleet-all");
    let node = |n: &str, ip: &str, target_of: &str| {
        let mut k = login_record(&format!("iqn.2026-11.lab:{n}"), ip, None, "Normal");
        if let EventKind::IscsiLogin { target, .. } = &mut k {
            *target = format!("iqn.2026-11.lab:{target_of}-root");
        }
        k
    };
    let claim = |n: &str, ip: &str| Action::AllLogins {
        initiator: Some(format!("iqn.2026-11.lab:{n}").parse().unwrap()),
        target: Some(format!("iqn.2026-11.lab:{n}-root").parse().unwrap()),
        from: Some(ip.parse().unwrap()),
        mac: None,
        at_least: 2,
        portal: None,
    };
    for _ in 0..2 {
        r.events.push(node("node01", "10.77.0.101", "node01"));
        r.events.push(node("node02", "10.77.0.102", "node02"));
    }
    // Each node's claim holds beside the other node's own logins.
    let s = scenario(vec![("01", claim("node01", "10.77.0.101"), 300)]);
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    assert!(out.verdict.passed(), "{:?}", out.verdict);
    // node02 asking for node01's target is node01's business: its claim fails, naming it.
    r.events.push(node("node02", "10.77.0.102", "node01"));
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    assert!(
        matches!(&out.verdict, Verdict::Failed { reason, .. } if reason.contains("iqn.2026-11.lab:node02")),
        "{:?}",
        out.verdict
    );
    // And node02's own claim fails too: its IQN went to a target not its own.
    let s = scenario(vec![("02", claim("node02", "10.77.0.102"), 300)]);
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    assert!(!out.verdict.passed(), "{:?}", out.verdict);
}

#[tokio::test]
async fn a_qmp_event_step_is_met_only_by_its_own_nodes_event() {
    let r = rig("qmp-event");
    let s = scenario(vec![(
        "the reset reached the machine",
        Action::QmpEvent(crate::scenario::QmpEventName::Reset),
        300,
    )]);
    let qmp = |node: &str, event: &str| EventKind::Qmp {
        node: node.into(),
        event: event.into(),
        data: serde_json::Value::Null,
    };
    // Another node's reset, and this node's other events, do not meet it.
    r.events.push(qmp("node02", "RESET"));
    r.events.push(qmp("node01", "SHUTDOWN"));
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    assert!(
        matches!(out.verdict, Verdict::Failed { .. }),
        "{:?}",
        out.verdict
    );
    r.events.push(qmp("node01", "RESET"));
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    assert_eq!(out.steps[0].status, StepStatus::Met, "{:?}", out.verdict);
    assert!(
        out.steps[0].detail.contains(r#""node":"node01""#),
        "{:?}",
        out.steps[0]
    );
}

#[tokio::test]
async fn a_machine_step_without_qmp_fails_saying_so() {
    let r = rig("machine-no-qmp");
    let s = scenario(vec![(
        "pull the cable",
        Action::Machine(crate::scenario::MachineAction::Qmp(
            crate::scenario::QmpAction::Reset,
        )),
        300,
    )]);
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    match &out.verdict {
        Verdict::Failed { step, reason, .. } => {
            assert_eq!(step, "pull the cable");
            assert!(reason.contains("no QMP connection"), "{reason}");
        }
        v => panic!("{v:?}"),
    }
}

fn logout_record(initiator: &str, target: &str) -> EventKind {
    EventKind::IscsiLogout {
        session: crate::services::events::IscsiSession {
            initiator: initiator.into(),
            target: target.into(),
            source_ip: "10.77.0.52".parse().unwrap(),
            session_type: "Normal".into(),
            isid: "00023d000001".into(),
            tsih: 512,
            portal: None,
        },
        reason: "close the session".into(),
    }
}

#[tokio::test]
async fn a_logout_step_takes_the_named_sessions_logout_and_no_other_record() {
    let r = rig("logout");
    let s = scenario(vec![(
        "logout",
        Action::IscsiLogout {
            initiator: Some("iqn.2026-11.lab:node01".parse().unwrap()),
            target: None,
        },
        300,
    )]);
    // A login, and another initiator's logout, are not it.
    r.events.push(login_record(
        "iqn.2026-11.lab:node01",
        "10.77.0.52",
        None,
        "Normal",
    ));
    r.events.push(logout_record(
        "iqn.2026-11.lab:node02",
        "iqn.2026-11.lab:node01-root",
    ));
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    assert_eq!(out.steps[0].status, StepStatus::Failed, "{:?}", out.verdict);
    assert!(out.steps[0].waited >= 0.3, "{}", out.steps[0].waited);
    r.events.push(logout_record(
        "IQN.2026-11.lab:NODE01",
        "iqn.2026-11.lab:node01-root",
    ));
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    assert_eq!(out.steps[0].status, StepStatus::Met, "{:?}", out.verdict);
    assert!(
        out.steps[0].detail.contains("iscsi_logout"),
        "{}",
        out.steps[0].detail
    );
}

#[tokio::test]
async fn no_logout_is_met_by_others_logouts_and_failed_by_its_own() {
    let none = Action::NoLogout {
        initiator: Some("iqn.2026-11.lab:node01".parse().unwrap()),
        target: None,
    };
    let s = scenario(vec![("none", none, 5000)]);
    let r = rig("no-logout");
    r.events.push(login_record(
        "iqn.2026-11.lab:node01",
        "10.77.0.52",
        None,
        "Normal",
    ));
    r.events.push(logout_record(
        "iqn.2026-11.lab:node02",
        "iqn.2026-11.lab:node02-root",
    ));
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    assert_eq!(out.steps[0].status, StepStatus::Met, "{:?}", out.verdict);
    assert!(out.steps[0].waited < 1.0, "{}", out.steps[0].waited);
    assert!(
        out.steps[0].detail.contains("1 logout"),
        "{}",
        out.steps[0].detail
    );
    let r = rig("no-logout-theirs");
    r.events.push(logout_record(
        "iqn.2026-11.lab:node01",
        "iqn.2026-11.lab:node01-root",
    ));
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    assert_eq!(out.steps[0].status, StepStatus::Failed);
    assert!(out.steps[0].waited < 1.0, "{}", out.steps[0].waited);
    assert!(
        matches!(&out.verdict, Verdict::Failed { reason, .. } if reason.contains("should not have been made") && reason.contains("iscsi_logout")),
        "{:?}",
        out.verdict
    );
}
