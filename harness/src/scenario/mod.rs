//! Scenario files: YAML parsed into typed structs, then validated into a [`Scenario`] that the
//! rest of the harness can trust. Nothing here starts a process or writes a file.

pub mod additions;
mod failure;
mod local_disk;
pub mod machine;
mod nic;
mod platform;
mod raw;
pub mod recipe;
mod validate;
pub mod values;
mod windows;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use additions::Additions;
pub use failure::{default_fail_patterns, Cause, ExpectedFailure, FailPattern};
pub use local_disk::LocalDisk;
pub use machine::{MachineAction, QmpAction, QmpEventName};
pub use nic::NicModel;
pub use platform::Platform;
pub use validate::{load, load_str, ScenarioError, MAX_SCENARIO_BYTES};
pub use values::{Dur, Iqn, MacAddr, Subnet};
pub use windows::{DownWindow, MAX_WINDOWS};

/// A scenario ready to run: every reference resolved, every file found.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// The YAML file it came from.
    pub path: PathBuf,
    pub image: ImageRef,
    pub subnet: Subnet,
    /// Answer IPv6 router solicitations on the boot network. Off reproduces the slow default
    /// of a network without IPv6: iPXE waits about 13 s for router advertisements.
    pub router_advertisements: bool,
    /// Isolated networks besides the boot network, in the order the scenario lists them.
    pub segments: Vec<Segment>,
    pub nodes: Vec<Node>,
    pub dhcp: Dhcp,
    pub http: Http,
    pub iscsi: Iscsi,
    pub steps: Vec<Step>,
    /// Console patterns that end the current step at once as a failure.
    pub fail_on: Vec<FailPattern>,
    pub expect_failure: Option<ExpectedFailure>,
    pub tier: Tier,
    /// How long after one node's power-on the next one's comes (a fleet's `stagger`); zero:
    /// all at once.
    pub stagger: Duration,
}

impl Scenario {
    /// The image `node` boots: its own, or the scenario's.
    pub fn image_of(&self, node: &str) -> &ImageRef {
        self.nodes
            .iter()
            .find(|n| n.name == node)
            .and_then(|n| n.image.as_ref())
            .unwrap_or(&self.image)
    }

    /// Some step adds a DHCP host while the run goes on.
    pub fn adds_dhcp_hosts(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s.action, Action::DhcpAddHost(_)))
    }

    /// Some node boots by `firmware: chain-snponly`: the lab's DHCP and TFTP serve snponly.efi.
    pub fn chains_snponly(&self) -> bool {
        self.nodes
            .iter()
            .any(|n| n.firmware == Firmware::ChainSnponly)
    }

    /// Every image the scenario boots, each once: the scenario's first, then the nodes' own.
    pub fn images(&self) -> Vec<&ImageRef> {
        let mut out = vec![&self.image];
        for i in self.nodes.iter().filter_map(|n| n.image.as_ref()) {
            if !out.contains(&i) {
                out.push(i);
            }
        }
        out
    }
}

/// Which run of the test suite boots the scenario: `ci/test` boots the fast tier, `ci/test
/// --full` (and the CI workflow's shards) both. The harness itself runs any scenario it is given.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    /// Its point is made by no other fast scenario.
    #[default]
    Fast,
    /// A variant whose point a fast scenario also makes, or a slow repeat of one.
    Full,
    /// Booted by `bench` only, for the README's figures (a fleet larger than the suite runs);
    /// the suite checks that it is valid and never boots it.
    Bench,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ImageRef {
    /// A recipe under `images/`, with parameter overrides.
    Recipe {
        name: String,
        set: BTreeMap<String, String>,
        /// An overlay, a customize script, a dracut source tree; part of the image's key.
        add: Additions,
    },
    /// A raw disk image the user brings; never written.
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub memory_mib: u32,
    pub cpus: u8,
    pub nics: Vec<Nic>,
    pub firmware: Firmware,
    /// SeaBIOS or OVMF: what runs before the firmware route's iPXE.
    pub platform: Platform,
    /// Its own image instead of the scenario's (a fleet of mixed images).
    pub image: Option<ImageRef>,
    /// A disk in its machine, booted when the network boot hands the machine back.
    pub local_disk: Option<LocalDisk>,
}

/// What runs first on a node: where its iPXE comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Firmware {
    /// The boot NIC's iPXE option ROM (ipxe-qemu) does DHCP and chains the boot URL.
    Rom,
    /// The option ROM loads Debian's `undionly.kpxe` over TFTP, and that iPXE fetches the boot
    /// script: the two-stage chain of sites whose NICs have a vendor PXE ROM.
    ChainUndionly,
    /// UEFI only: OVMF's own PXE (its virtio-net driver, no option ROM) loads Debian's
    /// `snponly.efi` over TFTP, and that iPXE, driving the NIC through the firmware's SNP,
    /// fetches the boot script.
    ChainSnponly,
    /// Debian's `ipxe.lkrn` with the scenario's script as its first script, standing in for a
    /// flashed ROM with an embedded script (usually a DHCP retry loop).
    EmbeddedScript {
        source: PathBuf,
        /// The script with the harness's `{{variables}}` filled in.
        body: Vec<u8>,
    },
}

impl Node {
    pub fn boot_nic(&self) -> &Nic {
        // Validation guarantees exactly one boot NIC.
        self.nics.iter().find(|n| n.boot).unwrap_or(&self.nics[0])
    }
}

#[derive(Debug, Clone)]
pub struct Nic {
    pub model: NicModel,
    pub mac: MacAddr,
    /// PCI slot on bus 0; decides enumeration order in the guest.
    pub slot: u8,
    pub boot: bool,
    /// Index into [`Scenario::segments`]; `None` is the boot network.
    pub segment: Option<usize>,
}

/// A network besides the boot network: its own bridge in the lab, with the harness at its first
/// address and, if asked, the lab's DHCP server answering there too (no boot URL).
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub name: String,
    pub subnet: Subnet,
    pub dhcp: bool,
}

#[derive(Debug, Clone)]
pub struct Dhcp {
    pub hosts: Vec<DhcpHost>,
    /// Fault plan: dnsmasq is not started until this long after the run began.
    pub start_after: Option<Duration>,
    /// Fault plan: dnsmasq is stopped during these windows, in time order.
    pub down: Vec<DownWindow>,
    /// Boot-script URL handed to iPXE (already rendered).
    pub boot_url: String,
    /// Answer known MACs only: `hosts` and those `dhcp_add_host` steps add.
    pub known_only: bool,
    /// Offer at once (`--no-ping`) with iPXE's `no-pxedhcp` setting, so iPXE takes the offer
    /// without its ProxyDHCP wait; `false` keeps dnsmasq's packaged behaviour, for `bench`.
    pub ipxe_fast_dhcp: bool,
}

#[derive(Debug, Clone)]
pub struct DhcpHost {
    pub mac: MacAddr,
    pub hostname: Option<String>,
    pub ip: Option<Ipv4Addr>,
}

#[derive(Debug, Clone)]
pub struct Http {
    pub files: Vec<HttpFile>,
    pub faults: Vec<HttpFault>,
    /// Fault plan: connections are reset (and recorded) until this long after the run began.
    pub start_after: Option<Duration>,
    /// Fault plan: new connections are reset (and recorded) during these windows, in time order.
    pub down: Vec<DownWindow>,
}

/// The first `first` requests of `path` are answered late (`delay`), with an error (`status`),
/// or both; at least one of the two is set.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpFault {
    /// With its leading slash.
    pub path: String,
    pub first: u32,
    pub status: Option<u16>,
    pub delay: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct HttpFile {
    /// URL path without the leading slash, e.g. `boot.ipxe`.
    pub url_path: String,
    pub source: PathBuf,
    /// The file's body with the harness's `{{variables}}` filled in.
    pub body: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Iscsi {
    /// The scenario's one target, or (a fleet) the first node's; see [`Iscsi::exports`].
    pub target: Iqn,
    /// A fleet: one target, LUN and disk per node, in node order; empty for one shared target.
    pub per_node: Vec<NodeExport>,
    /// tgtd's LUN 0 is its controller, so the disk starts at 1.
    pub lun: u8,
    pub refuse_first: u32,
    pub drop_first: u32,
    /// Fault plan: logins are refused ("target temporarily unavailable") until this run time.
    pub refuse_until: Option<Duration>,
    /// Fault plan: connections are reset (and recorded) until this long after the run began.
    pub start_after: Option<Duration>,
    /// Fault plan: new connections are reset (and recorded) during these windows, in time order.
    pub down: Vec<DownWindow>,
    /// Initiator names tgtd accepts (its own IQN ACL); empty: any.
    pub allow_initiators: Vec<Iqn>,
    /// Initiator addresses the login proxy accepts (tgtd sees only the proxy's address, so the
    /// address ACL is the proxy's); empty: any.
    pub allow_addresses: Vec<Ipv4Addr>,
    /// A second portal to the same targets (`services.iscsi.second_portal`); `start_after` and
    /// `down` above are the first portal's.
    pub second_portal: Option<SecondPortal>,
}

impl Iscsi {
    /// The lab's portals and their addresses: the first at the lab's `server` address, then
    /// `second_portal`'s, if any.
    pub fn portals(&self, server: Ipv4Addr) -> Vec<(Portal, Ipv4Addr)> {
        let mut all = vec![(Portal::First, server)];
        all.extend(
            self.second_portal
                .as_ref()
                .map(|p| (Portal::Second, p.address)),
        );
        all
    }
}

/// Another address of the lab where the same tgtd's targets answer too: the two portals of an
/// HA storage pair, each with its own fault plan.
#[derive(Debug, Clone, PartialEq)]
pub struct SecondPortal {
    pub address: Ipv4Addr,
    pub start_after: Option<Duration>,
    pub down: Vec<DownWindow>,
}

/// Which of the lab's iSCSI portals: the one at the server address, or the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Portal {
    First,
    Second,
}

impl Portal {
    pub fn name(self) -> &'static str {
        match self {
            Portal::First => "first",
            Portal::Second => "second",
        }
    }
}

/// A node's own target in a fleet, and the one initiator it admits.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeExport {
    pub node: String,
    pub target: Iqn,
    pub initiator: Option<Iqn>,
    /// The one address its target admits logins from (`per_node.address`).
    pub address: Option<Ipv4Addr>,
}

/// One target tgtd exports: its LUN's disk belongs to `node`, or (`None`) is the run's one disk.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    pub node: Option<String>,
    pub target: Iqn,
    /// tgtd's initiator-name ACL; empty: any initiator.
    pub initiators: Vec<Iqn>,
}

impl Iscsi {
    /// What tgtd exports, in target-id order (tid 1, 2, ...).
    pub fn exports(&self) -> Vec<Export> {
        if self.per_node.is_empty() {
            return vec![Export {
                node: None,
                target: self.target.clone(),
                initiators: self.allow_initiators.clone(),
            }];
        }
        self.per_node
            .iter()
            .map(|n| Export {
                node: Some(n.node.clone()),
                target: n.target.clone(),
                // Each target's own initiator, or else the scenario's `acl.initiators` for all.
                initiators: match &n.initiator {
                    Some(i) => vec![i.clone()],
                    None => self.allow_initiators.clone(),
                },
            })
            .collect()
    }

    /// The target `node` boots from.
    pub fn target_of(&self, node: &str) -> &Iqn {
        self.per_node
            .iter()
            .find(|n| n.node == node)
            .map(|n| &n.target)
            .unwrap_or(&self.target)
    }

    /// Every node has a disk of its own (a fleet).
    pub fn is_per_node(&self) -> bool {
        !self.per_node.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub node: String,
    /// How long to wait for this step, counted from when the previous one was met.
    pub within: Duration,
    /// `within` is a wait the run may stretch on a loaded machine (`true`), or a `bound` that
    /// is the assertion itself and never stretched (`false`).
    pub stretch: bool,
    pub action: Action,
    /// The boot phase this step ends, if the scenario says; the timeline and `bench` group
    /// steps by it.
    pub phase: Option<Phase>,
    /// For a step met by a service record: the earlier step the record must follow (it may
    /// come at most [`crate::expect::RECORD_LEAD`] before that step's own evidence). `None`:
    /// the step just before.
    pub after: Option<String>,
}

/// The phase of the boot chain a step ends, for the timeline and `bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Firmware,
    Dhcp,
    BootScript,
    Sanboot,
    Kernel,
    InitramfsLogin,
    RootMounted,
    Os,
    Reboot,
}

impl Phase {
    /// In boot order.
    pub const ALL: [Phase; 9] = [
        Phase::Firmware,
        Phase::Dhcp,
        Phase::BootScript,
        Phase::Sanboot,
        Phase::Kernel,
        Phase::InitramfsLogin,
        Phase::RootMounted,
        Phase::Os,
        Phase::Reboot,
    ];

    /// As the timeline and `bench` label it.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Firmware => "firmware",
            Phase::Dhcp => "DHCP",
            Phase::BootScript => "boot script",
            Phase::Sanboot => "sanboot",
            Phase::Kernel => "kernel",
            Phase::InitramfsLogin => "initramfs login",
            Phase::RootMounted => "root mounted",
            Phase::Os => "OS",
            Phase::Reboot => "reboot",
        }
    }
}

/// An iSCSI session's kind, from its first login request's `SessionType` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionType {
    /// A session that reaches a target's LUNs.
    #[default]
    Normal,
    /// A SendTargets session: it lists targets and reaches no LUN.
    Discovery,
}

impl SessionType {
    /// As the login PDU spells it.
    pub fn key_value(self) -> &'static str {
        match self {
            SessionType::Normal => "Normal",
            SessionType::Discovery => "Discovery",
        }
    }
}

#[derive(Debug, Clone)]
pub enum Action {
    /// Wait for a console line containing this text.
    Console(String),
    /// Wait for a console line matching this regex.
    ConsoleRegex(regex::Regex),
    /// Wait for the DHCP server to acknowledge a lease.
    DhcpAck {
        mac: Option<MacAddr>,
        hostname: Option<String>,
        /// The boot file (option 67) the ack must carry.
        boot_file: Option<String>,
    },
    /// Wait for the TFTP server to finish sending a file (by name), to a MAC if given.
    TftpSent { file: String, mac: Option<MacAddr> },
    /// Wait for an HTTP request of this path (leading slash included) answered with 2xx.
    HttpGet(String),
    /// Wait for an HTTP request of this path answered with exactly this status.
    HttpStatus { path: String, status: u16 },
    /// Wait for an iSCSI login seen by the target.
    IscsiLogin {
        initiator: Option<Iqn>,
        target: Option<Iqn>,
        from: Option<IpAddr>,
        /// The NIC it came from, by MAC.
        mac: Option<MacAddr>,
        session: SessionType,
        /// Which of the lab's two portals it came in on.
        portal: Option<Portal>,
    },
    /// Wait for a login attempt that did not complete (refused, dropped or rejected).
    IscsiLoginRefused {
        initiator: Option<Iqn>,
        target: Option<Iqn>,
        /// The refusing response's status; `None`: any failure, no answer included.
        status: Option<crate::support::iscsi_pdu::LoginStatus>,
    },
    /// Every accepted iSCSI login so far matches, and there are at least `at_least` of them:
    /// fails at once on the first login that does not match.
    AllLogins {
        initiator: Option<Iqn>,
        target: Option<Iqn>,
        from: Option<IpAddr>,
        mac: Option<MacAddr>,
        at_least: u32,
        /// Each came in on this portal of the lab.
        portal: Option<Portal>,
    },
    /// No login attempt of the whole run so far (accepted or not, discovery included) came
    /// from this initiator, address or MAC: met at once, failed by the first that did.
    NoLogin {
        initiator: Option<Iqn>,
        from: Option<IpAddr>,
        mac: Option<MacAddr>,
    },
    /// Wait for a Logout Request the login proxy passed on to the target.
    IscsiLogout {
        initiator: Option<Iqn>,
        target: Option<Iqn>,
    },
    /// No Logout Request of the whole run so far came from this initiator or named this
    /// target: met at once, failed by the first that did.
    NoLogout {
        initiator: Option<Iqn>,
        target: Option<Iqn>,
    },
    /// Wait for a connection a service turned away while its fault plan had it down.
    Refused {
        service: Service,
        from: Option<IpAddr>,
    },
    /// Wait for the record that a service started (late ones start when their plan says).
    ServiceStarted(Service),
    /// Type a line on the node's serial console.
    Send(String),
    /// Stop a service and start it again (recorded as service events).
    Restart(Service),
    /// One of the lab's iSCSI portals dies for the rest of the run: its listener closes and
    /// every connection it carried is cut (recorded as a service event).
    PortalDown(Portal),
    /// Type a command on the node's root shell and wait for it to finish with status 0.
    Shell(String),
    /// The per-run disk copy holds `text` at byte `offset`.
    LunBytes { offset: u64, text: String },
    /// Add a host to the running DHCP server (its hosts file, reread on SIGHUP).
    DhcpAddHost(DhcpHost),
    /// The node's QEMU exited.
    QemuExit,
    /// The booted guest's iBFT, as its marker reports it, matches what the lab served: the
    /// DHCP lease of the boot NIC, the IQN of its logins, the target and LUN.
    IbftMatchesLab,
    /// The booted guest's root filesystem is on a disk of a logged-in iSCSI session to the
    /// scenario's target through the lab's portal.
    RootOnSession,
    /// Something done to the node's machine through QEMU's QMP (recorded as a machine event).
    Machine(MachineAction),
    /// Wait for QEMU to report this event of the node's machine (`RESET`, `SHUTDOWN`, ...).
    QmpEvent(QmpEventName),
}

/// The lab's services, as steps and fault plans name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Dhcp,
    Http,
    Iscsi,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Dhcp => "dhcp",
            Service::Http => "http",
            Service::Iscsi => "iscsi",
        }
    }
}

/// Folder holding the scenario file: relative paths in a scenario start here.
pub fn scenario_dir(path: &Path) -> PathBuf {
    path.parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."))
}

#[cfg(test)]
mod fleet_template_tests;
#[cfg(test)]
mod fleet_tests;
#[cfg(test)]
mod tests;
