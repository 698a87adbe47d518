//! Nothing is left behind: after a run that ends normally, a run interrupted with Ctrl-C, a
//! run whose `netboot-harness` process is SIGKILLed, a run in which a harness task panics
//! (`NETBOOT_HARNESS_INJECT_PANIC`), and runs whose QEMU or tgtd is SIGKILLed from outside, no
//! process of the run remains, no interface, network namespace, loop device or mount was added
//! on the host, the per-run disk copy is gone, and the run directory still holds its summary and
//! console log. The panic and the killed processes must also be named in the verdict, and end
//! the run at once rather than at a step's timeout.
//!
//! How leftovers are found is in `support/leftovers.rs`, shared with the soak test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use libtest_mimic::{Arguments, Failed};

#[path = "support/boots.rs"]
mod boots;
#[path = "support/can_boot.rs"]
mod can_boot;
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
    check_clean_with(
        before,
        run,
        &["summary.json", "console-node01.log", "events.jsonl"],
    )
}

/// [`check_clean`] with the artifacts the run must have kept.
fn check_clean_with(before: &HostState, run: &Path, kept: &[&str]) -> Result<(), Failed> {
    wait_processes_gone(run)?;
    let after = host_state();
    if &after != before {
        return Err(format!("host changed:\nbefore {before:?}\nafter  {after:?}").into());
    }
    if run.join("scratch").exists() {
        return Err(format!("per-run disk copy left in {}", run.display()).into());
    }
    for f in kept {
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

/// The summary's failing step gives `want` as (part of) its reason.
fn reason_says(s: &serde_json::Value, want: &str) -> Result<(), Failed> {
    let reason = s["failed_step"]["reason"].as_str().unwrap_or_default();
    if !reason.contains(want) {
        return Err(format!("the reason {reason:?} does not say {want:?}").into());
    }
    Ok(())
}

/// The runs folder of one test; removed when dropped, also when the test panics, so each test
/// keeps it until its run has ended.
fn temp_runs(name: &str) -> Result<tempfile::TempDir, Failed> {
    tempfile::Builder::new()
        .prefix(&format!("nbh-cleanup-{name}-"))
        .tempdir()
        .map_err(|e| e.to_string().into())
}

fn normal_end() -> Result<(), Failed> {
    let tmp = temp_runs("normal")?;
    let runs = tmp.path();
    let before = host_state();
    let out = harness()
        .args(["run", "--runs-dir"])
        .arg(runs)
        .arg("scenarios/sanboot-wrong-target.yaml")
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("run failed: {}", String::from_utf8_lossy(&out.stdout)).into());
    }
    let run = only_run_dir(runs)?;
    check_clean(&before, &run)?;
    drop(tmp);
    Ok(())
}

/// Runs `sanboot-wrong-target` with a harness task told to panic: the run must end with a
/// `harness-panic` verdict naming the task, exit 3, keep `kept` and leave nothing.
fn injected_panic(task: &str, task_name: &str, kept: &[&str]) -> Result<(), Failed> {
    let tmp = temp_runs(&format!("panic-{task}"))?;
    let runs = tmp.path();
    let before = host_state();
    let t = std::time::Instant::now();
    let out = harness()
        .env("NETBOOT_HARNESS_INJECT_PANIC", task)
        .args(["run", "--runs-dir"])
        .arg(runs)
        .arg("scenarios/sanboot-wrong-target.yaml")
        .output()
        .map_err(|e| e.to_string())?;
    let took = t.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.code() != Some(3) {
        return Err(format!("exit {:?} instead of 3:\n{stdout}", out.status.code()).into());
    }
    let run = only_run_dir(runs)?;
    check_clean_with(&before, &run, kept)?;
    let s = summary(&run)?;
    if s["verdict"] != "harness-panic" || s["ok"] != false {
        return Err(format!(
            "verdict {} (ok {}), not harness-panic",
            s["verdict"], s["ok"]
        )
        .into());
    }
    reason_says(&s, &format!("`{task_name}` panicked: injected panic"))?;
    ended_at_once(took, &s)?;
    drop(tmp);
    Ok(())
}

/// Every step of the scenarios these tests run allows 60 s or more: a run that took half of
/// that to end waited its failing step out instead of ending when the panic or death came.
fn ended_at_once(took: Duration, s: &serde_json::Value) -> Result<(), Failed> {
    if took <= Duration::from_secs(30) {
        return Ok(());
    }
    let step = s["failed_step"]["name"].as_str().unwrap_or_default();
    Err(format!("the run took {took:?} (30 s at most) to end, at step `{step}`").into())
}

/// A panic in the console reader, while the steps run.
fn panic_in_console_reader() -> Result<(), Failed> {
    injected_panic(
        "console",
        "console:node01",
        &[
            "summary.json",
            "console-node01.log",
            "events.jsonl",
            "dnsmasq.log",
            "tgtd.log",
            "harness.log",
        ],
    )
}

/// A panic in dnsmasq's log pump, while the services start: no guest ever ran.
fn panic_in_dhcp_log_pump() -> Result<(), Failed> {
    injected_panic(
        "dhcp-log",
        "dhcp-log",
        &["summary.json", "events.jsonl", "tgtd.log", "harness.log"],
    )
}

/// The pid of the run's process whose command line starts with `program`.
fn pid_of(run: &Path, program: &str) -> Option<i32> {
    leftovers::processes_of(run).iter().find_map(|(pid, cmd)| {
        let exe = cmd.split(' ').next()?;
        let name = Path::new(exe).file_name()?.to_string_lossy();
        (name == program)
            .then(|| i32::try_from(*pid).ok())
            .flatten()
    })
}

/// SIGKILLs `program` of a booting run from outside; the run must fail at once with `want` in
/// its reason, keep its artifacts and leave nothing behind.
fn killed_from_outside(program: &str, want: &str) -> Result<(), Failed> {
    let tmp = temp_runs(&format!("killed-{program}"))?;
    let runs = tmp.path();
    let before = host_state();
    let (mut child, run) = start_boot(runs)?;
    let pid = pid_of(&run, program).ok_or_else(|| {
        format!(
            "no {program} among the run's processes: {:?}",
            leftovers::processes_of(&run)
        )
    })?;
    // SAFETY: plain kill(2) on a process of the run this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let t = std::time::Instant::now();
    let mut status = None;
    wait_for("the run to end", Duration::from_secs(120), || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    })?;
    let took = t.elapsed();
    if status.and_then(|s| s.code()) != Some(1) {
        return Err(format!("{status:?} instead of exit 1").into());
    }
    check_clean(&before, &run)?;
    let s = summary(&run)?;
    if s["verdict"] != "failed" {
        return Err(format!("verdict {} instead of failed", s["verdict"]).into());
    }
    reason_says(&s, want)?;
    ended_at_once(took, &s)?;
    drop(tmp);
    Ok(())
}

fn qemu_killed() -> Result<(), Failed> {
    killed_from_outside(
        "qemu-system-x86_64",
        "QEMU exited, killed by signal 9 (SIGKILL)",
    )
}

/// tgtd ignores SIGTERM, which makes it the service most likely to be stopped with SIGKILL.
fn tgtd_killed() -> Result<(), Failed> {
    killed_from_outside(
        "tgtd",
        "service died: iscsi: tgtd killed by signal 9 (SIGKILL)",
    )
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
    let tmp = temp_runs("sigint")?;
    let runs = tmp.path();
    let before = host_state();
    let (mut child, run) = start_boot(runs)?;
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
    drop(tmp);
    Ok(())
}

fn sigkill() -> Result<(), Failed> {
    let tmp = temp_runs("sigkill")?;
    let runs = tmp.path();
    let before = host_state();
    let (mut child, run) = start_boot(runs)?;
    child.kill().map_err(|e| e.to_string())?;
    let _ = child.wait();
    check_clean(&before, &run)?;
    drop(tmp);
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let mut boots = boots::Boots::new(can_boot::cannot_boot());
    type Check = fn() -> Result<(), Failed>;
    let tests: [(&str, Check); 7] = [
        ("cleanup::normal_end", normal_end),
        ("cleanup::ctrl_c", ctrl_c),
        ("cleanup::sigkill", sigkill),
        ("cleanup::panic_in_console_reader", panic_in_console_reader),
        ("cleanup::panic_in_dhcp_log_pump", panic_in_dhcp_log_pump),
        ("cleanup::qemu_killed", qemu_killed),
        ("cleanup::tgtd_killed", tgtd_killed),
    ];
    let trials = tests
        .into_iter()
        .map(|(name, f)| boots.trial(name, f))
        .collect();
    boots.run(&args, trials).exit();
}
