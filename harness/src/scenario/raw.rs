//! The scenario file as written. Field names here are the file format; `validate` turns it
//! into the trusted [`super::Scenario`]. Spans are kept where a later check needs to point at
//! the line that is wrong.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::values::{Dur, Iqn, MacAddr, PerNode, Subnet};
use super::{NicModel, Service};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScenario {
    pub name: Spanned<String>,
    #[serde(default)]
    pub description: String,
    pub image: Spanned<RawImage>,
    #[serde(default)]
    pub network: RawNetwork,
    /// The nodes written out one by one; `fleet` writes them from a template instead.
    #[serde(default)]
    pub nodes: Option<Spanned<Vec<RawNode>>>,
    #[serde(default)]
    pub fleet: Option<Spanned<RawFleet>>,
    pub services: RawServices,
    /// Extra `{{variables}}` for HTTP files.
    #[serde(default)]
    pub vars: BTreeMap<String, Spanned<String>>,
    pub expect: Spanned<Vec<Spanned<RawStep>>>,
    /// Extra console texts that mean failure.
    #[serde(default)]
    pub fail_on: Vec<Spanned<String>>,
    /// Set to false to drop the built-in failure texts (kernel panic, SAN boot failed, ...).
    #[serde(default = "yes")]
    pub default_fail_on: bool,
    #[serde(default)]
    pub expect_failure: Option<Spanned<RawExpectedFailure>>,
    #[serde(default)]
    pub tier: super::Tier,
}

fn yes() -> bool {
    true
}

/// `image: NAME`, `image: { recipe: NAME, set: {...}, overlay: DIR, ... }` or
/// `image: { file: PATH }`.
#[derive(Debug, Clone)]
pub enum RawImage {
    Recipe {
        name: String,
        set: BTreeMap<String, String>,
        /// Boxed: with its spans it is many times the size of the other variant.
        add: Box<RawAdditions>,
    },
    File(String),
}

/// What a scenario adds to a recipe, as written (paths relative to the scenario's folder).
#[derive(Debug, Default, Clone)]
pub struct RawAdditions {
    pub overlay: Option<Spanned<String>>,
    pub customize: Option<Spanned<String>>,
    pub dracut_source: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImageMap {
    recipe: Option<String>,
    #[serde(default)]
    set: BTreeMap<String, String>,
    file: Option<String>,
    /// A folder copied into the guest root before the initramfs is built.
    overlay: Option<Spanned<String>>,
    /// A script run in the guest root (chroot) before the initramfs is built.
    customize: Option<Spanned<String>>,
    /// A dracut source tree built and installed instead of the distribution's dracut.
    dracut_source: Option<Spanned<String>>,
}

impl<'de> Deserialize<'de> for RawImage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawImage;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a recipe name, `{ recipe: NAME, set: {...} }` or `{ file: PATH }`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawImage, E> {
                Ok(RawImage::Recipe {
                    name: v.to_string(),
                    set: BTreeMap::new(),
                    add: Box::default(),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawImage, A::Error> {
                let m = RawImageMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let add = RawAdditions {
                    overlay: m.overlay,
                    customize: m.customize,
                    dracut_source: m.dracut_source,
                };
                let adds =
                    add.overlay.is_some() || add.customize.is_some() || add.dracut_source.is_some();
                match (m.recipe, m.file) {
                    (Some(name), None) => Ok(RawImage::Recipe {
                        name,
                        set: m.set,
                        add: Box::new(add),
                    }),
                    (None, Some(file)) if m.set.is_empty() && !adds => Ok(RawImage::File(file)),
                    (None, Some(_)) if adds => Err(de::Error::custom(
                        "`overlay`, `customize` and `dracut_source` apply to recipes; an image file is used as it is",
                    )),
                    (None, Some(_)) => Err(de::Error::custom(
                        "`set` applies to recipes; an image file is used as it is",
                    )),
                    (Some(_), Some(_)) => Err(de::Error::custom(
                        "give either `recipe` or `file`, not both",
                    )),
                    (None, None) => Err(de::Error::custom("give `recipe: NAME` or `file: PATH`")),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    pub subnet: Option<Subnet>,
    /// IPv6 router advertisements on the boot network (default on: iPXE then does not wait).
    #[serde(default)]
    pub router_advertisements: Option<bool>,
    /// Extra isolated networks, each its own bridge, for NICs that are not on the boot network.
    #[serde(default)]
    pub segments: Vec<Spanned<RawSegment>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSegment {
    pub name: String,
    pub subnet: Subnet,
    /// Whether the lab's DHCP server also answers on this segment.
    #[serde(default)]
    pub dhcp: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub name: Spanned<String>,
    #[serde(default)]
    pub memory_mib: Option<Spanned<u32>>,
    #[serde(default)]
    pub cpus: Option<Spanned<u8>>,
    pub nics: Spanned<Vec<RawNic>>,
    #[serde(default)]
    pub firmware: Option<Spanned<RawFirmware>>,
    /// `bios` (the default) or `uefi`.
    #[serde(default)]
    pub platform: Option<Spanned<crate::scenario::Platform>>,
    /// This node's own image, in a fleet (`services.iscsi.per_node`).
    #[serde(default)]
    pub image: Option<Spanned<RawImage>>,
    /// `image`: a local disk holding the node's image.
    #[serde(default)]
    pub local_disk: Option<Spanned<crate::scenario::LocalDisk>>,
}

/// `firmware: rom`, `chain-undionly`, `chain-snponly` or `{ embedded-script: FILE }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum RawFirmware {
    Rom,
    ChainUndionly,
    ChainSnponly,
    EmbeddedScript(String),
}

/// `fleet:`: `count` nodes from one template, named and addressed by their number.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    pub count: Spanned<u8>,
    /// The nodes' names: `{n}` is the node's number (1, 2, ...), `{nn}` the same in two digits.
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    /// The first node's fixed address; the others count up from it. Without it the nodes
    /// get addresses from the pool.
    #[serde(default)]
    pub ip: Option<Spanned<Ipv4Addr>>,
    /// What every node is; a NIC's `mac` takes `{nn}` (decimal) or `{xx}` (hex) for the number.
    pub node: Spanned<RawNodeTemplate>,
    /// Per node name, the keys that differ from the template (each replaces the template's).
    #[serde(default)]
    pub overrides: BTreeMap<String, Spanned<RawNodeTemplate>>,
    /// Power the nodes on one after another, this long apart (by default all at once).
    #[serde(default)]
    pub stagger: Option<Spanned<Dur>>,
}

/// A node's keys without its name, each optional so that an override can give just one.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNodeTemplate {
    #[serde(default)]
    pub memory_mib: Option<Spanned<u32>>,
    #[serde(default)]
    pub cpus: Option<Spanned<u8>>,
    #[serde(default)]
    /// Each NIC's `mac` a text with the node's number in it.
    pub nics: Option<Spanned<Vec<RawNic<String>>>>,
    #[serde(default)]
    pub firmware: Option<Spanned<RawFirmware>>,
    #[serde(default)]
    pub platform: Option<Spanned<crate::scenario::Platform>>,
    #[serde(default)]
    pub image: Option<Spanned<RawImage>>,
    #[serde(default)]
    pub local_disk: Option<Spanned<crate::scenario::LocalDisk>>,
    /// Whether the DHCP server knows the node's boot MAC from the start (default yes): `false`
    /// for a node an operator adds later (`dhcp_add_host`).
    #[serde(default)]
    pub dhcp_host: Option<bool>,
}

/// A NIC; in a fleet's template its `mac` is a text with the node's number in it (`M = String`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNic<M = MacAddr> {
    pub model: NicModel,
    pub mac: Spanned<M>,
    #[serde(default)]
    pub slot: Option<Spanned<u8>>,
    #[serde(default)]
    pub boot: bool,
    /// The segment this NIC is wired to; the boot network when absent.
    #[serde(default)]
    pub segment: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServices {
    #[serde(default)]
    pub dhcp: RawDhcp,
    pub http: RawHttp,
    pub iscsi: RawIscsi,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawDhcp {
    #[serde(default)]
    pub hosts: Vec<RawDhcpHost>,
    /// URL iPXE is told to chain; `{{server}}` is the harness's address.
    #[serde(default)]
    pub boot_url: Option<Spanned<String>>,
    /// Fault plan: start dnsmasq this long after power-on.
    #[serde(default)]
    pub start_after: Option<Dur>,
    /// Fault plan: stop dnsmasq for these windows of the run.
    #[serde(default)]
    pub down: Vec<Spanned<RawDownWindow>>,
    /// Answer only the MACs of `hosts` (and those a `dhcp_add_host` step adds), as a fleet's
    /// DHCP server does; by default the pool answers anyone.
    #[serde(default)]
    pub known_only: bool,
    /// `false`: dnsmasq pings before it offers and sends no `no-pxedhcp`, as packaged.
    #[serde(default)]
    pub ipxe_fast_dhcp: Option<bool>,
}

/// `{ at: 60s, for: 20s }`: the service is down from `at` on the run clock for `for`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDownWindow {
    pub at: Dur,
    #[serde(rename = "for")]
    pub length: Dur,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDhcpHost {
    pub mac: Spanned<MacAddr>,
    #[serde(default)]
    pub hostname: Option<Spanned<String>>,
    #[serde(default)]
    pub ip: Option<Spanned<Ipv4Addr>>,
}

/// `dhcp_add_host: { mac, hostname, ip }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAddedHost {
    pub mac: MacAddr,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    /// URL path -> file relative to the scenario's folder.
    pub files: BTreeMap<String, Spanned<String>>,
    /// Answer the first requests of a path with an error, as a server still starting does.
    #[serde(default)]
    pub faults: Vec<Spanned<RawHttpFault>>,
    /// Fault plan: reset every connection until this long after power-on.
    #[serde(default)]
    pub start_after: Option<Dur>,
    /// Fault plan: reset every new connection during these windows of the run.
    #[serde(default)]
    pub down: Vec<Spanned<RawDownWindow>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpFault {
    pub path: String,
    pub fail_first: u32,
    #[serde(default)]
    pub status: Option<u16>,
    /// Answer only after this long, as an overloaded server does.
    #[serde(default)]
    pub delay: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIscsi {
    /// One target with one LUN: for one node.
    #[serde(default)]
    pub target: Option<Spanned<Iqn>>,
    /// One target, LUN and disk per node (a fleet), named from the node.
    #[serde(default)]
    pub per_node: Option<Spanned<RawPerNode>>,
    #[serde(default)]
    pub lun: Option<Spanned<u8>>,
    /// What the login proxy does to the first logins.
    #[serde(default)]
    pub faults: Option<Spanned<RawIscsiFaults>>,
    /// Fault plan: reset every connection until this long after power-on.
    #[serde(default)]
    pub start_after: Option<Dur>,
    /// Fault plan: reset every new connection during these windows of the run.
    #[serde(default)]
    pub down: Vec<Spanned<RawDownWindow>>,
    /// Who may log in, as on a real SAN.
    #[serde(default)]
    pub acl: Option<Spanned<RawAcl>>,
    /// A second portal to the same targets, at another address of the lab (HA storage).
    #[serde(default)]
    pub second_portal: Option<Spanned<RawSecondPortal>>,
}

/// `second_portal: { address, start_after, down }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecondPortal {
    pub address: Spanned<Ipv4Addr>,
    #[serde(default)]
    pub start_after: Option<Dur>,
    #[serde(default)]
    pub down: Vec<Spanned<RawDownWindow>>,
}

/// `per_node: { target: "iqn...:{node}-root", initiator: "iqn...:{node}" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPerNode {
    pub target: Spanned<String>,
    /// The one initiator each node's target admits (tgtd's initiator-name ACL).
    #[serde(default)]
    pub initiator: Option<Spanned<String>>,
    /// Each node's target admits logins from that node's fixed address only.
    #[serde(default)]
    pub address: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAcl {
    #[serde(default)]
    pub initiators: Vec<Iqn>,
    #[serde(default)]
    pub addresses: Vec<Ipv4Addr>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawIscsiFaults {
    /// Answer the first N logins with "target temporarily unavailable".
    #[serde(default)]
    pub refuse_first: u32,
    /// Close the connection without an answer for the first N logins.
    #[serde(default)]
    pub drop_first: u32,
    /// Answer every login with "target temporarily unavailable" until this run time.
    #[serde(default)]
    pub refuse_until: Option<Dur>,
}

/// One expectation. Exactly one of the action keys must be present.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub within: Option<Dur>,
    /// A limit that is the assertion itself: never stretched for a loaded machine.
    #[serde(default)]
    pub bound: Option<Dur>,
    /// The boot phase this step ends.
    #[serde(default)]
    pub phase: Option<super::Phase>,
    #[serde(default)]
    pub node: Option<String>,
    /// The step once for every node, in node order (`{node}` in its texts becomes each name).
    #[serde(default)]
    pub each_node: bool,
    /// For a step met by a service record: the earlier step whose time the record must follow
    /// (by default the step just before).
    #[serde(default)]
    pub after: Option<Spanned<String>>,

    #[serde(default)]
    pub console: Option<String>,
    #[serde(default)]
    pub console_regex: Option<String>,
    #[serde(default)]
    pub dhcp_ack: Option<RawDhcpAck>,
    #[serde(default)]
    pub tftp_sent: Option<RawTftpSent>,
    #[serde(default)]
    pub http_get: Option<String>,
    #[serde(default)]
    pub http_status: Option<RawHttpStatus>,
    #[serde(default)]
    pub iscsi_login: Option<RawIscsiLogin>,
    #[serde(default)]
    pub iscsi_login_refused: Option<RawLoginRefused>,
    #[serde(default)]
    pub iscsi_logins_all: Option<RawAllLogins>,
    #[serde(default)]
    pub no_iscsi_login: Option<RawNoLogin>,
    #[serde(default)]
    pub iscsi_logout: Option<RawLogout>,
    #[serde(default)]
    pub no_iscsi_logout: Option<RawLogout>,
    #[serde(default)]
    pub portal_down: Option<Spanned<crate::scenario::Portal>>,
    #[serde(default)]
    pub refused: Option<RawRefused>,
    #[serde(default)]
    pub service_started: Option<Service>,
    #[serde(default)]
    pub send: Option<String>,
    /// Stop a service and start it again, at this point of the run.
    #[serde(default)]
    pub restart: Option<Service>,
    /// Type a command on the root shell and wait for it to finish with status 0.
    #[serde(default)]
    pub shell: Option<String>,
    /// Wait until the per-run disk copy (the LUN's backing file) holds this text at an offset.
    #[serde(default)]
    pub lun_bytes: Option<RawLunBytes>,
    /// Add a host to the DHCP server while the run goes on, as an operator adds a node's MAC.
    #[serde(default)]
    pub dhcp_add_host: Option<RawAddedHost>,
    /// Wait for the node's QEMU to exit (the guest powered off).
    #[serde(default)]
    pub qemu_exit: Option<bool>,
    /// Compare the booted guest's iBFT with what the lab served.
    #[serde(default)]
    pub ibft_matches_lab: Option<bool>,
    /// The booted guest's root is on the scenario's iSCSI session.
    #[serde(default)]
    pub root_on_session: Option<bool>,
    /// Pull a NIC's cable, or put it back (QMP `set_link`).
    #[serde(default)]
    pub link: Option<RawLink>,
    /// A hard reset of the node's machine (QMP `system_reset`).
    #[serde(default)]
    pub reset: Option<bool>,
    /// The node's ACPI power button (QMP `system_powerdown`).
    #[serde(default)]
    pub powerdown: Option<bool>,
    /// Wait for QEMU to report this event of the node's machine.
    #[serde(default)]
    pub qmp_event: Option<String>,
    /// Cut the node's power, and bring it back after a while.
    #[serde(default)]
    pub power_cycle: Option<RawPowerCycle>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPowerCycle {
    /// How long the machine stays off.
    pub off_for: Dur,
    /// Services cut with the node, and when each is back, counted from the cut.
    #[serde(default)]
    pub services: BTreeMap<Service, Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLink {
    /// The NIC by its MAC; the node's boot NIC when left out.
    #[serde(default)]
    pub nic: Option<super::MacAddr>,
    pub up: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLunBytes {
    pub offset: u64,
    pub text: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAllLogins {
    #[serde(default)]
    pub initiator: Option<PerNode<Iqn>>,
    #[serde(default)]
    pub target: Option<PerNode<Iqn>>,
    #[serde(default)]
    pub from: Option<PerNode<IpAddr>>,
    #[serde(default)]
    pub mac: Option<PerNode<MacAddr>>,
    pub at_least: u32,
    /// Each came in on this portal of the lab.
    #[serde(default)]
    pub portal: Option<Spanned<super::Portal>>,
}

/// `no_iscsi_login`: who must not have tried to log in at all.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNoLogin {
    #[serde(default)]
    pub initiator: Option<PerNode<Iqn>>,
    #[serde(default)]
    pub from: Option<PerNode<IpAddr>>,
    #[serde(default)]
    pub mac: Option<PerNode<MacAddr>>,
}

/// `iscsi_logout` and `no_iscsi_logout`: whose logout, by the session's names.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLogout {
    #[serde(default)]
    pub initiator: Option<PerNode<Iqn>>,
    #[serde(default)]
    pub target: Option<PerNode<Iqn>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRefused {
    pub service: Service,
    #[serde(default)]
    pub from: Option<IpAddr>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawDhcpAck {
    #[serde(default)]
    pub mac: Option<PerNode<MacAddr>>,
    #[serde(default)]
    pub hostname: Option<String>,
    /// The boot file (DHCP option 67) the ack carried.
    #[serde(default)]
    pub boot_file: Option<String>,
}

/// A file the lab's TFTP server finished sending (`chain-undionly` nodes).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTftpSent {
    pub file: String,
    #[serde(default)]
    pub mac: Option<PerNode<MacAddr>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawIscsiLogin {
    #[serde(default)]
    pub initiator: Option<PerNode<Iqn>>,
    #[serde(default)]
    pub target: Option<PerNode<Iqn>>,
    #[serde(default)]
    pub from: Option<PerNode<IpAddr>>,
    #[serde(default)]
    pub mac: Option<PerNode<MacAddr>>,
    /// The kind of session (normal unless told).
    #[serde(default)]
    pub session: Option<super::SessionType>,
    /// Which of the lab's two portals it came in on.
    #[serde(default)]
    pub portal: Option<Spanned<super::Portal>>,
}

/// A login attempt that did not complete. It has no source to match: a refusal by address is
/// the proxy's, and its record names the address.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLoginRefused {
    #[serde(default)]
    pub initiator: Option<PerNode<Iqn>>,
    #[serde(default)]
    pub target: Option<PerNode<Iqn>>,
    /// The status of the refusing login response.
    #[serde(default)]
    pub status: Option<crate::support::iscsi_pdu::LoginStatus>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpStatus {
    pub path: String,
    pub status: u16,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExpectedFailure {
    pub step: String,
    #[serde(default)]
    pub cause: Option<super::Cause>,
    #[serde(default)]
    pub evidence: Option<Spanned<String>>,
    /// The form before typed causes: refused with a message that names the new one.
    #[serde(default)]
    pub reason: Option<Spanned<String>>,
}
