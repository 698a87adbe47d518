//! What a step waits for, in words: the timeout messages and the default step names' sense.

use super::*;

/// What a step waits for, in words, for timeout messages.
pub fn describe(a: &Action) -> String {
    match a {
        Action::Console(t) => format!("a console line containing {t:?}"),
        Action::ConsoleRegex(r) => format!("a console line matching /{}/", r.as_str()),
        Action::DhcpAck {
            mac,
            hostname,
            boot_file,
        } => {
            let mut s = "a DHCP ACK".to_string();
            if let Some(m) = mac {
                s.push_str(&format!(" for {m}"));
            }
            if let Some(h) = hostname {
                s.push_str(&format!(" with hostname {h}"));
            }
            if let Some(f) = boot_file {
                s.push_str(&format!(" with boot file {f}"));
            }
            s
        }
        Action::TftpSent { file, mac } => {
            let mut s = format!("the TFTP server to send {file}");
            if let Some(m) = mac {
                s.push_str(&format!(" to {m}"));
            }
            s
        }
        Action::HttpGet(p) => format!("an HTTP request for {p} answered with 2xx"),
        Action::HttpStatus { path, status } => {
            format!("an HTTP request for {path} answered with {status}")
        }
        Action::IscsiLoginRefused {
            initiator,
            target,
            status,
        } => {
            let mut s = "a refused or failed iSCSI login".to_string();
            if let Some(i) = initiator {
                s.push_str(&format!(" from {i}"));
            }
            if let Some(t) = target {
                s.push_str(&format!(" to {t}"));
            }
            if let Some(st) = status {
                s.push_str(&format!(" answered with status {}", st.name()));
            }
            s
        }
        Action::IscsiLogin {
            initiator,
            target,
            from,
            mac,
            session,
            portal,
        } => {
            let mut s = match session {
                SessionType::Normal => "an iSCSI login (normal session)".to_string(),
                SessionType::Discovery => "an iSCSI discovery login".to_string(),
            };
            describe_login(&mut s, initiator, target, from, mac);
            if let Some(p) = portal {
                s.push_str(&format!(" on the {} portal", p.name()));
            }
            s
        }
        Action::Refused { service, from } => {
            let mut s = format!(
                "a connection the {} server turned away while down",
                service.name()
            );
            if let Some(f) = from {
                s.push_str(&format!(" from address {f}"));
            }
            s
        }
        Action::ServiceStarted(service) => format!("the {} server starting", service.name()),
        Action::AllLogins {
            initiator,
            target,
            from,
            mac,
            at_least,
            portal,
        } => {
            let mut s = format!("at least {at_least} iSCSI logins, every one");
            describe_login(&mut s, initiator, target, from, mac);
            if let Some(p) = portal {
                s.push_str(&format!(" on the {} portal", p.name()));
            }
            s
        }
        Action::NoLogin {
            initiator,
            from,
            mac,
        } => {
            let mut s = "the target's records to hold no login attempt".to_string();
            describe_login(&mut s, initiator, &None, from, mac);
            s
        }
        Action::IscsiLogout { initiator, target } => {
            let mut s = "an iSCSI Logout Request".to_string();
            describe_login(&mut s, initiator, target, &None, &None);
            s
        }
        Action::NoLogout { initiator, target } => {
            let mut s = "the target's records to hold no logout".to_string();
            describe_login(&mut s, initiator, target, &None, &None);
            s
        }
        Action::Send(t) => format!("typing {t:?}"),
        Action::Restart(service) => format!("the {} server to restart", service.name()),
        Action::PortalDown(which) => format!("the {} iSCSI portal to go down", which.name()),
        Action::DhcpAddHost(h) => format!("the DHCP server to take host {}", h.mac),
        Action::Shell(cmd) => format!("the shell to finish {cmd:?}"),
        Action::LunBytes { offset, text } => {
            format!("the LUN to hold {text:?} at byte {offset}")
        }
        Action::QemuExit => "QEMU to exit".to_string(),
        Action::IbftMatchesLab => {
            "the guest's report of its iBFT, to compare it with what the lab served".to_string()
        }
        Action::RootOnSession => {
            "the guest's report of its root disk, to check it is on the iSCSI session".to_string()
        }
        Action::Machine(m) => format!("QEMU to carry out a {}", m.describe()),
        Action::QmpEvent(e) => format!("QEMU to report {} for the node's machine", e.as_str()),
    }
}

/// The parts of a login a step asks for, in words.
pub(super) fn describe_login(
    s: &mut String,
    initiator: &Option<crate::scenario::Iqn>,
    target: &Option<crate::scenario::Iqn>,
    from: &Option<std::net::IpAddr>,
    mac: &Option<crate::scenario::MacAddr>,
) {
    if let Some(m) = mac {
        s.push_str(&format!(" from MAC {m}"));
    }
    if let Some(i) = initiator {
        s.push_str(&format!(" from {i}"));
    }
    if let Some(t) = target {
        s.push_str(&format!(" to {t}"));
    }
    if let Some(f) = from {
        s.push_str(&format!(" from address {f}"));
    }
}
