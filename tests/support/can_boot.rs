//! Whether this machine can boot scenarios at all, decided once for every test that boots.

use std::process::{Command, Stdio};

/// Why this machine cannot boot scenarios, if it cannot: not root, or `doctor` reports a problem.
pub fn cannot_boot() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: the lab needs network namespaces, bridges and taps".into());
    }
    let out = Command::new(env!("CARGO_BIN_EXE_netboot-harness"))
        .arg("doctor")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    (!out.status.success()).then(|| {
        format!(
            "`netboot-harness doctor` reports a problem:\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}
