//! `fleet:`: `count` nodes written from one template, so that a fleet of eight reads as briefly
//! as one node. The template becomes ordinary `nodes:` entries and DHCP hosts before any other
//! check runs, so every later check (duplicate MACs, addresses, targets) sees a fleet exactly as
//! it would see the same nodes written out, and points at the template's lines.

use std::net::Ipv4Addr;
use std::time::Duration;

use serde_saphyr::Spanned;

use super::{one_of, ScenarioError, Validator};
use crate::scenario::raw::{RawDhcpHost, RawFleet, RawNic, RawNode, RawNodeTemplate, RawScenario};
use crate::scenario::values::{shown, MacAddr};

/// The most nodes a scenario boots (each a QEMU process).
pub(super) const MAX_NODES: usize = 8;
const DEFAULT_NAME: &str = "node{nn}";
/// Power-on gaps are seconds in the field (a rack's PDU sequencing), never minutes.
const MAX_STAGGER: Duration = Duration::from_secs(60);

/// The texts a fleet's names and MACs take for the node's number.
struct Number(usize);

impl Number {
    fn fill(&self, text: &str) -> String {
        text.replace("{nn}", &format!("{:02}", self.0))
            .replace("{xx}", &format!("{:02x}", self.0))
            .replace("{n}", &self.0.to_string())
    }
}

fn numbered(text: &str) -> bool {
    ["{n}", "{nn}", "{xx}"].iter().any(|p| text.contains(p))
}

impl Validator<'_> {
    /// Writes `fleet:` out as `nodes:` and DHCP hosts (a scenario has one or the other), and
    /// returns the time between two nodes' power-on.
    pub(super) fn expand_fleet(&self, raw: &mut RawScenario) -> Result<Duration, ScenarioError> {
        let fleet =
            match (&raw.nodes, raw.fleet.take()) {
                (Some(_), None) => return Ok(Duration::ZERO),
                (None, None) => return Err(self.cx.err(
                    None,
                    "a scenario needs `nodes` (written out) or `fleet` (a template and a count)",
                    None,
                )),
                (Some(n), Some(_)) => {
                    return Err(self.at(
                        n,
                        "`nodes` and `fleet` both list the nodes: give one",
                        Some("`fleet.overrides` changes single nodes of a fleet".into()),
                    ))
                }
                (None, Some(f)) => f,
            };
        let stagger = match &fleet.value.stagger {
            None => Duration::ZERO,
            Some(s) if s.value.0 > MAX_STAGGER => {
                return Err(self.at(
                    s,
                    format!(
                        "stagger {:?} is more than {MAX_STAGGER:?} between two nodes",
                        s.value.0
                    ),
                    Some(
                        "a longer wait is a step (`console`, `dhcp_ack`) on the earlier node"
                            .into(),
                    ),
                ))
            }
            Some(s) => s.value.0,
        };
        let (nodes, hosts) = self.fleet_nodes(&fleet)?;
        raw.nodes = Some(Spanned::new(nodes, fleet.referenced, fleet.defined));
        // The fleet's hosts first: a host the scenario lists too is then reported twice.
        let written = std::mem::take(&mut raw.services.dhcp.hosts);
        raw.services.dhcp.hosts = hosts.into_iter().chain(written).collect();
        Ok(stagger)
    }

    fn fleet_nodes(
        &self,
        fleet: &Spanned<RawFleet>,
    ) -> Result<(Vec<RawNode>, Vec<RawDhcpHost>), ScenarioError> {
        let f = &fleet.value;
        let count = usize::from(f.count.value);
        if !(1..=MAX_NODES).contains(&count) {
            return Err(self.at(
                &f.count,
                format!("a fleet has 1 to {MAX_NODES} nodes, not {count}"),
                Some("each node is a QEMU process; split a larger fleet over scenarios".into()),
            ));
        }
        let name_text = f.name.clone().unwrap_or_else(|| {
            Spanned::new(DEFAULT_NAME.to_string(), fleet.referenced, fleet.defined)
        });
        if count > 1 && !numbered(&name_text.value) {
            return Err(self.at(
                &name_text,
                format!(
                    "fleet name `{}` has no {{n}} or {{nn}}: every node would get the same name",
                    shown(&name_text.value)
                ),
                Some(format!("e.g. `{DEFAULT_NAME}` (node01, node02, ...)")),
            ));
        }
        // The template's MACs must differ per node; an override's are for its one node.
        for n in f.node.value.nics.iter().flat_map(|l| l.value.iter()) {
            if count > 1 && !numbered(&n.mac.value) {
                return Err(self.at(
                    &n.mac,
                    format!(
                        "MAC `{}` has no {{nn}} or {{xx}}: every node of the fleet would get the same one",
                        shown(&n.mac.value)
                    ),
                    Some("e.g. 52:54:00:aa:01:{xx}: {xx} is the node's number in hex, {nn} in decimal".into()),
                ));
            }
        }
        let names: Vec<String> = (1..=count)
            .map(|i| Number(i).fill(&name_text.value))
            .collect();
        for (name, o) in &f.overrides {
            if !names.contains(name) {
                return Err(self.at(
                    o,
                    format!(
                        "`overrides` names `{}`, which is not a node of this fleet",
                        shown(name)
                    ),
                    Some(one_of(names.iter().map(String::as_str))),
                ));
            }
        }
        let mut nodes = Vec::new();
        let mut hosts = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let number = Number(i + 1);
            let node = merged(&f.node.value, f.overrides.get(name).map(|o| &o.value));
            let Some(nics) = &node.nics else {
                return Err(self.at(
                    &f.node,
                    "the fleet's `node` template has no `nics`",
                    Some(
                        "e.g. `nics: [{ model: e1000, mac: \"52:54:00:aa:01:{nn}\", boot: true }]`"
                            .into(),
                    ),
                ));
            };
            let nics = Spanned::new(
                nics.value
                    .iter()
                    .map(|n| self.nic(n, &number))
                    .collect::<Result<Vec<_>, _>>()?,
                nics.referenced,
                nics.defined,
            );
            let ip = match &f.ip {
                Some(first) => Some(self.nth_address(first, i)?),
                None => None,
            };
            // The boot NIC, as `nodes` finds it: the one marked, or the only one.
            let boot = match nics.value.iter().find(|n| n.boot) {
                Some(n) => Some(n.mac.clone()),
                None if nics.value.len() == 1 => Some(nics.value[0].mac.clone()),
                None => None,
            };
            if let (Some(mac), true) = (boot, node.dhcp_host.unwrap_or(true)) {
                hosts.push(RawDhcpHost {
                    hostname: Some(Spanned::new(
                        name.clone(),
                        name_text.referenced,
                        name_text.defined,
                    )),
                    ip,
                    mac,
                });
            }
            nodes.push(RawNode {
                name: Spanned::new(name.clone(), name_text.referenced, name_text.defined),
                memory_mib: node.memory_mib,
                cpus: node.cpus,
                nics,
                firmware: node.firmware,
                platform: node.platform,
                image: node.image,
                local_disk: node.local_disk,
            });
        }
        Ok((nodes, hosts))
    }

    fn nic(&self, n: &RawNic<String>, number: &Number) -> Result<RawNic, ScenarioError> {
        let text = number.fill(&n.mac.value);
        let mac = text.parse::<MacAddr>().map_err(|e| {
            self.at(
                &n.mac,
                format!("MAC `{}` (node {}): {e}", shown(&text), number.0),
                None,
            )
        })?;
        Ok(RawNic {
            model: n.model,
            mac: Spanned::new(mac, n.mac.referenced, n.mac.defined),
            slot: n.slot.clone(),
            boot: n.boot,
            segment: n.segment.clone(),
        })
    }

    /// The `i`-th address counting up from the fleet's first (0 is the first).
    fn nth_address(
        &self,
        first: &Spanned<Ipv4Addr>,
        i: usize,
    ) -> Result<Spanned<Ipv4Addr>, ScenarioError> {
        let n = u32::from(first.value)
            .checked_add(i as u32)
            .ok_or_else(|| {
                self.at(
                    first,
                    format!(
                        "counting up from {} runs past 255.255.255.255 at node {}",
                        first.value,
                        i + 1
                    ),
                    None,
                )
            })?;
        Ok(Spanned::new(
            Ipv4Addr::from(n),
            first.referenced,
            first.defined,
        ))
    }
}

/// The template with an override's keys in place of its own.
fn merged(template: &RawNodeTemplate, over: Option<&RawNodeTemplate>) -> RawNodeTemplate {
    let Some(o) = over else {
        return template.clone();
    };
    let t = template.clone();
    RawNodeTemplate {
        memory_mib: o.memory_mib.clone().or(t.memory_mib),
        cpus: o.cpus.clone().or(t.cpus),
        nics: o.nics.clone().or(t.nics),
        firmware: o.firmware.clone().or(t.firmware),
        platform: o.platform.clone().or(t.platform),
        image: o.image.clone().or(t.image),
        local_disk: o.local_disk.clone().or(t.local_disk),
        dhcp_host: o.dhcp_host.or(t.dhcp_host),
    }
}
