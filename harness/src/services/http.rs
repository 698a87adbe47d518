//! Boot scripts over HTTP, served in-process from the scenario's already rendered files. Every
//! request is recorded, answered or not.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::response::Response;
use axum::serve::ListenerExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::outage::{Downtime, Gate};
use super::{ServiceContext, ServiceError};
use crate::scenario::Scenario;
use crate::services::events::{EventKind, EventLog};

const SERVICE: &str = "http";

/// Requests still to fault, the status to answer with, and how long to wait first.
type PendingFault = (u32, Option<u16>, Option<Duration>);

struct AppState {
    /// URL path with its leading slash -> (body, content type).
    files: HashMap<String, (Bytes, &'static str)>,
    events: Arc<EventLog>,
    log: Mutex<std::fs::File>,
    /// Path -> (requests still to fail, status to answer with), from the scenario's fault plan.
    /// Per path: requests still to fault, and how.
    faults: Mutex<HashMap<String, PendingFault>>,
}

pub struct Http {
    /// Where it listens (the real port when an ephemeral one was asked for).
    pub addr: SocketAddr,
    log: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// Text that is safe to show as text; anything else goes out as bytes.
pub fn content_type(body: &[u8]) -> &'static str {
    match std::str::from_utf8(body) {
        Ok(t)
            if !t
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) =>
        {
            "text/plain; charset=utf-8"
        }
        _ => "application/octet-stream",
    }
}

/// Where the HTTP server of a run logs its requests.
pub fn log_path(run_dir: &Path) -> PathBuf {
    run_dir.join("http.log")
}

impl Http {
    /// Listens on `listen` (the bridge address in a run) and returns once it accepts
    /// connections.
    pub async fn start(
        s: &Scenario,
        cx: &ServiceContext,
        listen: SocketAddr,
    ) -> Result<Http, ServiceError> {
        let log_path = log_path(&cx.run_dir);
        // Appended to: a restarted server keeps the requests of the one before.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| ServiceError::Io {
                service: SERVICE,
                what: log_path.display().to_string(),
                source,
            })?;
        let files = s
            .http
            .files
            .iter()
            .map(|f| {
                let body = Bytes::from(f.body.clone());
                let ty = content_type(&body);
                (
                    format!("/{}", f.url_path.trim_start_matches('/')),
                    (body, ty),
                )
            })
            .collect();
        let faults = s
            .http
            .faults
            .iter()
            .map(|f| (f.path.clone(), (f.first, f.status, f.delay)))
            .collect();
        let state = Arc::new(AppState {
            files,
            events: cx.events.clone(),
            log: Mutex::new(log),
            faults: Mutex::new(faults),
        });
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| ServiceError::Io {
                service: SERVICE,
                what: format!("cannot listen on {listen}"),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServiceError::Io {
            service: SERVICE,
            what: "local address of the listener".into(),
            source,
        })?;
        let app = axum::Router::new().fallback(serve).with_state(state);
        let (tx, rx) = oneshot::channel::<()>();
        let gate = Gate::new(
            listener,
            SERVICE,
            Downtime::new(s.http.start_after, &s.http.down),
            cx.events.clone(),
        );
        let task = crate::support::tasks::spawn("http", async move {
            // `tap_io` only to reach axum's peer-address extractor, which it offers for its own
            // listener and for tapped ones.
            let served = axum::serve(
                gate.tap_io(|_| ()),
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
            if let Err(e) = served {
                tracing::warn!("http server ended: {e}");
            }
        });
        tracing::info!(%addr, files = s.http.files.len(), "http up");
        Ok(Http {
            addr,
            log: log_path,
            shutdown: Some(tx),
            task,
        })
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // Graceful shutdown waits for open connections, and iPXE may keep one alive after its
        // last request; don't wait on it for long.
        if tokio::time::timeout(Duration::from_secs(2), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }

    pub fn artifacts(&self) -> Vec<PathBuf> {
        vec![self.log.clone()]
    }
}

impl axum::serve::Listener for Gate {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match Gate::accept(self).await {
                Ok(accepted) => return accepted,
                // As axum's own listener does: an accept error (out of file descriptors, an
                // aborted handshake) is passing; wait a little and go on.
                Err(e) => {
                    tracing::debug!("http accept: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Gate::local_addr(self)
    }
}

async fn serve(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let found = if method == Method::GET || method == Method::HEAD {
        st.files.get(&path).cloned()
    } else {
        None
    };
    // An injected fault answers a path that exists late, with an error, or both, like a server
    // still starting or overloaded.
    let fault = found.as_ref().and_then(|_| {
        let mut faults = st.faults.lock().unwrap_or_else(|p| p.into_inner());
        let (left, status, delay) = faults.get_mut(&path)?;
        if *left == 0 {
            return None;
        }
        *left -= 1;
        Some((*status, *delay))
    });
    let delay = fault.and_then(|(_, d)| d);
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let injected = fault
        .and_then(|(s, _)| s)
        .and_then(|s| StatusCode::from_u16(s).ok());
    let found = if injected.is_some() { None } else { found };
    let status = match (injected, &found) {
        (Some(s), _) => s,
        (None, Some(_)) => StatusCode::OK,
        (None, None) => StatusCode::NOT_FOUND,
    };
    let fault_note = match (injected.is_some(), delay) {
        (true, Some(d)) => Some(format!("injected fault, answered after {d:?}")),
        (true, None) => Some("injected fault".to_string()),
        (false, Some(d)) => Some(format!("injected delay of {d:?}")),
        (false, None) => None,
    };
    st.events.push(EventKind::HttpRequest {
        method: method.to_string(),
        path: path.clone(),
        status: status.as_u16(),
        peer: peer.ip(),
        fault: fault_note.clone(),
    });
    if let Ok(mut f) = st.log.lock() {
        let _ = writeln!(
            f,
            "[{:9.3}] {peer} {method} {} {}{}",
            st.events.clock().now(),
            req.uri(),
            status.as_u16(),
            fault_note.map(|n| format!(" ({n})")).unwrap_or_default()
        );
    }
    let (body, ty) = match found {
        Some(found) => found,
        None if injected.is_some() => (
            Bytes::from(format!("{path}: fault injected by the scenario\n")),
            "text/plain; charset=utf-8",
        ),
        None => (
            Bytes::from(format!("{path} is not served by this scenario\n")),
            "text/plain; charset=utf-8",
        ),
    };
    let len = body.len();
    let mut resp = Response::new(if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(body)
    });
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ty));
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::events::RunClock;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn request(addr: SocketAddr, method: &str, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("{method} {path} HTTP/1.0\r\nHost: lab\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn text_or_bytes() {
        assert_eq!(
            content_type(b"#!ipxe\nsanboot x\n"),
            "text/plain; charset=utf-8"
        );
        assert_eq!(content_type(b"\x7fELF\x02\x01"), "application/octet-stream");
        assert_eq!(
            content_type(&[0xff, 0xfe, 0x00]),
            "application/octet-stream"
        );
    }

    #[tokio::test]
    async fn serves_files_404s_and_records_requests() {
        let tmp = tempfile::Builder::new()
            .prefix("nbh-http-")
            .tempdir()
            .unwrap();
        let dir = tmp.path();
        let scen = crate::scenario::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../scenarios/debian-ibft-e1000.yaml"),
        )
        .unwrap();
        let events = Arc::new(EventLog::new(RunClock::start(), None).unwrap());
        let cx = ServiceContext {
            node_disks: Default::default(),
            bridge: "unused".into(),
            server_ip: "127.0.0.1".parse().unwrap(),
            run_dir: dir.to_path_buf(),
            disk: dir.join("disk.img"),
            events: events.clone(),
        };
        let h = Http::start(&scen, &cx, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        assert_ne!(h.addr.port(), 0);

        let ok = request(h.addr, "GET", "/boot.ipxe").await;
        assert!(
            ok.starts_with("HTTP/1.0 200") || ok.starts_with("HTTP/1.1 200"),
            "{ok}"
        );
        assert!(
            ok.to_ascii_lowercase().contains("content-type: text/plain"),
            "{ok}"
        );
        assert!(
            ok.contains("sanboot iscsi:10.77.0.1:::1:iqn.2026-11.lab:node01-root"),
            "the body is the rendered script: {ok}"
        );
        let head = request(h.addr, "HEAD", "/boot.ipxe").await;
        assert!(head.contains(" 200 "), "{head}");
        assert!(!head.contains("sanboot"), "HEAD has no body: {head}");
        let missing = request(h.addr, "GET", "/nope").await;
        assert!(missing.contains(" 404 "), "{missing}");
        let post = request(h.addr, "POST", "/boot.ipxe").await;
        assert!(post.contains(" 404 "), "{post}");

        let ev = events.snapshot();
        assert_eq!(ev.len(), 4, "{ev:?}");
        assert!(matches!(
            &ev[0].kind,
            EventKind::HttpRequest { method, path, status: 200, peer, fault: None }
                if method == "GET" && path == "/boot.ipxe" && peer.is_loopback()
        ));
        assert!(
            matches!(&ev[2].kind, EventKind::HttpRequest { path, status: 404, .. } if path == "/nope")
        );
        h.stop().await;
        let log = std::fs::read_to_string(dir.join("http.log")).unwrap();
        assert!(
            log.contains("GET /boot.ipxe 200") && log.contains("GET /nope 404"),
            "{log}"
        );
        tmp.close().unwrap();
    }

    #[tokio::test]
    async fn injected_faults_answer_first_requests_then_serve() {
        let tmp = tempfile::Builder::new()
            .prefix("nbh-http-fault-")
            .tempdir()
            .unwrap();
        let dir = tmp.path();
        let scen = crate::scenario::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/http-late.yaml"),
        )
        .unwrap();
        let events = Arc::new(EventLog::new(RunClock::start(), None).unwrap());
        let cx = ServiceContext {
            node_disks: Default::default(),
            bridge: "unused".into(),
            server_ip: "127.0.0.1".parse().unwrap(),
            run_dir: dir.to_path_buf(),
            disk: dir.join("disk.img"),
            events: events.clone(),
        };
        let h = Http::start(&scen, &cx, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        // The first stage is not faulted; the real script fails four times, then is served.
        assert!(request(h.addr, "GET", "/boot.ipxe")
            .await
            .lines()
            .next()
            .unwrap_or("")
            .contains(" 200"));
        for _ in 0..4 {
            let reply = request(h.addr, "GET", "/menu.ipxe").await;
            let line = reply.lines().next().unwrap_or("");
            assert!(line.contains(" 503"), "{line}");
        }
        assert!(request(h.addr, "GET", "/menu.ipxe")
            .await
            .lines()
            .next()
            .unwrap_or("")
            .contains(" 200"));
        let statuses: Vec<u16> = events
            .snapshot()
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::HttpRequest { status, .. } => Some(*status),
                _ => None,
            })
            .collect();
        assert_eq!(statuses, vec![200, 503, 503, 503, 503, 200]);
        let flagged: Vec<bool> = events
            .snapshot()
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::HttpRequest { fault, .. } => Some(fault.is_some()),
                _ => None,
            })
            .collect();
        assert_eq!(flagged, vec![false, true, true, true, true, false]);
        h.stop().await;
        let log = std::fs::read_to_string(dir.join("http.log")).unwrap();
        assert_eq!(log.matches("(injected fault)").count(), 4, "{log}");
        tmp.close().unwrap();
    }
}
