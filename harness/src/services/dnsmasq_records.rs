//! Turns dnsmasq's log lines into the run's records, and moves the `chain-undionly` marks
//! ([`super::chain`]) as the records say the chain advances.
//!
//! A DHCP message's boot file comes on option lines after the message line, so a message is
//! held until the next message, a line of another transaction, or a quiet pipe
//! ([`Records::flush`]), and recorded at the time its own line arrived.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::chain::ChainMarks;
use super::dhcp::{line_xid, parse_boot_file, parse_line, parse_sent_address, DhcpLine};
use super::tftp;
use crate::services::events::EventKind;

/// What one log line asks of the pump.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Record this, as of `at` (run seconds).
    Record { at: f64, kind: EventKind },
    /// The chain marks changed: write the marks file and make dnsmasq read it again.
    ReloadMarks,
}

pub struct Records {
    pending: Option<Pending>,
    mac_of_ip: HashMap<Ipv4Addr, String>,
    chain: Option<ChainMarks>,
}

struct Pending {
    at: f64,
    line: DhcpLine,
    boot_file: Option<String>,
    netmask: Option<Ipv4Addr>,
    router: Option<Ipv4Addr>,
}

impl Records {
    pub fn new(chain: Option<ChainMarks>) -> Records {
        Records {
            pending: None,
            mac_of_ip: HashMap::new(),
            chain,
        }
    }

    /// The marks as they stand, for writing their file.
    pub fn chain(&self) -> Option<&ChainMarks> {
        self.chain.as_ref()
    }

    /// Whether a message waits for its option lines.
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// One log line that arrived at `at`.
    pub fn line(&mut self, at: f64, line: &str) -> Vec<Effect> {
        if let Some(d) = parse_line(line) {
            let mut out = self.flush();
            self.pending = Some(Pending {
                at,
                line: d,
                boot_file: None,
                netmask: None,
                router: None,
            });
            // A DISCOVER or REQUEST carries no options of the server's: nothing to wait for.
            if !matches!(
                self.pending.as_ref().map(|p| p.line.message.as_str()),
                Some("DHCPOFFER" | "DHCPACK")
            ) {
                out.extend(self.flush());
            }
            return out;
        }
        if let Some((xid, file)) = parse_boot_file(line) {
            if let Some(p) = self.pending.as_mut().filter(|p| p.line.xid == Some(xid)) {
                p.boot_file = Some(file);
                return Vec::new();
            }
        }
        if let Some((xid, code, addr)) = parse_sent_address(line) {
            if let Some(p) = self.pending.as_mut().filter(|p| p.line.xid == Some(xid)) {
                match code {
                    1 => p.netmask = Some(addr),
                    _ => p.router = Some(addr),
                }
                return Vec::new();
            }
        }
        let mut out = match (&self.pending, line_xid(line)) {
            (Some(p), Some(x)) if p.line.xid != Some(x) => self.flush(),
            _ => Vec::new(),
        };
        if let Some(sent) = tftp::parse_sent(line) {
            out.extend(self.flush());
            out.extend(self.tftp_sent(at, sent));
        }
        out
    }

    /// No more option lines are coming for the held message: record it.
    pub fn flush(&mut self) -> Vec<Effect> {
        let Some(Pending {
            at,
            line: d,
            boot_file,
            netmask,
            router,
        }) = self.pending.take()
        else {
            return Vec::new();
        };
        let ack = d.message == "DHCPACK";
        if let (true, Some(ip)) = (ack, d.ip) {
            self.mac_of_ip.insert(ip, d.mac.clone());
        }
        let mut out = vec![Effect::Record {
            at,
            kind: EventKind::Dhcp {
                message: d.message,
                mac: d.mac.clone(),
                ip: d.ip,
                hostname: d.hostname,
                boot_file,
                netmask,
                router,
            },
        }];
        // The chained stage has its answer: the next request is a ROM's again.
        if ack && self.chain.as_mut().is_some_and(|c| c.clear(&d.mac)) {
            out.push(Effect::ReloadMarks);
            out.push(mark(at, &d.mac, "cleared"));
        }
        out
    }

    fn tftp_sent(&mut self, at: f64, sent: tftp::Sent) -> Vec<Effect> {
        let mac = self.mac_of_ip.get(&sent.peer).cloned();
        let mut out = vec![Effect::Record {
            at,
            kind: EventKind::TftpSent {
                file: sent.name().to_string(),
                peer: sent.peer,
                mac: mac.clone(),
            },
        }];
        if let (Some(mac), Some(chain)) = (mac, self.chain.as_mut()) {
            if sent.name() == tftp::BOOT_FILE && chain.mark(&mac) {
                out.push(Effect::ReloadMarks);
                out.push(mark(at, &mac, "chained"));
            }
        }
        out
    }
}

fn mark(at: f64, mac: &str, state: &str) -> Effect {
    Effect::Record {
        at,
        kind: EventKind::ChainMark {
            mac: mac.to_string(),
            state: state.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// dnsmasq 2.90's log of a real run of scenarios/chain-undionly.yaml (router
    /// advertisements and timestamps removed): the ROM's DHCP, the TFTP transfer, the reread
    /// of the marks, undionly's DHCP, the initramfs's, and after a reboot the ROM's DHCP and
    /// the transfer again.
    const RECORDED: &str = include_str!("../../tests-data/dnsmasq-chain-undionly.log");

    fn marks() -> ChainMarks {
        let s = crate::scenario::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/chain-undionly.yaml"),
        )
        .expect("the chain-undionly scenario loads");
        ChainMarks::for_scenario(&s, Path::new("/run/x")).expect("it has a chain node")
    }

    fn replay(records: &mut Records) -> Vec<Effect> {
        let mut out = Vec::new();
        for (i, l) in RECORDED.lines().enumerate() {
            out.extend(records.line(i as f64, l));
        }
        out.extend(records.flush());
        out
    }

    fn kinds(effects: &[Effect]) -> Vec<&EventKind> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Record { kind, .. } => Some(kind),
                Effect::ReloadMarks => None,
            })
            .collect()
    }

    #[test]
    fn acks_carry_the_netmask_and_router_they_were_sent() {
        let mut r = Records::new(Some(marks()));
        let effects = replay(&mut r);
        let sent: Vec<(Option<Ipv4Addr>, Option<Ipv4Addr>)> = kinds(&effects)
            .into_iter()
            .filter_map(|k| match k {
                EventKind::Dhcp {
                    message,
                    netmask,
                    router,
                    ..
                } if message == "DHCPACK" => Some((*netmask, *router)),
                _ => None,
            })
            .collect();
        assert!(!sent.is_empty());
        for s in sent {
            assert_eq!(
                s,
                (
                    Some(Ipv4Addr::new(255, 255, 255, 0)),
                    Some(Ipv4Addr::new(10, 77, 0, 1))
                )
            );
        }
    }

    #[test]
    fn acks_carry_the_boot_file_they_were_sent() {
        let mut r = Records::new(Some(marks()));
        let effects = replay(&mut r);
        let acks: Vec<Option<&str>> = kinds(&effects)
            .into_iter()
            .filter_map(|k| match k {
                EventKind::Dhcp {
                    message, boot_file, ..
                } if message == "DHCPACK" => Some(boot_file.as_deref()),
                _ => None,
            })
            .collect();
        // The initramfs's client is no PXE stack: it gets no boot file.
        assert_eq!(
            acks,
            [
                Some("undionly.kpxe"),
                Some("http://10.77.0.1/boot.ipxe"),
                None,
                None,
                Some("undionly.kpxe"),
            ],
            "{effects:#?}"
        );
    }

    #[test]
    fn the_transfer_marks_the_node_and_the_next_ack_clears_it() {
        let mut r = Records::new(Some(marks()));
        let effects = replay(&mut r);
        let story: Vec<String> = kinds(&effects)
            .into_iter()
            .filter_map(|k| match k {
                EventKind::Dhcp {
                    message, boot_file, ..
                } if message == "DHCPACK" => {
                    Some(format!("ack {}", boot_file.clone().unwrap_or_default()))
                }
                EventKind::TftpSent { file, mac, .. } => {
                    Some(format!("tftp {file} {}", mac.clone().unwrap_or_default()))
                }
                EventKind::ChainMark { mac, state } => Some(format!("{state} {mac}")),
                _ => None,
            })
            .collect();
        assert_eq!(
            story,
            [
                "ack undionly.kpxe",
                "tftp undionly.kpxe 52:54:00:aa:00:41",
                "chained 52:54:00:aa:00:41",
                "ack http://10.77.0.1/boot.ipxe",
                "cleared 52:54:00:aa:00:41",
                "ack ",
                "ack ",
                "ack undionly.kpxe",
                "tftp undionly.kpxe 52:54:00:aa:00:41",
                "chained 52:54:00:aa:00:41",
            ]
        );
        let reloads = effects.iter().filter(|e| **e == Effect::ReloadMarks);
        assert_eq!(reloads.count(), 3);
        // The log ends between the second boot's two stages.
        assert!(r.chain().is_some_and(|c| c.is_chained("52:54:00:aa:00:41")));
    }

    #[test]
    fn a_message_is_recorded_when_its_own_line_came() {
        let mut r = Records::new(None);
        let offer = "dnsmasq-dhcp[37]: 167299604 DHCPOFFER(nbr0) 10.77.0.227 52:54:00:aa:00:41 ";
        let file =
            "dnsmasq-dhcp[37]: 167299604 sent size: 14 option: 67 bootfile-name  undionly.kpxe";
        assert!(r.line(1.0, offer).is_empty(), "held for its option lines");
        assert!(r.line(1.2, file).is_empty());
        assert!(r.has_pending());
        let out = r.flush();
        assert!(
            matches!(&out[..], [Effect::Record { at, kind: EventKind::Dhcp { boot_file: Some(f), .. } }]
            if *at == 1.0 && f == "undionly.kpxe"),
            "{out:#?}"
        );
        // Another transaction's line ends the wait too.
        r.line(2.0, offer);
        let other = r.line(2.1, "dnsmasq-dhcp[37]: 99 user class: iPXE");
        assert_eq!(kinds(&other).len(), 1);
    }

    #[test]
    fn without_chain_nodes_a_transfer_marks_nothing() {
        let mut r = Records::new(None);
        let effects = replay(&mut r);
        assert!(!effects.contains(&Effect::ReloadMarks));
        assert!(kinds(&effects)
            .iter()
            .any(|k| matches!(k, EventKind::TftpSent { .. })));
        assert!(!kinds(&effects)
            .iter()
            .any(|k| matches!(k, EventKind::ChainMark { .. })));
    }
}
