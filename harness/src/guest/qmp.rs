//! The harness's hand on each guest's machine: QEMU's QMP socket, through the `qapi` crate.
//!
//! Connected once QEMU has started. Every event QEMU sends (RESET, SHUTDOWN, POWERDOWN,
//! NIC_RX_FILTER_CHANGED, ...) goes into the run's event log as it arrives; the machine-side
//! actions (a NIC's link, a hard reset, the power button) are QMP commands, recorded in the same
//! log once QEMU has accepted them.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use qapi::futures::{QapiService, QmpStreamTokio};
use qapi::qmp;
use tokio::io::WriteHalf;
use tokio::net::UnixStream;

use crate::scenario::QmpAction;
use crate::services::events::{EventKind, EventLog};

/// How long QEMU may take to open its QMP socket and greet; it does both before the guest runs.
const CONNECT_WITHIN: Duration = Duration::from_secs(10);
/// How long one command may take: QEMU answers these at once, even with the guest busy.
const COMMAND_WITHIN: Duration = Duration::from_secs(10);

type Service = QapiService<QmpStreamTokio<WriteHalf<UnixStream>>>;

/// Where `node`'s QEMU listens for QMP: in the lab's own `/run` (a tmpfs of its private mount
/// namespace, gone with it), not in the run directory, whose path is the checkout's and can pass
/// the 107 bytes a socket path may have (a CI clone under `/check/work/...` did).
pub fn socket_for(node: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/run/qmp-{node}.sock"))
}

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP socket {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("QMP socket {path}: QEMU did not open it within {CONNECT_WITHIN:?}")]
    NoSocket { path: String },
}

/// One node's QMP connection.
pub struct Qmp {
    node: String,
    service: Service,
    events: Arc<EventLog>,
    /// Why the event stream ended, once it has: commands cannot be answered after that.
    lost: Arc<Mutex<Option<String>>>,
}

impl Qmp {
    /// Connects to `socket` (retrying while QEMU creates it), negotiates, and starts recording
    /// QEMU's events for `node`.
    pub async fn connect(
        node: &str,
        socket: &Path,
        events: Arc<EventLog>,
    ) -> Result<Qmp, QmpError> {
        let path = socket.display().to_string();
        let deadline = tokio::time::Instant::now() + CONNECT_WITHIN;
        let negotiation = loop {
            match QmpStreamTokio::open_uds(socket).await {
                Ok(n) => break n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(QmpError::NoSocket { path });
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(source) => return Err(QmpError::Connect { path, source }),
            }
        };
        let stream = tokio::time::timeout(COMMAND_WITHIN, negotiation.negotiate())
            .await
            .map_err(|_| QmpError::Connect {
                path: path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no answer to qmp_capabilities",
                ),
            })?
            .map_err(|source| QmpError::Connect {
                path: path.clone(),
                source,
            })?;
        let (service, mut stream) = stream.into_parts();
        let lost = Arc::new(Mutex::new(None));
        let (log, who, lost_w) = (events.clone(), node.to_string(), lost.clone());
        crate::support::tasks::spawn(format!("qmp-events:{node}"), async move {
            // The stream also carries the answers to commands: it is read for as long as QEMU
            // runs, and its end (QEMU gone, or an event this crate cannot read) is recorded.
            let why = loop {
                match stream.next().await {
                    Some(Ok(ev)) => {
                        let (event, data) = name_and_data(&ev);
                        log.push(EventKind::Qmp {
                            node: who.clone(),
                            event,
                            data,
                        });
                    }
                    Some(Err(e)) => break format!("QMP stream error: {e}"),
                    None => break "QMP connection closed (QEMU exited)".to_string(),
                }
            };
            tracing::debug!(node = %who, %why, "QMP events end");
            *lost_w.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        });
        Ok(Qmp {
            node: node.to_string(),
            service,
            events,
            lost,
        })
    }

    /// Carries out `action` on the machine, through QEMU's `qemu_nic` name of the NIC for a
    /// link; `Ok` describes what was done. Recorded in the event log once QEMU accepted it.
    pub async fn act(&self, action: &QmpAction, qemu_nic: Option<&str>) -> Result<String, String> {
        let at = self.events.clock().now();
        let answer = match action {
            QmpAction::Link { up, .. } => {
                let name = qemu_nic.ok_or("the node has no such NIC")?.to_string();
                self.run(qmp::set_link { name, up: *up }).await
            }
            QmpAction::Reset => self.run(qmp::system_reset {}).await,
            QmpAction::Powerdown => self.run(qmp::system_powerdown {}).await,
        };
        answer?;
        let what = action.describe();
        self.events.push_at(
            at,
            EventKind::Machine {
                node: self.node.clone(),
                action: what.clone(),
            },
        );
        Ok(format!("QEMU did it: {what} on {}", self.node))
    }

    async fn run<C>(&self, command: C) -> Result<(), String>
    where
        C: qapi::Command,
        QmpStreamTokio<WriteHalf<UnixStream>>:
            futures::Sink<qapi::Execute<C, u32>, Error = std::io::Error> + Unpin,
    {
        if let Some(why) = self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Err(why);
        }
        match tokio::time::timeout(COMMAND_WITHIN, self.service.execute(command)).await {
            Err(_) => Err(format!("QEMU did not answer within {COMMAND_WITHIN:?}")),
            Ok(Err(e)) => Err(format!("QEMU refused: {e}")),
            Ok(Ok(_)) => Ok(()),
        }
    }
}

/// An event's name and its data, as QEMU sent them (the crate's typed event, back to JSON).
fn name_and_data(ev: &qmp::Event) -> (String, serde_json::Value) {
    let v = serde_json::to_value(ev).unwrap_or_default();
    let name = v
        .get("event")
        .and_then(|n| n.as_str())
        .unwrap_or("?")
        .to_string();
    let data = v.get("data").cloned().unwrap_or(serde_json::Value::Null);
    (name, data)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_socket_of_the_longest_node_name_fits_a_unix_socket_path() {
        // Node names are at most 32 characters (scenario validation); sun_path holds 108 bytes
        // with its terminating NUL.
        let p = super::socket_for(&"n".repeat(32));
        assert!(p.as_os_str().len() < 108, "{}", p.display());
        assert!(p.starts_with("/run"), "{}", p.display());
    }
}
