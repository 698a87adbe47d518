//! One test per `scenarios/*.yaml`: each really boots through `netboot-harness run`.
//!
//! The harness judges the run itself (a scenario with `expect_failure` passes when it fails at
//! the expected step), so a test passes exactly when the command exits 0. On failure the test
//! prints the harness's report: the failing step, what it waited for, the console tail and the
//! artifact paths.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use libtest_mimic::{Arguments, Failed};

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[path = "support/boots.rs"]
mod boots;
#[path = "support/can_boot.rs"]
mod can_boot;
#[path = "support/dracut_source.rs"]
mod dracut_source;
#[path = "support/initramfs_hook.rs"]
mod initramfs_hook;

fn main() {
    let args = Arguments::from_args();
    let root = project_root();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("scenarios"))
        .expect("scenarios/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    durations::longest_first(&mut files, &durations::load());

    let mut boots = boots::Boots::new(can_boot::cannot_boot());
    // `tier: bench` scenarios are for `bench` alone (the README's fleet figures): larger than
    // the suite boots. Their validity is checked with every other scenario's (tests/cli.rs).
    let files: Vec<PathBuf> = files
        .into_iter()
        .filter(|f| {
            !matches!(
                netboot_harness::scenario::load(f).map(|s| s.tier),
                Ok(netboot_harness::scenario::Tier::Bench)
            )
        })
        .collect();
    let mut trials = files
        .into_iter()
        .map(|file| {
            let name = file
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            // `ci/test` selects the fast tier by these names; a scenario that does not load
            // stays in it, so its test fails there with the harness's own message.
            let tier = match netboot_harness::scenario::load(&file).map(|s| s.tier) {
                Ok(netboot_harness::scenario::Tier::Full) => "full::",
                _ => "",
            };
            boots.trial(format!("scenario::{tier}{name}"), move || {
                let t = Instant::now();
                let result = run_scenario(&file);
                durations::save(&name, t.elapsed().as_secs_f64());
                result
            })
        })
        .collect::<Vec<_>>();
    trials.push(
        boots.trial("initramfs_hook::edit_rebuild_verdict", move || {
            initramfs_hook::edit_rebuild_verdict(&project_root())
        }),
    );
    trials.push(
        boots.trial("dracut_source::full::boots_dracut_ibft_e1000", move || {
            dracut_source::boots_dracut_ibft_e1000(&project_root())
        }),
    );
    boots.run(&args, trials).exit();
}

/// How long each scenario took last time on this machine, one file per scenario next to the
/// image cache: under nextest every test is its own process, so one shared file rewritten by
/// each would lose the others' figures. Under `cargo test` (one process) starting the longest
/// first keeps a long boot from running alone at the end while the other core idles; nextest
/// orders by the priorities in .config/nextest.toml instead. Only the order and `ci/test`'s
/// closing table depend on these, never a verdict.
mod durations {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    fn dir() -> PathBuf {
        netboot_harness::image::cache_dir().join("scenario-durations")
    }

    pub fn load() -> BTreeMap<String, f64> {
        let Ok(entries) = std::fs::read_dir(dir()) else {
            return BTreeMap::new();
        };
        entries
            .filter_map(|e| {
                let e = e.ok()?;
                let secs = std::fs::read_to_string(e.path())
                    .ok()?
                    .trim()
                    .parse()
                    .ok()?;
                Some((e.file_name().to_string_lossy().into_owned(), secs))
            })
            .collect()
    }

    /// Unknown scenarios (new ones, or a fresh machine) first: they may be the longest.
    pub fn longest_first(files: &mut [PathBuf], known: &BTreeMap<String, f64>) {
        let secs = |p: &Path| {
            let name = p.file_stem().unwrap_or_default().to_string_lossy();
            known.get(name.as_ref()).copied().unwrap_or(f64::INFINITY)
        };
        files.sort_by(|a, b| secs(b).total_cmp(&secs(a)));
    }

    /// Records one scenario's time; a write that fails only loses an ordering hint.
    pub fn save(name: &str, secs: f64) {
        let dir = dir();
        if std::fs::create_dir_all(&dir).is_err() {
            return;
        }
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.{}", std::process::id()));
        if std::fs::write(&tmp, format!("{secs:.1}\n")).is_err()
            || std::fs::rename(&tmp, &path).is_err()
        {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

fn run_scenario(file: &Path) -> Result<(), Failed> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_netboot-harness"));
    cmd.arg("run")
        .arg(file)
        .current_dir(project_root())
        .stdin(Stdio::null());
    if let Ok(scale) = std::env::var("NETBOOT_HARNESS_TIMEOUT_SCALE") {
        cmd.arg("--timeout-scale").arg(scale);
    }
    // Output is captured, never inherited: children must not hold the test's handles.
    let out = cmd
        .output()
        .map_err(|e| format!("cannot start netboot-harness: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        println!("{stdout}");
        Ok(())
    } else {
        Err(format!(
            "netboot-harness run {} exited with {}\n{stdout}\n{stderr}",
            file.display(),
            out.status
        )
        .into())
    }
}
