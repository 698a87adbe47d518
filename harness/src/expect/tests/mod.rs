//! The step engine's unit tests, on the test rig (`super::test_rig`): consoles fed by hand and
//! records pushed into the event log, no QEMU.

mod console;
mod oracle;
mod records;
mod shell_and_exit;
