//! What a run's steps came to: the verdict, with a typed cause and the evidence behind it, and
//! the judgement of that verdict against what the scenario expects.
//!
//! Evidence is only ever what a guest or a service produced: a console line, a service record,
//! an exit status from the operating system. The harness's own sentence about a failure (the
//! `reason`) is for people; an expected failure is never matched against it, because that
//! sentence reads the same whatever really happened.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::guest::console::ConsoleLine;
use crate::scenario::{Cause, ExpectedFailure};
use crate::services::events::Event;

/// One piece of evidence for a failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Evidence {
    /// A line a node printed on its serial console, as read (escape sequences removed).
    Console { node: String, at: f64, line: String },
    /// A record a service made (DHCP, TFTP, HTTP, iSCSI login), as written to `events.jsonl`.
    Record { at: f64, record: serde_json::Value },
    /// How a process ended, as the operating system reported it (`killed by signal 9
    /// (SIGKILL)`).
    Exit { process: String, status: String },
}

impl Evidence {
    pub fn console(node: &str, line: &ConsoleLine) -> Evidence {
        Evidence::Console {
            node: node.to_string(),
            at: line.at,
            line: line.text.clone(),
        }
    }

    pub fn record(e: &Event) -> Evidence {
        Evidence::Record {
            at: e.at,
            record: serde_json::to_value(&e.kind).unwrap_or_default(),
        }
    }

    /// The words an expected failure's `evidence` is looked for in.
    pub fn text(&self) -> String {
        match self {
            Evidence::Console { line, .. } => line.clone(),
            Evidence::Record { record, .. } => record.to_string(),
            Evidence::Exit { status, .. } => status.clone(),
        }
    }

    /// One line for a person: where the evidence comes from, when, and what it says.
    pub fn summary(&self) -> String {
        match self {
            Evidence::Console { node, at, line } => {
                format!("{node} console at {at:.1}s: {:?}", line.trim())
            }
            Evidence::Record { at, record } => format!("record at {at:.1}s: {record}"),
            Evidence::Exit { process, status } => format!("{process} {status}"),
        }
    }
}

/// Why a step failed: the cause as data, what proves it, and a sentence for people.
#[derive(Debug, Clone, PartialEq)]
pub struct Fail {
    pub cause: Cause,
    pub evidence: Vec<Evidence>,
    pub reason: String,
}

impl Fail {
    pub fn new(cause: Cause, reason: impl Into<String>, evidence: Vec<Evidence>) -> Fail {
        Fail {
            cause,
            evidence,
            reason: reason.into(),
        }
    }

    /// The harness could not do what the step asked of it.
    pub fn action(reason: impl Into<String>) -> Fail {
        Fail::new(Cause::ActionFailed, reason, Vec::new())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Passed,
    Failed {
        step: String,
        cause: Cause,
        evidence: Vec<Evidence>,
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

    pub fn failed(step: &str, fail: Fail, waited: f64, within: f64) -> Verdict {
        Verdict::Failed {
            step: step.to_string(),
            cause: fail.cause,
            evidence: fail.evidence,
            reason: fail.reason,
            waited,
            within,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// The run did what the scenario expects (an expected failure at the right step, for the
    /// right cause, with the right evidence, counts).
    pub ok: bool,
    pub message: String,
}

/// The run's outcome, as [`crate::expect::run_steps`] returns it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub verdict: Verdict,
    pub steps: Vec<super::StepResult>,
    /// Node -> its last 50 console lines.
    pub console_tails: BTreeMap<String, Vec<String>>,
}

/// Did the run do what the scenario expects?
pub fn judge(outcome: &Outcome, expected: Option<&ExpectedFailure>) -> Judgement {
    let verdict = |ok: bool, message: String| Judgement { ok, message };
    match (expected, &outcome.verdict) {
        (_, Verdict::Interrupted { step }) => {
            verdict(false, format!("interrupted during step `{step}`"))
        }
        (
            _,
            Verdict::HarnessPanic {
                step,
                task,
                message,
            },
        ) => verdict(
            false,
            format!(
                "the harness itself failed during step `{step}`: task `{task}` panicked: {message}"
            ),
        ),
        (None, Verdict::Passed) => verdict(true, "every step was met".into()),
        (None, Verdict::Failed { step, reason, .. }) => {
            verdict(false, format!("failed at step `{step}`: {reason}"))
        }
        (Some(x), Verdict::Passed) => verdict(
            false,
            format!(
                "expected to fail at step `{}` ({}), but every step was met",
                x.step, x.cause
            ),
        ),
        (
            Some(x),
            Verdict::Failed {
                step,
                cause,
                evidence,
                reason,
                ..
            },
        ) => {
            if *step != x.step {
                return verdict(
                    false,
                    format!(
                        "expected to fail at step `{}` ({}), but failed at `{step}` ({cause}): {reason}",
                        x.step, x.cause
                    ),
                );
            }
            if *cause != x.cause {
                return verdict(
                    false,
                    format!(
                        "failed at step `{step}` as expected, but for another cause: {cause}, not {}: {reason}",
                        x.cause
                    ),
                );
            }
            let Some(want) = &x.evidence else {
                return verdict(
                    true,
                    format!("failed at step `{step}` as expected ({cause}): {reason}"),
                );
            };
            match evidence.iter().find(|e| e.text().contains(want.as_str())) {
                Some(e) => verdict(
                    true,
                    format!(
                        "failed at step `{step}` as expected ({cause}), evidence: {}",
                        e.summary()
                    ),
                ),
                None => verdict(
                    false,
                    format!(
                        "failed at step `{step}` ({cause}) as expected, but no evidence contains {want:?}: {}",
                        if evidence.is_empty() {
                            "there is none".to_string()
                        } else {
                            evidence
                                .iter()
                                .map(Evidence::summary)
                                .collect::<Vec<_>>()
                                .join("; ")
                        }
                    ),
                ),
            }
        }
    }
}
