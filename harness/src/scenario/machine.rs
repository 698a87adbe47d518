//! Steps that act on a node's machine through QEMU's QMP, and the QMP events a step can wait
//! for.

use super::MacAddr;

/// What a step does to a node's machine, as a person at the rack would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MachineAction {
    /// Done by the running QEMU, through QMP.
    Qmp(QmpAction),
    /// The power cut: QEMU ends at once, and after `off_for` a new QEMU starts on the same
    /// disk, NICs and console, as the machine does when the power comes back.
    PowerCycle {
        off_for: std::time::Duration,
        /// Services cut with the node, each back this long after the cut (a rack's power cut
        /// takes the DHCP, HTTP and storage servers down too).
        services: Vec<(super::Service, std::time::Duration)>,
    },
}

/// What the running QEMU does to its machine when told through QMP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QmpAction {
    /// The cable of the NIC with this MAC pulled (`up: false`) or put back (`up: true`).
    Link { mac: MacAddr, up: bool },
    /// A hard reset: the machine restarts at once, without a shutdown.
    Reset,
    /// A press of the ACPI power button: the guest decides what to do with it.
    Powerdown,
}

/// The words of the machine events that start and end an outage of the node's link (followed
/// by the NIC's MAC) or power: the record's, which the report reads back to draw the outage.
pub const LINK_DOWN_ON: &str = "link down on ";
pub const LINK_UP_ON: &str = "link up on ";
pub const POWER_CUT: &str = "power cut";
pub const POWER_ON: &str = "power on";

impl QmpAction {
    /// One line for the record and the report.
    pub fn describe(&self) -> String {
        match self {
            QmpAction::Link { mac, up: false } => format!("{LINK_DOWN_ON}{mac}"),
            QmpAction::Link { mac, up: true } => format!("{LINK_UP_ON}{mac}"),
            QmpAction::Reset => "hard reset".into(),
            QmpAction::Powerdown => "power button".into(),
        }
    }
}

impl MachineAction {
    /// One line for the record and the report.
    pub fn describe(&self) -> String {
        match self {
            MachineAction::Qmp(a) => a.describe(),
            MachineAction::PowerCycle { off_for, services } => {
                let mut s = format!("power cut for {}", humantime::format_duration(*off_for));
                for (svc, back) in services {
                    s.push_str(&format!(
                        ", {} back after {}",
                        svc.name(),
                        humantime::format_duration(*back)
                    ));
                }
                s
            }
        }
    }
}

/// The QMP events a `qmp_event` step can wait for: those QEMU sends for the machines the
/// harness starts (a name outside the list is refused with the list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QmpEventName {
    Reset,
    Shutdown,
    Powerdown,
    Stop,
    Resume,
    NicRxFilterChanged,
    GuestPanicked,
}

impl QmpEventName {
    pub const ALL: [QmpEventName; 7] = [
        QmpEventName::Reset,
        QmpEventName::Shutdown,
        QmpEventName::Powerdown,
        QmpEventName::Stop,
        QmpEventName::Resume,
        QmpEventName::NicRxFilterChanged,
        QmpEventName::GuestPanicked,
    ];

    /// As QEMU spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            QmpEventName::Reset => "RESET",
            QmpEventName::Shutdown => "SHUTDOWN",
            QmpEventName::Powerdown => "POWERDOWN",
            QmpEventName::Stop => "STOP",
            QmpEventName::Resume => "RESUME",
            QmpEventName::NicRxFilterChanged => "NIC_RX_FILTER_CHANGED",
            QmpEventName::GuestPanicked => "GUEST_PANICKED",
        }
    }

    pub fn parse(s: &str) -> Option<QmpEventName> {
        QmpEventName::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
