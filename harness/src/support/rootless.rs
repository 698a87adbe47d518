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

/// What `unshare --mount` says when `/` is not a mount point, as in a plain chroot: it cannot
/// make the mounts below `/` private (util-linux 2.38, seen in a chroot of a plain folder).
pub const ROOT_NOT_A_MOUNT: &str = "cannot change root filesystem propagation";

/// The cause of [`ROOT_NOT_A_MOUNT`] and its fix.
pub const CHROOT_FIX: &str = "`/` is not a mount point here (a plain chroot?), so unshare cannot \
    make the lab's mounts private (`cannot change root filesystem propagation: Invalid \
    argument`); bind-mount the chroot's folder onto itself before chrooting into it: \
    `mount --bind ROOT ROOT`, then `chroot ROOT`";

/// Whether `/` is a mount point, from `/proc/self/mountinfo`'s text (mount points there are
/// relative to this process's root, so a chroot of a plain folder has no `/` line); `None`
/// when there is no such text to read (no `/proc`).
pub fn root_is_mount_point(mountinfo: Option<&str>) -> Option<bool> {
    let text = mountinfo?;
    Some(
        text.lines()
            .any(|l| l.split_whitespace().nth(4) == Some("/")),
    )
}

/// [`CHROOT_FIX`] when this process's `/` is known not to be a mount point.
pub fn chroot_hint() -> Option<&'static str> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok();
    (root_is_mount_point(text.as_deref()) == Some(false)).then_some(CHROOT_FIX)
}

/// Why building an image needs root, for errors and `doctor`.
pub const IMAGE_BUILD_NEEDS_ROOT: &str = "image builds need root (mmdebstrap --mode=root makes \
    files owned by many users): build the images once as root (`netboot-harness image prepare \
    SCENARIO...`) into a cache this user can read, named by NETBOOT_HARNESS_CACHE";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chroot_of_a_plain_folder_has_no_root_mount() {
        let host = "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n\
                    23 22 0:21 / /proc rw,nosuid shared:12 - proc proc rw\n";
        assert_eq!(root_is_mount_point(Some(host)), Some(true));
        // Inside the chroot only what is mounted below it shows.
        let chroot = "40 22 0:21 / /proc rw,nosuid shared:12 - proc proc rw\n";
        assert_eq!(root_is_mount_point(Some(chroot)), Some(false));
        assert_eq!(root_is_mount_point(None), None);
        assert!(CHROOT_FIX.contains("mount --bind ROOT ROOT"));
    }

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
