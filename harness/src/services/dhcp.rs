//! DHCP from dnsmasq (DHCP only: no DNS, no TFTP), bound to the lab bridge alone.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use super::{log_tail, ServiceContext, ServiceError};
use crate::events::{EventKind, EventLog};
use crate::scenario::Scenario;

pub struct Dhcp {
    child: Child,
    leases_private: PathBuf,
    leases_artifact: PathBuf,
}

/// The argument vector for dnsmasq.
pub fn args(s: &Scenario, bridge: &str, leasefile: &str, ipv6_ra: bool) -> Vec<String> {
    let (lo, hi) = s.subnet.pool();
    let mask = Ipv4Addr::from(u32::MAX << (32 - s.subnet.prefix));
    let mut a = vec![
        "--keep-in-foreground".to_string(),
        "--log-facility=-".into(),
        // Never read the host's configuration: a stray option could make it answer elsewhere.
        "--conf-file=/dev/null".into(),
        "--no-hosts".into(),
        "--no-resolv".into(),
        "--port=0".into(),
        format!("--interface={bridge}"),
        "--except-interface=lo".into(),
        "--bind-interfaces".into(),
        "--dhcp-authoritative".into(),
        "--log-dhcp".into(),
        format!("--dhcp-leasefile={leasefile}"),
        format!("--dhcp-range={lo},{hi},{mask},1h"),
        // iPXE says who it is with user class "iPXE"; only it gets the boot-script URL.
        "--dhcp-userclass=set:ipxe,iPXE".into(),
        format!("--dhcp-boot=tag:ipxe,{}", s.dhcp.boot_url),
    ];
    for h in &s.dhcp.hosts {
        let mut spec = h.mac.to_string();
        if let Some(ip) = h.ip {
            spec.push_str(&format!(",{ip}"));
        }
        if let Some(name) = &h.hostname {
            spec.push_str(&format!(",{name}"));
        }
        a.push(format!("--dhcp-host={spec}"));
    }
    if ipv6_ra {
        // Router advertisements on the bridge: without them iPXE waits ~13 s for IPv6
        // autoconfiguration after DHCPv4 has long finished.
        a.push("--enable-ra".into());
        a.push(format!("--dhcp-range=::,constructor:{bridge},ra-only"));
    }
    a
}

/// One parsed dnsmasq DHCP log line.
#[derive(Debug, Clone, PartialEq)]
pub struct DhcpLine {
    pub message: String,
    pub mac: String,
    pub ip: Option<Ipv4Addr>,
    pub hostname: Option<String>,
}

/// Reads lines like `dnsmasq-dhcp: 2539614283 DHCPACK(nbr0) 10.77.0.200 52:54:00:aa:00:01 node01`.
pub fn parse_line(line: &str) -> Option<DhcpLine> {
    let mut toks = line
        .split_whitespace()
        .skip_while(|t| !t.starts_with("DHCP") || !t.contains('('));
    let head = toks.next()?;
    let message = head.split('(').next()?.to_string();
    if message.len() <= 4 || !message[4..].chars().all(|c| c.is_ascii_uppercase()) {
        return None;
    }
    let rest: Vec<&str> = toks.collect();
    let mut ip = None;
    let mut mac = None;
    let mut hostname = None;
    for (i, t) in rest.iter().enumerate() {
        if let Ok(a) = t.parse::<Ipv4Addr>() {
            ip = Some(a);
        } else if is_mac(t) {
            mac = Some(t.to_ascii_lowercase());
            hostname = rest
                .get(i + 1)
                .filter(|h| !h.is_empty())
                .map(|h| h.to_string());
            break;
        }
    }
    Some(DhcpLine {
        message,
        mac: mac?,
        ip,
        hostname,
    })
}

fn is_mac(t: &str) -> bool {
    t.len() == 17
        && t.split(':').count() == 6
        && t.split(':')
            .all(|o| o.len() == 2 && o.chars().all(|c| c.is_ascii_hexdigit()))
}

impl Dhcp {
    pub async fn start(s: &Scenario, cx: &ServiceContext) -> Result<Dhcp, ServiceError> {
        // dnsmasq drops to `nobody`; its lease file lives in the lab's private /run, and is
        // copied to the artifacts when it stops.
        let private = PathBuf::from("/run/nbh-dnsmasq");
        std::fs::create_dir_all(&private).map_err(|e| ServiceError::Other {
            service: "dhcp",
            message: format!("{}: {e}", private.display()),
        })?;
        let _ = nix::unistd::chown(&private, Some(nix::unistd::Uid::from_raw(65534)), None);
        let leases_private = private.join("leases");
        let argv = args(s, &cx.bridge, &leases_private.display().to_string(), true);
        let _ = std::fs::write(cx.run_dir.join("dnsmasq.args"), argv.join("\n") + "\n");
        let log_path = cx.run_dir.join("dnsmasq.log");
        let mut cmd = Command::new("dnsmasq");
        cmd.args(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        crate::process::die_with_parent(&mut cmd);
        let mut child = cmd.spawn().map_err(|source| ServiceError::Spawn {
            service: "dhcp",
            program: "dnsmasq (Debian package dnsmasq-base)".into(),
            source,
        })?;
        let stderr = child.stderr.take();
        let (ready_tx, mut ready_rx) = watch::channel(false);
        let events = cx.events.clone();
        let log = tokio::fs::File::create(&log_path)
            .await
            .map_err(|e| ServiceError::Other {
                service: "dhcp",
                message: format!("{}: {e}", log_path.display()),
            })?;
        tokio::spawn(pump(stderr, log, events, ready_tx));
        let ready = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if *ready_rx.borrow() {
                    return true;
                }
                if ready_rx.changed().await.is_err() {
                    return false;
                }
            }
        })
        .await
        .unwrap_or(false);
        if !ready {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(ServiceError::NotReady {
                service: "dhcp",
                message: format!(
                    "dnsmasq did not report its DHCP range (log: {})",
                    log_path.display()
                ),
                log_tail: log_tail(&log_path, 20),
            });
        }
        tracing::info!(bridge = %cx.bridge, "dhcp up");
        Ok(Dhcp {
            child,
            leases_private,
            leases_artifact: cx.run_dir.join("dnsmasq.leases"),
        })
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        let _ = std::fs::copy(&self.leases_private, &self.leases_artifact);
    }
}

async fn pump(
    stderr: Option<tokio::process::ChildStderr>,
    mut log: tokio::fs::File,
    events: Arc<EventLog>,
    ready: watch::Sender<bool>,
) {
    let Some(stderr) = stderr else { return };
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let stamped = format!("[{:9.3}] {line}\n", events.clock().now());
        let _ = log.write_all(stamped.as_bytes()).await;
        let _ = log.flush().await;
        if line.contains("DHCP, IP range") {
            ready.send_replace(true);
        }
        if let Some(d) = parse_line(&line) {
            events.push(EventKind::Dhcp {
                message: d.message,
                mac: d.mac,
                ip: d.ip,
                hostname: d.hostname,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dnsmasq_lines() {
        let ack = parse_line(
            "dnsmasq-dhcp: 2539614283 DHCPACK(nbr0) 10.77.0.200 52:54:00:aa:00:01 node01",
        )
        .unwrap();
        assert_eq!(ack.message, "DHCPACK");
        assert_eq!(ack.mac, "52:54:00:aa:00:01");
        assert_eq!(ack.ip, Some("10.77.0.200".parse().unwrap()));
        assert_eq!(ack.hostname.as_deref(), Some("node01"));
        let disc =
            parse_line("dnsmasq-dhcp: 2539614283 DHCPDISCOVER(nbr0) 52:54:00:AA:00:01").unwrap();
        assert_eq!(disc.message, "DHCPDISCOVER");
        assert_eq!(disc.mac, "52:54:00:aa:00:01");
        assert_eq!(disc.ip, None);
        let req = parse_line("dnsmasq-dhcp: 123 DHCPREQUEST(nbr0) 10.77.0.200 52:54:00:aa:00:01")
            .unwrap();
        assert_eq!(req.hostname, None);
        assert!(parse_line("dnsmasq-dhcp: 123 tags: ipxe, known, nbr0").is_none());
        assert!(parse_line(
            "dnsmasq-dhcp: DHCP, IP range 10.77.0.128 -- 10.77.0.254, lease time 1h"
        )
        .is_none());
        assert!(parse_line("dnsmasq-dhcp: 123 sent size:  4 option: 53 message-type  5").is_none());
    }

    #[test]
    fn args_bind_only_the_bridge_and_ignore_host_config() {
        let s = crate::scenario::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../scenarios/debian-ibft-e1000.yaml"),
        )
        .unwrap();
        let a = args(&s, "nbr0", "/run/x/leases", true).join(" ");
        for want in [
            "--conf-file=/dev/null",
            "--port=0",
            "--interface=nbr0",
            "--bind-interfaces",
            "--except-interface=lo",
            "--dhcp-range=10.77.0.128,10.77.0.254,255.255.255.0,1h",
            "--dhcp-host=52:54:00:aa:00:01,node01",
            "--dhcp-boot=tag:ipxe,http://10.77.0.1/boot.ipxe",
            "--enable-ra",
        ] {
            assert!(a.contains(want), "{want} missing: {a}");
        }
        assert!(!args(&s, "nbr0", "/x", false).join(" ").contains("ra-only"));
    }
}
