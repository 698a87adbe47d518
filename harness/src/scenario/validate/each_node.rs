//! A step with `each_node: true` is written out once per node, with that node's own values in
//! place of `{node}`, `{mac}`, `{ip}`, `{initiator}` and `{target}`: one step then asserts "every
//! node got its own lease" or "every login of each node was its own", where a fleet would
//! otherwise need one hand-written step per node.

use std::net::Ipv4Addr;
use std::str::FromStr;

use serde_saphyr::Spanned;

use super::{ScenarioError, Validator};
use crate::scenario::raw::{RawScenario, RawStep};
use crate::scenario::values::{shown, Iqn, MacAddr, PerNode};
use crate::scenario::{Dhcp, Iscsi, Node};

/// One node's values, as the scenario states them.
#[derive(Debug)]
pub(super) struct NodeFacts {
    pub name: String,
    /// The boot NIC's MAC.
    pub mac: MacAddr,
    /// Its fixed address: a DHCP host, or a `dhcp_add_host` step, for the boot MAC.
    pub ip: Option<Ipv4Addr>,
    /// From `services.iscsi.per_node`, or the one target of a one-node scenario.
    pub initiator: Option<Iqn>,
    pub target: Option<Iqn>,
}

const PLACES: [&str; 5] = ["{node}", "{mac}", "{ip}", "{initiator}", "{target}"];

impl NodeFacts {
    /// `text` with this node's values in place; `Err` names a place this node has no value for.
    fn fill(&self, text: &str) -> Result<String, String> {
        let mut out = text.to_string();
        for place in PLACES {
            if !out.contains(place) {
                continue;
            }
            let value = match place {
                "{node}" => Some(self.name.clone()),
                "{mac}" => Some(self.mac.to_string()),
                "{ip}" => self.ip.map(|i| i.to_string()),
                "{initiator}" => self.initiator.as_ref().map(|i| i.as_str().to_string()),
                _ => self.target.as_ref().map(|i| i.as_str().to_string()),
            };
            let Some(value) = value else {
                return Err(format!(
                    "{place}: node {} has no {}",
                    self.name,
                    match place {
                        "{ip}" => "fixed address (a DHCP host with `ip`, `fleet.ip`, or a `dhcp_add_host` step)",
                        "{initiator}" => "initiator of its own (`services.iscsi.per_node.initiator`)",
                        _ => "target of its own (`services.iscsi.per_node.target`)",
                    }
                ));
            };
            out = out.replace(place, &value);
        }
        Ok(out)
    }
}

/// Whether a service step names anything of the node's own: repeated for each node without
/// that, every node's step would wait for the same record.
pub(super) fn names_the_node(step: &RawStep) -> bool {
    fn each<T>(v: &Option<PerNode<T>>) -> bool {
        matches!(v, Some(PerNode::Each(_)))
    }
    let text = |t: &Option<String>| {
        t.as_ref()
            .is_some_and(|t| PLACES.iter().any(|p| t.contains(p)))
    };
    if let Some(d) = &step.dhcp_ack {
        return each(&d.mac) || text(&d.hostname);
    }
    if let Some(t) = &step.tftp_sent {
        return each(&t.mac);
    }
    if let Some(l) = &step.iscsi_login {
        return each(&l.initiator) || each(&l.target) || each(&l.from) || each(&l.mac);
    }
    if let Some(l) = &step.iscsi_login_refused {
        return each(&l.initiator) || each(&l.target);
    }
    if let Some(a) = &step.iscsi_logins_all {
        return each(&a.initiator) || each(&a.target) || each(&a.from) || each(&a.mac);
    }
    if let Some(a) = &step.no_iscsi_login {
        return each(&a.initiator) || each(&a.from) || each(&a.mac);
    }
    if let Some(a) = step.iscsi_logout.as_ref().or(step.no_iscsi_logout.as_ref()) {
        return each(&a.initiator) || each(&a.target);
    }
    // A step on the node's own console, shell or disk is its own already.
    true
}

impl Validator<'_> {
    /// Every node's values, in node order.
    pub(super) fn node_facts(
        &self,
        raw: &RawScenario,
        nodes: &[Node],
        dhcp: &Dhcp,
        iscsi: &Iscsi,
    ) -> Vec<NodeFacts> {
        let exports = &iscsi.per_node;
        let added: Vec<(MacAddr, Ipv4Addr)> = raw
            .expect
            .value
            .iter()
            .filter_map(|s| s.value.dhcp_add_host.as_ref())
            .filter_map(|h| h.ip.map(|ip| (h.mac, ip)))
            .collect();
        nodes
            .iter()
            .map(|n| {
                let boot = n.boot_nic();
                let ip = dhcp
                    .hosts
                    .iter()
                    .find(|h| h.mac == boot.mac)
                    .and_then(|h| h.ip)
                    .or_else(|| {
                        added
                            .iter()
                            .find(|(m, _)| *m == boot.mac)
                            .map(|(_, ip)| *ip)
                    });
                let export = exports.iter().find(|e| e.node == n.name);
                NodeFacts {
                    name: n.name.clone(),
                    mac: boot.mac,
                    ip,
                    initiator: export.and_then(|e| e.initiator.clone()),
                    target: match export {
                        Some(e) => Some(e.target.clone()),
                        None if exports.is_empty() => Some(iscsi.target.clone()),
                        None => None,
                    },
                }
            })
            .collect()
    }

    /// A text of a step (console, shell, ...): the node's values filled in when the step is
    /// repeated for each node, as written otherwise.
    pub(super) fn fill_text(
        &self,
        s: &Spanned<RawStep>,
        text: &str,
        own: Option<&NodeFacts>,
    ) -> Result<String, ScenarioError> {
        match own {
            None => Ok(text.to_owned()),
            Some(f) => f.fill(text).map_err(|e| self.at(s, e, None)),
        }
    }

    /// A typed value of a step: as written, or (repeated for each node) made from the node's.
    pub(super) fn per_node<T>(
        &self,
        s: &Spanned<RawStep>,
        value: &Option<PerNode<T>>,
        own: Option<&NodeFacts>,
    ) -> Result<Option<T>, ScenarioError>
    where
        T: FromStr + Clone + crate::scenario::values::Named,
        T::Err: std::fmt::Display,
    {
        let template = match value {
            None => return Ok(None),
            Some(PerNode::Is(v)) => return Ok(Some(v.clone())),
            Some(PerNode::Each(t)) => t,
        };
        let Some(f) = own else {
            return Err(self.at(
                s,
                format!(
                    "`{}` takes a node's value: only a step with `each_node: true` has one",
                    shown(template)
                ),
                Some(format!(
                    "add `each_node: true`, or write the value; places: {}",
                    PLACES.join(", ")
                )),
            ));
        };
        let filled = f.fill(template).map_err(|e| self.at(s, e, None))?;
        if filled.contains('{') {
            return Err(self.at(
                s,
                format!("`{}` holds an unknown place", shown(template)),
                Some(format!("places: {}", PLACES.join(", "))),
            ));
        }
        filled.parse().map(Some).map_err(|e| {
            self.at(
                s,
                format!("{} `{}` for node {}: {e}", T::WHAT, shown(&filled), f.name),
                None,
            )
        })
    }
}
