//! `expect:`: the steps a run must see, each with one action, its node, its wait or bound,
//! and the step it comes after.

use serde_saphyr::Spanned;

use super::each_node::{names_the_node, NodeFacts};
use super::{one_of, ScenarioError, Validator, DEFAULT_WITHIN, MAX_FAULTS};
use crate::scenario::raw::{RawScenario, RawStep};
use crate::scenario::values::shown;
use crate::scenario::{
    Action, MachineAction, Node, Portal, QmpAction, QmpEventName, Service, Step,
};

/// A power cut of under a second is no cut for the guest's services to notice; one of over ten
/// minutes is a step's wait nobody sits out.
const MIN_OFF: std::time::Duration = std::time::Duration::from_secs(1);
const MAX_OFF: std::time::Duration = std::time::Duration::from_secs(600);

/// A marker on the LUN is a short text, read back in one go.
const MAX_LUN_TEXT: usize = 512;

impl Validator<'_> {
    pub(super) fn steps(
        &self,
        raw: &RawScenario,
        nodes: &[Node],
        facts: &[NodeFacts],
    ) -> Result<Vec<Step>, ScenarioError> {
        if raw.expect.value.is_empty() {
            return Err(self.at(
                &raw.expect,
                "`expect` is empty: a scenario must assert something",
                None,
            ));
        }
        let mut out = Vec::new();
        for s in &raw.expect.value {
            let step: &RawStep = &s.value;
            let kind = self.kind_of(s)?;
            if let Some(p) = step
                .portal_down
                .as_ref()
                .filter(|p| p.value == Portal::Second)
            {
                if raw.services.iscsi.second_portal.is_none() {
                    return Err(self.at(
                        p,
                        "`portal_down: second`, but the lab has one portal",
                        Some("give `services.iscsi.second_portal`, or take `first` down".into()),
                    ));
                }
            }
            let portal = step.iscsi_login.as_ref().and_then(|l| l.portal.as_ref());
            let portal = portal.or(step
                .iscsi_logins_all
                .as_ref()
                .and_then(|a| a.portal.as_ref()));
            if let Some(p) = portal {
                if raw.services.iscsi.second_portal.is_none() {
                    return Err(self.at(
                        p,
                        "a login's `portal` tells the lab's two portals apart, but it has one",
                        Some("give `services.iscsi.second_portal`, or leave `portal` out".into()),
                    ));
                }
            }
            let targets: Vec<String> = match (&step.node, step.each_node) {
                (Some(_), true) => {
                    return Err(self.at(
                        s,
                        "a step names one `node` or runs for `each_node`, not both",
                        None,
                    ))
                }
                (None, true) => {
                    if !PER_NODE_KINDS.contains(&kind) {
                        return Err(self.at(
                            s,
                            format!("`each_node` cannot repeat a `{kind}` step: it is about a service, not a node"),
                            Some(format!("steps that can: {}", PER_NODE_KINDS.join(", "))),
                        ));
                    }
                    if !names_the_node(step) {
                        return Err(self.at(
                            s,
                            format!("`each_node` would repeat the same `{kind}` step for every node: each would wait for the same record"),
                            Some("give it a value of the node's own: {mac}, {ip}, {initiator} or {target} (e.g. `mac: \"{mac}\"`)".into()),
                        ));
                    }
                    nodes.iter().map(|n| n.name.clone()).collect()
                }
                (Some(n), false) if nodes.iter().any(|x| &x.name == n) => vec![n.clone()],
                (Some(n), false) => {
                    return Err(self.at(
                        s,
                        format!("step names unknown node `{}`", shown(n)),
                        Some(one_of(nodes.iter().map(|x| x.name.as_str()))),
                    ))
                }
                (None, false) if nodes.len() == 1 => vec![nodes[0].name.clone()],
                (None, false) => {
                    return Err(self.at(
                        s,
                        "with several nodes every step must say which `node` it is about",
                        Some(format!(
                            "{}; or `each_node: true` for all of them",
                            one_of(nodes.iter().map(|x| x.name.as_str()))
                        )),
                    ))
                }
            };
            let (within, stretch) =
                match (step.within, step.bound) {
                    (Some(_), Some(_)) => return Err(self.at(
                        s,
                        "a step has `within` (a wait, stretched on a loaded machine) or `bound` \
                         (the assertion itself, never stretched), not both",
                        Some("keep `bound` where the time limit is what the step proves".into()),
                    )),
                    (None, Some(b)) => (b.0, false),
                    (w, None) => (w.map(|d| d.0).unwrap_or(DEFAULT_WITHIN), true),
                };
            for node in targets {
                let own = step
                    .each_node
                    .then(|| facts.iter().find(|f| f.name == node))
                    .flatten();
                let action = self.action(s, nodes, &node, own)?;
                let base_name = step
                    .name
                    .clone()
                    .unwrap_or_else(|| default_step_name(kind, &action));
                let name = if step.each_node {
                    format!("{base_name} ({node})")
                } else {
                    base_name
                };
                // After a step repeated for each node: this node's own instance of it.
                let after = match &step.after {
                    None => None,
                    Some(a) => {
                        let own = format!("{} ({node})", a.value);
                        if out.iter().any(|p: &Step| p.name == own) {
                            Some(own)
                        } else if out.iter().any(|p: &Step| p.name == a.value) {
                            Some(a.value.clone())
                        } else {
                            return Err(self.at(
                                a,
                                format!("`after` names no earlier step: `{}`", shown(&a.value)),
                                Some(one_of(out.iter().map(|p| p.name.as_str()))),
                            ));
                        }
                    }
                };
                out.push(Step {
                    name,
                    node,
                    within,
                    stretch,
                    action,
                    phase: step.phase,
                    after,
                });
            }
        }
        Ok(out)
    }

    /// The one action key a step has.
    fn kind_of(&self, s: &Spanned<RawStep>) -> Result<&'static str, ScenarioError> {
        let step = &s.value;
        let present = [
            ("console", step.console.is_some()),
            ("console_regex", step.console_regex.is_some()),
            ("dhcp_ack", step.dhcp_ack.is_some()),
            ("tftp_sent", step.tftp_sent.is_some()),
            ("http_get", step.http_get.is_some()),
            ("http_status", step.http_status.is_some()),
            ("iscsi_login", step.iscsi_login.is_some()),
            ("iscsi_login_refused", step.iscsi_login_refused.is_some()),
            ("iscsi_logins_all", step.iscsi_logins_all.is_some()),
            ("no_iscsi_login", step.no_iscsi_login.is_some()),
            ("iscsi_logout", step.iscsi_logout.is_some()),
            ("no_iscsi_logout", step.no_iscsi_logout.is_some()),
            ("refused", step.refused.is_some()),
            ("service_started", step.service_started.is_some()),
            ("send", step.send.is_some()),
            ("restart", step.restart.is_some()),
            ("portal_down", step.portal_down.is_some()),
            ("shell", step.shell.is_some()),
            ("lun_bytes", step.lun_bytes.is_some()),
            ("dhcp_add_host", step.dhcp_add_host.is_some()),
            ("qemu_exit", step.qemu_exit.is_some()),
            ("ibft_matches_lab", step.ibft_matches_lab.is_some()),
            ("root_on_session", step.root_on_session.is_some()),
            ("link", step.link.is_some()),
            ("reset", step.reset.is_some()),
            ("powerdown", step.powerdown.is_some()),
            ("qmp_event", step.qmp_event.is_some()),
            ("power_cycle", step.power_cycle.is_some()),
        ];
        let found: Vec<&'static str> = present
            .iter()
            .filter(|(_, p)| *p)
            .map(|(k, _)| *k)
            .collect();
        if found.len() != 1 {
            return Err(self.at(
                s,
                format!(
                    "a step needs exactly one action, found {}: {:?}",
                    found.len(),
                    found
                ),
                Some(format!(
                    "actions: {}",
                    one_of(present.iter().map(|(k, _)| *k))
                )),
            ));
        }
        Ok(found[0])
    }

    /// A step's action, its per-node values filled from `own` (a step repeated for each node).
    fn action(
        &self,
        s: &Spanned<RawStep>,
        nodes: &[Node],
        node: &str,
        own: Option<&NodeFacts>,
    ) -> Result<Action, ScenarioError> {
        let step: &RawStep = &s.value;
        let text = |t: &String| self.fill_text(s, t, own);
        let mut actions = Vec::new();
        if let Some(t) = &step.console {
            actions.push(("console", Action::Console(text(t)?)));
        }
        if let Some(r) = &step.console_regex {
            let re = regex::Regex::new(r)
                .map_err(|e| self.at(s, format!("bad console_regex: {e}"), None))?;
            actions.push(("console_regex", Action::ConsoleRegex(re)));
        }
        if let Some(d) = &step.dhcp_ack {
            actions.push((
                "dhcp_ack",
                Action::DhcpAck {
                    mac: self.per_node(s, &d.mac, own)?,
                    hostname: d.hostname.as_ref().map(text).transpose()?,
                    boot_file: d.boot_file.clone(),
                },
            ));
        }
        if let Some(t) = &step.tftp_sent {
            actions.push((
                "tftp_sent",
                Action::TftpSent {
                    file: t.file.clone(),
                    mac: self.per_node(s, &t.mac, own)?,
                },
            ));
        }
        if let Some(p) = &step.http_get {
            let p = if p.starts_with('/') {
                p.clone()
            } else {
                format!("/{p}")
            };
            actions.push(("http_get", Action::HttpGet(p)));
        }
        if let Some(l) = &step.iscsi_login {
            actions.push((
                "iscsi_login",
                Action::IscsiLogin {
                    initiator: self.per_node(s, &l.initiator, own)?,
                    target: self.per_node(s, &l.target, own)?,
                    from: self.per_node(s, &l.from, own)?,
                    mac: self.per_node(s, &l.mac, own)?,
                    session: l.session.unwrap_or_default(),
                    portal: l.portal.as_ref().map(|p| p.value),
                },
            ));
        }
        if let Some(h) = &step.http_status {
            let path = if h.path.starts_with('/') {
                h.path.clone()
            } else {
                format!("/{}", h.path)
            };
            actions.push((
                "http_status",
                Action::HttpStatus {
                    path,
                    status: h.status,
                },
            ));
        }
        if let Some(l) = &step.iscsi_login_refused {
            actions.push((
                "iscsi_login_refused",
                Action::IscsiLoginRefused {
                    initiator: self.per_node(s, &l.initiator, own)?,
                    target: self.per_node(s, &l.target, own)?,
                    status: l.status,
                },
            ));
        }
        if let Some(a) = &step.iscsi_logins_all {
            if a.at_least == 0 || a.at_least > MAX_FAULTS {
                return Err(self.at(s, format!("`at_least` must be 1..={MAX_FAULTS}"), None));
            }
            if a.initiator.is_none() && a.target.is_none() && a.from.is_none() && a.mac.is_none() {
                return Err(self.at(
                    s,
                    "`iscsi_logins_all` needs `initiator`, `target`, `from` or `mac` to compare",
                    None,
                ));
            }
            actions.push((
                "iscsi_logins_all",
                Action::AllLogins {
                    initiator: self.per_node(s, &a.initiator, own)?,
                    target: self.per_node(s, &a.target, own)?,
                    from: self.per_node(s, &a.from, own)?,
                    mac: self.per_node(s, &a.mac, own)?,
                    at_least: a.at_least,
                    portal: a.portal.as_ref().map(|p| p.value),
                },
            ));
        }
        if let Some(a) = &step.no_iscsi_login {
            if a.initiator.is_none() && a.from.is_none() && a.mac.is_none() {
                return Err(self.at(
                    s,
                    "`no_iscsi_login` needs `initiator`, `from` or `mac`: whose logins must be absent",
                    None,
                ));
            }
            actions.push((
                "no_iscsi_login",
                Action::NoLogin {
                    initiator: self.per_node(s, &a.initiator, own)?,
                    from: self.per_node(s, &a.from, own)?,
                    mac: self.per_node(s, &a.mac, own)?,
                },
            ));
        }
        if let Some(l) = &step.iscsi_logout {
            actions.push((
                "iscsi_logout",
                Action::IscsiLogout {
                    initiator: self.per_node(s, &l.initiator, own)?,
                    target: self.per_node(s, &l.target, own)?,
                },
            ));
        }
        if let Some(l) = &step.no_iscsi_logout {
            if l.initiator.is_none() && l.target.is_none() {
                return Err(self.at(
                    s,
                    "`no_iscsi_logout` needs `initiator` or `target`: whose logouts must be absent",
                    None,
                ));
            }
            actions.push((
                "no_iscsi_logout",
                Action::NoLogout {
                    initiator: self.per_node(s, &l.initiator, own)?,
                    target: self.per_node(s, &l.target, own)?,
                },
            ));
        }
        if let Some(r) = &step.refused {
            if r.service == Service::Dhcp {
                return Err(self.at(
                        s,
                        "`refused` applies to http and iscsi: a DHCP server that is down is simply not running",
                        Some("assert a late DHCP server with `service_started: dhcp`".into()),
                    ));
            }
            actions.push((
                "refused",
                Action::Refused {
                    service: r.service,
                    from: r.from,
                },
            ));
        }
        if let Some(svc) = step.service_started {
            actions.push(("service_started", Action::ServiceStarted(svc)));
        }
        if let Some(t) = &step.send {
            actions.push(("send", Action::Send(text(t)?)));
        }
        if let Some(svc) = step.restart {
            actions.push(("restart", Action::Restart(svc)));
        }
        if let Some(p) = &step.portal_down {
            actions.push(("portal_down", Action::PortalDown(p.value)));
        }
        if let Some(c) = &step.shell {
            if c.trim().is_empty() || c.contains(['\n', '\r']) {
                return Err(self.at(
                    s,
                    "`shell` takes one non-empty command line",
                    Some("join several commands with `&&` or `;`".into()),
                ));
            }
            actions.push(("shell", Action::Shell(text(c)?)));
        }
        if let Some(b) = &step.lun_bytes {
            if b.text.is_empty() || b.text.len() > MAX_LUN_TEXT {
                return Err(self.at(
                    s,
                    format!("`lun_bytes.text` must be 1..={MAX_LUN_TEXT} bytes"),
                    None,
                ));
            }
            actions.push((
                "lun_bytes",
                Action::LunBytes {
                    offset: b.offset,
                    text: text(&b.text)?,
                },
            ));
        }
        if let Some(h) = &step.dhcp_add_host {
            if !nodes
                .iter()
                .any(|n| n.nics.iter().any(|nic| nic.mac == h.mac))
            {
                return Err(self.at(
                    s,
                    format!(
                        "`dhcp_add_host` names MAC {}, which no node's NIC has",
                        h.mac
                    ),
                    None,
                ));
            }
            actions.push((
                "dhcp_add_host",
                Action::DhcpAddHost(crate::scenario::DhcpHost {
                    mac: h.mac,
                    hostname: h.hostname.clone(),
                    ip: h.ip,
                }),
            ));
        }
        for (kind, flag, action) in [
            ("qemu_exit", step.qemu_exit, Action::QemuExit),
            (
                "ibft_matches_lab",
                step.ibft_matches_lab,
                Action::IbftMatchesLab,
            ),
            (
                "root_on_session",
                step.root_on_session,
                Action::RootOnSession,
            ),
        ] {
            match flag {
                Some(true) => actions.push((kind, action)),
                Some(false) => {
                    return Err(self.at(
                        s,
                        format!("`{kind}: false` asserts nothing"),
                        Some(format!("write `{kind}: true`, or drop the step")),
                    ))
                }
                None => {}
            }
        }
        if let Some(l) = &step.link {
            let Some(n) = nodes.iter().find(|n| n.name == node) else {
                return Err(self.at(
                    s,
                    format!("step names unknown node `{}`", shown(node)),
                    None,
                ));
            };
            let mac = match l.nic {
                Some(mac) if n.nics.iter().any(|nic| nic.mac == mac) => mac,
                Some(mac) => {
                    return Err(self.at(
                        s,
                        format!("`link.nic` is {mac}, which is not a NIC of {node}"),
                        Some({
                            let macs: Vec<String> =
                                n.nics.iter().map(|nic| nic.mac.to_string()).collect();
                            one_of(macs.iter().map(String::as_str))
                        }),
                    ))
                }
                None => n.boot_nic().mac,
            };
            actions.push((
                "link",
                Action::Machine(MachineAction::Qmp(QmpAction::Link { mac, up: l.up })),
            ));
        }
        for (kind, flag, action) in [
            ("reset", step.reset, QmpAction::Reset),
            ("powerdown", step.powerdown, QmpAction::Powerdown),
        ] {
            match flag {
                Some(true) => actions.push((kind, Action::Machine(MachineAction::Qmp(action)))),
                Some(false) => {
                    return Err(self.at(
                        s,
                        format!("`{kind}: false` does nothing"),
                        Some(format!("write `{kind}: true`, or drop the step")),
                    ))
                }
                None => {}
            }
        }
        if let Some(p) = &step.power_cycle {
            let off = |key: String, d: std::time::Duration| {
                if d < MIN_OFF || d > MAX_OFF {
                    Err(self.at(
                        s,
                        format!(
                            "`{key}` is {}; it must be {} to {}",
                            humantime::format_duration(d),
                            humantime::format_duration(MIN_OFF),
                            humantime::format_duration(MAX_OFF)
                        ),
                        None,
                    ))
                } else {
                    Ok(d)
                }
            };
            let off_for = off("power_cycle.off_for".into(), p.off_for.0)?;
            let services = p
                .services
                .iter()
                .map(|(svc, back)| {
                    off(format!("power_cycle.services.{}", svc.name()), back.0).map(|d| (*svc, d))
                })
                .collect::<Result<Vec<_>, _>>()?;
            actions.push((
                "power_cycle",
                Action::Machine(MachineAction::PowerCycle { off_for, services }),
            ));
        }
        if let Some(e) = &step.qmp_event {
            let Some(name) = QmpEventName::parse(e) else {
                return Err(self.at(
                    s,
                    format!("unknown QMP event `{}`", shown(e)),
                    Some(one_of(QmpEventName::ALL.iter().map(|e| e.as_str()))),
                ));
            };
            actions.push(("qmp_event", Action::QmpEvent(name)));
        }
        // `kind_of` has made sure there is exactly one.
        let Some((_, action)) = actions.pop() else {
            return Err(self.at(s, "a step needs exactly one action", None));
        };
        if matches!(&action, Action::Console(t) if t.is_empty()) {
            return Err(self.at(s, "an empty `console` text matches any line", None));
        }
        Ok(action)
    }
}

/// The steps `each_node` repeats: about the node they run on, or a service's record of it
/// (with the node's `{mac}`, `{ip}`, `{initiator}` or `{target}` in place of a value).
const PER_NODE_KINDS: [&str; 21] = [
    "console",
    "power_cycle",
    "link",
    "reset",
    "powerdown",
    "qmp_event",
    "console_regex",
    "send",
    "shell",
    "lun_bytes",
    "qemu_exit",
    "ibft_matches_lab",
    "root_on_session",
    "dhcp_ack",
    "tftp_sent",
    "iscsi_login",
    "iscsi_login_refused",
    "iscsi_logins_all",
    "no_iscsi_login",
    "iscsi_logout",
    "no_iscsi_logout",
];

fn default_step_name(kind: &str, a: &Action) -> String {
    match a {
        Action::Console(t) | Action::Send(t) | Action::HttpGet(t) | Action::Shell(t) => {
            format!("{kind} {t:?}")
        }
        Action::Restart(service) => format!("{kind} {}", service.name()),
        Action::PortalDown(which) => format!("{kind} {}", which.name()),
        Action::LunBytes { offset, .. } => format!("{kind} at {offset}"),
        Action::DhcpAddHost(h) => format!("{kind} {}", h.mac),
        Action::QemuExit => kind.to_string(),
        Action::IbftMatchesLab => "the iBFT matches what the lab served".to_string(),
        Action::RootOnSession => "the root is on the iSCSI session".to_string(),
        Action::Machine(m) => m.describe(),
        Action::QmpEvent(e) => format!("{kind} {}", e.as_str()),
        Action::ConsoleRegex(r) => format!("{kind} /{}/", r.as_str()),
        Action::TftpSent { file, mac } => match mac {
            Some(m) => format!("{kind} {file} to {m}"),
            None => format!("{kind} {file}"),
        },
        Action::DhcpAck { mac, hostname, .. } => {
            let who = mac
                .map(|m| m.to_string())
                .or(hostname.clone())
                .unwrap_or_else(|| "any".into());
            format!("{kind} {who}")
        }
        Action::HttpStatus { path, status } => format!("{kind} {path} {status}"),
        Action::Refused { service, .. } | Action::ServiceStarted(service) => {
            format!("{kind} {}", service.name())
        }
        Action::IscsiLogin { initiator, .. }
        | Action::IscsiLoginRefused { initiator, .. }
        | Action::AllLogins { initiator, .. }
        | Action::NoLogin { initiator, .. }
        | Action::IscsiLogout { initiator, .. }
        | Action::NoLogout { initiator, .. } => {
            format!(
                "{kind} {}",
                initiator.as_ref().map(|i| i.as_str()).unwrap_or("any")
            )
        }
    }
}
