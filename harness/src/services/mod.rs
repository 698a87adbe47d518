//! The lab's services, real and started per run: dnsmasq for DHCP, an in-process HTTP server for
//! boot scripts, and tgtd for iSCSI behind a login-recording proxy. Each binds only to the lab
//! bridge's address (tgtd to loopback, reached through the proxy), inside the run's namespace.

pub mod dhcp;
pub mod http;
pub mod iscsi;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::events::{EventKind, EventLog};
use crate::scenario::Scenario;

pub struct ServiceContext {
    pub bridge: String,
    pub server_ip: Ipv4Addr,
    pub run_dir: PathBuf,
    /// The per-run copy of the disk image, exported as the LUN.
    pub disk: PathBuf,
    pub events: Arc<EventLog>,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ServiceError {
    #[error("{service}: cannot start `{program}`: {source}")]
    Spawn {
        service: &'static str,
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{service} did not come up: {message}\n{log_tail}")]
    NotReady {
        service: &'static str,
        message: String,
        log_tail: String,
    },
    #[error("{service}: {message}")]
    Other {
        service: &'static str,
        message: String,
    },
}

pub struct Services {
    dhcp: dhcp::Dhcp,
    http: http::Http,
    iscsi: iscsi::Iscsi,
    events: Arc<EventLog>,
}

impl Services {
    /// Starts every service and returns once each can answer.
    pub async fn start(scenario: &Scenario, cx: ServiceContext) -> Result<Services, ServiceError> {
        let span = tracing::info_span!("services");
        let _g = span.enter();
        let iscsi = iscsi::Iscsi::start(scenario, &cx).await?;
        cx.events.push(service_event("iscsi", "started"));
        let http = match http::Http::start(scenario, &cx).await {
            Ok(h) => h,
            Err(e) => {
                iscsi.stop().await;
                return Err(e);
            }
        };
        cx.events.push(service_event("http", "started"));
        let dhcp = match dhcp::Dhcp::start(scenario, &cx).await {
            Ok(d) => d,
            Err(e) => {
                http.stop().await;
                iscsi.stop().await;
                return Err(e);
            }
        };
        cx.events.push(service_event("dhcp", "started"));
        Ok(Services {
            dhcp,
            http,
            iscsi,
            events: cx.events.clone(),
        })
    }

    /// Stops everything; tgtd is really gone when this returns.
    pub async fn stop(self) {
        self.dhcp.stop().await;
        self.events.push(service_event("dhcp", "stopped"));
        self.http.stop().await;
        self.events.push(service_event("http", "stopped"));
        self.iscsi.stop().await;
        self.events.push(service_event("iscsi", "stopped"));
    }
}

fn service_event(service: &str, state: &str) -> EventKind {
    EventKind::Service {
        service: service.into(),
        state: state.into(),
    }
}

/// The last lines of a log file, for error messages.
pub(crate) fn log_tail(p: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
