//! Whether an accelerator really runs the boot firmware: a tiny QEMU that boots SeaBIOS, then
//! Debian's `ipxe.lkrn` with a one-line script, and must print the script's text in time.
//!
//! `/dev/kvm` opening proves little: on some hosts it is a paravirtual stand-in under which
//! SeaBIOS and iPXE crawl or reset-loop (seen here: with `-accel kvm` not even SeaBIOS's banner in
//! 20 s, where TCG printed the script's text within a second). The probe runs exactly the code the
//! scenarios depend on first, with no network device and nothing on disk but the script.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::guest::boot_files::SearchPath;
use crate::guest::Accel;

/// What the probe's script prints; nothing else in the boot prints it.
const MARK: &[u8] = b"netboot-harness: accelerator probe ok";

/// How long firmware may take under the probed accelerator. TCG needs about a second here; a
/// working KVM less.
pub const PROBE_LIMIT: Duration = Duration::from_secs(8);

/// Kills and reaps the probe's QEMU and removes its script whatever way the probe ends.
struct Probe {
    child: Option<crate::support::process::Owned>,
    script: PathBuf,
}

impl Drop for Probe {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            child.stop_blocking(Duration::ZERO);
        }
        let _ = std::fs::remove_file(&self.script);
    }
}

/// Boots the firmware under `accel`; `Ok` with the time the script's text took to appear.
pub fn firmware_runs(accel: Accel, limit: Duration) -> Result<Duration, String> {
    let script = std::env::temp_dir().join(format!(
        "nbh-accel-probe-{}-{accel}.ipxe",
        std::process::id()
    ));
    std::fs::write(
        &script,
        format!("#!ipxe\necho {}\n", String::from_utf8_lossy(MARK)),
    )
    .map_err(|e| format!("cannot write the probe script {}: {e}", script.display()))?;
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-machine", "pc,graphics=off", "-accel"])
        .arg(accel.to_string())
        // ipxe.lkrn finds no room for its script in 64 MiB (seen: the script never ran).
        .args([
            "-m",
            "256",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
        ])
        .args(["-serial", "stdio", "-monitor", "none", "-no-reboot"])
        .arg("-kernel")
        .arg(SearchPath::host().ipxe_lkrn())
        .arg("-initrd")
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    crate::support::process::signal_on_parent_death(&mut cmd, libc::SIGKILL);
    let t0 = Instant::now();
    let (child, pipes) = match crate::support::process::Owned::spawn_std(
        format!("QEMU {accel} probe"),
        &mut cmd,
        nix::sys::signal::Signal::SIGKILL,
    ) {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&script);
            return Err(format!("cannot start qemu-system-x86_64: {e}"));
        }
    };
    let probe = Probe {
        child: Some(child),
        script,
    };
    let Some(mut out) = pipes.stdout else {
        return Err("the probe's QEMU has no stdout".into());
    };
    let (tx, rx) = mpsc::channel();
    // The reader ends when the Drop above kills QEMU and its stdout closes.
    std::thread::spawn(move || {
        let mut seen: Vec<u8> = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if seen.windows(MARK.len()).any(|w| w == MARK) {
                let _ = tx.send(t0.elapsed());
                return;
            }
        }
    });
    let took = rx.recv_timeout(limit).map_err(|_| {
        format!(
            "{accel}: the firmware did not run a one-line iPXE script within {:.0}s",
            limit.as_secs_f64()
        )
    });
    drop(probe);
    took
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TCG is the control: if the probe cannot see TCG run the script, it proves nothing about
    /// KVM either.
    #[test]
    fn tcg_runs_the_probe_script() {
        let blocker = SearchPath::host()
            .find(&crate::guest::boot_files::IPXE_LKRN)
            .err()
            .map(|e| format!("{e} (ci/setup installs it)"));
        if !crate::test_boots::require("accel_probe::tests::tcg_runs_the_probe_script", blocker) {
            return;
        }
        let took = firmware_runs(Accel::Tcg, Duration::from_secs(30)).unwrap();
        assert!(took < Duration::from_secs(30), "{took:?}");
        let leftover =
            std::env::temp_dir().join(format!("nbh-accel-probe-{}-tcg.ipxe", std::process::id()));
        assert!(!leftover.exists(), "the probe left {}", leftover.display());
    }
}
