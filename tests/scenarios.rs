//! One test per `scenarios/*.yaml`: each really boots through `netboot-harness run`.
//!
//! The harness judges the run itself (a scenario with `expect_failure` passes when it fails at
//! the expected step), so a test passes exactly when the command exits 0. On failure the test
//! prints the harness's report: the failing step, what it waited for, the console tail and the
//! artifact paths.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use libtest_mimic::{Arguments, Failed};

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[path = "support/boots.rs"]
mod boots;
#[path = "support/can_boot.rs"]
mod can_boot;

fn main() {
    let args = Arguments::from_args();
    let root = project_root();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("scenarios"))
        .expect("scenarios/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let known = durations::load();
    durations::longest_first(&mut files, &known);
    let took = Arc::new(Mutex::new(known));

    let mut boots = boots::Boots::new(can_boot::cannot_boot());
    let trials = files
        .into_iter()
        .map(|file| {
            let name = file
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let took = took.clone();
            boots.trial(format!("scenario::{name}"), move || {
                let t = Instant::now();
                let result = run_scenario(&file);
                if let Ok(mut m) = took.lock() {
                    m.insert(name, t.elapsed().as_secs_f64());
                }
                result
            })
        })
        .collect();
    let conclusion = boots.run(&args, trials);
    if let Ok(m) = took.lock() {
        durations::save(&m);
    }
    conclusion.exit();
}

/// How long each scenario took last time on this machine, kept next to the image cache. With two
/// boots at a time, starting the longest first keeps a long boot from running alone at the end
/// while the other core idles. Only the order depends on it, never a verdict.
mod durations {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    fn file() -> PathBuf {
        netboot_harness::image::cache_dir().join("scenario-durations.json")
    }

    pub fn load() -> BTreeMap<String, f64> {
        std::fs::read(file())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Unknown scenarios (new ones, or a fresh machine) first: they may be the longest.
    pub fn longest_first(files: &mut [PathBuf], known: &BTreeMap<String, f64>) {
        let secs = |p: &Path| {
            let name = p.file_stem().unwrap_or_default().to_string_lossy();
            known.get(name.as_ref()).copied().unwrap_or(f64::INFINITY)
        };
        files.sort_by(|a, b| secs(b).total_cmp(&secs(a)));
    }

    pub fn save(m: &BTreeMap<String, f64>) {
        let path = file();
        let tmp = path.with_extension(format!("json.{}", std::process::id()));
        let written = serde_json::to_vec_pretty(m)
            .ok()
            .and_then(|b| std::fs::write(&tmp, b).ok())
            .and_then(|_| std::fs::rename(&tmp, &path).ok());
        if written.is_none() {
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
