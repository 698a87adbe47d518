//! The lab's services, real and started per run: dnsmasq for DHCP, an in-process HTTP server for
//! boot scripts, and tgtd for iSCSI. Each binds only to the lab bridge or its address, inside the
//! namespaces the lab made; nothing here creates a namespace or touches a host interface.
//!
//! Every child process is tied to the harness: killed when its handle is dropped, sent SIGKILL by
//! the kernel when the thread that started it dies, and never given the harness's stdio (the
//! harness runs under `cargo test`, whose output must stay readable).

pub mod chain;
pub mod dhcp;
pub mod dnsmasq_records;
pub mod events;
pub mod http;
pub mod iscsi;
pub mod iscsi_proxy;
pub mod iscsi_session;
pub mod outage;
mod portals;
mod restart;
pub mod tftp;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::Mutex;
use tracing::Instrument;

use crate::scenario::{Scenario, Service};
use crate::services::events::{EventKind, EventLog};
use crate::services::iscsi_proxy::LoginFaults;

/// Where the services run and what they serve, as the lab set it up.
#[derive(Clone)]
pub struct ServiceContext {
    /// The lab bridge, e.g. `nbr0`, inside the lab's network namespace.
    pub bridge: String,
    /// The harness's address on the bridge (`scenario.subnet.server()`).
    pub server_ip: Ipv4Addr,
    /// Artifacts go here.
    pub run_dir: PathBuf,
    /// The per-run copy of the disk image, exported as the LUN.
    pub disk: PathBuf,
    /// A fleet: each node's own disk (see [`crate::image::node_disks`]); empty otherwise.
    pub node_disks: BTreeMap<String, PathBuf>,
    pub events: Arc<EventLog>,
}

impl ServiceContext {
    /// The disk `node`'s target exports: its own in a fleet, else the run's one disk.
    pub fn disk_of(&self, node: Option<&str>) -> &Path {
        node.and_then(|n| self.node_disks.get(n))
            .map(PathBuf::as_path)
            .unwrap_or(&self.disk)
    }
}

/// Choices a scenario may change; [`Default`] is what a normal run wants.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// Answer IPv6 router solicitations on the bridge (and give it a unique-local prefix if it
    /// has none). Without router advertisements iPXE's automatic configuration waits about 13 s
    /// for IPv6 after DHCPv4 is long done; `false` reproduces that slow default.
    pub ipv6_ra: bool,
    /// Put the login-recording proxy ([`crate::services::iscsi_proxy`]) on `<server_ip>:3260` with this
    /// fault plan, and tgtd behind it on the namespace's loopback. The proxy then records every
    /// login attempt, failed ones included; every scenario run has it. `None`: tgtd listens on
    /// `<server_ip>:3260` itself, nothing of the harness is between the guest and the target,
    /// and no login is recorded (`bench`'s bare arm, which only times a console text).
    pub login_proxy: Option<LoginFaults>,
    /// Where HTTP listens; `None` means `<server_ip>:80`. Tests use an ephemeral loopback port.
    pub http_listen: Option<SocketAddr>,
    /// tgtd's control port to try first (`tgtadm -C <port>`, 0..=32767); `None` picks one at
    /// random. If another tgtd holds it the next candidate is used; see
    /// [`Services::tgtd_control_port`] for the one in use.
    pub tgtd_control_port: Option<u16>,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            ipv6_ra: true,
            login_proxy: None,
            http_listen: None,
            tgtd_control_port: None,
        }
    }
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ServiceError {
    #[error("{service}: `{binary}` is not installed")]
    #[diagnostic(
        code(services::missing_binary),
        help("install the Debian package {package}: apt-get install {package}")
    )]
    MissingBinary {
        service: &'static str,
        binary: &'static str,
        package: &'static str,
    },

    #[error("{service}: cannot start `{command}`: {source}")]
    #[diagnostic(code(services::spawn))]
    Spawn {
        service: &'static str,
        command: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{service}: `{command}` exited ({status}) before it was ready; last lines of {log}:\n{log_tail}")]
    #[diagnostic(code(services::exited))]
    Exited {
        service: &'static str,
        command: String,
        status: String,
        log: String,
        log_tail: String,
    },

    #[error("{service}: `{command}` was not ready: {what}; last lines of {log}:\n{log_tail}")]
    #[diagnostic(code(services::not_ready))]
    NotReady {
        service: &'static str,
        command: String,
        /// What we waited for, and how long.
        what: String,
        log: String,
        log_tail: String,
    },

    #[error("iscsi: `{command}` failed: {output}")]
    #[diagnostic(
        code(services::tgtadm),
        help(
            "every tgtadm command and its output is in {log}; tgtd's own messages are in tgtd.log"
        )
    )]
    Tgtadm {
        command: String,
        output: String,
        log: String,
    },

    #[error("{service}: {what}: {source}")]
    #[diagnostic(code(services::io))]
    Io {
        service: &'static str,
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{service}: {message}")]
    #[diagnostic(code(services::setup))]
    Setup {
        service: &'static str,
        message: String,
    },
}

/// DHCP as it stands: running, or waiting for its late start.
enum DhcpSlot {
    Running(Box<dhcp::Dhcp>),
    Pending {
        task: tokio::task::JoinHandle<Result<dhcp::Dhcp, ServiceError>>,
        run_dir: PathBuf,
    },
}

impl DhcpSlot {
    async fn stop(self) {
        match self {
            DhcpSlot::Running(d) => d.stop().await,
            DhcpSlot::Pending { task, .. } if task.is_finished() => {
                if let Ok(Ok(d)) = task.await {
                    d.stop().await;
                }
            }
            // Aborting drops a half-started dnsmasq, whose handle kills it.
            DhcpSlot::Pending { task, .. } => task.abort(),
        }
    }
}

/// The first state a service's record shows: up, or down until its plan starts it.
fn initial_state(start_after: Option<Duration>) -> String {
    match start_after {
        Some(d) => outage::down_state(d.as_secs_f64()),
        None => "started".into(),
    }
}

/// The three services of one run. Each sits behind a lock so that a `restart` step can stop
/// and start it while the run goes on.
pub struct Services {
    /// Shared with the task that applies DHCP's down windows.
    dhcp: Arc<Mutex<Option<DhcpSlot>>>,
    /// Stops and starts dnsmasq at its down windows; ended before DHCP is stopped for good.
    dhcp_windows: Option<tokio::task::JoinHandle<()>>,
    http: Mutex<Option<http::Http>>,
    iscsi: Mutex<iscsi::Iscsi>,
    events: Arc<EventLog>,
    /// What starting a service again needs: the same scenario, places and options.
    again: Again,
    http_addr: SocketAddr,
    control_port: u16,
    /// The login proxy is in front of tgtd and writes `iscsi-logins.jsonl`.
    login_records: bool,
}

#[derive(Clone)]
struct Again {
    scenario: Scenario,
    cx: ServiceContext,
    ipv6_ra: bool,
}

impl Services {
    /// Starts DHCP, HTTP and iSCSI for the scenario with the default options; returns once each
    /// is ready to answer.
    pub async fn start(scenario: &Scenario, cx: ServiceContext) -> Result<Services, ServiceError> {
        Self::start_with(scenario, cx, ServiceOptions::default()).await
    }

    /// Starts every service; on any failure the ones already started are stopped again.
    ///
    /// DHCP comes last: once it answers, a guest learns the boot URL and the iSCSI portal and
    /// will use them at once, so they must already be up.
    pub async fn start_with(
        scenario: &Scenario,
        cx: ServiceContext,
        opts: ServiceOptions,
    ) -> Result<Services, ServiceError> {
        let events = cx.events.clone();
        let run_dir = cx.run_dir.clone();
        let iscsi = iscsi::Iscsi::start(
            scenario,
            &cx,
            opts.login_proxy.clone(),
            opts.tgtd_control_port,
        )
        .instrument(tracing::info_span!("iscsi", target = %scenario.iscsi.target))
        .await
        .inspect_err(|e| events.push(service_event("iscsi", &failed(e))))?;
        events.push(service_event(
            "iscsi",
            &initial_state(scenario.iscsi.start_after),
        ));

        let listen = opts
            .http_listen
            .unwrap_or_else(|| SocketAddr::from((cx.server_ip, 80)));
        let http = match http::Http::start(scenario, &cx, listen)
            .instrument(tracing::info_span!("http", %listen))
            .await
        {
            Ok(h) => h,
            Err(e) => {
                events.push(service_event("http", &failed(&e)));
                iscsi.stop().await;
                events.push(service_event("iscsi", "stopped"));
                return Err(e);
            }
        };
        events.push(service_event(
            "http",
            &initial_state(scenario.http.start_after),
        ));

        if let Some(after) = scenario.dhcp.start_after {
            // dnsmasq is not running at all until its time: a DHCP server that is down.
            events.push(service_event("dhcp", &initial_state(Some(after))));
            let again = Again {
                scenario: scenario.clone(),
                cx: cx.clone(),
                ipv6_ra: opts.ipv6_ra,
            };
            let scenario = scenario.clone();
            let late_events = events.clone();
            let start_at = after.as_secs_f64();
            let pending = crate::support::tasks::spawn(
                "dhcp-late-start",
                async move {
                    cx.events.clock().sleep_until(start_at).await;
                    let started = dhcp::Dhcp::start(&scenario, &cx, opts.ipv6_ra).await;
                    match &started {
                        Ok(_) => late_events.push(service_event("dhcp", "started")),
                        Err(e) => late_events.push(service_event("dhcp", &failed(e))),
                    }
                    started
                }
                .instrument(tracing::info_span!("dhcp", late = true)),
            );
            return Ok(Services::assemble(
                DhcpSlot::Pending {
                    task: pending,
                    run_dir: run_dir.clone(),
                },
                http,
                iscsi,
                events,
                again,
            ));
        }

        let dhcp = match dhcp::Dhcp::start(scenario, &cx, opts.ipv6_ra)
            .instrument(tracing::info_span!("dhcp", bridge = %cx.bridge))
            .await
        {
            Ok(d) => DhcpSlot::Running(Box::new(d)),
            Err(e) => {
                events.push(service_event("dhcp", &failed(&e)));
                http.stop().await;
                events.push(service_event("http", "stopped"));
                iscsi.stop().await;
                events.push(service_event("iscsi", "stopped"));
                return Err(e);
            }
        };
        events.push(service_event("dhcp", "started"));
        let again = Again {
            scenario: scenario.clone(),
            cx,
            ipv6_ra: opts.ipv6_ra,
        };
        Ok(Services::assemble(dhcp, http, iscsi, events, again))
    }

    fn assemble(
        dhcp: DhcpSlot,
        http: http::Http,
        iscsi: iscsi::Iscsi,
        events: Arc<EventLog>,
        again: Again,
    ) -> Services {
        let dhcp = Arc::new(Mutex::new(Some(dhcp)));
        let dhcp_windows = (!again.scenario.dhcp.down.is_empty()).then(|| {
            crate::support::tasks::spawn(
                "dhcp-down-windows",
                dhcp_down_windows(dhcp.clone(), again.clone())
                    .instrument(tracing::info_span!("dhcp", windows = true)),
            )
        });
        Services {
            http_addr: http.addr,
            control_port: iscsi.control_port(),
            login_records: iscsi.records_logins(),
            dhcp,
            dhcp_windows,
            http: Mutex::new(Some(http)),
            iscsi: Mutex::new(iscsi),
            events,
            again,
        }
    }

    /// Stops everything, DHCP first so no guest gets a new lease pointing at a service that is
    /// going away. tgtd is really gone when this returns. Returns the artifacts written.
    pub async fn stop(self) -> Vec<PathBuf> {
        let artifacts = self.artifacts();
        let Services {
            dhcp,
            dhcp_windows,
            http,
            iscsi,
            events,
            ..
        } = self;
        // First, so that no window starts dnsmasq again behind the stop; awaited, so that a
        // start it was in the middle of is dropped (and its dnsmasq killed) before we go on.
        if let Some(task) = dhcp_windows {
            task.abort();
            let _ = task.await;
        }
        let dhcp = Arc::try_unwrap(dhcp)
            .map(Mutex::into_inner)
            .unwrap_or_else(|shared| {
                // The window task is gone, so this is the only holder left; take the slot.
                shared.try_lock().ok().and_then(|mut s| s.take())
            });
        if let Some(dhcp) = dhcp {
            dhcp.stop().instrument(tracing::info_span!("dhcp")).await;
        }
        events.push(service_event("dhcp", "stopped"));
        if let Some(http) = http.into_inner() {
            http.stop().instrument(tracing::info_span!("http")).await;
        }
        events.push(service_event("http", "stopped"));
        iscsi
            .into_inner()
            .stop()
            .instrument(tracing::info_span!("iscsi"))
            .await;
        events.push(service_event("iscsi", "stopped"));
        artifacts.into_iter().filter(|p| p.exists()).collect()
    }

    /// Artifact paths (logs, rendered configs, records) for the report. Some appear only once a
    /// service has had something to write.
    pub fn artifacts(&self) -> Vec<PathBuf> {
        // Every service keeps its files in the run directory under fixed names, so the list
        // does not depend on whether a restart holds a lock right now.
        let run_dir = &self.again.cx.run_dir;
        let mut out = dhcp::artifact_paths(run_dir);
        out.push(http::log_path(run_dir));
        out.extend(iscsi::artifact_paths(run_dir, self.login_records));
        out
    }

    /// Resolves when dnsmasq or tgtd has ended without the harness stopping it, with what
    /// happened; also when a late DHCP start failed. Each service is looked at under its lock,
    /// so a `restart` step (which holds it from stop to start) is never taken for a death, and
    /// the end of the run stops the services only after the steps stopped watching.
    pub async fn died(&self) -> String {
        loop {
            tokio::time::sleep(WATCH_EVERY).await;
            if let Some((service, what)) = self.death().await {
                self.events
                    .push(service_event(service, &format!("died: {what}")));
                tracing::error!(service, %what, "service died");
                return format!("service died: {service}: {what}");
            }
        }
    }

    /// The first service found dead: its name and what happened.
    async fn death(&self) -> Option<(&'static str, String)> {
        {
            let mut slot = self.dhcp.lock().await;
            let late_done =
                matches!(&*slot, Some(DhcpSlot::Pending { task, .. }) if task.is_finished());
            if late_done {
                // The late start is over: from now on dnsmasq is watched like any other.
                if let Some(DhcpSlot::Pending { task, .. }) = slot.take() {
                    match task.await {
                        Ok(Ok(d)) => *slot = Some(DhcpSlot::Running(Box::new(d))),
                        Ok(Err(e)) => {
                            return Some((SERVICE_DHCP, format!("its late start failed: {e}")))
                        }
                        Err(e) => {
                            return Some((SERVICE_DHCP, format!("its late start ended: {e}")))
                        }
                    }
                }
            }
            if let Some(DhcpSlot::Running(d)) = slot.as_mut() {
                if let Some(how) = d.exited() {
                    return Some((SERVICE_DHCP, format!("dnsmasq {how}")));
                }
            }
        }
        let how = self.iscsi.lock().await.exited()?;
        Some(("iscsi", format!("tgtd {how}")))
    }

    /// The port tgtd's control socket uses (`tgtadm -C <port>`), for debugging by hand. A
    /// restart keeps it.
    pub fn tgtd_control_port(&self) -> u16 {
        self.control_port
    }

    /// Where HTTP actually listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// One of the lab's iSCSI portals dies for the rest of the run (a `portal_down` step).
    pub async fn portal_down(
        &self,
        which: crate::scenario::Portal,
    ) -> Result<String, ServiceError> {
        self.iscsi.lock().await.portal_down(which, &self.events)
    }

    /// Adds `host` to the running DHCP server's hosts file and has it read the file again.
    pub async fn add_dhcp_host(
        &self,
        host: &crate::scenario::DhcpHost,
    ) -> Result<String, ServiceError> {
        let slot = self.dhcp.lock().await;
        match slot.as_ref() {
            Some(DhcpSlot::Running(d)) => d.add_host(host),
            _ => Err(ServiceError::Setup {
                service: SERVICE_DHCP,
                message: format!(
                    "cannot add host {}: the DHCP server is not running now",
                    host.mac
                ),
            }),
        }
    }

    /// The disk `node`'s target exports.
    pub fn lun_file(&self, node: &str) -> &Path {
        self.again.cx.disk_of(Some(node))
    }
}

const SERVICE_DHCP: &str = "dhcp";

/// How often [`Services::died`] looks: a dead service fails the run within this.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// DHCP's down windows: dnsmasq is stopped at each window's start and started again, with its
/// leases, at its end; both recorded as DHCP's state. A DHCP server that is down is simply not
/// running, so the requests it misses leave no record of their own (the guest's console shows
/// them).
async fn dhcp_down_windows(slot: Arc<Mutex<Option<DhcpSlot>>>, again: Again) {
    let Again {
        scenario,
        cx,
        ipv6_ra,
    } = again;
    let events = cx.events.clone();
    let sleep_until = |t: f64| events.clock().sleep_until(t);
    for w in &scenario.dhcp.down {
        let until = w.until().as_secs_f64();
        sleep_until(w.at.as_secs_f64()).await;
        {
            let mut s = slot.lock().await;
            if let Some(running) = s.take() {
                running.stop().await;
            }
        }
        events.push(service_event(
            SERVICE_DHCP,
            &format!("down until {until:.0}s (down window)"),
        ));
        tracing::info!("dnsmasq stopped until {until:.1}s (down window)");
        sleep_until(until).await;
        let mut s = slot.lock().await;
        if s.is_some() {
            // A `restart` step during the window started it already.
            events.push(service_event(SERVICE_DHCP, "started"));
            continue;
        }
        match dhcp::Dhcp::start(&scenario, &cx, ipv6_ra).await {
            Ok(d) => {
                *s = Some(DhcpSlot::Running(Box::new(d)));
                events.push(service_event(SERVICE_DHCP, "started"));
            }
            Err(e) => {
                tracing::warn!("dnsmasq did not start again after its down window: {e}");
                events.push(service_event(SERVICE_DHCP, &failed(&e)));
                return;
            }
        }
    }
}

fn service_event(service: &str, state: &str) -> EventKind {
    EventKind::Service {
        service: service.into(),
        state: state.into(),
    }
}

fn failed(e: &ServiceError) -> String {
    // The whole error is in the verdict; the timeline only needs its first line.
    let text = e.to_string();
    format!("failed: {}", text.lines().next().unwrap_or_default())
}

/// The last `n` lines of a log file, for error messages.
pub(crate) fn log_tail(p: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A command line as a person would type it, for logs and error messages.
pub(crate) fn command_line(program: &Path, args: &[String]) -> String {
    let mut out = program.display().to_string();
    for a in args {
        out.push(' ');
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
            out.push('\'');
            out.push_str(&a.replace('\'', r"'\''"));
            out.push('\'');
        } else {
            out.push_str(a);
        }
    }
    out
}

/// Finds a service's binary, naming the Debian package when it is missing.
pub(crate) fn find_binary(
    service: &'static str,
    binary: &'static str,
    package: &'static str,
) -> Result<PathBuf, ServiceError> {
    crate::support::tools::find(binary).ok_or(ServiceError::MissingBinary {
        service,
        binary,
        package,
    })
}

/// A child's command with the settings every service process needs.
pub(crate) fn service_command(program: &Path, args: &[String]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
    // No process_group(0): the children must stay in the lab's PID namespace and session so
    // that they die with it. The parent-death signal covers a harness killed outright, which
    // runs no Drop.
    crate::support::process::die_with_parent(&mut cmd);
    cmd
}

#[cfg(test)]
mod tests;
