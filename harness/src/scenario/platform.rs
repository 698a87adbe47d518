//! What a node's machine starts with before iPXE: a BIOS or UEFI firmware.

/// `platform: bios | uefi`. Orthogonal to [`super::Firmware`], the route iPXE comes by: a
/// UEFI node runs the UEFI build of the same iPXE (its NIC's `efi-*.rom`).
///
/// Both platforms use QEMU's `pc` (i440FX) machine, so a scenario's PCI slots (3 to 31 on
/// bus 0) mean the same under either: OVMF runs on it as well as on q35, and q35 would move
/// the NICs to a PCIe root bus with other slot rules.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// SeaBIOS, the option ROM's legacy PXE image, SYSLINUX from the disk's MBR.
    #[default]
    Bios,
    /// OVMF (EDK II) with a variable store of the node's own, the ROM's EFI image, GRUB
    /// from the disk's ESP.
    Uefi,
}

impl Platform {
    pub const ALL: [Platform; 2] = [Platform::Bios, Platform::Uefi];

    pub fn name(self) -> &'static str {
        match self {
            Platform::Bios => "bios",
            Platform::Uefi => "uefi",
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
