//! The `shell` step's protocol (the command typed with its status echoed after it) and the
//! verdicts of a shell that failed or stopped answering, with the kernel's lines about the root
//! disk as their evidence.

use super::*;

/// Console texts that tell why a guest lost its root disk, for the verdict of a shell that
/// stopped answering.
pub(super) const ROOT_LOSS_TEXTS: &[&str] = &[
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

/// The verdict for a shell command that never finished.
pub(super) fn shell_silent(
    cmd: &str,
    typed_at: f64,
    within: f64,
    node: &str,
    since: &[ConsoleLine],
) -> Fail {
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
pub(super) fn shell_failed(cmd: &str, status: &str, node: &str, before: &[ConsoleLine]) -> Fail {
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
pub(super) const MAX_LOSS_EVIDENCE: usize = 10;

/// The console lines among `lines` that say the root disk is in trouble.
pub(super) fn root_loss(lines: &[ConsoleLine]) -> Vec<ConsoleLine> {
    lines
        .iter()
        .filter(|l| ROOT_LOSS_TEXTS.iter().any(|t| l.text.contains(t)))
        .take(MAX_LOSS_EVIDENCE)
        .cloned()
        .collect()
}

pub(super) fn root_loss_words(loss: &[ConsoleLine], first: &ConsoleLine) -> String {
    format!(
        "; the console shows why, {} line(s) about the root disk since, first at {:.1}s: {:?}",
        loss.len(),
        first.at,
        first.text.trim()
    )
}

/// The line a `shell` step types: the command, then its exit status on a line of its own.
/// The echo of the typed line shows `$?`, never digits, so only the output can match.
pub(super) fn shell_line(index: usize, cmd: &str) -> (String, regex::Regex) {
    let tag = format!("netboot-harness: step {} exit", index + 1);
    let typed = format!("{cmd}; echo \"{tag} $?\"");
    let re = regex::Regex::new(&format!(r"{} (\d+)\s*$", regex::escape(&tag)))
        .expect("escaped text is a valid regex");
    (typed, re)
}
