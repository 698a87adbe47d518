//! Which service record meets which step, and the `iscsi_logins_all` check over all of them.

use super::*;
use crate::scenario::Iqn;

/// For `iscsi_logins_all`: `Err` names the first accepted login that does not match, `Ok(None)`
/// means too few so far, `Ok(Some)` describes the logins that all matched.
pub(super) fn all_logins(
    action: &Action,
    events: &[Event],
    at_least: u32,
) -> Result<Option<String>, Fail> {
    let Action::AllLogins {
        initiator,
        target,
        from,
        mac,
        portal,
        ..
    } = action
    else {
        return Ok(None);
    };
    let probe = Action::IscsiLogin {
        initiator: initiator.clone(),
        target: target.clone(),
        from: *from,
        mac: *mac,
        session: SessionType::Normal,
        portal: *portal,
    };
    let mut seen = Vec::new();
    for e in events {
        // Discovery sessions reach no LUN: the claim is about the sessions that do.
        if let EventKind::IscsiLogin {
            initiator: ei,
            target: et,
            source_ip,
            source_mac,
            session_type,
            ..
        } = &e.kind
        {
            if session_type != SessionType::Normal.key_value() {
                continue;
            }
            // The claim is about the logins that share one of its names: in a fleet, the other
            // nodes' logins to their own targets are not this node's. One that shares any (this
            // node's IQN to another target, another IQN to this node's target) must match all.
            let any_named =
                initiator.is_some() || target.is_some() || from.is_some() || mac.is_some();
            let related = initiator
                .as_ref()
                .is_some_and(|i| i.as_str().eq_ignore_ascii_case(ei))
                || target
                    .as_ref()
                    .is_some_and(|t| t.as_str().eq_ignore_ascii_case(et))
                || from.is_some_and(|f| f == *source_ip)
                || mac.is_some_and(|m| mac_matches(&m, source_mac.as_deref()));
            if any_named && !related {
                continue;
            }
            if !event_matches(&probe, e) {
                return Err(contradiction(
                    e,
                    format!("the iSCSI login at {:.1}s does not match", e.at),
                ));
            }
            seen.push(format!("{ei} from {source_ip} at {:.1}s", e.at));
        }
    }
    if seen.len() >= at_least as usize {
        Ok(Some(format!("{} logins: {}", seen.len(), seen.join("; "))))
    } else {
        Ok(None)
    }
}

/// For `no_iscsi_login`: `Err` names the first login attempt of the run (accepted or not, any
/// session type) by one of the step's names; `Ok` says how many attempts there were, all by
/// others. Absence is only evidence where every attempt is recorded: the lab's login proxy
/// records each one, refused and malformed ones included.
pub(super) fn no_login(action: &Action, events: &[Event]) -> Result<String, Fail> {
    let Action::NoLogin {
        initiator,
        from,
        mac,
    } = action
    else {
        return Ok(String::new());
    };
    let by_initiator = |i: &str| {
        initiator
            .as_ref()
            .is_some_and(|w| w.as_str().eq_ignore_ascii_case(i))
    };
    let mut others = 0;
    for e in events {
        let theirs = match &e.kind {
            EventKind::IscsiLogin {
                initiator: i,
                source_ip,
                source_mac,
                ..
            } => {
                by_initiator(i)
                    || from.is_some_and(|f| f == *source_ip)
                    || mac.is_some_and(|m| mac_matches(&m, source_mac.as_deref()))
            }
            EventKind::IscsiLoginFailed {
                initiator: i,
                source_ip,
                ..
            } => by_initiator(i) || from.is_some_and(|f| f == *source_ip),
            _ => continue,
        };
        if theirs {
            return Err(contradiction(
                e,
                format!(
                    "a login attempt at {:.1}s that should not have been made",
                    e.at
                ),
            ));
        }
        others += 1;
    }
    Ok(format!(
        "none of the run's {others} login attempt(s) is theirs"
    ))
}

/// For `no_iscsi_logout`: `Err` names the first Logout Request of the run by the step's
/// initiator or for its target; `Ok` says how many logouts there were, all others'. The proxy
/// reads every PDU header of every logged-in connection, so a logout it passed on is recorded.
pub(super) fn no_logout(action: &Action, events: &[Event]) -> Result<String, Fail> {
    let Action::NoLogout { initiator, target } = action else {
        return Ok(String::new());
    };
    let mut others = 0;
    for e in events {
        let EventKind::IscsiLogout { session, .. } = &e.kind else {
            continue;
        };
        if names_session(initiator, target, session) {
            return Err(contradiction(
                e,
                format!("a logout at {:.1}s that should not have been made", e.at),
            ));
        }
        others += 1;
    }
    Ok(format!("none of the run's {others} logout(s) is theirs"))
}

/// Whether a session is the one an initiator and a target (each if given) name.
fn names_session(
    initiator: &Option<Iqn>,
    target: &Option<Iqn>,
    s: &crate::services::events::IscsiSession,
) -> bool {
    initiator
        .as_ref()
        .is_none_or(|i| i.as_str().eq_ignore_ascii_case(&s.initiator))
        && target
            .as_ref()
            .is_none_or(|t| t.as_str().eq_ignore_ascii_case(&s.target))
}

/// A record that contradicts a claim over all the records: `what`, then the record itself.
fn contradiction(e: &Event, what: String) -> Fail {
    Fail::new(
        Cause::RecordMismatch,
        format!("{what}: {}", serde_json::to_string(e).unwrap_or_default()),
        vec![Evidence::record(e)],
    )
}

pub(super) fn event_matches(action: &Action, e: &Event) -> bool {
    match (action, &e.kind) {
        (
            Action::DhcpAck {
                mac,
                hostname,
                boot_file,
            },
            EventKind::Dhcp {
                message,
                mac: emac,
                hostname: ehost,
                boot_file: efile,
                ..
            },
        ) => {
            message == "DHCPACK"
                && mac.is_none_or(|m| emac.eq_ignore_ascii_case(&m.to_string()))
                && hostname
                    .as_ref()
                    .is_none_or(|h| ehost.as_deref() == Some(h.as_str()))
                && boot_file
                    .as_ref()
                    .is_none_or(|f| efile.as_deref() == Some(f.as_str()))
        }
        (
            Action::TftpSent { file, mac },
            EventKind::TftpSent {
                file: efile,
                mac: emac,
                ..
            },
        ) => {
            file == efile
                && mac.is_none_or(|m| {
                    emac.as_deref()
                        .is_some_and(|e| e.eq_ignore_ascii_case(&m.to_string()))
                })
        }
        (Action::QmpEvent(name), EventKind::Qmp { event, .. }) => event == name.as_str(),
        (Action::IscsiLogout { initiator, target }, EventKind::IscsiLogout { session, .. }) => {
            names_session(initiator, target, session)
        }
        (Action::HttpGet(p), EventKind::HttpRequest { path, status, .. }) => {
            path == p && (200..300).contains(status)
        }
        (
            Action::IscsiLogin {
                initiator,
                target,
                from,
                mac,
                session,
                portal,
            },
            EventKind::IscsiLogin {
                initiator: ei,
                target: et,
                source_ip,
                source_mac,
                session_type,
                portal: eportal,
                ..
            },
        ) => {
            session_type == session.key_value()
                && portal.is_none_or(|p| *eportal == Some(p))
                && names_match(initiator, target, ei, et)
                && from.is_none_or(|f| f == *source_ip)
                && mac.is_none_or(|m| mac_matches(&m, source_mac.as_deref()))
        }
        (
            Action::HttpStatus {
                path: p,
                status: want,
            },
            EventKind::HttpRequest { path, status, .. },
        ) => path == p && status == want,
        (
            Action::IscsiLoginRefused {
                initiator,
                target,
                status,
            },
            EventKind::IscsiLoginFailed {
                initiator: ei,
                target: et,
                status: es,
                ..
            },
        ) => {
            status.is_none_or(|s| es.as_deref() == Some(s.name()))
                && names_match(initiator, target, ei, et)
        }
        (
            Action::Refused { service, from },
            EventKind::Refused {
                service: es, peer, ..
            },
        ) => es == service.name() && from.is_none_or(|f| f == *peer),
        (Action::ServiceStarted(service), EventKind::Service { service: es, state }) => {
            es == service.name() && state == "started"
        }
        _ => false,
    }
}

/// The initiator and target names a login step asks for (IQNs compare without regard to case),
/// against a record's.
fn names_match(
    initiator: &Option<crate::scenario::Iqn>,
    target: &Option<crate::scenario::Iqn>,
    record_initiator: &str,
    record_target: &str,
) -> bool {
    initiator
        .as_ref()
        .is_none_or(|i| i.as_str().eq_ignore_ascii_case(record_initiator))
        && target
            .as_ref()
            .is_none_or(|t| t.as_str().eq_ignore_ascii_case(record_target))
}

/// A step's MAC against the one a record took from the lab's neighbour table, if it had one.
fn mac_matches(want: &crate::scenario::MacAddr, record: Option<&str>) -> bool {
    record.is_some_and(|r| r.eq_ignore_ascii_case(&want.to_string()))
}

/// A record about one node's machine (a QMP event) meets only that node's steps; the services'
/// records are anyone's until the step's own values say whose.
pub(super) fn record_of_node(e: &Event, node: &str) -> bool {
    match &e.kind {
        EventKind::Qmp { node: n, .. } | EventKind::Machine { node: n, .. } => n == node,
        _ => true,
    }
}
