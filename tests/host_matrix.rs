//! The harness on a second host: Debian 13 (trixie), with its QEMU 10, ipxe-qemu (ROMs in
//! `/usr/share/qemu`), dnsmasq 2.91 and tgt, boots the default, the dracut and the NIC-ordering
//! scenarios. The machine itself is the bookworm host.
//!
//! The trixie root is built once with mmdebstrap from `ci/host-packages` (the list `ci/setup`
//! installs here) and cached beside the images, at `<cache>/hosts/trixie-<hash>`: the hash
//! covers the package list and the recipe below, so a changed list builds a new root. A root
//! counts only once its completion marker is written; an interrupted build is removed and
//! started again. The harness binary built here runs inside it (trixie's glibc is newer), the
//! images come from this host's cache (prepared here first: the recipes, and so the keys, are
//! the checkout's), and the run directories land in the host's target folder.
//!
//! Every run inside the root happens in private mount and PID namespaces (`unshare --mount
//! --pid`) that end with it: the root bind-mounted onto itself (so the harness's own
//! `unshare --mount` finds a mount point at `/`), `/proc`, `/sys`, `/dev` (with `/dev/net/tun`
//! and `/dev/kvm` when present), a fresh `/tmp`, the checkout, the cache and the runs folder.
//! Nothing is mounted in the host's namespace and no process outlives the test, whichever way
//! it ends; the guests' network is the harness's own namespace, as on the host.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use libtest_mimic::{Arguments, Failed};
use sha2::{Digest, Sha256};

#[path = "support/boots.rs"]
mod boots;
#[path = "support/can_boot.rs"]
mod can_boot;

/// The scenarios booted on trixie, and whether `ci/test`'s fast tier boots them: the default and
/// the virtio-net boot NIC, whose ROM is QEMU's own default (the one model whose ROM choice
/// differs between the two QEMUs' packaging), are what the second host changes; the dracut
/// flavour and the NIC-ordering flip run the same guests on it and wait for the full tier.
/// Full-tier trials are named `trixie::full::NAME`, as the scenario tests' are.
const SCENARIOS: [(&str, Tier); 4] = [
    ("debian-ibft-e1000", Tier::Fast),
    ("nic-virtio-net", Tier::Fast),
    ("dracut-ibft-e1000", Tier::Full),
    ("nic-order-flip", Tier::Full),
];

#[derive(Clone, Copy)]
enum Tier {
    Fast,
    Full,
}

/// The Debian release of the second host.
const SUITE: &str = "trixie";

/// mmdebstrap's options besides the packages and the target: part of the root's cache key.
const RECIPE: &[&str] = &[
    "--variant=minbase",
    "--mode=root",
    "--quiet",
    // As ci/setup installs: without recommends.
    "--aptopt=APT::Install-Recommends \"false\"",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
    "--customize-hook=rm -f \"$1\"/var/cache/apt/archives/*.deb \"$1\"/var/lib/apt/lists/*_Packages",
];

/// The private namespaces every command of this test that builds or boots runs in: its mounts
/// and its processes end with it, however the test ends.
const UNSHARE: &[&str] = &[
    "--mount",
    "--propagation",
    "private",
    "--pid",
    "--fork",
    "--mount-proc",
    "--kill-child",
];

/// Written into the root last: a root without it is an interrupted build.
const COMPLETE: &str = ".netboot-harness-complete";

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the checkout exists")
}

fn main() {
    let args = Arguments::from_args();
    let blocker = can_boot::cannot_boot().or_else(missing_tools);
    let mut boots = boots::Boots::new(blocker);
    let mut trials: Vec<_> = SCENARIOS
        .iter()
        .map(|&(name, tier)| {
            let tier = match tier {
                Tier::Fast => "",
                Tier::Full => "full::",
            };
            boots.trial(format!("{SUITE}::{tier}{name}"), move || {
                boot_on_trixie(name)
            })
        })
        .collect();
    trials.push(libtest_mimic::Trial::test(
        "host_packages::read_as_ci_setup_reads_them",
        the_list_reads_as_ci_setup_reads_it,
    ));
    trials.push(libtest_mimic::Trial::test(
        "host_packages::a_changed_list_names_another_root",
        a_changed_list_names_another_root,
    ));
    boots.run(&args, trials).exit();
}

/// The cache key follows the list: a package more, fewer or renamed is another root; the order
/// of the same names is too (mmdebstrap gets them as listed), the comments are not.
fn a_changed_list_names_another_root() -> Result<(), Failed> {
    let base = host_packages("qemu-system-x86  # the guest machine\ntgt\n");
    let same = host_packages("# a heading\nqemu-system-x86\n\ntgt   # another comment\n");
    let more = host_packages("qemu-system-x86\ntgt\ndnsmasq-base\n");
    let fewer = host_packages("qemu-system-x86\n");
    if base != ["qemu-system-x86", "tgt"] || root_name(&base) != root_name(&same) {
        return Err(format!("{base:?} and {same:?} should name one root").into());
    }
    for other in [more, fewer] {
        if root_name(&other) == root_name(&base) {
            return Err(format!("{other:?} names the same root as {base:?}").into());
        }
    }
    if !root_name(&base).starts_with("trixie-") {
        return Err(root_name(&base).into());
    }
    Ok(())
}

/// The root holds what ci/setup installs: both read ci/host-packages the same way.
fn the_list_reads_as_ci_setup_reads_it() -> Result<(), Failed> {
    let list = project_root().join("ci/host-packages");
    let ours = host_packages(&std::fs::read_to_string(&list).map_err(|e| e.to_string())?);
    // ci/setup's own loop, taken from the script and run alone.
    let setup =
        std::fs::read_to_string(project_root().join("ci/setup")).map_err(|e| e.to_string())?;
    let start = setup
        .find("packages=()")
        .ok_or("ci/setup has no `packages=()`")?;
    let end = start
        + setup[start..]
            .find("\ndone <")
            .ok_or("ci/setup reads no list")?;
    let script = format!(
        "cd {:?}/ci; {}\ndone <host-packages\nprintf '%s\\n' \"${{packages[@]}}\"",
        project_root(),
        &setup[start..end]
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .output()
        .map_err(|e| e.to_string())?;
    let theirs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    if !out.status.success() || theirs != ours {
        return Err(format!(
            "ci/setup reads {theirs:?} ({}), this test {ours:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    if !ours.iter().any(|p| p == "qemu-system-x86") {
        return Err(format!("no qemu-system-x86 in {ours:?}").into());
    }
    Ok(())
}

/// What this test needs besides what booting needs: mmdebstrap (ci/setup installs it) and
/// chroot (coreutils).
fn missing_tools() -> Option<String> {
    ["mmdebstrap", "chroot", "unshare"]
        .into_iter()
        .find(|tool| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|tool| format!("`{tool}` is not installed (ci/setup installs it)"))
}

/// The package names of `ci/host-packages`: one a line, `#` starts a comment (as ci/setup reads
/// it).
fn host_packages(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split('#').next()?.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The root's folder name: the suite and a hash of the package list and the recipe.
fn root_name(packages: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(SUITE);
    for p in packages {
        h.update(b"\0package\0");
        h.update(p);
    }
    for o in RECIPE {
        h.update(b"\0option\0");
        h.update(o);
    }
    format!("{SUITE}-{}", &hex::encode(h.finalize())[..16])
}

fn cache_dir() -> PathBuf {
    netboot_harness::image::cache_dir()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The last `n` lines of `s`.
fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `cmd` with its output captured, ended by the kernel if this test process dies first
/// (nextest's timeout, Ctrl-C), so no build or boot outlives the test.
fn run_tied(cmd: &mut Command) -> Result<Output, Failed> {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()).into())
}

/// An exclusive `flock` on a file, held until dropped: one build of the root at a time, the
/// other tests wait for it and then reuse it.
struct Lock(std::fs::File);

impl Lock {
    fn take(path: &Path) -> Result<Lock, Failed> {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        // SAFETY: a plain flock on a descriptor this function owns.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!(
                "flock {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            )
            .into());
        }
        Ok(Lock(f))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: as in take; closing the file would release it too.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Removes a folder tree without crossing into another filesystem.
fn remove_tree(dir: &Path) -> Result<(), Failed> {
    if !dir.exists() {
        return Ok(());
    }
    let out = run_tied(
        Command::new("rm")
            .arg("-rf")
            .arg("--one-file-system")
            .arg(dir),
    )?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("cannot remove {}: {}", dir.display(), text(&out)).into())
    }
}

/// The trixie root: reused when complete, built otherwise.
fn trixie_root() -> Result<PathBuf, Failed> {
    let list = project_root().join("ci/host-packages");
    let packages = host_packages(
        &std::fs::read_to_string(&list).map_err(|e| format!("{}: {e}", list.display()))?,
    );
    if packages.is_empty() {
        return Err(format!("{} names no package", list.display()).into());
    }
    let hosts = cache_dir().join("hosts");
    std::fs::create_dir_all(&hosts).map_err(|e| format!("{}: {e}", hosts.display()))?;
    let name = root_name(&packages);
    let root = hosts.join(&name);
    let _lock = Lock::take(&hosts.join(format!(".{name}.lock")))?;
    if root.join(COMPLETE).exists() {
        return Ok(root);
    }
    // A root without its marker, or a partial tree, is what an interrupted build left.
    let partial = hosts.join(format!("{name}.partial"));
    remove_tree(&root)?;
    remove_tree(&partial)?;
    println!(
        "building the {SUITE} host root {} ({} packages from ci/host-packages)",
        root.display(),
        packages.len()
    );
    let t = Instant::now();
    // In mount and PID namespaces of its own: mmdebstrap's /proc, /sys and /dev mounts in the
    // tree end with it, and so do the processes it forks (apt, dpkg, its own helpers), also when
    // the test is killed half-way: unshare dies with the test, its child (PID 1 there) with it,
    // and the kernel ends everything else in the namespace.
    let out = run_tied(
        Command::new("unshare")
            .args(UNSHARE)
            .arg("mmdebstrap")
            .args(RECIPE)
            .arg(format!("--include={}", packages.join(",")))
            .arg(SUITE)
            .arg(&partial),
    )?;
    if !out.status.success() {
        let log = text(&out);
        let _ = remove_tree(&partial);
        return Err(format!(
            "mmdebstrap of the {SUITE} root failed ({}):\n{}",
            out.status,
            tail(&log, 40)
        )
        .into());
    }
    let secs = t.elapsed().as_secs_f64();
    let size = du(&partial);
    let info = format!("built in {secs:.0} s, {size}\n");
    std::fs::write(partial.join(COMPLETE), &info)
        .map_err(|e| format!("{}: {e}", partial.display()))?;
    std::fs::rename(&partial, &root).map_err(|e| format!("{}: {e}", root.display()))?;
    println!("{SUITE} host root {}: {}", root.display(), info.trim());
    Ok(root)
}

/// A folder's size as `du` tells it, for the log.
fn du(dir: &Path) -> String {
    Command::new("du")
        .args(["-sh", "--one-file-system"])
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "size unknown".into())
}

/// Mounts what a run needs into `$R` inside the private namespace, then runs the command in the
/// root with a clean environment. `$1` is the root, `$2` the harness binary, `$3` how many host
/// folders follow (each a pair: the folder, and where it goes in the root), then the command.
const ENTER: &str = r#"set -eu
R=$1 bin=$2 n=$3
shift 3
mount --bind "$R" "$R"
mount -t proc proc "$R/proc"
mount --rbind /sys "$R/sys"
mount --rbind /dev "$R/dev"
mount -t tmpfs tmpfs "$R/tmp"
touch "$R/usr/local/bin/netboot-harness"
mount --bind "$bin" "$R/usr/local/bin/netboot-harness"
while [ "$n" -gt 0 ]; do
  mkdir -p "$R$2"
  mount --bind "$1" "$R$2"
  shift 2
  n=$((n - 1))
done
# Not the last command (bash would exec it): bash stays PID 1 of the namespace, so the harness
# runs as an ordinary process, with the default actions for signals.
chroot "$R" "$@"
exit $?
"#;

/// Runs `args` inside the root, in the checkout, from a private mount namespace that ends with
/// it.
fn in_root(root: &Path, binds: &[(PathBuf, PathBuf)], args: &[&str]) -> Result<Output, Failed> {
    let checkout = project_root();
    let mut cmd = Command::new("unshare");
    cmd.args(UNSHARE)
        .args(["bash", "-c", ENTER, "enter"])
        .arg(root)
        .arg(env!("CARGO_BIN_EXE_netboot-harness"))
        .arg(binds.len().to_string())
        .args(binds.iter().flat_map(|(from, to)| [from, to]))
        .args(["/usr/bin/env", "-i"])
        .arg("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .arg("HOME=/root")
        .arg(format!("NETBOOT_HARNESS_CACHE={}", cache_dir().display()));
    if let Ok(ci) = std::env::var("CI") {
        cmd.arg(format!("CI={ci}"));
    }
    cmd.args(["sh", "-c", "cd \"$0\" && exec \"$@\""])
        .arg(&checkout)
        .args(args);
    run_tied(&mut cmd)
}

/// Where the runs folder is mounted in the root.
const RUNS_IN_ROOT: &str = "/runs";

/// The host's target folder (where this binary was built): the runs go under it.
fn target_dir() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_netboot-harness"));
    bin.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| project_root().join("target"))
}

fn boot_on_trixie(name: &str) -> Result<(), Failed> {
    let checkout = project_root();
    let scenario = checkout.join("scenarios").join(format!("{name}.yaml"));
    // The image, on the host: built here with bookworm's tools if it is not cached yet (ci/test
    // has prepared them all already). The root finds it under the same key.
    let out = run_tied(
        Command::new(env!("CARGO_BIN_EXE_netboot-harness"))
            .args(["image", "prepare"])
            .arg(&scenario)
            .current_dir(&checkout),
    )?;
    if !out.status.success() {
        return Err(format!("image prepare {name} on the host failed:\n{}", text(&out)).into());
    }
    let root = trixie_root()?;
    let runs = target_dir()
        .join("netboot-harness")
        .join("host-matrix")
        .join(SUITE);
    std::fs::create_dir_all(&runs).map_err(|e| format!("{}: {e}", runs.display()))?;
    // The runs folder goes to a short path in the root: QEMU's monitor socket in the run
    // directory must stay under the 108 bytes of a Unix socket path.
    let binds = [
        (checkout.clone(), checkout.clone()),
        (cache_dir(), cache_dir()),
        (runs.clone(), PathBuf::from(RUNS_IN_ROOT)),
    ];

    // First check: the tools and boot files as the harness finds them on trixie.
    let doctor = in_root(&root, &binds, &["netboot-harness", "doctor"])?;
    if !doctor.status.success() {
        return Err(format!(
            "`netboot-harness doctor` inside the {SUITE} root ({}) reports a problem:\n{}",
            root.display(),
            text(&doctor)
        )
        .into());
    }
    let versions = in_root(
        &root,
        &binds,
        &[
            "dpkg-query",
            "-W",
            "-f=${Package} ${Version}\\n",
            "qemu-system-x86",
            "ipxe-qemu",
            "dnsmasq-base",
            "tgt",
            "libc6",
        ],
    )?;
    println!("{SUITE} root {}:\n{}", root.display(), text(&versions));
    println!("doctor inside it:\n{}", text(&doctor));

    let before = run_dirs(&runs.join(name));
    let mut args = vec![
        "netboot-harness".to_string(),
        "run".into(),
        scenario.display().to_string(),
        "--runs-dir".into(),
        RUNS_IN_ROOT.into(),
    ];
    if let Ok(scale) = std::env::var("NETBOOT_HARNESS_TIMEOUT_SCALE") {
        args.extend(["--timeout-scale".into(), scale]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let t = Instant::now();
    let out = in_root(&root, &binds, &args)?;
    let took = t.elapsed().as_secs_f64();
    let report = text(&out);
    let new: Vec<PathBuf> = run_dirs(&runs.join(name))
        .into_iter()
        .filter(|d| !before.contains(d))
        .collect();
    let [run_dir] = new.as_slice() else {
        return Err(format!(
            "netboot-harness run {name} inside the {SUITE} root ({}) left {} new run directories under {}, not one:\n{report}",
            out.status,
            new.len(),
            runs.join(name).display()
        )
        .into());
    };
    let summary_path = run_dir.join("summary.json");
    let summary: serde_json::Value = std::fs::read(&summary_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| format!("{}: {e}\n{report}", summary_path.display()))?;
    let verdict = summary["verdict"].as_str().unwrap_or("(none)");
    if verdict != "passed" || !out.status.success() {
        return Err(format!(
            "{name} on {SUITE}: verdict {verdict} (exit {}), {}\n{report}",
            out.status,
            summary_path.display()
        )
        .into());
    }
    println!(
        "{name} on {SUITE}: passed in {took:.1} s ({:.1} s in the lab), {}",
        summary["duration_s"].as_f64().unwrap_or(f64::NAN),
        run_dir.display()
    );
    Ok(())
}

/// The run directories under a scenario's folder.
fn run_dirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect()
}
