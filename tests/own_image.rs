//! A disk image the user brings boots through the whole chain and is byte-for-byte unchanged
//! afterwards: the harness exports a per-run copy, never the file itself. The guest's write is
//! read back from that copy, so the test also shows the copy is what the guest wrote to.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use libtest_mimic::{Arguments, Failed};
use sha2::{Digest, Sha256};

#[path = "support/boots.rs"]
mod boots;
#[path = "support/can_boot.rs"]
mod can_boot;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn sha256(p: &Path) -> Result<String, Failed> {
    let mut f = std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

const SCENARIO: &str = r#"name: own-image
description: A disk image the user brings, booted through the whole chain.
image: { file: my-disk.img }
nodes:
  - name: node01
    nics:
      - { model: e1000, mac: "52:54:00:aa:00:31", boot: true }
services:
  dhcp:
    hosts:
      - { mac: "52:54:00:aa:00:31", hostname: node01 }
  http:
    files:
      boot.ipxe: boot/sanboot.ipxe
  iscsi:
    target: iqn.2026-11.lab:node01-root
expect:
  - name: sanboot
    console: "Booting from SAN device 0x80"
    within: 90s
  - name: root mounted from the iSCSI disk
    console: "netboot-harness: root=/dev/sda1"
    within: 240s
  - name: shell ready
    console: "netboot-harness: shell ready"
    within: 120s
  # Proven by the disk's own bytes, not by a console line: the echo of a typed command would
  # carry any text the command prints. Block 1000 lies before the first partition.
  - name: the guest writes to its disk
    shell: "printf '%s' 'netboot-harness: written by the guest' | dd of=/dev/sda bs=512 seek=1000 count=1 conv=sync oflag=direct status=none"
    within: 120s
  - name: the write is on the run's copy of the disk
    lun_bytes: { offset: 512000, text: "netboot-harness: written by the guest" }
    within: 10s
"#;

fn own_image_is_unchanged() -> Result<(), Failed> {
    let bin = env!("CARGO_BIN_EXE_netboot-harness");
    // The default recipe's image stands in for the user's own disk.
    let out = Command::new(bin)
        .args(["image", "prepare", "scenarios/debian-ibft-e1000.yaml"])
        .current_dir(root())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let base = text
        .lines()
        .find_map(|l| l.strip_prefix("debian-ibft-e1000: "))
        .ok_or_else(|| {
            format!(
                "image prepare said: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    // Removed when dropped, also on a panic; kept until the run below has ended.
    let tmp = tempfile::Builder::new()
        .prefix("nbh-own-image-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("boot")).map_err(|e| e.to_string())?;
    std::fs::copy(
        root().join("scenarios/boot/sanboot.ipxe"),
        dir.join("boot/sanboot.ipxe"),
    )
    .map_err(|e| e.to_string())?;
    let disk = dir.join("my-disk.img");
    let st = Command::new("cp")
        .args(["--sparse=always", base])
        .arg(&disk)
        .status()
        .map_err(|e| e.to_string())?;
    if !st.success() {
        return Err("copying the image failed".into());
    }
    std::fs::write(dir.join("own-image.yaml"), SCENARIO).map_err(|e| e.to_string())?;
    let before = sha256(&disk)?;
    let run = Command::new(bin)
        .arg("run")
        .arg("--runs-dir")
        .arg(dir.join("runs"))
        .arg(dir.join("own-image.yaml"))
        .current_dir(root())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    let report = String::from_utf8_lossy(&run.stdout).into_owned();
    let after = sha256(&disk)?;
    drop(tmp);
    if !run.status.success() {
        return Err(format!("the run failed:\n{report}").into());
    }
    if before != after {
        return Err(format!("the user's image changed: {before} -> {after}").into());
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let mut boots = boots::Boots::new(can_boot::cannot_boot());
    let trial = boots.trial("own_image::boots_and_is_unchanged", own_image_is_unchanged);
    boots.run(&args, vec![trial]).exit();
}
