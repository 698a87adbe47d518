//! Boot progress on the terminal: one line per node with the name of the last step it met,
//! drawn on the shared progress board.

use crate::expect::{StepObserver, StepResult, StepStatus};
use crate::support::progress::Board;

/// Boot progress: one line per node with the name of the last step it met.
pub struct BootProgress {
    board: Board,
}

impl BootProgress {
    pub fn start() -> Option<BootProgress> {
        Board::start().map(|board| BootProgress { board })
    }

    /// A node's guest started: its clock starts now.
    pub fn node_started(&self, node: &str) {
        self.board.line(node, node, "started");
    }
}

impl StepObserver for BootProgress {
    fn step_ended(&self, r: &StepResult) {
        match r.status {
            StepStatus::Met => self.board.set(&r.node, &r.name),
            StepStatus::Failed => self.board.set(&r.node, &format!("FAILED at {}", r.name)),
            StepStatus::Skipped => {}
        }
    }
}
