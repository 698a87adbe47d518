//! The command line, without booting anything: check, list, doctor, and refusal of bad input
//! before anything starts.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

#[path = "support/boots.rs"]
mod boots;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn harness(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netboot-harness"))
        .args(args)
        .current_dir(root())
        .stdin(Stdio::null())
        .output()
        .expect("runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A temporary folder `nbh-cli-NAME-*`, removed when dropped, also when the test panics.
fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("nbh-cli-{name}-"))
        .tempdir()
        .expect("a temporary folder")
}

/// A scratch folder inside scenarios/ is not allowed (tests run in parallel with `list`), so
/// broken scenarios go to a temp folder with a copy of the boot script they reference.
fn temp_scenario(name: &str, body: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = temp_dir(name);
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("boot")).unwrap();
    std::fs::create_dir_all(dir.join("boot/fleet")).unwrap();
    for file in ["sanboot.ipxe", "fleet/menu.ipxe"] {
        std::fs::copy(
            root().join("scenarios/boot").join(file),
            dir.join("boot").join(file),
        )
        .unwrap();
    }
    let f = dir.join(format!("{name}.yaml"));
    std::fs::write(&f, body).unwrap();
    (tmp, f)
}

#[test]
fn check_accepts_every_shipped_scenario() {
    let o = harness(&[
        "check",
        "scenarios/debian-ibft-e1000.yaml",
        "scenarios/sanboot-wrong-target.yaml",
        "examples/initramfs-hook/scenario.yaml",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    for ok in [
        "debian-ibft-e1000.yaml: ok",
        "initramfs-hook/scenario.yaml: ok",
    ] {
        assert!(text(&o).contains(ok), "{}", text(&o));
    }
}

#[test]
fn check_names_file_line_and_column() {
    let good = std::fs::read_to_string(root().join("scenarios/debian-ibft-e1000.yaml")).unwrap();
    let bad = good.replace(
        "    memory_mib: 1024\n",
        "    memory_mib: 1024\n    ram: 2G\n",
    );
    let (tmp, f) = temp_scenario("typo", &bad);
    let o = harness(&["check", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains(&format!("{}:11:5", f.display())), "{t}");
    assert!(
        !t.contains(": line 11 column 5"),
        "location said twice: {t}"
    );
    assert!(t.contains("ram"), "{t}");
    tmp.close().unwrap();
}

/// `run` on a shipped scenario edited by `edit`: it must be refused (exit 2) before a run
/// directory exists. Returns the message, its lines joined.
fn refused_run(name: &str, shipped: &str, edit: impl Fn(&str) -> String) -> String {
    let good = std::fs::read_to_string(root().join("scenarios").join(shipped)).unwrap();
    let (tmp, f) = temp_scenario(name, &edit(&good));
    let runs = tmp.path().join("runs");
    let o = harness(&[
        "run",
        "--runs-dir",
        runs.to_str().unwrap(),
        f.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        !runs.exists(),
        "a run directory was created for a scenario that never ran"
    );
    tmp.close().unwrap();
    text(&o).split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn run_refuses_a_fleet_that_cannot_fit_with_the_arithmetic() {
    // 4 x 16 GiB: more than any machine this runs on has free, and allowed per node.
    let t = refused_run("bigfleet", "fleet-four-nodes.yaml", |s| {
        s.replace("memory_mib: 1024", "memory_mib: 16384")
    });
    assert!(t.contains("the guests do not fit in memory"), "{t}");
    assert!(t.contains("for 4 guest(s) and their QEMUs"), "{t}");
    assert!(t.contains("= 66688 MiB, but this machine has"), "{t}");
}

#[test]
fn run_refuses_a_broken_scenario_before_starting_anything() {
    let t = refused_run("badnic", "debian-ibft-e1000.yaml", |s| {
        s.replace("model: e1000,", "model: tg3,")
    });
    assert!(t.contains("badnic.yaml:"), "{t}");
    assert!(
        t.contains("e1000e") && t.contains("rtl8139"),
        "valid models not listed: {t}"
    );
}

#[test]
fn list_shows_scenarios_with_descriptions() {
    let o = harness(&["list"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("debian-ibft-e1000"), "{t}");
    assert!(t.contains("One node with an Intel e1000 NIC"), "{t}");
}

#[test]
fn list_splits_the_scenarios_into_their_tiers() {
    let paths = |tier: &str| {
        let o = harness(&["list", "--tier", tier, "--paths"]);
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| {
                let p = Path::new(l);
                assert!(p.is_file(), "not a scenario file: {l}");
                p.file_stem().unwrap().to_string_lossy().into_owned()
            })
            .collect::<Vec<_>>()
    };
    let fast = paths("fast");
    let full = paths("full");
    let bench = paths("bench");
    assert!(fast.contains(&"debian-ibft-e1000".to_string()), "{fast:?}");
    assert!(full.contains(&"all-intel".to_string()), "{full:?}");
    assert_eq!(
        bench,
        ["fleet-eight-nodes", "uefi-ibft-e1000-proxydhcp-wait"]
    );
    assert!(fast.iter().all(|n| !full.contains(n)), "{fast:?} {full:?}");
    let shipped = std::fs::read_dir(root().join("scenarios"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "yaml")
        })
        .count();
    assert_eq!(
        fast.len() + full.len() + bench.len(),
        shipped,
        "each scenario in one tier"
    );
    let o = harness(&["list", "--tier", "nightly"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("possible values: fast, full, bench"),
        "{}",
        text(&o)
    );
}

#[test]
fn doctor_reports_each_tool_with_its_package() {
    let tmp = temp_dir("doctor");
    let dir = tmp.path();
    let runs = dir.join("runs");
    let o = Command::new(env!("CARGO_BIN_EXE_netboot-harness"))
        .args(["doctor", "--runs-dir", runs.to_str().unwrap()])
        .current_dir(root())
        .env("NETBOOT_HARNESS_CACHE", dir.join("cache"))
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    let t = text(&o);
    let line = |start: &str| {
        t.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(start))
            .unwrap_or_else(|| panic!("no line for {start}: {t}"))
            .to_string()
    };
    assert!(
        line("qemu-system-x86_64").contains("[Debian: qemu-system-x86]"),
        "{t}"
    );
    assert!(line("tgtd").contains("[Debian: tgt]"), "{t}");
    assert!(line("namespaces").contains("unshare --net"), "{t}");
    assert!(
        line("accel").contains("tcg") || line("accel").contains("kvm"),
        "{t}"
    );
    // Space is measured where the folders would be, even before they exist.
    assert!(
        line("disk").contains(&format!("{}: ", dir.join("cache").display()))
            && line("disk").contains(" free"),
        "{t}"
    );
    assert!(t.contains(&format!("{}: ", runs.display())), "{t}");
    // Non-zero exactly when something required is missing or broken, with the fix.
    let broken = t
        .lines()
        .any(|l| l.starts_with("MISSING") || l.starts_with("FAIL"));
    assert_eq!(o.status.success(), !broken, "{t}");
    if broken {
        assert!(t.contains("fix"), "{t}");
    }
    // A host that cannot boot guests: the suite's rule says whether that fails this test. It
    // is not counted as a skipped boot: everything above was checked.
    let blocker = (!o.status.success()).then(|| format!("doctor reports a problem:\n{t}"));
    match boots::verdict(blocker) {
        boots::Verdict::Run => {}
        boots::Verdict::Fail(why) => panic!("{why}"),
        boots::Verdict::Ignore(why) => eprintln!("ignored: the host must be ready: {why}"),
    }
}

/// `doctor` as an ordinary user: the lab would run in a user namespace, and the report says
/// whether this host allows one (and if not, which switch forbids it) and that image builds
/// need root. Needs root to become `nobody` (the suite's rule decides elsewhere).
#[test]
fn doctor_without_root_explains_the_user_namespace_mode() {
    let bin = env!("CARGO_BIN_EXE_netboot-harness");
    if !boots::require(
        "doctor_without_root_explains_the_user_namespace_mode",
        nobody_blocker(bin),
    ) {
        return;
    }
    let tmp = temp_dir("doctor-nobody");
    let dir = tmp.path();
    let o = as_nobody()
        .args(["env", "HOME=/nonexistent"])
        .arg(format!(
            "NETBOOT_HARNESS_CACHE={}",
            dir.join("cache").display()
        ))
        .args([bin, "doctor", "--runs-dir"])
        .arg(dir.join("runs"))
        .current_dir(root())
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    let t = text(&o);
    let line = |what: &str| {
        t.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(what))
            .unwrap_or_else(|| panic!("no line for {what}: {t}"))
            .to_string()
    };
    let ns = line("namespaces");
    assert!(
        ns.contains("unshare --user --map-root-user --net --mount --pid"),
        "{t}"
    );
    if ns.starts_with("ok") {
        assert!(ns.contains("user namespace of its own"), "{t}");
    } else {
        assert!(
            t.contains(
                "fix (namespaces): not root, so the lab needs an unprivileged user namespace"
            ),
            "{t}"
        );
    }
    assert!(line("/dev/net/tun").contains("QEMU"), "{t}");
    assert!(line("image").starts_with("WARN"), "{t}");
    assert!(
        t.contains("fix (image builds): image builds need root"),
        "{t}"
    );
    let broken = t
        .lines()
        .any(|l| l.starts_with("MISSING") || l.starts_with("FAIL"));
    assert_eq!(o.status.success(), !broken, "{t}");
}

/// `setpriv` dropping to `nobody`, with no capability to inherit.
fn as_nobody() -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        "--inh-caps=-all",
    ]);
    c
}

/// Why this test cannot become `nobody` and run `program` as that user, if it cannot.
fn nobody_blocker(program: &str) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: only root can become `nobody`".into());
    }
    let reachable = as_nobody()
        .args(["test", "-x", program])
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (!reachable).then(|| {
        format!("`setpriv --reuid=nobody` cannot run {program} (setpriv, the `nobody` user and a path `nobody` can read are needed)")
    })
}

#[test]
fn help_reads_well() {
    let o = harness(&["--help"]);
    let t = text(&o);
    for cmd in ["run", "check", "list", "image", "doctor"] {
        assert!(t.contains(cmd), "{cmd} missing from --help: {t}");
    }
}

#[test]
fn report_prints_each_run_and_draws_one_timeline_for_all() {
    let tmp = temp_dir("report");
    let dir = tmp.path();
    let fixture = root().join("harness/tests-data/summary-passed.json");
    let runs: Vec<PathBuf> = ["20261124T232729Z-1", "20261124T232729Z-2"]
        .iter()
        .map(|name| {
            let run = dir.join(name);
            std::fs::create_dir_all(&run).unwrap();
            std::fs::copy(&fixture, run.join("summary.json")).unwrap();
            run
        })
        .collect();
    let svg = dir.join("compare.svg");
    let o = harness(&[
        "report",
        runs[0].to_str().unwrap(),
        runs[1].to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert_eq!(
        t.matches("OK: scenario debian-ibft-e1000 PASSED in 72.4s")
            .count(),
        2,
        "{t}"
    );
    assert!(t.contains("kernel found the iBFT"), "{t}");
    assert!(t.contains(&format!("timeline: {}", svg.display())), "{t}");
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.starts_with("<svg "), "{picture:.200}");
    assert!(picture.trim_end().ends_with("</svg>"));
    assert!(picture.contains("2 runs on one time scale"));
    for run in ["20261124T232729Z-1", "20261124T232729Z-2"] {
        assert!(picture.contains(&format!("data-label=\"{run}\"")), "{run}");
    }
    assert_eq!(picture.matches("data-phase=\"kernel\"").count(), 2);

    // A folder without a summary is an error that names the file.
    let o = harness(&["report", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("summary.json"), "{}", text(&o));
    tmp.close().unwrap();
}

/// An unchanged recipe is reused from the cache, and the harness says so. (A changed parameter
/// gives another cache key: see image::tests::cache_key_is_stable_and_sensitive.)
#[test]
fn unchanged_recipe_is_reused_from_the_cache() {
    // SAFETY: geteuid has no preconditions.
    let blocker =
        (unsafe { libc::geteuid() } != 0).then(|| "not root: image builds need root".into());
    if !boots::require("unchanged_recipe_is_reused_from_the_cache", blocker) {
        return;
    }
    let first = harness(&["image", "prepare", "scenarios/sanboot-wrong-target.yaml"]);
    assert!(first.status.success(), "{}", text(&first));
    let second = harness(&["image", "prepare", "scenarios/sanboot-wrong-target.yaml"]);
    assert!(second.status.success(), "{}", text(&second));
    let t = text(&second);
    assert!(t.contains("image debian-initramfs-tools: reused "), "{t}");
    assert!(!t.contains("building"), "{t}");
    let path = |o: &Output| String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_eq!(path(&first), path(&second));
}

fn harness_with_cache(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netboot-harness"))
        .args(args)
        .current_dir(root())
        .env("NETBOOT_HARNESS_CACHE", cache)
        .stdin(Stdio::null())
        .output()
        .expect("runs")
}

/// `image prune` keeps the image the default recipe parameters give (which the default scenario
/// uses too), removes an outdated one this checkout used, with its lock and build log, keeps one
/// without a record of who uses it (another checkout may), counts the bytes, never follows a
/// symlink out of the cache, and `--dry-run` changes nothing.
#[test]
fn image_prune_keeps_wanted_images_and_removes_the_rest() {
    use netboot_harness::image;
    let tmp = temp_dir("prune");
    let dir = tmp.path();
    let cache = dir.join("cache");
    let images = root().join("images");
    let recipe = image::load_recipe(&images, "debian-initramfs-tools").unwrap();
    let params = recipe.resolve(&Default::default()).unwrap();
    let key = image::cache_key(&recipe, &images, &params).unwrap();
    let current = cache
        .join("images")
        .join(image::image_dir_name(&recipe.name, &key));
    let stale = cache.join("images/debian-initramfs-tools-0123456789abcdef");
    let unrecorded = cache.join("images/debian-initramfs-tools-00000000000000aa");
    for d in [&current, &stale, &unrecorded] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("disk.img"), vec![7u8; 1 << 20]).unwrap();
    }
    std::fs::write(
        stale.join(image::USERS_FILE),
        format!("{}\t{}\n", image::KEY_SCHEME, root().display()),
    )
    .unwrap();
    std::fs::write(
        cache.join("images/.debian-initramfs-tools-0123456789abcdef.lock"),
        b"",
    )
    .unwrap();
    std::fs::write(
        cache.join("build-debian-initramfs-tools-0123456789abcdef.log"),
        b"old build",
    )
    .unwrap();
    let outside = dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("precious.img"), b"not the harness's").unwrap();
    let link = cache.join("images/debian-initramfs-tools-fedcba9876543210");
    std::os::unix::fs::symlink(&outside, &link).unwrap();

    let o = harness_with_cache(&cache, &["image", "prune", "--dry-run"]);
    let t = text(&o);
    assert!(
        t.contains(&format!("would remove  {}", stale.display())),
        "{t}"
    );
    assert!(
        t.contains(&format!("kept          {}", current.display())),
        "{t}"
    );
    assert!(
        t.contains("default parameters of debian-initramfs-tools"),
        "{t}"
    );
    assert!(t.contains("would free 1.0 MiB"), "{t}");
    assert!(
        t.contains(&format!("kept          {}", unrecorded.display()))
            && t.contains("no record of the checkouts that use it"),
        "{t}"
    );
    assert!(t.contains("kept 2 image(s)"), "{t}");
    assert!(stale.exists(), "a dry run removed something");
    assert_eq!(
        o.status.code(),
        Some(1),
        "the escaping link is reported: {t}"
    );

    let o = harness_with_cache(&cache, &["image", "prune"]);
    let t = text(&o);
    assert!(
        t.contains(&format!("removed       {}", stale.display())),
        "{t}"
    );
    assert!(
        t.contains(&format!("REFUSED       {}", link.display())),
        "{t}"
    );
    assert!(t.contains("freed 1.0 MiB"), "{t}");
    assert!(!stale.exists() && current.join("disk.img").exists(), "{t}");
    assert!(unrecorded.exists(), "{t}");
    assert!(!cache
        .join("build-debian-initramfs-tools-0123456789abcdef.log")
        .exists());
    assert!(outside.join("precious.img").exists());
    assert!(
        link.symlink_metadata().is_ok(),
        "the link itself is left too"
    );

    std::fs::remove_file(&link).unwrap();
    let o = harness_with_cache(&cache, &["image", "prune", "--all"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!current.exists() && !unrecorded.exists(), "{}", text(&o));
    assert!(outside.join("precious.img").exists());

    // An empty or missing cache is not an error.
    let o = harness_with_cache(&dir.join("none"), &["image", "prune"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("freed 0 B"), "{}", text(&o));
    tmp.close().unwrap();
}

/// `--keep` and `--console` hold one run open for a person: with several scenarios, or
/// `--console` without a terminal, they are refused before anything starts.
#[test]
fn keep_and_console_are_refused_where_they_cannot_work() {
    let tmp = temp_dir("hold");
    let runs = tmp.path().join("runs");
    let two = [
        "scenarios/debian-ibft-e1000.yaml",
        "scenarios/sanboot-wrong-target.yaml",
    ];
    for flag in ["--keep", "--console"] {
        let o = harness(&[
            "run",
            flag,
            "--runs-dir",
            runs.to_str().unwrap(),
            two[0],
            two[1],
        ]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let t = text(&o);
        assert!(
            t.contains(&format!("{flag} holds a single run open")),
            "{t}"
        );
        assert!(t.contains("not 2"), "{t}");
    }
    // The tests run with stdin from /dev/null: no terminal to type from.
    let o = harness(&[
        "run",
        "--console=node01",
        "--runs-dir",
        runs.to_str().unwrap(),
        two[0],
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("--console needs a terminal on stdin"),
        "{}",
        text(&o)
    );
    assert!(!runs.exists(), "a run started before the refusal");
}

/// On a terminal (`script` gives the command one), `--console=NODE` names a node of the
/// scenario, checked before anything starts.
#[test]
fn console_names_a_node_of_the_scenario() {
    // ci/setup installs util-linux: a missing `script` is a broken host, not a skip.
    if let Err(e) = Command::new("script").arg("--version").output() {
        panic!("cannot run `script` (Debian package util-linux, ci/setup installs it): {e}");
    }
    let tmp = temp_dir("console");
    let runs = tmp.path().join("runs");
    let cmd = format!(
        "{} run --console=node09 --runs-dir {} scenarios/debian-ibft-e1000.yaml",
        env!("CARGO_BIN_EXE_netboot-harness"),
        runs.display()
    );
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(root())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("has no node `node09`"), "{t}");
    assert!(t.contains("`node01`"), "{t}");
    assert!(!runs.exists(), "a run started before the refusal");
}

/// Every verb that only prints (no boot, no build) ends quietly when its reader has gone away,
/// as `doctor | head -1` or `list | head -1` do: no panic text, no backtrace, and it either
/// finishes or ends by SIGPIPE as Unix tools do. The reader is closed before the command starts,
/// so its first write meets the closed pipe whatever the output's size.
#[test]
fn read_only_verbs_end_quietly_on_a_closed_pipe() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = temp_dir("pipe");
    let dir = tmp.path();
    let run = dir.join("20261124T232729Z-1");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::copy(
        root().join("harness/tests-data/summary-passed.json"),
        run.join("summary.json"),
    )
    .unwrap();
    let svg = dir.join("t.svg");
    let (run, svg, runs) = (
        run.to_str().unwrap(),
        svg.to_str().unwrap(),
        dir.join("runs"),
    );
    let verbs: [&[&str]; 11] = [
        &["--help"],
        &["--version"],
        &["run", "--help"],
        &["list"],
        &["check", "scenarios/debian-ibft-e1000.yaml"],
        &["doctor", "--runs-dir", runs.to_str().unwrap()],
        &["image", "list"],
        &["image", "prune", "--dry-run"],
        &["report", run],
        &["report", run, "--svg", svg],
        &["no-such-verb"],
    ];
    for args in verbs {
        let (reader, writer) = nix::unistd::pipe().expect("a pipe");
        drop(reader);
        let o = Command::new(env!("CARGO_BIN_EXE_netboot-harness"))
            .args(args)
            .current_dir(root())
            .env("NETBOOT_HARNESS_CACHE", dir.join("cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped())
            .output()
            .expect("runs");
        let err = String::from_utf8_lossy(&o.stderr);
        for noise in ["panicked", "Broken pipe", "backtrace", "RUST_BACKTRACE"] {
            assert!(!err.contains(noise), "{args:?}: {noise}: {err}");
        }
        let quiet_end =
            o.status.code().is_some_and(|c| c != 101) || o.status.signal() == Some(libc::SIGPIPE);
        assert!(quiet_end, "{args:?}: {:?}: {err}", o.status);
    }
    // The picture is drawn even though nobody reads the report.
    assert!(std::fs::read_to_string(svg).unwrap().starts_with("<svg "));
    tmp.close().unwrap();
}

/// `image build`'s additions are checked before anything is built: an overlay's link leading
/// out of it, a missing customize script, a dracut tree for an initramfs-tools recipe.
#[test]
fn image_build_refuses_bad_additions_before_building() {
    let dir = temp_dir("image-additions");
    let overlay = dir.path().join("overlay/etc");
    std::fs::create_dir_all(&overlay).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", overlay.join("passwd")).unwrap();
    let d = dir.path().to_str().unwrap();
    for (args, want) in [
        (
            vec!["--overlay".to_string(), format!("{d}/overlay")],
            "the symbolic link etc/passwd -> /etc/passwd leaves the overlay's folder",
        ),
        (
            vec!["--customize".to_string(), format!("{d}/missing.sh")],
            "customize script",
        ),
        (
            vec!["--dracut-source".to_string(), d.to_string()],
            "dracut_source applies to recipes of the dracut flavour, not `initramfs-tools`",
        ),
    ] {
        let mut all = vec!["image", "build", "debian-initramfs-tools"];
        all.extend(args.iter().map(String::as_str));
        let out = harness(&all);
        let said = text(&out);
        assert!(!out.status.success(), "{all:?} succeeded: {said}");
        // miette wraps long messages, even inside words: compare without the wrapping.
        let words = |t: &str| {
            t.chars()
                .filter(|c| !c.is_whitespace() && *c != '│')
                .collect::<String>()
        };
        assert!(words(&said).contains(&words(want)), "{all:?}: {said}");
    }
}
