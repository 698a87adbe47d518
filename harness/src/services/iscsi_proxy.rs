//! A small TCP proxy in front of the iSCSI target that reads the login phase of every connection.
//!
//! It records each login (initiator, target, source address, time, result) and can refuse or
//! drop logins per the scenario's fault plan. Once a login completes, the connection is relayed
//! PDU by PDU ([`crate::services::iscsi_session`]): the proxy reads headers for the logout and
//! never looks into SCSI traffic.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::services::events::{EventKind, EventLog, IscsiSession};
use crate::support::iscsi_pdu::{self, LoginPdu, BHS_LEN, OP_LOGIN_RESPONSE};

/// What the proxy does to logins, decided per login attempt (discovery sessions included).
#[derive(Debug, Clone, Default)]
pub struct LoginFaults {
    /// Answer the first N logins with "target temporarily unavailable".
    pub refuse_first: u32,
    /// Close the connection without answering for the first N logins.
    pub drop_first: u32,
    /// Only these initiator addresses may log in (empty: all), like an address ACL on a SAN.
    pub allow_from: Vec<std::net::IpAddr>,
    /// Per target (lower-case IQN), the one address that may log in to it: a fleet's
    /// per-node address ACL. Discovery sessions name no target and are not held to it.
    pub allow_at_target: std::collections::BTreeMap<String, std::net::IpAddr>,
    /// Answer every login with "target temporarily unavailable" until this time on the run
    /// clock, in seconds: a target that is up but not ready to serve.
    pub refuse_until: Option<f64>,
    /// When the portal resets (and records) every new connection: a target that comes up late
    /// or is down for a while.
    pub downtime: crate::services::outage::Downtime,
}

impl LoginFaults {
    /// Whether the plan lets every login through untouched, so that the portal could as well be
    /// tgtd's own.
    pub fn lets_all_through(&self) -> bool {
        self.refuse_first == 0
            && self.drop_first == 0
            && self.allow_from.is_empty()
            && self.allow_at_target.is_empty()
            && self.refuse_until.is_none()
            && self.downtime == crate::services::outage::Downtime::default()
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LoginRecord {
    pub at: f64,
    pub initiator: String,
    pub target: String,
    pub session_type: String,
    pub source: SocketAddr,
    /// The lab's portal the connection came in on.
    pub portal: SocketAddr,
    /// The initiator's MAC as the lab's neighbour table knows it: which NIC the login came from,
    /// when several NICs share a network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_mac: Option<String>,
    /// `accepted`, `rejected by target (class C detail D)`, `refused: ...`, `dropped: ...`,
    /// `malformed: ...`, `closed during login` or `target unreachable: ...`.
    pub result: String,
    /// The initiator's session ID, hex.
    pub isid: String,
    /// The target's session handle from the response that completed the login.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tsih: Option<u16>,
    /// The refusing response's status class and detail, and its RFC 7143 name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_class: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_detail: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// `target` or `login proxy`, for a refusal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<String>,
}

impl Answer {
    /// The proxy itself refused, for the lab's ACL or fault plan.
    fn proxy(class: u8, detail: u8) -> Answer {
        Answer {
            status: Some((class, detail)),
            by: Some("login proxy"),
            tsih: None,
        }
    }
}

/// How a login attempt ended, beyond the words of its result.
#[derive(Debug, Clone, Copy, Default)]
struct Answer {
    /// Class and detail of a refusing login response.
    status: Option<(u8, u8)>,
    /// Who sent that response.
    by: Option<&'static str>,
    /// The TSIH of the response that completed the login.
    tsih: Option<u16>,
}

pub struct IscsiProxy {
    pub listen: SocketAddr,
    records: Arc<Mutex<Vec<LoginRecord>>>,
    task: JoinHandle<()>,
    /// Every connection it accepted: cut when the portal dies.
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

/// The file every portal's proxy appends its login records to, one JSON object a line.
pub type RecordSink = Arc<Mutex<std::fs::File>>;

impl IscsiProxy {
    /// Listens on `listen` and forwards to `upstream` (tgtd's portal); `name_portal`: which
    /// portal this is, for the login events, when the lab has two.
    pub async fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        faults: LoginFaults,
        events: Arc<EventLog>,
        sink: RecordSink,
        name_portal: Option<crate::scenario::Portal>,
    ) -> std::io::Result<IscsiProxy> {
        let listener = TcpListener::bind(listen).await?;
        let listen = listener.local_addr()?;
        let mut gate = crate::services::outage::Gate::new(
            listener,
            "iscsi",
            faults.downtime.clone(),
            events.clone(),
        )
        .with_upstream(upstream);
        let records = Arc::new(Mutex::new(Vec::new()));
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let held = conns.clone();
        let attempts = Arc::new(AtomicU32::new(0));
        let faults = Arc::new(faults);
        let recs = records.clone();
        let task = crate::support::tasks::spawn("iscsi-proxy", async move {
            loop {
                let (client, peer) = match gate.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors or an aborted handshake: try again shortly.
                        tracing::debug!("iscsi proxy accept: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let cx = ConnCx {
                    upstream,
                    portal: listen,
                    name_portal,
                    peer,
                    faults: faults.clone(),
                    attempts: attempts.clone(),
                    events: events.clone(),
                    records: recs.clone(),
                    sink: sink.clone(),
                };
                let conn = crate::support::tasks::spawn("iscsi-proxy-conn", async move {
                    if let Err(e) = cx.serve(client).await {
                        tracing::debug!(%peer, "iscsi proxy connection ended: {e}");
                    }
                });
                let mut held = held.lock().unwrap_or_else(|p| p.into_inner());
                held.retain(|c| !c.is_finished());
                held.push(conn.abort_handle());
            }
        });
        Ok(IscsiProxy {
            listen,
            records,
            task,
            conns,
        })
    }

    pub fn records(&self) -> Vec<LoginRecord> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn stop(self) {
        self.task.abort();
    }

    /// The portal dies: its listener closes (a new connection is refused, as by a host whose
    /// target service is gone) and every connection it carried is cut, sessions and all. The
    /// other portal, if any, is untouched. Returns how many connections were cut.
    pub fn kill(&self) -> usize {
        self.task.abort();
        let conns = std::mem::take(&mut *self.conns.lock().unwrap_or_else(|p| p.into_inner()));
        let live = conns.iter().filter(|c| !c.is_finished()).count();
        for c in conns {
            c.abort();
        }
        live
    }
}

/// The MAC of `ip` in `/proc/net/arp` text (this namespace's neighbour table). A TCP peer has
/// just talked to us, so its entry is there unless it is incomplete.
pub fn neighbour_mac(arp: &str, ip: std::net::IpAddr) -> Option<String> {
    let ip = ip.to_string();
    arp.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // IP address, HW type, Flags, HW address, Mask, Device; flags 0x0 is incomplete.
        (f.len() >= 6 && f[0] == ip && f[2] != "0x0" && f[3] != "00:00:00:00:00:00")
            .then(|| f[3].to_ascii_lowercase())
    })
}

struct ConnCx {
    upstream: SocketAddr,
    portal: SocketAddr,
    name_portal: Option<crate::scenario::Portal>,
    peer: SocketAddr,
    faults: Arc<LoginFaults>,
    attempts: Arc<AtomicU32>,
    events: Arc<EventLog>,
    records: Arc<Mutex<Vec<LoginRecord>>>,
    sink: Arc<Mutex<std::fs::File>>,
}

/// A login phase that stalls this long is abandoned.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Who logs in to what, as the initiator's first login request says (empty when it sent none
/// the proxy could read): the same for the login record and the session followed after it.
#[derive(Default)]
struct Names {
    initiator: String,
    target: String,
    session_type: String,
    isid: String,
}

impl Names {
    fn of(first: Option<&LoginPdu>) -> Names {
        let Some(p) = first else {
            return Names::default();
        };
        Names {
            initiator: p.initiator_name().unwrap_or("").to_string(),
            target: p.target_name().unwrap_or("").to_string(),
            session_type: p.session_type().to_string(),
            isid: hex::encode(p.isid),
        }
    }
}

impl ConnCx {
    fn record(&self, first: Option<&LoginPdu>, result: String) {
        self.record_answer(first, result, Answer::default());
    }

    fn record_answer(&self, first: Option<&LoginPdu>, result: String, answer: Answer) {
        let status = answer
            .status
            .map(|(c, d)| iscsi_pdu::LoginStatus::from_bytes(c, d).map(|s| s.name().to_string()))
            .map(|s| s.unwrap_or_else(|| "unknown".into()));
        let names = Names::of(first);
        let rec = LoginRecord {
            at: self.events.clock().now(),
            initiator: names.initiator,
            target: names.target,
            session_type: names.session_type,
            source: self.peer,
            portal: self.portal,
            source_mac: neighbour_mac(
                &std::fs::read_to_string("/proc/net/arp").unwrap_or_default(),
                self.peer.ip(),
            ),
            result,
            isid: names.isid,
            tsih: answer.tsih,
            status_class: answer.status.map(|(c, _)| c),
            status_detail: answer.status.map(|(_, d)| d),
            status,
            answered_by: answer.by.map(str::to_string),
        };
        tracing::info!(?rec, "iscsi login");
        if let Ok(mut f) = self.sink.lock() {
            use std::io::Write;
            let _ = serde_json::to_writer(&mut *f, &rec);
            let _ = f.write_all(b"\n");
        }
        // Only completed logins count as `IscsiLogin`; the others are kept apart so a step
        // waiting for a login is never satisfied by a refused one.
        if rec.result == "accepted" {
            self.events.push(EventKind::IscsiLogin {
                initiator: rec.initiator.clone(),
                target: rec.target.clone(),
                source_ip: self.peer.ip(),
                source_mac: rec.source_mac.clone(),
                session_type: rec.session_type.clone(),
                isid: rec.isid.clone(),
                tsih: rec.tsih.unwrap_or(0),
                portal: self.name_portal,
            });
        } else {
            self.events.push(EventKind::IscsiLoginFailed {
                initiator: rec.initiator.clone(),
                target: rec.target.clone(),
                source_ip: self.peer.ip(),
                result: rec.result.clone(),
                session_type: rec.session_type.clone(),
                status: rec.status.clone(),
                answered_by: rec.answered_by.clone(),
            });
        }
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(rec);
    }

    async fn serve(self, mut client: TcpStream) -> std::io::Result<()> {
        // The first PDU decides: who is this, and does the fault plan let them in?
        let first_bytes = match tokio::time::timeout(LOGIN_TIMEOUT, read_pdu(&mut client)).await {
            Ok(Ok(Some(b))) => b,
            Ok(Ok(None)) => return Ok(()), // connected and left: a port probe, not a login
            Ok(Err(e)) => {
                self.record(None, format!("malformed: {e}"));
                return Ok(());
            }
            Err(_) => {
                self.record(None, "malformed: no login PDU within 30s".into());
                return Ok(());
            }
        };
        let first = match iscsi_pdu::parse_login(&first_bytes) {
            Ok(p) if p.is_request() => p,
            Ok(_) => {
                self.record(None, "malformed: first PDU is a login response".into());
                return Ok(());
            }
            Err(e) => {
                self.record(None, format!("malformed: {e}"));
                return Ok(());
            }
        };
        if !self.faults.allow_from.is_empty() && !self.faults.allow_from.contains(&self.peer.ip()) {
            self.reject(&mut client, &first, 2, 1).await;
            self.record_answer(
                Some(&first),
                format!("refused: address {} is not allowed", self.peer.ip()),
                Answer::proxy(2, 1),
            );
            return Ok(());
        }
        let admitted = first
            .target_name()
            .and_then(|t| self.faults.allow_at_target.get(&t.to_ascii_lowercase()));
        if let Some(only) = admitted.filter(|a| **a != self.peer.ip()) {
            self.reject(&mut client, &first, 2, 1).await;
            self.record_answer(
                Some(&first),
                format!(
                    "refused: address {} is not allowed at this target (only {only})",
                    self.peer.ip()
                ),
                Answer::proxy(2, 1),
            );
            return Ok(());
        }
        if let Some(until) = self
            .faults
            .refuse_until
            .filter(|t| self.events.clock().now() < *t)
        {
            self.reject(&mut client, &first, 3, 1).await;
            self.record_answer(
                Some(&first),
                format!("refused: fault plan refuses logins until {until:.0}s"),
                Answer::proxy(3, 1),
            );
            return Ok(());
        }
        // Counted after the address list and `refuse_until`: "the first N" are the first
        // logins those let through.
        let n = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        if n <= self.faults.drop_first {
            self.record(
                Some(&first),
                format!(
                    "dropped: fault plan drops the first {} logins",
                    self.faults.drop_first
                ),
            );
            return Ok(());
        }
        if n <= self.faults.drop_first + self.faults.refuse_first {
            // Status 0x0301: target error, service unavailable: the initiator should retry.
            self.reject(&mut client, &first, 3, 1).await;
            self.record_answer(
                Some(&first),
                format!(
                    "refused: fault plan refuses the first {} logins",
                    self.faults.refuse_first
                ),
                Answer::proxy(3, 1),
            );
            return Ok(());
        }

        // tgtd may be down (a restart step): the initiator sees its connection closed, and the
        // records say why.
        let mut server = match TcpStream::connect(self.upstream).await {
            Ok(s) => s,
            Err(e) => {
                self.record(Some(&first), format!("target unreachable: {e}"));
                return Ok(());
            }
        };
        server.write_all(&first_bytes).await?;
        let mut digests = iscsi_pdu::Digests::default();
        let tsih;
        // Relay the rest of the login phase PDU by PDU until the target completes or ends it.
        loop {
            let resp = match tokio::time::timeout(LOGIN_TIMEOUT, read_pdu(&mut server)).await {
                Ok(Ok(Some(b))) => b,
                Ok(Ok(None)) => {
                    self.record(Some(&first), "closed during login".into());
                    return Ok(());
                }
                Ok(Err(e)) => {
                    self.record(Some(&first), format!("malformed: target sent {e}"));
                    return Ok(());
                }
                Err(_) => {
                    self.record(
                        Some(&first),
                        "malformed: target silent for 30s during login".into(),
                    );
                    return Ok(());
                }
            };
            client.write_all(&resp).await?;
            let parsed = iscsi_pdu::parse_login(&resp);
            if let Ok(r) = &parsed {
                digests.learn(&r.keys);
            }
            match parsed {
                Ok(r) if r.opcode == OP_LOGIN_RESPONSE && r.status_class != 0 => {
                    self.record_answer(
                        Some(&first),
                        format!(
                            "rejected by target (class {} detail {})",
                            r.status_class, r.status_detail
                        ),
                        Answer {
                            status: Some((r.status_class, r.status_detail)),
                            by: Some("target"),
                            tsih: None,
                        },
                    );
                    return Ok(());
                }
                Ok(r) if r.completes_login() => {
                    let answer = Answer {
                        tsih: Some(r.tsih),
                        ..Answer::default()
                    };
                    self.record_answer(Some(&first), "accepted".into(), answer);
                    tsih = r.tsih;
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    self.record(Some(&first), format!("malformed: target sent {e}"));
                    return Ok(());
                }
            }
            let req = match tokio::time::timeout(LOGIN_TIMEOUT, read_pdu(&mut client)).await {
                Ok(Ok(Some(b))) => b,
                _ => {
                    self.record(Some(&first), "closed during login".into());
                    return Ok(());
                }
            };
            server.write_all(&req).await?;
        }
        let names = Names::of(Some(&first));
        let session = IscsiSession {
            initiator: names.initiator,
            target: names.target,
            source_ip: self.peer.ip(),
            session_type: names.session_type,
            isid: names.isid,
            tsih,
            portal: self.name_portal,
        };
        crate::services::iscsi_session::follow(
            client,
            server,
            digests,
            session,
            self.events.clone(),
        )
        .await;
        Ok(())
    }

    async fn reject(&self, client: &mut TcpStream, req: &LoginPdu, class: u8, detail: u8) {
        let resp = LoginPdu {
            opcode: OP_LOGIN_RESPONSE,
            transit: false,
            current_stage: req.current_stage,
            next_stage: 0,
            isid: req.isid,
            tsih: 0,
            itt: req.itt,
            status_class: class,
            status_detail: detail,
            keys: Default::default(),
        };
        let _ = client.write_all(&iscsi_pdu::build_login(&resp)).await;
        let _ = client.shutdown().await;
    }
}

/// Reads one whole PDU; `None` on a clean EOF before any byte.
async fn read_pdu(s: &mut TcpStream) -> Result<Option<Vec<u8>>, iscsi_pdu::PduError> {
    let mut buf = match crate::services::iscsi_session::read_bhs(s).await {
        Ok(Some(bhs)) => bhs.to_vec(),
        Ok(None) => return Ok(None),
        Err(short) => {
            return Err(iscsi_pdu::PduError::Truncated {
                need: BHS_LEN,
                have: short.got,
            })
        }
    };
    let len = iscsi_pdu::pdu_len(&buf)?;
    buf.resize(len, 0);
    if let Err(_e) = s.read_exact(&mut buf[BHS_LEN..]).await {
        return Err(iscsi_pdu::PduError::Truncated {
            need: len,
            have: BHS_LEN,
        });
    }
    Ok(Some(buf))
}

#[cfg(test)]
#[path = "iscsi_proxy_tests.rs"]
mod tests;
