//! A disk in the node's own machine, beside its network boot.

/// `local_disk: image`: the node's machine has a disk of its own holding its image (the
/// scenario's, or in a fleet the node's own): a per-run copy-on-write overlay, so the cached
/// image is never written. It sits on a virtio SCSI controller, where Linux names it `sda` as
/// it names the iSCSI LUN, so the image's `root=/dev/sda1` finds it unchanged; the firmware
/// tries it after the boot NIC (`bootindex` 2), as a server with a local disk and network boot
/// first in its boot order does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalDisk {
    Image,
}
