//! Waiting for one step: looks at the consoles and the records, wakes when either changes,
//! and ends at the first evidence that meets the step or a failure text that ends it.

use super::exit::{guest_gone, powered_off, qemu_end};
use super::records::{all_logins, event_matches, no_login, no_logout, record_of_node};
use super::shell::{shell_failed, shell_line};
use super::*;

/// How often a `lun_bytes` step reads the disk copy again.
pub(super) const LUN_POLL: Duration = Duration::from_millis(250);

/// What a step needs to know about the run besides its own node.
pub(super) struct StepCx<'a> {
    pub(super) index: usize,
    pub(super) nodes: &'a BTreeMap<String, NodeIo>,
    pub(super) fail_from: &'a BTreeMap<String, usize>,
    pub(super) fail_on: &'a [FailPattern],
    pub(super) events: &'a EventLog,
    pub(super) control: &'a dyn LabControl,
    /// Run time before which a service record cannot meet this step.
    pub(super) records_from: f64,
    pub(super) scenario: &'a Scenario,
    /// Lines the harness typed on each node's console: their echo is the harness's own text,
    /// never evidence.
    pub(super) typed: &'a std::sync::Mutex<BTreeMap<String, Vec<String>>>,
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
pub(super) async fn type_line(io: &NodeIo, text: &str) -> Result<(), String> {
    // A serial console's line discipline ends input lines at CR.
    let mut bytes = text.as_bytes().to_vec();
    bytes.push(b'\r');
    io.input
        .send(bytes)
        .await
        .map_err(|_| "the guest's console input is closed (QEMU exited)".to_string())
}

pub(super) async fn wait_step(
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
        Action::PortalDown(which) => {
            return match cx.control.portal_down(*which).await {
                Ok(detail) => Wait::Met {
                    at: events.clock().now(),
                    detail,
                },
                Err(e) => Wait::Failed(Fail::action(format!(
                    "taking the {} portal down: {e}",
                    which.name()
                ))),
            };
        }
        Action::Machine(m) => {
            return match cx.control.machine(&step.node, m).await {
                Ok(detail) => Wait::Met {
                    at: events.clock().now(),
                    detail,
                },
                Err(e) => Wait::Failed(Fail::action(format!("{}: {e}", m.describe()))),
            };
        }
        Action::DhcpAddHost(host) => {
            return match cx.control.add_dhcp_host(host.clone()).await {
                Ok(detail) => Wait::Met {
                    at: events.clock().now(),
                    detail,
                },
                Err(e) => Wait::Failed(Fail::action(format!("adding DHCP host {}: {e}", host.mac))),
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
        Action::LunBytes { .. } => match cx.control.lun_file(&step.node) {
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
            // Absence is judged at once, over every record so far.
            Action::NoLogin { .. } | Action::NoLogout { .. } => {
                let all = events.snapshot();
                let judged = match &step.action {
                    Action::NoLogin { .. } => no_login(&step.action, &all),
                    _ => no_logout(&step.action, &all),
                };
                return match judged {
                    Ok(detail) => Wait::Met {
                        at: events.clock().now(),
                        detail,
                    },
                    Err(fail) => Wait::Failed(fail),
                };
            }
            action => {
                let all = events.snapshot();
                // Only records from after the step this one follows: an earlier record belongs
                // to an earlier phase (iPXE's login is not the initramfs's).
                let found = all.iter().enumerate().find(|(i, e)| {
                    !consumed.contains(i)
                        && e.at >= cx.records_from
                        && event_matches(action, e)
                        && record_of_node(e, &step.node)
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
pub(super) fn check_report(step: &Step, cx: &StepCx<'_>, lines: &[ConsoleLine]) -> Wait {
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

/// `len` bytes of `path` from `offset`; fewer when the file ends first.
pub(super) fn read_at(path: &std::path::Path, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
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
pub(super) async fn futures_select_any<F: std::future::Future + Unpin>(
    futs: impl Iterator<Item = F>,
) {
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
pub(super) fn check_fail_patterns(
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
