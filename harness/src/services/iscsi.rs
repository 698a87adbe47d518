//! iSCSI: tgtd exports the run's disk copy as one target with one LUN.
//!
//! tgtd's portal is the bridge address, or, with the login proxy, the namespace's loopback.
//! Its control socket is `/var/run/tgtd/socket.<port>`; every run picks its own control port, so
//! parallel runs never reach each other's tgtd even without a private /run.
//!
//! Logins are recorded by the login proxy ([`crate::services::iscsi_proxy`]) in front of tgtd, which sees
//! every attempt, failed ones too; every scenario run has it. Without it (`bench`'s bare arm)
//! the guest talks to tgtd directly and nothing records logins: that arm only times a console
//! text, and relaying its bytes through the proxy would time the proxy too.
//!
//! Measured on tgt 1.0.85: tgtd ignores SIGTERM (with or without targets), and
//! `--op delete --mode system` is refused ("invalid request", `--force` or not) while a target
//! exists. Stopping therefore deletes the target with `--force` (which also drops sessions),
//! then the system, and falls back to SIGKILL.

use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::{command_line, find_binary, log_tail, service_command, ServiceContext, ServiceError};
use crate::scenario::Scenario;
use crate::services::events::{EventKind, EventLog};
use crate::services::iscsi_proxy::{IscsiProxy, LoginFaults};
use crate::support::process::Owned;

pub(super) const SERVICE: &str = "iscsi";
pub const PORTAL_PORT: u16 = 3260;
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const TGTADM_TIMEOUT: Duration = Duration::from_secs(10);
/// Where tgt 1.0.85 puts its control sockets (seen: `/var/run/tgtd/socket.<port>` and
/// `socket.<port>.lock`).
const SOCKET_DIR: &str = "/var/run/tgtd";
const PORT_ATTEMPTS: usize = 8;
/// tgtd 1.0.85 refuses `-C` above 32767 ("out of range", exit 34); 0 is the host default.
const PORT_BASE: u16 = 1_000;
const PORT_SPAN: u64 = 31_000;

pub struct Iscsi {
    /// tgtd; `None` only for the moment of a restart.
    child: Option<Owned>,
    tgtadm: Tgtadm,
    /// Where tgtd listens: kept so that a restart puts it back in the same place.
    portal: SocketAddr,
    /// The login proxy on each of the lab's portals (the first at the server address, then
    /// `second_portal`'s); empty without the proxy.
    pub(super) proxies: Vec<(crate::scenario::Portal, IscsiProxy)>,
    log: PathBuf,
    pub(super) logins: PathBuf,
    /// How many targets tgtd exports (tids 1..=targets), for the stop.
    targets: usize,
}

/// Whether the show output has `target` with `lun` backed by `disk`.
pub fn has_lun(text: &str, target: &str, lun: u8, disk: &Path) -> bool {
    let mut in_target = false;
    let mut in_lun = false;
    let want_lun = format!("LUN: {lun}");
    let want_path = format!("Backing store path: {}", disk.display());
    for raw in text.lines() {
        let line = raw.trim();
        if let Some(rest) = raw.strip_prefix("Target ") {
            in_target = rest
                .split_once(": ")
                .is_some_and(|(_, name)| name.trim() == target);
            in_lun = false;
        } else if line.starts_with("LUN: ") {
            in_lun = in_target && line == want_lun;
        } else if in_lun && line == want_path {
            return true;
        }
    }
    false
}

/// tgtadm bound to one tgtd; every configuration command is logged with its output.
#[derive(Clone)]
struct Tgtadm {
    program: PathBuf,
    port: u16,
    log: PathBuf,
}

impl Tgtadm {
    fn argv(&self, args: &[&str]) -> Vec<String> {
        let mut a = vec!["-C".to_string(), self.port.to_string()];
        a.extend(args.iter().map(|s| s.to_string()));
        a
    }

    /// Runs without logging: the readiness probe runs many times.
    async fn query(&self, args: &[&str]) -> Result<String, String> {
        let argv = self.argv(args);
        let mut cmd = service_command(&self.program, &argv);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let out = match tokio::time::timeout(TGTADM_TIMEOUT, cmd.output()).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return Err(format!("cannot run tgtadm: {e}")),
            // kill_on_drop ends the tgtadm that did not answer.
            Err(_) => return Err(format!("no answer within {TGTADM_TIMEOUT:?}")),
        };
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            Err(format!("{} ({}){stdout}", stderr.trim(), out.status))
        }
    }

    /// Runs and appends the command line and its result to tgtadm.log.
    async fn run(&self, args: &[&str]) -> Result<String, ServiceError> {
        let r = self.query(args).await;
        let command = command_line(&self.program, &self.argv(args));
        self.note(&command, &r);
        r.map_err(|output| ServiceError::Tgtadm {
            command,
            output,
            log: self.log.display().to_string(),
        })
    }

    fn note(&self, command: &str, r: &Result<String, String>) {
        let text = match r {
            Ok(out) => format!("$ {command}\n{out}"),
            Err(e) => format!("$ {command}\nFAILED: {e}\n"),
        };
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
        {
            let _ = f.write_all(text.as_bytes());
        }
    }
}

/// Control ports to try: `first` if given, then random ones. A run that finds its port taken
/// by another tgtd moves on to the next.
fn control_ports(first: Option<u16>) -> impl Iterator<Item = u16> {
    // RandomState is seeded from the OS; good enough to spread parallel runs.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let start = h.finish() % PORT_SPAN;
    let random = (0..PORT_ATTEMPTS as u64)
        .map(move |i| PORT_BASE + ((start + i * 7_919) % PORT_SPAN) as u16);
    first
        .into_iter()
        .chain(random.filter(move |p| Some(*p) != first))
        .take(PORT_ATTEMPTS)
}

/// Who answers on the control socket: tgtd reports its pid through the socket's peer
/// credentials, which tells our tgtd from another run's that holds the same port.
pub(crate) async fn socket_owner(port: u16) -> Option<i32> {
    let path = Path::new(SOCKET_DIR).join(format!("socket.{port}"));
    let s = tokio::net::UnixStream::connect(&path).await.ok()?;
    s.peer_cred().ok()?.pid()
}

enum TgtdStart {
    Ready(Owned),
    PortTaken,
}

async fn start_tgtd(
    program: &Path,
    tgtadm: &Tgtadm,
    portal: SocketAddr,
    log: &Path,
) -> Result<TgtdStart, ServiceError> {
    let args: Vec<String> = vec![
        "-f".into(),
        "-C".into(),
        tgtadm.port.to_string(),
        "--iscsi".into(),
        format!("portal={portal}"),
    ];
    let command = command_line(program, &args);
    let io = |source| ServiceError::Io {
        service: SERVICE,
        what: log.display().to_string(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io)?;
    writeln!(file, "netboot-harness: starting `{command}`").map_err(io)?;
    let err_file = file.try_clone().map_err(io)?;
    let mut cmd = service_command(program, &args);
    cmd.stdout(Stdio::from(file)).stderr(Stdio::from(err_file));
    let (child, _) = Owned::spawn("tgtd", &mut cmd).map_err(|source| ServiceError::Spawn {
        service: SERVICE,
        command: command.clone(),
        source,
    })?;
    let pid = child.pid().and_then(|p| i32::try_from(p).ok());
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(ended) = child.has_ended() {
            let tail = log_tail(log, 10);
            if tail.contains(&format!(
                "another tgtd is using {SOCKET_DIR}/socket.{}",
                tgtadm.port
            )) {
                return Ok(TgtdStart::PortTaken);
            }
            return Err(ServiceError::Exited {
                service: SERVICE,
                command,
                status: ended.how,
                log: log.display().to_string(),
                log_tail: tail,
            });
        }
        if tgtadm
            .query(&["--lld", "iscsi", "--op", "show", "--mode", "system"])
            .await
            .is_ok()
        {
            match socket_owner(tgtadm.port).await {
                Some(owner) if Some(owner) == pid => return Ok(TgtdStart::Ready(child)),
                // Another tgtd holds this port; ours is about to fail on its lock file.
                Some(_) => {}
                None => {
                    tracing::warn!(
                        "tgtd answers but {SOCKET_DIR}/socket.{} is not there; cannot check it is ours",
                        tgtadm.port
                    );
                    return Ok(TgtdStart::Ready(child));
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            child.stop(Duration::ZERO).await;
            return Err(ServiceError::NotReady {
                service: SERVICE,
                command,
                what: format!("tgtadm got no answer on the control port within {READY_TIMEOUT:?}"),
                log: log.display().to_string(),
                log_tail: log_tail(log, 10),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Iscsi {
    /// `first_port`: the control port to try first (random when `None`).
    pub async fn start(
        s: &Scenario,
        cx: &ServiceContext,
        login_proxy: Option<LoginFaults>,
        first_port: Option<u16>,
    ) -> Result<Iscsi, ServiceError> {
        let tgtd = find_binary(SERVICE, "tgtd", "tgt")?;
        let program = find_binary(SERVICE, "tgtadm", "tgt")?;
        let log = cx.run_dir.join("tgtd.log");
        let adm_log = cx.run_dir.join("tgtadm.log");
        let logins = cx.run_dir.join("iscsi-logins.jsonl");
        for f in [&log, &adm_log] {
            std::fs::write(f, b"").map_err(|source| ServiceError::Io {
                service: SERVICE,
                what: f.display().to_string(),
                source,
            })?;
        }
        // With the proxy in front, tgtd must not hold the bridge address's port itself; the
        // namespace's own loopback is reachable from nowhere else.
        let portal = match login_proxy {
            Some(_) => SocketAddr::from((Ipv4Addr::LOCALHOST, PORTAL_PORT)),
            None => SocketAddr::from((cx.server_ip, PORTAL_PORT)),
        };

        let mut started = None;
        for port in control_ports(first_port) {
            let tgtadm = Tgtadm {
                program: program.clone(),
                port,
                log: adm_log.clone(),
            };
            match start_tgtd(&tgtd, &tgtadm, portal, &log).await? {
                TgtdStart::Ready(child) => {
                    started = Some((child, tgtadm));
                    break;
                }
                TgtdStart::PortTaken => {
                    tracing::info!(port, "tgtd control port taken, trying another");
                }
            }
        }
        let Some((child, tgtadm)) = started else {
            return Err(ServiceError::Setup {
                service: SERVICE,
                message: format!(
                    "every control port tried ({PORT_ATTEMPTS}) is held by another tgtd; see {}",
                    log.display()
                ),
            });
        };
        tracing::debug!(port = tgtadm.port, pid = ?child.pid(), "tgtd answers");

        let mut this = Iscsi {
            child: Some(child),
            tgtadm,
            portal,
            proxies: Vec::new(),
            log,
            logins,
            targets: s.iscsi.exports().len(),
        };
        if let Err(e) = this.configure(s, cx, login_proxy).await {
            this.stop().await;
            return Err(e);
        }
        tracing::info!(
            target = %s.iscsi.target,
            lun = s.iscsi.lun,
            %portal,
            control_port = this.tgtadm.port,
            "iscsi up"
        );
        Ok(this)
    }

    async fn configure(
        &mut self,
        s: &Scenario,
        cx: &ServiceContext,
        login_proxy: Option<LoginFaults>,
    ) -> Result<(), ServiceError> {
        self.configure_target(s, cx).await?;
        self.start_proxy(s, cx, login_proxy).await
    }

    /// Each target (one, or one per node of a fleet), its LUN on its disk, and its ACL;
    /// checked with `show`.
    async fn configure_target(
        &self,
        s: &Scenario,
        cx: &ServiceContext,
    ) -> Result<(), ServiceError> {
        let adm = &self.tgtadm;
        let lun = s.iscsi.lun.to_string();
        adm.run(&["--lld", "iscsi", "--op", "show", "--mode", "system"])
            .await?;
        let exports = s.iscsi.exports();
        for (i, export) in exports.iter().enumerate() {
            let tid = (i + 1).to_string();
            let disk = cx.disk_of(export.node.as_deref());
            let disk_text = disk.display().to_string();
            let target = export.target.as_str();
            adm.run(&[
                "--lld", "iscsi", "--op", "new", "--mode", "target", "--tid", &tid, "-T", target,
            ])
            .await?;
            adm.run(&[
                "--lld",
                "iscsi",
                "--op",
                "new",
                "--mode",
                "logicalunit",
                "--tid",
                &tid,
                "--lun",
                &lun,
                "-b",
                &disk_text,
            ])
            .await?;
            if export.initiators.is_empty() {
                adm.run(&[
                    "--lld", "iscsi", "--op", "bind", "--mode", "target", "--tid", &tid, "-I",
                    "ALL",
                ])
                .await?;
            }
            // tgtd's own initiator-name ACL: no address rule, so only these names get in.
            for iqn in &export.initiators {
                adm.run(&[
                    "--lld",
                    "iscsi",
                    "--op",
                    "bind",
                    "--mode",
                    "target",
                    "--tid",
                    &tid,
                    "-Q",
                    iqn.as_str(),
                ])
                .await?;
            }
            let shown = adm
                .run(&["--lld", "iscsi", "--op", "show", "--mode", "target"])
                .await?;
            if !has_lun(&shown, target, s.iscsi.lun, disk) {
                return Err(ServiceError::Setup {
                    service: SERVICE,
                    message: format!(
                        "tgtd does not list target {target} with LUN {} backed by {disk_text} (see {})",
                        s.iscsi.lun,
                        adm.log.display()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Stops tgtd and starts a new one on the same portal and control port with the same target
    /// and LUN. The login proxy, if any, stays: the guests' connections drop with the old tgtd,
    /// and their logins to the new one are recorded like any other.
    pub async fn restart(
        &mut self,
        s: &Scenario,
        cx: &ServiceContext,
        events: &EventLog,
        stopped: &str,
        gap: std::time::Duration,
    ) -> Result<(), ServiceError> {
        let t = std::time::Instant::now();
        if let Some(old) = self.child.take() {
            stop_tgtd(old, &self.tgtadm, self.targets).await;
        }
        tracing::info!(
            secs = t.elapsed().as_secs_f64(),
            "tgtd stopped for a restart"
        );
        events.push(EventKind::Service {
            service: SERVICE.into(),
            state: stopped.into(),
        });
        tokio::time::sleep(gap).await;
        let tgtd = find_binary(SERVICE, "tgtd", "tgt")?;
        match start_tgtd(&tgtd, &self.tgtadm, self.portal, &self.log).await? {
            TgtdStart::Ready(child) => self.child = Some(child),
            TgtdStart::PortTaken => {
                return Err(ServiceError::Setup {
                    service: SERVICE,
                    message: format!(
                        "control port {} was taken by another tgtd during the restart; see {}",
                        self.tgtadm.port,
                        self.log.display()
                    ),
                })
            }
        }
        self.configure_target(s, cx).await?;
        tracing::info!(secs = t.elapsed().as_secs_f64(), "tgtd restarted");
        Ok(())
    }

    /// Deletes the target (dropping sessions) and the system, then makes sure tgtd is gone.
    pub async fn stop(self) {
        let Iscsi {
            child,
            tgtadm,
            proxies,
            targets,
            ..
        } = self;
        for (_, p) in proxies {
            p.stop();
        }
        if let Some(child) = child {
            stop_tgtd(child, &tgtadm, targets).await;
        }
    }

    pub fn artifacts(&self) -> Vec<PathBuf> {
        let mut out = vec![self.log.clone(), self.tgtadm.log.clone()];
        if self.records_logins() {
            out.push(self.logins.clone());
        }
        out
    }

    /// Whether the login proxy is in front of tgtd, recording the logins.
    pub fn records_logins(&self) -> bool {
        !self.proxies.is_empty()
    }

    pub fn control_port(&self) -> u16 {
        self.tgtadm.port
    }

    /// How tgtd ended, if it has: nothing but [`Iscsi::stop`] and [`Iscsi::restart`] (which
    /// starts a new one) should end it.
    pub fn exited(&mut self) -> Option<String> {
        self.child.as_ref()?.has_ended().map(|e| e.how)
    }
}

/// Where the iSCSI service of a run keeps its files; `login_records`: the login proxy is in
/// front of tgtd and writes `iscsi-logins.jsonl`.
pub fn artifact_paths(run_dir: &Path, login_records: bool) -> Vec<PathBuf> {
    let mut out = vec![run_dir.join("tgtd.log"), run_dir.join("tgtadm.log")];
    if login_records {
        out.push(run_dir.join("iscsi-logins.jsonl"));
    }
    out
}

/// Deletes the target (dropping its sessions) and the system, then makes sure tgtd is gone.
async fn stop_tgtd(child: Owned, tgtadm: &Tgtadm, targets: usize) {
    if child.has_ended().is_none() {
        for tid in 1..=targets.max(1) {
            let tid = tid.to_string();
            let _ = tgtadm
                .run(&[
                    "--lld", "iscsi", "--op", "delete", "--mode", "target", "--tid", &tid,
                    "--force",
                ])
                .await;
        }
        let _ = tgtadm.run(&["--op", "delete", "--mode", "system"]).await;
    }
    // SIGTERM is for form's sake (tgtd 1.0.85 ignores it); the system delete above or the
    // SIGKILL after the grace period is what ends it.
    let ended = child.stop(Duration::from_secs(3)).await;
    tracing::debug!(?ended, "tgtd stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const LUNS: &str = "    LUN information:
        LUN: 0
            Type: controller
            SCSI ID: IET     00010000
            SCSI SN: beaf10
            Size: 0 MB, Block size: 1
            Online: Yes
            Removable media: No
            Prevent removal: No
            Readonly: No
            SWP: No
            Thin-provisioning: No
            Backing store type: null
            Backing store path: None
            Backing store flags: 
        LUN: 1
            Type: disk
            SCSI ID: IET     00010001
            SCSI SN: beaf11
            Size: 67 MB, Block size: 512
            Online: Yes
            Removable media: No
            Prevent removal: No
            Readonly: No
            SWP: No
            Thin-provisioning: No
            Backing store type: rdwr
            Backing store path: /tmp/nbh-exp/run2/disk.img
            Backing store flags: 
    Account information:
    ACL information:
        ALL
";

    /// Recorded right after configuration, before any login.
    fn recorded_no_session() -> String {
        format!(
            "Target 1: iqn.2026-11.lab:node01-root
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
{LUNS}"
        )
    }

    #[test]
    fn finds_the_lun_and_its_backing_file() {
        let t = recorded_no_session();
        let disk = Path::new("/tmp/nbh-exp/run2/disk.img");
        assert!(has_lun(&t, "iqn.2026-11.lab:node01-root", 1, disk));
        assert!(!has_lun(&t, "iqn.2026-11.lab:node01-root", 2, disk));
        assert!(!has_lun(&t, "iqn.2026-11.lab:other", 1, disk));
        assert!(!has_lun(
            &t,
            "iqn.2026-11.lab:node01-root",
            1,
            Path::new("/x.img")
        ));
        // LUN 0 is tgtd's controller, with no backing file.
        assert!(!has_lun(&t, "iqn.2026-11.lab:node01-root", 0, disk));
    }

    #[test]
    fn control_ports_are_distinct_and_in_range() {
        let ports: Vec<u16> = control_ports(None).collect();
        assert_eq!(ports.len(), PORT_ATTEMPTS);
        let set: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(set.len(), ports.len());
        assert!(
            ports.iter().all(|p| (1_000..=32_767).contains(p)),
            "{ports:?}"
        );
        let chosen: Vec<u16> = control_ports(Some(4242)).collect();
        assert_eq!(chosen[0], 4242);
        assert_eq!(chosen.len(), PORT_ATTEMPTS);
        assert_eq!(chosen.iter().filter(|p| **p == 4242).count(), 1);
    }
}
