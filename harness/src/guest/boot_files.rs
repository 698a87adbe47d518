//! Where the boot ROMs and firmware files are on this host: NIC option ROMs, SeaBIOS,
//! `ipxe.lkrn` and `undionly.kpxe`.
//!
//! Distributions put them in different folders (bookworm and Ubuntu 24.04: NIC ROMs in
//! `/usr/lib/ipxe/qemu`; trixie: in `/usr/share/qemu`), so no path is written down here: a
//! file is looked up on QEMU's own data path (`qemu-system-x86_64 -L help`, the folders QEMU
//! itself searches for a bare `romfile=NAME`), then in the folders the known packages use.
//! What is not found is reported with every folder searched and the Debian package to install.

use std::path::{Path, PathBuf};

use crate::scenario::NicModel;

/// Which firmware a ROM is for: the scenario's `platform`.
pub use crate::scenario::Platform;

/// How the harness hands a NIC's ROM to QEMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RomLoad {
    /// `romfile=PATH`, the file found on this host.
    Named,
    /// No `romfile=` at all: QEMU loads its own default ROM for the device (the row's file)
    /// and, for that default only, patches the ROM's PCI vendor and device IDs to the
    /// device's. Needed where the packaged ROM carries other IDs than the device QEMU emulates,
    /// because SeaBIOS runs only a ROM whose IDs match its device.
    QemuDefault,
}

/// One NIC model's boot ROM for one platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NicRom {
    pub model: NicModel,
    pub platform: Platform,
    /// The ROM image's file name (package ipxe-qemu).
    pub file: &'static str,
    pub load: RomLoad,
    /// PCI vendor and device ID of the device QEMU emulates for this model: a `Named` ROM must
    /// carry the same in its PCI data structure, or SeaBIOS skips it.
    pub pci_id: (u16, u16),
}

/// The NIC models' boot ROMs: one row per model and platform.
pub const NIC_ROMS: &[NicRom] = &[
    NicRom {
        model: NicModel::E1000,
        platform: Platform::Bios,
        file: "pxe-e1000.rom",
        load: RomLoad::Named,
        pci_id: (0x8086, 0x100e),
    },
    NicRom {
        model: NicModel::E1000e,
        platform: Platform::Bios,
        file: "pxe-e1000e.rom",
        load: RomLoad::Named,
        pci_id: (0x8086, 0x10d3),
    },
    NicRom {
        model: NicModel::Rtl8139,
        platform: Platform::Bios,
        file: "pxe-rtl8139.rom",
        load: RomLoad::Named,
        pci_id: (0x10ec, 0x8139),
    },
    // ipxe-qemu's virtio ROMs (pxe-virtio.rom and efi-virtio.rom) say 1af4:1041, the
    // modern-only virtio-net ID, while QEMU's virtio-net-pci on the pc machine is the
    // transitional 1af4:1000. Named with `romfile=`, the ROM is never run (bookworm, QEMU 7.2:
    // SeaBIOS prints `No bootable device.`); as QEMU's default ROM it is patched to 1000 and
    // iPXE starts.
    NicRom {
        model: NicModel::VirtioNet,
        platform: Platform::Bios,
        file: "efi-virtio.rom",
        load: RomLoad::QemuDefault,
        pci_id: (0x1af4, 0x1000),
    },
    NicRom {
        model: NicModel::Pcnet,
        platform: Platform::Bios,
        file: "pxe-pcnet.rom",
        load: RomLoad::Named,
        pci_id: (0x1022, 0x2000),
    },
    // ipxe-qemu's ne2k_pci ROMs carry no IDs at all (0000:0000), so only QEMU's patched
    // default can match the device.
    NicRom {
        model: NicModel::Ne2kPci,
        platform: Platform::Bios,
        file: "efi-ne2k_pci.rom",
        load: RomLoad::QemuDefault,
        pci_id: (0x10ec, 0x8029),
    },
    NicRom {
        model: NicModel::Eepro100,
        platform: Platform::Bios,
        file: "pxe-eepro100.rom",
        load: RomLoad::Named,
        pci_id: (0x8086, 0x1229),
    },
    // UEFI nodes: QEMU's own default ROM for every model, the combined `efi-*.rom` (a BIOS
    // and an EFI image of the same iPXE, which OVMF runs the EFI one of), patched to the
    // device's IDs as for the BIOS rows above that need it.
    NicRom {
        model: NicModel::E1000,
        platform: Platform::Uefi,
        file: "efi-e1000.rom",
        load: RomLoad::QemuDefault,
        pci_id: (0x8086, 0x100e),
    },
    NicRom {
        model: NicModel::E1000e,
        platform: Platform::Uefi,
        file: "efi-e1000e.rom",
        load: RomLoad::QemuDefault,
        pci_id: (0x8086, 0x10d3),
    },
    NicRom {
        model: NicModel::Rtl8139,
        platform: Platform::Uefi,
        file: "efi-rtl8139.rom",
        load: RomLoad::QemuDefault,
        pci_id: (0x10ec, 0x8139),
    },
    NicRom {
        model: NicModel::VirtioNet,
        platform: Platform::Uefi,
        file: "efi-virtio.rom",
        load: RomLoad::QemuDefault,
        pci_id: (0x1af4, 0x1000),
    },
    NicRom {
        model: NicModel::Pcnet,
        platform: Platform::Uefi,
        file: "efi-pcnet.rom",
        load: RomLoad::QemuDefault,
        pci_id: (0x1022, 0x2000),
    },
    NicRom {
        model: NicModel::Ne2kPci,
        platform: Platform::Uefi,
        file: "efi-ne2k_pci.rom",
        load: RomLoad::QemuDefault,
        pci_id: (0x10ec, 0x8029),
    },
    NicRom {
        model: NicModel::Eepro100,
        platform: Platform::Uefi,
        file: "efi-eepro100.rom",
        load: RomLoad::QemuDefault,
        pci_id: (0x8086, 0x1229),
    },
];

/// This model's ROM row for the platform.
pub fn nic_rom(model: NicModel, platform: Platform) -> &'static NicRom {
    NIC_ROMS
        .iter()
        .find(|r| r.model == model && r.platform == platform)
        // A unit test checks every model has its row for every platform.
        .expect("every NIC model has a ROM row")
}

/// Why this model may not be a boot NIC (BIOS nodes), if it may not: the scenario format's
/// own rule ([`NicModel::boot_refusal`]), measured with these ROMs.
pub fn boot_refusal(model: NicModel) -> Option<&'static str> {
    model.boot_refusal()
}

/// Folders the NIC ROM packages use, after QEMU's own data path: ipxe-qemu on bookworm and
/// Ubuntu 24.04, then on trixie.
pub const ROM_FOLDERS: &[&str] = &["/usr/lib/ipxe/qemu", "/usr/share/qemu"];

/// Where a file is looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Search {
    /// QEMU's data path (`-L help`), then these folders: files QEMU loads itself.
    QemuData(&'static [&'static str]),
    /// Only these folders: files the harness hands over by path.
    Folders(&'static [&'static str]),
}

/// A file a boot needs, and the Debian package that has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootFile {
    pub name: &'static str,
    pub search: Search,
    pub package: &'static str,
    pub purpose: &'static str,
}

impl NicRom {
    pub fn boot_file(&self) -> BootFile {
        BootFile {
            name: self.file,
            search: Search::QemuData(ROM_FOLDERS),
            package: "ipxe-qemu",
            purpose: match self.load {
                RomLoad::Named => "NIC option ROM",
                RomLoad::QemuDefault => "NIC option ROM, QEMU's default for the device",
            },
        }
    }
}

pub const SEABIOS: BootFile = BootFile {
    name: "bios-256k.bin",
    search: Search::QemuData(&["/usr/share/seabios", "/usr/share/qemu"]),
    package: "seabios",
    purpose: "the guests' BIOS",
};

/// Debian's iPXE as a Linux-kernel-format image: QEMU boots it directly and it runs its initrd
/// as its first script, as a ROM with an embedded script would. The same folder on bookworm,
/// trixie and Ubuntu 24.04 (on bookworm a link to `/boot/ipxe.lkrn`).
pub const IPXE_LKRN: BootFile = BootFile {
    name: "ipxe.lkrn",
    search: Search::Folders(&["/usr/lib/ipxe", "/boot"]),
    package: "ipxe",
    purpose: "iPXE for embedded-script nodes and the KVM probe",
};

/// The second stage of `chain-undionly` nodes. The same folder on bookworm, trixie and Ubuntu
/// 24.04; the TFTP service copies it from there (`services::tftp::UNDIONLY_KPXE`, which a
/// test keeps equal to this folder).
pub const UNDIONLY_KPXE: BootFile = BootFile {
    name: "undionly.kpxe",
    search: Search::Folders(&["/usr/lib/ipxe"]),
    package: "ipxe",
    purpose: "the chained iPXE of chain-undionly nodes",
};

/// What OVMF's own PXE loads for `chain-snponly` nodes: the iPXE that drives the NIC through
/// the firmware's SNP (`ipxe.efi` would bring its own drivers, spending ~5 s initialising
/// devices). The TFTP service copies it from this folder too (`services::tftp::SNPONLY_EFI`).
pub const SNPONLY_EFI: BootFile = BootFile {
    name: "snponly.efi",
    search: Search::Folders(&["/usr/lib/ipxe"]),
    package: "ipxe",
    purpose: "the chained iPXE of chain-snponly (UEFI) nodes",
};

/// Every file a boot may need: each NIC model's ROM, the BIOS, and the iPXE images.
pub fn required() -> Vec<BootFile> {
    let mut v: Vec<BootFile> = NIC_ROMS.iter().map(NicRom::boot_file).collect();
    v.extend([SEABIOS, IPXE_LKRN, UNDIONLY_KPXE, SNPONLY_EFI]);
    v
}

/// The files of `files` that `search` does not find, each as `name (searched FOLDERS)` with the
/// Debian package that brings it, for [`crate::support::tools::check`].
pub fn missing(files: &[BootFile], search: &SearchPath) -> Vec<(String, String)> {
    files
        .iter()
        .filter_map(|f| search.find(f).err())
        .map(|e| {
            let searched = e
                .searched
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            (format!("{} (searched {searched})", e.name), e.package)
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{name} ({purpose}) is in none of the folders searched: {}; it comes with the Debian package {package}",
    .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
)]
pub struct NotFound {
    pub name: String,
    pub purpose: String,
    pub searched: Vec<PathBuf>,
    pub package: String,
}

/// The folders searched, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPath {
    /// QEMU's data path, as `-L help` prints it.
    qemu: Vec<PathBuf>,
    /// What the known folders are under: `/` on a host.
    root: PathBuf,
}

impl SearchPath {
    /// This host's: QEMU asked once per process.
    pub fn host() -> SearchPath {
        static QEMU: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();
        SearchPath {
            qemu: QEMU.get_or_init(qemu_data_path).clone(),
            root: PathBuf::from("/"),
        }
    }

    /// QEMU's data path `qemu`, and the known folders under `root`.
    pub fn new(qemu: Vec<PathBuf>, root: impl Into<PathBuf>) -> SearchPath {
        SearchPath {
            qemu,
            root: root.into(),
        }
    }

    /// The folders `f` is looked for in, in order, each once.
    pub fn folders(&self, f: &BootFile) -> Vec<PathBuf> {
        let (qemu, known): (&[PathBuf], _) = match f.search {
            Search::QemuData(k) => (&self.qemu, k),
            Search::Folders(k) => (&[], k),
        };
        let under_root = known
            .iter()
            .map(|k| self.root.join(k.trim_start_matches('/')));
        let mut out: Vec<PathBuf> = Vec::new();
        for d in qemu.iter().cloned().chain(under_root) {
            let d = tidy(&d);
            if !out.contains(&d) {
                out.push(d);
            }
        }
        out
    }

    /// The first `f` found, or every folder searched.
    pub fn find(&self, f: &BootFile) -> Result<PathBuf, NotFound> {
        let folders = self.folders(f);
        folders
            .iter()
            .map(|d| d.join(f.name))
            .find(|p| p.is_file())
            .ok_or_else(|| NotFound {
                name: f.name.to_string(),
                purpose: f.purpose.to_string(),
                searched: folders,
                package: f.package.to_string(),
            })
    }

    /// The `romfile=` value for this model's ROM: `None` leaves QEMU's default. A ROM not
    /// found (the run checks them all first) is named bare, for QEMU to look up itself.
    pub fn romfile(&self, model: NicModel, platform: Platform) -> Option<String> {
        let rom = nic_rom(model, platform);
        match rom.load {
            RomLoad::QemuDefault => None,
            RomLoad::Named => Some(
                self.find(&rom.boot_file())
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| rom.file.to_string()),
            ),
        }
    }

    /// `ipxe.lkrn`'s path; if it is nowhere, the first folder's (the run checks first).
    pub fn ipxe_lkrn(&self) -> PathBuf {
        self.find(&IPXE_LKRN).unwrap_or_else(|e| {
            e.searched
                .first()
                .map(|d| d.join(IPXE_LKRN.name))
                .unwrap_or_else(|| PathBuf::from(IPXE_LKRN.name))
        })
    }
}

/// A folder without `..` (`/usr/bin/../share/qemu` is `/usr/share/qemu`), canonical if it
/// exists.
fn tidy(d: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in d.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    std::fs::canonicalize(&out).unwrap_or(out)
}

/// The folders QEMU searches for firmware and ROMs, in its order; none if QEMU cannot say.
fn qemu_data_path() -> Vec<PathBuf> {
    let out = std::process::Command::new("qemu-system-x86_64")
        .args(["-L", "help"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => parse_data_path(&String::from_utf8_lossy(&o.stdout)),
        _ => Vec::new(),
    }
}

/// `-L help`'s output: one absolute folder a line.
fn parse_data_path(s: &str) -> Vec<PathBuf> {
    s.lines()
        .map(str::trim)
        .filter(|l| l.starts_with('/'))
        .map(PathBuf::from)
        .collect()
}

/// The PCI vendor and device ID in a ROM image's first PCI data structure.
pub fn rom_pci_id(rom: &[u8]) -> Option<(u16, u16)> {
    if rom.get(..2)? != [0x55, 0xaa] {
        return None;
    }
    let word =
        |at: usize| -> Option<u16> { Some(u16::from_le_bytes([*rom.get(at)?, *rom.get(at + 1)?])) };
    let pcir = usize::from(word(0x18)?);
    if rom.get(pcir..pcir + 4)? != b"PCIR" {
        return None;
    }
    Some((word(pcir + 4)?, word(pcir + 6)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_lists_each_file_with_the_folders_searched() {
        let rom = BootFile {
            name: "nbh-no-such.rom",
            search: Search::QemuData(&["/usr/lib/nbh-roms"]),
            package: "rom-pkg",
            purpose: "test",
        };
        let search = SearchPath::new(vec!["/nonexistent/qemu".into()], "/nonexistent/root");
        assert_eq!(
            missing(&[rom], &search),
            [(
                "nbh-no-such.rom (searched /nonexistent/qemu, /nonexistent/root/usr/lib/nbh-roms)"
                    .to_string(),
                "rom-pkg".to_string()
            )]
        );
    }

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"rom").unwrap();
    }

    fn e1000() -> BootFile {
        nic_rom(NicModel::E1000, Platform::Bios).boot_file()
    }

    #[test]
    fn every_model_has_one_row_per_platform() {
        for m in NicModel::ALL {
            for p in Platform::ALL {
                let rows = NIC_ROMS
                    .iter()
                    .filter(|r| r.model == m && r.platform == p)
                    .count();
                assert_eq!(rows, 1, "{} {p}", m.name());
            }
        }
    }

    #[test]
    fn uefi_nodes_take_qemus_default_rom_for_every_model() {
        let s = SearchPath::new(vec![], "/nonexistent/root");
        for m in NicModel::ALL {
            assert_eq!(s.romfile(m, Platform::Uefi), None, "{}", m.name());
            assert!(nic_rom(m, Platform::Uefi).file.starts_with("efi-"));
        }
    }

    #[test]
    fn a_trixie_layout_is_found_under_share_qemu() {
        let t = tempfile::tempdir().unwrap();
        touch(&t.path().join("usr/share/qemu/pxe-e1000.rom"));
        let s = SearchPath::new(vec![], t.path());
        let found = s.find(&e1000()).unwrap();
        assert_eq!(
            found,
            tidy(&t.path().join("usr/share/qemu")).join("pxe-e1000.rom")
        );
    }

    #[test]
    fn a_bookworm_layout_is_found_under_lib_ipxe_qemu() {
        let t = tempfile::tempdir().unwrap();
        touch(&t.path().join("usr/lib/ipxe/qemu/pxe-e1000.rom"));
        touch(&t.path().join("usr/lib/ipxe/undionly.kpxe"));
        let s = SearchPath::new(vec![], t.path());
        assert!(s
            .find(&e1000())
            .unwrap()
            .ends_with("usr/lib/ipxe/qemu/pxe-e1000.rom"));
        assert!(s
            .find(&UNDIONLY_KPXE)
            .unwrap()
            .ends_with("usr/lib/ipxe/undionly.kpxe"));
        assert_eq!(
            s.romfile(NicModel::E1000, Platform::Bios).unwrap(),
            s.find(&e1000()).unwrap().display().to_string()
        );
    }

    #[test]
    fn qemus_own_data_path_comes_first_and_folders_are_searched_once() {
        let t = tempfile::tempdir().unwrap();
        let qemu = t.path().join("opt/qemu/share");
        touch(&qemu.join("pxe-e1000.rom"));
        touch(&t.path().join("usr/lib/ipxe/qemu/pxe-e1000.rom"));
        // As `-L help` prints them: with `..`, and one of the known folders again.
        let s = SearchPath::new(
            vec![
                t.path().join("opt/qemu/bin/../share"),
                t.path().join("usr/share/qemu"),
            ],
            t.path(),
        );
        assert_eq!(s.find(&e1000()).unwrap(), tidy(&qemu).join("pxe-e1000.rom"));
        let folders = s.folders(&e1000());
        assert_eq!(folders.len(), 3, "{folders:?}");
        // Files the harness hands over by path ignore QEMU's data path.
        assert!(!s
            .folders(&IPXE_LKRN)
            .iter()
            .any(|d| d.starts_with(tidy(&qemu))));
    }

    #[test]
    fn a_missing_file_names_every_folder_searched_and_its_package() {
        let t = tempfile::tempdir().unwrap();
        let s = SearchPath::new(vec![t.path().join("qemu-data")], t.path());
        let e = s.find(&e1000()).unwrap_err();
        let msg = e.to_string();
        for d in ["qemu-data", "usr/lib/ipxe/qemu", "usr/share/qemu"] {
            assert!(
                msg.contains(&t.path().join(d).display().to_string()),
                "{msg}"
            );
        }
        assert!(msg.starts_with("pxe-e1000.rom (NIC option ROM)"), "{msg}");
        assert!(msg.ends_with("the Debian package ipxe-qemu"), "{msg}");
        assert_eq!(e.searched.len(), 3);
        // A ROM not found is named bare, for QEMU's own search to report.
        assert_eq!(
            s.romfile(NicModel::E1000, Platform::Bios).as_deref(),
            Some("pxe-e1000.rom")
        );
    }

    #[test]
    fn models_whose_rom_ids_differ_from_the_device_take_qemus_default() {
        let s = SearchPath::new(vec![], "/nonexistent");
        assert_eq!(s.romfile(NicModel::VirtioNet, Platform::Bios), None);
        assert_eq!(s.romfile(NicModel::Ne2kPci, Platform::Bios), None);
    }

    #[test]
    fn qemu_help_output_parses() {
        let d =
            parse_data_path("/usr/bin/../share/qemu\n/usr/bin/../share/seabios\n\nnot a path\n");
        assert_eq!(
            d,
            [
                PathBuf::from("/usr/bin/../share/qemu"),
                PathBuf::from("/usr/bin/../share/seabios")
            ]
        );
    }

    #[test]
    fn the_tftp_service_copies_undionly_from_its_folder() {
        let Search::Folders(f) = UNDIONLY_KPXE.search else {
            panic!("undionly.kpxe is handed over by path")
        };
        assert_eq!(
            Path::new(crate::services::tftp::UNDIONLY_KPXE),
            Path::new(f[0]).join(UNDIONLY_KPXE.name)
        );
        let Search::Folders(f) = SNPONLY_EFI.search else {
            panic!("snponly.efi is looked for in fixed folders");
        };
        assert_eq!(
            Path::new(crate::services::tftp::SNPONLY_EFI),
            Path::new(f[0]).join(SNPONLY_EFI.name)
        );
    }

    #[test]
    fn rom_ids_are_read_from_the_pci_data_structure() {
        let mut rom = vec![0u8; 64];
        rom[..2].copy_from_slice(&[0x55, 0xaa]);
        rom[0x18] = 0x20;
        rom[0x20..0x24].copy_from_slice(b"PCIR");
        rom[0x24..0x28].copy_from_slice(&[0xf4, 0x1a, 0x41, 0x10]);
        assert_eq!(rom_pci_id(&rom), Some((0x1af4, 0x1041)));
        assert_eq!(rom_pci_id(b"MZ"), None);
        assert_eq!(rom_pci_id(&rom[..0x22]), None);
    }

    /// On this host: every ROM is found, and one named with `romfile=` carries its device's
    /// IDs (QEMU patches only its own default, so a mismatch would never run).
    #[test]
    fn installed_roms_match_their_devices() {
        let s = SearchPath::host();
        let installed = s.find(&e1000()).is_ok();
        for r in NIC_ROMS {
            let p = match s.find(&r.boot_file()) {
                Ok(p) => p,
                // ipxe-qemu has them all or none.
                Err(e) => {
                    assert!(!installed, "{e}");
                    continue;
                }
            };
            if r.load == RomLoad::Named {
                let id = rom_pci_id(&std::fs::read(&p).unwrap());
                assert_eq!(id, Some(r.pci_id), "{} at {}", r.model.name(), p.display());
            }
        }
    }
}
