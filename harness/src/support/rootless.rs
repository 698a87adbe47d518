//! Runs without root: the lab's namespaces inside a user namespace of their own.
//!
//! Tried on Debian bookworm (kernel 6.x, util-linux 2.38) as `nobody`: with
//! `unshare --user --map-root-user` in front of the lab's usual `--net --mount --pid`, the lab
//! is root in namespaces it owns, which is all it needs. It makes the bridge and taps (Debian's
//! `/dev/net/tun` is mode 0666), mounts its private `/run`, and dnsmasq, tgtd and QEMU work
//! inside; the sanboot-wrong-target and a boot to the iSCSI root mount both ran this way.
//! What stays root's: building images (`mmdebstrap --mode=root` creates files owned by other
//! users, which a single-uid mapping cannot) and, unless the user is in the `kvm` group, KVM.

use std::path::Path;

/// Whether this process has real root, or runs the lab in a user namespace.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The `unshare` options that give the lab its namespaces, for this user.
pub fn lab_namespaces(root: bool) -> Vec<&'static str> {
    let mut a = Vec::new();
    if !root {
        // Created first by unshare, so the user namespace owns the others.
        a.extend(["--user", "--map-root-user"]);
    }
    a.extend(["--net", "--mount", "--pid", "--fork"]);
    a
}

/// Kernel switches that forbid an ordinary user's user namespaces, each with what fixes it;
/// read from `proc_sys` (`/proc/sys` on a real host).
pub fn userns_blockers(proc_sys: &Path) -> Vec<String> {
    let read = |rel: &str| {
        std::fs::read_to_string(proc_sys.join(rel))
            .ok()
            .map(|s| s.trim().to_string())
    };
    let mut out = Vec::new();
    if read("user/max_user_namespaces").as_deref() == Some("0") {
        out.push("user.max_user_namespaces is 0 (sysctl -w user.max_user_namespaces=15000)".into());
    }
    // Debian's own switch, on older kernels.
    if read("kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        out.push(
            "kernel.unprivileged_userns_clone is 0 (sysctl -w kernel.unprivileged_userns_clone=1)"
                .into(),
        );
    }
    // Ubuntu 24.04 and later: AppArmor allows them only to profiled programs.
    if read("kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        out.push(
            "AppArmor restricts unprivileged user namespaces \
             (sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor profile \
             for unshare)"
                .into(),
        );
    }
    out
}

/// Why building an image needs root, for errors and `doctor`.
pub const IMAGE_BUILD_NEEDS_ROOT: &str = "image builds need root (mmdebstrap --mode=root makes \
    files owned by many users): build the images once as root (`netboot-harness image prepare \
    SCENARIO...`) into a cache this user can read, named by NETBOOT_HARNESS_CACHE";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_user_gets_a_user_namespace() {
        assert_eq!(
            lab_namespaces(true),
            ["--net", "--mount", "--pid", "--fork"]
        );
        assert_eq!(lab_namespaces(false)[..2], ["--user", "--map-root-user"]);
    }

    #[test]
    fn each_closed_switch_is_named_with_its_fix() {
        let tmp = tempfile::Builder::new()
            .prefix("nbh-rootless-")
            .tempdir()
            .unwrap();
        let d = tmp.path();
        for (f, v) in [
            ("user/max_user_namespaces", "0\n"),
            ("kernel/unprivileged_userns_clone", "0\n"),
            ("kernel/apparmor_restrict_unprivileged_userns", "1\n"),
        ] {
            std::fs::create_dir_all(d.join(f).parent().unwrap()).unwrap();
            std::fs::write(d.join(f), v).unwrap();
        }
        let b = userns_blockers(d);
        assert_eq!(b.len(), 3, "{b:?}");
        assert!(b[2].contains("AppArmor"), "{b:?}");
        std::fs::write(d.join("user/max_user_namespaces"), "15000\n").unwrap();
        std::fs::write(d.join("kernel/unprivileged_userns_clone"), "1\n").unwrap();
        std::fs::write(
            d.join("kernel/apparmor_restrict_unprivileged_userns"),
            "0\n",
        )
        .unwrap();
        assert!(userns_blockers(d).is_empty());
        tmp.close().unwrap();
    }
}
