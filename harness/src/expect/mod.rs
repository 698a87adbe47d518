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

use crate::guest::console::{Console, ConsoleLine};
use crate::scenario::{Action, Cause, FailPattern, Scenario, Service, SessionType, Step};
use crate::services::events::{Event, EventKind, EventLog};

mod describe;
mod exit;
mod oracle;
mod records;
mod shell;
pub mod timeouts;
mod verdict;
mod wait;

pub use describe::describe;
use shell::shell_silent;
pub use verdict::{judge, Evidence, Fail, Judgement, Outcome, Verdict};
use wait::{wait_step, StepCx};

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
    Panic(crate::support::tasks::HarnessPanic),
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
    /// The disk `node`'s iSCSI target exports (its own in a fleet, else the run's one copy).
    fn lun_file(&self, node: &str) -> Option<PathBuf>;
    /// Adds a host to the running DHCP server, as an operator adds a node's MAC.
    fn add_dhcp_host(
        &self,
        host: crate::scenario::DhcpHost,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>> {
        let mac = host.mac;
        Box::pin(async move { Err(format!("this run cannot add DHCP host {mac}")) })
    }
    /// One of the lab's iSCSI portals dies for the rest of the run; `Ok` describes it.
    fn portal_down(
        &self,
        which: crate::scenario::Portal,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>> {
        let why = format!("this run cannot take its {} portal down", which.name());
        Box::pin(async move { Err(why) })
    }
    /// Does `action` to `node`'s machine through QMP; `Ok` describes what was done.
    fn machine(
        &self,
        node: &str,
        action: &crate::scenario::MachineAction,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>> {
        let why = format!(
            "this run has no QMP connection to {node}'s machine ({})",
            action.describe()
        );
        Box::pin(async move { Err(why) })
    }
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
    fn lun_file(&self, _node: &str) -> Option<PathBuf> {
        None
    }
}

/// How long before the step it follows a service record may be and still meet a step. The
/// guest reports much of what it does on its console only after a service has recorded it:
/// iPXE prints `Booting from SAN device` after its login, iscsistart prints `operational now`
/// after the target answered. Both happen within milliseconds; two seconds leave room for a
/// loaded machine and still keep out a record of an earlier phase (iPXE's login is seconds
/// before the initramfs's). A step that needs another anchor names it with `after:`.
pub const RECORD_LEAD: f64 = 2.0;

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
        // A Ctrl-C before this step (even before every node was powered on, in a staggered
        // fleet) ends the run as interrupted, whatever this step would find.
        let wait = match nodes.get(&step.node) {
            _ if *cancel.borrow() => Wait::Cancelled,
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

#[cfg(test)]
mod test_rig;

#[cfg(test)]
mod negative_tests;

#[cfg(test)]
mod tests;
