//! `dracut_source`, end to end: Debian's dracut source package (fetched with apt's source
//! tooling by `ci/fetch-dracut-source`, into `sources/` beside the image cache, so a second run
//! fetches nothing) is built and installed in the debian-dracut image instead of the packaged
//! dracut, and that image boots every step of `scenarios/dracut-ibft-e1000.yaml`.
//!
//! A machine that cannot fetch the source says so: under `CI=true` that is a failure; elsewhere
//! the boots rule of `boots.rs` applies (`NETBOOT_HARNESS_SKIP_BOOTS=1` reports it ignored).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use libtest_mimic::Failed;

use crate::boots;

pub fn boots_dracut_ibft_e1000(root: &Path) -> Result<(), Failed> {
    let src = match fetch(root) {
        Ok(src) => src,
        Err(why) => {
            let why = format!("cannot fetch Debian's dracut source package: {why}");
            return match boots::verdict(Some(why)) {
                boots::Verdict::Ignore(why) => {
                    eprintln!("ignored: dracut_source::full::boots_dracut_ibft_e1000: {why}");
                    boots::record(1, "dracut_source::full::boots_dracut_ibft_e1000", &why);
                    Ok(())
                }
                boots::Verdict::Fail(why) => Err(why.into()),
                boots::Verdict::Run => unreachable!("a reason was given"),
            };
        }
    };
    println!("dracut source tree: {}", src.display());

    let tmp = tempfile::Builder::new()
        .prefix("nbh-dracut-source-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("boot")).map_err(|e| e.to_string())?;
    std::fs::copy(
        root.join("scenarios/boot/sanboot.ipxe"),
        dir.join("boot/sanboot.ipxe"),
    )
    .map_err(|e| e.to_string())?;
    // dracut-ibft-e1000's own steps, with its image built from the source tree.
    let text = std::fs::read_to_string(root.join("scenarios/dracut-ibft-e1000.yaml"))
        .map_err(|e| e.to_string())?;
    let image = format!(
        "image: {{ recipe: debian-dracut, dracut_source: \"{}\" }}",
        src.display()
    );
    let changed = text.replace("image: debian-dracut", &image);
    if changed == text {
        return Err(
            "scenarios/dracut-ibft-e1000.yaml no longer names `image: debian-dracut`".into(),
        );
    }
    let scenario = dir.join("dracut-ibft-e1000.yaml");
    std::fs::write(&scenario, changed).map_err(|e| e.to_string())?;

    let runs = dir.join("runs");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_netboot-harness"));
    cmd.arg("run")
        .arg("--runs-dir")
        .arg(&runs)
        .arg(&scenario)
        .current_dir(root)
        .stdin(Stdio::null());
    if let Ok(scale) = std::env::var("NETBOOT_HARNESS_TIMEOUT_SCALE") {
        cmd.arg("--timeout-scale").arg(scale);
    }
    let out = cmd.output().map_err(|e| e.to_string())?;
    let output = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(format!("the run with dracut from source failed:\n{output}").into());
    }
    // The initramfs that booted is the source-built dracut's: build-image gives it Debian's
    // version marked `+source`, and systemd's welcome in the initramfs names it.
    let console = std::fs::read_dir(runs.join("dracut-ibft-e1000"))
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| std::fs::read_to_string(e.path().join("console-node01.txt")).unwrap_or_default())
        .next()
        .unwrap_or_default();
    let welcome = console
        .lines()
        .find(|l| l.contains("Welcome to") && l.contains("(Initramfs)"))
        .unwrap_or_default();
    if !welcome.contains("+source (Initramfs)") {
        return Err(format!(
            "the initramfs is not the source-built dracut's: its welcome line is {welcome:?}\n{output}"
        )
        .into());
    }
    println!("{}", welcome.trim());
    for l in output
        .lines()
        .filter(|l| l.contains("image debian-dracut: "))
    {
        println!("{l}");
    }
    drop(tmp);
    Ok(())
}

/// The unpacked source tree, fetched once into the cache's `sources/` folder.
fn fetch(root: &Path) -> Result<PathBuf, String> {
    let dest = netboot_harness::image::cache_dir().join("sources");
    let out = Command::new("bash")
        .arg(root.join("ci/fetch-dracut-source"))
        .arg(&dest)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ci/fetch-dracut-source: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let path = PathBuf::from(path);
    if !path.join("dracut.sh").is_file() {
        return Err(format!("{} is not a dracut source tree", path.display()));
    }
    Ok(path)
}
