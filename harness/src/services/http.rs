//! Boot scripts over HTTP, served in-process. Every request is recorded.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, Request, StatusCode};
use axum::response::Response;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{ServiceContext, ServiceError};
use crate::events::{EventKind, EventLog};
use crate::scenario::Scenario;

struct AppState {
    files: HashMap<String, Vec<u8>>,
    events: Arc<EventLog>,
    log: Mutex<std::fs::File>,
}

pub struct Http {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Http {
    pub async fn start(s: &Scenario, cx: &ServiceContext) -> Result<Http, ServiceError> {
        Self::start_on(s, SocketAddr::from((cx.server_ip, 80)), cx).await
    }

    /// Binds `addr` (tests use an ephemeral loopback port).
    pub async fn start_on(
        s: &Scenario,
        addr: SocketAddr,
        cx: &ServiceContext,
    ) -> Result<Http, ServiceError> {
        let log_path = cx.run_dir.join("http.log");
        let log = std::fs::File::create(&log_path).map_err(|e| ServiceError::Other {
            service: "http",
            message: format!("{}: {e}", log_path.display()),
        })?;
        let state = Arc::new(AppState {
            files: s
                .http
                .files
                .iter()
                .map(|f| (format!("/{}", f.url_path), f.body.clone()))
                .collect(),
            events: cx.events.clone(),
            log: Mutex::new(log),
        });
        let listener =
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| ServiceError::NotReady {
                    service: "http",
                    message: format!("cannot listen on {addr}: {e}"),
                    log_tail: String::new(),
                })?;
        let addr = listener.local_addr().map_err(|e| ServiceError::Other {
            service: "http",
            message: e.to_string(),
        })?;
        let app = axum::Router::new().fallback(serve).with_state(state);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let r = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
            if let Err(e) = r {
                tracing::warn!("http server ended: {e}");
            }
        });
        tracing::info!(%addr, files = s.http.files.len(), "http up");
        Ok(Http {
            addr,
            shutdown: Some(tx),
            task,
        })
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // iPXE may hold a keep-alive connection open; don't wait on it for long.
        if tokio::time::timeout(std::time::Duration::from_secs(2), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

async fn serve(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let body = if method == "GET" || method == "HEAD" {
        st.files.get(&path).cloned()
    } else {
        None
    };
    let status = if body.is_some() {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    st.events.push(EventKind::HttpRequest {
        method: method.clone(),
        path: path.clone(),
        status: status.as_u16(),
        peer: peer.ip(),
    });
    if let Ok(mut f) = st.log.lock() {
        let _ = writeln!(
            f,
            "[{:9.3}] {peer} {method} {path} {}",
            st.events.clock().now(),
            status.as_u16()
        );
    }
    let content_type =
        if path.ends_with(".ipxe") || path.ends_with(".txt") || path.ends_with(".cfg") {
            "text/plain"
        } else {
            "application/octet-stream"
        };
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type);
    if body.is_none() {
        resp = resp.header(header::CONTENT_TYPE, "text/plain");
    }
    let out = match body {
        Some(b) if method == "HEAD" => {
            resp = resp.header(header::CONTENT_LENGTH, b.len());
            Body::empty()
        }
        Some(b) => Body::from(b),
        None => Body::from(format!("{path} is not served by this scenario\n")),
    };
    resp.body(out)
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::RunClock;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_files_404s_and_records_requests() {
        let dir = std::env::temp_dir().join(format!("nbh-http-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let scen = crate::scenario::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../scenarios/debian-ibft-e1000.yaml"),
        )
        .unwrap();
        let events = Arc::new(EventLog::new(RunClock::start(), None).unwrap());
        let cx = ServiceContext {
            bridge: "lo".into(),
            server_ip: "127.0.0.1".parse().unwrap(),
            run_dir: dir.clone(),
            disk: dir.join("disk.img"),
            events: events.clone(),
        };
        let h = Http::start_on(&scen, "127.0.0.1:0".parse().unwrap(), &cx)
            .await
            .unwrap();
        let ok = get(h.addr, "/boot.ipxe").await;
        assert!(ok.starts_with("HTTP/1.0 200"), "{ok}");
        assert!(
            ok.contains("sanboot iscsi:10.77.0.1:::1:iqn.2026-11.lab:node01-root"),
            "{ok}"
        );
        let missing = get(h.addr, "/nope").await;
        assert!(missing.starts_with("HTTP/1.0 404"), "{missing}");
        let ev = events.snapshot();
        assert_eq!(ev.len(), 2);
        assert!(
            matches!(&ev[0].kind, EventKind::HttpRequest { path, status: 200, .. } if path == "/boot.ipxe")
        );
        assert!(matches!(
            &ev[1].kind,
            EventKind::HttpRequest { status: 404, .. }
        ));
        h.stop().await;
        let log = std::fs::read_to_string(dir.join("http.log")).unwrap();
        assert!(
            log.contains("GET /boot.ipxe 200") && log.contains("GET /nope 404"),
            "{log}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
