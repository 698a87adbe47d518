//! The NIC models a scenario may give a node, and which of them may boot it.

/// NIC models QEMU emulates that have an iPXE option ROM in Debian's ipxe-qemu (which ROM
/// each boots, and how QEMU gets it: [`crate::guest::boot_files::NIC_ROMS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NicModel {
    E1000,
    E1000e,
    Rtl8139,
    VirtioNet,
    Pcnet,
    Ne2kPci,
    Eepro100,
}

impl NicModel {
    pub const ALL: [NicModel; 7] = [
        NicModel::E1000,
        NicModel::E1000e,
        NicModel::Rtl8139,
        NicModel::VirtioNet,
        NicModel::Pcnet,
        NicModel::Ne2kPci,
        NicModel::Eepro100,
    ];

    /// QEMU `-device` name.
    pub fn qemu_device(self) -> &'static str {
        match self {
            NicModel::E1000 => "e1000",
            NicModel::E1000e => "e1000e",
            NicModel::Rtl8139 => "rtl8139",
            NicModel::VirtioNet => "virtio-net-pci",
            NicModel::Pcnet => "pcnet",
            NicModel::Ne2kPci => "ne2k_pci",
            NicModel::Eepro100 => "i82557b",
        }
    }

    /// Why this model may not be a node's boot NIC, if it may not: it did not boot in
    /// reasonable time under emulation (README.md, NIC models and networks, has the times). It
    /// stays allowed as a second NIC.
    pub fn boot_refusal(self) -> Option<&'static str> {
        match self {
            NicModel::Pcnet => Some(PCNET_REFUSED),
            NicModel::Eepro100 => Some(EEPRO100_REFUSED),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            NicModel::E1000 => "e1000",
            NicModel::E1000e => "e1000e",
            NicModel::Rtl8139 => "rtl8139",
            NicModel::VirtioNet => "virtio-net",
            NicModel::Pcnet => "pcnet",
            NicModel::Ne2kPci => "ne2k-pci",
            NicModel::Eepro100 => "eepro100",
        }
    }
}

/// Measured booting from a pcnet alone (bookworm, TCG, two runs): SYSLINUX loaded the kernel
/// through iPXE's INT13, then the iSCSI connection stalled and iPXE reconnected again and again.
const PCNET_REFUSED: &str = "booting from it alone, iPXE's iSCSI connection stalled after \
    SYSLINUX's `Loading vmlinuz` and no kernel started within 115 s, nor within 228 s in a second \
    run (TCG; e1000 on the same host: iBFT detected at 27 s, root mounted at 34 s)";

/// Measured booting from an eepro100 (i82557b) alone (bookworm, TCG, two runs).
const EEPRO100_REFUSED: &str = "booting from it alone, SYSLINUX could not read the disk \
    through iPXE (`EDD Load error - Boot error` at 6 s) in one run and stalled after its banner, \
    with iPXE's iSCSI connection reset, in another: no kernel within 97 s and 86 s (TCG)";
