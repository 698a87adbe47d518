//! Which `chain-undionly` nodes are between the two stages of their chain, as a dnsmasq options
//! file.
//!
//! Real sites tell the two DHCP requests of the chain apart by user class: a vendor PXE ROM does
//! not say `iPXE`, the chained `undionly.kpxe` does. QEMU's only PXE ROMs are iPXE builds that
//! send the same user class, option 175 and bus ID as `undionly.kpxe` (seen with `--log-dhcp`),
//! so the user class cannot tell them apart here. A per-node mark stands in for it: a node's
//! line answers with `undionly.kpxe` until the TFTP server has sent it that file, then with the
//! boot URL (still only to a client that says `iPXE`) until that answer went out, then with
//! `undionly.kpxe` again, so a reboot starts from the ROM again.
//!
//! The marks are options matched by a per-node tag that the command line gives each MAC
//! (`--dhcp-mac`), not tags in a reread hosts file: dnsmasq 2.90 crashed (SIGSEGV or SIGABRT
//! in libc) on the first DHCP exchanges with `set:` tags in a `--dhcp-hostsfile`, with or
//! without a reread; a `--dhcp-optsfile` reread on SIGHUP did not.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::scenario::{Firmware, MacAddr, Scenario};

/// Tag of every chain-undionly node's boot NIC: the plain boot-URL rule skips them.
pub const CHAIN_TAG: &str = "chain";
/// Tag of a client that says it is a PXE stack (vendor class `PXEClient...`): only such a
/// client is handed undionly.kpxe, not the initramfs's DHCP client.
pub const PXE_TAG: &str = "pxe";

/// The options file dnsmasq reads at start and again on SIGHUP.
pub fn opts_file(run_dir: &Path) -> PathBuf {
    run_dir.join("dnsmasq-chain-opts")
}

/// The chain-undionly nodes and which of them are marked chained.
#[derive(Debug, Clone)]
pub struct ChainMarks {
    path: PathBuf,
    boot_url: String,
    /// Lower-case boot-NIC MACs, in the scenario's node order (the tag number is the index + 1).
    macs: Vec<String>,
    chained: BTreeSet<String>,
}

impl ChainMarks {
    /// `None` when no node of the scenario chains: then there is no options file and no TFTP.
    pub fn for_scenario(s: &Scenario, run_dir: &Path) -> Option<ChainMarks> {
        let macs: Vec<String> = s
            .nodes
            .iter()
            .filter(|n| n.firmware == Firmware::ChainUndionly)
            .map(|n| mac_key(&n.boot_nic().mac))
            .collect();
        if macs.is_empty() {
            return None;
        }
        Some(ChainMarks {
            path: opts_file(run_dir),
            boot_url: s.dhcp.boot_url.clone(),
            macs,
            chained: BTreeSet::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The per-node tag of each chain node's MAC: `(mac, tag)`.
    pub fn tags(&self) -> impl Iterator<Item = (&str, String)> {
        self.macs
            .iter()
            .enumerate()
            .map(|(i, m)| (m.as_str(), format!("{CHAIN_TAG}{}", i + 1)))
    }

    /// Whether `mac` (any case) is a chain-undionly node's boot NIC.
    pub fn has(&self, mac: &str) -> bool {
        self.macs.contains(&mac.to_ascii_lowercase())
    }

    pub fn is_chained(&self, mac: &str) -> bool {
        self.chained.contains(&mac.to_ascii_lowercase())
    }

    /// Marks a node chained; false if it is not a chain node or already marked.
    pub fn mark(&mut self, mac: &str) -> bool {
        let mac = mac.to_ascii_lowercase();
        self.has(&mac) && self.chained.insert(mac)
    }

    /// Clears a node's mark; false if it had none.
    pub fn clear(&mut self, mac: &str) -> bool {
        self.chained.remove(&mac.to_ascii_lowercase())
    }

    /// The file's text: one `--dhcp-option` line per node.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (mac, tag) in self.tags() {
            // Unmarked, the line stands in for "a PXE ROM that is not iPXE": it needs the PXE
            // vendor class and no user class.
            let line = if self.chained.contains(mac) {
                format!(
                    "tag:{tag},tag:ipxe,tag:boot,option:bootfile-name,{}\n",
                    self.boot_url
                )
            } else {
                format!(
                    "tag:{tag},tag:{PXE_TAG},tag:boot,option:bootfile-name,{}\n",
                    super::tftp::BOOT_FILE
                )
            };
            out.push_str(&line);
        }
        out
    }

    /// Writes the file whole, by rename, so dnsmasq never reads half of it.
    pub fn write(&self) -> std::io::Result<()> {
        let tmp = self.path.with_extension("new");
        std::fs::write(&tmp, self.render())?;
        std::fs::rename(&tmp, &self.path)
    }
}

fn mac_key(m: &MacAddr) -> String {
    m.to_string().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks() -> ChainMarks {
        let s = crate::scenario::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/chain-undionly.yaml"),
        )
        .expect("the chain-undionly scenario loads");
        ChainMarks::for_scenario(&s, Path::new("/r")).expect("a chain node")
    }

    #[test]
    fn a_mark_swaps_the_boot_file_and_clearing_swaps_it_back() {
        let mut m = marks();
        let rom = "tag:chain1,tag:pxe,tag:boot,option:bootfile-name,undionly.kpxe\n";
        let chained =
            "tag:chain1,tag:ipxe,tag:boot,option:bootfile-name,http://10.77.0.1/boot.ipxe\n";
        assert_eq!(m.render(), rom);
        assert!(m.mark("52:54:00:AA:00:41"), "any case");
        assert!(!m.mark("52:54:00:aa:00:41"), "already marked");
        assert!(m.is_chained("52:54:00:aa:00:41"));
        assert_eq!(m.render(), chained);
        assert!(m.clear("52:54:00:aa:00:41"));
        assert!(!m.clear("52:54:00:aa:00:41"));
        assert_eq!(m.render(), rom);
    }

    #[test]
    fn only_chain_nodes_are_marked() {
        let mut m = marks();
        assert!(!m.mark("52:54:00:aa:00:99"));
        assert_eq!(m.tags().count(), 1);
        let plain = crate::scenario::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/debian-ibft-e1000.yaml"),
        )
        .expect("the default scenario loads");
        assert!(ChainMarks::for_scenario(&plain, Path::new("/r")).is_none());
    }
}
