//! What a benchmarked run costs the machine, sampled while it runs: the memory of every process
//! the run started (QEMU guests, services, storage daemon, the lab itself) and the disk its
//! scratch folder holds (the per-run disk, or a fleet's overlays: only the blocks written).
//! Peaks, since the question is "does a fleet of eight fit on this machine".

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Often enough to catch the peak of a boot that lasts tens of seconds.
const EVERY: Duration = Duration::from_millis(500);

/// The peaks of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Peaks {
    /// Resident memory of this process's descendants, summed at each sample, bytes.
    pub memory: u64,
    /// Blocks allocated under the run folders' `scratch/` directories, bytes.
    pub disk: u64,
}

pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Peaks>,
}

impl Sampler {
    /// Samples until [`Sampler::stop`]: the descendants of this process, and the scratch
    /// folders of the runs under `scenario_runs` (one folder per run of one scenario).
    pub fn start(scenario_runs: PathBuf) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let me = std::process::id();
        let thread = std::thread::spawn(move || {
            let mut peaks = Peaks::default();
            while !flag.load(Ordering::Relaxed) {
                peaks.memory = peaks.memory.max(descendants_rss(me));
                peaks.disk = peaks.disk.max(scratch_bytes(&scenario_runs));
                std::thread::sleep(EVERY);
            }
            peaks
        });
        Sampler { stop, thread }
    }

    pub fn stop(self) -> Peaks {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// (pid, parent pid, resident bytes) of every process /proc shows.
fn processes() -> Vec<(u32, u32, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        Some(parse_status(pid, &status))
    })
    .flatten()
    .collect()
}

/// `PPid:` and `VmRSS:` of a /proc/PID/status text; kernel threads have no VmRSS (0).
fn parse_status(pid: u32, status: &str) -> Option<(u32, u32, u64)> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let ppid = field("PPid:")? as u32;
    Some((pid, ppid, field("VmRSS:").unwrap_or(0) * 1024))
}

/// The resident memory of every descendant of `root` (not `root` itself: the bench process's
/// own memory is not the run's).
pub fn descendants_rss(root: u32) -> u64 {
    sum_below(root, &processes())
}

fn sum_below(root: u32, procs: &[(u32, u32, u64)]) -> u64 {
    let mut children: HashMap<u32, Vec<(u32, u64)>> = HashMap::new();
    for &(pid, ppid, rss) in procs {
        children.entry(ppid).or_default().push((pid, rss));
    }
    let mut total = 0;
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &(c, rss) in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            total += rss;
            todo.push(c);
        }
    }
    total
}

/// Allocated bytes under `<dir>/*/scratch/` (sparse files count what they hold).
fn scratch_bytes(dir: &Path) -> u64 {
    let Ok(runs) = std::fs::read_dir(dir) else {
        return 0;
    };
    runs.filter_map(Result::ok)
        .map(|r| allocated(&r.path().join("scratch")))
        .sum()
}

fn allocated(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        // symlink_metadata: a FUSE export's mount point is not followed into.
        .filter_map(|e| e.path().symlink_metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.blocks() * 512)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_of_every_descendant_is_summed_and_nothing_else() {
        // 1 -> 10 -> 11 -> 12, and 1 -> 20 (not below 10).
        let procs = [(10, 1, 100), (11, 10, 20), (12, 11, 3), (20, 1, 5000)];
        assert_eq!(sum_below(10, &procs), 23);
        assert_eq!(sum_below(12, &procs), 0);
    }

    #[test]
    fn status_fields_are_read_and_kernel_threads_hold_nothing() {
        let s = "Name:\tqemu\nPPid:\t4242\nVmRSS:\t  524288 kB\n";
        assert_eq!(parse_status(7, s), Some((7, 4242, 512 * 1024 * 1024)));
        assert_eq!(
            parse_status(8, "Name:\tkworker\nPPid:\t2\n"),
            Some((8, 2, 0))
        );
    }

    #[test]
    fn a_child_process_is_found_below_this_one() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        // The child's status appears as soon as it runs; sleep's resident set is small but not 0.
        let mut seen = 0;
        for _ in 0..50 {
            seen = descendants_rss(std::process::id());
            if seen > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(seen > 0);
    }

    #[test]
    fn scratch_disk_counts_allocated_blocks_not_apparent_size() {
        let d = tempfile::tempdir().unwrap();
        let scratch = d.path().join("run1/scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        let f = std::fs::File::create(scratch.join("node01.qcow2")).unwrap();
        f.set_len(1 << 30).unwrap(); // 1 GiB apparent, nothing written
        std::fs::write(scratch.join("node02.qcow2"), vec![1u8; 1 << 20]).unwrap();
        let b = scratch_bytes(d.path());
        assert!((1 << 20..(1 << 20) + (64 << 10)).contains(&b), "{b}");
    }
}
