//! dnsmasq's TFTP server, on only for `firmware: chain-undionly` and `chain-snponly` nodes:
//! its root and its log lines.
//!
//! The root is a directory of the run holding copies of the Debian iPXE images those nodes
//! chain (`undionly.kpxe`, `snponly.efi`) and nothing else, so the server can hand out no other
//! file of the run or the host.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;

/// Debian's iPXE for chaining from a PXE ROM (package `ipxe`).
pub const UNDIONLY_KPXE: &str = "/usr/lib/ipxe/undionly.kpxe";

/// The name the DHCP server hands out and the TFTP server serves.
pub const BOOT_FILE: &str = "undionly.kpxe";

/// Debian's iPXE for chaining from a UEFI firmware's PXE (package `ipxe`).
pub const SNPONLY_EFI: &str = "/usr/lib/ipxe/snponly.efi";

/// The name the DHCP server hands out to UEFI PXE clients for it.
pub const EFI_BOOT_FILE: &str = "snponly.efi";

/// The TFTP root inside the run directory.
pub fn root(run_dir: &Path) -> PathBuf {
    run_dir.join("tftp")
}

/// Creates the TFTP root with the files the scenario's chains need: copies, not links, so that
/// `--tftp-secure` (only files the server's user owns) holds and the run keeps what it served.
pub fn prepare_root(run_dir: &Path, undionly: bool, snponly: bool) -> std::io::Result<PathBuf> {
    let dir = root(run_dir);
    std::fs::create_dir_all(&dir)?;
    let files = [
        (undionly, UNDIONLY_KPXE, BOOT_FILE),
        (snponly, SNPONLY_EFI, EFI_BOOT_FILE),
    ];
    for (_, from, name) in files.into_iter().filter(|f| f.0) {
        std::fs::copy(from, dir.join(name))
            .map_err(|e| std::io::Error::new(e.kind(), format!("copying {from}: {e}")))?;
    }
    Ok(dir)
}

/// A finished transfer from dnsmasq's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The file as dnsmasq names it: the full path under the TFTP root.
    pub file: String,
    pub peer: Ipv4Addr,
}

impl Sent {
    /// The file's name without the root it was served from.
    pub fn name(&self) -> &str {
        self.file.rsplit('/').next().unwrap_or(&self.file)
    }
}

// dnsmasq 2.90: `dnsmasq-tftp[PID]: sent /run/.../tftp/undionly.kpxe to 10.77.0.163`, written
// once the last block is acknowledged.
static SENT_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"dnsmasq-tftp\[\d+\]: sent (\S+) to (\d{1,3}(?:\.\d{1,3}){3})\s*$")
        .expect("the TFTP line pattern is valid")
});

/// Reads a finished transfer out of a dnsmasq log line; `None` for every other line.
pub fn parse_sent(line: &str) -> Option<Sent> {
    let c = SENT_LINE.captures(line)?;
    Some(Sent {
        file: c[1].to_string(),
        peer: c[2].parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_recorded_transfer() {
        // Recorded from dnsmasq 2.90 serving undionly.kpxe to the e1000 ROM's iPXE.
        let l = "dnsmasq-tftp[37]: sent /work/wt-undionly/target/netboot-harness/runs/chain-undionly/20261125T112352Z-582/tftp/undionly.kpxe to 10.77.0.227";
        let sent = parse_sent(l).expect("a transfer line");
        assert_eq!(sent.peer, Ipv4Addr::new(10, 77, 0, 227));
        assert_eq!(sent.name(), "undionly.kpxe");
        assert!(sent.file.ends_with("/tftp/undionly.kpxe"));
    }

    #[test]
    fn other_tftp_lines_are_not_transfers() {
        for l in [
            "dnsmasq-tftp[37]: TFTP root is /run/x/tftp secure mode ",
            "dnsmasq-tftp[37]: file /run/x/tftp/pxelinux.0 not found for 10.77.0.227",
            "dnsmasq-tftp[37]: sent /run/x/tftp/undionly.kpxe to not-an-address",
            "dnsmasq-dhcp[37]: 167299604 sent size: 14 option: 67 bootfile-name  undionly.kpxe",
        ] {
            assert_eq!(parse_sent(l), None, "{l}");
        }
    }
}
