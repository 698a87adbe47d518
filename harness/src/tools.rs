//! Host tools the harness drives, and the Debian package that provides each.

use std::path::{Path, PathBuf};

use crate::boot_files::{BootFile, SearchPath};

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

/// Checks that every tool and file is there; the error names the packages to install, and for
/// a file every folder searched.
pub fn check(tools: &[Tool], files: &[BootFile]) -> Result<(), MissingTools> {
    check_in(tools, files, &SearchPath::host())
}

fn check_in(tools: &[Tool], files: &[BootFile], search: &SearchPath) -> Result<(), MissingTools> {
    let mut missing: Vec<(String, String)> = tools
        .iter()
        .filter(|t| find(t.binary).is_none())
        .map(|t| (t.binary.to_string(), t.package.to_string()))
        .collect();
    missing.extend(files.iter().filter_map(|f| search.find(f).err()).map(|e| {
        let searched = e
            .searched
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        (format!("{} (searched {searched})", e.name), e.package)
    }));
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
        let rom = BootFile {
            name: "nbh-no-such.rom",
            search: crate::boot_files::Search::QemuData(&["/usr/lib/nbh-roms"]),
            package: "rom-pkg",
            purpose: "test",
        };
        let search = SearchPath::new(vec!["/nonexistent/qemu".into()], "/nonexistent/root");
        let e = check_in(&fake, &[rom], &search).unwrap_err();
        assert_eq!(e.missing.len(), 2);
        assert!(e.to_string().contains("nbh-no-such-tool"));
        assert!(
            e.to_string().contains(
                "nbh-no-such.rom (searched /nonexistent/qemu, /nonexistent/root/usr/lib/nbh-roms)"
            ),
            "{e}"
        );
        assert!(
            e.help.contains("apt-get install nbh-pkg rom-pkg"),
            "{}",
            e.help
        );
    }
}
