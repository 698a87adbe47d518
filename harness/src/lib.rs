//! netboot-harness: end-to-end tests for diskless network boot.
//!
//! Data flows one way through the modules:
//! [`scenario`] (parse + validate) -> [`image`] (build, cache, per-run copy) -> [`lab`] (netns,
//! bridge, taps) -> [`services`] (dhcp, http, iscsi) -> [`guest`] (qemu, serial) -> [`expect`]
//! (steps over console + service events) -> [`report`] (verdict, timeline, artifacts).

pub mod accel_probe;
pub mod attach;
pub mod bare;
pub mod bench;
pub mod boot_files;
pub mod console;
pub mod doctor;
pub mod events;
pub mod expect;
pub mod guest;
pub mod image;
pub mod iscsi_pdu;
pub mod iscsi_proxy;
pub mod lab;
pub mod logging;
pub mod paths;
pub mod process;
pub mod progress;
pub mod prune;
pub mod report;
pub mod rootless;
pub mod run;
pub mod scenario;
pub mod scratch;
pub mod services;
pub mod stdout;
pub mod tasks;
pub mod timeline;
pub mod timeouts;
pub mod tools;

/// The test suite's rule for tests this machine cannot run (README.md, Tests): the same file the
/// test binaries use, so unit tests follow it too.
#[cfg(test)]
#[path = "../../tests/support/boots.rs"]
mod test_boots;
