//! A node's QEMU that ended: the verdict of a step whose guest is gone, and the `qemu_exit`
//! step, met only by a guest poweroff.

use super::*;
use crate::support::process::CLEAN_EXIT;

/// The verdict of a step whose guest stopped under it.
pub(super) async fn guest_gone(io: &NodeIo, node: &str, action: &Action) -> Wait {
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

/// A `qemu_exit` step is met only by a guest that powered itself off: QEMU then exits with
/// status 0. Killed by a signal, crashed, or an exit nobody reported is a failure with that
/// status as its evidence.
pub(super) async fn powered_off(io: &NodeIo, node: &str, at: f64) -> Wait {
    let end = qemu_end(io).await;
    match end.status.as_deref() {
        Some(CLEAN_EXIT) => Wait::Met {
            at,
            detail: format!("QEMU {CLEAN_EXIT}: the guest powered off"),
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
pub(super) const EXIT_STATUS_WAIT: Duration = Duration::from_secs(2);

/// How a node's QEMU ended, as far as its owner has said.
pub(super) struct QemuEnd {
    /// `exited with status 0`, `killed by signal 9 (SIGKILL)`; `None` when nobody said.
    status: Option<String>,
    /// `QEMU exited, killed by signal 9 (SIGKILL)`, or only `QEMU exited` when the status is
    /// not known (a console without a process behind it).
    pub(super) words: String,
}

impl QemuEnd {
    pub(super) fn evidence(&self, node: &str) -> Vec<Evidence> {
        vec![Evidence::Exit {
            process: format!("{node}'s QEMU"),
            status: self
                .status
                .clone()
                .unwrap_or_else(|| "ended; its status was not reported".into()),
        }]
    }
}

pub(super) async fn qemu_end(io: &NodeIo) -> QemuEnd {
    let known = tokio::time::timeout(EXIT_STATUS_WAIT, async {
        io.console.wait_until(|c| c.ended().is_some()).await;
        io.console.ended()
    })
    .await;
    match known {
        Ok(Some(how)) => QemuEnd {
            words: if how.starts_with("exited") {
                format!("QEMU {how}")
            } else {
                format!("QEMU exited, {how}")
            },
            status: Some(how),
        },
        Ok(None) | Err(_) => QemuEnd {
            status: None,
            words: "QEMU exited".into(),
        },
    }
}
