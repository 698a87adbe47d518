//! The handoff checked against the lab's own records: what the booted guest says its iBFT and
//! its root disk are, compared field by field with what the lab served.
//!
//! The guest's side is the marker's report on its console (`netboot-harness: ibft ...`,
//! `root-disk ...`, `iface ...`, read from sysfs by the guest). The lab's side is never a value
//! written into the scenario for this check: it is the DHCP server's ACK for the boot NIC (address,
//! netmask, router, and the server itself), the target's login records (the IQN the boot script
//! set, the address and MAC every login came from), and the target the lab exports.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use crate::guest::console::ConsoleLine;
use crate::scenario::{Node, Scenario, SessionType};
use crate::services::events::{Event, EventKind};

use super::verdict::Evidence;

/// The marker's last line: the report is complete once it is on the console.
pub const MARKER_DONE: &str = "netboot-harness: marker done";
const PREFIX: &str = "netboot-harness: ";

/// The portal every scenario's target listens on.
const PORTAL_PORT: u16 = crate::services::iscsi::PORTAL_PORT;

/// iBFT origin of an address configured by DHCP (the iBFT spec's "Prefix Origin" values).
const ORIGIN_DHCP: &str = "3";

/// One `key=value` line of the marker's report.
#[derive(Debug, Clone)]
struct Fields {
    line: ConsoleLine,
    values: BTreeMap<String, String>,
}

impl Fields {
    fn get(&self, key: &str) -> &str {
        self.values.get(key).map(String::as_str).unwrap_or("-")
    }
}

/// The marker's report, as the guest printed it.
#[derive(Debug, Default)]
pub struct Report {
    initiator: Option<Fields>,
    ethernets: Vec<(String, Fields)>,
    targets: Vec<(String, Fields)>,
    root_disk: Option<Fields>,
    ifaces: Vec<(String, Fields)>,
    ibft_none: Option<ConsoleLine>,
}

impl Report {
    /// Reads the report from console lines ending with the marker's last line.
    pub fn parse(lines: &[ConsoleLine]) -> Report {
        let mut r = Report::default();
        for l in lines {
            let Some((_, rest)) = l.text.split_once(PREFIX) else {
                continue;
            };
            let words: Vec<&str> = rest.split_whitespace().collect();
            let (Some(kind), Some(second)) = (words.first().copied(), words.get(1).copied()) else {
                continue;
            };
            // `ibft initiator=...` and `root-disk dev=...` have their first pair second; the
            // others name their entry there.
            let fields = |from: usize| Fields {
                line: l.clone(),
                values: words[from..]
                    .iter()
                    .filter_map(|w| w.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            };
            match kind {
                "ibft" if second == "none" => r.ibft_none = Some(l.clone()),
                "ibft" if second.starts_with("initiator=") => r.initiator = Some(fields(1)),
                "ibft" if second.starts_with("ethernet") => {
                    r.ethernets.push((second.to_string(), fields(2)))
                }
                "ibft" if second.starts_with("target") => {
                    r.targets.push((second.to_string(), fields(2)))
                }
                "root-disk" => r.root_disk = Some(fields(1)),
                "iface" => r.ifaces.push((second.to_string(), fields(2))),
                _ => {}
            }
        }
        r
    }
}

/// What a check found: `Ok` with a summary, or every field that differs, each in a sentence,
/// with the guest's lines and the lab's records it compared.
pub struct Checked {
    pub differences: Vec<String>,
    pub summary: String,
    pub evidence: Vec<Evidence>,
}

/// The scenario's facts about one node that the checks need.
pub struct Lab<'a> {
    pub scenario: &'a Scenario,
    pub node: &'a Node,
}

impl Lab<'_> {
    fn server(&self) -> Ipv4Addr {
        self.scenario.subnet.server()
    }

    /// The address of one of the lab's iSCSI portals.
    fn portal(&self, which: crate::scenario::Portal) -> Ipv4Addr {
        self.scenario
            .iscsi
            .portals(self.server())
            .into_iter()
            .find(|(p, _)| *p == which)
            .map_or(self.server(), |(_, address)| address)
    }

    /// With two portals, the ones an iBFT target may name: those the node's accepted logins came
    /// in on (iPXE opens every path of a multipath `sanboot` and describes each, so a target
    /// naming a portal nobody logged in through is a path that never worked).
    fn logged_in_portals(&self, logins: &[&Event]) -> Vec<Ipv4Addr> {
        let mut out: Vec<Ipv4Addr> = logins
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::IscsiLogin {
                    portal: Some(p), ..
                } => Some(self.portal(*p)),
                _ => None,
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Every portal address of the lab.
    fn portals(&self) -> Vec<Ipv4Addr> {
        self.scenario
            .iscsi
            .portals(self.server())
            .into_iter()
            .map(|(_, address)| address)
            .collect()
    }
}

/// The iBFT check: the guest's firmware table against the lease, the logins and the target.
pub fn ibft(report: &Report, lab: &Lab<'_>, events: &[Event], node_name: &str) -> Checked {
    let mut diff = Vec::new();
    let mut evidence = Vec::new();
    let boot_mac = lab.node.boot_nic().mac.to_string();
    let server = lab.server();

    if let Some(l) = &report.ibft_none {
        return Checked {
            differences: vec![format!(
                "the guest has no iBFT (/sys/firmware/ibft is missing), so iPXE's handoff never reached it"
            )],
            summary: String::new(),
            evidence: vec![Evidence::console(node_name, l)],
        };
    }

    // The lab's side: the last lease the DHCP server acknowledged for the boot NIC before the
    // guest reported, and every accepted normal login from that lease's address.
    let reported_at = report
        .ethernets
        .first()
        .map(|(_, f)| f.line.at)
        .unwrap_or(f64::INFINITY);
    let lease = events.iter().rev().find(|e| {
        e.at <= reported_at
            && matches!(&e.kind, EventKind::Dhcp { message, mac, ip: Some(_), .. }
                if message == "DHCPACK" && mac.eq_ignore_ascii_case(&boot_mac))
    });
    let Some(lease) = lease else {
        return Checked {
            differences: vec![format!(
                "the DHCP server acknowledged no lease for the boot NIC {boot_mac}: nothing to compare the iBFT with"
            )],
            summary: String::new(),
            evidence: Vec::new(),
        };
    };
    evidence.push(Evidence::record(lease));
    let EventKind::Dhcp {
        ip: Some(lease_ip),
        netmask,
        router,
        ..
    } = &lease.kind
    else {
        unreachable!("the lease was found by this shape");
    };
    let lease_ip = *lease_ip;
    let prefix = netmask
        .map(|m| u32::from(m).leading_ones())
        .unwrap_or(u32::from(lab.scenario.subnet.prefix));
    let logins: Vec<&Event> = events
        .iter()
        .filter(|e| {
            matches!(&e.kind, EventKind::IscsiLogin { source_ip, session_type, .. }
                if *source_ip == IpAddr::V4(lease_ip)
                    && session_type == SessionType::Normal.key_value())
        })
        .collect();

    // The boot NIC's entry.
    let entries: Vec<&(String, Fields)> = report
        .ethernets
        .iter()
        .filter(|(_, f)| f.get("mac").eq_ignore_ascii_case(&boot_mac))
        .collect();
    let nic_index = match entries.as_slice() {
        [] => {
            diff.push(format!(
                "no iBFT NIC entry has the boot NIC's MAC {boot_mac} (entries: {})",
                listed(
                    report
                        .ethernets
                        .iter()
                        .map(|(n, f)| format!("{n} mac={}", f.get("mac")))
                )
            ));
            None
        }
        [(name, f)] => {
            evidence.push(Evidence::console(node_name, &f.line));
            compare(
                &mut diff,
                name,
                "ip",
                f.get("ip"),
                &lease_ip.to_string(),
                "the DHCP lease's address",
            );
            compare(
                &mut diff,
                name,
                "prefix",
                f.get("prefix"),
                &prefix.to_string(),
                "the lease's netmask",
            );
            let gateway = router.map(|r| r.to_string());
            match &gateway {
                Some(g) => compare(
                    &mut diff,
                    name,
                    "gateway",
                    f.get("gateway"),
                    g,
                    "the router the DHCP server sent",
                ),
                None if !matches!(f.get("gateway"), "-" | "0.0.0.0") => diff.push(format!(
                    "{name} gateway is {}, but the DHCP server sent no router",
                    f.get("gateway")
                )),
                None => {}
            }
            compare(
                &mut diff,
                name,
                "dhcp",
                f.get("dhcp"),
                &server.to_string(),
                "the lab's DHCP server",
            );
            compare(
                &mut diff,
                name,
                "origin",
                f.get("origin"),
                ORIGIN_DHCP,
                "an address from DHCP (origin 3)",
            );
            flags_valid_and_boot(&mut diff, name, f.get("flags"));
            iface_carries(
                &mut diff,
                report,
                name,
                f,
                &boot_mac,
                lease_ip,
                prefix,
                node_name,
                &mut evidence,
            );
            Some(name.trim_start_matches("ethernet").to_string())
        }
        more => {
            diff.push(format!(
                "{} iBFT NIC entries have the boot NIC's MAC {boot_mac}",
                more.len()
            ));
            None
        }
    };
    // Entries for other MACs must at least be this node's NICs.
    for (name, f) in &report.ethernets {
        let mac = f.get("mac");
        if !lab
            .node
            .nics
            .iter()
            .any(|n| n.mac.to_string().eq_ignore_ascii_case(mac))
        {
            diff.push(format!("{name} mac={mac} is no NIC of this node"));
        }
    }

    // The initiator: the IQN every login of the node used.
    match &report.initiator {
        None => diff.push("the iBFT has no initiator entry".into()),
        Some(f) => {
            evidence.push(Evidence::console(node_name, &f.line));
            let iqn = f.get("initiator");
            match logins.first() {
                None => diff.push(format!(
                    "the target recorded no accepted login from {lease_ip}, the boot NIC's address"
                )),
                Some(first) => evidence.push(Evidence::record(first)),
            }
            for e in &logins {
                if let EventKind::IscsiLogin {
                    initiator,
                    source_mac,
                    ..
                } = &e.kind
                {
                    if !initiator.eq_ignore_ascii_case(iqn) {
                        diff.push(format!(
                            "initiator is {iqn}, but the login at {:.1}s from {lease_ip} used {initiator}",
                            e.at
                        ));
                        evidence.push(Evidence::record(e));
                    }
                    if let Some(m) = source_mac
                        .as_deref()
                        .filter(|m| !m.eq_ignore_ascii_case(&boot_mac))
                    {
                        diff.push(format!(
                            "the login at {:.1}s came from {lease_ip} but from MAC {m}, not the boot NIC's {boot_mac}",
                            e.at
                        ));
                        evidence.push(Evidence::record(e));
                    }
                }
            }
            flags_valid_and_boot(&mut diff, "initiator", f.get("flags"));
        }
    }

    // The targets: the one the lab exports, on the lab's portal, with the scenario's LUN.
    if report.targets.is_empty() {
        diff.push("the iBFT has no target entry".into());
    }
    let want_target = lab.scenario.iscsi.target_of(node_name).as_str();
    // One portal: the server's, as the lab's only one. Two: any the node logged in through.
    let portals = match lab.scenario.iscsi.second_portal {
        None => vec![server],
        Some(_) => lab.logged_in_portals(&logins),
    };
    for (name, f) in &report.targets {
        evidence.push(Evidence::console(node_name, &f.line));
        compare(
            &mut diff,
            name,
            "name",
            f.get("name"),
            want_target,
            "the target the lab exports",
        );
        if lab.scenario.iscsi.second_portal.is_none() {
            compare(
                &mut diff,
                name,
                "ip",
                f.get("ip"),
                &server.to_string(),
                "the lab's portal address",
            );
        } else if !portals.iter().any(|p| p.to_string() == f.get("ip")) {
            diff.push(format!(
                "{name} ip is {}, but no accepted login from {lease_ip} came in on that portal (logins came in on: {})",
                f.get("ip"),
                listed(portals.iter().map(|p| p.to_string()))
            ));
        }
        compare(
            &mut diff,
            name,
            "port",
            f.get("port"),
            &PORTAL_PORT.to_string(),
            "the lab's portal port",
        );
        compare(
            &mut diff,
            name,
            "lun",
            f.get("lun"),
            &sysfs_lun(lab.scenario.iscsi.lun),
            &format!("LUN {} as sysfs prints it", lab.scenario.iscsi.lun),
        );
        if let Some(i) = &nic_index {
            compare(
                &mut diff,
                name,
                "nic",
                f.get("nic"),
                i,
                "the boot NIC's iBFT entry",
            );
        }
        flags_valid_and_boot(&mut diff, name, f.get("flags"));
    }

    let summary = format!(
        "iBFT matches the lab: initiator {}, boot NIC {boot_mac} at {lease_ip}/{prefix} from DHCP server {server}, target {want_target} at {} (port {PORTAL_PORT}) LUN {}, {} login(s) from that address and NIC",
        report.initiator.as_ref().map(|f| f.get("initiator")).unwrap_or("-"),
        listed(portals.iter().map(|p| p.to_string())),
        lab.scenario.iscsi.lun,
        logins.len()
    );
    Checked {
        differences: diff,
        summary,
        evidence,
    }
}

/// The root-on-session check: `/` is on a disk of an iSCSI session to the scenario's target,
/// through the lab's portal, on the scenario's LUN.
pub fn root_on_session(report: &Report, lab: &Lab<'_>, node_name: &str) -> Checked {
    let Some(f) = &report.root_disk else {
        return Checked {
            differences: vec!["the guest's report has no root-disk line".into()],
            summary: String::new(),
            evidence: Vec::new(),
        };
    };
    let mut diff = Vec::new();
    let portals: Vec<String> = lab
        .portals()
        .iter()
        .map(|a| format!("{a}:{PORTAL_PORT}"))
        .collect();
    let target = lab.scenario.iscsi.target_of(node_name).as_str();
    let lun = lab.scenario.iscsi.lun.to_string();
    if f.get("transport") != "iscsi" {
        diff.push(format!(
            "the root's disk {} is not on an iSCSI session (device {})",
            f.get("dev"),
            f.get("device")
        ));
    } else {
        compare(
            &mut diff,
            "root-disk",
            "target",
            f.get("target"),
            target,
            "the scenario's target",
        );
        if !portals.iter().any(|p| p == f.get("portal")) {
            diff.push(format!(
                "root-disk portal is {}, not the lab's portal ({})",
                f.get("portal"),
                portals.join(" or ")
            ));
        }
        compare(
            &mut diff,
            "root-disk",
            "lun",
            f.get("lun"),
            &lun,
            "the scenario's LUN",
        );
        // The state is reported, not required: the booted system's iscsid takes the session
        // over from the initramfs while the marker runs, and the session reads FAILED for the
        // moment of that re-login (seen on bookworm and trixie). The marker ran from this root,
        // so the session did serve it.
    }
    Checked {
        differences: diff,
        summary: format!(
            "/ is on {} of {} to {target} through {}, LUN {lun}, {}",
            f.get("dev"),
            f.get("session"),
            f.get("portal"),
            f.get("state")
        ),
        evidence: vec![Evidence::console(node_name, &f.line)],
    }
}

fn compare(diff: &mut Vec<String>, entry: &str, key: &str, got: &str, want: &str, what: &str) {
    if !got.eq_ignore_ascii_case(want) {
        diff.push(format!("{entry} {key} is {got}, but {what} is {want}"));
    }
}

/// iBFT flags: bit 0 "block valid", bit 1 "firmware boot selected" (iPXE sets both on what it
/// booted from).
fn flags_valid_and_boot(diff: &mut Vec<String>, entry: &str, flags: &str) {
    let value = flags
        .strip_prefix("0x")
        .map(|h| u32::from_str_radix(h, 16))
        .unwrap_or_else(|| flags.parse());
    match value {
        Ok(v) if v & 0x3 == 0x3 => {}
        _ => diff.push(format!(
            "{entry} flags are {flags}: not marked valid and selected for boot (bits 0 and 1)"
        )),
    }
}

/// The iBFT NIC's interface in the booted system holds the lease's address, and is the boot NIC.
#[allow(clippy::too_many_arguments)]
fn iface_carries(
    diff: &mut Vec<String>,
    report: &Report,
    entry: &str,
    f: &Fields,
    boot_mac: &str,
    ip: Ipv4Addr,
    prefix: u32,
    node_name: &str,
    evidence: &mut Vec<Evidence>,
) {
    let name = f.get("iface");
    let Some((_, i)) = report.ifaces.iter().find(|(n, _)| n == name) else {
        diff.push(format!(
            "{entry} names interface {name}, which the booted system does not list"
        ));
        return;
    };
    evidence.push(Evidence::console(node_name, &i.line));
    compare(
        diff,
        &format!("interface {name}"),
        "mac",
        i.get("mac"),
        boot_mac,
        "the boot NIC's MAC",
    );
    let want = format!("{ip}/{prefix}");
    if !i.get("addr").split(',').any(|a| a == want) {
        diff.push(format!(
            "interface {name} (the iBFT NIC) has addresses {}, not the lease's {want}",
            i.get("addr")
        ));
    }
}

/// A LUN as the kernel prints the iBFT's 8-byte SAM LUN field: each byte in `%x`, no padding.
/// iPXE writes LUN n (below 256) as peripheral addressing, `00 n 00 00 00 00 00 00`.
pub fn sysfs_lun(lun: u8) -> String {
    let bytes = [0u8, lun, 0, 0, 0, 0, 0, 0];
    bytes.iter().map(|b| format!("{b:x}")).collect()
}

fn listed(items: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = items.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}
