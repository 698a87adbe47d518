//! The fault plans "this service comes up late" and "this service is down for a while", for the
//! services the harness serves itself (HTTP and the iSCSI login proxy).
//!
//! The port stays bound the whole run, but while the plan has the service down every new
//! connection is answered with a reset and recorded. A client sees what it sees from a server
//! that is not up (the connection fails at once), and the run keeps evidence of every attempt
//! the outage turned away, which a port nobody listens on could not give. Connections accepted
//! before a window began are left alone: a window turns newcomers away, as a portal or server
//! being failed over does; a `restart` step is the crash that cuts them. dnsmasq is simply not
//! running while it is down instead (see [`super::Services`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::scenario::DownWindow;
use crate::services::events::{EventKind, EventLog};

/// When a service is down, on the run clock (seconds from the lab's start).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Downtime {
    /// Late start: down from the beginning until this time.
    pub start_at: Option<f64>,
    /// Down windows `(from, until)`, in time order, all after `start_at`.
    pub windows: Vec<(f64, f64)>,
}

impl Downtime {
    pub fn new(start_after: Option<Duration>, windows: &[DownWindow]) -> Downtime {
        Downtime {
            start_at: start_after.map(|d| d.as_secs_f64()),
            windows: windows
                .iter()
                .map(|w| (w.at.as_secs_f64(), w.until().as_secs_f64()))
                .collect(),
        }
    }

    /// The outage `now` falls in: until when, and which plan made it.
    fn at(&self, now: f64) -> Option<(f64, Plan)> {
        if let Some(t) = self.start_at.filter(|t| now < *t) {
            return Some((t, Plan::StartAfter));
        }
        self.windows
            .iter()
            .find(|(from, until)| *from <= now && now < *until)
            .map(|(_, until)| (*until, Plan::Window))
    }

    /// The next outage to begin after `now`.
    fn next_after(&self, now: f64) -> Option<f64> {
        self.windows
            .iter()
            .map(|(from, _)| *from)
            .find(|from| *from > now)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Plan {
    StartAfter,
    Window,
}

impl Plan {
    fn name(self) -> &'static str {
        match self {
            Plan::StartAfter => "start_after",
            Plan::Window => "down window",
        }
    }
}

/// A listener that applies a [`Downtime`]: while down it resets and records every connection;
/// each window's start (`down until ...`) and every return (`started`) is recorded as the
/// service's state, at the moment it happens even when nobody connects.
pub struct Gate {
    listener: TcpListener,
    service: &'static str,
    plan: Downtime,
    events: Arc<EventLog>,
    /// The end of the outage whose start is already recorded.
    recorded_down: Option<f64>,
    /// A server behind this one that must accept too before the service counts as started
    /// (tgtd behind the login proxy).
    upstream: Option<SocketAddr>,
    /// Clients accepted while the gate proved itself, handed out before new ones.
    held: std::collections::VecDeque<(TcpStream, SocketAddr)>,
}

/// How long proving that a service accepts may take before it is recorded as failing to.
const PROOF_TIMEOUT: Duration = Duration::from_secs(2);

impl Gate {
    pub fn new(
        listener: TcpListener,
        service: &'static str,
        plan: Downtime,
        events: Arc<EventLog>,
    ) -> Gate {
        // A late start's `down until` state is recorded by the lab when it starts the service.
        let recorded_down = plan.start_at.filter(|t| events.clock().now() < *t);
        Gate {
            listener,
            service,
            plan,
            events,
            recorded_down,
            upstream: None,
            held: std::collections::VecDeque::new(),
        }
    }

    /// The service counts as started only once `upstream` accepts a connection too.
    pub fn with_upstream(mut self, upstream: SocketAddr) -> Gate {
        self.upstream = Some(upstream);
        self
    }

    /// Shows that the service accepts connections now, by making one: to this gate's own
    /// listener (taken by this very accept loop, as a client's would be) and to the upstream
    /// server, if any. Clients that arrive meanwhile are held for the next `accept`.
    async fn prove_accepting(&mut self) -> Result<String, String> {
        let own = self.listener.local_addr().map_err(|e| e.to_string())?;
        let probe = TcpStream::connect(own)
            .await
            .map_err(|e| format!("connecting to {own}: {e}"))?;
        let probe_addr = probe.local_addr().map_err(|e| e.to_string())?;
        loop {
            let (stream, peer) = self
                .listener
                .accept()
                .await
                .map_err(|e| format!("accepting on {own}: {e}"))?;
            if peer == probe_addr {
                break;
            }
            self.held.push_back((stream, peer));
        }
        drop(probe);
        let mut how = format!("accepted a connection on {own}");
        if let Some(up) = self.upstream {
            let conn = TcpStream::connect(up)
                .await
                .map_err(|e| format!("the server behind it, {up}: {e}"))?;
            drop(conn);
            how.push_str(&format!(", and {up} behind it accepted one"));
        }
        Ok(how)
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection while the service is up. Cancel-safe: every state change is
    /// recorded before the next wait.
    pub async fn accept(&mut self) -> std::io::Result<(TcpStream, SocketAddr)> {
        loop {
            if let Some(held) = self.held.pop_front() {
                return Ok(held);
            }
            let now = self.events.clock().now();
            if let Some((until, plan)) = self.plan.at(now) {
                if self.recorded_down != Some(until) {
                    self.events.push(EventKind::Service {
                        service: self.service.to_string(),
                        state: format!("down until {until:.0}s ({})", plan.name()),
                    });
                    tracing::info!(
                        service = self.service,
                        "down until {until:.1}s ({})",
                        plan.name()
                    );
                    self.recorded_down = Some(until);
                }
                let wait = Duration::from_secs_f64(until - now);
                match tokio::time::timeout(wait, self.listener.accept()).await {
                    Err(_) => {}
                    Ok(Ok((stream, peer))) => {
                        turn_away(stream, peer, self.service, until, plan, &self.events)
                    }
                    // Out of file descriptors or an aborted handshake: try again shortly.
                    Ok(Err(e)) => {
                        tracing::debug!(service = self.service, "accept while down: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                continue;
            }
            if self.recorded_down.take().is_some() {
                // The plan's time is up; the record that the service started is made only once
                // it has shown that it accepts connections.
                let state = match tokio::time::timeout(PROOF_TIMEOUT, self.prove_accepting()).await
                {
                    Ok(Ok(how)) => {
                        tracing::info!(service = self.service, %how, "started (fault plan)");
                        "started".to_string()
                    }
                    Ok(Err(why)) => format!("not accepting after its fault plan: {why}"),
                    Err(_) => format!(
                        "not accepting after its fault plan: no connection within {PROOF_TIMEOUT:?}"
                    ),
                };
                self.events.push(EventKind::Service {
                    service: self.service.to_string(),
                    state,
                });
                continue;
            }
            match self.plan.next_after(now) {
                Some(from) => {
                    let wait = Duration::from_secs_f64(from - now);
                    if let Ok(accepted) = tokio::time::timeout(wait, self.listener.accept()).await {
                        return accepted;
                    }
                }
                None => return self.listener.accept().await,
            }
        }
    }
}

fn turn_away(
    stream: TcpStream,
    peer: SocketAddr,
    service: &str,
    until: f64,
    plan: Plan,
    events: &EventLog,
) {
    // SO_LINGER 0 makes the close send RST instead of FIN: the client's connect-and-request
    // fails at once, as against a closed port.
    if let Err(e) = stream.set_zero_linger() {
        tracing::debug!(service, %peer, "cannot set SO_LINGER: {e}");
    }
    drop(stream);
    events.push(EventKind::Refused {
        service: service.to_string(),
        peer: peer.ip(),
        reason: format!("down until {until:.0}s (fault plan {})", plan.name()),
    });
}

/// The state a late service is in right after the lab started it, for the records.
pub fn down_state(start_at: f64) -> String {
    format!("down until {start_at:.0}s (start_after)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::events::RunClock;
    use tokio::io::AsyncReadExt;

    /// Connects and reads: a reset comes with the connect or the first read; an accepted
    /// connection that the test closes reads as an orderly end.
    async fn try_once(addr: SocketAddr) -> std::io::Result<usize> {
        let mut s = TcpStream::connect(addr).await?;
        let mut buf = [0u8; 8];
        s.read(&mut buf).await
    }

    fn states(events: &EventLog) -> Vec<(f64, String)> {
        events
            .snapshot()
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::Service { state, .. } => Some((e.at, state)),
                _ => None,
            })
            .collect()
    }

    fn refusals(events: &EventLog) -> Vec<String> {
        events
            .snapshot()
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::Refused { reason, .. } => Some(reason),
                _ => None,
            })
            .collect()
    }

    /// Serves `gate` in the background, closing each accepted connection at once.
    fn serve(mut gate: Gate) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while let Ok((s, _)) = gate.accept().await {
                drop(s);
            }
        })
    }

    #[tokio::test]
    async fn started_is_recorded_only_once_the_server_behind_accepts_too() {
        let events = Arc::new(EventLog::new(RunClock::start(), None).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        // An upstream address nobody listens on: bound, then closed.
        let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = gone.local_addr().unwrap();
        drop(gone);
        let plan = Downtime {
            start_at: Some(0.2),
            windows: vec![],
        };
        let server =
            serve(Gate::new(listener, "iscsi", plan, events.clone()).with_upstream(upstream));
        tokio::time::sleep(Duration::from_millis(600)).await;
        let st = states(&events);
        assert_eq!(st.len(), 1, "{st:?}");
        assert!(
            st[0]
                .1
                .starts_with("not accepting after its fault plan: the server behind it"),
            "{st:?}"
        );
        server.abort();
    }

    #[tokio::test]
    async fn connections_are_reset_and_recorded_until_the_start_time() {
        let events = Arc::new(EventLog::new(RunClock::start(), None).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let plan = Downtime {
            start_at: Some(0.6),
            windows: vec![],
        };
        let server = serve(Gate::new(listener, "http", plan, events.clone()));
        let read = try_once(addr).await;
        assert!(
            matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "{read:?}"
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(
            matches!(try_once(addr).await, Ok(0)),
            "up after the start time"
        );
        let refused = refusals(&events);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            refused[0].contains("down until 1s (fault plan start_after)"),
            "{refused:?}"
        );
        // The late start's `down until` is the lab's to record; the gate records the start.
        let st = states(&events);
        assert_eq!(st.len(), 1, "{st:?}");
        assert_eq!(st[0].1, "started");
        assert!(st[0].0 >= 0.6, "{st:?}");
        server.abort();
    }

    #[tokio::test]
    async fn a_window_turns_newcomers_away_and_is_recorded_at_both_ends() {
        let events = Arc::new(EventLog::new(RunClock::start(), None).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let plan = Downtime {
            start_at: None,
            windows: vec![(0.4, 0.9), (1.2, 1.4)],
        };
        let server = serve(Gate::new(listener, "iscsi", plan, events.clone()));
        assert!(
            matches!(try_once(addr).await, Ok(0)),
            "up before the window"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let during = try_once(addr).await;
        assert!(
            matches!(&during, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "{during:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(matches!(try_once(addr).await, Ok(0)), "up after the window");
        // The second window is recorded though nobody connects during it.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let refused = refusals(&events);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            refused[0].contains("down until 1s (fault plan down window)"),
            "{refused:?}"
        );
        let st = states(&events);
        let names: Vec<&str> = st.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "down until 1s (down window)",
                "started",
                "down until 1s (down window)",
                "started"
            ],
            "{st:?}"
        );
        let times: Vec<f64> = st.iter().map(|(t, _)| *t).collect();
        for (t, lo, hi) in [
            (times[0], 0.4, 0.6),
            (times[1], 0.9, 1.1),
            (times[2], 1.2, 1.4),
            (times[3], 1.4, 1.6),
        ] {
            assert!((lo..hi).contains(&t), "{st:?}");
        }
        server.abort();
    }

    #[test]
    fn downtime_from_the_scenario() {
        let d = Downtime::new(
            Some(Duration::from_secs(20)),
            &[DownWindow {
                at: Duration::from_secs(60),
                length: Duration::from_secs(20),
            }],
        );
        assert_eq!(d.at(19.9), Some((20.0, Plan::StartAfter)));
        assert_eq!(d.at(20.0), None);
        assert_eq!(d.next_after(20.0), Some(60.0));
        assert_eq!(d.at(60.0), Some((80.0, Plan::Window)));
        assert_eq!(d.at(80.0), None);
        assert_eq!(d.next_after(80.0), None);
    }
}
