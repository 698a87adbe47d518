//! `services.iscsi.target` or `services.iscsi.per_node`: which disk each node boots from. Two
//! nodes on one writable LUN corrupt its filesystem in the field, so a scenario with several
//! nodes must give each its own target (and with it its own disk and ACL).

use std::collections::BTreeMap;

use super::{ScenarioError, Validator};
use crate::scenario::raw::RawScenario;
use crate::scenario::values::{shown, Iqn};
use crate::scenario::NodeExport;

/// The placeholder a `per_node` name template holds: the node's name, or its boot MAC as iPXE's
/// `${mac:hexhyp}` writes it (a menu that derives the IQN from the MAC writes the same).
const NODE: &str = "{node}";
const MAC_HEXHYP: &str = "{mac:hexhyp}";

impl Validator<'_> {
    /// The one target (for one node), or one target per node: `(first target, per node)`.
    pub(super) fn targets(
        &self,
        raw: &RawScenario,
    ) -> Result<(Iqn, Vec<NodeExport>), ScenarioError> {
        let iscsi = &raw.services.iscsi;
        let nodes: Vec<&str> = raw
            .nodes
            .iter()
            .flat_map(|l| l.value.iter())
            .map(|n| n.name.value.as_str())
            .collect();
        // Each node's boot MAC (the NIC marked `boot`, or its only one) in iPXE's hexhyp form.
        let hexhyp = |node: &str| {
            let n = raw
                .nodes
                .iter()
                .flat_map(|l| l.value.iter())
                .find(|n| n.name.value == node)?;
            let nic = n
                .nics
                .value
                .iter()
                .find(|x| x.boot)
                .or(n.nics.value.first())?;
            Some(nic.mac.value.to_string().replace(':', "-"))
        };
        match (&iscsi.target, &iscsi.per_node) {
            (Some(t), Some(_)) => Err(self.at(
                t,
                "`target` and `per_node` both name the targets: give one",
                Some("`target` for one node, `per_node` for a fleet".into()),
            )),
            (None, None) => Err(self.cx.err(
                None,
                "services.iscsi needs `target` (one node) or `per_node` (a disk for each node)",
                None,
            )),
            (Some(t), None) if nodes.len() > 1 => Err(self.at(
                t,
                format!(
                    "{} nodes would share one writable LUN (target {}): the second node to mount its root corrupts the first's",
                    nodes.len(),
                    t.value
                ),
                Some(format!(
                    "give each node its own target, disk and ACL: `per_node: {{ target: \"{}\", initiator: \"...:{NODE}\" }}`",
                    templated(t.value.as_str(), nodes[0])
                )),
            )),
            (Some(t), None) => Ok((t.value.clone(), Vec::new())),
            (None, Some(p)) => {
                let name = |what: &str, text: &serde_saphyr::Spanned<String>, node: &str| {
                    if !text.value.contains(NODE) && !text.value.contains(MAC_HEXHYP) {
                        return Err(self.at(
                            text,
                            format!("per_node {what} `{}` has no {NODE} or {MAC_HEXHYP}: every node would get the same one", shown(&text.value)),
                            Some(format!("e.g. iqn.2026-11.lab:{NODE}-root")),
                        ));
                    }
                    let full = text
                        .value
                        .replace(NODE, node)
                        .replace(MAC_HEXHYP, &hexhyp(node).unwrap_or_default());
                    full.parse::<Iqn>().map_err(|e| {
                        self.at(text, format!("per_node {what} for node {node}, `{}`: {e}", shown(&full)), None)
                    })
                };
                let mut out = Vec::new();
                let mut seen = BTreeMap::new();
                for node in &nodes {
                    let target = name("target", &p.value.target, node)?;
                    let initiator = match &p.value.initiator {
                        Some(i) => Some(name("initiator", i, node)?),
                        None => None,
                    };
                    // Node names differ only in case: iSCSI names compare without it.
                    if let Some(other) = seen.insert(target.clone(), *node) {
                        return Err(self.at(
                            &p.value.target,
                            format!("nodes {other} and {node} get the same target {target}"),
                            Some("iSCSI names ignore case: give the nodes names that differ in more than case".into()),
                        ));
                    }
                    out.push(NodeExport {
                        node: node.to_string(),
                        target,
                        initiator,
                        // Filled in once the DHCP hosts are known (`node_addresses`).
                        address: None,
                    });
                }
                if p.value.initiator.is_some()
                    && iscsi.acl.as_ref().is_some_and(|a| !a.value.initiators.is_empty())
                {
                    return Err(self.at(
                        &p.value.target,
                        "`per_node.initiator` and `acl.initiators` both say who may log in",
                        Some("per_node.initiator gives each node's target its own; drop acl.initiators".into()),
                    ));
                }
                Ok((out[0].target.clone(), out))
            }
        }
    }
}

/// `iqn.2026-11.lab:node01-root` for node01 -> `iqn.2026-11.lab:{node}-root`, for the hint.
fn templated(target: &str, first_node: &str) -> String {
    let lower = first_node.to_ascii_lowercase();
    if !lower.is_empty() && target.contains(&lower) {
        target.replacen(&lower, NODE, 1)
    } else {
        format!("{target}-{NODE}")
    }
}

impl Validator<'_> {
    /// `per_node.address: true`: each node's target admits its node's fixed address only.
    pub(super) fn node_addresses(
        &self,
        raw: &RawScenario,
        exports: &mut [NodeExport],
        facts: &[super::each_node::NodeFacts],
    ) -> Result<(), ScenarioError> {
        let Some(flag) = raw
            .services
            .iscsi
            .per_node
            .as_ref()
            .and_then(|p| p.value.address.as_ref())
        else {
            return Ok(());
        };
        if !flag.value {
            return Ok(());
        }
        for e in exports.iter_mut() {
            let ip = facts.iter().find(|f| f.name == e.node).and_then(|f| f.ip);
            let Some(ip) = ip else {
                return Err(self.at(
                    flag,
                    format!("per_node.address: node {} has no fixed address to admit", e.node),
                    Some("give it one: a DHCP host with `ip`, `fleet.ip`, or a `dhcp_add_host` step with `ip`".into()),
                ));
            };
            e.address = Some(ip);
        }
        Ok(())
    }
}
