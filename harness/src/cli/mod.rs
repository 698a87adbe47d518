//! The last stage: the verbs of the `netboot-harness` command and the orchestration of a run
//! (`run`: the host side and the lab process, which drive every earlier stage in order), the
//! benchmark and its bare-QEMU arm, `doctor`, the `--keep` console attach and the progress board.
//! Only `main.rs` uses this module.

pub mod attach;
pub mod bare;
pub mod bench;
pub mod bench_sampler;
pub mod doctor;
pub mod progress;
pub mod run;
