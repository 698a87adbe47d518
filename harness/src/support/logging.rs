//! Where tracing output goes: stderr, filtered by `-v` or `NETBOOT_HARNESS_LOG`, and while a
//! run is on, that run's `harness.log` at debug level without colours.
//!
//! A run is two processes (host side and lab side, see [`crate::cli::run`]); each appends to the
//! same `harness.log`. The fmt layer hands over one formatted event per write and the file is
//! opened with `O_APPEND`, so lines of the two processes interleave whole.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tracing_subscriber::filter::{filter_fn, FilterExt, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The file name in the run directory.
pub const RUN_LOG: &str = "harness.log";

static RUN_LOG_FILE: Mutex<Option<File>> = Mutex::new(None);
/// Read on every event: cheaper than the mutex when no run is logging.
static RUN_LOG_ON: AtomicBool = AtomicBool::new(false);

/// Installs the global subscriber. Call once, first thing.
pub fn init(verbose: u8) {
    let default = match verbose {
        0 => "netboot_harness=warn",
        1 => "netboot_harness=debug",
        _ => "netboot_harness=trace",
    };
    let stderr_filter =
        EnvFilter::try_from_env("NETBOOT_HARNESS_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(crate::support::progress::StderrWriter)
        .with_target(false)
        .with_filter(stderr_filter);
    let file_filter = Targets::new()
        .with_target("netboot_harness", tracing::Level::DEBUG)
        // Spans stay enabled: one opened before the run's log (the host's `scenario` span)
        // must still name the events logged inside it.
        .and(filter_fn(|m| {
            !m.is_event() || RUN_LOG_ON.load(Ordering::Relaxed)
        }));
    let file = tracing_subscriber::fmt::layer()
        .with_writer(RunLogWriter)
        .with_ansi(false)
        .with_target(false)
        .with_filter(file_filter);
    // A second init (a test calling main twice) is harmless: the first subscriber stays.
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file)
        .try_init();
}

/// While alive, tracing events also go to this run's log file.
pub struct RunLog(());

impl Drop for RunLog {
    fn drop(&mut self) {
        RUN_LOG_ON.store(false, Ordering::Relaxed);
        *lock() = None;
    }
}

/// Starts appending events to `run_dir/harness.log` (created if missing). One run at a time
/// per process: a later call takes over from an earlier one.
pub fn log_run(run_dir: &Path) -> std::io::Result<RunLog> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run_dir.join(RUN_LOG))?;
    *lock() = Some(f);
    RUN_LOG_ON.store(true, Ordering::Relaxed);
    Ok(RunLog(()))
}

fn lock() -> std::sync::MutexGuard<'static, Option<File>> {
    RUN_LOG_FILE.lock().unwrap_or_else(|p| p.into_inner())
}

struct RunLogWriter;

impl Write for RunLogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(f) = lock().as_mut() {
            // A full disk must not stop the run: the log is a convenience, not evidence.
            let _ = f.write_all(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for RunLogWriter {
    type Writer = RunLogWriter;
    fn make_writer(&'a self) -> RunLogWriter {
        RunLogWriter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_log_gets_debug_events_without_colours() {
        init(0);
        let tmp = tempfile::Builder::new()
            .prefix("nbh-logging-")
            .tempdir()
            .unwrap();
        let dir = tmp.path();
        tracing::debug!("before the run");
        let span = tracing::info_span!("lab", scenario = "demo");
        {
            let _g = span.enter();
            let _log = log_run(dir).unwrap();
            tracing::debug!(step = "sanboot", "met at debug level");
        }
        tracing::debug!("after the run");
        let text = std::fs::read_to_string(dir.join(RUN_LOG)).unwrap();
        assert!(text.contains("met at debug level"), "{text}");
        assert!(text.contains("lab{scenario=\"demo\"}"), "{text}");
        assert!(!text.contains('\x1b'), "colour codes in the file: {text:?}");
        assert!(!text.contains("before the run") && !text.contains("after the run"));
        tmp.close().unwrap();
    }
}
