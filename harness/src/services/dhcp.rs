//! DHCP from dnsmasq (no DNS; TFTP only for `chain-undionly` nodes), bound to the lab bridge
//! alone.
//!
//! dnsmasq logs to a pipe; each line is stamped with the run clock, written to `dnsmasq.log`
//! and, if it is a DHCP message or a finished TFTP transfer, pushed as an event.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use regex::Regex;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::ChildStderr;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::chain::ChainMarks;
use super::dnsmasq_records::{Effect, Records};
use super::ServiceError;
use super::{command_line, find_binary, log_tail, service_command, ServiceContext};
use crate::scenario::Scenario;
use crate::services::events::EventLog;
use crate::support::process::Owned;

const SERVICE: &str = "dhcp";
/// Tag of a DHCP client that says it is an x86-64 UEFI firmware (client architecture 7 or 9).
const EFI_TAG: &str = "efi64";
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_GRACE: Duration = Duration::from_secs(3);

pub struct Dhcp {
    child: Owned,
    pump: JoinHandle<()>,
    args_file: PathBuf,
    log: PathBuf,
    leases: PathBuf,
}

/// What dnsmasq needs for chaining nodes: the TFTP root, and for `chain-undionly` nodes the
/// options file with the marks ([`super::chain`]).
#[derive(Debug, Clone, Copy)]
pub struct ChainArgs<'a> {
    pub tftp_root: &'a Path,
    pub marks: Option<&'a ChainMarks>,
}

/// dnsmasq's arguments (without the program name).
pub fn args(
    s: &Scenario,
    bridge: &str,
    leasefile: &Path,
    ipv6_ra: bool,
    chain: Option<ChainArgs<'_>>,
) -> Vec<String> {
    let (lo, hi) = s.subnet.pool();
    let mask = s.subnet.netmask();
    let mut a: Vec<String> = vec![
        "--keep-in-foreground".into(),
        // Never read the host's configuration or hosts file: a stray option could make it
        // answer somewhere else or hand out other names.
        "--conf-file=/dev/null".into(),
        "--no-hosts".into(),
        "--no-resolv".into(),
        // Even in the foreground dnsmasq writes /run/dnsmasq.pid unless told not to (seen on
        // 2.90); outside a private /run that would be the host's file.
        "--pid-file=".into(),
        // Dropping to nobody/dip changes credentials, and the kernel then clears the
        // parent-death signal: a killed harness would leave dnsmasq running (seen). It stays
        // root, confined to the lab's namespaces and to DHCP. An empty group means no group
        // change at all: even `--group=root` calls setgroups, which a user namespace without
        // root (crate::support::rootless) refuses ("failed to change group-id", seen on 2.90).
        "--user=root".into(),
        "--group=".into(),
        "--port=0".into(),
        format!("--interface={bridge}"),
        "--except-interface=lo".into(),
        "--bind-interfaces".into(),
        "--log-facility=-".into(),
        "--log-dhcp".into(),
        "--dhcp-authoritative".into(),
        format!("--dhcp-leasefile={}", leasefile.display()),
        format!("--dhcp-range=set:boot,{lo},{hi},{mask},1h"),
    ];
    // The boot network's range is tagged so only it hands out the boot URL; segments with DHCP
    // get their own range on their own bridge.
    for (i, g) in s.segments.iter().enumerate().filter(|(_, g)| g.dhcp) {
        let (lo, hi) = g.subnet.pool();
        let mask = g.subnet.netmask();
        a.push(format!("--interface={}", crate::lab::segment_bridge(i)));
        a.push(format!("--dhcp-range=set:seg{},{lo},{hi},{mask},1h", i + 1));
    }
    for h in &s.dhcp.hosts {
        a.push(format!("--dhcp-host={}", host_spec(h)));
    }
    // iPXE says who it is with user class "iPXE"; only it gets the boot-script URL, so a PXE
    // stack that is not iPXE is not handed a URL it cannot fetch.
    a.push("--dhcp-userclass=set:ipxe,iPXE".into());
    // Two waits of about 3 s each, one behind the other, held every iPXE DHCP (measured with a
    // packet capture on the bridge: `Configuring` ended 3.1 to 3.4 s after the NIC opened; with
    // both options below, 1.0 s):
    // - dnsmasq pings an address before it first offers it and answers nothing until the ping
    //   times out (3 s; the DISCOVERs that arrive meanwhile are all answered at once after it).
    //   The lab's only hosts are its guests and their leases live in the run's lease file, which
    //   a restarted dnsmasq reads again: no host can hold an address dnsmasq does not know of.
    // - iPXE keeps collecting offers for ProxyDHCP (a PXE boot server) until 3 s have passed,
    //   unless the offer it takes carries its `no-pxedhcp` setting (encapsulated option 175,
    //   sub-option 176 = 1); there is no ProxyDHCP server in the lab.
    if s.dhcp.ipxe_fast_dhcp {
        a.push("--no-ping".into());
        a.push("--dhcp-option=tag:ipxe,encap:175,176,1b".into());
    }
    if let Some(c) = chain {
        // TFTP on the boot network's bridge only (the interface list above binds it to the
        // bridge's address), from a root that holds the chained iPXE images alone.
        a.push(format!("--enable-tftp={bridge}"));
        a.push(format!("--tftp-root={}", c.tftp_root.display()));
        a.push("--tftp-secure".into());
    }
    if s.chains_snponly() {
        // A UEFI firmware's own PXE says its architecture (RFC 4578: 7 and 9 are x86-64 UEFI)
        // and, unlike iPXE, no `iPXE` user class: it is handed snponly.efi, whose iPXE then
        // asks again and gets the boot URL.
        a.push(format!("--dhcp-match=set:{EFI_TAG},option:client-arch,7"));
        a.push(format!("--dhcp-match=set:{EFI_TAG},option:client-arch,9"));
        a.push(format!(
            "--dhcp-boot=tag:{EFI_TAG},tag:!ipxe,tag:boot,{}",
            super::tftp::EFI_BOOT_FILE
        ));
    }
    match chain.and_then(|c| c.marks) {
        None => a.push(format!("--dhcp-boot=tag:ipxe,tag:boot,{}", s.dhcp.boot_url)),
        Some(marks) => {
            let chain = super::chain::CHAIN_TAG;
            a.push(format!(
                "--dhcp-vendorclass=set:{},PXEClient",
                super::chain::PXE_TAG
            ));
            for (mac, tag) in marks.tags() {
                a.push(format!("--dhcp-mac=set:{chain},{mac}"));
                a.push(format!("--dhcp-mac=set:{tag},{mac}"));
            }
            // The chain nodes' boot file comes from the marks file, reread on SIGHUP.
            a.push(format!("--dhcp-optsfile={}", marks.path().display()));
            a.push(format!(
                "--dhcp-boot=tag:ipxe,tag:boot,tag:!{chain},{}",
                s.dhcp.boot_url
            ));
        }
    }
    if s.dhcp.known_only {
        // A fleet's server: a MAC nobody added gets no answer at all.
        a.push("--dhcp-ignore=tag:!known".into());
    }
    if s.adds_dhcp_hosts() {
        // Hosts added while the run goes on; dnsmasq reads the file again on SIGHUP.
        a.push(format!(
            "--dhcp-hostsfile={}",
            added_hosts_file(leasefile).display()
        ));
    }
    if ipv6_ra {
        // Without router advertisements iPXE waits ~13 s for IPv6 autoconfiguration after
        // DHCPv4 has long finished. ra-only: no DHCPv6 server.
        a.push("--enable-ra".into());
        a.push(format!("--dhcp-range=::,constructor:{bridge},ra-only"));
    }
    a
}

/// One DHCP message from dnsmasq's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpLine {
    /// `DHCPDISCOVER`, `DHCPOFFER`, `DHCPREQUEST`, `DHCPACK`, `DHCPNAK`, ...
    pub message: String,
    pub interface: String,
    /// Lower case.
    pub mac: String,
    pub ip: Option<Ipv4Addr>,
    /// The name dnsmasq gave the client (offers and acks only).
    pub hostname: Option<String>,
    /// Any other text after the MAC, e.g. a NAK's reason or `no address available`.
    pub detail: Option<String>,
    /// dnsmasq's transaction number: the option lines that follow carry it too.
    pub xid: Option<u32>,
}

/// The boot file (option 67) of one answer, from the option lines `--log-dhcp` prints after
/// the message: `(xid, file)`.
pub fn parse_boot_file(line: &str) -> Option<(u32, String)> {
    let c = BOOT_FILE_LINE.captures(line)?;
    Some((c[1].parse().ok()?, c[2].to_string()))
}

// dnsmasq 2.90: `dnsmasq-dhcp[PID]: XID sent size: 27 option: 67 bootfile-name  FILE`.
static BOOT_FILE_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\]: (\d+) sent size:\s*\d+ option: 67 bootfile-name\s+(\S+)\s*$")
        .expect("the boot-file line pattern is valid")
});

/// An IPv4 option a `--log-dhcp` line says the server sent: transaction, option code, address.
/// Only the address options the iBFT check compares are read: 1 (netmask) and 3 (router).
pub fn parse_sent_address(line: &str) -> Option<(u32, u8, Ipv4Addr)> {
    let c = ADDRESS_OPTION_LINE.captures(line)?;
    Some((c[1].parse().ok()?, c[2].parse().ok()?, c[3].parse().ok()?))
}

// dnsmasq 2.90: `dnsmasq-dhcp[PID]: XID sent size:  4 option:  3 router  10.77.0.1`.
static ADDRESS_OPTION_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\]: (\d+) sent size:\s*4 option:\s*([13]) (?:netmask|router)\s+(\d{1,3}(?:\.\d{1,3}){3})\s*$",
    )
    .expect("the address option line pattern is valid")
});

/// The transaction number a `--log-dhcp` line starts with, if it has one.
pub fn line_xid(line: &str) -> Option<u32> {
    let rest = line.split_once("]: ")?.1;
    rest.split_once(' ')?.0.parse().ok()
}

// dnsmasq 2.90 with --log-dhcp: `dnsmasq-dhcp[PID]: XID TYPE(IFACE) [IP ]MAC[ TEXT]`.
// The line may end in a space (no hostname yet).
static DHCP_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?:^|\s)(DHCP[A-Z]+)\(([^)\s]*)\)\s+(?:(\d{1,3}(?:\.\d{1,3}){3})\s+)?([0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5,})(?:\s+(.*?))?\s*$",
    )
    .expect("the DHCP line pattern is valid")
});

/// Reads a DHCP message out of a dnsmasq log line; `None` for every other line.
pub fn parse_line(line: &str) -> Option<DhcpLine> {
    let c = DHCP_LINE.captures(line)?;
    let message = c[1].to_string();
    let rest = c
        .get(5)
        .map(|m| m.as_str().trim())
        .filter(|t| !t.is_empty());
    // After the MAC dnsmasq prints the client's name on offers and acks, and free text
    // (reasons, "ignored", ...) elsewhere.
    let is_name = |t: &str| {
        !t.contains(char::is_whitespace)
            && t.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '.' || ch == '_')
    };
    let (hostname, detail) = match rest {
        Some(t) if matches!(message.as_str(), "DHCPOFFER" | "DHCPACK") && is_name(t) => {
            (Some(t.to_string()), None)
        }
        Some(t) => (None, Some(t.to_string())),
        None => (None, None),
    };
    Some(DhcpLine {
        message,
        interface: c[2].to_string(),
        mac: c[4].to_ascii_lowercase(),
        ip: c.get(3).and_then(|m| m.as_str().parse().ok()),
        hostname,
        detail,
        xid: line_xid(line),
    })
}

/// The startup line after which dnsmasq answers: it logs its startup only once its sockets
/// are bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyLine {
    /// With one interface: `DHCP, sockets bound exclusively to interface <bridge>`.
    Exclusive(String),
    /// With several (segments with DHCP) that line is not printed; the boot network's range
    /// line, `DHCP, IP range <lo> -- <hi>`, is.
    BootRange(Ipv4Addr),
}

impl ReadyLine {
    pub fn for_scenario(s: &Scenario, bridge: &str) -> ReadyLine {
        if s.segments.iter().any(|g| g.dhcp) {
            ReadyLine::BootRange(s.subnet.pool().0)
        } else {
            ReadyLine::Exclusive(bridge.to_string())
        }
    }

    pub fn matches(&self, line: &str) -> bool {
        match self {
            ReadyLine::Exclusive(bridge) => {
                line.contains("sockets bound exclusively to interface")
                    && line.trim_end().ends_with(bridge.as_str())
            }
            ReadyLine::BootRange(lo) => line.contains(&format!("DHCP, IP range {lo} -- ")),
        }
    }
}

impl std::fmt::Display for ReadyLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadyLine::Exclusive(b) => write!(f, "\"sockets bound exclusively to interface {b}\""),
            ReadyLine::BootRange(lo) => write!(f, "\"DHCP, IP range {lo} -- ...\""),
        }
    }
}

/// Whether `/proc/net/if_inet6` text lists a global-scope (unique-local counts) address on
/// `ifname`. Router advertisements are constructed from such an address.
pub fn has_global_ipv6(if_inet6: &str, ifname: &str) -> bool {
    if_inet6.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // address, ifindex, prefix length, scope, flags, name; scope 00 is global.
        f.len() == 6 && f[5] == ifname && f[3] == "00"
    })
}

/// Gives the bridge the lab's IPv6 prefix unless it already has one. Err says why RA is off.
async fn ensure_ipv6_prefix(bridge: &str) -> Result<(), String> {
    // /proc/net follows the reader's network namespace: this is the lab's view.
    let table = std::fs::read_to_string("/proc/net/if_inet6")
        .map_err(|e| format!("IPv6 looks unavailable (/proc/net/if_inet6: {e})"))?;
    if has_global_ipv6(&table, bridge) {
        return Ok(());
    }
    let ip = crate::support::tools::find("ip")
        .ok_or("`ip` (Debian package iproute2) is not installed")?;
    let args: Vec<String> = [
        "-6",
        "addr",
        "add",
        crate::lab::IPV6_SERVER,
        "dev",
        bridge,
        // Duplicate address detection would hold the address back for a second or more.
        "nodad",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = service_command(&ip, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|e| format!("`{}`: {e}", command_line(&ip, &args)))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed: {}",
            command_line(&ip, &args),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    tracing::info!(
        prefix = crate::lab::IPV6_SERVER,
        "gave the bridge an IPv6 prefix for RA"
    );
    Ok(())
}

impl Dhcp {
    pub async fn start(
        s: &Scenario,
        cx: &ServiceContext,
        ipv6_ra: bool,
    ) -> Result<Dhcp, ServiceError> {
        let program = find_binary(SERVICE, "dnsmasq", "dnsmasq-base")?;
        let log = cx.run_dir.join("dnsmasq.log");
        let args_file = cx.run_dir.join("dnsmasq.args");
        let leases = cx.run_dir.join("dnsmasq.leases");
        let io = |what: &Path| {
            let what = what.display().to_string();
            move |source| ServiceError::Io {
                service: SERVICE,
                what,
                source,
            }
        };
        // Appended to: a restarted dnsmasq keeps the messages of the one before.
        let mut log_file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .await
            .map_err(io(&log))?;

        let mut ra = ipv6_ra;
        if ipv6_ra {
            if let Err(why) = ensure_ipv6_prefix(&cx.bridge).await {
                // A slower boot is better than none, but it must be visible in the log.
                tracing::warn!(%why, "running without IPv6 router advertisements");
                let note = format!(
                    "netboot-harness: IPv6 router advertisements are off: {why} \
                     (iPXE will wait for IPv6 autoconfiguration)\n"
                );
                log_file
                    .write_all(note.as_bytes())
                    .await
                    .map_err(io(&log))?;
                ra = false;
            }
        }

        let chain = ChainMarks::for_scenario(s, &cx.run_dir);
        let snponly = s.chains_snponly();
        let setup = |e: std::io::Error| ServiceError::Setup {
            service: SERVICE,
            message: format!("TFTP for the chaining nodes: {e}"),
        };
        if let Some(c) = &chain {
            // A restarted dnsmasq starts with every node at its ROM stage again.
            c.write().map_err(setup)?;
        }
        let tftp_root = if chain.is_some() || snponly {
            Some(super::tftp::prepare_root(&cx.run_dir, chain.is_some(), snponly).map_err(setup)?)
        } else {
            None
        };
        let chain_args = tftp_root.as_deref().map(|root| ChainArgs {
            tftp_root: root,
            marks: chain.as_ref(),
        });
        if s.adds_dhcp_hosts() {
            let added = added_hosts_file(&leases);
            if !added.exists() {
                std::fs::write(&added, b"").map_err(io(&added))?;
            }
        }
        let argv = args(s, &cx.bridge, &leases, ra, chain_args);
        let mut listing = program.display().to_string();
        for a in &argv {
            listing.push('\n');
            listing.push_str(a);
        }
        listing.push('\n');
        std::fs::write(&args_file, listing).map_err(io(&args_file))?;

        let command = command_line(&program, &argv);
        let mut cmd = service_command(&program, &argv);
        // Nothing comes on stdout in the foreground; every message, fatal ones included, is on
        // stderr with --log-facility=-.
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let (child, pipes) =
            Owned::spawn("dnsmasq", &mut cmd).map_err(|source| ServiceError::Spawn {
                service: SERVICE,
                command: command.clone(),
                source,
            })?;
        let stderr = pipes.stderr;
        tracing::debug!(%command, pid = ?child.pid(), "dnsmasq spawned");

        let (ready_tx, ready_rx) = oneshot::channel();
        let mut pump = crate::support::tasks::spawn(
            "dhcp-log",
            pump(
                stderr,
                log_file,
                cx.events.clone(),
                ReadyLine::for_scenario(s, &cx.bridge),
                ready_tx,
                Records::new(chain),
                child.pid(),
            ),
        );

        let not_ready = tokio::select! {
            r = ready_rx => match r {
                Ok(()) => None,
                // The pump ended (EOF): dnsmasq is exiting; its status says how.
                Err(_) => Some(None),
            },
            ended = child.ended() => Some(Some(ended)),
            _ = tokio::time::sleep(READY_TIMEOUT) => Some(None),
        };
        if let Some(ended) = not_ready {
            let ended = match ended {
                Some(e) => Some(e),
                None => tokio::time::timeout(Duration::from_millis(500), child.ended())
                    .await
                    .ok(),
            };
            child.stop(STOP_GRACE).await;
            // Let the pump write dnsmasq's last words before quoting them.
            let _ = tokio::time::timeout(Duration::from_secs(1), &mut pump).await;
            let log_name = log.display().to_string();
            return Err(match ended {
                Some(e) => ServiceError::Exited {
                    service: SERVICE,
                    command,
                    status: e.how,
                    log: log_name,
                    log_tail: log_tail(&log, 15),
                },
                None => ServiceError::NotReady {
                    service: SERVICE,
                    command,
                    what: format!(
                        "no {} within {READY_TIMEOUT:?}",
                        ReadyLine::for_scenario(s, &cx.bridge)
                    ),
                    log: log_name,
                    log_tail: log_tail(&log, 15),
                },
            });
        }
        tracing::info!(bridge = %cx.bridge, ra, "dhcp up");
        Ok(Dhcp {
            child,
            pump,
            args_file,
            log,
            leases,
        })
    }

    /// Appends `host` to the added-hosts file and sends dnsmasq SIGHUP, on which it reads it.
    pub fn add_host(&self, host: &crate::scenario::DhcpHost) -> Result<String, ServiceError> {
        use std::io::Write;
        let file = added_hosts_file(&self.leases);
        // A hosts file line reads as a --dhcp-host value.
        let line = host_spec(host);
        let io = |source| ServiceError::Io {
            service: SERVICE,
            what: file.display().to_string(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .map_err(io)?;
        writeln!(f, "{line}").map_err(io)?;
        let pid = reread(self.child.pid()).map_err(|message| ServiceError::Setup {
            service: SERVICE,
            message,
        })?;
        tracing::info!(pid, %line, "DHCP host added");
        Ok(format!(
            "added `{line}` to {} and sent dnsmasq SIGHUP",
            file.display()
        ))
    }

    pub async fn stop(self) {
        let Dhcp {
            child, mut pump, ..
        } = self;
        let ended = child.stop(STOP_GRACE).await;
        tracing::debug!(?ended, "dnsmasq stopped");
        // EOF on the pipe ends the pump; waiting for it keeps the log complete.
        if tokio::time::timeout(Duration::from_secs(2), &mut pump)
            .await
            .is_err()
        {
            pump.abort();
        }
    }

    /// How dnsmasq ended, if it has: nothing but [`Dhcp::stop`] should end it.
    pub fn exited(&mut self) -> Option<String> {
        self.child.has_ended().map(|e| e.how)
    }

    pub fn artifacts(&self) -> Vec<PathBuf> {
        vec![
            self.args_file.clone(),
            self.log.clone(),
            self.leases.clone(),
        ]
    }
}

/// Where a DHCP server of this run keeps its files, started or not.
pub fn artifact_paths(run_dir: &Path) -> Vec<PathBuf> {
    ["dnsmasq.args", "dnsmasq.log", "dnsmasq.leases"]
        .iter()
        .map(|n| run_dir.join(n))
        .collect()
}

async fn pump(
    stderr: Option<ChildStderr>,
    mut log: tokio::fs::File,
    events: Arc<EventLog>,
    ready_line: ReadyLine,
    ready: oneshot::Sender<()>,
    mut records: Records,
    pid: Option<u32>,
) {
    let Some(stderr) = stderr else { return };
    let mut ready = Some(ready);
    let mut lines = BufReader::new(stderr).lines();
    loop {
        // dnsmasq prints a message's option lines in one burst: a quiet pipe means they are
        // all in.
        let next = if records.has_pending() {
            match tokio::time::timeout(OPTION_LINES_QUIET, lines.next_line()).await {
                Ok(l) => l,
                Err(_) => {
                    apply(records.flush(), &records, &events, pid, &mut log).await;
                    continue;
                }
            }
        } else {
            lines.next_line().await
        };
        let Ok(Some(line)) = next else { break };
        if line.trim().is_empty() {
            continue;
        }
        let at = events.clock().now();
        let stamped = format!("[{at:9.3}] {line}\n");
        let _ = log.write_all(stamped.as_bytes()).await;
        // Flushed per line: a run that is killed keeps what dnsmasq said.
        let _ = log.flush().await;
        if ready_line.matches(&line) {
            if let Some(tx) = ready.take() {
                let _ = tx.send(());
            }
        }
        let effects = records.line(at, &line);
        apply(effects, &records, &events, pid, &mut log).await;
    }
    apply(records.flush(), &records, &events, pid, &mut log).await;
}

/// How long the pipe must stay quiet before a held DHCP message is recorded.
const OPTION_LINES_QUIET: Duration = Duration::from_millis(100);

/// Records events and, when the chain marks moved, has dnsmasq read its marks file again.
async fn apply(
    effects: Vec<Effect>,
    records: &Records,
    events: &EventLog,
    pid: Option<u32>,
    log: &mut tokio::fs::File,
) {
    for e in effects {
        match e {
            Effect::Record { at, kind } => events.push_at(at, kind),
            Effect::ReloadMarks => {
                if let Err(why) = reload_marks(records, pid) {
                    // The node will loop or stall at its next DHCP: the log must say why.
                    tracing::warn!(%why, "chain marks not passed to dnsmasq");
                    let note = format!("netboot-harness: chain marks not reloaded: {why}\n");
                    let _ = log.write_all(note.as_bytes()).await;
                }
            }
        }
    }
}

/// Beside the lease file: the hosts `dhcp_add_host` steps added, one `mac,ip,name` a line. It
/// outlives a restart of dnsmasq, as an operator's hosts file does.
pub fn added_hosts_file(leasefile: &Path) -> PathBuf {
    leasefile.with_file_name("dnsmasq.hosts-added")
}

/// `MAC[,IP][,NAME]`: a host as `--dhcp-host` and a `--dhcp-hostsfile` line both take it.
fn host_spec(h: &crate::scenario::DhcpHost) -> String {
    let mut spec = h.mac.to_string();
    if let Some(ip) = h.ip {
        spec.push_str(&format!(",{ip}"));
    }
    if let Some(name) = &h.hostname {
        spec.push_str(&format!(",{name}"));
    }
    spec
}

/// Sends dnsmasq SIGHUP, on which it reads its hosts and options files again; returns its pid.
fn reread(pid: Option<u32>) -> Result<i32, String> {
    let pid = pid.ok_or("dnsmasq's pid is unknown")?;
    let pid = i32::try_from(pid).map_err(|e| format!("pid {pid}: {e}"))?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .map_err(|e| format!("SIGHUP to dnsmasq ({pid}): {e}"))?;
    Ok(pid)
}

/// Writes the chain marks file and has dnsmasq read it again.
fn reload_marks(records: &Records, pid: Option<u32>) -> Result<(), String> {
    let chain = records.chain().ok_or("no chain marks file")?;
    chain
        .write()
        .map_err(|e| format!("writing {}: {e}", chain.path().display()))?;
    let pid = reread(pid)?;
    tracing::info!(pid, file = %chain.path().display(), "dnsmasq told to read the chain marks again");
    Ok(())
}

#[cfg(test)]
#[path = "dhcp_tests.rs"]
mod tests;
