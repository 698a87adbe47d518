//! Whether a run fits this machine, checked before anything starts so that a fleet is never
//! half-started: memory for every guest at once, and for a fleet the disk its nodes' overlays
//! need if every node wrote its whole disk. More TCG guests than cores is allowed: the step
//! timeouts are stretched by the measured demand per core (crate::expect::timeouts).

use std::path::{Path, PathBuf};

use crate::scenario::Scenario;

/// What QEMU itself takes beside the guest's RAM under TCG (its translation cache, ~100 MiB
/// measured, and its own heap), with room to spare.
const QEMU_OVERHEAD_MIB: u64 = 256;
/// dnsmasq, tgtd, the storage daemon and the harness's own lab process together.
const SERVICES_MIB: u64 = 128;

const MIB: u64 = 1024 * 1024;

/// `Err` with the arithmetic when the scenario's guests do not fit in memory at once.
pub fn check_memory(s: &Scenario) -> Result<(), String> {
    let guests: Vec<u64> = s.nodes.iter().map(|n| u64::from(n.memory_mib)).collect();
    match mem_available_mib() {
        Some(available) => memory(&guests, available),
        None => Ok(()),
    }
}

/// `Err` with the arithmetic when a fleet's disks (`(node, base image)`; empty for one node)
/// could outgrow the scratch folder's room.
pub fn check_disks(bases: &[(String, PathBuf)], scratch: &Path) -> Result<(), String> {
    if bases.is_empty() {
        return Ok(());
    }
    let sizes: Vec<u64> = bases
        .iter()
        .map(|(_, b)| std::fs::metadata(b).map(|m| m.len()).unwrap_or(0))
        .collect();
    match crate::support::paths::free_bytes(scratch) {
        Ok(free) => disks(&sizes, free, scratch),
        Err(_) => Ok(()),
    }
}

fn memory(guests: &[u64], available_mib: u64) -> Result<(), String> {
    let need: u64 = guests.iter().map(|g| g + QEMU_OVERHEAD_MIB).sum::<u64>() + SERVICES_MIB;
    if need <= available_mib {
        return Ok(());
    }
    let each = guests
        .iter()
        .map(|g| format!("({g} + {QEMU_OVERHEAD_MIB})"))
        .collect::<Vec<_>>()
        .join(" + ");
    Err(format!(
        "the guests do not fit in memory: {each} MiB for {} guest(s) and their QEMUs, + {SERVICES_MIB} MiB for the services = {need} MiB, but this machine has {available_mib} MiB available (MemAvailable); lower nodes[].memory_mib or run fewer nodes",
        guests.len()
    ))
}

fn disks(sizes: &[u64], free_bytes: u64, scratch: &Path) -> Result<(), String> {
    let need: u64 = sizes.iter().sum();
    if need <= free_bytes {
        return Ok(());
    }
    let each = sizes
        .iter()
        .map(|b| (b / MIB).to_string())
        .collect::<Vec<_>>()
        .join(" + ");
    Err(format!(
        "the fleet's disks may not fit: {each} MiB for {} node(s) (each node's overlay grows up to its whole disk) = {} MiB, but {} has {} MiB free",
        sizes.len(),
        need / MIB,
        scratch.display(),
        free_bytes / MIB
    ))
}

fn mem_available_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_shows_its_arithmetic() {
        assert!(memory(&[1024, 1024], 4096).is_ok());
        let e = memory(&[1024; 4], 4096).unwrap_err();
        assert!(
            e.contains(
                "(1024 + 256) + (1024 + 256) + (1024 + 256) + (1024 + 256) MiB for 4 guest(s)"
            ),
            "{e}"
        );
        assert!(
            e.contains("= 5248 MiB, but this machine has 4096 MiB available"),
            "{e}"
        );
    }

    #[test]
    fn a_fleet_needs_room_for_every_node_to_write_its_whole_disk() {
        let gib = 1024 * MIB;
        assert!(disks(&[gib; 4], 5 * gib, Path::new("/x")).is_ok());
        let e = disks(&[gib; 8], 5 * gib, Path::new("/x")).unwrap_err();
        assert!(
            e.contains("1024 + 1024") && e.contains("MiB for 8 node(s)"),
            "{e}"
        );
        assert!(e.contains("= 8192 MiB, but /x has 5120 MiB free"), "{e}");
    }
}
