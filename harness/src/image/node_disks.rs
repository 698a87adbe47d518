//! A disk of its own for every node of a fleet, from the one cached image: a qcow2 overlay per
//! node whose backing file is the cached image (opened read-only, so it is never written), shown
//! to tgtd as a plain raw file through `qemu-storage-daemon`'s FUSE export.
//!
//! Chosen on measurements on this machine's ext4 (no reflinks): a full sparse copy of a 1.1 GB
//! image (618 MB of data) takes 1.1 s and 618 MB per node; an overlay takes 0.02 s and holds
//! only the clusters its node writes (README, "Fleets"). tgtd reads the exported file as any
//! other backing file.
//!
//! The exports are FUSE mounts: they are made inside the lab's own mount namespace, so they
//! vanish with it even when the storage daemon is killed, and nothing is ever mounted on the
//! host.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::ImageError;
use crate::support::process::{die_with_parent, Owned};

/// How long the daemon may take to have every export mounted.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// `scratch/<node>.qcow2`: the node's overlay, its writes only.
pub fn overlay_path(scratch: &Path, node: &str) -> PathBuf {
    scratch.join(format!("{node}.qcow2"))
}

/// `scratch/<node>.img`: the node's disk as tgtd sees it, a raw file while the export runs.
pub fn export_path(scratch: &Path, node: &str) -> PathBuf {
    scratch.join(format!("{node}.img"))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// `scratch/local-<node>.qcow2`: the node's local disk (`local_disk: image`), its writes only.
pub fn local_disk_path(scratch: &Path, node: &str) -> PathBuf {
    scratch.join(format!("local-{node}.qcow2"))
}

/// One overlay per node over its base image (raw, or a user's qcow2), in `scratch`, named by
/// `path_of` ([`overlay_path`] or [`local_disk_path`]).
pub fn create_overlays(
    bases: &[(String, PathBuf)],
    scratch: &Path,
    path_of: fn(&Path, &str) -> PathBuf,
) -> Result<(), ImageError> {
    // Most runs have no local disk: no tool to look for then.
    if bases.is_empty() {
        return Ok(());
    }
    let qemu_img = crate::support::tools::find("qemu-img").ok_or_else(|| ImageError::Copy {
        from: "the cached images".into(),
        to: scratch.display().to_string(),
        message: "qemu-img is missing: apt-get install qemu-utils".into(),
    })?;
    for (node, base) in bases {
        // The overlay names its backing file by this path: absolute, so the daemon finds it.
        let base = base.canonicalize().map_err(io(base))?;
        let format = if super::is_qcow2(&base) {
            "qcow2"
        } else {
            "raw"
        };
        let overlay = path_of(scratch, node);
        let out = Command::new(&qemu_img)
            .args(["create", "-q", "-f", "qcow2", "-F", format, "-b"])
            .arg(&base)
            .arg(&overlay)
            .stdin(Stdio::null())
            .output()
            .map_err(io(&overlay))?;
        if !out.status.success() {
            return Err(ImageError::Copy {
                from: base.display().to_string(),
                to: overlay.display().to_string(),
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
    }
    Ok(())
}

/// The storage daemon exporting every node's overlay; [`NodeDisks::stop`] unmounts them.
pub struct NodeDisks {
    daemon: Owned,
    files: Vec<(String, PathBuf)>,
}

impl NodeDisks {
    /// Exports each node's overlay (made by [`create_overlays`]) as `scratch/<node>.img`, and
    /// waits until every export is mounted. Must run in the lab's mount namespace.
    pub async fn start(scratch: &Path, nodes: &[String], log: &Path) -> Result<Self, ImageError> {
        let program =
            crate::support::tools::find("qemu-storage-daemon").ok_or_else(|| ImageError::Copy {
                from: scratch.display().to_string(),
                to: "the node disks".into(),
                // Debian 12 ships it in qemu-system-common, Debian 13 in qemu-utils.
                message: "qemu-storage-daemon is missing: apt-get install qemu-utils \
                          qemu-system-common"
                    .into(),
            })?;
        let mut cmd = tokio::process::Command::new(&program);
        let mut files = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            let overlay = overlay_path(scratch, node);
            let export = export_path(scratch, node);
            // A FUSE export mounts over an existing regular file.
            std::fs::write(&export, b"").map_err(io(&export))?;
            cmd.arg("--blockdev").arg(format!(
                "driver=file,node-name=f{i},filename={}",
                blockdev_path(&overlay)?
            ));
            cmd.arg("--blockdev")
                .arg(format!("driver=qcow2,node-name=q{i},file=f{i}"));
            cmd.arg("--export").arg(format!(
                "type=fuse,id=e{i},node-name=q{i},mountpoint={},writable=on",
                blockdev_path(&export)?
            ));
            files.push((node.clone(), export));
        }
        let log_file = std::fs::File::create(log).map_err(io(log))?;
        let err_file = log_file.try_clone().map_err(io(log))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log_file))
            .stderr(Stdio::from(err_file))
            .kill_on_drop(true);
        die_with_parent(&mut cmd);
        let (daemon, _) = Owned::spawn("qemu-storage-daemon", &mut cmd).map_err(io(&program))?;
        let this = NodeDisks { daemon, files };
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if this.files.iter().all(|(_, f)| is_mounted(f)) {
                tracing::info!(nodes = this.files.len(), "node disks exported");
                return Ok(this);
            }
            let ended = this.daemon.has_ended();
            if ended.is_some() || tokio::time::Instant::now() > deadline {
                let why = match ended {
                    Some(e) => format!("qemu-storage-daemon {}", e.how),
                    None => format!("not every export mounted within {READY_TIMEOUT:?}"),
                };
                this.stop().await;
                return Err(ImageError::Copy {
                    from: scratch.display().to_string(),
                    to: "the node disks".into(),
                    message: format!("{why}; see {}", log.display()),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The file tgtd exports as `node`'s LUN.
    pub fn file(&self, node: &str) -> Option<&Path> {
        self.files
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, f)| f.as_path())
    }

    /// Every node's file, in node order.
    pub fn files(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.files.iter().map(|(n, f)| (n.as_str(), f.as_path()))
    }

    /// Ends the daemon, which flushes the overlays and unmounts the exports.
    pub async fn stop(self) {
        let _ = self.daemon.stop(Duration::from_secs(5)).await;
    }
}

/// QEMU's option syntax splits on commas: a path holding one would be misread.
fn blockdev_path(p: &Path) -> Result<String, ImageError> {
    let s = p.display().to_string();
    if s.contains(',') {
        return Err(ImageError::Copy {
            from: s.clone(),
            to: "the node disks".into(),
            message: "a path with a comma cannot be given to qemu-storage-daemon".into(),
        });
    }
    Ok(s)
}

/// A FUSE export shows the disk's size; the placeholder file under it is empty.
fn is_mounted(f: &Path) -> bool {
    std::fs::metadata(f).is_ok_and(|m| m.len() > 0)
}
