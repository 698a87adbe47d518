//! Nothing is left behind: after a run that ends normally, a run interrupted with Ctrl-C and a
//! run whose `netboot-harness` process is SIGKILLed, no process of the run remains, no interface,
//! network namespace, loop device or mount was added on the host, the per-run disk copy is gone,
//! and the run directory still holds its summary and console log.
//!
//! How leftovers are found is in `support/leftovers.rs`, shared with the soak test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};

#[path = "support/leftovers.rs"]
mod leftovers;
use leftovers::{host_state, wait_for, wait_processes_gone, HostState};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn harness() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_netboot-harness"));
    c.current_dir(root()).stdin(Stdio::null());
    c
}

fn only_run_dir(runs: &Path) -> Result<PathBuf, Failed> {
    leftovers::run_dirs(runs)
        .pop()
        .ok_or_else(|| Failed::from("no run directory was created"))
}

fn check_clean(before: &HostState, run: &Path) -> Result<(), Failed> {
    wait_processes_gone(run)?;
    let after = host_state();
    if &after != before {
        return Err(format!("host changed:\nbefore {before:?}\nafter  {after:?}").into());
    }
    if run.join("scratch").exists() {
        return Err(format!("per-run disk copy left in {}", run.display()).into());
    }
    for f in ["summary.json", "console-node01.log", "events.jsonl"] {
        if !run.join(f).is_file() {
            return Err(format!("{f} missing in {}", run.display()).into());
        }
    }
    Ok(())
}

fn summary(run: &Path) -> Result<serde_json::Value, Failed> {
    let text = std::fs::read_to_string(run.join("summary.json")).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| Failed::from(e.to_string()))
}

fn temp_runs(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nbh-cleanup-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn normal_end() -> Result<(), Failed> {
    let runs = temp_runs("normal");
    let before = host_state();
    let out = harness()
        .args(["run", "--runs-dir"])
        .arg(&runs)
        .arg("scenarios/sanboot-wrong-target.yaml")
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("run failed: {}", String::from_utf8_lossy(&out.stdout)).into());
    }
    let run = only_run_dir(&runs)?;
    check_clean(&before, &run)?;
    let _ = std::fs::remove_dir_all(&runs);
    Ok(())
}

/// Starts a boot in its own process group and waits until QEMU is running.
fn start_boot(runs: &Path) -> Result<(Child, PathBuf), Failed> {
    use std::os::unix::process::CommandExt;
    let child = harness()
        .args(["run", "--runs-dir"])
        .arg(runs)
        .arg("scenarios/debian-ibft-e1000.yaml")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut run = PathBuf::new();
    wait_for(
        "QEMU to print on the console",
        Duration::from_secs(300),
        || {
            if let Ok(r) = only_run_dir(runs) {
                run = r;
                return std::fs::metadata(run.join("console-node01.log"))
                    .is_ok_and(|m| m.len() > 0);
            }
            false
        },
    )?;
    Ok((child, run))
}

fn ctrl_c() -> Result<(), Failed> {
    let runs = temp_runs("sigint");
    let before = host_state();
    let (mut child, run) = start_boot(&runs)?;
    // Ctrl-C in a terminal signals the whole foreground process group.
    let pgid = child.id() as i32;
    // SAFETY: plain kill(2) on the group we created.
    unsafe { libc::kill(-pgid, libc::SIGINT) };
    let status = child.wait().map_err(|e| e.to_string())?;
    if status.success() {
        return Err("an interrupted run exited 0".into());
    }
    check_clean(&before, &run)?;
    let s = summary(&run)?;
    if s["verdict"] != "interrupted" {
        return Err(format!("verdict {} instead of interrupted", s["verdict"]).into());
    }
    let _ = std::fs::remove_dir_all(&runs);
    Ok(())
}

fn sigkill() -> Result<(), Failed> {
    let runs = temp_runs("sigkill");
    let before = host_state();
    let (mut child, run) = start_boot(&runs)?;
    child.kill().map_err(|e| e.to_string())?;
    let _ = child.wait();
    check_clean(&before, &run)?;
    let _ = std::fs::remove_dir_all(&runs);
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    // SAFETY: geteuid has no preconditions.
    let is_root = unsafe { libc::geteuid() } == 0;
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    type Check = fn() -> Result<(), Failed>;
    let tests: [(&str, Check); 3] = [
        ("cleanup::normal_end", normal_end),
        ("cleanup::ctrl_c", ctrl_c),
        ("cleanup::sigkill", sigkill),
    ];
    let trials = tests
        .into_iter()
        .map(|(name, f)| {
            Trial::test(name, move || {
                if !is_root {
                    return Err("needs root (namespaces, bridges, taps)".into());
                }
                f()
            })
            .with_ignored_flag(!is_root && !in_ci)
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
