//! netboot-harness: end-to-end tests for diskless network boot.
//!
//! One run flows one way through the stages, each a module: a later stage may use an earlier
//! one, never the reverse (`tests/architecture.rs` checks it; ARCHITECTURE.md tells the story).
//!
//! [`scenario`] (parse + validate) -> [`image`] (build, cache, per-run copy) -> [`lab`] (netns,
//! bridge, taps) -> [`services`] (dhcp, http, iscsi, and their records) -> [`guest`] (QEMU,
//! serial console) -> [`expect`] (steps over consoles and records, the verdict) -> [`report`]
//! (summary, text, timeline) -> [`cli`] (the verbs, and the orchestration of a run).
//!
//! [`support`] holds what every stage may use: paths, owned child processes, supervised tasks,
//! tool lookup, logging, the iSCSI login PDU parser.

pub mod support;

pub mod scenario;

pub mod image;

pub mod lab;

pub mod services;

pub mod guest;

pub mod expect;

pub mod report;

pub mod cli;

/// The test suite's rule for tests this machine cannot run (README.md, Tests): the same file the
/// test binaries use, so unit tests follow it too.
#[cfg(test)]
#[path = "../../tests/support/boots.rs"]
mod test_boots;
