//! What a run could leave behind, and how to find it: shared by tests/cleanup.rs,
//! tests/soak.rs and tests/isolation.rs.
//!
//! Every process of a run carries `NETBOOT_HARNESS_RUN=<run dir>` in its environment (the lab
//! process has the run directory on its command line), so stragglers are found precisely even
//! when other runs are going on at the same time. Host-wide things (interfaces, named network
//! namespaces, loop devices, mounts) are compared before and after.

// Each test binary that includes this uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use libtest_mimic::Failed;

/// What the host has that a leak would add to.
#[derive(Debug, PartialEq)]
pub struct HostState {
    pub interfaces: Vec<String>,
    pub netns: String,
    pub loops: String,
    /// Mount points, outside image build trees.
    pub mounts: Vec<String>,
}

pub fn host_state() -> HostState {
    let mut interfaces: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    interfaces.sort();
    let out = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    HostState {
        interfaces,
        netns: out("ip", &["netns", "list"]),
        loops: out("losetup", &["-a"]),
        mounts: mount_points(),
    }
}

/// An image build (`mmdebstrap --mode=root`, ours or one another checkout started meanwhile)
/// mounts /proc, /sys and /dev in its tree for a while: those are judged with the tree itself
/// (`/var/tmp/nbh-build.*`), not as mounts added by a run.
fn mount_points() -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| !p.contains("/nbh-build."))
        .map(str::to_string)
        .collect();
    points.sort();
    points
}

/// Whether a running process names `path` on its command line (a build still using its tree).
pub fn in_use(path: &Path) -> bool {
    let needle = path.display().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .any(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmd).contains(&needle)
        })
}

/// Processes that belong to the run, as (pid, command line): by environment or by command line.
pub fn processes_of(run_dir: &Path) -> Vec<(u32, String)> {
    let needle_env = format!("NETBOOT_HARNESS_RUN={}", run_dir.display());
    let needle_cmd = run_dir.display().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let env_hit = env.split(|b| *b == 0).any(|v| v == needle_env.as_bytes());
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if env_hit || cmd.contains(&needle_cmd) {
            found.push((pid, cmd.trim().to_string()));
        }
    }
    found
}

/// Every run directory under a runs folder (`<runs>/<scenario>/<stamp>`), sorted.
pub fn run_dirs(runs: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(runs)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|scen| {
            std::fs::read_dir(scen.path())
                .into_iter()
                .flatten()
                .flatten()
                .map(|r| r.path())
        })
        .collect();
    dirs.sort();
    dirs
}

pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Result<(), Failed> {
    let t = Instant::now();
    while !cond() {
        if t.elapsed() > limit {
            return Err(format!("waited {limit:?} for {what}").into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Waits for the run's processes to end. The lab finishes its orderly stop after the host
/// process is gone, so a moment's grace is part of the contract.
pub fn wait_processes_gone(run: &Path) -> Result<(), Failed> {
    wait_for(
        "the run's processes to end",
        Duration::from_secs(30),
        || processes_of(run).is_empty(),
    )
    .map_err(|e| {
        format!(
            "{}: still running: {:?}",
            e.message().unwrap_or(""),
            processes_of(run)
        )
        .into()
    })
}
