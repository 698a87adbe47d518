//! A node without QEMU for the step engine's tests: a console fed by hand, a channel that
//! catches what the steps type, and an event log the tests push records into.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};

use super::NodeIo;
use crate::guest::console::Console;
use crate::scenario::{default_fail_patterns, Action, Scenario, Step};
use crate::services::events::{EventKind, EventLog, RunClock};

pub fn scenario(steps: Vec<(&str, Action, u64)>) -> Scenario {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios/debian-ibft-e1000.yaml");
    let mut s = crate::scenario::load(&path).unwrap();
    s.steps = steps
        .into_iter()
        .map(|(name, action, ms)| Step {
            name: name.into(),
            node: "node01".into(),
            within: Duration::from_millis(ms),
            stretch: true,
            phase: None,
            action,
            after: None,
        })
        .collect();
    s.fail_on = default_fail_patterns();
    s
}

pub struct Rig {
    pub nodes: BTreeMap<String, NodeIo>,
    /// The guest's side of the serial console.
    pub writer: tokio::io::DuplexStream,
    /// What the steps typed.
    pub typed: mpsc::Receiver<Vec<u8>>,
    pub events: EventLog,
    /// Removed when the rig is dropped, also when a test panics.
    pub dir: tempfile::TempDir,
}

pub fn rig(name: &str) -> Rig {
    let dir = tempfile::Builder::new()
        .prefix(&format!("nbh-expect-{name}-"))
        .tempdir()
        .unwrap();
    let clock = RunClock::start();
    let (writer, reader) = tokio::io::duplex(4096);
    let (console, _t) = Console::spawn(
        reader,
        &dir.path().join("raw"),
        &dir.path().join("txt"),
        clock,
    )
    .unwrap();
    let (tx, typed) = mpsc::channel(4);
    let mut nodes = BTreeMap::new();
    nodes.insert("node01".to_string(), NodeIo { console, input: tx });
    Rig {
        nodes,
        writer,
        typed,
        events: EventLog::new(clock, None).unwrap(),
        dir,
    }
}

/// An accepted login as the proxy records it.
pub fn login_record(initiator: &str, ip: &str, mac: Option<&str>, session: &str) -> EventKind {
    EventKind::IscsiLogin {
        initiator: initiator.into(),
        target: "iqn.2026-11.lab:node01-root".into(),
        source_ip: ip.parse().unwrap(),
        source_mac: mac.map(str::to_string),
        session_type: session.into(),
        isid: "400001370000".into(),
        tsih: 1,
        portal: None,
    }
}

pub fn no_cancel() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    std::mem::forget(tx);
    rx
}

pub fn shell_guest(r: &mut Rig, reply: &'static str) -> tokio::task::JoinHandle<String> {
    let mut w = std::mem::replace(&mut r.writer, tokio::io::duplex(1).0);
    let (_, dummy) = mpsc::channel(1);
    let mut typed = std::mem::replace(&mut r.typed, dummy);
    tokio::spawn(async move {
        let line = typed.recv().await.unwrap();
        let text = String::from_utf8(line).unwrap();
        let echo = format!("root@netboot-guest:~# {}\r\n", text.trim_end());
        w.write_all(echo.as_bytes()).await.unwrap();
        w.write_all(reply.as_bytes()).await.unwrap();
        // The guest stays up: keep the console open until the test is done.
        tokio::time::sleep(Duration::from_secs(5)).await;
        text
    })
}
