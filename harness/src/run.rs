//! One scenario run, in two processes.
//!
//! The **host side** (the `run` command) validates the scenario, builds or reuses the image,
//! makes the run directory and the per-run disk copy, then starts the **lab side** through
//! `unshare --net --mount --pid --fork --kill-child=SIGTERM`: a process in fresh network, mount
//! and PID namespaces. Everything the lab starts (dnsmasq, tgtd, QEMU) lives in those
//! namespaces, so when the lab process ends the kernel kills what is left and removes the
//! bridge and taps: no run can leak into the host or into another run. Without root, a user
//! namespace (`--user --map-root-user`) comes first and owns the others (see
//! [`crate::rootless`]).
//!
//! Endings: on Ctrl-C the whole foreground process group gets SIGINT and the lab stops its
//! steps, collects artifacts and writes the summary. If only the host process is signalled
//! (SIGTERM from a CI runner), it kills `unshare`, whose `--kill-child=SIGTERM` hands the lab the
//! same orderly stop. If the host is SIGKILLed, `unshare` dies with it (parent-death signal) and
//! the chain continues the same way.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use miette::{Context, IntoDiagnostic};

use crate::events::{EventLog, RunClock};
use crate::expect::{self, NodeIo};
use crate::guest::{self, Accel, Guest, GuestConfig};
use crate::image;
use crate::iscsi_proxy::LoginFaults;
use crate::lab;
use crate::report::{self, Artifact, Summary};
use crate::scenario::{self, ImageRef, Scenario};
use crate::services::{ServiceContext, ServiceOptions, Services};
use crate::timeouts;
use crate::tools;

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
    /// output shows this text.
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
    tools::check(tools::BOOT_TOOLS, &crate::boot_files::required())?;
    let span = tracing::info_span!("scenario", name = %scenario.name);
    let _g = span.enter();

    let (accel, why) = match opts.accel {
        Some(a) => (a, "chosen on the command line".to_string()),
        None => guest::detect_accel(),
    };
    tracing::info!(%accel, %why, "accelerator");
    let vcpus: u32 = scenario.nodes.iter().map(|n| u32::from(n.cpus)).sum();
    let timeouts = timeouts::scale(accel, opts.timeout_scale, vcpus, timeouts::HostLoad::now());
    tracing::info!(factor = timeouts.factor, why = %timeouts.why, "step timeouts");

    let run_dir = opts
        .runs_dir
        .join(&scenario.name)
        .join(crate::paths::run_stamp());
    std::fs::create_dir_all(&run_dir)
        .into_diagnostic()
        .wrap_err_with(|| format!("creating run directory {}", run_dir.display()))?;
    // From here on, everything this process logs about the run is in the run's harness.log.
    let _log = crate::logging::log_run(&run_dir)
        .into_diagnostic()
        .wrap_err_with(|| format!("creating {}/harness.log", run_dir.display()))?;
    tracing::info!(scenario = %path.display(), run_dir = %run_dir.display(), %accel, %why, "run starts");
    let scratch = crate::scratch::Scratch::create(&run_dir)?;
    // After our own folder is locked, so the sweep cannot take it for an orphan. Each removal
    // is logged (a warning, on stderr too).
    crate::scratch::sweep(&opts.runs_dir);

    let result = (|| -> miette::Result<RunResult> {
        let base = resolve_image(&scenario, &run_dir)?;
        // From the disk copy on, a signal must not end this process before it has cleaned up
        // and said so: the copy is large and the run directory would hold no summary (seen in
        // a test interrupting runs before their guests started). Not earlier: an image build
        // stops on the signal by itself.
        install_host_signal_handlers();
        let disk = scratch.path().join("disk.img");
        let t = Instant::now();
        let copied = image::per_run_copy(&base, &disk);
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
    resolve_image_logged(s, &log_dir.join("image-build.log"))
}

fn resolve_image_logged(s: &Scenario, log: &Path) -> miette::Result<PathBuf> {
    match &s.image {
        ImageRef::File(p) => Ok(p.clone()),
        ImageRef::Recipe { name, set } => {
            let images = crate::paths::images_dir();
            let recipe = image::load_recipe(&images, name)?;
            let params = recipe.resolve(set)?;
            let cache = image::cache_dir();
            let built = image::ensure_built(&images, &recipe, &params, &cache, log)?;
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
    // Without root, a user namespace owns the others (see crate::rootless).
    cmd.args(crate::rootless::lab_namespaces(crate::rootless::is_root()))
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
            crate::attach::TerminalMode::save(std::io::stdin()).ok()
        }
        None => {
            cmd.stdin(Stdio::null());
            None
        }
    };
    crate::process::signal_on_parent_death(&mut cmd, libc::SIGKILL);
    install_host_signal_handlers();
    let mut child = cmd
        .spawn()
        .into_diagnostic()
        .wrap_err("starting the lab process with unshare (package util-linux)")?;
    if lab.keep {
        if let Some(pid) = crate::attach::lab_pid(child.id()) {
            let _ = std::fs::write(
                run_dir.join(crate::attach::LAB_PID_FILE),
                format!("{pid}\n"),
            );
        }
    }
    let stdout = child.stdout.take();
    // The lab prints its report on stdout; relaying it also tells us when the lab is gone
    // (EOF), even if `unshare` was killed first. So it reads on to the end even when our own
    // reader has gone away.
    let relay = std::thread::spawn(move || {
        if let Some(out) = stdout {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                crate::stdout::print(&format!("{line}\n"));
            }
        }
    });
    let mut killed_at: Option<Instant> = None;
    loop {
        if let Some(_status) = child.try_wait().into_diagnostic()? {
            break;
        }
        let sig = HOST_SIGNAL.load(Ordering::SeqCst);
        if sig != 0 && killed_at.is_none() {
            // The lab may have had the same signal from the terminal; killing unshare makes
            // sure it gets SIGTERM through --kill-child either way.
            tracing::warn!(signal = sig, "stopping the lab");
            let _ = child.kill();
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
                match crate::rootless::chroot_hint() {
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

/// Arguments of the lab process (internal command `__lab`).
#[derive(Debug, Clone)]
pub struct LabArgs {
    pub scenario: PathBuf,
    pub run_dir: PathBuf,
    pub disk: PathBuf,
    pub accel: Accel,
    pub timeout_scale: f64,
    /// Where the factor comes from, for the report (see [`crate::timeouts`]).
    pub timeout_why: String,
    pub host_netns: u64,
    pub keep: bool,
    pub console: Option<String>,
    pub bare_until: Option<String>,
}

/// The lab side: runs inside the fresh namespaces; returns the process exit code.
pub fn lab_main(args: LabArgs) -> i32 {
    // Every process of the run inherits this: a check from outside can find any straggler by
    // its environment (see tests/cleanup.rs).
    std::env::set_var(RUN_ENV, &args.run_dir);
    let _log = match crate::logging::log_run(&args.run_dir) {
        Ok(l) => Some(l),
        Err(e) => {
            eprintln!("netboot-harness: cannot open the run's harness.log: {e}");
            None
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("netboot-harness: cannot start the async runtime: {e}");
            return 2;
        }
    };
    crate::tasks::inject_from_env();
    // A panic outside the supervised tasks (in the lab's own code) still ends with a summary;
    // the guests and services it held were dropped on the way out, which kills them, and the
    // namespaces take whatever is left.
    let summary = match rt.block_on(crate::tasks::CatchUnwind::new(lab_run(&args))) {
        Ok(s) => s,
        Err(payload) => panic_summary(
            &args,
            &crate::tasks::HarnessPanic {
                task: "lab".into(),
                message: crate::tasks::panic_message(payload.as_ref()),
            },
        ),
    };
    let summary = panicked_meanwhile(summary);
    let code = lab_exit_code(&summary);
    if let Err(e) = summary.write(&args.run_dir) {
        eprintln!("netboot-harness: cannot write summary.json: {e}");
    } else {
        let _ = crate::timeline::write_for_run(&args.run_dir);
    }
    // The per-run disk and the QMP sockets are working files, not evidence. The host side
    // removes the disk too, but it may have been killed.
    if let Some(scratch) = args.disk.parent().filter(|p| p.ends_with("scratch")) {
        let _ = std::fs::remove_dir_all(scratch);
    }
    remove_sockets(&args.run_dir);
    let _ = std::fs::remove_file(args.run_dir.join(crate::attach::LAB_PID_FILE));
    crate::stdout::print(&report::render_text(&summary, &args.run_dir));
    // Threads blocked on reads must not keep the lab (and so the namespaces) alive.
    rt.shutdown_timeout(Duration::from_secs(2));
    code
}

/// The lab's exit status: 0 when the run did what the scenario expects, 1 when it did not,
/// 2 when the harness could not run it, 3 when a harness task panicked, 130 when interrupted.
pub fn lab_exit_code(s: &Summary) -> i32 {
    match s.verdict.as_str() {
        _ if s.ok => 0,
        "interrupted" => 130,
        "error" => 2,
        report::HARNESS_PANIC => EXIT_HARNESS_PANIC,
        _ => 1,
    }
}

/// Exit status of `run` (and the lab) when a harness task panicked: a harness bug, told apart
/// from a scenario that failed (1) and from a command that could not start (2).
pub const EXIT_HARNESS_PANIC: i32 = 3;

/// A harness task that panicked outside the steps (while the services started, say) still
/// decides the verdict: the run's evidence cannot be trusted whatever the steps said.
fn panicked_meanwhile(mut s: Summary) -> Summary {
    let Some(p) = crate::tasks::supervisor().first() else {
        return s;
    };
    if s.verdict == report::HARNESS_PANIC {
        return s;
    }
    s.message = format!(
        "{p} (the run's own verdict was {}: {})",
        s.verdict, s.message
    );
    s.verdict = report::HARNESS_PANIC.into();
    s.ok = false;
    if s.failed_step.is_none() {
        s.failed_step = Some(report::FailedStep::outside_the_steps(p.to_string()));
    }
    s
}

/// The summary of a run the lab's own code panicked in, outside any step.
fn panic_summary(args: &LabArgs, p: &crate::tasks::HarnessPanic) -> Summary {
    let name = scenario::load(&args.scenario)
        .map(|s| s.name)
        .unwrap_or_else(|_| "?".into());
    let mut s = Summary::error(&name, &args.scenario, p.to_string());
    s.verdict = report::HARNESS_PANIC.into();
    s.failed_step = Some(report::FailedStep::outside_the_steps(p.to_string()));
    s.artifacts = collect_artifacts(&args.run_dir);
    s
}

/// What the steps may do to this run's lab, and how they learn that it broke: a service died
/// or a harness task panicked.
struct RunControl<'a> {
    services: &'a Services,
}

impl expect::LabControl for RunControl<'_> {
    fn restart(
        &self,
        service: scenario::Service,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send + '_>>
    {
        expect::LabControl::restart(self.services, service)
    }

    fn lun_file(&self) -> Option<PathBuf> {
        expect::LabControl::lun_file(self.services)
    }

    fn broken(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = expect::LabFault> + Send + '_>> {
        Box::pin(async move {
            tokio::select! {
                p = crate::tasks::panicked() => expect::LabFault::Panic(p),
                f = expect::LabControl::broken(self.services) => f,
            }
        })
    }
}

async fn lab_run(args: &LabArgs) -> Summary {
    let scenario = match scenario::load(&args.scenario) {
        Ok(s) => s,
        Err(e) => return Summary::error("?", &args.scenario, e.summary()),
    };
    let span = tracing::info_span!("lab", scenario = %scenario.name);
    let _g = span.enter();
    let clock = RunClock::start();
    let mut base = Summary::error(&scenario.name, &args.scenario, String::new());
    base.accel = args.accel.to_string();
    base.timeout_scale = args.timeout_scale;
    base.timeout_why = args.timeout_why.clone();

    let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
    crate::tasks::spawn("signals", async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
        let _ = cancel_tx.send(true);
    });

    let events = match EventLog::new(clock, Some(&args.run_dir.join("events.jsonl"))) {
        Ok(e) => Arc::new(e),
        Err(e) => {
            base.message = format!("cannot create events.jsonl: {e}");
            return base;
        }
    };
    let plan = lab::plan(&scenario);
    if let Err(e) = lab::setup(&plan, Some(args.host_netns)) {
        base.message = format!("lab network: {e}");
        return base;
    }
    // The login proxy stands in front of tgtd in every run: it records every login attempt,
    // refused and rejected ones included, with the initiator's own address.
    let options = ServiceOptions {
        login_proxy: Some(LoginFaults {
            refuse_first: scenario.iscsi.refuse_first,
            drop_first: scenario.iscsi.drop_first,
            refuse_until: scenario.iscsi.refuse_until.map(|d| d.as_secs_f64()),
            downtime: crate::services::outage::Downtime::new(
                scenario.iscsi.start_after,
                &scenario.iscsi.down,
            ),
            allow_from: scenario
                .iscsi
                .allow_addresses
                .iter()
                .map(|a| std::net::IpAddr::V4(*a))
                .collect(),
        }),
        ipv6_ra: scenario.router_advertisements,
        ..ServiceOptions::default()
    };
    let services = match Services::start_with(
        &scenario,
        ServiceContext {
            bridge: plan.bridge.clone(),
            server_ip: plan.server_ip,
            run_dir: args.run_dir.clone(),
            disk: args.disk.clone(),
            events: events.clone(),
        },
        options,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            base.message = format!("services: {e}");
            base.artifacts = collect_artifacts(&args.run_dir);
            return base;
        }
    };

    let progress = crate::progress::BootProgress::start();
    let mut guests = Vec::new();
    let mut nodes = BTreeMap::new();
    let mut start_error = None;
    let mut bare: Option<tokio::task::JoinHandle<std::io::Result<Option<f64>>>> = None;
    for node in &scenario.nodes {
        let embedded_script = match &node.firmware {
            scenario::Firmware::Rom | scenario::Firmware::ChainUndionly => None,
            scenario::Firmware::EmbeddedScript { body, .. } => {
                // Kept as an artifact: it is what the node's firmware ran.
                let p = args
                    .run_dir
                    .join(format!("ipxe-embedded-{}.ipxe", node.name));
                if let Err(e) = std::fs::write(&p, body) {
                    start_error = Some(format!("writing {}: {e}", p.display()));
                    break;
                }
                Some(p)
            }
        };
        let cfg = GuestConfig {
            node: node.clone(),
            taps: plan.taps_of(&node.name).cloned().collect(),
            accel: args.accel,
            qmp_socket: args.run_dir.join(format!("qmp-{}.sock", node.name)),
            embedded_script,
            files: crate::boot_files::SearchPath::host(),
        };
        let _ = std::fs::write(
            args.run_dir.join(format!("qemu-{}.args", node.name)),
            cfg.args()
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("\n"),
        );
        match Guest::start(&cfg, &args.run_dir.join(format!("qemu-{}.log", node.name))) {
            Ok(mut g) => {
                base.qemu_started_at.insert(node.name.clone(), clock.now());
                if let Some(p) = &progress {
                    p.node_started(&node.name);
                }
                let Some(out) = g.stdout.take() else {
                    start_error = Some(format!("QEMU for {} has no stdout", node.name));
                    break;
                };
                if let Some(text) = &args.bare_until {
                    let raw = args.run_dir.join(format!("console-{}.log", node.name));
                    let text = text.clone().into_bytes();
                    let limit = Duration::from_secs_f64(600.0 * args.timeout_scale);
                    bare = Some(crate::tasks::spawn("bare", async move {
                        crate::bare::time_to_text(out, &raw, &text, clock, limit).await
                    }));
                    guests.push(g);
                    // The comparison boots one node, as the harness-driven runs it is set against.
                    break;
                }
                match crate::console::Console::spawn(
                    out,
                    &args.run_dir.join(format!("console-{}.log", node.name)),
                    &args.run_dir.join(format!("console-{}.txt", node.name)),
                    clock,
                ) {
                    Ok((console, _task)) => {
                        let mut exit = g.exit.clone();
                        let noted = console.clone();
                        crate::tasks::spawn(format!("qemu-exit:{}", node.name), async move {
                            if let Ok(how) = exit.wait_for(Option::is_some).await {
                                noted.note_end(how.as_deref().unwrap_or_default());
                            }
                        });
                        nodes.insert(
                            node.name.clone(),
                            NodeIo {
                                console,
                                input: g.input.clone(),
                            },
                        );
                    }
                    Err(e) => start_error = Some(format!("console of {}: {e}", node.name)),
                }
                guests.push(g);
            }
            Err(e) => {
                start_error = Some(e.to_string());
                break;
            }
        }
    }

    let summary = if let Some(err) = start_error {
        base.message = err;
        base
    } else if let (Some(task), Some(text)) = (bare.take(), &args.bare_until) {
        bare_summary(base, text, task.await, clock.now())
    } else {
        let observer: &dyn expect::StepObserver = match &progress {
            Some(p) => p,
            None => &expect::NoObserver,
        };
        let control = RunControl {
            services: &services,
        };
        let steps = crate::tasks::CatchUnwind::new(async {
            if crate::tasks::supervisor().injects("expect") {
                panic!("injected panic ({})", crate::tasks::INJECT_PANIC_ENV);
            }
            expect::run_steps_controlled(
                &scenario,
                &nodes,
                &events,
                args.timeout_scale,
                cancel_rx.clone(),
                observer,
                &control,
            )
            .await
        });
        let outcome = match steps.await {
            Ok(o) => o,
            // The step loop is not a spawned task: its panic is caught here, and the lab is
            // torn down below as after any other ending.
            Err(payload) => expect::Outcome {
                verdict: expect::Verdict::HarnessPanic {
                    step: "(the step loop)".into(),
                    task: "expect".into(),
                    message: crate::tasks::panic_message(payload.as_ref()),
                },
                steps: Vec::new(),
                console_tails: nodes
                    .iter()
                    .map(|(n, io)| (n.clone(), io.console.tail(expect::TAIL_LINES)))
                    .collect(),
            },
        };
        let judgement = expect::judge(&outcome, scenario.expect_failure.as_ref());
        let mut s = Summary::from_outcome(base, &outcome, &judgement);
        s.duration_s = clock.now();
        s
    };

    // The spinners leave the screen before anything else is printed.
    drop(progress);
    let steps_ran = !summary.steps.is_empty() && summary.verdict != "interrupted";
    if steps_ran && (args.keep || args.console.is_some()) {
        hold_after_steps(args, &plan, &nodes, &summary, cancel_rx).await;
    }
    for g in guests {
        g.stop().await;
    }
    services.stop().await;
    let mut summary = summary;
    // After the services stopped, so an outage that never ended is seen to the end.
    let node_of_mac = |mac: &str| {
        scenario
            .nodes
            .iter()
            .find(|n| n.nics.iter().any(|nic| nic.mac.to_string() == mac))
            .map(|n| n.name.clone())
    };
    summary.faults = report::injected_faults(&events.snapshot(), &node_of_mac);
    summary.artifacts = collect_artifacts(&args.run_dir);
    summary
}

/// The summary of a bare comparison run: one step, the text's first appearance.
fn bare_summary(
    mut base: Summary,
    text: &str,
    found: Result<std::io::Result<Option<f64>>, tokio::task::JoinError>,
    now: f64,
) -> Summary {
    let name = format!("bare: {text}");
    let (met_at, message) = match found {
        Ok(Ok(Some(at))) => (Some(at), "the text appeared".to_string()),
        Ok(Ok(None)) => (None, format!("{text:?} did not appear")),
        Ok(Err(e)) => (None, format!("reading the serial console: {e}")),
        Err(e) => (None, format!("the console reader failed: {e}")),
    };
    let started = base.qemu_started_at.values().cloned().fold(0.0, f64::max);
    base.steps = vec![report::StepSummary {
        name,
        node: base
            .qemu_started_at
            .keys()
            .next()
            .cloned()
            .unwrap_or_default(),
        status: if met_at.is_some() { "met" } else { "failed" }.into(),
        started_at: started,
        met_at,
        waited_s: met_at.unwrap_or(now) - started,
        within_s: 0.0,
        detail: message.clone(),
    }];
    base.ok = met_at.is_some();
    base.verdict = if base.ok { "passed" } else { "failed" }.into();
    base.message = message;
    base.duration_s = now;
    base
}

/// `--console` and `--keep`: the steps are over, everything is still up.
async fn hold_after_steps(
    args: &LabArgs,
    plan: &lab::LabPlan,
    nodes: &BTreeMap<String, NodeIo>,
    summary: &Summary,
    cancel: tokio::sync::watch::Receiver<bool>,
) {
    use crate::attach::{self, Detached};
    eprintln!(
        "netboot-harness: steps over ({}): {}",
        summary.verdict, summary.message
    );
    if let Some(node) = &args.console {
        match nodes.get(node) {
            Some(io) => {
                eprintln!(
                    "attached to {node}'s serial console: keys go to the guest; \
                     Ctrl-] detaches, Ctrl-C ends the run"
                );
                let raw = args.run_dir.join(format!("console-{node}.log"));
                match attach::console_session(&raw, &io.console, io.input.clone(), cancel.clone())
                    .await
                {
                    Ok(Detached::Key) => eprintln!("\r\ndetached from {node}'s console"),
                    Ok(Detached::GuestStopped) => eprintln!("\r\n{node}'s guest stopped"),
                    Ok(Detached::Cancelled) => {}
                    Err(e) => eprintln!("console of {node}: {e}"),
                }
            }
            None => eprintln!("node {node} has no console to attach to"),
        }
    }
    if args.keep && !*cancel.borrow() {
        let kept = attach::KeptLab {
            run_dir: &args.run_dir,
            bridge: &plan.bridge,
            server: format!("{} on {}", plan.server_ip, plan.subnet),
            nodes: nodes.keys().cloned().collect(),
        };
        eprint!("{}", kept.instructions());
        attach::cancelled(cancel).await;
    }
    tracing::info!("the lab is no longer held; cleaning up");
}

fn remove_sockets(run_dir: &Path) {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(rd) = std::fs::read_dir(run_dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_socket()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Every file in the run directory, with what it is, for the report.
pub fn collect_artifacts(run_dir: &Path) -> Vec<Artifact> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(run_dir) else {
        return out;
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    for n in names {
        let what = describe_artifact(&n);
        out.push(Artifact {
            path: n,
            what: what.into(),
        });
    }
    out
}

fn describe_artifact(name: &str) -> &'static str {
    match name {
        n if n.starts_with("console-") && n.ends_with(".log") => {
            "raw serial console (bytes as sent)"
        }
        n if n.starts_with("console-") && n.ends_with(".txt") => {
            "console lines, cleaned, with times"
        }
        n if n.starts_with("qemu-") && n.ends_with(".args") => "QEMU command line",
        n if n.starts_with("qemu-") && n.ends_with(".log") => "QEMU's own messages",
        "events.jsonl" => "every service event (DHCP, HTTP, iSCSI), timed",
        "iscsi-logins.jsonl" => "iSCSI login records",
        "dnsmasq.log" => "DHCP server log",
        "dnsmasq.args" => "DHCP server command line",
        "dnsmasq.leases" => "DHCP leases",
        "dnsmasq-chain-opts" => "chain-undionly boot files per node, as dnsmasq last read them",
        "http.log" => "HTTP requests",
        "tgtd.log" => "iSCSI target log",
        "tgtadm.log" => "iSCSI target configuration commands",
        "image-build.log" => "image build log",
        n if n.starts_with("ipxe-embedded-") => "the iPXE script the node's firmware ran first",
        "summary.json" => "verdict, step times, artifacts",
        "timeline.svg" => "boot timeline picture",
        "harness.log" => "the harness's own log",
        _ => "",
    }
}
