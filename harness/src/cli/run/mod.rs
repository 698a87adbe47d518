//! One scenario run, in two processes.
//!
//! The **host side** (the `run` command) validates the scenario, builds or reuses the image,
//! makes the run directory and the per-run disk copy, then starts the **lab side** through
//! `unshare --net --mount --pid --fork --kill-child=SIGTERM`: a process in fresh network, mount
//! and PID namespaces. Everything the lab starts (dnsmasq, tgtd, QEMU) lives in those
//! namespaces, so when the lab process ends the kernel kills what is left and removes the
//! bridge and taps: no run can leak into the host or into another run. Without root, a user
//! namespace (`--user --map-root-user`) comes first and owns the others (see
//! [`crate::support::rootless`]).
//!
//! Endings: on Ctrl-C the whole foreground process group gets SIGINT and the lab stops its
//! steps, collects artifacts and writes the summary. If only the host process is signalled
//! (SIGTERM from a CI runner), it kills `unshare`, whose `--kill-child=SIGTERM` hands the lab the
//! same orderly stop. If the host is SIGKILLed, `unshare` dies with it (parent-death signal) and
//! the chain continues the same way.

mod control;
mod fit;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use miette::{Context, IntoDiagnostic};

use crate::expect::timeouts;
use crate::guest::{self, Accel};
use crate::image::{self, node_disks};
use crate::lab;
use crate::report::{self, Summary};
use crate::scenario::{self, ImageRef, Scenario};
use crate::support::tools;

mod lab_side;
mod power;
pub use lab_side::{lab_exit_code, lab_main, login_faults, LabArgs, EXIT_HARNESS_PANIC};

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// None: detect.
    pub accel: Option<Accel>,
    pub timeout_scale: f64,
    pub runs_dir: PathBuf,
    /// After the last step, keep the lab up until Ctrl-C.
    pub keep: bool,
    /// After the last step, attach this node's console to the terminal ("" = the first node).
    pub console: Option<String>,
    /// `bench`'s bare comparison: no steps, only the time until the first node's raw serial
    /// output shows this text; no login proxy either (tgtd on the portal itself).
    pub bare_until: Option<String>,
}

#[derive(Debug)]
pub struct RunResult {
    pub scenario: String,
    pub run_dir: PathBuf,
    pub summary: Option<Summary>,
    /// Seconds from the start of `run` to the lab process being started: validation, tool
    /// checks, image check or build, and the per-run disk copy.
    pub host_setup_s: f64,
}

impl RunResult {
    pub fn ok(&self) -> bool {
        self.summary.as_ref().is_some_and(|s| s.ok)
    }
}

/// Environment variable naming the run directory, set for every process of a run.
pub const RUN_ENV: &str = "NETBOOT_HARNESS_RUN";

static HOST_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn remember_signal(sig: libc::c_int) {
    HOST_SIGNAL.store(sig, Ordering::SeqCst);
}

/// The host side. Errors here happen before anything started (bad scenario, missing tools, image
/// build failure) and change nothing outside the cache and the run directory.
pub fn run_scenario(path: &Path, opts: &RunOptions) -> miette::Result<RunResult> {
    let t0 = Instant::now();
    let scenario = scenario::load(path)?;
    let console = console_node(&scenario, opts.console.as_deref())?;
    // Before anything is made: guests that cannot all fit are refused, never half-started.
    fit::check_memory(&scenario).map_err(|why| miette::miette!("{}: {why}", scenario.name))?;
    {
        use crate::guest::boot_files;
        // A fleet finds a missing overlay tool here, not after its lab is up.
        let fleet = if scenario.iscsi.per_node.is_empty() {
            &[][..]
        } else {
            tools::FLEET_TOOLS
        };
        let needed: Vec<tools::Tool> = tools::BOOT_TOOLS.iter().chain(fleet).copied().collect();
        let mut missing =
            boot_files::missing(&boot_files::required(), &boot_files::SearchPath::host());
        let uefi = scenario
            .nodes
            .iter()
            .any(|n| n.platform == scenario::Platform::Uefi);
        if let Some(e) = uefi.then(guest::ovmf::host).and_then(Result::err) {
            missing.push((format!("OVMF ({e})"), guest::ovmf::PACKAGE.into()));
        }
        tools::check(&needed, missing)?;
    }
    let span = tracing::info_span!("scenario", name = %scenario.name);
    let _g = span.enter();

    let (accel, why) = match opts.accel {
        Some(a) => (a, "chosen on the command line".to_string()),
        None => guest::detect_accel(),
    };
    tracing::info!(%accel, %why, "accelerator");
    let vcpus: u32 = scenario.nodes.iter().map(|n| u32::from(n.cpus)).sum();
    // Measured only under TCG: KVM keeps the bounds as written, and the probe costs a moment.
    let contention = match accel {
        guest::Accel::Tcg => timeouts::Contention::measure(vcpus),
        guest::Accel::Kvm => None,
    };
    let timeouts = timeouts::scale(accel, opts.timeout_scale, contention);
    tracing::info!(factor = timeouts.factor, why = %timeouts.why, "step timeouts");

    let run_dir = opts
        .runs_dir
        .join(&scenario.name)
        .join(crate::support::paths::run_stamp());
    std::fs::create_dir_all(&run_dir)
        .into_diagnostic()
        .wrap_err_with(|| format!("creating run directory {}", run_dir.display()))?;
    // From here on, everything this process logs about the run is in the run's harness.log.
    let _log = crate::support::logging::log_run(&run_dir)
        .into_diagnostic()
        .wrap_err_with(|| format!("creating {}/harness.log", run_dir.display()))?;
    tracing::info!(scenario = %path.display(), run_dir = %run_dir.display(), %accel, %why, "run starts");
    let scratch = crate::image::scratch::Scratch::create(&run_dir)?;
    // After our own folder is locked, so the sweep cannot take it for an orphan. Each removal
    // is logged (a warning, on stderr too).
    for swept in crate::image::scratch::sweep(&opts.runs_dir) {
        if let Some(run_dir) = swept.parent() {
            report::record_orphaned_run(run_dir);
        }
    }

    let result = (|| -> miette::Result<RunResult> {
        // A fleet: each node's own base (the scenario's unless the node names another).
        let (base, bases) = if scenario.iscsi.is_per_node() {
            let bases = node_bases(&scenario, &run_dir)?;
            (bases[0].1.clone(), bases)
        } else {
            (resolve_image(&scenario, &run_dir)?, Vec::new())
        };
        // From the disk copy on, a signal must not end this process before it has cleaned up
        // and said so: the copy is large and the run directory would hold no summary (seen in
        // a test interrupting runs before their guests started). Not earlier: an image build
        // stops on the signal by itself.
        install_host_signal_handlers();
        let disk = scratch.path().join("disk.img");
        let t = Instant::now();
        if let Err(why) = fit::check_disks(&bases, scratch.path()) {
            return Err(miette::miette!("{}: {why}", scenario.name));
        }
        // A fleet gets a copy-on-write disk per node (image::node_disks); one node, a copy.
        let copied = if scenario.iscsi.is_per_node() {
            image::node_disks::create_overlays(&bases, scratch.path(), node_disks::overlay_path)
        } else {
            image::per_run_copy(&base, &disk)
        };
        if let Some(s) = interrupted_before_lab(&scenario, path) {
            eprintln!("netboot-harness: {}", s.message);
            let _ = s.write(&run_dir);
            return Ok(RunResult {
                scenario: scenario.name.clone(),
                run_dir: run_dir.clone(),
                summary: Some(s),
                host_setup_s: t0.elapsed().as_secs_f64(),
            });
        }
        copied?;
        // A node's local disk: its own overlay over the same base, whatever its LUN is.
        let local: Vec<(String, PathBuf)> = scenario
            .nodes
            .iter()
            .filter(|n| n.local_disk.is_some())
            .map(|n| {
                let own = bases.iter().find(|(name, _)| *name == n.name);
                (n.name.clone(), own.map_or(base.clone(), |(_, p)| p.clone()))
            })
            .collect();
        image::node_disks::create_overlays(&local, scratch.path(), node_disks::local_disk_path)?;
        tracing::info!(base = %base.display(), secs = t.elapsed().as_secs_f64(), "per-run disk copy");
        let lab = LabArgs {
            scenario: path.to_path_buf(),
            run_dir: run_dir.clone(),
            disk,
            accel,
            timeout_scale: timeouts.factor,
            timeout_why: timeouts.why,
            host_netns: lab::netns_inode()
                .ok_or_else(|| miette::miette!("cannot read /proc/self/ns/net"))?,
            keep: opts.keep,
            console: console.clone(),
            bare_until: opts.bare_until.clone(),
        };
        let host_setup_s = t0.elapsed().as_secs_f64();
        // The lab uses the disk after this process is gone if this process is SIGKILLed: it
        // holds the lock too, so no sweep removes the disk under it.
        scratch
            .inherit_lock()
            .into_diagnostic()
            .wrap_err("passing the scratch lock on to the lab")?;
        let summary = spawn_lab(&scenario, &lab)?;
        Ok(RunResult {
            scenario: scenario.name.clone(),
            run_dir: run_dir.clone(),
            summary,
            host_setup_s,
        })
    })();
    // The per-run disk is a working copy, not evidence: it goes whatever happened.
    scratch.remove();
    result
}

/// The node `--console` attaches to: the one named, or the first. Checked before anything
/// starts.
fn console_node(s: &Scenario, asked: Option<&str>) -> miette::Result<Option<String>> {
    let Some(asked) = asked else { return Ok(None) };
    if asked.is_empty() {
        return Ok(s.nodes.first().map(|n| n.name.clone()));
    }
    if s.nodes.iter().any(|n| n.name == asked) {
        return Ok(Some(asked.to_string()));
    }
    let valid: Vec<String> = s.nodes.iter().map(|n| format!("`{}`", n.name)).collect();
    miette::bail!(
        "--console={asked}: scenario {} has no node `{asked}`; valid: {}",
        s.name,
        valid.join(", ")
    )
}

/// Builds or reuses the image a scenario names; `log` receives the build's output.
pub fn resolve_image(s: &Scenario, log_dir: &Path) -> miette::Result<PathBuf> {
    resolve_image_logged(&s.image, &log_dir.join("image-build.log"))
}

/// Every node's base image (a fleet may mix them), each built or reused once.
fn node_bases(s: &Scenario, log_dir: &Path) -> miette::Result<Vec<(String, PathBuf)>> {
    let mut built: Vec<(&ImageRef, PathBuf)> = Vec::new();
    let mut out = Vec::new();
    for n in &s.nodes {
        let want = s.image_of(&n.name);
        let path = match built.iter().find(|(i, _)| *i == want) {
            Some((_, p)) => p.clone(),
            None => {
                let p = resolve_image_logged(want, &log_dir.join("image-build.log"))?;
                built.push((want, p.clone()));
                p
            }
        };
        out.push((n.name.clone(), path));
    }
    Ok(out)
}

fn resolve_image_logged(image: &ImageRef, log: &Path) -> miette::Result<PathBuf> {
    match image {
        ImageRef::File(p) => Ok(p.clone()),
        ImageRef::Recipe { name, set, add } => {
            let images = crate::support::paths::images_dir();
            let recipe = image::load_recipe(&images, name)?;
            let params = recipe.resolve(set)?;
            let cache = image::cache_dir();
            let built = image::ensure_built(&images, &recipe, &params, add, &cache, log)?;
            if built.reused {
                eprintln!(
                    "image {name}: reused {} (key {})",
                    built.path.display(),
                    &built.key[..16]
                );
            } else {
                eprintln!(
                    "image {name}: built {} (key {})",
                    built.path.display(),
                    &built.key[..16]
                );
            }
            Ok(built.path)
        }
    }
}

/// Starts the lab side with these arguments and waits for it.
fn spawn_lab(scenario: &Scenario, lab: &LabArgs) -> miette::Result<Option<Summary>> {
    let (path, run_dir) = (lab.scenario.as_path(), lab.run_dir.as_path());
    let exe = std::env::current_exe().into_diagnostic()?;
    let mut cmd = std::process::Command::new("unshare");
    // Without root, a user namespace owns the others (see crate::support::rootless).
    cmd.args(crate::support::rootless::lab_namespaces(
        crate::support::rootless::is_root(),
    ))
    .args(["--kill-child=SIGTERM", "--mount-proc"])
    .arg(&exe)
    .arg("__lab")
    .arg("--scenario")
    .arg(path)
    .arg("--run-dir")
    .arg(run_dir)
    .arg("--disk")
    .arg(&lab.disk)
    .arg("--accel")
    .arg(lab.accel.to_string())
    .arg("--timeout-scale")
    .arg(lab.timeout_scale.to_string())
    .arg("--timeout-why")
    .arg(&lab.timeout_why)
    .arg("--host-netns")
    .arg(lab.host_netns.to_string())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    if lab.keep {
        cmd.arg("--keep");
    }
    if let Some(text) = &lab.bare_until {
        cmd.arg("--bare-until").arg(text);
    }
    // Only a console session reads the terminal; otherwise the lab must not compete for it.
    let _terminal = match &lab.console {
        Some(node) => {
            cmd.arg("--console").arg(node).stdin(Stdio::inherit());
            // The lab changes the terminal's mode; if it is killed before it can undo that,
            // the host puts it back.
            crate::cli::attach::TerminalMode::save(std::io::stdin()).ok()
        }
        None => {
            cmd.stdin(Stdio::null());
            None
        }
    };
    crate::support::process::signal_on_parent_death(&mut cmd, libc::SIGKILL);
    install_host_signal_handlers();
    let (mut child, pipes) = crate::support::process::Owned::spawn_std(
        "lab",
        &mut cmd,
        nix::sys::signal::Signal::SIGKILL,
    )
    .into_diagnostic()
    .wrap_err("starting the lab process with unshare (package util-linux)")?;
    if lab.keep {
        if let Some(pid) = child.pid().and_then(crate::cli::attach::lab_pid) {
            let _ = std::fs::write(
                run_dir.join(crate::cli::attach::LAB_PID_FILE),
                format!("{pid}\n"),
            );
        }
    }
    let stdout = pipes.stdout;
    // The lab prints its report on stdout; relaying it also tells us when the lab is gone
    // (EOF), even if `unshare` was killed first. So it reads on to the end even when our own
    // reader has gone away.
    let relay = std::thread::spawn(move || {
        if let Some(out) = stdout {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                crate::support::stdout::print(&format!("{line}\n"));
            }
        }
    });
    let mut killed_at: Option<Instant> = None;
    loop {
        if child.has_ended().is_some() {
            break;
        }
        let sig = HOST_SIGNAL.load(Ordering::SeqCst);
        if sig != 0 && killed_at.is_none() {
            // The lab may have had the same signal from the terminal; killing unshare makes
            // sure it gets SIGTERM through --kill-child either way.
            tracing::warn!(signal = sig, "stopping the lab");
            child.kill();
            killed_at = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // After unshare is gone the lab may still be writing its summary; the relay ends at EOF.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !relay.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let summary = Summary::read(run_dir).ok();
    if summary.is_none() {
        // A signal that came as the lab was starting can end it before its own handlers are
        // in place: still an interrupted run, not a harness error.
        let s = interrupted_before_lab(scenario, path).unwrap_or_else(|| {
            Summary::error(
                &scenario.name,
                path,
                match crate::support::rootless::chroot_hint() {
                    // unshare's own message is on stderr above; this is its cause.
                    Some(fix) => format!("the lab process ended without writing a summary: {fix}"),
                    None => "the lab process ended without writing a summary (killed?)".into(),
                },
            )
        });
        let _ = s.write(run_dir);
        return Ok(Some(s));
    }
    Ok(summary)
}

/// The summary of a run a signal stopped before its lab could write one, if one did.
fn interrupted_before_lab(scenario: &Scenario, path: &Path) -> Option<Summary> {
    let sig = HOST_SIGNAL.load(Ordering::SeqCst);
    if sig == 0 {
        return None;
    }
    let mut s = Summary::error(
        &scenario.name,
        path,
        format!("interrupted (signal {sig}) before the guests started"),
    );
    s.verdict = "interrupted".into();
    Some(s)
}

fn install_host_signal_handlers() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let act = SigAction::new(
        SigHandler::Handler(remember_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            let _ = sigaction(s, &act);
        }
    }
}
