//! The lab network: one bridge with the scenario's subnet and one tap per guest NIC, inside the
//! run's own network namespace.
//!
//! The namespaces themselves come from how the lab process is started (`unshare --net --mount
//! --pid`, see [`crate::cli::run`]): when the lab process exits, the kernel tears down the namespace
//! and everything in it, so nothing here can outlive a run. Before creating anything this module
//! proves it is not in the host's namespace.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use crate::scenario::{MacAddr, Scenario, Subnet};

pub const BRIDGE: &str = "nbr0";

/// IPv6 prefix of the lab bridge: a unique-local range, answered with router advertisements so
/// iPXE does not wait for them (see the notes on IPv6 in the README).
pub const IPV6_SERVER: &str = "fd77:6e62:6800::1/64";

#[derive(Debug, Clone)]
pub struct TapPlan {
    pub node: String,
    pub nic_index: usize,
    pub name: String,
    pub mac: MacAddr,
    /// The bridge the tap is wired to: the boot network's or a segment's.
    pub bridge: String,
}

/// A bridge for a segment besides the boot network.
#[derive(Debug, Clone)]
pub struct SegmentPlan {
    pub name: String,
    pub bridge: String,
    pub subnet: Subnet,
    pub server_ip: Ipv4Addr,
    pub dhcp: bool,
}

#[derive(Debug, Clone)]
pub struct LabPlan {
    pub bridge: String,
    pub subnet: Subnet,
    pub server_ip: Ipv4Addr,
    /// The second iSCSI portal's address, on the same bridge (`services.iscsi.second_portal`).
    pub portal2: Option<Ipv4Addr>,
    pub ipv6: bool,
    pub segments: Vec<SegmentPlan>,
    pub taps: Vec<TapPlan>,
}

impl LabPlan {
    pub fn taps_of<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a TapPlan> + 'a {
        self.taps.iter().filter(move |t| t.node == node)
    }
}

/// The bridge of the scenario's `i`-th segment (the boot network's is [`BRIDGE`]).
pub fn segment_bridge(i: usize) -> String {
    format!("nbr{}", i + 1)
}

/// Names are short because Linux caps interface names at 15 bytes.
pub fn plan(s: &Scenario) -> LabPlan {
    let segments: Vec<SegmentPlan> = s
        .segments
        .iter()
        .enumerate()
        .map(|(i, g)| SegmentPlan {
            name: g.name.clone(),
            bridge: segment_bridge(i),
            subnet: g.subnet,
            server_ip: g.subnet.server(),
            dhcp: g.dhcp,
        })
        .collect();
    let taps = s
        .nodes
        .iter()
        .enumerate()
        .flat_map(|(ni, node)| {
            let segments = &segments;
            node.nics.iter().enumerate().map(move |(i, nic)| TapPlan {
                node: node.name.clone(),
                nic_index: i,
                name: format!("t{ni}n{i}"),
                mac: nic.mac,
                bridge: nic
                    .segment
                    .and_then(|g| segments.get(g))
                    .map(|g| g.bridge.clone())
                    .unwrap_or_else(|| BRIDGE.to_string()),
            })
        })
        .collect();
    LabPlan {
        bridge: BRIDGE.to_string(),
        subnet: s.subnet,
        server_ip: s.subnet.server(),
        portal2: s.iscsi.second_portal.as_ref().map(|p| p.address),
        ipv6: true,
        segments,
        taps,
    }
}

fn add_bridge(name: &str, cidr: &str) -> Result<(), LabError> {
    ip(&[
        "link",
        "add",
        name,
        "type",
        "bridge",
        "forward_delay",
        "0",
        "stp_state",
        "0",
    ])?;
    ip(&["addr", "add", cidr, "dev", name])
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LabError {
    #[error("refusing to build the lab: {0}")]
    #[diagnostic(help("the lab must run in a fresh network namespace made by `netboot-harness run`; never on the host's"))]
    NotIsolated(String),
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("could not make /run private to the lab: {0}")]
    Mount(String),
}

/// The lab as built. Dropping it changes nothing: the namespace dies with the process.
#[derive(Debug)]
pub struct Lab {
    pub plan: LabPlan,
}

/// Builds the lab. `host_netns` is the inode of the host's network namespace as seen by the
/// parent process: if ours is the same, we are not isolated and must not touch anything.
pub fn setup(plan: &LabPlan, host_netns: Option<u64>) -> Result<Lab, LabError> {
    ensure_netns(host_netns)?;
    private_mounts()?;
    ensure_only_loopback()?;
    ip(&["link", "set", "lo", "up"])?;
    let cidr = format!("{}/{}", plan.server_ip, plan.subnet.prefix);
    add_bridge(&plan.bridge, &cidr)?;
    if let Some(a) = plan.portal2 {
        ip(&[
            "addr",
            "add",
            &format!("{a}/{}", plan.subnet.prefix),
            "dev",
            &plan.bridge,
        ])?;
    }
    if plan.ipv6 {
        ip(&[
            "-6",
            "addr",
            "add",
            IPV6_SERVER,
            "dev",
            &plan.bridge,
            "nodad",
        ])?;
    }
    ip(&["link", "set", &plan.bridge, "up"])?;
    // Segments are separate bridges with no route between them: a NIC there reaches only the
    // harness's address on that segment (and its DHCP, if the scenario asks).
    for g in &plan.segments {
        add_bridge(&g.bridge, &format!("{}/{}", g.server_ip, g.subnet.prefix))?;
        ip(&["link", "set", &g.bridge, "up"])?;
    }
    for t in &plan.taps {
        ip(&["tuntap", "add", "dev", &t.name, "mode", "tap"])?;
        ip(&["link", "set", &t.name, "master", &t.bridge])?;
        ip(&["link", "set", &t.name, "up"])?;
    }
    tracing::info!(bridge = %plan.bridge, %cidr, taps = plan.taps.len(), "lab network up");
    Ok(Lab { plan: plan.clone() })
}

/// Inode of this process's network namespace.
pub fn netns_inode() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/net").ok().map(|m| m.ino())
}

fn ensure_netns(host_netns: Option<u64>) -> Result<(), LabError> {
    let ours = netns_inode()
        .ok_or_else(|| LabError::NotIsolated("cannot read /proc/self/ns/net".into()))?;
    match host_netns {
        Some(h) if h == ours => {
            return Err(LabError::NotIsolated(
                "this process is in the host's network namespace".into(),
            ))
        }
        Some(_) => {}
        None => {
            return Err(LabError::NotIsolated(
                "the host namespace was not given".into(),
            ))
        }
    }
    Ok(())
}

fn ensure_only_loopback() -> Result<(), LabError> {
    // A fresh namespace has only `lo`. Anything else means we were started somewhere we did
    // not make, and services bound there could answer a real network.
    let others: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map_err(|e| LabError::NotIsolated(format!("cannot list interfaces: {e}")))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lo")
        .collect();
    if !others.is_empty() {
        return Err(LabError::NotIsolated(format!(
            "the namespace already has interfaces {others:?}"
        )));
    }
    Ok(())
}

/// tgtd and dnsmasq keep sockets and state under /run; a tmpfs there keeps each run's apart
/// from the host's and from other runs. A fresh sysfs shows this namespace's interfaces (the
/// inherited one shows the host's). Both mounts live in the lab's private mount namespace.
fn private_mounts() -> Result<(), LabError> {
    use nix::mount::{mount, MsFlags};
    // Make sure nothing we mount propagates back to the host, whatever unshare defaulted to.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| LabError::Mount(format!("making / private: {e}")))?;
    let run = Path::new("/run");
    mount(
        Some("tmpfs"),
        run,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
    .map_err(|e| LabError::Mount(format!("tmpfs on /run: {e}")))?;
    mount(
        Some("sysfs"),
        "/sys",
        Some("sysfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| LabError::Mount(format!("sysfs on /sys: {e}")))?;
    Ok(())
}

fn ip(args: &[&str]) -> Result<(), LabError> {
    let out = Command::new("ip")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| LabError::Command {
            cmd: format!("ip {}", args.join(" ")),
            stderr: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: format!("ip {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_the_host_namespace() {
        let ours = netns_inode();
        assert!(ours.is_some());
        let e = setup(
            &LabPlan {
                bridge: "nbr-test".into(),
                subnet: "10.77.0.0/24".parse().unwrap(),
                server_ip: "10.77.0.1".parse().unwrap(),
                portal2: None,
                ipv6: false,
                segments: vec![],
                taps: vec![],
            },
            ours,
        )
        .unwrap_err();
        assert!(matches!(e, LabError::NotIsolated(_)), "{e}");
        // And it created nothing.
        assert!(!Path::new("/sys/class/net/nbr-test").exists());
    }

    #[test]
    fn refuses_without_a_host_reference() {
        let e = ensure_netns(None).unwrap_err();
        assert!(e.to_string().contains("not given"));
    }
}
