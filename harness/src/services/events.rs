//! The run's record of what the services saw: DHCP leases, HTTP requests, iSCSI logins.
//!
//! Services push events; expectations wait on them. Every event is also appended to
//! `events.jsonl` in the run directory as it happens, so a crashed run still leaves its records.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

/// Zero point of a run: every timestamp in the records is seconds since this instant.
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    start: Instant,
}

impl RunClock {
    pub fn start() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    /// Seconds since the run started, with millisecond resolution.
    pub fn now(&self) -> f64 {
        self.since(Instant::now())
    }

    pub fn since(&self, t: Instant) -> f64 {
        let d: Duration = t.saturating_duration_since(self.start);
        (d.as_millis() as f64) / 1000.0
    }

    /// Sleeps until `t` seconds on this clock; at once if that time has passed.
    pub fn sleep_until(&self, t: f64) -> tokio::time::Sleep {
        tokio::time::sleep(Duration::from_secs_f64((t - self.now()).max(0.0)))
    }
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// A DHCP message the server logged (DISCOVER, OFFER, REQUEST, ACK, NAK, ...).
    Dhcp {
        message: String,
        mac: String,
        ip: Option<Ipv4Addr>,
        hostname: Option<String>,
        /// The boot file (option 67) the server sent with an offer or ack, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        boot_file: Option<String>,
        /// The netmask (option 1) and router (option 3) the server sent, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        netmask: Option<Ipv4Addr>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        router: Option<Ipv4Addr>,
    },
    /// The TFTP server finished sending a file (`chain-undionly` nodes).
    TftpSent {
        /// The file's name under the TFTP root.
        file: String,
        peer: Ipv4Addr,
        /// The peer's MAC, from the DHCP server's acks, when it was known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mac: Option<String>,
    },
    /// A `chain-undionly` node's mark changed: `chained` once the TFTP server sent it
    /// undionly.kpxe (its next DHCP answer carries the boot URL), `cleared` once that answer
    /// went out (a reboot starts from the ROM again).
    ChainMark { mac: String, state: String },
    HttpRequest {
        method: String,
        path: String,
        status: u16,
        peer: IpAddr,
        /// What the scenario's fault plan did to this answer (`injected fault`, `injected
        /// delay of 2s`, ...), so the summary can tell an injected error from a real one.
        /// Left out of the JSON when the answer was the server's own, as in older records.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fault: Option<String>,
    },
    IscsiLogin {
        initiator: String,
        target: String,
        source_ip: IpAddr,
        /// The initiator's MAC, from the lab's neighbour table, when it was known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source_mac: Option<String>,
        /// `Normal` or `Discovery` (a SendTargets session, which reaches no LUN).
        session_type: String,
        /// The initiator's session ID (6 bytes, hex) and the target's session handle from the
        /// response that completed the login: a new session has a TSIH the target chose.
        isid: String,
        tsih: u16,
        /// Which of the lab's portals the login came in on, when it has two.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        portal: Option<crate::scenario::Portal>,
    },
    /// A login that did not complete: refused or dropped by the fault plan, rejected by the
    /// target, or malformed.
    IscsiLoginFailed {
        initiator: String,
        target: String,
        source_ip: IpAddr,
        result: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        session_type: String,
        /// The login response's status by its RFC 7143 name (`not-found`), when a response
        /// was sent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<String>,
        /// Who answered with that status: `target` (tgtd itself) or `login proxy` (the lab's
        /// ACL or fault plan).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        answered_by: Option<String>,
    },
    /// An initiator asked to log out of a session the login proxy carried (a Logout Request
    /// PDU, read from its header).
    IscsiLogout {
        #[serde(flatten)]
        session: IscsiSession,
        /// The request's reason code in words: `close the session`, `close the connection`,
        /// `remove the connection for recovery`.
        reason: String,
    },
    /// A logged-in connection through the login proxy ended: one side closed its end (the
    /// other side's end is then closed too, as TCP's half-close passes on).
    IscsiConnectionClosed {
        #[serde(flatten)]
        session: IscsiSession,
        /// `initiator` or `target`: whose end closed first.
        closed_by: String,
        /// The target's answer to a logout on this connection, if there was one: a close
        /// without it is a session that was dropped, not ended.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        logout_response: Option<String>,
    },
    /// A connection a service turned away because the fault plan has it down (not started
    /// yet): the client saw a reset, as from a server that is not up.
    Refused {
        service: String,
        peer: IpAddr,
        reason: String,
    },
    /// A service started, stopped or failed: kept so a timeline can show it.
    Service { service: String, state: String },
    /// An event QEMU reported over QMP for a node's machine, with its data as QEMU sent it.
    Qmp {
        node: String,
        event: String,
        #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
        data: serde_json::Value,
    },
    /// Something a step did to a node's machine through QMP, once QEMU accepted it (a link
    /// pulled or put back, a hard reset, the power button).
    Machine { node: String, action: String },
}

/// Which session a logout or a closed connection belongs to: its login's names.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct IscsiSession {
    pub initiator: String,
    pub target: String,
    pub source_ip: IpAddr,
    pub session_type: String,
    pub isid: String,
    pub tsih: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal: Option<crate::scenario::Portal>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Event {
    /// Seconds since the run started.
    pub at: f64,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Append-only, shared event list with change notification.
pub struct EventLog {
    clock: RunClock,
    events: Mutex<Vec<Event>>,
    /// `events.jsonl`, written by a thread of its own so that recording never blocks a task.
    sink: Option<crate::support::filesink::FileSink>,
    changed: watch::Sender<usize>,
}

impl EventLog {
    pub fn new(clock: RunClock, jsonl: Option<&Path>) -> std::io::Result<Self> {
        let sink = match jsonl {
            Some(p) => Some(crate::support::filesink::FileSink::create(p)?),
            None => None,
        };
        let (changed, _) = watch::channel(0);
        Ok(Self {
            clock,
            events: Mutex::new(Vec::new()),
            sink,
            changed,
        })
    }

    pub fn clock(&self) -> RunClock {
        self.clock
    }

    pub fn push(&self, kind: EventKind) {
        self.push_at(self.clock.now(), kind);
    }

    /// Pushes an event that happened at `at` (run seconds), for records put together from
    /// several log lines after the first arrived.
    pub fn push_at(&self, at: f64, kind: EventKind) {
        let ev = Event { at, kind };
        tracing::debug!(?ev, "event");
        if let Some(sink) = &self.sink {
            // Records are evidence: each one is written and flushed as it comes, so a killed
            // run keeps them.
            if let Ok(mut line) = serde_json::to_vec(&ev) {
                line.push(b'\n');
                sink.write(line);
            }
        }
        let len = {
            let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
            events.push(ev);
            events.len()
        };
        self.changed.send_replace(len);
    }

    /// Waits until every event pushed so far is in `events.jsonl`.
    pub fn sync(&self) {
        if let Some(sink) = &self.sink {
            sink.sync();
        }
    }

    pub fn snapshot(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A receiver that wakes whenever an event is pushed.
    pub fn subscribe(&self) -> watch::Receiver<usize> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn push_notifies_and_keeps_order() {
        let log = EventLog::new(RunClock::start(), None).unwrap();
        let mut rx = log.subscribe();
        log.push(EventKind::Service {
            service: "dhcp".into(),
            state: "started".into(),
        });
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow(), 1);
        log.push(EventKind::Service {
            service: "http".into(),
            state: "started".into(),
        });
        let all = log.snapshot();
        assert_eq!(all.len(), 2);
        assert!(all[0].at <= all[1].at);
        assert!(matches!(&all[1].kind, EventKind::Service { service, .. } if service == "http"));
    }

    #[test]
    fn jsonl_sink_gets_every_event() {
        let tmp = tempfile::Builder::new()
            .prefix("nbh-events-")
            .tempdir()
            .unwrap();
        let dir = tmp.path();
        let path = dir.join("events.jsonl");
        let log = EventLog::new(RunClock::start(), Some(&path)).unwrap();
        log.push(EventKind::HttpRequest {
            method: "GET".into(),
            path: "/boot.ipxe".into(),
            status: 200,
            peer: "10.0.0.2".parse().unwrap(),
            fault: None,
        });
        log.sync();
        let text = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(v["kind"], "http_request");
        assert_eq!(v["path"], "/boot.ipxe");
        assert!(
            v.get("fault").is_none(),
            "no fault key on a plain answer: {v}"
        );
        tmp.close().unwrap();
    }
}
