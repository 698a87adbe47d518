//! The nodes' machines while the steps run: which QEMU runs each node now, its QMP connection,
//! and the power cycle that ends one QEMU and starts the next on the same console.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::expect::NodeIo;
use crate::guest::{Guest, GuestConfig};
use crate::services::events::EventLog;

/// The nodes' machines while the steps run: a power cycle ends one QEMU and starts the next on
/// the same configuration, console and typing channel.
pub(super) struct Power<'a> {
    pub(super) guests: tokio::sync::Mutex<Vec<Guest>>,
    pub(super) machines: std::sync::Mutex<BTreeMap<String, Arc<crate::guest::qmp::Qmp>>>,
    pub(super) configs: BTreeMap<String, GuestConfig>,
    /// The nodes' consoles and typing channels, as the steps see them.
    pub(super) nodes: &'a BTreeMap<String, crate::expect::NodeIo>,
    /// Where each node's typing goes: the current QEMU's stdin.
    pub(super) inputs: BTreeMap<String, Arc<std::sync::Mutex<tokio::sync::mpsc::Sender<Vec<u8>>>>>,
    pub(super) events: Arc<EventLog>,
    pub(super) run_dir: PathBuf,
}

impl Power<'_> {
    /// Cuts `node`'s power (QEMU killed, as a cut is no shutdown), waits `off_for`, and starts
    /// its QEMU again; recorded as `power cut` and `power on` machine events.
    pub(super) async fn cycle(&self, node: &str, off_for: Duration) -> Result<String, String> {
        let (Some(cfg), Some(NodeIo { console, .. }), Some(input)) = (
            self.configs.get(node),
            self.nodes.get(node),
            self.inputs.get(node),
        ) else {
            return Err(format!("no machine for {node}"));
        };
        let mut guests = self.guests.lock().await;
        let Some(i) = guests.iter().position(|g| g.name == node) else {
            return Err(format!("{node}'s QEMU is not running"));
        };
        let old = guests.remove(i);
        self.events
            .push(crate::services::events::EventKind::Machine {
                node: node.to_string(),
                action: crate::scenario::machine::POWER_CUT.into(),
            });
        old.stop().await;
        // The old console reader and exit watcher finish before the next QEMU's lines come.
        let settled = console.wait_until(|c| c.closed() && c.ended().is_some());
        let _ = tokio::time::timeout(Duration::from_secs(10), settled).await;
        tokio::time::sleep(off_for).await;
        let log = self.run_dir.join(format!("qemu-{node}.log"));
        let mut g = Guest::start(cfg, &log).map_err(|e| e.to_string())?;
        let out = g.stdout.take().ok_or("the new QEMU has no stdout")?;
        console.power_on_again(out);
        watch_exit(node, &g, console.clone());
        *input.lock().unwrap_or_else(|p| p.into_inner()) = g.input.clone();
        self.events
            .push(crate::services::events::EventKind::Machine {
                node: node.to_string(),
                action: crate::scenario::machine::POWER_ON.into(),
            });
        guests.push(g);
        drop(guests);
        let qmp = crate::guest::qmp::Qmp::connect(node, &cfg.qmp_socket, self.events.clone())
            .await
            .map_err(|e| format!("after the power came back: {e}"))?;
        self.machines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.to_string(), Arc::new(qmp));
        Ok(format!(
            "{node}'s QEMU killed, off for {}, started again",
            humantime::format_duration(off_for)
        ))
    }
}

/// Notes on the node's console how its QEMU ended, once it has.
pub(super) fn watch_exit(node: &str, g: &Guest, console: crate::guest::console::Console) {
    let exit = g.process.end_watch();
    let who = node.to_string();
    crate::support::tasks::spawn(format!("qemu-exit:{node}"), async move {
        if let Some(e) = exit.ended().await {
            if !e.by_us {
                // A poweroff (a `qemu_exit` step) or a kill from outside: the steps judge which.
                tracing::info!(node = %who, how = %e.how, "QEMU exited by itself");
            }
            console.note_end(&e.how);
        }
    });
}
