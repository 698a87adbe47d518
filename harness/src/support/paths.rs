//! Where things live: the project folder (scenarios/, images/), run artifacts and the cache.

use std::path::{Path, PathBuf};

/// The project folder: the nearest ancestor of the current directory holding both `images/`
/// and `scenarios/`, else the folder this binary was built from. `NETBOOT_HARNESS_ROOT` wins.
pub fn project_root() -> PathBuf {
    if let Some(p) = std::env::var_os("NETBOOT_HARNESS_ROOT") {
        return PathBuf::from(p);
    }
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            if is_root(dir) {
                return dir.to_path_buf();
            }
        }
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR"));
    built
        .parent()
        .filter(|p| is_root(p))
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn is_root(dir: &Path) -> bool {
    dir.join("images").is_dir() && dir.join("scenarios").is_dir()
}

/// Bytes an unprivileged writer may still put on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> nix::Result<u64> {
    let st = nix::sys::statvfs::statvfs(path)?;
    Ok(st.blocks_available().saturating_mul(st.fragment_size()))
}

pub fn images_dir() -> PathBuf {
    project_root().join("images")
}

pub fn scenarios_dir() -> PathBuf {
    project_root().join("scenarios")
}

/// `target/netboot-harness/runs` of the project (or of `CARGO_TARGET_DIR`).
pub fn runs_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target"));
    target.join("netboot-harness").join("runs")
}

/// A sortable, filesystem-friendly UTC timestamp, unique per process: `20261124T224501Z-1234`.
pub fn run_stamp() -> String {
    let t = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let compact: String = t.chars().filter(|c| *c != '-' && *c != ':').collect();
    format!("{compact}-{}", std::process::id())
}

/// The scenario files of the project, sorted.
pub fn scenario_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    out.sort();
    Ok(out)
}

/// The scenario files of a checkout's worked examples: `<root>/examples/<example>/*.yaml`.
pub fn example_files(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(root.join("examples"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .flat_map(|e| scenario_files(&e.path()).unwrap_or_default())
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_is_compact_and_sortable() {
        let s = run_stamp();
        assert!(s.starts_with("20"), "{s}");
        assert!(s.contains('T') && s.contains("Z-"), "{s}");
        assert!(!s.contains(':'), "{s}");
    }

    #[test]
    fn root_has_scenarios_and_images() {
        let r = project_root();
        assert!(r.join("scenarios").is_dir(), "{}", r.display());
    }
}
