//! What every stage may use, and nothing in here uses a stage: where files go, child processes
//! the harness owns, supervised tasks, finding host tools, logging, printing to a reader that
//! may go away, and the iSCSI login PDU parser the scenario format and the login proxy share.

pub mod filesink;
pub mod iscsi_pdu;
pub mod logging;
pub mod paths;
pub mod process;
pub mod progress;
pub mod rootless;
pub mod stdout;
pub mod tasks;
pub mod tools;
