//! A run's working folder, `<run dir>/scratch` (the per-run disk copy), and how folders whose
//! run died without removing them are found and removed later.
//!
//! Every ending a process can see removes the folder itself. SIGKILL cannot be seen: killed
//! during the disk copy, before the lab exists, the run leaves a copy as large as the image.
//! So each run holds an advisory lock (`flock`) on `scratch/.lock` for its whole life, passed on
//! to its lab process; the kernel drops the lock when the last holder dies, however it dies.
//! [`sweep`], run at the start of every run, removes the scratch folders under the runs folder
//! whose lock is free.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The lock file inside a scratch folder.
pub const LOCK_FILE: &str = ".lock";

/// A scratch folder without a lock file is one being made this instant (between its `mkdir`
/// and its lock) or one of a harness from before the locks, which may still be running and
/// reading its disk by path: only one older than any run could be is an orphan.
const UNLOCKED_GRACE: Duration = Duration::from_secs(6 * 3600);

/// This run's scratch folder, locked while the value lives (and while any process that
/// inherited the lock lives).
pub struct Scratch {
    dir: PathBuf,
    /// Closing it does not unlock for a child that inherited it: the lock belongs to the open
    /// file, which lives while any descriptor of it does.
    lock: File,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("scratch folder {}: {what}: {source}", dir.display())]
pub struct ScratchError {
    dir: PathBuf,
    what: &'static str,
    #[source]
    source: std::io::Error,
}

impl Scratch {
    /// Makes `<run_dir>/scratch` and takes its lock.
    pub fn create(run_dir: &Path) -> Result<Scratch, ScratchError> {
        let dir = run_dir.join("scratch");
        let err = |what, source| ScratchError {
            dir: dir.clone(),
            what,
            source,
        };
        std::fs::create_dir_all(&dir).map_err(|e| err("creating it", e))?;
        let file = File::create(dir.join(LOCK_FILE)).map_err(|e| err("creating its lock", e))?;
        try_lock(&file).map_err(|e| err("locking it", e))?;
        Ok(Scratch { dir, lock: file })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Lets the processes this one starts from now on inherit the lock, so that the folder
    /// stays locked while the lab still uses the disk after this process died.
    pub fn inherit_lock(&self) -> std::io::Result<()> {
        nix::fcntl::fcntl(
            &self.lock,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .map(|_| ())
        .map_err(std::io::Error::from)
    }

    /// Removes the folder; the lock goes with the value.
    pub fn remove(self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.dir.display(), "cannot remove the scratch folder: {e}");
            }
        }
    }
}

/// Takes the exclusive lock on `f` if nobody holds it.
fn try_lock(f: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Removes every scratch folder under `runs` (`<runs>/<scenario>/<stamp>/scratch`) whose run is
/// dead. Returns the folders removed; their run directories may lack a summary (the caller
/// writes one: [`crate::report::record_orphaned_run`]).
pub fn sweep(runs: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for run_dir in run_dirs(runs) {
        let dir = run_dir.join("scratch");
        if !dir.is_dir() || !orphaned(&dir) {
            continue;
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {
                tracing::warn!(dir = %dir.display(), "removed the scratch folder of a run that died without cleaning up");
                removed.push(dir);
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), "cannot remove an orphaned scratch folder: {e}")
            }
        }
    }
    removed
}

/// `<runs>/<scenario>/<stamp>` folders.
fn run_dirs(runs: &Path) -> Vec<PathBuf> {
    let subdirs = |p: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect()
    };
    subdirs(runs).iter().flat_map(|s| subdirs(s)).collect()
}

/// Whether no live process holds the folder's lock.
fn orphaned(dir: &Path) -> bool {
    match File::open(dir.join(LOCK_FILE)) {
        // Taking the lock proves its holders are gone; it is dropped with the folder.
        Ok(f) => try_lock(&f).is_ok(),
        Err(_) => std::fs::metadata(dir)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > UNLOCKED_GRACE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Removed when dropped, also when a test panics.
    fn runs_root(name: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("nbh-scratch-{name}-"))
            .tempdir()
            .unwrap()
    }

    #[test]
    fn a_live_lock_is_kept_and_a_dead_one_removed() {
        let tmp = runs_root("sweep");
        let runs = tmp.path();
        let live_run = runs.join("scen/20261125T000000Z-1");
        let dead_run = runs.join("scen/20261125T000001Z-2");
        let live = Scratch::create(&live_run).unwrap();
        std::fs::write(live.path().join("disk.img"), b"in use").unwrap();
        // A run that died: its lock was taken and dropped with its process.
        drop(Scratch::create(&dead_run).unwrap());
        std::fs::write(dead_run.join("scratch/disk.img"), b"left behind").unwrap();

        let removed = sweep(runs);
        assert_eq!(removed, vec![dead_run.join("scratch")]);
        assert!(
            live.path().join("disk.img").is_file(),
            "a live run's copy was removed"
        );
        assert!(!dead_run.join("scratch").exists());

        // Once the live run ends its folder is an orphan like any other.
        drop(live);
        assert_eq!(sweep(runs), vec![live_run.join("scratch")]);
        tmp.close().unwrap();
    }

    #[test]
    fn a_lock_held_by_another_process_keeps_the_folder() {
        let tmp = runs_root("child");
        let runs = tmp.path();
        let run = runs.join("scen/20261125T000000Z-3");
        let scratch = Scratch::create(&run).unwrap();
        scratch.inherit_lock().unwrap();
        // The lab holds the lock through the inherited descriptor after this process let go.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let dir = scratch.path().to_path_buf();
        drop(scratch);
        assert!(
            sweep(runs).is_empty(),
            "removed while the child holds the lock"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(sweep(runs), vec![dir]);
        tmp.close().unwrap();
    }

    #[test]
    fn a_fresh_folder_without_a_lock_is_left_alone() {
        let tmp = runs_root("fresh");
        let runs = tmp.path();
        let run = runs.join("scen/20261125T000000Z-4");
        std::fs::create_dir_all(run.join("scratch")).unwrap();
        assert!(sweep(runs).is_empty());
        assert!(run.join("scratch").is_dir());
        tmp.close().unwrap();
    }
}
