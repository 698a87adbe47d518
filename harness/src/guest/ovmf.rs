//! Finding OVMF, the UEFI firmware of `platform: uefi` nodes, the way QEMU's own tools do:
//! through the firmware descriptors packages install (QEMU's `docs/interop/firmware.json`),
//! not a path written down here. Debian's `ovmf` puts its images in `/usr/share/OVMF` and
//! describes them in `/usr/share/qemu/firmware/*.json`; other distributions use other folders
//! and the same descriptors.
//!
//! The harness wants the plain x86_64 build for the `pc` machine: flash-mapped, with a
//! variable-store template (each node gets a copy), without Secure Boot, enrolled keys or SMM
//! (SMM would need `-machine smm=on` and q35).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The Debian package with OVMF's images and descriptors.
pub const PACKAGE: &str = "ovmf";

/// An OVMF build: its code (read-only) and the template of its variable store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ovmf {
    pub code: PathBuf,
    pub vars_template: PathBuf,
    /// The descriptor that named them.
    pub descriptor: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no UEFI firmware for QEMU's x86_64 `pc` machine without Secure Boot was found: no firmware \
     descriptor in {} names one whose files exist; it comes with the Debian package {PACKAGE}",
    .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
)]
pub struct NotFound {
    pub searched: Vec<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Descriptor {
    #[serde(default)]
    interface_types: Vec<String>,
    mapping: Mapping,
    #[serde(default)]
    targets: Vec<Target>,
    #[serde(default)]
    features: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Mapping {
    device: String,
    executable: Option<FlashFile>,
    nvram_template: Option<FlashFile>,
}

#[derive(Debug, Deserialize)]
struct FlashFile {
    filename: PathBuf,
    #[serde(default)]
    format: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Target {
    architecture: String,
    #[serde(default)]
    machines: Vec<String>,
}

/// Features that make a build unfit for a plain `pc` machine without keys of its own.
const UNWANTED: &[&str] = &["secure-boot", "enrolled-keys", "requires-smm"];

/// The folders QEMU reads descriptors from, lowest priority first: a file of the same name in
/// a later folder replaces an earlier one.
pub fn descriptor_folders() -> Vec<PathBuf> {
    let mut v = vec![
        PathBuf::from("/usr/share/qemu/firmware"),
        PathBuf::from("/etc/qemu/firmware"),
    ];
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(c) = config {
        v.push(c.join("qemu/firmware"));
    }
    v
}

/// This host's OVMF, asked once per process.
pub fn host() -> Result<Ovmf, NotFound> {
    static FOUND: std::sync::OnceLock<Result<Ovmf, NotFound>> = std::sync::OnceLock::new();
    FOUND.get_or_init(|| find(&descriptor_folders())).clone()
}

/// The first fitting build the descriptors in `folders` name, in QEMU's order: by file name,
/// a later folder's file replacing an earlier one of the same name.
pub fn find(folders: &[PathBuf]) -> Result<Ovmf, NotFound> {
    let mut by_name: std::collections::BTreeMap<std::ffi::OsString, PathBuf> = Default::default();
    for dir in folders {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json") {
                by_name.insert(e.file_name(), p);
            }
        }
    }
    by_name
        .values()
        .find_map(|p| {
            let text = std::fs::read_to_string(p).ok()?;
            fitting(&text, p)
        })
        .ok_or_else(|| NotFound {
            searched: folders.to_vec(),
        })
}

/// The build a descriptor names, if it fits and its files exist.
fn fitting(json: &str, path: &Path) -> Option<Ovmf> {
    let d: Descriptor = serde_json::from_str(json).ok()?;
    let raw = |f: &FlashFile| f.format.as_deref().unwrap_or("raw") == "raw";
    let pc = d.targets.iter().any(|t| {
        t.architecture == "x86_64" && t.machines.iter().any(|m| m.starts_with("pc-i440fx"))
    });
    let code = d.mapping.executable.as_ref().filter(|f| raw(f))?;
    let vars = d.mapping.nvram_template.as_ref().filter(|f| raw(f))?;
    let ok = d.interface_types.iter().any(|i| i == "uefi")
        && d.mapping.device == "flash"
        && pc
        && !d.features.iter().any(|f| UNWANTED.contains(&f.as_str()))
        && code.filename.is_file()
        && vars.filename.is_file();
    ok.then(|| Ovmf {
        code: code.filename.clone(),
        vars_template: vars.filename.clone(),
        descriptor: path.to_path_buf(),
    })
}

/// The flash of `node` if it is a UEFI node: this host's OVMF, and a fresh copy of its
/// variable-store template in `run_dir` (kept there as an artifact).
pub fn flash_for(
    node: &crate::scenario::Node,
    run_dir: &Path,
) -> Result<Option<super::UefiFlash>, String> {
    if node.platform != crate::scenario::Platform::Uefi {
        return Ok(None);
    }
    let ovmf = host().map_err(|e| e.to_string())?;
    let vars = run_dir.join(format!("ovmf-vars-{}.fd", node.name));
    std::fs::copy(&ovmf.vars_template, &vars).map_err(|e| {
        format!(
            "copying OVMF's variable store {} to {}: {e}",
            ovmf.vars_template.display(),
            vars.display()
        )
    })?;
    Ok(Some(super::UefiFlash {
        code: ovmf.code,
        vars,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(dir: &Path, name: &str, features: &str, code: &Path, vars: &Path) {
        std::fs::write(
            dir.join(name),
            format!(
                r#"{{"interface-types": ["uefi"],
                "mapping": {{"device": "flash",
                  "executable": {{"filename": "{}", "format": "raw"}},
                  "nvram-template": {{"filename": "{}", "format": "raw"}}}},
                "targets": [{{"architecture": "x86_64", "machines": ["pc-i440fx-*", "pc-q35-*"]}}],
                "features": [{features}], "tags": []}}"#,
                code.display(),
                vars.display()
            ),
        )
        .unwrap();
    }

    #[test]
    fn secure_boot_builds_are_passed_over_for_the_plain_one() {
        let d = tempfile::tempdir().unwrap();
        let (code, vars, sb) = (
            d.path().join("CODE.fd"),
            d.path().join("VARS.fd"),
            d.path().join("CODE.ms.fd"),
        );
        for f in [&code, &vars, &sb] {
            std::fs::write(f, b"x").unwrap();
        }
        descriptor(
            d.path(),
            "40-secure.json",
            r#""secure-boot", "enrolled-keys", "requires-smm""#,
            &sb,
            &vars,
        );
        descriptor(d.path(), "60-plain.json", r#""acpi-s3""#, &code, &vars);
        let found = find(&[d.path().to_path_buf()]).unwrap();
        assert_eq!(found.code, code);
        assert_eq!(found.vars_template, vars);
        assert_eq!(found.descriptor, d.path().join("60-plain.json"));
    }

    #[test]
    fn a_descriptor_whose_files_are_gone_is_not_found_and_the_error_names_the_package() {
        let d = tempfile::tempdir().unwrap();
        let gone = d.path().join("gone.fd");
        descriptor(d.path(), "60-plain.json", "", &gone, &gone);
        let e = find(&[d.path().to_path_buf()]).unwrap_err();
        assert!(e.to_string().contains("Debian package ovmf"), "{e}");
        assert!(
            e.to_string().contains(&d.path().display().to_string()),
            "{e}"
        );
    }

    #[test]
    fn a_later_folder_replaces_a_descriptor_of_the_same_name() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (code, vars) = (b.path().join("C.fd"), b.path().join("V.fd"));
        std::fs::write(&code, b"x").unwrap();
        std::fs::write(&vars, b"x").unwrap();
        descriptor(a.path(), "60-x.json", "", &a.path().join("none"), &vars);
        descriptor(b.path(), "60-x.json", "", &code, &vars);
        let found = find(&[a.path().to_path_buf(), b.path().to_path_buf()]).unwrap();
        assert_eq!(found.code, code);
    }
}
