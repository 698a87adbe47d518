//! The fault plan "this service comes up late", for the services the harness serves itself
//! (HTTP and the iSCSI login proxy).
//!
//! The port is bound from the start, but until the service's start time every connection is
//! answered with a reset and recorded. A client sees what it sees from a server that is not up
//! yet (the connection fails at once), and the run keeps evidence of every attempt the outage
//! turned away, which a port nobody listens on could not give. dnsmasq is simply started late
//! instead (see [`super::Services`]).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::events::{EventKind, EventLog};

/// Accepts and resets every connection on `listener` until `start_at` seconds on the run clock,
/// recording each as [`EventKind::Refused`]; then records the service as started.
pub async fn hold_down(listener: &TcpListener, service: &str, start_at: f64, events: &EventLog) {
    loop {
        let left = start_at - events.clock().now();
        if left <= 0.0 {
            break;
        }
        match tokio::time::timeout(Duration::from_secs_f64(left), listener.accept()).await {
            Err(_) => break,
            Ok(Ok((stream, peer))) => turn_away(stream, peer, service, start_at, events),
            // Out of file descriptors or an aborted handshake: try again shortly.
            Ok(Err(e)) => {
                tracing::debug!(service, "accept while down: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    events.push(EventKind::Service {
        service: service.to_string(),
        state: "started".into(),
    });
    tracing::info!(service, "started (fault plan: start_after)");
}

fn turn_away(stream: TcpStream, peer: SocketAddr, service: &str, start_at: f64, events: &EventLog) {
    // SO_LINGER 0 makes the close send RST instead of FIN: the client's connect-and-request
    // fails at once, as against a closed port.
    if let Err(e) = stream.set_zero_linger() {
        tracing::debug!(service, %peer, "cannot set SO_LINGER: {e}");
    }
    drop(stream);
    events.push(EventKind::Refused {
        service: service.to_string(),
        peer: peer.ip(),
        reason: format!("down until {start_at:.0}s (fault plan start_after)"),
    });
}

/// The state a late service is in right after the lab started it, for the records.
pub fn down_state(start_at: f64) -> String {
    format!("down until {start_at:.0}s (start_after)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::RunClock;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn connections_are_reset_and_recorded_until_the_start_time() {
        let events = EventLog::new(RunClock::start(), None).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            // The reset may already come with the connect, or with the first read; never an
            // orderly end of stream.
            let mut s = TcpStream::connect(addr).await?;
            let mut buf = [0u8; 8];
            s.read(&mut buf).await
        });
        hold_down(&listener, "http", 0.6, &events).await;
        let read = client.await.unwrap();
        assert!(
            matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "{read:?}"
        );
        let all = events.snapshot();
        assert!(
            matches!(&all[0].kind, EventKind::Refused { service, reason, .. }
                if service == "http" && reason.contains("down until 1s")),
            "{all:?}"
        );
        assert!(
            matches!(&all[1].kind, EventKind::Service { state, .. } if state == "started"),
            "{all:?}"
        );
        assert!(all[1].at >= 0.6, "{all:?}");
        // After the hold the listener is the service's own again.
        let (_ok, _) = tokio::join!(TcpStream::connect(addr), listener.accept());
    }
}
