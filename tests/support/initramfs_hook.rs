//! "Your change in the image", end to end: `examples/initramfs-hook/` copied to a folder of its
//! own boots and its overlay's initramfs hook prints its line; then one line of the hook is
//! broken, and the next run must build a new image (another cache key: the key covers the
//! overlay's content) and fail at the hook's step, for the step's own reason (the line never
//! came). A trial of the `scenarios` binary, so it runs where the boots run (the `vms` group)
//! and never among the fast tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use libtest_mimic::Failed;

/// The line the example's hook prints, and the step that waits for it.
const HOOK_LINE: &str = "initramfs-hook-example: hello from the overlay";
const HOOK_STEP: &str = "the overlay's hook speaks";
const HOOK: &str = "overlay/etc/initramfs-tools/scripts/init-top/hello-example";

pub fn edit_rebuild_verdict(root: &Path) -> Result<(), Failed> {
    // Removed when dropped, also on a failure, once the runs below have ended.
    let tmp = tempfile::Builder::new()
        .prefix("nbh-initramfs-hook-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let dir = tmp.path().join("initramfs-hook");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(root.join("examples/initramfs-hook"))
        .arg(&dir)
        .status()
        .map_err(|e| e.to_string())?;
    if !copied.success() {
        return Err("copying examples/initramfs-hook failed".into());
    }

    let first = run(root, &dir, &tmp.path().join("runs-1"))?;
    if !first.ok {
        return Err(format!("the example failed before any edit:\n{}", first.output).into());
    }
    if !first.console.contains(HOOK_LINE) {
        return Err(format!("the run passed but the console lacks {HOOK_LINE:?}").into());
    }

    // One line changed: the hook now ends before it prints.
    let hook = dir.join(HOOK);
    let text = std::fs::read_to_string(&hook).map_err(|e| e.to_string())?;
    let broken = text.replace(
        &format!("echo \"{HOOK_LINE}\" > /dev/console"),
        "exit 1 # broken on purpose",
    );
    if broken == text {
        return Err(format!("{} no longer has the line this test breaks", hook.display()).into());
    }
    std::fs::write(&hook, broken).map_err(|e| e.to_string())?;

    let second = run(root, &dir, &tmp.path().join("runs-2"))?;
    if second.key == first.key {
        return Err(format!(
            "the edited overlay was given the same image (key {}):\n{}",
            first.key, second.output
        )
        .into());
    }
    if second.ok {
        return Err(format!("the broken hook's run passed:\n{}", second.output).into());
    }
    let failed = &second.summary["failed_step"];
    if failed["name"] != HOOK_STEP || failed["cause"] != "timeout" {
        return Err(format!(
            "expected the step {HOOK_STEP:?} to fail with cause timeout, got {failed}\n{}",
            second.output
        )
        .into());
    }
    if second.console.contains(HOOK_LINE) {
        return Err("the broken hook still printed its line".into());
    }
    println!(
        "image {} ({}) passed; after the edit image {} ({}) failed at {HOOK_STEP:?}",
        first.key, first.how, second.key, second.how
    );
    drop(tmp);
    Ok(())
}

struct Run {
    ok: bool,
    /// The image's key as the run printed it (16 hex digits), and `built` or `reused`.
    key: String,
    how: String,
    summary: serde_json::Value,
    console: String,
    output: String,
}

fn run(root: &Path, dir: &Path, runs: &Path) -> Result<Run, Failed> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_netboot-harness"));
    cmd.arg("run")
        .arg("--runs-dir")
        .arg(runs)
        .arg(dir.join("scenario.yaml"))
        .current_dir(root)
        .stdin(Stdio::null());
    if let Ok(scale) = std::env::var("NETBOOT_HARNESS_TIMEOUT_SCALE") {
        cmd.arg("--timeout-scale").arg(scale);
    }
    let out = cmd.output().map_err(|e| e.to_string())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let output = format!("{}\n{stderr}", String::from_utf8_lossy(&out.stdout));
    // `image debian-initramfs-tools: built <path> (key 0123456789abcdef)`, or `reused`.
    let (how, key) = stderr
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix("image debian-initramfs-tools: ")?;
            let how = rest.split_whitespace().next()?;
            let key = rest.rsplit_once("(key ")?.1.strip_suffix(')')?;
            Some((how.to_string(), key.to_string()))
        })
        .ok_or_else(|| format!("the run named no image key:\n{output}"))?;
    let run_dir: PathBuf = std::fs::read_dir(runs.join("initramfs-hook"))
        .map_err(|e| format!("{}: {e}\n{output}", runs.display()))?
        .flatten()
        .map(|e| e.path())
        .next()
        .ok_or_else(|| format!("no run folder under {}\n{output}", runs.display()))?;
    let summary: serde_json::Value = std::fs::read_to_string(run_dir.join("summary.json"))
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))?;
    let console = std::fs::read_to_string(run_dir.join("console-node01.txt")).unwrap_or_default();
    Ok(Run {
        ok: out.status.success() && summary["ok"] == true,
        key,
        how,
        summary,
        console,
        output,
    })
}
