//! What a scenario (or `image build`) adds to a recipe: an `overlay` folder copied into the guest
//! root, a `customize` script run in it, and a `dracut_source` tree built and installed instead
//! of the distribution's dracut, all before the image's one initramfs build. The checks here
//! are the scenario stage's; the image stage hashes the same trees ([`tree`]) into the image's
//! key, by content, never by path.

use std::path::{Component, Path, PathBuf};

/// The additions to a recipe, as absolute paths; all `None`: the recipe as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Additions {
    /// A folder whose tree is copied over the guest root (modes kept, owned by root).
    pub overlay: Option<PathBuf>,
    /// A script run as root in the guest root (chroot).
    pub customize: Option<PathBuf>,
    /// A dracut or dracut-ng source tree, built and installed in the guest root.
    pub dracut_source: Option<PathBuf>,
}

impl Additions {
    pub fn is_empty(&self) -> bool {
        self.overlay.is_none() && self.customize.is_none() && self.dracut_source.is_none()
    }
}

/// One entry of a tree, by its path relative to the tree's top.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir { rel: PathBuf, mode: u32 },
    File { rel: PathBuf, mode: u32 },
    Symlink { rel: PathBuf, target: PathBuf },
}

impl Entry {
    pub fn rel(&self) -> &Path {
        match self {
            Entry::Dir { rel, .. } | Entry::File { rel, .. } | Entry::Symlink { rel, .. } => rel,
        }
    }
}

/// Every entry under `top` (not `top` itself), sorted by path, symbolic links not followed;
/// folders named in `skip` are left out with what they hold. A special file (device, FIFO,
/// socket) is an error: nothing a guest root is made of.
pub fn tree(top: &Path, skip: &[&str]) -> Result<Vec<Entry>, String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut pending = vec![top.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for e in entries {
            let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
            let p = e.path();
            let meta =
                std::fs::symlink_metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            let rel = p.strip_prefix(top).unwrap_or(&p).to_path_buf();
            let mode = meta.permissions().mode() & 0o7777;
            let ft = meta.file_type();
            if ft.is_symlink() {
                let target = std::fs::read_link(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                out.push(Entry::Symlink { rel, target });
            } else if ft.is_dir() {
                if skip.iter().any(|s| e.file_name() == *s) {
                    continue;
                }
                out.push(Entry::Dir { rel, mode });
                pending.push(p);
            } else if ft.is_file() {
                out.push(Entry::File { rel, mode });
            } else {
                return Err(format!(
                    "{} is neither a file, a folder nor a symbolic link",
                    p.display()
                ));
            }
        }
    }
    out.sort_by(|a, b| a.rel().cmp(b.rel()));
    Ok(out)
}

/// Whether a link at `rel` (inside the tree) pointing to `target` stays inside the tree:
/// relative, and never climbing above the tree's top.
pub fn link_stays_inside(rel: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = rel.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// An overlay folder: a real folder (not a link) whose symbolic links all stay inside it.
pub fn check_overlay(dir: &Path) -> Result<(), (String, Option<String>)> {
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| (format!("overlay {}: {e}", dir.display()), None))?;
    if meta.file_type().is_symlink() {
        return Err((
            format!("overlay {} is a symbolic link", dir.display()),
            Some("name the real folder".into()),
        ));
    }
    if !meta.is_dir() {
        return Err((format!("overlay {} is not a folder", dir.display()), None));
    }
    for e in tree(dir, &[]).map_err(|m| (format!("overlay: {m}"), None))? {
        if let Entry::Symlink { rel, target } = &e {
            if !link_stays_inside(rel, target) {
                return Err((
                    format!(
                        "overlay {}: the symbolic link {} -> {} leaves the overlay's folder",
                        dir.display(),
                        rel.display(),
                        target.display()
                    ),
                    Some(
                        "an overlay's links must be relative and stay inside it; copy the file instead"
                            .into(),
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A customize script: a regular file (not a link).
pub fn check_customize(file: &Path) -> Result<(), (String, Option<String>)> {
    let meta = std::fs::symlink_metadata(file)
        .map_err(|e| (format!("customize script {}: {e}", file.display()), None))?;
    if meta.file_type().is_symlink() {
        return Err((
            format!("customize script {} is a symbolic link", file.display()),
            Some("name the real file".into()),
        ));
    }
    if !meta.is_file() {
        return Err((
            format!("customize script {} is not a regular file", file.display()),
            None,
        ));
    }
    Ok(())
}

/// A dracut source tree: a folder holding dracut's `configure` and `dracut.sh`; only for a
/// recipe of the dracut flavour.
pub fn check_dracut_source(dir: &Path, flavour: &str) -> Result<(), (String, Option<String>)> {
    if flavour != "dracut" {
        return Err((
            format!("dracut_source applies to recipes of the dracut flavour, not `{flavour}`"),
            Some("use the debian-dracut recipe, or leave dracut_source out".into()),
        ));
    }
    if !dir.is_dir() {
        return Err((
            format!("dracut_source {} is not a folder", dir.display()),
            None,
        ));
    }
    for f in ["configure", "dracut.sh"] {
        if !dir.join(f).is_file() {
            return Err((
                format!(
                    "dracut_source {} has no `{f}`: not a dracut source tree",
                    dir.display()
                ),
                Some("give the top folder of a dracut or dracut-ng source tree".into()),
            ));
        }
    }
    Ok(())
}

/// A path a scenario names, relative to its folder and in or below it: refused when absolute
/// or climbing out (`..`), or when a link on the way leads out of the folder.
pub fn inside(dir: &Path, given: &str, what: &str) -> Result<PathBuf, (String, Option<String>)> {
    let rel = Path::new(given);
    let leaves = || {
        (
            format!("{what} `{given}` leaves the scenario's folder"),
            Some(format!(
                "put the {what} in or below the folder of the scenario file"
            )),
        )
    };
    if given.is_empty() {
        return Err((format!("{what} is empty"), None));
    }
    if rel.is_absolute() || rel.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(leaves());
    }
    let p = dir.join(rel);
    // A link on the way (not the last part, which the checks above judge) could lead out.
    if let (Ok(top), Some(parent)) = (dir.canonicalize(), p.parent()) {
        if let Ok(real) = parent.canonicalize() {
            if !real.starts_with(&top) {
                return Err(leaves());
            }
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_inside_and_out() {
        assert!(link_stays_inside(Path::new("a/b"), Path::new("c")));
        assert!(link_stays_inside(Path::new("a/b"), Path::new("../c")));
        assert!(!link_stays_inside(Path::new("a/b"), Path::new("../../c")));
        assert!(!link_stays_inside(Path::new("b"), Path::new("../c")));
        assert!(!link_stays_inside(Path::new("b"), Path::new("/etc/passwd")));
        assert!(link_stays_inside(Path::new("a/b"), Path::new("./x/../y")));
    }

    #[test]
    fn overlay_refuses_escaping_links_and_keeps_modes() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let o = t.path().join("o");
        std::fs::create_dir_all(o.join("etc")).unwrap();
        std::fs::write(o.join("etc/x"), "x").unwrap();
        std::fs::set_permissions(o.join("etc/x"), std::fs::Permissions::from_mode(0o750)).unwrap();
        std::os::unix::fs::symlink("x", o.join("etc/y")).unwrap();
        check_overlay(&o).unwrap();
        let entries = tree(&o, &[]).unwrap();
        assert!(entries.contains(&Entry::File {
            rel: "etc/x".into(),
            mode: 0o750
        }));
        std::os::unix::fs::symlink("/etc/passwd", o.join("etc/z")).unwrap();
        let (msg, _) = check_overlay(&o).unwrap_err();
        assert!(msg.contains("etc/z -> /etc/passwd leaves"), "{msg}");
    }

    #[test]
    fn paths_must_stay_in_the_scenario_folder() {
        let t = tempfile::tempdir().unwrap();
        assert!(inside(t.path(), "overlay", "overlay").is_ok());
        assert!(inside(t.path(), "../overlay", "overlay").is_err());
        assert!(inside(t.path(), "/etc", "overlay").is_err());
        std::os::unix::fs::symlink("/etc", t.path().join("out")).unwrap();
        assert!(inside(t.path(), "out/default", "overlay").is_err());
    }

    #[test]
    fn dracut_source_only_for_dracut() {
        let t = tempfile::tempdir().unwrap();
        let (msg, _) = check_dracut_source(t.path(), "initramfs-tools").unwrap_err();
        assert!(msg.contains("dracut flavour"), "{msg}");
        assert!(check_dracut_source(t.path(), "dracut").is_err());
        std::fs::write(t.path().join("configure"), "").unwrap();
        std::fs::write(t.path().join("dracut.sh"), "").unwrap();
        check_dracut_source(t.path(), "dracut").unwrap();
    }
}
