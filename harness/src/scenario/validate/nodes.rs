//! `nodes:`: each node's name, memory and CPUs, its NICs (MAC, PCI slot, boot NIC,
//! segment) and its firmware.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_saphyr::Spanned;

use super::template::MAX_NODES;
use super::{one_of, Folder, ScenarioError, Validator, BOOT_SEGMENT};
use crate::scenario::raw::{RawFirmware, RawScenario};
use crate::scenario::values::shown;
use crate::scenario::{Firmware, Nic, Node, Platform, Segment};

const MAX_NICS: usize = 8;
const MEMORY_RANGE: std::ops::RangeInclusive<u32> = 256..=16384;
const CPU_RANGE: std::ops::RangeInclusive<u8> = 1..=4;
/// PCI slots 0-2 hold the host bridge, ISA bridge and (absent) VGA on QEMU's `pc` machine.
const SLOT_RANGE: std::ops::RangeInclusive<u8> = 3..=31;

impl Validator<'_> {
    pub(super) fn nodes(
        &self,
        raw: &RawScenario,
        folder: &Folder,
        vars: &BTreeMap<String, String>,
        segments: &[Segment],
    ) -> Result<Vec<Node>, ScenarioError> {
        // `expand_fleet` has written a fleet out as nodes, or refused a scenario with neither.
        let Some(list) = &raw.nodes else {
            return Err(self
                .cx
                .err(None, "a scenario needs `nodes` or `fleet`", None));
        };
        if list.value.is_empty() {
            return Err(self.at(
                list,
                "`nodes` is empty: a scenario boots at least one node",
                None,
            ));
        }
        if list.value.len() > MAX_NODES {
            return Err(self.at(
                &list.value[MAX_NODES].name,
                format!("more than {MAX_NODES} nodes"),
                Some("each node is a QEMU process; split the scenario".into()),
            ));
        }
        let mut names = BTreeSet::new();
        let mut macs = HashMap::new();
        let mut out = Vec::new();
        for n in &list.value {
            let name = &n.name.value;
            let ok = !name.is_empty()
                && name.len() <= 32
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !name.starts_with('-');
            if !ok {
                return Err(self.at(
                    &n.name,
                    format!("node name `{}` is not a valid host name", shown(name)),
                    Some("use 1-32 letters, digits and '-'".into()),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(self.at(
                    &n.name,
                    format!("node `{}` is defined twice", shown(name)),
                    None,
                ));
            }
            let memory_mib = match &n.memory_mib {
                Some(m) if !MEMORY_RANGE.contains(&m.value) => {
                    return Err(self.at(
                        m,
                        format!(
                            "memory_mib {} is outside {}..={}",
                            m.value,
                            MEMORY_RANGE.start(),
                            MEMORY_RANGE.end()
                        ),
                        None,
                    ))
                }
                Some(m) => m.value,
                None => 1024,
            };
            let cpus = match &n.cpus {
                Some(c) if !CPU_RANGE.contains(&c.value) => {
                    return Err(self.at(
                        c,
                        format!(
                            "cpus {} is outside {}..={}",
                            c.value,
                            CPU_RANGE.start(),
                            CPU_RANGE.end()
                        ),
                        None,
                    ))
                }
                Some(c) => c.value,
                None => 1,
            };
            let nics_raw = &n.nics.value;
            if nics_raw.is_empty() || nics_raw.len() > MAX_NICS {
                return Err(self.at(
                    &n.nics,
                    format!("a node has 1 to {MAX_NICS} NICs, not {}", nics_raw.len()),
                    None,
                ));
            }
            let boots = nics_raw.iter().filter(|x| x.boot).count();
            if boots > 1 || (boots == 0 && nics_raw.len() > 1) {
                return Err(self.at(
                    &n.nics,
                    format!("node `{name}` must mark exactly one NIC `boot: true` (found {boots})"),
                    None,
                ));
            }
            let mut slots = BTreeSet::new();
            let mut nics = Vec::new();
            for (i, x) in nics_raw.iter().enumerate() {
                if let Some(other) = macs.insert(x.mac.value, name.clone()) {
                    return Err(self.at(
                        &x.mac,
                        format!(
                            "MAC {} is already used by a NIC of node `{other}`",
                            x.mac.value
                        ),
                        None,
                    ));
                }
                let slot = match &x.slot {
                    Some(s) if !SLOT_RANGE.contains(&s.value) => {
                        return Err(self.at(
                            s,
                            format!(
                                "PCI slot {} is outside {}..={}",
                                s.value,
                                SLOT_RANGE.start(),
                                SLOT_RANGE.end()
                            ),
                            Some("slots 0-2 belong to the machine's own devices".into()),
                        ))
                    }
                    Some(s) => s.value,
                    None => SLOT_RANGE.start() + i as u8,
                };
                if !slots.insert(slot) {
                    let at = x
                        .slot
                        .as_ref()
                        .map(|s| s.referenced)
                        .unwrap_or(x.mac.referenced);
                    return Err(self.cx.err(
                        Some(at),
                        format!("PCI slot {slot} is used twice in node `{name}`"),
                        None,
                    ));
                }
                let boot = x.boot || nics_raw.len() == 1;
                if let Some(why) = x.model.boot_refusal().filter(|_| boot) {
                    let bootable = crate::scenario::NicModel::ALL
                        .into_iter()
                        .filter(|m| m.boot_refusal().is_none())
                        .map(|m| m.name())
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(self.at(
                        &x.mac,
                        format!("a {} NIC cannot be the boot NIC: {why}", x.model.name()),
                        Some(format!(
                            "boot from one of {bootable}; a {} may be a second NIC (`boot: false`)",
                            x.model.name()
                        )),
                    ));
                }
                let segment = match &x.segment {
                    None => None,
                    Some(sg) if sg.value == BOOT_SEGMENT => None,
                    Some(sg) => match segments.iter().position(|g| g.name == sg.value) {
                        Some(i) if boot => {
                            return Err(self.at(
                                sg,
                                format!(
                                "the boot NIC is on segment `{}`; it must be on the boot network",
                                segments[i].name
                            ),
                                Some(
                                    "the boot network is where DHCP hands out the boot URL".into(),
                                ),
                            ))
                        }
                        Some(i) => Some(i),
                        None => {
                            return Err(self.at(
                                sg,
                                format!("unknown segment `{}`", sg.value),
                                Some(one_of(
                                    std::iter::once(BOOT_SEGMENT)
                                        .chain(segments.iter().map(|g| g.name.as_str())),
                                )),
                            ))
                        }
                    },
                };
                nics.push(Nic {
                    model: x.model,
                    mac: x.mac.value,
                    slot,
                    boot,
                    segment,
                });
            }
            let firmware = match &n.firmware {
                None => Firmware::Rom,
                Some(f) => match &f.value {
                    RawFirmware::Rom => Firmware::Rom,
                    RawFirmware::ChainUndionly => Firmware::ChainUndionly,
                    RawFirmware::ChainSnponly => Firmware::ChainSnponly,
                    RawFirmware::EmbeddedScript(file) => {
                        let src = Spanned {
                            value: file.clone(),
                            referenced: f.referenced,
                            defined: f.defined,
                        };
                        let (source, body) =
                            self.template(&src, folder, vars, "embedded script")?;
                        if !body.starts_with(b"#!ipxe") {
                            return Err(self.at(
                                f,
                                format!("{} does not start with `#!ipxe`", source.display()),
                                Some("iPXE runs a script only with that first line".into()),
                            ));
                        }
                        Firmware::EmbeddedScript { source, body }
                    }
                },
            };
            let platform = n.platform.as_ref().map_or(Platform::Bios, |p| p.value);
            if let Some((why, help)) = platform_refusal(platform, &firmware, &nics) {
                // At the key the node gave: `platform`, else the `firmware` that needs one.
                let at = n
                    .platform
                    .as_ref()
                    .map(|p| p.referenced)
                    .or(n.firmware.as_ref().map(|f| f.referenced))
                    .unwrap_or(n.name.referenced);
                return Err(self.cx.err(Some(at), why, Some(help.into())));
            }
            let image = match &n.image {
                None => None,
                // One disk for all would have one image: a node's own needs its own disk.
                Some(img) if raw.services.iscsi.per_node.is_none() => return Err(self.at(
                    img,
                    "a node's own `image` needs a disk of its own: give `services.iscsi.per_node`",
                    None,
                )),
                Some(img) => Some(self.image(img, &folder.dir)?),
            };
            let local_disk = n.local_disk.as_ref().map(|d| d.value);
            if let (Some(d), Platform::Uefi) = (&n.local_disk, platform) {
                return Err(self.at(
                    d,
                    "`local_disk` is booted under `platform: bios` only: what OVMF does after \
                     iPXE's `exit` hands it back has not been tried here",
                    Some("leave `platform` at `bios` for a node with a local disk".into()),
                ));
            }
            out.push(Node {
                name: name.clone(),
                memory_mib,
                cpus,
                nics,
                firmware,
                platform,
                image,
                local_disk,
            });
        }
        Ok(out)
    }
}

/// Why a node on `platform` cannot boot by this firmware route, and what to do instead.
fn platform_refusal(
    platform: Platform,
    firmware: &Firmware,
    nics: &[Nic],
) -> Option<(String, &'static str)> {
    let boot_model = nics.iter().find(|n| n.boot).map(|n| n.model);
    match (platform, firmware) {
        (Platform::Bios, Firmware::ChainSnponly) => Some((
            "`firmware: chain-snponly` needs `platform: uefi`: snponly.efi is a UEFI program, \
             loaded by the UEFI firmware's own PXE"
                .into(),
            "give the node `platform: uefi`; a BIOS node chains with `chain-undionly`",
        )),
        (Platform::Uefi, Firmware::ChainSnponly)
            if boot_model != Some(crate::scenario::NicModel::VirtioNet) =>
        {
            Some((
                format!(
                    "`firmware: chain-snponly` needs a virtio-net boot NIC: OVMF's own PXE has \
                     a driver for no other model, so with the {} the node would fall to the EFI \
                     shell",
                    boot_model.map_or("NIC", |m| m.name())
                ),
                "make the boot NIC `model: virtio-net`, or boot from the NIC's option ROM \
                 (`firmware: rom`)",
            ))
        }
        (Platform::Bios, _)
        | (Platform::Uefi, Firmware::Rom)
        | (Platform::Uefi, Firmware::ChainSnponly) => None,
        (Platform::Uefi, Firmware::ChainUndionly) => Some((
            "`firmware: chain-undionly` cannot boot a `platform: uefi` node: undionly.kpxe is a \
             BIOS PXE program, which OVMF cannot run"
                .into(),
            "a UEFI node boots the UEFI iPXE in its NIC's option ROM (`firmware: rom`)",
        )),
        (Platform::Uefi, Firmware::EmbeddedScript { .. }) => Some((
            "`firmware: { embedded-script: ... }` cannot boot a `platform: uefi` node: it boots \
             ipxe.lkrn, a BIOS image, and the harness has no UEFI iPXE with an embedded script"
                .into(),
            "a UEFI node boots the UEFI iPXE in its NIC's option ROM (`firmware: rom`)",
        )),
    }
}
