//! `doctor`: can this host run the harness, and if not, what fixes it.
//!
//! Every check is what a run really needs, tried the way a run does it: the tools and files
//! (each with its Debian package), private namespaces (the same `unshare` a run uses), the
//! accelerator probe, and room on disk for images and run directories. Without root it also
//! says what a run in a user namespace needs and cannot do (see [`crate::support::rootless`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::guest::boot_files::{BootFile, RomLoad, SearchPath};
use crate::support::tools;

/// Less free space than this in the cache or the runs folder gets a warning: an image takes
/// about 1.5 GiB and every run a sparse copy of it.
pub const LOW_DISK: u64 = 5 * 1024 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Works, but slowly or not for long.
    Warn,
    /// Required and not there.
    Missing,
    /// Required and does not work.
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "WARN",
            Status::Missing => "MISSING",
            Status::Fail => "FAIL",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Check {
    pub status: Status,
    pub what: String,
    pub detail: String,
    /// The Debian package that provides it, for tools and files.
    pub package: Option<&'static str>,
    /// What to do about it, when it is not ok and no package fixes it.
    pub fix: Option<String>,
}

impl Check {
    fn new(status: Status, what: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            status,
            what: what.into(),
            detail: detail.into(),
            package: None,
            fix: None,
        }
    }
}

/// Every check, in the order they are shown.
pub fn run(cache: &Path, runs: &Path) -> Vec<Check> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for t in tools::BOOT_TOOLS
        .iter()
        .chain(tools::IMAGE_TOOLS)
        .chain(tools::FLEET_TOOLS)
    {
        if !seen.insert(t.binary) {
            continue;
        }
        let mut c = match tools::find(t.binary) {
            Some(p) => Check::new(
                Status::Ok,
                t.binary,
                format!("{} ({})", p.display(), t.purpose),
            ),
            None => Check::new(Status::Missing, t.binary, t.purpose),
        };
        c.package = Some(t.package);
        out.push(c);
    }
    let search = crate::guest::boot_files::SearchPath::host();
    for r in crate::guest::boot_files::NIC_ROMS {
        let what = match r.load {
            RomLoad::Named => format!("{} boot ROM, {}", r.model.name(), r.platform),
            RomLoad::QemuDefault => format!(
                "{} boot ROM, {} (QEMU's default for the device: no romfile=)",
                r.model.name(),
                r.platform
            ),
        };
        out.push(boot_file(&search, &r.boot_file(), &what));
    }
    for f in [
        crate::guest::boot_files::SEABIOS,
        crate::guest::boot_files::IPXE_LKRN,
        crate::guest::boot_files::UNDIONLY_KPXE,
        crate::guest::boot_files::SNPONLY_EFI,
    ] {
        out.push(boot_file(&search, &f, f.purpose));
    }
    let mut uefi = match crate::guest::ovmf::host() {
        Ok(o) => Check::new(
            Status::Ok,
            "OVMF",
            format!(
                "{} and {} (from {}; platform: uefi nodes)",
                o.code.display(),
                o.vars_template.display(),
                o.descriptor.display()
            ),
        ),
        Err(e) => Check::new(Status::Missing, "OVMF", e.to_string()),
    };
    uefi.package = Some(crate::guest::ovmf::PACKAGE);
    out.push(uefi);
    let root = crate::support::rootless::is_root();
    out.push(namespaces(root));
    if !root {
        out.extend(rootless_checks());
    }
    let (accel, why) = crate::guest::detect_accel();
    let mut a = Check::new(Status::Ok, "accel", format!("{accel}: {why}"));
    if accel == crate::guest::Accel::Tcg {
        a.detail
            .push_str(" (boots run under emulation: slower, still complete)");
    }
    out.push(a);
    out.push(disk("cache", cache));
    out.push(disk("runs", runs));
    out
}

/// A file a boot needs: where it was found, or every folder searched.
fn boot_file(search: &SearchPath, f: &BootFile, purpose: &str) -> Check {
    let mut c = match search.find(f) {
        Ok(p) => Check::new(Status::Ok, f.name, format!("{} ({purpose})", p.display())),
        Err(e) => Check::new(
            Status::Missing,
            f.name,
            format!(
                "{purpose}: in none of {}",
                e.searched
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    };
    c.package = Some(f.package);
    c
}

/// Tries the namespaces a run's lab gets, with the command a run uses.
fn namespaces(root: bool) -> Check {
    let mut args = crate::support::rootless::lab_namespaces(root);
    args.extend(["--mount-proc", "true"]);
    let what = "namespaces";
    let tried = format!("unshare {}", args.join(" "));
    let out = Command::new("unshare")
        .args(&args)
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let how = if root {
                ""
            } else {
                " (not root: the lab runs in a user namespace of its own)"
            };
            Check::new(Status::Ok, what, format!("`{tried}` works{how}"))
        }
        Ok(o) => {
            let stderr = String::from_utf8_lossy(&o.stderr);
            let mut c = Check::new(
                Status::Fail,
                what,
                format!("`{tried}` failed: {}", stderr.trim()),
            );
            let blockers = crate::support::rootless::userns_blockers(Path::new("/proc/sys"));
            c.fix = Some(namespace_fix(root, &blockers, &stderr));
            c
        }
        Err(e) => {
            let mut c = Check::new(Status::Fail, what, format!("cannot run unshare: {e}"));
            c.package = Some("util-linux");
            c
        }
    }
}

/// What to do about namespaces that failed, given unshare's own message.
fn namespace_fix(root: bool, userns_blockers: &[String], stderr: &str) -> String {
    if stderr.contains(crate::support::rootless::ROOT_NOT_A_MOUNT) {
        return crate::support::rootless::CHROOT_FIX.into();
    }
    if root {
        return "the lab needs CAP_SYS_ADMIN and CAP_NET_ADMIN for its namespaces, bridge and \
                taps; in a container, start it privileged"
            .into();
    }
    let why = if userns_blockers.is_empty() {
        "this user may not create user namespaces here (a container or seccomp policy?)".into()
    } else {
        userns_blockers.join("; ")
    };
    format!(
        "not root, so the lab needs an unprivileged user namespace to own its network, mount and \
         PID namespaces, and: {why}; or run as root"
    )
}

/// What a run needs beyond the namespaces when it is not root.
fn rootless_checks() -> Vec<Check> {
    let tun = Path::new("/dev/net/tun");
    let usable = nix::unistd::access(
        tun,
        nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
    );
    let mut t = match usable {
        Ok(()) => Check::new(Status::Ok, "/dev/net/tun", "usable: QEMU can open the taps"),
        Err(e) => Check::new(
            Status::Fail,
            "/dev/net/tun",
            format!("not usable by this user ({e}): QEMU cannot open the lab's taps"),
        ),
    };
    if t.status != Status::Ok {
        t.fix = Some("give /dev/net/tun mode 0666 (Debian's default), or run as root".into());
    }
    // A run can still use images already in a cache it can read: a warning, not a failure.
    let mut b = Check::new(
        Status::Warn,
        "image builds",
        "not root: this user cannot build guest images, only use cached ones",
    );
    b.fix = Some(crate::support::rootless::IMAGE_BUILD_NEEDS_ROOT.into());
    vec![t, b]
}

/// Free space where `path` is, or would be: the nearest folder that exists.
fn disk(label: &str, path: &Path) -> Check {
    let what = format!("disk {label}");
    let Some(existing) = path.ancestors().find(|p| p.is_dir()).map(PathBuf::from) else {
        return Check::new(Status::Warn, what, format!("{}: no folder", path.display()));
    };
    match crate::support::paths::free_bytes(&existing) {
        Ok(free) => disk_check(&what, path, free),
        Err(e) => Check::new(
            Status::Warn,
            what,
            format!("{}: cannot tell free space: {e}", path.display()),
        ),
    }
}

/// The verdict on `free` bytes at `path`.
pub fn disk_check(what: &str, path: &Path, free: u64) -> Check {
    let human = crate::image::prune::human_bytes(free);
    if free < LOW_DISK {
        let mut c = Check::new(
            Status::Warn,
            what,
            format!("{}: {human} free, under 5 GiB", path.display()),
        );
        c.fix = Some(format!(
            "free space for {} (`netboot-harness image prune` removes outdated images), or \
             point NETBOOT_HARNESS_CACHE / --runs-dir at a roomier disk",
            path.display()
        ));
        c
    } else {
        Check::new(
            Status::Ok,
            what,
            format!("{}: {human} free", path.display()),
        )
    }
}

/// Nothing required is missing or broken.
pub fn ok(checks: &[Check]) -> bool {
    checks
        .iter()
        .all(|c| matches!(c.status, Status::Ok | Status::Warn))
}

/// The report: one line per check, then what to do about each problem.
pub fn render(checks: &[Check]) -> String {
    let mut s = String::new();
    for c in checks {
        let pkg = c
            .package
            .map(|p| format!("[Debian: {p}] "))
            .unwrap_or_default();
        s.push_str(
            format!("{:<8} {:<34} {pkg}{}\n", c.status.label(), c.what, c.detail).trim_end(),
        );
        s.push('\n');
    }
    let mut pkgs: Vec<&str> = checks
        .iter()
        .filter(|c| matches!(c.status, Status::Missing | Status::Fail) && c.fix.is_none())
        .filter_map(|c| c.package)
        .collect();
    pkgs.sort();
    pkgs.dedup();
    if !pkgs.is_empty() {
        s.push_str(&format!(
            "fix: apt-get install {} (or run ci/setup, which installs everything the harness needs)\n",
            pkgs.join(" ")
        ));
    }
    for c in checks.iter().filter(|c| c.status != Status::Ok) {
        if let Some(f) = &c.fix {
            s.push_str(&format!("fix ({}): {f}\n", c.what));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_disk_warns_with_a_fix_and_does_not_fail() {
        let c = disk_check("disk cache", Path::new("/var/cache/x"), 3 << 30);
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.detail.contains("3.0 GiB free, under 5 GiB"),
            "{}",
            c.detail
        );
        assert!(c.fix.as_deref().unwrap_or("").contains("image prune"));
        assert!(ok(&[c]));
        let c = disk_check("disk cache", Path::new("/"), 50 << 30);
        assert_eq!(c.status, Status::Ok);
    }

    #[test]
    fn missing_tools_fail_and_name_the_packages_to_install() {
        let mut a = Check::new(Status::Missing, "tgtd", "iSCSI target");
        a.package = Some("tgt");
        let mut b = Check::new(Status::Missing, "dnsmasq", "DHCP server");
        b.package = Some("dnsmasq-base");
        let mut n = Check::new(Status::Fail, "namespaces", "`unshare ...` failed");
        n.fix = Some(namespace_fix(
            true,
            &[],
            "unshare: unshare failed: Operation not permitted",
        ));
        let checks = [a, b, n];
        assert!(!ok(&checks));
        let r = render(&checks);
        assert!(r.contains("MISSING  tgtd"), "{r}");
        assert!(r.contains("[Debian: tgt] iSCSI target"), "{r}");
        assert!(r.contains("fix: apt-get install dnsmasq-base tgt"), "{r}");
        assert!(
            r.contains("fix (namespaces): the lab needs CAP_SYS_ADMIN"),
            "{r}"
        );
    }

    #[test]
    fn without_root_the_namespace_fix_names_what_blocks_user_namespaces() {
        let f = namespace_fix(
            false,
            &["AppArmor restricts unprivileged user namespaces".into()],
            "",
        );
        assert!(
            f.starts_with("not root, so the lab needs an unprivileged user namespace"),
            "{f}"
        );
        assert!(f.contains("AppArmor restricts"), "{f}");
        assert!(f.ends_with("or run as root"), "{f}");
        let f = namespace_fix(false, &[], "");
        assert!(f.contains("may not create user namespaces"), "{f}");
    }

    #[test]
    fn in_a_plain_chroot_the_fix_is_a_bind_mount_of_the_root() {
        // util-linux 2.38's words, seen running the lab's unshare in a chroot whose root is
        // not a mount point.
        let stderr = "unshare: cannot change root filesystem propagation: Invalid argument\n";
        for root in [true, false] {
            let f = namespace_fix(root, &[], stderr);
            assert!(f.contains("`/` is not a mount point"), "{f}");
            assert!(f.contains("mount --bind ROOT ROOT"), "{f}");
            assert!(!f.contains("privileged"), "{f}");
        }
    }

    #[test]
    fn boot_files_show_where_they_were_found_or_every_folder_searched() {
        let t = tempfile::tempdir().unwrap();
        let rom = t.path().join("usr/share/qemu/pxe-e1000.rom");
        std::fs::create_dir_all(rom.parent().unwrap()).unwrap();
        std::fs::write(&rom, b"x").unwrap();
        let search = SearchPath::new(vec![], t.path());
        let e1000 = crate::guest::boot_files::nic_rom(
            crate::scenario::NicModel::E1000,
            crate::guest::boot_files::Platform::Bios,
        );
        let c = boot_file(&search, &e1000.boot_file(), "e1000 boot ROM");
        assert_eq!(c.status, Status::Ok);
        assert!(
            c.detail
                .ends_with("usr/share/qemu/pxe-e1000.rom (e1000 boot ROM)"),
            "{}",
            c.detail
        );
        let c = boot_file(&search, &crate::guest::boot_files::UNDIONLY_KPXE, "chain");
        assert_eq!(c.status, Status::Missing);
        assert!(
            c.detail.contains(&format!(
                "in none of {}",
                t.path().join("usr/lib/ipxe").display()
            )),
            "{}",
            c.detail
        );
        let r = render(&[c]);
        assert!(r.contains("[Debian: ipxe]"), "{r}");
        assert!(r.contains("fix: apt-get install ipxe"), "{r}");
    }

    #[test]
    fn disk_space_is_measured_where_the_folder_would_be() {
        let c = disk(
            "runs",
            &std::env::temp_dir().join("nbh-doctor-not-there/a/b"),
        );
        assert!(c.detail.contains("free"), "{}", c.detail);
    }
}
