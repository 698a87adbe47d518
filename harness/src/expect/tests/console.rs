//! Console steps: order, wake-ups, failure texts.

use crate::expect::test_rig::*;
use crate::expect::*;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn ordered_console_steps_consume_lines() {
    let mut r = rig("order");
    let s = scenario(vec![
        ("a", Action::Console("SeaBIOS".into()), 2000),
        ("b", Action::Console("reboot".into()), 2000),
        ("c", Action::Console("SeaBIOS".into()), 300),
    ]);
    r.writer
        .write_all(b"SeaBIOS 1\r\nreboot: Restarting system\r\n")
        .await
        .unwrap();
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    // The first SeaBIOS line was consumed by step a: step c needs a new one.
    assert_eq!(
        out.verdict,
        Verdict::Failed {
            step: "c".into(),
            cause: Cause::Timeout,
            evidence: vec![],
            reason: "waited 0s for a console line containing \"SeaBIOS\"".into(),
            waited: out.steps[2].waited,
            within: 0.3
        }
    );
    assert_eq!(out.steps[0].status, StepStatus::Met);
    assert_eq!(out.steps[1].detail, "reboot: Restarting system");
    assert!(out.steps[2].waited >= 0.29, "{}", out.steps[2].waited);
    assert_eq!(out.console_tails["node01"].len(), 2);
}

#[tokio::test]
async fn lines_arriving_later_wake_the_step() {
    let mut r = rig("later");
    let s = scenario(vec![(
        "re",
        Action::ConsoleRegex(regex::Regex::new(r"Connection\d+:0 .*operational").unwrap()),
        3000,
    )]);
    let mut w = std::mem::replace(&mut r.writer, tokio::io::duplex(1).0);
    let feeder = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        w.write_all(b"noise\r\niscsistart: Connection1:0 to [target: x] is operational now\r\n")
            .await
            .unwrap();
        w
    });
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    assert!(out.verdict.passed(), "{:?}", out.verdict);
    drop(feeder.await.unwrap());
}

#[tokio::test]
async fn fail_pattern_ends_the_step_early() {
    let mut r = rig("fail");
    let s = scenario(vec![(
        "root",
        Action::Console("netboot-harness: root=".into()),
        5000,
    )]);
    r.writer
        .write_all(b"Begin: Running /scripts/local-block ... done.\r\nALERT!  UUID=1234 does not exist.  Dropping to a shell!\r\n")
        .await
        .unwrap();
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    match &out.verdict {
        Verdict::Failed {
            step,
            cause,
            evidence,
            reason,
            waited,
            ..
        } => {
            assert_eq!(step, "root");
            assert_eq!(*cause, Cause::ConsoleFailure);
            assert!(reason.contains("ALERT!"), "{reason}");
            match &evidence[..] {
                [Evidence::Console { node, line, .. }] => {
                    assert_eq!(node, "node01");
                    assert!(
                        line.starts_with("ALERT!  UUID=1234 does not exist"),
                        "{line}"
                    );
                }
                e => panic!("{e:?}"),
            }
            assert!(*waited < 2.0, "waited {waited}");
        }
        v => panic!("{v:?}"),
    }
}

#[tokio::test]
async fn failure_text_after_the_awaited_line_does_not_count_for_that_step() {
    let mut r = rig("after");
    let s = scenario(vec![
        (
            "sanboot",
            Action::Console("Booting from SAN device 0x80".into()),
            2000,
        ),
        ("kernel", Action::Console("Linux version".into()), 2000),
    ]);
    r.writer
        .write_all(b"Booting from SAN device 0x80\r\nBoot from SAN device 0x80 failed: x\r\n")
        .await
        .unwrap();
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    assert_eq!(out.steps[0].status, StepStatus::Met);
    match &out.verdict {
        Verdict::Failed { step, reason, .. } => {
            assert_eq!(step, "kernel");
            assert!(
                reason.contains("Boot from SAN device 0x80 failed"),
                "{reason}"
            );
        }
        v => panic!("{v:?}"),
    }
}
