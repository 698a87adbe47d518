//! Shell steps, lab controls, QEMU exits, bounds, cancellation and judging.

use crate::expect::shell::shell_line;
use crate::expect::test_rig::*;
use crate::expect::*;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn send_types_the_line_with_cr() {
    let mut r = rig("send");
    let s = scenario(vec![(
        "reboot",
        Action::Send("systemctl reboot".into()),
        500,
    )]);
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    assert!(out.verdict.passed());
    assert_eq!(r.typed.recv().await.unwrap(), b"systemctl reboot\r");
}

/// Plays the guest's shell: echoes what is typed and answers with `reply`.

#[tokio::test]
async fn shell_waits_for_the_status_of_its_command() {
    let mut r = rig("shell-ok");
    let s = scenario(vec![("probe", Action::Shell("sync".into()), 2000)]);
    let guest = shell_guest(&mut r, "netboot-harness: step 1 exit 0\r\n");
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    assert!(out.verdict.passed(), "{:?}", out.verdict);
    assert_eq!(out.steps[0].detail, "\"sync\" finished with status 0");
    guest.abort();
}

#[tokio::test]
async fn the_typed_line_alone_does_not_meet_a_shell_step() {
    let (typed, re) = shell_line(0, "sync");
    assert_eq!(typed, "sync; echo \"netboot-harness: step 1 exit $?\"");
    assert!(!re.is_match(&format!("root@netboot-guest:~# {typed}")));
    assert!(re.is_match("netboot-harness: step 1 exit 0"));
    assert!(!re.is_match("netboot-harness: step 11 exit 0"));
}

#[tokio::test]
async fn a_failed_shell_command_names_its_status_and_the_root_disk() {
    let mut r = rig("shell-fail");
    let s = scenario(vec![(
        "probe",
        Action::Shell("dd if=/etc/os-release".into()),
        2000,
    )]);
    let guest = shell_guest(
        &mut r,
        "[   80.1] Buffer I/O error on dev sda1, logical block 9, async page read\r\n\
         dd: error reading '/etc/os-release': Input/output error\r\n\
         netboot-harness: step 1 exit 1\r\n",
    );
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    match &out.verdict {
        Verdict::Failed { reason, waited, .. } => {
            assert!(reason.contains("finished with status 1"), "{reason}");
            assert!(reason.contains("Input/output error"), "{reason}");
            assert!(reason.contains("Buffer I/O error on dev sda1"), "{reason}");
            assert!(*waited < 1.5, "{waited}");
        }
        v => panic!("{v:?}"),
    }
    guest.abort();
}

#[tokio::test]
async fn a_silent_shell_is_a_verdict_with_its_cause() {
    let mut r = rig("shell-silent");
    let s = scenario(vec![("probe", Action::Shell("sync".into()), 400)]);
    let guest = shell_guest(
        &mut r,
        "[   90.2]  connection1:0: detected conn error (1022)\r\n",
    );
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    match &out.verdict {
        Verdict::Failed { reason, .. } => {
            assert!(
                reason.starts_with("the guest's shell stopped answering: \"sync\""),
                "{reason}"
            );
            assert!(reason.contains("detected conn error (1022)"), "{reason}");
        }
        v => panic!("{v:?}"),
    }
    guest.abort();
}

struct FakeLab {
    disk: std::path::PathBuf,
    restarted: std::sync::Mutex<Vec<Service>>,
}

impl LabControl for FakeLab {
    fn restart(
        &self,
        service: Service,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>> {
        Box::pin(async move {
            self.restarted.lock().unwrap().push(service);
            Ok("restarted".into())
        })
    }
    fn lun_file(&self, _node: &str) -> Option<PathBuf> {
        Some(self.disk.clone())
    }
}

#[tokio::test]
async fn restart_and_lun_bytes_act_on_the_lab() {
    let r = rig("lab");
    let disk = r.dir.path().join("disk.img");
    std::fs::write(&disk, vec![0u8; 4096]).unwrap();
    let lab = FakeLab {
        disk: disk.clone(),
        restarted: Default::default(),
    };
    let s = scenario(vec![
        ("restart", Action::Restart(Service::Iscsi), 1000),
        (
            "marker",
            Action::LunBytes {
                offset: 1000,
                text: "written".into(),
            },
            3000,
        ),
    ]);
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
        f.write_at(b"written", 1000).unwrap();
    });
    let out =
        run_steps_controlled(&s, &r.nodes, &r.events, 1.0, no_cancel(), &NoObserver, &lab).await;
    writer.await.unwrap();
    assert!(out.verdict.passed(), "{:?}", out.verdict);
    assert_eq!(*lab.restarted.lock().unwrap(), vec![Service::Iscsi]);
    assert!(out.steps[1].waited >= 0.2, "{}", out.steps[1].waited);

    // Without a lab to act on, both say so instead of waiting.
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    assert!(
        matches!(&out.verdict, Verdict::Failed { step, reason, .. }
            if step == "restart" && reason.contains("cannot restart iscsi")),
        "{:?}",
        out.verdict
    );
}

#[tokio::test]
async fn qemu_exit_is_met_when_the_console_closes() {
    let mut r = rig("exit");
    let s = scenario(vec![
        ("down", Action::Console("reboot: Power down".into()), 2000),
        ("gone", Action::QemuExit, 2000),
    ]);
    let mut w = std::mem::replace(&mut r.writer, tokio::io::duplex(1).0);
    tokio::spawn(async move {
        w.write_all(b"reboot: Power down\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(w);
    });
    r.nodes["node01"].console.note_end("exited with status 0");
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    assert!(out.verdict.passed(), "{:?}", out.verdict);
    assert!(out.steps[1].detail.contains("the guest powered off"));
}

#[tokio::test]
async fn qemu_exit_is_not_met_by_a_killed_qemu() {
    let mut r = rig("exit-killed");
    let s = scenario(vec![("gone", Action::QemuExit, 2000)]);
    drop(std::mem::replace(&mut r.writer, tokio::io::duplex(1).0));
    r.nodes["node01"]
        .console
        .note_end("killed by signal 9 (SIGKILL)");
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    match &out.verdict {
        Verdict::Failed {
            cause, evidence, ..
        } => {
            assert_eq!(*cause, Cause::QemuExited);
            assert_eq!(
                evidence,
                &[Evidence::Exit {
                    process: "node01's QEMU".into(),
                    status: "killed by signal 9 (SIGKILL)".into()
                }]
            );
        }
        v => panic!("{v:?}"),
    }
}

#[tokio::test]
async fn a_bound_is_never_stretched_and_a_late_step_is_marked_slow() {
    let mut r = rig("bound");
    let mut s = scenario(vec![
        ("waited", Action::Console("late line".into()), 300),
        ("bounded", Action::Console("never".into()), 300),
    ]);
    s.steps[1].stretch = false;
    let mut w = std::mem::replace(&mut r.writer, tokio::io::duplex(1).0);
    let feeder = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(600)).await;
        w.write_all(b"late line\r\n").await.unwrap();
        w
    });
    // Stretched x4: the first step's 0.3 s become 1.2 s, the bound stays 0.3 s.
    let out = run_steps(&s, &r.nodes, &r.events, 4.0, no_cancel()).await;
    assert_eq!(out.steps[0].status, StepStatus::Met, "{:?}", out.verdict);
    assert!(
        out.steps[0].slow,
        "met after its written 0.3 s: {:?}",
        out.steps[0]
    );
    assert_eq!(out.steps[1].status, StepStatus::Failed);
    assert!(
        (out.steps[1].within - 0.3).abs() < 1e-9,
        "{:?}",
        out.steps[1]
    );
    assert!(out.steps[1].waited < 1.0, "{:?}", out.steps[1]);
    drop(feeder.await.unwrap());
}

#[tokio::test]
async fn console_eof_fails_the_waiting_step() {
    let r = rig("eof");
    let Rig {
        nodes,
        writer,
        events,
        ..
    } = &r;
    let s = scenario(vec![("x", Action::Console("never".into()), 5000)]);
    let _ = writer;
    let nodes_ref = nodes;
    // Closing the write side ends the console, as QEMU exiting does.
    let (w2, r2) = tokio::io::duplex(16);
    drop(w2);
    let (console, t) = Console::spawn(
        r2,
        &r.dir.path().join("raw2"),
        &r.dir.path().join("txt2"),
        events.clock(),
    )
    .unwrap();
    t.await.unwrap();
    let mut nodes2 = BTreeMap::new();
    nodes2.insert(
        "node01".to_string(),
        NodeIo {
            console,
            input: nodes_ref["node01"].input.clone(),
        },
    );
    let out = run_steps(&s, &nodes2, events, 1.0, no_cancel()).await;
    assert!(
        matches!(&out.verdict, Verdict::Failed { reason, .. } if reason.contains("QEMU exited")),
        "{:?}",
        out.verdict
    );
}

#[tokio::test]
async fn a_service_step_fails_at_once_with_qemus_exit_status() {
    let mut r = rig("qemu-killed");
    let s = scenario(vec![(
        "DHCP lease",
        Action::DhcpAck {
            mac: None,
            hostname: None,
            boot_file: None,
        },
        60_000,
    )]);
    // What the run's QEMU watcher does when QEMU is killed: the console ends, then the
    // status is noted.
    drop(std::mem::replace(&mut r.writer, tokio::io::duplex(1).0));
    let console = r.nodes["node01"].console.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        console.note_end("killed by signal 9 (SIGKILL)");
    });
    let t = std::time::Instant::now();
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(
        out.steps[0].detail,
        "the guest stopped (QEMU exited, killed by signal 9 (SIGKILL)) while waiting for a DHCP ACK"
    );
}

/// A lab that breaks after `after`.
struct Breaks {
    after: Duration,
    fault: LabFault,
}

impl LabControl for Breaks {
    fn restart(
        &self,
        _: Service,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>> {
        Box::pin(async { Err("no".into()) })
    }
    fn lun_file(&self, _node: &str) -> Option<PathBuf> {
        None
    }
    fn broken(&self) -> Pin<Box<dyn Future<Output = LabFault> + Send + '_>> {
        Box::pin(async move {
            tokio::time::sleep(self.after).await;
            self.fault.clone()
        })
    }
}

#[tokio::test]
async fn a_broken_lab_ends_the_step_it_is_in() {
    let mut r = rig("broken");
    r.writer.write_all(b"SeaBIOS\r\n").await.unwrap();
    let s = scenario(vec![
        ("firmware", Action::Console("SeaBIOS".into()), 5000),
        ("DHCP", Action::Console("never".into()), 60_000),
        ("later", Action::Console("never".into()), 60_000),
    ]);
    let s = &s;
    let run = |fault| {
        let control = Breaks {
            after: Duration::from_millis(200),
            fault,
        };
        let (nodes, events) = (&r.nodes, &r.events);
        async move {
            run_steps_controlled(s, nodes, events, 1.0, no_cancel(), &NoObserver, &control).await
        }
    };
    let died = run(LabFault::Died(
        "service died: iscsi: tgtd killed by signal 9".into(),
    ))
    .await;
    assert!(
        matches!(&died.verdict, Verdict::Failed { step, reason, .. }
            if step == "DHCP" && reason == "service died: iscsi: tgtd killed by signal 9"),
        "{:?}",
        died.verdict
    );
    assert_eq!(died.steps[2].status, StepStatus::Skipped);
    let panicked = run(LabFault::Panic(crate::support::tasks::HarnessPanic {
        task: "console:node01".into(),
        message: "boom".into(),
    }))
    .await;
    assert_eq!(
        panicked.verdict,
        Verdict::HarnessPanic {
            step: "DHCP".into(),
            task: "console:node01".into(),
            message: "boom".into()
        }
    );
    let j = judge(&panicked, None);
    assert!(!j.ok);
    assert!(
        j.message.contains("task `console:node01` panicked: boom"),
        "{}",
        j.message
    );
}

#[tokio::test]
async fn cancel_interrupts_and_skips_the_rest() {
    let r = rig("cancel");
    let s = scenario(vec![
        ("a", Action::Console("never".into()), 5000),
        ("b", Action::Console("x".into()), 5000),
    ]);
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = tx.send(true);
        tokio::time::sleep(Duration::from_secs(10)).await;
    });
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, rx).await;
    assert_eq!(out.verdict, Verdict::Interrupted { step: "a".into() });
    assert_eq!(out.steps[1].status, StepStatus::Skipped);
    assert!(!judge(&out, None).ok);
}

#[tokio::test]
async fn a_cancel_before_the_first_step_interrupts_even_for_a_node_never_started() {
    // A staggered fleet interrupted while powering on: node02, the first step's, never got a
    // console (without the check this was "no console", a failure).
    let r = rig("cancel-early");
    let mut s = scenario(vec![
        ("a", Action::Console("x".into()), 5000),
        ("b", Action::Console("x".into()), 5000),
    ]);
    s.steps[0].node = "node02".into();
    let (tx, rx) = watch::channel(true);
    let out = run_steps(&s, &r.nodes, &r.events, 1.0, rx).await;
    drop(tx);
    assert_eq!(out.verdict, Verdict::Interrupted { step: "a".into() });
    assert_eq!(out.steps[1].status, StepStatus::Skipped);
}

#[test]
fn judge_expected_failures() {
    use crate::scenario::ExpectedFailure;
    let sanboot_line = || Evidence::Console {
        node: "node01".into(),
        at: 5.0,
        line: "Could not open SAN device: Operation not permitted".into(),
    };
    let failed = |step: &str, cause: Cause, evidence: Vec<Evidence>| Outcome {
        verdict: Verdict::Failed {
            step: step.into(),
            cause,
            evidence,
            // The harness's words never decide: this one names the expected text on
            // purpose.
            reason: "Could not open SAN device".into(),
            waited: 1.0,
            within: 2.0,
        },
        steps: vec![],
        console_tails: BTreeMap::new(),
    };
    let want = ExpectedFailure {
        step: "sanboot".into(),
        cause: Cause::ConsoleFailure,
        evidence: Some("Could not open SAN device".into()),
    };
    let j = judge(
        &failed("sanboot", Cause::ConsoleFailure, vec![sanboot_line()]),
        Some(&want),
    );
    assert!(
        j.ok && j.message.contains("node01 console at 5.0s"),
        "{}",
        j.message
    );
    let j = judge(
        &failed("dhcp", Cause::ConsoleFailure, vec![sanboot_line()]),
        Some(&want),
    );
    assert!(
        !j.ok && j.message.contains("but failed at `dhcp`"),
        "{}",
        j.message
    );
    let j = judge(&failed("sanboot", Cause::Timeout, vec![]), Some(&want));
    assert!(
        !j.ok && j.message.contains("another cause: timeout"),
        "{}",
        j.message
    );
    // The right cause with another line as its evidence is another failure.
    let other = Evidence::Console {
        node: "node01".into(),
        at: 5.0,
        line: "Boot from SAN device 0x80 failed: x".into(),
    };
    let j = judge(
        &failed("sanboot", Cause::ConsoleFailure, vec![other]),
        Some(&want),
    );
    assert!(
        !j.ok && j.message.contains("no evidence contains"),
        "{}",
        j.message
    );
    let j = judge(
        &failed("sanboot", Cause::ConsoleFailure, vec![]),
        Some(&want),
    );
    assert!(
        !j.ok && j.message.contains("there is none"),
        "{}",
        j.message
    );
    let passed = Outcome {
        verdict: Verdict::Passed,
        steps: vec![],
        console_tails: BTreeMap::new(),
    };
    assert!(!judge(&passed, Some(&want)).ok);
    assert!(judge(&passed, None).ok);
}
