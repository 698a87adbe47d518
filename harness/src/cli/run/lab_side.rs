//! The lab side of a run: inside the run's fresh namespaces it builds the lab, starts the
//! services and the guests, runs the steps, and writes the report; then everything it started
//! goes with its namespaces.

use super::control::RunControl;
use super::power::{watch_exit, Power};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::expect::{self, NodeIo};
use crate::guest::{Accel, Guest, GuestConfig};
use crate::lab;
use crate::report::{self, Summary};
use crate::scenario::{self, Scenario};
use crate::services::events::{EventLog, RunClock};
use crate::services::iscsi_proxy::LoginFaults;
use crate::services::{ServiceContext, ServiceOptions, Services};

use super::*;

/// Arguments of the lab process (internal command `__lab`).
#[derive(Debug, Clone)]
pub struct LabArgs {
    pub scenario: PathBuf,
    pub run_dir: PathBuf,
    pub disk: PathBuf,
    pub accel: Accel,
    pub timeout_scale: f64,
    /// Where the factor comes from, for the report (see [`crate::expect::timeouts`]).
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
    let _log = match crate::support::logging::log_run(&args.run_dir) {
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
    crate::support::tasks::inject_from_env();
    // A panic outside the supervised tasks (in the lab's own code) still ends with a summary;
    // the guests and services it held were dropped on the way out, which kills them, and the
    // namespaces take whatever is left.
    let summary = match rt.block_on(crate::support::tasks::CatchUnwind::new(lab_run(&args))) {
        Ok(s) => s,
        Err(payload) => panic_summary(
            &args,
            &crate::support::tasks::HarnessPanic {
                task: "lab".into(),
                message: crate::support::tasks::panic_message(payload.as_ref()),
            },
        ),
    };
    let mut summary = panicked_meanwhile(summary);
    let code = lab_exit_code(&summary);
    if !summary.artifacts.iter().any(|a| a.path == "junit.xml") {
        summary.artifacts.push(crate::report::Artifact {
            path: "junit.xml".into(),
            what: "the run in JUnit, one test case per node".into(),
        });
    }
    if let Err(e) = summary.write(&args.run_dir) {
        eprintln!("netboot-harness: cannot write summary.json: {e}");
    } else {
        let _ = crate::report::timeline::write_for_run(&args.run_dir);
    }
    if let Err(e) = crate::report::per_node::write_junit(&summary, &args.run_dir) {
        eprintln!("netboot-harness: cannot write junit.xml: {e}");
    }
    // The per-run disk is a working file, not evidence. The host side removes it too, but it
    // may have been killed.
    if let Some(scratch) = args.disk.parent().filter(|p| p.ends_with("scratch")) {
        let _ = std::fs::remove_dir_all(scratch);
    }
    let _ = std::fs::remove_file(args.run_dir.join(crate::cli::attach::LAB_PID_FILE));
    crate::support::stdout::print(&report::render_text(&summary, &args.run_dir));
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
    let Some(p) = crate::support::tasks::supervisor().first() else {
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
fn panic_summary(args: &LabArgs, p: &crate::support::tasks::HarnessPanic) -> Summary {
    let name = scenario::load(&args.scenario)
        .map(|s| s.name)
        .unwrap_or_else(|_| "?".into());
    let mut s = Summary::error(&name, &args.scenario, p.to_string());
    s.verdict = report::HARNESS_PANIC.into();
    s.failed_step = Some(report::FailedStep::outside_the_steps(p.to_string()));
    s.artifacts = report::collect_artifacts(&args.run_dir);
    s
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
    crate::support::tasks::spawn("signals", async move {
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
    // The login proxy stands in front of tgtd in every scenario run: it records every login
    // attempt, refused and rejected ones included, with the initiator's own address. `bench`'s
    // bare arm has the guest talk to tgtd directly: nothing of the harness in the data path.
    let options = ServiceOptions {
        login_proxy: args.bare_until.is_none().then(|| login_faults(&scenario)),
        ipv6_ra: scenario.router_advertisements,
        ..ServiceOptions::default()
    };
    // A fleet: every node's own disk, exported here, inside the lab's mount namespace.
    let node_disks = if scenario.iscsi.is_per_node() {
        let names: Vec<String> = scenario.nodes.iter().map(|n| n.name.clone()).collect();
        let scratch = args.disk.parent().unwrap_or(&args.run_dir);
        let log = args.run_dir.join("node-disks.log");
        match crate::image::node_disks::NodeDisks::start(scratch, &names, &log).await {
            Ok(d) => Some(d),
            Err(e) => {
                base.message = format!("node disks: {e}");
                base.artifacts = report::collect_artifacts(&args.run_dir);
                return base;
            }
        }
    } else {
        None
    };
    let services = match Services::start_with(
        &scenario,
        ServiceContext {
            bridge: plan.bridge.clone(),
            server_ip: plan.server_ip,
            run_dir: args.run_dir.clone(),
            disk: args.disk.clone(),
            node_disks: node_disks
                .iter()
                .flat_map(|d| d.files())
                .map(|(n, f)| (n.to_string(), f.to_path_buf()))
                .collect(),
            events: events.clone(),
        },
        options,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            base.message = format!("services: {e}");
            base.artifacts = report::collect_artifacts(&args.run_dir);
            if let Some(d) = node_disks {
                d.stop().await;
            }
            return base;
        }
    };

    let progress = crate::cli::progress::BootProgress::start();
    let mut guests = Vec::new();
    let mut machines = BTreeMap::new();
    let mut configs = BTreeMap::new();
    let mut inputs = BTreeMap::new();
    let mut nodes = BTreeMap::new();
    let mut start_error = None;
    let mut bare: Option<tokio::task::JoinHandle<std::io::Result<Option<f64>>>> = None;
    for (i, node) in scenario.nodes.iter().enumerate() {
        // A staggered fleet: each node powers on `stagger` after the one before; a Ctrl-C
        // during the wait ends the run like one during the boot.
        if i > 0 && !scenario.stagger.is_zero() {
            let mut cancelled = cancel_rx.clone();
            tokio::select! {
                _ = tokio::time::sleep(scenario.stagger) => {}
                _ = cancelled.wait_for(|c| *c) => break,
            }
        }
        let embedded_script = match &node.firmware {
            scenario::Firmware::Rom
            | scenario::Firmware::ChainUndionly
            | scenario::Firmware::ChainSnponly => None,
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
        let uefi = match crate::guest::ovmf::flash_for(node, &args.run_dir) {
            Ok(f) => f,
            Err(e) => {
                start_error = Some(e);
                break;
            }
        };
        let cfg = GuestConfig {
            uefi,
            node: node.clone(),
            taps: plan.taps_of(&node.name).cloned().collect(),
            accel: args.accel,
            qmp_socket: crate::guest::qmp::socket_for(&node.name),
            embedded_script,
            files: crate::guest::boot_files::SearchPath::host(),
            local_disk: node.local_disk.map(|_| {
                let scratch = args.disk.parent().unwrap_or(&args.run_dir);
                crate::image::node_disks::local_disk_path(scratch, &node.name)
            }),
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
                    bare = Some(crate::support::tasks::spawn("bare", async move {
                        crate::cli::bare::time_to_text(out, &raw, &text, clock, limit).await
                    }));
                    guests.push(g);
                    // The comparison boots one node, as the harness-driven runs it is set against.
                    break;
                }
                match crate::guest::console::Console::spawn(
                    out,
                    &args.run_dir.join(format!("console-{}.log", node.name)),
                    &args.run_dir.join(format!("console-{}.txt", node.name)),
                    clock,
                ) {
                    Ok((console, _task)) => {
                        watch_exit(&node.name, &g, console.clone());
                        // Typing goes through a relay to whichever QEMU runs the node now (a
                        // power cycle starts another).
                        let current = Arc::new(std::sync::Mutex::new(g.input.clone()));
                        let (relay, mut typed) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
                        let to = current.clone();
                        crate::support::tasks::spawn(format!("typing:{}", node.name), async move {
                            while let Some(bytes) = typed.recv().await {
                                let tx = to.lock().unwrap_or_else(|p| p.into_inner()).clone();
                                let _ = tx.send(bytes).await;
                            }
                        });
                        inputs.insert(node.name.clone(), current);
                        configs.insert(node.name.clone(), cfg.clone());
                        nodes.insert(
                            node.name.clone(),
                            NodeIo {
                                console,
                                input: relay,
                            },
                        );
                        // QEMU's events are evidence from the start (a RESET at a reboot), and
                        // machine steps need the connection: a node without it does not boot.
                        match crate::guest::qmp::Qmp::connect(
                            &node.name,
                            &cfg.qmp_socket,
                            events.clone(),
                        )
                        .await
                        {
                            Ok(q) => {
                                machines.insert(node.name.clone(), Arc::new(q));
                            }
                            Err(e) => start_error = Some(format!("{}: {e}", node.name)),
                        }
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

    let power = Power {
        guests: tokio::sync::Mutex::new(guests),
        machines: std::sync::Mutex::new(machines),
        configs,
        nodes: &nodes,
        inputs,
        events: events.clone(),
        run_dir: args.run_dir.clone(),
    };
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
            power: &power,
        };
        let steps = crate::support::tasks::CatchUnwind::new(async {
            if crate::support::tasks::supervisor().injects("expect") {
                panic!(
                    "injected panic ({})",
                    crate::support::tasks::INJECT_PANIC_ENV
                );
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
                    message: crate::support::tasks::panic_message(payload.as_ref()),
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
    for g in power.guests.into_inner() {
        g.stop().await;
    }
    services.stop().await;
    // After tgtd, the last reader and writer of the node disks.
    if let Some(d) = node_disks {
        d.stop().await;
    }
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
    summary.artifacts = report::collect_artifacts(&args.run_dir);
    summary
}

/// What the login proxy does to the scenario's logins: its iSCSI refusals, drops, outages and
/// address ACL.
pub fn login_faults(scenario: &Scenario) -> LoginFaults {
    LoginFaults {
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
        allow_at_target: scenario
            .iscsi
            .per_node
            .iter()
            .filter_map(|e| {
                e.address
                    .map(|a| (e.target.as_str().to_string(), std::net::IpAddr::V4(a)))
            })
            .collect(),
    }
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
        slow: false,
        phase: None,
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
    use crate::cli::attach::{self, Detached};
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
