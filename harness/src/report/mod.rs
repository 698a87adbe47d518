//! The run's verdict, written as `summary.json` and told to a person: which step failed, what it
//! waited for and how long, the console tail, and where every artifact is.

pub mod per_node;
#[cfg(test)]
mod per_node_tests;
pub mod timeline;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::expect::{Judgement, Outcome, StepStatus, Verdict};
use crate::services::events::{Event, EventKind};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub scenario: String,
    pub file: String,
    pub started_at: String,
    pub accel: String,
    pub timeout_scale: f64,
    /// Where `timeout_scale` comes from: the accelerator, the host's load, `--timeout-scale`.
    #[serde(default)]
    pub timeout_why: String,
    /// `passed`, `failed`, `interrupted`, `error` (the harness itself could not run the boot)
    /// or `harness-panic` (a task of the harness panicked; `failed_step` names it).
    pub verdict: String,
    /// Whether the run did what the scenario expects (an expected failure counts as ok).
    pub ok: bool,
    pub message: String,
    pub failed_step: Option<FailedStep>,
    pub steps: Vec<StepSummary>,
    /// Seconds from the lab's start to the end of the steps.
    pub duration_s: f64,
    /// Seconds from the lab's start to each guest's QEMU start.
    pub qemu_started_at: BTreeMap<String, f64>,
    /// Artifact files, relative to the run directory, with what each holds.
    pub artifacts: Vec<Artifact>,
    pub console_tail: BTreeMap<String, Vec<String>>,
    /// What the scenario's fault plans did to the run, in time order. Summaries written before
    /// faults were listed read as a run without any.
    #[serde(default)]
    pub faults: Vec<InjectedFault>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailedStep {
    pub name: String,
    /// Why it failed, as data (`timeout`, `console-failure`, ...); absent for a run that was
    /// interrupted or whose harness panicked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<crate::scenario::Cause>,
    /// What the guest or a service produced that proves the cause.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<crate::expect::Evidence>,
    pub reason: String,
    pub waited_s: f64,
    pub within_s: f64,
}

impl FailedStep {
    /// A harness failure outside any step: it has no cause in the guest.
    pub fn outside_the_steps(reason: String) -> FailedStep {
        FailedStep {
            name: "(outside the steps)".into(),
            cause: None,
            evidence: Vec::new(),
            reason,
            waited_s: 0.0,
            within_s: 0.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepSummary {
    pub name: String,
    pub node: String,
    pub status: String,
    pub started_at: f64,
    pub met_at: Option<f64>,
    pub waited_s: f64,
    pub within_s: f64,
    /// Met only thanks to the run's timeout stretch: later than the scenario's own `within`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub slow: bool,
    /// The boot phase the step ends, as the scenario typed it; absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<crate::scenario::Phase>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Artifact {
    pub path: String,
    pub what: String,
}

/// One thing a fault plan did, as the services recorded it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InjectedFault {
    /// Seconds from the lab's start; for an outage, when the service was recorded down.
    pub at: f64,
    /// For an outage, when the service came up; `None` when it had not by the end of the run.
    /// Always `None` for the other kinds, which happen at one moment.
    #[serde(default)]
    pub until: Option<f64>,
    /// `dhcp`, `http` or `iscsi`.
    pub service: String,
    pub kind: FaultKind,
    /// The node whose address the fault hit, when a DHCP lease ties the address to one; an
    /// outage hits every node and names none.
    #[serde(default)]
    pub node: Option<String>,
    /// One line for a person: what happened, to whom.
    pub what: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// A service kept down by `start_after` or a `down` window, from its `down until` record
    /// to `started`.
    Outage,
    /// A connection reset because its service was still down.
    Reset,
    /// An iSCSI login refused by the fault plan or the address list.
    LoginRefused,
    /// An iSCSI login dropped by the fault plan: the connection closed without an answer.
    LoginDropped,
    /// An HTTP request answered with the fault plan's error status.
    HttpError,
    /// An HTTP request answered late by the fault plan, but answered.
    HttpDelay,
    /// Something a step did to a node's machine through QMP: a hard reset, the power button.
    /// (A pulled cable is an outage of the node's link, until it is put back.)
    Machine,
    /// An event QEMU reported for a node's machine (RESET, SHUTDOWN, ...): not injected, but
    /// drawn with the faults so a reset reads next to its cause.
    QmpEvent,
    /// A kind a newer harness wrote: still listed and drawn as a single fault.
    #[serde(other)]
    Other,
}

impl FaultKind {
    pub fn is_outage(self) -> bool {
        self == FaultKind::Outage
    }

    /// The name `summary.json` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Outage => "outage",
            FaultKind::Reset => "reset",
            FaultKind::LoginRefused => "login_refused",
            FaultKind::LoginDropped => "login_dropped",
            FaultKind::HttpError => "http_error",
            FaultKind::HttpDelay => "http_delay",
            FaultKind::Machine => "machine",
            FaultKind::QmpEvent => "qmp_event",
            FaultKind::Other => "other",
        }
    }
}

/// The injected faults in a run's records. `node_of_mac` names the node a NIC belongs to; DHCP
/// leases seen up to each fault tie the fault's source address to that node.
pub fn injected_faults(
    events: &[Event],
    node_of_mac: &dyn Fn(&str) -> Option<String>,
) -> Vec<InjectedFault> {
    let mut out: Vec<InjectedFault> = Vec::new();
    let mut node_of_ip: BTreeMap<std::net::IpAddr, String> = BTreeMap::new();
    // Index into `out` of each service's outage still waiting for its `started` record.
    let mut open: BTreeMap<String, usize> = BTreeMap::new();
    for ev in events {
        let single = |service: &str, kind, ip: &std::net::IpAddr, what: String| InjectedFault {
            at: ev.at,
            until: None,
            service: service.to_string(),
            kind,
            node: node_of_ip.get(ip).cloned(),
            what,
        };
        match &ev.kind {
            EventKind::Dhcp {
                mac, ip: Some(ip), ..
            } => {
                if let Some(node) = node_of_mac(mac) {
                    node_of_ip.insert(std::net::IpAddr::V4(*ip), node);
                }
            }
            EventKind::Service { service, state } => {
                if let Some(i) = open.remove(service) {
                    let outage = &mut out[i];
                    if state == "started" {
                        outage.until = Some(ev.at);
                        let _ = write!(outage.what, ", started at {:.1} s", ev.at);
                    } else {
                        let _ = write!(outage.what, ", then {state} at {:.1} s", ev.at);
                    }
                }
                if state.starts_with("down until") {
                    open.insert(service.clone(), out.len());
                    out.push(InjectedFault {
                        at: ev.at,
                        until: None,
                        service: service.clone(),
                        kind: FaultKind::Outage,
                        node: None,
                        what: format!("{service} {state}"),
                    });
                }
            }
            EventKind::Refused {
                service,
                peer,
                reason,
            } => out.push(single(
                service,
                FaultKind::Reset,
                peer,
                format!("{service} reset a connection from {peer}: {reason}"),
            )),
            EventKind::IscsiLoginFailed {
                initiator,
                source_ip,
                result,
                ..
            } => {
                // Rejections by the target and malformed logins are the guest's or the
                // target's doing, not the plan's.
                let kind = if result.starts_with("refused:") {
                    FaultKind::LoginRefused
                } else if result.starts_with("dropped:") {
                    FaultKind::LoginDropped
                } else {
                    continue;
                };
                let who = if initiator.is_empty() {
                    "unnamed initiator"
                } else {
                    initiator
                };
                out.push(single(
                    "iscsi",
                    kind,
                    source_ip,
                    format!("iSCSI login of {who} from {source_ip} {result}"),
                ));
            }
            EventKind::HttpRequest {
                method,
                path,
                status,
                peer,
                fault: Some(fault),
            } => {
                let kind = if (200..400).contains(status) {
                    FaultKind::HttpDelay
                } else {
                    FaultKind::HttpError
                };
                out.push(single(
                    "http",
                    kind,
                    peer,
                    format!("{method} {path} from {peer} answered {status} ({fault})"),
                ));
            }
            EventKind::Machine { node, action } => match machine_outage(node, action) {
                // A cable pulled, or the power cut: the node's link or power down until the
                // same NIC's cable is put back, or the power comes back.
                Some((lane, true, _)) => {
                    open.insert(lane.clone(), out.len());
                    out.push(InjectedFault {
                        at: ev.at,
                        until: None,
                        service: lane,
                        kind: FaultKind::Outage,
                        node: Some(node.clone()),
                        what: format!("{node}: {action}"),
                    });
                }
                Some((lane, false, back)) => {
                    if let Some(i) = open.remove(&lane) {
                        out[i].until = Some(ev.at);
                        let _ = write!(out[i].what, ", {back} at {:.1} s", ev.at);
                    }
                }
                None => out.push(InjectedFault {
                    at: ev.at,
                    until: None,
                    service: "machine".into(),
                    kind: FaultKind::Machine,
                    node: Some(node.clone()),
                    what: format!("{node}: {action}"),
                }),
            },
            // QEMU ending because the harness stopped it after the steps is not the run's.
            EventKind::Qmp { data, .. } if data["reason"] == "host-signal" => {}
            EventKind::Qmp { node, event, data } => out.push(InjectedFault {
                at: ev.at,
                until: None,
                service: "qmp".into(),
                kind: FaultKind::QmpEvent,
                node: Some(node.clone()),
                what: match data {
                    serde_json::Value::Null => format!("QEMU reported {event} for {node}"),
                    d => format!("QEMU reported {event} for {node}: {d}"),
                },
            }),
            _ => {}
        }
    }
    for i in open.into_values() {
        out[i].what.push_str(", still down when the run ended");
    }
    out
}

/// The outage a machine event starts or ends, if any: its lane (one per node's NIC link, one per
/// node's power), whether it starts it, and the words for its end.
fn machine_outage(node: &str, action: &str) -> Option<(String, bool, &'static str)> {
    use crate::scenario::machine::{LINK_DOWN_ON, LINK_UP_ON, POWER_CUT, POWER_ON};
    let link = |mac: &str| format!("{node} link {mac}");
    if let Some(mac) = action.strip_prefix(LINK_DOWN_ON) {
        return Some((link(mac), true, "back up"));
    }
    if let Some(mac) = action.strip_prefix(LINK_UP_ON) {
        return Some((link(mac), false, "back up"));
    }
    match action {
        POWER_CUT => Some((format!("{node} power"), true, "back on")),
        POWER_ON => Some((format!("{node} power"), false, "back on")),
        _ => None,
    }
}

/// The verdict of a run a harness task's panic ended.
pub const HARNESS_PANIC: &str = "harness-panic";

impl Summary {
    /// A summary for a run that never reached its steps (lab or services failed to start).
    pub fn error(scenario: &str, file: &Path, message: String) -> Summary {
        Summary {
            scenario: scenario.to_string(),
            file: file.display().to_string(),
            started_at: now_rfc3339(),
            accel: String::new(),
            timeout_scale: 1.0,
            timeout_why: String::new(),
            verdict: "error".into(),
            ok: false,
            message,
            failed_step: None,
            steps: Vec::new(),
            duration_s: 0.0,
            qemu_started_at: BTreeMap::new(),
            artifacts: Vec::new(),
            console_tail: BTreeMap::new(),
            faults: Vec::new(),
        }
    }

    pub fn from_outcome(base: Summary, outcome: &Outcome, judgement: &Judgement) -> Summary {
        let verdict = match &outcome.verdict {
            Verdict::Passed => "passed",
            Verdict::Failed { .. } => "failed",
            Verdict::Interrupted { .. } => "interrupted",
            Verdict::HarnessPanic { .. } => HARNESS_PANIC,
        };
        let failed_step = match &outcome.verdict {
            Verdict::Failed {
                step,
                cause,
                evidence,
                reason,
                waited,
                within,
            } => Some(FailedStep {
                name: step.clone(),
                cause: Some(*cause),
                evidence: evidence.clone(),
                reason: reason.clone(),
                waited_s: *waited,
                within_s: *within,
            }),
            Verdict::Interrupted { step } => Some(FailedStep {
                name: step.clone(),
                cause: None,
                evidence: Vec::new(),
                reason: "interrupted (Ctrl-C or SIGTERM)".into(),
                waited_s: 0.0,
                within_s: 0.0,
            }),
            Verdict::HarnessPanic {
                step,
                task,
                message,
            } => Some(FailedStep {
                name: step.clone(),
                cause: None,
                evidence: Vec::new(),
                reason: format!("harness task `{task}` panicked: {message}"),
                waited_s: 0.0,
                within_s: 0.0,
            }),
            Verdict::Passed => None,
        };
        let steps = outcome
            .steps
            .iter()
            .map(|s| StepSummary {
                name: s.name.clone(),
                node: s.node.clone(),
                status: match s.status {
                    StepStatus::Met => "met",
                    StepStatus::Failed => "failed",
                    StepStatus::Skipped => "skipped",
                }
                .into(),
                started_at: s.started_at,
                met_at: s.met_at,
                waited_s: s.waited,
                within_s: s.within,
                slow: s.slow,
                phase: s.phase,
                detail: s.detail.clone(),
            })
            .collect();
        Summary {
            verdict: verdict.into(),
            ok: judgement.ok,
            message: judgement.message.clone(),
            failed_step,
            steps,
            console_tail: outcome.console_tails.clone(),
            ..base
        }
    }

    pub fn write(&self, run_dir: &Path) -> std::io::Result<PathBuf> {
        let p = run_dir.join("summary.json");
        let tmp = run_dir.join(".summary.json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&tmp, &p)?;
        Ok(p)
    }

    pub fn read(run_dir: &Path) -> std::io::Result<Summary> {
        let bytes = std::fs::read(run_dir.join("summary.json"))?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
    }
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// The report a person reads at the end of a run.
pub fn render_text(s: &Summary, run_dir: &Path) -> String {
    let mut o = String::new();
    let head = if s.ok { "OK" } else { "NOT OK" };
    let _ = writeln!(
        o,
        "{head}: scenario {} {} in {:.1}s ({}{})",
        s.scenario,
        s.verdict.to_uppercase(),
        s.duration_s,
        if s.accel.is_empty() { "?" } else { &s.accel },
        if (s.timeout_scale - 1.0).abs() > f64::EPSILON {
            format!(", timeouts x{:.2}", s.timeout_scale)
        } else {
            String::new()
        }
    );
    if !s.message.is_empty() {
        let _ = writeln!(o, "  {}", s.message);
    }
    if (s.timeout_scale - 1.0).abs() > f64::EPSILON && !s.timeout_why.is_empty() {
        let _ = writeln!(o, "  step timeouts stretched: {}", s.timeout_why);
    }
    if !s.steps.is_empty() {
        let _ = writeln!(o, "  {:<8} {:>8} {:>8}  step", "status", "at", "took");
        for st in &s.steps {
            let mark = match st.status.as_str() {
                "met" if st.slow => "ok, slow",
                "met" => "ok",
                "failed" if s.verdict == "interrupted" => "STOPPED",
                "failed" if s.verdict == HARNESS_PANIC => "PANIC",
                "failed" => "FAILED",
                _ => "-",
            };
            let at = st
                .met_at
                .map(|t| format!("{t:.1}s"))
                .unwrap_or_else(|| "-".into());
            let took = if st.status == "skipped" {
                "-".to_string()
            } else {
                format!("{:.1}s", st.waited_s)
            };
            let _ = writeln!(o, "  {mark:<8} {at:>8} {took:>8}  {}", st.name);
        }
    }
    let rows = per_node::rows(s);
    if rows.len() > 1 {
        o.push_str(&per_node::render(&rows));
    }
    let slow: Vec<&str> = s
        .steps
        .iter()
        .filter(|st| st.slow)
        .map(|st| st.name.as_str())
        .collect();
    if !slow.is_empty() {
        let _ = writeln!(
            o,
            "  {} step(s) met only thanks to the timeout stretch (later than the scenario's `within`): {}",
            slow.len(),
            slow.join(", ")
        );
    }
    if let Some(f) = &s.failed_step {
        let _ = writeln!(o, "  failing step: {}", f.name);
        if let Some(c) = f.cause {
            let _ = writeln!(o, "  cause: {c}");
        }
        let _ = writeln!(o, "  reason: {}", f.reason);
        for e in &f.evidence {
            let _ = writeln!(o, "  evidence: {}", e.summary());
        }
        if f.within_s > 0.0 {
            let _ = writeln!(
                o,
                "  waited {:.1}s of the {:.0}s it was allowed",
                f.waited_s, f.within_s
            );
        }
    }
    if !s.ok || s.verdict != "passed" {
        for (node, tail) in &s.console_tail {
            let _ = writeln!(o, "  last {} console lines of {node}:", tail.len());
            for l in tail {
                let _ = writeln!(o, "    | {l}");
            }
        }
    }
    let _ = writeln!(o, "  artifacts: {}", run_dir.display());
    for a in &s.artifacts {
        let _ = writeln!(o, "    {:<28} {}", a.path, a.what);
    }
    o
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
        "node-disks.log" => "storage daemon exporting each node's own disk (a fleet)",
        "image-build.log" => "image build log",
        n if n.starts_with("ipxe-embedded-") => "the iPXE script the node's firmware ran first",
        "summary.json" => "verdict, step times, artifacts",
        "junit.xml" => "the run in JUnit, one test case per node",
        "timeline.svg" => "boot timeline picture",
        "harness.log" => "the harness's own log",
        _ => "",
    }
}

/// A run killed before its lab started has no summary; say what is known.
pub fn record_orphaned_run(run_dir: &Path) {
    if run_dir.join("summary.json").exists() {
        return;
    }
    let scenario = run_dir
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut s = Summary::error(
        &scenario,
        Path::new(""),
        "the run's process was killed (SIGKILL or a crash) before its lab started, leaving its \
         disk copy; a later run removed it"
            .into(),
    );
    s.verdict = "interrupted".into();
    s.artifacts = collect_artifacts(run_dir);
    if let Err(e) = s.write(run_dir) {
        tracing::warn!(run_dir = %run_dir.display(), "cannot write the summary of an orphaned run: {e}");
    }
}

#[cfg(test)]
mod tests;
