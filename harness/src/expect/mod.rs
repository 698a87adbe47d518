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
use crate::scenario::{Action, Cause, FailPattern, Scenario, Service, SessionType, Step};

mod oracle;
mod verdict;
pub use verdict::{judge, Evidence, Fail, Judgement, Outcome, Verdict};

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
    /// Met only thanks to the stretch of a loaded machine: after the `within` the scenario
    /// wrote.
    pub slow: bool,
    pub phase: Option<crate::scenario::Phase>,
    /// The matched line or record, or why the step failed.
    pub detail: String,
}

pub const TAIL_LINES: usize = 50;

enum Wait {
    Met { at: f64, detail: String },
    Failed(Fail),
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

/// How long before the step it follows a service record may be and still meet a step. The
/// guest reports much of what it does on its console only after a service has recorded it:
/// iPXE prints `Booting from SAN device` after its login, iscsistart prints `operational now`
/// after the target answered. Both happen within milliseconds; two seconds leave room for a
/// loaded machine and still keep out a record of an earlier phase (iPXE's login is seconds
/// before the initramfs's). A step that needs another anchor names it with `after:`.
pub const RECORD_LEAD: f64 = 2.0;

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
    // When each step was met, by its evidence's own time: records before it cannot meet a
    // later step.
    let mut met: BTreeMap<String, f64> = BTreeMap::new();
    let mut last_met = 0.0_f64;
    let typed = std::sync::Mutex::new(BTreeMap::new());

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
                slow: false,
                phase: step.phase,
                detail: String::new(),
            });
            continue;
        }
        let span = tracing::info_span!("step", name = %step.name);
        let _g = span.enter();
        let within = if step.stretch {
            step.within.mul_f64(timeout_scale)
        } else {
            step.within
        };
        let started = clock.now();
        let wait = match nodes.get(&step.node) {
            None => Wait::Failed(Fail::action(format!(
                "node `{}` has no console (it did not start)",
                step.node
            ))),
            Some(io) => {
                let fail_from: BTreeMap<String, usize> = cursors.clone();
                let anchor = match &step.after {
                    Some(name) => met.get(name).copied().unwrap_or(0.0),
                    None => last_met,
                };
                let cx = StepCx {
                    index,
                    nodes,
                    fail_from: &fail_from,
                    fail_on: &scenario.fail_on,
                    events,
                    control,
                    records_from: anchor - RECORD_LEAD,
                    scenario,
                    typed: &typed,
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
                            &step.node,
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
                met.insert(step.name.clone(), at);
                last_met = at;
                (StepStatus::Met, Some(at), detail)
            }
            Wait::Failed(fail) => {
                let reason = fail.reason.clone();
                verdict = Verdict::failed(&step.name, fail, waited, within_s);
                (StepStatus::Failed, None, reason)
            }
            // A dead service fails the step as any other failure does; its reason names it.
            Wait::Broken(LabFault::Died(reason)) => {
                let fail = Fail::new(
                    Cause::ServiceDied,
                    reason.clone(),
                    vec![Evidence::Exit {
                        process: "service".into(),
                        status: reason.clone(),
                    }],
                );
                verdict = Verdict::failed(&step.name, fail, waited, within_s);
                (StepStatus::Failed, None, reason)
            }
            Wait::TimedOut => {
                let reason = format!("waited {within_s:.0}s for {}", describe(&step.action));
                let fail = Fail::new(Cause::Timeout, reason.clone(), Vec::new());
                verdict = Verdict::failed(&step.name, fail, waited, within_s);
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
        let slow = status == StepStatus::Met && waited > step.within.as_secs_f64();
        let result = StepResult {
            name: step.name.clone(),
            node: step.node.clone(),
            status,
            started_at: started,
            met_at,
            waited,
            within: within_s,
            slow,
            phase: step.phase,
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
        Action::IscsiLoginRefused {
            initiator,
            target,
            status,
        } => {
            let mut s = "a refused or failed iSCSI login".to_string();
            if let Some(i) = initiator {
                s.push_str(&format!(" from {i}"));
            }
            if let Some(t) = target {
                s.push_str(&format!(" to {t}"));
            }
            if let Some(st) = status {
                s.push_str(&format!(" answered with status {}", st.name()));
            }
            s
        }
        Action::IscsiLogin {
            initiator,
            target,
            from,
            mac,
            session,
        } => {
            let mut s = match session {
                SessionType::Normal => "an iSCSI login (normal session)".to_string(),
                SessionType::Discovery => "an iSCSI discovery login".to_string(),
            };
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
        Action::IbftMatchesLab => {
            "the guest's report of its iBFT, to compare it with what the lab served".to_string()
        }
        Action::RootOnSession => {
            "the guest's report of its root disk, to check it is on the iSCSI session".to_string()
        }
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
fn shell_silent(cmd: &str, typed_at: f64, within: f64, node: &str, since: &[ConsoleLine]) -> Fail {
    let loss = root_loss(since);
    let why = loss
        .first()
        .map(|first| root_loss_words(&loss, first))
        .unwrap_or_else(|| "; nothing on the console since says why".into());
    Fail::new(
        Cause::ShellSilent,
        format!(
            "the guest's shell stopped answering: {cmd:?} (typed at {typed_at:.1}s) did not finish within {within:.0}s{why}"
        ),
        loss.iter().map(|l| Evidence::console(node, l)).collect(),
    )
}

/// The verdict for a shell command that failed: its status, its last words and what the kernel
/// said about the root disk meanwhile.
fn shell_failed(cmd: &str, status: &str, node: &str, before: &[ConsoleLine]) -> Fail {
    // The echo of the typed line carries the status tag with `$?`; the output does not.
    let last = before
        .iter()
        .rev()
        .find(|l| !l.text.contains("$?") && !l.text.trim().is_empty());
    let said = last
        .map(|l| format!("; its last line: {:?}", l.text.trim()))
        .unwrap_or_default();
    let loss = root_loss(before);
    let why = loss
        .first()
        .map(|first| root_loss_words(&loss, first))
        .unwrap_or_default();
    let mut evidence: Vec<Evidence> = last.iter().map(|l| Evidence::console(node, l)).collect();
    evidence.extend(loss.iter().map(|l| Evidence::console(node, l)));
    Fail::new(
        Cause::ShellStatus,
        format!("{cmd:?} finished with status {status}{said}{why}"),
        evidence,
    )
}

/// Most lines about the root disk kept as evidence: the kernel repeats them for every I/O.
const MAX_LOSS_EVIDENCE: usize = 10;

/// The console lines among `lines` that say the root disk is in trouble.
fn root_loss(lines: &[ConsoleLine]) -> Vec<ConsoleLine> {
    lines
        .iter()
        .filter(|l| ROOT_LOSS_TEXTS.iter().any(|t| l.text.contains(t)))
        .take(MAX_LOSS_EVIDENCE)
        .cloned()
        .collect()
}

fn root_loss_words(loss: &[ConsoleLine], first: &ConsoleLine) -> String {
    format!(
        "; the console shows why, {} line(s) about the root disk since, first at {:.1}s: {:?}",
        loss.len(),
        first.at,
        first.text.trim()
    )
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
    /// Run time before which a service record cannot meet this step.
    records_from: f64,
    scenario: &'a Scenario,
    /// Lines the harness typed on each node's console: their echo is the harness's own text,
    /// never evidence.
    typed: &'a std::sync::Mutex<BTreeMap<String, Vec<String>>>,
}

impl StepCx<'_> {
    fn note_typed(&self, node: &str, text: &str) {
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        let mut typed = self.typed.lock().unwrap_or_else(|p| p.into_inner());
        typed
            .entry(node.to_string())
            .or_default()
            .push(text.to_string());
    }

    /// The line is the terminal's echo of something the harness typed on that node.
    fn is_echo(&self, node: &str, line: &str) -> bool {
        let typed = self.typed.lock().unwrap_or_else(|p| p.into_inner());
        typed
            .get(node)
            .is_some_and(|t| t.iter().any(|t| line.contains(t.as_str())))
    }
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
        events,
        ..
    } = *cx;
    let shell_re = match &step.action {
        Action::Send(text) => {
            cx.note_typed(&step.node, text);
            return match type_line(io, text).await {
                Ok(()) => Wait::Met {
                    at: events.clock().now(),
                    detail: format!("typed {text:?}"),
                },
                Err(e) => Wait::Failed(Fail::action(e)),
            };
        }
        Action::Restart(service) => {
            return match cx.control.restart(*service).await {
                Ok(detail) => Wait::Met {
                    at: events.clock().now(),
                    detail,
                },
                Err(e) => Wait::Failed(Fail::action(format!("restarting {}: {e}", service.name()))),
            };
        }
        Action::Shell(cmd) => {
            let (typed, re) = shell_line(cx.index, cmd);
            cx.note_typed(&step.node, &typed);
            if let Err(e) = type_line(io, &typed).await {
                return Wait::Failed(Fail::action(e));
            }
            Some(re)
        }
        _ => None,
    };
    let lun_file = match &step.action {
        Action::LunBytes { .. } => match cx.control.lun_file() {
            Some(p) => Some(p),
            None => return Wait::Failed(Fail::action("this run has no LUN file to read")),
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
                let hit = lines.iter().position(|l| {
                    let matched = match &step.action {
                        Action::Console(t) => l.text.contains(t.as_str()),
                        Action::ConsoleRegex(r) => r.is_match(&l.text),
                        _ => false,
                    };
                    matched && !cx.is_echo(&step.node, &l.text)
                });
                // A failure text only counts if it came before the line we were waiting for.
                let limit = hit.map(|i| (step.node.as_str(), cursor + i));
                if let Some(fail) = check_fail_patterns(cx, &mut fail_cursors, limit, None) {
                    return Wait::Failed(fail);
                }
                if let Some(i) = hit {
                    cursors.insert(step.node.clone(), cursor + i + 1);
                    return Wait::Met {
                        at: lines[i].at,
                        detail: lines[i].text.clone(),
                    };
                }
                if io.console.closed() {
                    return guest_gone(io, &step.node, &step.action).await;
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
                if let Some(fail) = check_fail_patterns(cx, &mut fail_cursors, limit, None) {
                    return Wait::Failed(fail);
                }
                if let Some((i, status)) = hit {
                    cursors.insert(step.node.clone(), cursor + i + 1);
                    return if status == "0" {
                        Wait::Met {
                            at: lines[i].at,
                            detail: format!("{cmd:?} finished with status 0"),
                        }
                    } else {
                        Wait::Failed(shell_failed(cmd, &status, &step.node, &lines[..i]))
                    };
                }
                if io.console.closed() {
                    let end = qemu_end(io).await;
                    return Wait::Failed(Fail::new(
                        Cause::QemuExited,
                        format!(
                            "the guest stopped ({}) while its shell ran {cmd:?}",
                            end.words
                        ),
                        end.evidence(&step.node),
                    ));
                }
            }
            Action::IbftMatchesLab | Action::RootOnSession => {
                // Reads the marker's report without consuming it: the steps that wait for its
                // lines one by one still find them.
                let cursor = cursors.get(&step.node).copied().unwrap_or(0);
                let lines = io.console.lines_from(cursor);
                let done = lines
                    .iter()
                    .position(|l| l.text.contains(oracle::MARKER_DONE));
                let limit = done.map(|i| (step.node.as_str(), cursor + i));
                if let Some(fail) = check_fail_patterns(cx, &mut fail_cursors, limit, None) {
                    return Wait::Failed(fail);
                }
                if let Some(i) = done {
                    return check_report(step, cx, &lines[..=i]);
                }
            }
            Action::QemuExit => {
                if let Some(fail) = check_fail_patterns(cx, &mut fail_cursors, None, None) {
                    return Wait::Failed(fail);
                }
                if io.console.closed() {
                    return powered_off(io, &step.node, events.clock().now()).await;
                }
            }
            Action::LunBytes { offset, text } => {
                if let Some(fail) = check_fail_patterns(cx, &mut fail_cursors, None, None) {
                    return Wait::Failed(fail);
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
                            return Wait::Failed(Fail::action(format!(
                                "reading {} at byte {offset}: {e}",
                                path.display()
                            )))
                        }
                    }
                }
            }
            Action::AllLogins { at_least, .. } => {
                if let Some(fail) = check_fail_patterns(cx, &mut fail_cursors, None, None) {
                    return Wait::Failed(fail);
                }
                match all_logins(&step.action, &events.snapshot(), *at_least) {
                    Ok(Some(detail)) => {
                        return Wait::Met {
                            at: events.clock().now(),
                            detail,
                        }
                    }
                    Ok(None) => {}
                    Err(fail) => return Wait::Failed(fail),
                }
            }
            action => {
                let all = events.snapshot();
                // Only records from after the step this one follows: an earlier record belongs
                // to an earlier phase (iPXE's login is not the initramfs's).
                let found = all.iter().enumerate().find(|(i, e)| {
                    !consumed.contains(i) && e.at >= cx.records_from && event_matches(action, e)
                });
                // As for console steps: a failure text only counts if it came before the record
                // we were waiting for. Both can be there by the time this step looks (iPXE
                // fetches the script and fails its sanboot within milliseconds); the record
                // came first, so the failure belongs to a later step (seen in the soak test).
                let before = found.map(|(_, e)| e.at);
                if let Some(fail) = check_fail_patterns(cx, &mut fail_cursors, None, before) {
                    return Wait::Failed(fail);
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
            return guest_gone(io, &step.node, &step.action).await;
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

/// Compares the marker's report with what the lab served.
fn check_report(step: &Step, cx: &StepCx<'_>, lines: &[ConsoleLine]) -> Wait {
    let Some(node) = cx.scenario.nodes.iter().find(|n| n.name == step.node) else {
        return Wait::Failed(Fail::action(format!(
            "no node `{}` in the scenario",
            step.node
        )));
    };
    let report = oracle::Report::parse(lines);
    let lab = oracle::Lab {
        scenario: cx.scenario,
        node,
    };
    let checked = match step.action {
        Action::RootOnSession => oracle::root_on_session(&report, &lab, &step.node),
        _ => oracle::ibft(&report, &lab, &cx.events.snapshot(), &step.node),
    };
    let at = lines.last().map(|l| l.at).unwrap_or_default();
    if checked.differences.is_empty() {
        Wait::Met {
            at,
            detail: checked.summary,
        }
    } else {
        Wait::Failed(Fail::new(
            Cause::LabMismatch,
            format!(
                "the guest's report differs from what the lab served: {}",
                checked.differences.join("; ")
            ),
            checked.evidence,
        ))
    }
}

/// The verdict of a step whose guest stopped under it.
async fn guest_gone(io: &NodeIo, node: &str, action: &Action) -> Wait {
    let end = qemu_end(io).await;
    Wait::Failed(Fail::new(
        Cause::QemuExited,
        format!(
            "the guest stopped ({}) while waiting for {}",
            end.words,
            describe(action)
        ),
        end.evidence(node),
    ))
}

/// The status QEMU exits with when the guest powers itself off.
const POWEROFF_STATUS: &str = "exited with status 0";

/// A `qemu_exit` step is met only by a guest that powered itself off: QEMU then exits with
/// status 0. Killed by a signal, crashed, or an exit nobody reported is a failure with that
/// status as its evidence.
async fn powered_off(io: &NodeIo, node: &str, at: f64) -> Wait {
    let end = qemu_end(io).await;
    match end.status.as_deref() {
        Some(POWEROFF_STATUS) => Wait::Met {
            at,
            detail: format!("QEMU {POWEROFF_STATUS}: the guest powered off"),
        },
        _ => Wait::Failed(Fail::new(
            Cause::QemuExited,
            format!(
                "{} instead of exiting with status 0 as a guest poweroff does",
                end.words
            ),
            end.evidence(node),
        )),
    }
}

/// How long the console's end may come before QEMU's exit status: the pipe closes first.
const EXIT_STATUS_WAIT: Duration = Duration::from_secs(2);

/// How a node's QEMU ended, as far as its owner has said.
struct QemuEnd {
    /// `exited with status 0`, `killed by signal 9 (SIGKILL)`; `None` when nobody said.
    status: Option<String>,
    /// `QEMU exited, killed by signal 9 (SIGKILL)`, or only `QEMU exited` when the status is
    /// not known (a console without a process behind it).
    words: String,
}

impl QemuEnd {
    fn evidence(&self, node: &str) -> Vec<Evidence> {
        vec![Evidence::Exit {
            process: format!("{node}'s QEMU"),
            status: self
                .status
                .clone()
                .unwrap_or_else(|| "ended; its status was not reported".into()),
        }]
    }
}

async fn qemu_end(io: &NodeIo) -> QemuEnd {
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
        Ok(how) => QemuEnd {
            words: if how.starts_with("exited") {
                format!("QEMU {how}")
            } else {
                format!("QEMU exited, {how}")
            },
            status: Some(how),
        },
        Err(_) => QemuEnd {
            status: None,
            words: "QEMU exited".into(),
        },
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
    cx: &StepCx<'_>,
    fail_cursors: &mut BTreeMap<String, usize>,
    limit: Option<(&str, usize)>,
    before: Option<f64>,
) -> Option<Fail> {
    if cx.fail_on.is_empty() {
        return None;
    }
    for (name, io) in cx.nodes {
        let from = fail_cursors.get(name).copied().unwrap_or(0);
        let mut lines = io.console.lines_from(from);
        if let Some((_, end)) = limit.filter(|(n, _)| *n == name.as_str()) {
            lines.truncate(end.saturating_sub(from));
        }
        if let Some(t) = before {
            let end = lines.iter().position(|l| l.at >= t).unwrap_or(lines.len());
            lines.truncate(end);
        }
        fail_cursors.insert(name.clone(), from + lines.len());
        for l in lines.iter().filter(|l| !cx.is_echo(name, &l.text)) {
            if let Some(p) = cx.fail_on.iter().find(|p| l.text.contains(p.text.as_str())) {
                let who = if cx.nodes.len() > 1 {
                    format!("{name}'s ")
                } else {
                    String::new()
                };
                return Some(Fail::new(
                    Cause::ConsoleFailure,
                    format!("{who}console showed {:?}: {}", l.text, p.meaning),
                    vec![Evidence::console(name, l)],
                ));
            }
        }
    }
    None
}

/// For `iscsi_logins_all`: `Err` names the first accepted login that does not match, `Ok(None)`
/// means too few so far, `Ok(Some)` describes the logins that all matched.
fn all_logins(action: &Action, events: &[Event], at_least: u32) -> Result<Option<String>, Fail> {
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
        session: SessionType::Normal,
    };
    let mut seen = Vec::new();
    for e in events {
        // Discovery sessions reach no LUN: the claim is about the sessions that do.
        if let EventKind::IscsiLogin {
            initiator: ei,
            source_ip,
            session_type,
            ..
        } = &e.kind
        {
            if session_type != SessionType::Normal.key_value() {
                continue;
            }
            if !event_matches(&probe, e) {
                return Err(Fail::new(
                    Cause::RecordMismatch,
                    format!(
                        "the iSCSI login at {:.1}s does not match: {}",
                        e.at,
                        serde_json::to_string(e).unwrap_or_default()
                    ),
                    vec![Evidence::record(e)],
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
                session,
            },
            EventKind::IscsiLogin {
                initiator: ei,
                target: et,
                source_ip,
                source_mac,
                session_type,
                ..
            },
        ) => {
            session_type == session.key_value()
                && initiator
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
            Action::IscsiLoginRefused {
                initiator,
                target,
                status,
            },
            EventKind::IscsiLoginFailed {
                initiator: ei,
                target: et,
                status: es,
                ..
            },
        ) => {
            status.is_none_or(|s| es.as_deref() == Some(s.name()))
                && initiator
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

#[cfg(test)]
mod test_rig;

#[cfg(test)]
mod negative_tests;

#[cfg(test)]
mod tests {
    use super::test_rig::*;
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

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
                cause: Cause::Timeout,
                evidence: vec![],
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
                cause,
                evidence,
                reason,
                waited,
                ..
            } => {
                assert_eq!(step, "root");
                assert_eq!(*cause, Cause::ConsoleFailure);
                assert!(reason.contains("ALERT!"), "{reason}");
                match &evidence[..] {
                    [Evidence::Console { node, line, .. }] => {
                        assert_eq!(node, "node01");
                        assert!(
                            line.starts_with("ALERT!  UUID=1234 does not exist"),
                            "{line}"
                        );
                    }
                    e => panic!("{e:?}"),
                }
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
            session: SessionType::Normal,
        };
        let s = scenario(vec![("l1", login(), 500), ("l2", login(), 300)]);
        r.events.push(login_record(
            "IQN.2026-11.lab:node01",
            "10.77.0.128",
            None,
            "Normal",
        ));
        let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
        assert_eq!(out.steps[0].status, StepStatus::Met);
        assert_eq!(out.steps[1].status, StepStatus::Failed);
        assert!(
            matches!(&out.verdict, Verdict::Failed { reason, .. } if reason.contains("an iSCSI login (normal session) from iqn.2026-11.lab:node01")),
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
        let login = |ip: &str| {
            login_record(
                "iqn.2026-11.lab:node01",
                ip,
                Some("52:54:00:aa:00:41"),
                "Normal",
            )
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
            netmask: None,
            router: None,
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
            netmask: None,
            router: None,
        });
        r.events.push(EventKind::Dhcp {
            message: "DHCPACK".into(),
            mac: "52:54:00:aa:00:01".into(),
            ip: Some("10.77.0.128".parse().unwrap()),
            hostname: Some("node01".into()),
            boot_file: None,
            netmask: None,
            router: None,
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
        let disk = r.dir.path().join("disk.img");
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
        r.nodes["node01"].console.note_end("exited with status 0");
        let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
        assert!(out.verdict.passed(), "{:?}", out.verdict);
        assert!(out.steps[1].detail.contains("the guest powered off"));
    }

    #[tokio::test]
    async fn qemu_exit_is_not_met_by_a_killed_qemu() {
        let mut r = rig("exit-killed");
        let s = scenario(vec![("gone", Action::QemuExit, 2000)]);
        drop(std::mem::replace(&mut r.writer, tokio::io::duplex(1).0));
        r.nodes["node01"]
            .console
            .note_end("killed by signal 9 (SIGKILL)");
        let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
        match &out.verdict {
            Verdict::Failed {
                cause, evidence, ..
            } => {
                assert_eq!(*cause, Cause::QemuExited);
                assert_eq!(
                    evidence,
                    &[Evidence::Exit {
                        process: "node01's QEMU".into(),
                        status: "killed by signal 9 (SIGKILL)".into()
                    }]
                );
            }
            v => panic!("{v:?}"),
        }
    }

    #[tokio::test]
    async fn a_record_before_the_step_it_follows_cannot_meet_a_step() {
        let mut r = rig("ordered-records");
        let login = || Action::IscsiLogin {
            initiator: Some("iqn.2026-11.lab:node01".parse().unwrap()),
            target: None,
            from: None,
            mac: None,
            session: SessionType::Normal,
        };
        // iPXE's login, long before the initramfs's console line.
        r.events.push_at(
            0.0,
            login_record("iqn.2026-11.lab:node01", "10.77.0.128", None, "Normal"),
        );
        let s = scenario(vec![
            (
                "initramfs login",
                Action::Console("operational now".into()),
                3000,
            ),
            ("seen by the target", login(), 400),
        ]);
        let mut w = std::mem::replace(&mut r.writer, tokio::io::duplex(1).0);
        let feeder = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(2300)).await;
            w.write_all(b"Connection1:0 to [target: x] is operational now\r\n")
                .await
                .unwrap();
            w
        });
        let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
        assert_eq!(out.steps[0].status, StepStatus::Met);
        assert!(
            matches!(&out.verdict, Verdict::Failed { step, cause: Cause::Timeout, .. } if step == "seen by the target"),
            "the earlier record met the step: {:?}",
            out.verdict
        );
        drop(feeder.await.unwrap());
    }

    #[tokio::test]
    async fn a_record_just_before_its_console_line_meets_the_step_and_an_old_one_does_not() {
        let mut r = rig("ordered-records-2");
        let login = Action::IscsiLogin {
            initiator: Some("iqn.2026-11.lab:node01".parse().unwrap()),
            target: None,
            from: None,
            mac: None,
            session: SessionType::Normal,
        };
        r.events.push_at(
            0.0,
            login_record("iqn.2026-11.lab:node01", "10.77.0.128", None, "Normal"),
        );
        tokio::time::sleep(Duration::from_millis(2500)).await;
        // The target answers, then the initiator says so on its console.
        let answered = r.events.clock().now();
        r.events.push(login_record(
            "iqn.2026-11.lab:node01",
            "10.77.0.128",
            None,
            "Normal",
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        r.writer
            .write_all(b"Connection1:0 to [target: x] is operational now\r\n")
            .await
            .unwrap();
        let s = scenario(vec![
            (
                "initramfs login",
                Action::Console("operational now".into()),
                3000,
            ),
            ("seen by the target", login, 400),
        ]);
        let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
        assert!(out.verdict.passed(), "{:?}", out.verdict);
        let met = out.steps[1].met_at.unwrap();
        assert!(met >= answered, "met by the old record at {met}");
    }

    #[tokio::test]
    async fn a_bound_is_never_stretched_and_a_late_step_is_marked_slow() {
        let mut r = rig("bound");
        let mut s = scenario(vec![
            ("waited", Action::Console("late line".into()), 300),
            ("bounded", Action::Console("never".into()), 300),
        ]);
        s.steps[1].stretch = false;
        let mut w = std::mem::replace(&mut r.writer, tokio::io::duplex(1).0);
        let feeder = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(600)).await;
            w.write_all(b"late line\r\n").await.unwrap();
            w
        });
        // Stretched x4: the first step's 0.3 s become 1.2 s, the bound stays 0.3 s.
        let out = run_steps(&s, &r.nodes, &r.events, 4.0, no_cancel()).await;
        assert_eq!(out.steps[0].status, StepStatus::Met, "{:?}", out.verdict);
        assert!(
            out.steps[0].slow,
            "met after its written 0.3 s: {:?}",
            out.steps[0]
        );
        assert_eq!(out.steps[1].status, StepStatus::Failed);
        assert!(
            (out.steps[1].within - 0.3).abs() < 1e-9,
            "{:?}",
            out.steps[1]
        );
        assert!(out.steps[1].waited < 1.0, "{:?}", out.steps[1]);
        drop(feeder.await.unwrap());
    }

    #[tokio::test]
    async fn a_discovery_session_is_not_a_login() {
        let r = rig("discovery");
        let login = |session| Action::IscsiLogin {
            initiator: Some("iqn.2026-11.lab:node01".parse().unwrap()),
            target: None,
            from: None,
            mac: None,
            session,
        };
        r.events.push(login_record(
            "iqn.2026-11.lab:node01",
            "10.77.0.128",
            None,
            "Discovery",
        ));
        let s = scenario(vec![("login", login(SessionType::Normal), 300)]);
        let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
        assert!(
            matches!(
                &out.verdict,
                Verdict::Failed {
                    cause: Cause::Timeout,
                    ..
                }
            ),
            "a discovery session met a login step: {:?}",
            out.verdict
        );
        let s = scenario(vec![("discovery", login(SessionType::Discovery), 300)]);
        let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
        assert!(out.verdict.passed(), "{:?}", out.verdict);
        // Nor does it count among "every login" of a boot.
        let all = Action::AllLogins {
            initiator: Some("iqn.2026-11.lab:node01".parse().unwrap()),
            target: None,
            from: None,
            mac: None,
            at_least: 1,
        };
        let s = scenario(vec![("all", all, 300)]);
        let out = run_steps(&s, &r.nodes, &r.events, 1.0, no_cancel()).await;
        assert!(!out.verdict.passed(), "{:?}", out.verdict);
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
        let (console, t) = Console::spawn(
            r2,
            &r.dir.path().join("raw2"),
            &r.dir.path().join("txt2"),
            events.clock(),
        )
        .unwrap();
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
        use crate::scenario::ExpectedFailure;
        let sanboot_line = || Evidence::Console {
            node: "node01".into(),
            at: 5.0,
            line: "Could not open SAN device: Operation not permitted".into(),
        };
        let failed = |step: &str, cause: Cause, evidence: Vec<Evidence>| Outcome {
            verdict: Verdict::Failed {
                step: step.into(),
                cause,
                evidence,
                // The harness's words never decide: this one names the expected text on
                // purpose.
                reason: "Could not open SAN device".into(),
                waited: 1.0,
                within: 2.0,
            },
            steps: vec![],
            console_tails: BTreeMap::new(),
        };
        let want = ExpectedFailure {
            step: "sanboot".into(),
            cause: Cause::ConsoleFailure,
            evidence: Some("Could not open SAN device".into()),
        };
        let j = judge(
            &failed("sanboot", Cause::ConsoleFailure, vec![sanboot_line()]),
            Some(&want),
        );
        assert!(
            j.ok && j.message.contains("node01 console at 5.0s"),
            "{}",
            j.message
        );
        let j = judge(
            &failed("dhcp", Cause::ConsoleFailure, vec![sanboot_line()]),
            Some(&want),
        );
        assert!(
            !j.ok && j.message.contains("but failed at `dhcp`"),
            "{}",
            j.message
        );
        let j = judge(&failed("sanboot", Cause::Timeout, vec![]), Some(&want));
        assert!(
            !j.ok && j.message.contains("another cause: timeout"),
            "{}",
            j.message
        );
        // The right cause with another line as its evidence is another failure.
        let other = Evidence::Console {
            node: "node01".into(),
            at: 5.0,
            line: "Boot from SAN device 0x80 failed: x".into(),
        };
        let j = judge(
            &failed("sanboot", Cause::ConsoleFailure, vec![other]),
            Some(&want),
        );
        assert!(
            !j.ok && j.message.contains("no evidence contains"),
            "{}",
            j.message
        );
        let j = judge(
            &failed("sanboot", Cause::ConsoleFailure, vec![]),
            Some(&want),
        );
        assert!(
            !j.ok && j.message.contains("there is none"),
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
