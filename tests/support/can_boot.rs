//! Whether this machine can boot scenarios at all, decided once for every test that boots.
//! What a test does when it cannot is `boots.rs`'s rule.

use std::path::Path;
use std::process::{Command, Stdio};

/// Why this machine cannot boot scenarios, if it cannot: what `ci/can-boot` finds (not root, no
/// `/dev/net/tun`, no network namespaces; the same check `ci/test` starts with), or a problem
/// `doctor` reports. A check that cannot even be started is a reason too, never a pass.
pub fn cannot_boot() -> Option<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/can-boot");
    let basic = match Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(String::from_utf8_lossy(&out.stdout).trim().to_string()),
        Err(e) => Some(format!("cannot run {}: {e}", script.display())),
    };
    basic.or_else(doctor_problem)
}

fn doctor_problem() -> Option<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_netboot-harness"))
        .arg("doctor")
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "`netboot-harness doctor` reports a problem:\n{}",
            String::from_utf8_lossy(&out.stdout)
        )),
        Err(e) => Some(format!("cannot run `netboot-harness doctor`: {e}")),
    }
}
