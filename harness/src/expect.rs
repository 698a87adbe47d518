//! Runs a scenario's steps against the guests' consoles and the services' records.
//!
//! Steps run in order; each one's clock starts when the previous one was met. Console steps
//! consume the console (a per-node cursor moves past each matched line). Service steps consume
//! one matching record each, whenever it happened: the console and the services are two
//! separate witnesses and their clocks are not compared.

use std::collections::{BTreeMap, BTreeSet};

use tokio::sync::{mpsc, watch};

use crate::console::Console;
use crate::events::{Event, EventKind, EventLog};
use crate::scenario::{Action, ExpectedFailure, FailPattern, Scenario, Step};

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
}

/// Runs every step; never panics on guest behaviour, always returns a verdict.
pub async fn run_steps(
    scenario: &Scenario,
    nodes: &BTreeMap<String, NodeIo>,
    events: &EventLog,
    timeout_scale: f64,
    mut cancel: watch::Receiver<bool>,
) -> Outcome {
    let clock = events.clock();
    let mut cursors: BTreeMap<String, usize> = nodes.keys().map(|n| (n.clone(), 0)).collect();
    let mut consumed: BTreeSet<usize> = BTreeSet::new();
    let mut results = Vec::new();
    let mut verdict = Verdict::Passed;

    for step in &scenario.steps {
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
                tokio::select! {
                    w = wait_step(step, io, nodes, &fail_from, &scenario.fail_on, &mut cursors, events, &mut consumed) => w,
                    _ = tokio::time::sleep(within) => Wait::TimedOut,
                    _ = cancelled(&mut cancel) => Wait::Cancelled,
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
            Wait::Failed(reason) => {
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
        };
        results.push(StepResult {
            name: step.name.clone(),
            node: step.node.clone(),
            status,
            started_at: started,
            met_at,
            waited,
            within: within_s,
            detail,
        });
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
        Action::DhcpAck { mac, hostname } => {
            let mut s = "a DHCP ACK".to_string();
            if let Some(m) = mac {
                s.push_str(&format!(" for {m}"));
            }
            if let Some(h) = hostname {
                s.push_str(&format!(" with hostname {h}"));
            }
            s
        }
        Action::HttpGet(p) => format!("an HTTP request for {p} answered with 2xx"),
        Action::IscsiLogin {
            initiator,
            target,
            from,
        } => {
            let mut s = "an iSCSI login".to_string();
            if let Some(i) = initiator {
                s.push_str(&format!(" from {i}"));
            }
            if let Some(t) = target {
                s.push_str(&format!(" to {t}"));
            }
            if let Some(f) = from {
                s.push_str(&format!(" from address {f}"));
            }
            s
        }
        Action::Send(t) => format!("typing {t:?}"),
    }
}

#[allow(clippy::too_many_arguments)]
async fn wait_step(
    step: &Step,
    io: &NodeIo,
    nodes: &BTreeMap<String, NodeIo>,
    fail_from: &BTreeMap<String, usize>,
    fail_on: &[FailPattern],
    cursors: &mut BTreeMap<String, usize>,
    events: &EventLog,
    consumed: &mut BTreeSet<usize>,
) -> Wait {
    if let Action::Send(text) = &step.action {
        // A serial console's line discipline ends input lines at CR, as a terminal's Enter does.
        let mut bytes = text.clone().into_bytes();
        bytes.push(b'\r');
        return match io.input.send(bytes).await {
            Ok(()) => Wait::Met {
                at: events.clock().now(),
                detail: format!("typed {text:?}"),
            },
            Err(_) => Wait::Failed("the guest's console input is closed (QEMU exited)".into()),
        };
    }
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
                if let Some(reason) = check_fail_patterns(nodes, fail_on, &mut fail_cursors, limit)
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
                    return Wait::Failed(format!(
                        "the guest stopped (QEMU exited) while waiting for {}",
                        describe(&step.action)
                    ));
                }
            }
            action => {
                if let Some(reason) = check_fail_patterns(nodes, fail_on, &mut fail_cursors, None) {
                    return Wait::Failed(reason);
                }
                let all = events.snapshot();
                if let Some((i, e)) = all
                    .iter()
                    .enumerate()
                    .find(|(i, e)| !consumed.contains(i) && event_matches(action, e))
                {
                    consumed.insert(i);
                    return Wait::Met {
                        at: e.at,
                        detail: serde_json::to_string(e).unwrap_or_default(),
                    };
                }
            }
        }
        let console_changed = async {
            let futs = console_rxs.iter_mut().map(|rx| Box::pin(rx.changed()));
            let _ = futures_select_any(futs).await;
        };
        tokio::select! {
            _ = console_changed => {}
            r = events_rx.changed() => {
                if r.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
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
/// `limit` stops the scan of one node's console before a given line index.
fn check_fail_patterns(
    nodes: &BTreeMap<String, NodeIo>,
    fail_on: &[FailPattern],
    fail_cursors: &mut BTreeMap<String, usize>,
    limit: Option<(&str, usize)>,
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

fn event_matches(action: &Action, e: &Event) -> bool {
    match (action, &e.kind) {
        (
            Action::DhcpAck { mac, hostname },
            EventKind::Dhcp {
                message,
                mac: emac,
                hostname: ehost,
                ..
            },
        ) => {
            message == "DHCPACK"
                && mac.is_none_or(|m| emac.eq_ignore_ascii_case(&m.to_string()))
                && hostname
                    .as_ref()
                    .is_none_or(|h| ehost.as_deref() == Some(h.as_str()))
        }
        (Action::HttpGet(p), EventKind::HttpRequest { path, status, .. }) => {
            path == p && (200..300).contains(status)
        }
        (
            Action::IscsiLogin {
                initiator,
                target,
                from,
            },
            EventKind::IscsiLogin {
                initiator: ei,
                target: et,
                source_ip,
            },
        ) => {
            initiator
                .as_ref()
                .is_none_or(|i| i.as_str().eq_ignore_ascii_case(ei))
                && target
                    .as_ref()
                    .is_none_or(|t| t.as_str().eq_ignore_ascii_case(et))
                && from.is_none_or(|f| f == *source_ip)
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
