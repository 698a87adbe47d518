//! Host tools the harness drives, and the Debian package that provides each.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy)]
pub struct Tool {
    pub binary: &'static str,
    pub package: &'static str,
    pub purpose: &'static str,
}

/// Everything a boot needs on the host.
pub const BOOT_TOOLS: &[Tool] = &[
    Tool {
        binary: "qemu-system-x86_64",
        package: "qemu-system-x86",
        purpose: "runs the guests",
    },
    Tool {
        binary: "dnsmasq",
        package: "dnsmasq-base",
        purpose: "DHCP server",
    },
    Tool {
        binary: "tgtd",
        package: "tgt",
        purpose: "iSCSI target",
    },
    Tool {
        binary: "tgtadm",
        package: "tgt",
        purpose: "configures the iSCSI target",
    },
    Tool {
        binary: "ip",
        package: "iproute2",
        purpose: "bridge and taps in the lab namespace",
    },
    Tool {
        binary: "unshare",
        package: "util-linux",
        purpose: "the lab's private namespaces",
    },
    Tool {
        binary: "cp",
        package: "coreutils",
        purpose: "per-run disk copies",
    },
];

/// What a fleet's per-node disks need (`services.iscsi.per_node`): qcow2 overlays and their
/// export to tgtd. Debian 12 ships `qemu-storage-daemon` in qemu-system-common, Debian 13 in
/// qemu-utils: the hint names both, and installing both works on either.
pub const FLEET_TOOLS: &[Tool] = &[
    Tool {
        binary: "qemu-img",
        package: "qemu-utils",
        purpose: "each fleet node's copy-on-write disk",
    },
    Tool {
        binary: "qemu-storage-daemon",
        package: "qemu-utils qemu-system-common",
        purpose: "exports each fleet node's disk to tgtd",
    },
];

/// Everything an image build needs.
pub const IMAGE_TOOLS: &[Tool] = &[
    Tool {
        binary: "mmdebstrap",
        package: "mmdebstrap",
        purpose: "builds the guest's root filesystem",
    },
    Tool {
        binary: "sfdisk",
        package: "fdisk",
        purpose: "partitions the disk image",
    },
    Tool {
        binary: "mke2fs",
        package: "e2fsprogs",
        purpose: "fills the root filesystem",
    },
    Tool {
        binary: "mcopy",
        package: "mtools",
        purpose: "fills the boot partition",
    },
    Tool {
        binary: "grub-mkstandalone",
        package: "grub-common grub-efi-amd64-bin",
        purpose: "the image's UEFI boot loader",
    },
];

/// Finds a binary on PATH or in the sbin folders (a non-root PATH often lacks them).
pub fn find(binary: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
                .iter()
                .map(PathBuf::from),
        )
        .map(|d| d.join(binary))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("missing host tools or files: {}", .missing.iter().map(|t| t.0.as_str()).collect::<Vec<_>>().join("; "))]
#[diagnostic(code(host::missing_tools))]
pub struct MissingTools {
    /// (what is missing, with the folders searched for a file; Debian package)
    pub missing: Vec<(String, String)>,
    #[help]
    pub help: String,
}

/// Checks that every tool is there, given the files already found missing (each with the
/// package that brings it); the error names the packages to install.
pub fn check(tools: &[Tool], missing_files: Vec<(String, String)>) -> Result<(), MissingTools> {
    let mut missing: Vec<(String, String)> = tools
        .iter()
        .filter(|t| find(t.binary).is_none())
        .map(|t| (t.binary.to_string(), t.package.to_string()))
        .collect();
    missing.extend(missing_files);
    if missing.is_empty() {
        return Ok(());
    }
    let mut pkgs: Vec<&str> = missing.iter().map(|m| m.1.as_str()).collect();
    pkgs.sort();
    pkgs.dedup();
    Err(MissingTools {
        help: format!(
            "install with: apt-get install {} (or run ci/setup, which installs everything the harness needs)",
            pkgs.join(" ")
        ),
        missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_tool_every_machine_has() {
        assert!(find("sh").is_some());
    }

    #[test]
    fn missing_tool_names_its_package() {
        let fake = [Tool {
            binary: "nbh-no-such-tool",
            package: "nbh-pkg",
            purpose: "test",
        }];
        let rom = (
            "nbh-no-such.rom (searched /x)".to_string(),
            "rom-pkg".to_string(),
        );
        let e = check(&fake, vec![rom]).unwrap_err();
        assert_eq!(e.missing.len(), 2);
        assert!(e.to_string().contains("nbh-no-such-tool"));
        assert!(
            e.to_string().contains("nbh-no-such.rom (searched /x)"),
            "{e}"
        );
        assert!(
            e.help.contains("apt-get install nbh-pkg rom-pkg"),
            "{}",
            e.help
        );
    }
}
