//! Runs a scenario's steps against the guests' consoles and the services' records.
//!
//! Steps run in order; each one's clock starts when the previous one was met. Console steps
//! consume the console (a per-node cursor moves past each matched line). Service steps consume
//! one matching record each, whenever it happened: the console and the services are two
//! separate witnesses and their clocks are not compared.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::console::{Console, ConsoleLine};
use crate::events::{Event, EventKind, EventLog};
use crate::scenario::{Action, ExpectedFailure, FailPattern, Scenario, Service, Step};

pub struct NodeIo {
    pub console: Console,
    /// Bytes to type on the node's serial console.
    pub input: mpsc::Sender<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepStatus {
    Met,
    Failed,
    Skipped,
}

#[derive(Debug, Clone)]
pub struct StepResult {
    pub name: String,
    pub node: String,
    pub status: StepStatus,
    pub started_at: f64,
    pub met_at: Option<f64>,
    pub waited: f64,
    pub within: f64,
    /// The matched line or record, or why the step failed.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Passed,
    Failed {
        step: String,
        reason: String,
        waited: f64,
        within: f64,
    },
    Interrupted {
        step: String,
    },
    /// A task of the harness itself panicked during this step: a harness bug, not a finding
    /// about the boot.
    HarnessPanic {
        step: String,
        task: String,
        message: String,
    },
}

impl Verdict {
    pub fn passed(&self) -> bool {
        matches!(self, Verdict::Passed)
    }
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub verdict: Verdict,
    pub steps: Vec<StepResult>,
    /// Node -> its last 50 console lines.
    pub console_tails: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// The run did what the scenario expects (an expected failure at the right step counts).
    pub ok: bool,
    pub message: String,
}

pub const TAIL_LINES: usize = 50;

enum Wait {
    Met { at: f64, detail: String },
    Failed(String),
    TimedOut,
    Cancelled,
    Broken(LabFault),
}

/// The lab broke under the steps: the run cannot go on, whatever step it is at.
#[derive(Debug, Clone, PartialEq)]
pub enum LabFault {
    /// A task of the harness panicked.
    Panic(crate::tasks::HarnessPanic),
    /// A service (or other process the run needs) ended without the harness stopping it.
    Died(String),
}

/// Told about each step as it ends, e.g. to show progress. Must not block.
pub trait StepObserver: Send + Sync {
    fn step_ended(&self, result: &StepResult);
}

/// Observes nothing.
pub struct NoObserver;

impl StepObserver for NoObserver {
    fn step_ended(&self, _: &StepResult) {}
}

/// What steps may do to the lab besides reading consoles and records.
pub trait LabControl: Send + Sync {
    /// Stops a service and starts it again; `Ok` describes what happened.
    fn restart(
        &self,
        service: Service,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>>;
    /// The per-run disk copy the iSCSI target exports.
    fn lun_file(&self) -> Option<PathBuf>;
    /// Resolves when the lab broke (a service died, a harness task panicked); never, by
    /// default.
    fn broken(&self) -> Pin<Box<dyn Future<Output = LabFault> + Send + '_>> {
        Box::pin(std::future::pending())
    }
}

/// A lab without controls: restart and LUN steps fail, saying so.
pub struct NoControl;

impl LabControl for NoControl {
    fn restart(
        &self,
        service: Service,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>> {
        let name = service.name();
        Box::pin(async move { Err(format!("this run cannot restart {name}")) })
    }
    fn lun_file(&self) -> Option<PathBuf> {
        None
    }
}

/// Console texts that tell why a guest lost its root disk, for the verdict of a shell that
/// stopped answering.
const ROOT_LOSS_TEXTS: &[&str] = &[
    "rejecting I/O to offline device",
    "device offline error",
    "Buffer I/O error",
    "I/O error, dev sd",
    "ping timeout of",
    "detected conn error",
    "session recovery timed out",
    "EXT4-fs error",
    "Remounting filesystem read-only",
    "blocked for more than",
];

/// How often a `lun_bytes` step reads the disk copy again.
const LUN_POLL: Duration = Duration::from_millis(250);

/// Runs every step; never panics on guest behaviour, always returns a verdict.
pub async fn run_steps(
    scenario: &Scenario,
    nodes: &BTreeMap<String, NodeIo>,
    events: &EventLog,
    timeout_scale: f64,
    cancel: watch::Receiver<bool>,
) -> Outcome {
    run_steps_observed(scenario, nodes, events, timeout_scale, cancel, &NoObserver).await
}

/// [`run_steps`], telling `observer` about each step that ends.
pub async fn run_steps_observed(
    scenario: &Scenario,
    nodes: &BTreeMap<String, NodeIo>,
    events: &EventLog,
    timeout_scale: f64,
    cancel: watch::Receiver<bool>,
    observer: &dyn StepObserver,
) -> Outcome {
    run_steps_controlled(
        scenario,
        nodes,
        events,
        timeout_scale,
        cancel,
        observer,
        &NoControl,
    )
    .await
}

/// [`run_steps_observed`] with a lab that restart and LUN steps can act on.
pub async fn run_steps_controlled(
    scenario: &Scenario,
    nodes: &BTreeMap<String, NodeIo>,
    events: &EventLog,
    timeout_scale: f64,
    mut cancel: watch::Receiver<bool>,
    observer: &dyn StepObserver,
    control: &dyn LabControl,
) -> Outcome {
    let clock = events.clock();
    let mut cursors: BTreeMap<String, usize> = nodes.keys().map(|n| (n.clone(), 0)).collect();
    let mut consumed: BTreeSet<usize> = BTreeSet::new();
    let mut results = Vec::new();
    let mut verdict = Verdict::Passed;

    for (index, step) in scenario.steps.iter().enumerate() {
        if !verdict.passed() {
            results.push(StepResult {
                name: step.name.clone(),
                node: step.node.clone(),
                status: StepStatus::Skipped,
                started_at: clock.now(),
                met_at: None,
                waited: 0.0,
                within: 0.0,
                detail: String::new(),
            });
            continue;
        }
        let span = tracing::info_span!("step", name = %step.name);
        let _g = span.enter();
        let within = step.within.mul_f64(timeout_scale);
        let started = clock.now();
        let wait = match nodes.get(&step.node) {
            None => Wait::Failed(format!(
                "node `{}` has no console (it did not start)",
                step.node
            )),
            Some(io) => {
                let fail_from: BTreeMap<String, usize> = cursors.clone();
                let cx = StepCx {
                    index,
                    nodes,
                    fail_from: &fail_from,
                    fail_on: &scenario.fail_on,
                    events,
                    control,
                };
                let w = tokio::select! {
                    w = wait_step(step, io, &cx, &mut cursors, &mut consumed) => w,
                    _ = tokio::time::sleep(within) => Wait::TimedOut,
                    _ = cancelled(&mut cancel) => Wait::Cancelled,
                    fault = control.broken() => Wait::Broken(fault),
                };
                match (w, &step.action) {
                    // A shell that does not finish its command is the finding itself: say so,
                    // with what the console shows about the root disk since it was typed.
                    (Wait::TimedOut, Action::Shell(cmd)) => {
                        let since = fail_from.get(&step.node).copied().unwrap_or(0);
                        Wait::Failed(shell_silent(
                            cmd,
                            started,
                            within.as_secs_f64(),
                            &io.console.lines_from(since),
                        ))
                    }
                    (w, _) => w,
                }
            }
        };
        let now = clock.now();
        let waited = now - started;
        let within_s = within.as_secs_f64();
        let (status, met_at, detail) = match wait {
            Wait::Met { at, detail } => {
                tracing::info!(at, "met");
                (StepStatus::Met, Some(at), detail)
            }
            // A dead service fails the step as any other failure does; its reason names it.
            Wait::Failed(reason) | Wait::Broken(LabFault::Died(reason)) => {
                verdict = Verdict::Failed {
                    step: step.name.clone(),
                    reason: reason.clone(),
                    waited,
                    within: within_s,
                };
                (StepStatus::Failed, None, reason)
            }
            Wait::TimedOut => {
                let reason = format!("waited {within_s:.0}s for {}", describe(&step.action));
                verdict = Verdict::Failed {
                    step: step.name.clone(),
                    reason: reason.clone(),
                    waited,
                    within: within_s,
                };
                (StepStatus::Failed, None, reason)
            }
            Wait::Cancelled => {
                verdict = Verdict::Interrupted {
                    step: step.name.clone(),
                };
                (StepStatus::Failed, None, "interrupted".to_string())
            }
            Wait::Broken(LabFault::Panic(p)) => {
                verdict = Verdict::HarnessPanic {
                    step: step.name.clone(),
                    task: p.task.clone(),
                    message: p.message.clone(),
                };
                (StepStatus::Failed, None, p.to_string())
            }
        };
        let result = StepResult {
            name: step.name.clone(),
            node: step.node.clone(),
            status,
            started_at: started,
            met_at,
            waited,
            within: within_s,
            detail,
        };
        observer.step_ended(&result);
        results.push(result);
    }

    let console_tails = nodes
        .iter()
        .map(|(n, io)| (n.clone(), io.console.tail(TAIL_LINES)))
        .collect();
    Outcome {
        verdict,
        steps: results,
        console_tails,
    }
}

async fn cancelled(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow() {
            return;
        }
        if rx.changed().await.is_err() {
            // The sender is gone: nobody can cancel any more.
            std::future::pending::<()>().await;
        }
    }
}

/// What a step waits for, in words, for timeout messages.
pub fn describe(a: &Action) -> String {
    match a {
        Action::Console(t) => format!("a console line containing {t:?}"),
        Action::ConsoleRegex(r) => format!("a console line matching /{}/", r.as_str()),
        Action::DhcpAck {
            mac,
            hostname,
            boot_file,
        } => {
            let mut s = "a DHCP ACK".to_string();
            if let Some(m) = mac {
                s.push_str(&format!(" for {m}"));
            }
            if let Some(h) = hostname {
                s.push_str(&format!(" with hostname {h}"));
            }
            if let Some(f) = boot_file {
                s.push_str(&format!(" with boot file {f}"));
            }
            s
        }
        Action::TftpSent { file, mac } => {
            let mut s = format!("the TFTP server to send {file}");
            if let Some(m) = mac {
                s.push_str(&format!(" to {m}"));
            }
            s
        }
        Action::HttpGet(p) => format!("an HTTP request for {p} answered with 2xx"),
        Action::HttpStatus { path, status } => {
            format!("an HTTP request for {path} answered with {status}")
        }
        Action::IscsiLoginRefused { initiator, target } => {
            let mut s = "a refused or failed iSCSI login".to_string();
            if let Some(i) = initiator {
                s.push_str(&format!(" from {i}"));
            }
            if let Some(t) = target {
                s.push_str(&format!(" to {t}"));
            }
            s
        }
        Action::IscsiLogin {
            initiator,
            target,
            from,
            mac,
        } => {
            let mut s = "an iSCSI login".to_string();
            describe_login(&mut s, initiator, target, from, mac);
            s
        }
        Action::Refused { service, from } => {
            let mut s = format!(
                "a connection the {} server turned away while down",
                service.name()
            );
            if let Some(f) = from {
                s.push_str(&format!(" from address {f}"));
            }
            s
        }
        Action::ServiceStarted(service) => format!("the {} server starting", service.name()),
        Action::AllLogins {
            initiator,
            target,
            from,
            mac,
            at_least,
        } => {
            let mut s = format!("at least {at_least} iSCSI logins, every one");
            describe_login(&mut s, initiator, target, from, mac);
            s
        }
        Action::Send(t) => format!("typing {t:?}"),
        Action::Restart(service) => format!("the {} server to restart", service.name()),
        Action::Shell(cmd) => format!("the shell to finish {cmd:?}"),
        Action::LunBytes { offset, text } => {
            format!("the LUN to hold {text:?} at byte {offset}")
        }
        Action::QemuExit => "QEMU to exit".to_string(),
    }
}

/// The parts of a login a step asks for, in words.
fn describe_login(
    s: &mut String,
    initiator: &Option<crate::scenario::Iqn>,
    target: &Option<crate::scenario::Iqn>,
    from: &Option<std::net::IpAddr>,
    mac: &Option<crate::scenario::MacAddr>,
) {
    if let Some(m) = mac {
        s.push_str(&format!(" from MAC {m}"));
    }
    if let Some(i) = initiator {
        s.push_str(&format!(" from {i}"));
    }
    if let Some(t) = target {
        s.push_str(&format!(" to {t}"));
    }
    if let Some(f) = from {
        s.push_str(&format!(" from address {f}"));
    }
}

/// The verdict for a shell command that never finished.
fn shell_silent(cmd: &str, typed_at: f64, within: f64, since: &[ConsoleLine]) -> String {
    let why = root_loss(since).unwrap_or_else(|| "; nothing on the console since says why".into());
    format!(
        "the guest's shell stopped answering: {cmd:?} (typed at {typed_at:.1}s) did not finish within {within:.0}s{why}"
    )
}

/// The verdict for a shell command that failed: its status, its last words and what the kernel
/// said about the root disk meanwhile.
fn shell_failed(cmd: &str, status: &str, before: &[ConsoleLine]) -> String {
    // The echo of the typed line carries the status tag with `$?`; the output does not.
    let said = before
        .iter()
        .rev()
        .find(|l| !l.text.contains("$?") && !l.text.trim().is_empty())
        .map(|l| format!("; its last line: {:?}", l.text.trim()))
        .unwrap_or_default();
    let why = root_loss(before).unwrap_or_default();
    format!("{cmd:?} finished with status {status}{said}{why}")
}

/// The console lines among `lines` that say the root disk is in trouble, summed up.
fn root_loss(lines: &[ConsoleLine]) -> Option<String> {
    let evidence: Vec<&ConsoleLine> = lines
        .iter()
        .filter(|l| ROOT_LOSS_TEXTS.iter().any(|t| l.text.contains(t)))
        .collect();
    let first = evidence.first()?;
    Some(format!(
        "; the console shows why, {} line(s) about the root disk since, first at {:.1}s: {:?}",
        evidence.len(),
        first.at,
        first.text.trim()
    ))
}

/// The line a `shell` step types: the command, then its exit status on a line of its own.
/// The echo of the typed line shows `$?`, never digits, so only the output can match.
fn shell_line(index: usize, cmd: &str) -> (String, regex::Regex) {
    let tag = format!("netboot-harness: step {} exit", index + 1);
    let typed = format!("{cmd}; echo \"{tag} $?\"");
    let re = regex::Regex::new(&format!(r"{} (\d+)\s*$", regex::escape(&tag)))
        .expect("escaped text is a valid regex");
    (typed, re)
}

/// What a step needs to know about the run besides its own node.
struct StepCx<'a> {
    index: usize,
    nodes: &'a BTreeMap<String, NodeIo>,
    fail_from: &'a BTreeMap<String, usize>,
    fail_on: &'a [FailPattern],
    events: &'a EventLog,
    control: &'a dyn LabControl,
}

/// Types a line on the node's console, ended as a terminal's Enter ends it.
async fn type_line(io: &NodeIo, text: &str) -> Result<(), String> {
    // A serial console's line discipline ends input lines at CR.
    let mut bytes = text.as_bytes().to_vec();
    bytes.push(b'\r');
    io.input
        .send(bytes)
        .await
        .map_err(|_| "the guest's console input is closed (QEMU exited)".to_string())
}

async fn wait_step(
    step: &Step,
    io: &NodeIo,
    cx: &StepCx<'_>,
    cursors: &mut BTreeMap<String, usize>,
    consumed: &mut BTreeSet<usize>,
) -> Wait {
    let StepCx {
        nodes,
        fail_from,
        fail_on,
        events,
        ..
    } = *cx;
    let shell_re = match &step.action {
        Action::Send(text) => {
            return match type_line(io, text).await {
                Ok(()) => Wait::Met {
                    at: events.clock().now(),
                    detail: format!("typed {text:?}"),
                },
                Err(e) => Wait::Failed(e),
            };
        }
        Action::Restart(service) => {
            return match cx.control.restart(*service).await {
                Ok(detail) => Wait::Met {
                    at: events.clock().now(),
                    detail,
                },
                Err(e) => Wait::Failed(format!("restarting {}: {e}", service.name())),
            };
        }
        Action::Shell(cmd) => {
            let (typed, re) = shell_line(cx.index, cmd);
            if let Err(e) = type_line(io, &typed).await {
                return Wait::Failed(e);
            }
            Some(re)
        }
        _ => None,
    };
    let lun_file = match &step.action {
        Action::LunBytes { .. } => match cx.control.lun_file() {
            Some(p) => Some(p),
            None => return Wait::Failed("this run has no LUN file to read".into()),
        },
        _ => None,
    };
    let mut console_rxs: Vec<watch::Receiver<u64>> =
        nodes.values().map(|n| n.console.subscribe()).collect();
    let mut events_rx = events.subscribe();
    let mut fail_cursors = fail_from.clone();
    loop {
        // Look first, then wait: anything that arrived before we subscribed is still seen.
        match &step.action {
            Action::Console(_) | Action::ConsoleRegex(_) => {
                let cursor = cursors.get(&step.node).copied().unwrap_or(0);
                let lines = io.console.lines_from(cursor);
                let hit = lines.iter().position(|l| match &step.action {
                    Action::Console(t) => l.text.contains(t.as_str()),
                    Action::ConsoleRegex(r) => r.is_match(&l.text),
                    _ => false,
                });
                // A failure text only counts if it came before the line we were waiting for.
                let limit = hit.map(|i| (step.node.as_str(), cursor + i));
                if let Some(reason) =
                    check_fail_patterns(nodes, fail_on, &mut fail_cursors, limit, None)
                {
                    return Wait::Failed(reason);
                }
                if let Some(i) = hit {
                    cursors.insert(step.node.clone(), cursor + i + 1);
                    return Wait::Met {
                        at: lines[i].at,
                        detail: lines[i].text.clone(),
                    };
                }
                if io.console.closed() {
                    return guest_gone(io, &step.action).await;
                }
            }
            Action::Shell(cmd) => {
                let cursor = cursors.get(&step.node).copied().unwrap_or(0);
                let lines = io.console.lines_from(cursor);
                let hit = lines.iter().enumerate().find_map(|(i, l)| {
                    let status = shell_re.as_ref()?.captures(&l.text)?.get(1)?.as_str();
                    Some((i, status.to_string()))
                });
                let limit = hit.as_ref().map(|(i, _)| (step.node.as_str(), cursor + i));
                if let Some(reason) =
                    check_fail_patterns(nodes, fail_on, &mut fail_cursors, limit, None)
                {
                    return Wait::Failed(reason);
                }
                if let Some((i, status)) = hit {
                    cursors.insert(step.node.clone(), cursor + i + 1);
                    return if status == "0" {
                        Wait::Met {
                            at: lines[i].at,
                            detail: format!("{cmd:?} finished with status 0"),
                        }
                    } else {
                        Wait::Failed(shell_failed(cmd, &status, &lines[..i]))
                    };
                }
                if io.console.closed() {
                    return Wait::Failed(format!(
                        "the guest stopped ({}) while its shell ran {cmd:?}",
                        qemu_end(io).await
                    ));
                }
            }
            Action::QemuExit => {
                if let Some(reason) =
                    check_fail_patterns(nodes, fail_on, &mut fail_cursors, None, None)
                {
                    return Wait::Failed(reason);
                }
                if io.console.closed() {
                    return Wait::Met {
                        at: events.clock().now(),
                        detail: "QEMU exited: its console closed".into(),
                    };
                }
            }
            Action::LunBytes { offset, text } => {
                if let Some(reason) =
                    check_fail_patterns(nodes, fail_on, &mut fail_cursors, None, None)
                {
                    return Wait::Failed(reason);
                }
                if let Some(path) = &lun_file {
                    match read_at(path, *offset, text.len()) {
                        Ok(got) if got == text.as_bytes() => {
                            return Wait::Met {
                                at: events.clock().now(),
                                detail: format!(
                                    "{} holds {text:?} at byte {offset}",
                                    path.display()
                                ),
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            return Wait::Failed(format!(
                                "reading {} at byte {offset}: {e}",
                                path.display()
                            ))
                        }
                    }
                }
            }
            Action::AllLogins { at_least, .. } => {
                if let Some(reason) =
                    check_fail_patterns(nodes, fail_on, &mut fail_cursors, None, None)
                {
                    return Wait::Failed(reason);
                }
                match all_logins(&step.action, &events.snapshot(), *at_least) {
                    Ok(Some(detail)) => {
                        return Wait::Met {
                            at: events.clock().now(),
                            detail,
                        }
                    }
                    Ok(None) => {}
                    Err(reason) => return Wait::Failed(reason),
                }
            }
            action => {
                let all = events.snapshot();
                let found = all
                    .iter()
                    .enumerate()
                    .find(|(i, e)| !consumed.contains(i) && event_matches(action, e));
                // As for console steps: a failure text only counts if it came before the record
                // we were waiting for. Both can be there by the time this step looks (iPXE
                // fetches the script and fails its sanboot within milliseconds); the record
                // came first, so the failure belongs to a later step (seen in the soak test).
                let before = found.map(|(_, e)| e.at);
                if let Some(reason) =
                    check_fail_patterns(nodes, fail_on, &mut fail_cursors, None, before)
                {
                    return Wait::Failed(reason);
                }
                if let Some((i, e)) = found {
                    consumed.insert(i);
                    return Wait::Met {
                        at: e.at,
                        detail: serde_json::to_string(e).unwrap_or_default(),
                    };
                }
            }
        }
        // A guest that is gone sends no more records and changes its disk no more: waiting
        // out the step's timeout would only hide why the run failed.
        if io.console.closed() && !matches!(step.action, Action::QemuExit) {
            return guest_gone(io, &step.action).await;
        }
        let console_changed = async {
            let futs = console_rxs.iter_mut().map(|rx| Box::pin(rx.changed()));
            let _ = futures_select_any(futs).await;
        };
        // The disk copy tells nobody when it changes: look again after a while.
        let lun_tick = async {
            match lun_file {
                Some(_) => tokio::time::sleep(LUN_POLL).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = console_changed => {}
            r = events_rx.changed() => {
                if r.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            _ = lun_tick => {}
        }
    }
}

/// The verdict of a step whose guest stopped under it.
async fn guest_gone(io: &NodeIo, action: &Action) -> Wait {
    Wait::Failed(format!(
        "the guest stopped ({}) while waiting for {}",
        qemu_end(io).await,
        describe(action)
    ))
}

/// How long the console's end may come before QEMU's exit status: the pipe closes first.
const EXIT_STATUS_WAIT: Duration = Duration::from_secs(2);

/// `QEMU exited, killed by signal 9 (SIGKILL)`, or only `QEMU exited` when its status is not
/// known (a console without a process behind it).
async fn qemu_end(io: &NodeIo) -> String {
    let mut rx = io.console.subscribe();
    let known = tokio::time::timeout(EXIT_STATUS_WAIT, async {
        loop {
            if let Some(how) = io.console.ended() {
                return how;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    })
    .await;
    match known {
        Ok(how) if how.starts_with("exited") => format!("QEMU {how}"),
        Ok(how) => format!("QEMU exited, {how}"),
        Err(_) => "QEMU exited".into(),
    }
}

/// `len` bytes of `path` from `offset`; fewer when the file ends first.
fn read_at(path: &std::path::Path, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match f.read_at(&mut buf[got..], offset + got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// Resolves when any of the futures resolves.
async fn futures_select_any<F: std::future::Future + Unpin>(futs: impl Iterator<Item = F>) {
    let mut v: Vec<F> = futs.collect();
    if v.is_empty() {
        return std::future::pending().await;
    }
    std::future::poll_fn(|cx| {
        for f in v.iter_mut() {
            if std::pin::Pin::new(f).poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// New console lines of any node that show a failure text end the step at once.
/// `limit` stops the scan of one node's console before a given line index, `before` every
/// node's at the first line printed at or after that time.
fn check_fail_patterns(
    nodes: &BTreeMap<String, NodeIo>,
    fail_on: &[FailPattern],
    fail_cursors: &mut BTreeMap<String, usize>,
    limit: Option<(&str, usize)>,
    before: Option<f64>,
) -> Option<String> {
    if fail_on.is_empty() {
        return None;
    }
    for (name, io) in nodes {
        let from = fail_cursors.get(name).copied().unwrap_or(0);
        let mut lines = io.console.lines_from(from);
        if let Some((node, end)) = limit.filter(|(n, _)| *n == name.as_str()) {
            let _ = node;
            lines.truncate(end.saturating_sub(from));
        }
        if let Some(t) = before {
            let end = lines.iter().position(|l| l.at >= t).unwrap_or(lines.len());
            lines.truncate(end);
        }
        fail_cursors.insert(name.clone(), from + lines.len());
        for l in &lines {
            if let Some(p) = fail_on.iter().find(|p| l.text.contains(p.text.as_str())) {
                let who = if nodes.len() > 1 {
                    format!("{name}'s ")
                } else {
                    String::new()
                };
                return Some(format!("{who}console showed {:?}: {}", l.text, p.meaning));
            }
        }
    }
    None
}

/// For `iscsi_logins_all`: `Err` names the first accepted login that does not match, `Ok(None)`
/// means too few so far, `Ok(Some)` describes the logins that all matched.
fn all_logins(action: &Action, events: &[Event], at_least: u32) -> Result<Option<String>, String> {
    let Action::AllLogins {
        initiator,
        target,
        from,
        mac,
        ..
    } = action
    else {
        return Ok(None);
    };
    let probe = Action::IscsiLogin {
        initiator: initiator.clone(),
        target: target.clone(),
        from: *from,
        mac: *mac,
    };
    let mut seen = Vec::new();
    for e in events {
        if let EventKind::IscsiLogin {
            initiator: ei,
            source_ip,
            ..
        } = &e.kind
        {
            if !event_matches(&probe, e) {
                return Err(format!(
                    "the iSCSI login at {:.1}s does not match: {}",
                    e.at,
                    serde_json::to_string(e).unwrap_or_default()
                ));
            }
            seen.push(format!("{ei} from {source_ip} at {:.1}s", e.at));
        }
    }
    if seen.len() >= at_least as usize {
        Ok(Some(format!("{} logins: {}", seen.len(), seen.join("; "))))
    } else {
        Ok(None)
    }
}

fn event_matches(action: &Action, e: &Event) -> bool {
    match (action, &e.kind) {
        (
            Action::DhcpAck {
                mac,
                hostname,
                boot_file,
            },
            EventKind::Dhcp {
                message,
                mac: emac,
                hostname: ehost,
                boot_file: efile,
                ..
            },
        ) => {
            message == "DHCPACK"
                && mac.is_none_or(|m| emac.eq_ignore_ascii_case(&m.to_string()))
                && hostname
                    .as_ref()
                    .is_none_or(|h| ehost.as_deref() == Some(h.as_str()))
                && boot_file
                    .as_ref()
                    .is_none_or(|f| efile.as_deref() == Some(f.as_str()))
        }
        (
            Action::TftpSent { file, mac },
            EventKind::TftpSent {
                file: efile,
                mac: emac,
                ..
            },
        ) => {
            file == efile
                && mac.is_none_or(|m| {
                    emac.as_deref()
                        .is_some_and(|e| e.eq_ignore_ascii_case(&m.to_string()))
                })
        }
        (Action::HttpGet(p), EventKind::HttpRequest { path, status, .. }) => {
            path == p && (200..300).contains(status)
        }
        (
            Action::IscsiLogin {
                initiator,
                target,
                from,
                mac,
            },
            EventKind::IscsiLogin {
                initiator: ei,
                target: et,
                source_ip,
                source_mac,
            },
        ) => {
            initiator
                .as_ref()
                .is_none_or(|i| i.as_str().eq_ignore_ascii_case(ei))
                && target
                    .as_ref()
                    .is_none_or(|t| t.as_str().eq_ignore_ascii_case(et))
                && from.is_none_or(|f| f == *source_ip)
                && mac.is_none_or(|m| {
                    source_mac
                        .as_deref()
                        .is_some_and(|sm| sm.eq_ignore_ascii_case(&m.to_string()))
                })
        }
        (
            Action::HttpStatus {
                path: p,
                status: want,
            },
            EventKind::HttpRequest { path, status, .. },
        ) => path == p && status == want,
        (
            Action::IscsiLoginRefused { initiator, target },
            EventKind::IscsiLoginFailed {
                initiator: ei,
                target: et,
                ..
            },
        ) => {
            initiator
                .as_ref()
                .is_none_or(|i| i.as_str().eq_ignore_ascii_case(ei))
                && target
                    .as_ref()
                    .is_none_or(|t| t.as_str().eq_ignore_ascii_case(et))
        }
        (
            Action::Refused { service, from },
            EventKind::Refused {
                service: es, peer, ..
            },
        ) => es == service.name() && from.is_none_or(|f| f == *peer),
        (Action::ServiceStarted(service), EventKind::Service { service: es, state }) => {
            es == service.name() && state == "started"
        }
        _ => false,
    }
}

/// Did the run do what the scenario expects?
pub fn judge(outcome: &Outcome, expected: Option<&ExpectedFailure>) -> Judgement {
    match (expected, &outcome.verdict) {
        (_, Verdict::Interrupted { step }) => Judgement {
            ok: false,
            message: format!("interrupted during step `{step}`"),
        },
        (
            _,
            Verdict::HarnessPanic {
                step,
                task,
                message,
            },
        ) => Judgement {
            ok: false,
            message: format!(
                "the harness itself failed during step `{step}`: task `{task}` panicked: {message}"
            ),
        },
        (None, Verdict::Passed) => Judgement {
            ok: true,
            message: "every step was met".into(),
        },
        (None, Verdict::Failed { step, reason, .. }) => Judgement {
            ok: false,
            message: format!("failed at step `{step}`: {reason}"),
        },
        (Some(x), Verdict::Passed) => Judgement {
            ok: false,
            message: format!(
                "expected to fail at step `{}`, but every step was met",
                x.step
            ),
        },
        (Some(x), Verdict::Failed { step, reason, .. }) => {
            if *step != x.step {
                Judgement {
                    ok: false,
                    message: format!(
                        "expected to fail at step `{}`, but failed at `{step}`: {reason}",
                        x.step
                    ),
                }
            } else if let Some(want) = x.reason.as_ref().filter(|w| !reason.contains(w.as_str())) {
                Judgement {
                    ok: false,
                    message: format!("failed at step `{step}` as expected, but for another reason: {reason} (expected it to mention {want:?})"),
                }
            } else {
                Judgement {
                    ok: true,
                    message: format!("failed at step `{step}` as expected: {reason}"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::RunClock;
    use crate::scenario::default_fail_patterns;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    fn scenario(steps: Vec<(&str, Action, u64)>) -> Scenario {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../scenarios/debian-ibft-e1000.yaml");
        let mut s = crate::scenario::load(&path).unwrap();
        s.steps = steps
            .into_iter()
            .map(|(name, action, ms)| Step {
                name: name.into(),
                node: "node01".into(),
                within: Duration::from_millis(ms),
                action,
            })
            .collect();
        s.fail_on = default_fail_patterns();
        s
    }

    struct Rig {
        nodes: BTreeMap<String, NodeIo>,
        writer: tokio::io::DuplexStream,
        typed: mpsc::Receiver<Vec<u8>>,
        events: EventLog,
        dir: std::path::PathBuf,
    }

    impl Drop for Rig {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn rig(name: &str) -> Rig {
        let dir = std::env::temp_dir().join(format!("nbh-expect-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let clock = RunClock::start();
        let (writer, reader) = tokio::io::duplex(4096);
        let (console, _t) =
            Console::spawn(reader, &dir.join("raw"), &dir.join("txt"), clock).unwrap();
        let (tx, typed) = mpsc::channel(4);
        let mut nodes = BTreeMap::new();
        nodes.insert("node01".to_string(), NodeIo { console, input: tx });
        Rig {
            nodes,
            writer,
            typed,
            events: EventLog::new(clock, None).unwrap(),
            dir,
        }
    }

    fn no_cancel() -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        std::mem::forget(tx);
        rx
    }

    #[tokio::test]
    async fn ordered_console_steps_consume_lines() {
        let mut r = rig("order");
        let s = scenario(vec![
            ("a", Action::Console("SeaBIOS".into()), 2000),
            ("b", Action::Console("reboot".into()), 2000),
            ("c", Action::Console("SeaBIOS".into()), 300),
        ]);
        r.writer
            .write_all(b"SeaBIOS 1\r\nreboot: Restarting system\r\n")
            .await
            .unwrap();
        let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
        // The first SeaBIOS line was consumed by step a: step c needs a new one.
        assert_eq!(
            out.verdict,
            Verdict::Failed {
                step: "c".into(),
                reason: "waited 0s for a console line containing \"SeaBIOS\"".into(),
                waited: out.steps[2].waited,
                within: 0.3
            }
        );
        assert_eq!(out.steps[0].status, StepStatus::Met);
        assert_eq!(out.steps[1].detail, "reboot: Restarting system");
        assert!(out.steps[2].waited >= 0.29, "{}", out.steps[2].waited);
        assert_eq!(out.console_tails["node01"].len(), 2);
    }

    #[tokio::test]
    async fn lines_arriving_later_wake_the_step() {
        let mut r = rig("later");
        let s = scenario(vec![(
            "re",
            Action::ConsoleRegex(regex::Regex::new(r"Connection\d+:0 .*operational").unwrap()),
            3000,
        )]);
        let mut w = std::mem::replace(&mut r.writer, tokio::io::duplex(1).0);
        let feeder = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            w.write_all(
                b"noise\r\niscsistart: Connection1:0 to [target: x] is operational now\r\n",
            )
            .await
            .unwrap();
            w
        });
        let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
        assert!(out.verdict.passed(), "{:?}", out.verdict);
        drop(feeder.await.unwrap());
    }

    #[tokio::test]
    async fn fail_pattern_ends_the_step_early() {
        let mut r = rig("fail");
        let s = scenario(vec![(
            "root",
            Action::Console("netboot-harness: root=".into()),
            5000,
        )]);
        r.writer
            .write_all(b"Begin: Running /scripts/local-block ... done.\r\nALERT!  UUID=1234 does not exist.  Dropping to a shell!\r\n")
            .await
            .unwrap();
        let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
        match &out.verdict {
            Verdict::Failed {
                step,
                reason,
                waited,
                ..
            } => {
                assert_eq!(step, "root");
                assert!(
                    reason.contains("ALERT!") && reason.contains("root device"),
                    "{reason}"
                );
                assert!(*waited < 2.0, "waited {waited}");
            }
            v => panic!("{v:?}"),
        }
    }

    #[tokio::test]
    async fn failure_text_after_the_awaited_line_does_not_count_for_that_step() {
        let mut r = rig("after");
        let s = scenario(vec![
            (
                "sanboot",
                Action::Console("Booting from SAN device 0x80".into()),
                2000,
            ),
            ("kernel", Action::Console("Linux version".into()), 2000),
        ]);
        r.writer
            .write_all(b"Booting from SAN device 0x80\r\nBoot from SAN device 0x80 failed: x\r\n")
            .await
            .unwrap();
        let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
        assert_eq!(out.steps[0].status, StepStatus::Met);
        match &out.verdict {
            Verdict::Failed { step, reason, .. } => {
                assert_eq!(step, "kernel");
                assert!(
                    reason.contains("Boot from SAN device 0x80 failed"),
                    "{reason}"
                );
            }
            v => panic!("{v:?}"),
        }
    }

    #[tokio::test]
    async fn failure_text_after_the_awaited_record_does_not_count_for_that_step() {
        let mut r = rig("after-record");
        let s = scenario(vec![
            (
                "boot script fetched",
                Action::HttpGet("/boot.ipxe".into()),
                2000,
            ),
            (
                "sanboot",
                Action::Console("Booting from SAN device 0x80".into()),
                2000,
            ),
        ]);
        r.events.push(EventKind::HttpRequest {
            method: "GET".into(),
            path: "/boot.ipxe".into(),
            status: 200,
            peer: "10.77.0.128".parse().unwrap(),
            fault: None,
        });
        // The failure is printed later, and is already there when the first step looks.
        tokio::time::sleep(Duration::from_millis(20)).await;
        r.writer
            .write_all(b"Could not open SAN device: No such device\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
        assert_eq!(out.steps[0].status, StepStatus::Met, "{:?}", out.verdict);
        match &out.verdict {
            Verdict::Failed { step, reason, .. } => {
                assert_eq!(step, "sanboot");
                assert!(reason.contains("Could not open SAN device"), "{reason}");
            }
            v => panic!("{v:?}"),
        }
    }

    #[tokio::test]
    async fn service_steps_consume_one_record_each() {
        let r = rig("svc");
        let login = || Action::IscsiLogin {
            initiator: Some("iqn.2026-11.lab:node01".parse().unwrap()),
            target: None,
            from: None,
            mac: None,
        };
        let s = scenario(vec![("l1", login(), 500), ("l2", login(), 300)]);
        r.events.push(EventKind::IscsiLogin {
            initiator: "IQN.2026-11.lab:node01".into(),
            target: "iqn.2026-11.lab:node01-root".into(),
            source_ip: "10.77.0.128".parse().unwrap(),
            source_mac: None,
        });
        let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
        assert_eq!(out.steps[0].status, StepStatus::Met);
        assert_eq!(out.steps[1].status, StepStatus::Failed);
        assert!(
            matches!(&out.verdict, Verdict::Failed { reason, .. } if reason.contains("an iSCSI login from iqn.2026-11.lab:node01")),
            "{:?}",
            out.verdict
        );
    }

    #[tokio::test]
    async fn all_logins_waits_for_enough_and_fails_on_a_stranger() {
        let r = rig("all");
        let all = || Action::AllLogins {
            initiator: Some("iqn.2026-11.lab:node01".parse().unwrap()),
            target: None,
            from: Some("10.77.0.41".parse().unwrap()),
            mac: None,
            at_least: 2,
        };
        let login = |ip: &str| EventKind::IscsiLogin {
            initiator: "iqn.2026-11.lab:node01".into(),
            target: "iqn.2026-11.lab:node01-root".into(),
            source_ip: ip.parse().unwrap(),
            source_mac: Some("52:54:00:aa:00:41".into()),
        };
        r.events.push(login("10.77.0.41"));
        // One login is too few: the step waits, then times out.
        let s = scenario(vec![("all", all(), 300)]);
        let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
        assert_eq!(out.steps[0].status, StepStatus::Failed);
        assert!(
            matches!(&out.verdict, Verdict::Failed { reason, .. } if reason.contains("waited")),
            "{:?}",
            out.verdict
        );
        r.events.push(login("10.77.0.41"));
        let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
        assert_eq!(out.steps[0].status, StepStatus::Met, "{:?}", out.verdict);
        assert!(
            out.steps[0].detail.starts_with("2 logins"),
            "{}",
            out.steps[0].detail
        );
        // A login from another address fails the step at once, naming that login.
        r.events.push(login("10.77.0.130"));
        let s = scenario(vec![("all", all(), 5000)]);
        let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
        assert!(out.steps[0].waited < 1.0, "{}", out.steps[0].waited);
        assert!(
            matches!(&out.verdict, Verdict::Failed { reason, .. } if reason.contains("10.77.0.130")),
            "{:?}",
            out.verdict
        );
    }

    #[tokio::test]
    async fn chain_steps_tell_the_two_acks_apart_by_boot_file() {
        let r = rig("chain");
        let mac: crate::scenario::MacAddr = "52:54:00:aa:00:41".parse().unwrap();
        let ack = |boot_file: Option<&str>| Action::DhcpAck {
            mac: Some(mac),
            hostname: None,
            boot_file: boot_file.map(String::from),
        };
        let s = scenario(vec![
            ("rom", ack(Some("undionly.kpxe")), 500),
            (
                "tftp",
                Action::TftpSent {
                    file: "undionly.kpxe".into(),
                    mac: Some(mac),
                },
                500,
            ),
            ("chained", ack(Some("http://10.77.0.1/boot.ipxe")), 300),
        ]);
        let dhcp_ack = |file: &str| EventKind::Dhcp {
            message: "DHCPACK".into(),
            mac: "52:54:00:aa:00:41".into(),
            ip: Some("10.77.0.227".parse().unwrap()),
            hostname: None,
            boot_file: Some(file.into()),
        };
        r.events.push(dhcp_ack("undionly.kpxe"));
        r.events.push(EventKind::TftpSent {
            file: "undionly.kpxe".into(),
            peer: "10.77.0.227".parse().unwrap(),
            mac: Some("52:54:00:aa:00:41".into()),
        });
        // A chain loop: the second stage is handed undionly.kpxe again.
        r.events.push(dhcp_ack("undionly.kpxe"));
        let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
        assert_eq!(out.steps[0].status, StepStatus::Met);
        assert_eq!(out.steps[1].status, StepStatus::Met);
        assert_eq!(
            out.steps[2].status,
            StepStatus::Failed,
            "{:?}",
            out.steps[2]
        );
        assert!(out.steps[2]
            .detail
            .contains("with boot file http://10.77.0.1/boot.ipxe"));
    }

    #[tokio::test]
    async fn dhcp_and_http_steps_match_their_records() {
        let r = rig("dhcp");
        let s = scenario(vec![
            (
                "dhcp",
                Action::DhcpAck {
                    mac: Some("52:54:00:aa:00:01".parse().unwrap()),
                    hostname: Some("node01".into()),
                    boot_file: None,
                },
                500,
            ),
            ("http", Action::HttpGet("/boot.ipxe".into()), 500),
        ]);
        r.events.push(EventKind::HttpRequest {
            method: "GET".into(),
            path: "/boot.ipxe".into(),
            status: 404,
            peer: "10.77.0.128".parse().unwrap(),
            fault: None,
        });
        r.events.push(EventKind::Dhcp {
            message: "DHCPOFFER".into(),
            mac: "52:54:00:aa:00:01".into(),
            ip: None,
            hostname: Some("node01".into()),
            boot_file: None,
        });
        r.events.push(EventKind::Dhcp {
            message: "DHCPACK".into(),
            mac: "52:54:00:aa:00:01".into(),
            ip: Some("10.77.0.128".parse().unwrap()),
            hostname: Some("node01".into()),
            boot_file: None,
        });
        let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
        assert_eq!(out.steps[0].status, StepStatus::Met);
        // A 404 is not a fetched boot script.
        assert_eq!(out.steps[1].status, StepStatus::Failed);
    }

    #[tokio::test]
    async fn send_types_the_line_with_cr() {
        let mut r = rig("send");
        let s = scenario(vec![(
            "reboot",
            Action::Send("systemctl reboot".into()),
            500,
        )]);
        let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
        assert!(out.verdict.passed());
        assert_eq!(r.typed.recv().await.unwrap(), b"systemctl reboot\r");
    }

    /// Plays the guest's shell: echoes what is typed and answers with `reply`.
    fn shell_guest(r: &mut Rig, reply: &'static str) -> tokio::task::JoinHandle<String> {
        let mut w = std::mem::replace(&mut r.writer, tokio::io::duplex(1).0);
        let (_, dummy) = mpsc::channel(1);
        let mut typed = std::mem::replace(&mut r.typed, dummy);
        tokio::spawn(async move {
            let line = typed.recv().await.unwrap();
            let text = String::from_utf8(line).unwrap();
            let echo = format!("root@netboot-guest:~# {}\r\n", text.trim_end());
            w.write_all(echo.as_bytes()).await.unwrap();
            w.write_all(reply.as_bytes()).await.unwrap();
            // The guest stays up: keep the console open until the test is done.
            tokio::time::sleep(Duration::from_secs(5)).await;
            text
        })
    }

    #[tokio::test]
    async fn shell_waits_for_the_status_of_its_command() {
        let mut r = rig("shell-ok");
        let s = scenario(vec![("probe", Action::Shell("sync".into()), 2000)]);
        let guest = shell_guest(&mut r, "netboot-harness: step 1 exit 0\r\n");
        let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
        assert!(out.verdict.passed(), "{:?}", out.verdict);
        assert_eq!(out.steps[0].detail, "\"sync\" finished with status 0");
        guest.abort();
    }

    #[tokio::test]
    async fn the_typed_line_alone_does_not_meet_a_shell_step() {
        let (typed, re) = shell_line(0, "sync");
        assert_eq!(typed, "sync; echo \"netboot-harness: step 1 exit $?\"");
        assert!(!re.is_match(&format!("root@netboot-guest:~# {typed}")));
        assert!(re.is_match("netboot-harness: step 1 exit 0"));
        assert!(!re.is_match("netboot-harness: step 11 exit 0"));
    }

    #[tokio::test]
    async fn a_failed_shell_command_names_its_status_and_the_root_disk() {
        let mut r = rig("shell-fail");
        let s = scenario(vec![(
            "probe",
            Action::Shell("dd if=/etc/os-release".into()),
            2000,
        )]);
        let guest = shell_guest(
            &mut r,
            "[   80.1] Buffer I/O error on dev sda1, logical block 9, async page read\r\n\
             dd: error reading '/etc/os-release': Input/output error\r\n\
             netboot-harness: step 1 exit 1\r\n",
        );
        let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
        match &out.verdict {
            Verdict::Failed { reason, waited, .. } => {
                assert!(reason.contains("finished with status 1"), "{reason}");
                assert!(reason.contains("Input/output error"), "{reason}");
                assert!(reason.contains("Buffer I/O error on dev sda1"), "{reason}");
                assert!(*waited < 1.5, "{waited}");
            }
            v => panic!("{v:?}"),
        }
        guest.abort();
    }

    #[tokio::test]
    async fn a_silent_shell_is_a_verdict_with_its_cause() {
        let mut r = rig("shell-silent");
        let s = scenario(vec![("probe", Action::Shell("sync".into()), 400)]);
        let guest = shell_guest(
            &mut r,
            "[   90.2]  connection1:0: detected conn error (1022)\r\n",
        );
        let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
        match &out.verdict {
            Verdict::Failed { reason, .. } => {
                assert!(
                    reason.starts_with("the guest's shell stopped answering: \"sync\""),
                    "{reason}"
                );
                assert!(reason.contains("detected conn error (1022)"), "{reason}");
            }
            v => panic!("{v:?}"),
        }
        guest.abort();
    }

    struct FakeLab {
        disk: std::path::PathBuf,
        restarted: std::sync::Mutex<Vec<Service>>,
    }

    impl LabControl for FakeLab {
        fn restart(
            &self,
            service: Service,
        ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>> {
            Box::pin(async move {
                self.restarted.lock().unwrap().push(service);
                Ok("restarted".into())
            })
        }
        fn lun_file(&self) -> Option<PathBuf> {
            Some(self.disk.clone())
        }
    }

    #[tokio::test]
    async fn restart_and_lun_bytes_act_on_the_lab() {
        let r = rig("lab");
        let disk = r.dir.join("disk.img");
        std::fs::write(&disk, vec![0u8; 4096]).unwrap();
        let lab = FakeLab {
            disk: disk.clone(),
            restarted: Default::default(),
        };
        let s = scenario(vec![
            ("restart", Action::Restart(Service::Iscsi), 1000),
            (
                "marker",
                Action::LunBytes {
                    offset: 1000,
                    text: "written".into(),
                },
                3000,
            ),
        ]);
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
            f.write_at(b"written", 1000).unwrap();
        });
        let out =
            run_steps_controlled(&s, &r.nodes, &r.events, 1.0, no_cancel(), &NoObserver, &lab)
                .await;
        writer.await.unwrap();
        assert!(out.verdict.passed(), "{:?}", out.verdict);
        assert_eq!(*lab.restarted.lock().unwrap(), vec![Service::Iscsi]);
        assert!(out.steps[1].waited >= 0.2, "{}", out.steps[1].waited);

        // Without a lab to act on, both say so instead of waiting.
        let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
        assert!(
            matches!(&out.verdict, Verdict::Failed { step, reason, .. }
                if step == "restart" && reason.contains("cannot restart iscsi")),
            "{:?}",
            out.verdict
        );
    }

    #[tokio::test]
    async fn qemu_exit_is_met_when_the_console_closes() {
        let mut r = rig("exit");
        let s = scenario(vec![
            ("down", Action::Console("reboot: Power down".into()), 2000),
            ("gone", Action::QemuExit, 2000),
        ]);
        let mut w = std::mem::replace(&mut r.writer, tokio::io::duplex(1).0);
        tokio::spawn(async move {
            w.write_all(b"reboot: Power down\r\n").await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            drop(w);
        });
        let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
        assert!(out.verdict.passed(), "{:?}", out.verdict);
        assert!(out.steps[1].detail.contains("QEMU exited"));
    }

    #[tokio::test]
    async fn console_eof_fails_the_waiting_step() {
        let r = rig("eof");
        let Rig {
            nodes,
            writer,
            events,
            ..
        } = &r;
        let s = scenario(vec![("x", Action::Console("never".into()), 5000)]);
        let _ = writer;
        let nodes_ref = nodes;
        // Closing the write side ends the console, as QEMU exiting does.
        let (w2, r2) = tokio::io::duplex(16);
        drop(w2);
        let (console, t) =
            Console::spawn(r2, &r.dir.join("raw2"), &r.dir.join("txt2"), events.clock()).unwrap();
        t.await.unwrap();
        let mut nodes2 = BTreeMap::new();
        nodes2.insert(
            "node01".to_string(),
            NodeIo {
                console,
                input: nodes_ref["node01"].input.clone(),
            },
        );
        let out = run_steps(&s, &nodes2, events, 1.0, no_cancel()).await;
        assert!(
            matches!(&out.verdict, Verdict::Failed { reason, .. } if reason.contains("QEMU exited")),
            "{:?}",
            out.verdict
        );
    }

    #[tokio::test]
    async fn a_service_step_fails_at_once_with_qemus_exit_status() {
        let mut r = rig("qemu-killed");
        let s = scenario(vec![(
            "DHCP lease",
            Action::DhcpAck {
                mac: None,
                hostname: None,
                boot_file: None,
            },
            60_000,
        )]);
        // What the run's QEMU watcher does when QEMU is killed: the console ends, then the
        // status is noted.
        drop(std::mem::replace(&mut r.writer, tokio::io::duplex(1).0));
        let console = r.nodes["node01"].console.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            console.note_end("killed by signal 9 (SIGKILL)");
        });
        let t = std::time::Instant::now();
        let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert_eq!(
            out.steps[0].detail,
            "the guest stopped (QEMU exited, killed by signal 9 (SIGKILL)) while waiting for a DHCP ACK"
        );
    }

    /// A lab that breaks after `after`.
    struct Breaks {
        after: Duration,
        fault: LabFault,
    }

    impl LabControl for Breaks {
        fn restart(
            &self,
            _: Service,
        ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>> {
            Box::pin(async { Err("no".into()) })
        }
        fn lun_file(&self) -> Option<PathBuf> {
            None
        }
        fn broken(&self) -> Pin<Box<dyn Future<Output = LabFault> + Send + '_>> {
            Box::pin(async move {
                tokio::time::sleep(self.after).await;
                self.fault.clone()
            })
        }
    }

    #[tokio::test]
    async fn a_broken_lab_ends_the_step_it_is_in() {
        let mut r = rig("broken");
        r.writer.write_all(b"SeaBIOS\r\n").await.unwrap();
        let s = scenario(vec![
            ("firmware", Action::Console("SeaBIOS".into()), 5000),
            ("DHCP", Action::Console("never".into()), 60_000),
            ("later", Action::Console("never".into()), 60_000),
        ]);
        let s = &s;
        let run = |fault| {
            let control = Breaks {
                after: Duration::from_millis(200),
                fault,
            };
            let (nodes, events) = (&r.nodes, &r.events);
            async move {
                run_steps_controlled(s, nodes, events, 1.0, no_cancel(), &NoObserver, &control)
                    .await
            }
        };
        let died = run(LabFault::Died(
            "service died: iscsi: tgtd killed by signal 9".into(),
        ))
        .await;
        assert!(
            matches!(&died.verdict, Verdict::Failed { step, reason, .. }
                if step == "DHCP" && reason == "service died: iscsi: tgtd killed by signal 9"),
            "{:?}",
            died.verdict
        );
        assert_eq!(died.steps[2].status, StepStatus::Skipped);
        let panicked = run(LabFault::Panic(crate::tasks::HarnessPanic {
            task: "console:node01".into(),
            message: "boom".into(),
        }))
        .await;
        assert_eq!(
            panicked.verdict,
            Verdict::HarnessPanic {
                step: "DHCP".into(),
                task: "console:node01".into(),
                message: "boom".into()
            }
        );
        let j = judge(&panicked, None);
        assert!(!j.ok);
        assert!(
            j.message.contains("task `console:node01` panicked: boom"),
            "{}",
            j.message
        );
    }

    #[tokio::test]
    async fn cancel_interrupts_and_skips_the_rest() {
        let r = rig("cancel");
        let s = scenario(vec![
            ("a", Action::Console("never".into()), 5000),
            ("b", Action::Console("x".into()), 5000),
        ]);
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = tx.send(true);
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        let out = run_steps(&s, &r.nodes, &r.events, 1.0, rx).await;
        assert_eq!(out.verdict, Verdict::Interrupted { step: "a".into() });
        assert_eq!(out.steps[1].status, StepStatus::Skipped);
        assert!(!judge(&out, None).ok);
    }

    #[test]
    fn judge_expected_failures() {
        let failed = |step: &str, reason: &str| Outcome {
            verdict: Verdict::Failed {
                step: step.into(),
                reason: reason.into(),
                waited: 1.0,
                within: 2.0,
            },
            steps: vec![],
            console_tails: BTreeMap::new(),
        };
        let want = ExpectedFailure {
            step: "sanboot".into(),
            reason: Some("Could not open SAN device".into()),
        };
        assert!(
            judge(
                &failed("sanboot", "console showed \"Could not open SAN device: x\""),
                Some(&want)
            )
            .ok
        );
        let j = judge(&failed("dhcp", "waited"), Some(&want));
        assert!(
            !j.ok && j.message.contains("but failed at `dhcp`"),
            "{}",
            j.message
        );
        let j = judge(&failed("sanboot", "waited 60s"), Some(&want));
        assert!(
            !j.ok && j.message.contains("another reason"),
            "{}",
            j.message
        );
        let passed = Outcome {
            verdict: Verdict::Passed,
            steps: vec![],
            console_tails: BTreeMap::new(),
        };
        assert!(!judge(&passed, Some(&want)).ok);
        assert!(judge(&passed, None).ok);
    }
}
