//! How far a run stretches its scenario's step timeouts on this machine.
//!
//! A scenario's `within` values are written for the slow case the suite runs in: software
//! emulation (TCG) with a free host core for every guest vCPU. TCG executes each vCPU on a host
//! thread, so a guest sharing its cores with other busy processes (another run, a build) is
//! slower by the share of a core its threads get, and a bound that holds on an idle machine
//! turns into a flaky failure on a loaded one. Under TCG the waits are therefore stretched by
//! that share, measured by this run itself just before its guests start: one probe thread per
//! guest vCPU spins for a moment, and the ratio of its wall time to the CPU time the kernel gave
//! it is how much slower a vCPU thread would run now. A host-wide load average would count
//! processes that are not competing (sleeping in I/O) and lag a minute behind.
//!
//! Under KVM the waits stay as written: a KVM guest is faster than the bounds assume, but
//! several steps wait on wall-clock time that KVM does not shorten (fault-plan outages, retry
//! sleeps in iPXE scripts, iSCSI timeouts), so shrinking them would trade a quicker failure for
//! false ones. `--timeout-scale` multiplies on top of either. A step's `bound` (as opposed to
//! its `within`) is the assertion itself and is never stretched.

use std::time::{Duration, Instant};

use crate::guest::Accel;

/// More than this many times slower and the machine is too busy for a bound to mean anything;
/// the run says so in its `why` rather than waiting forever.
pub const MAX_LOAD_FACTOR: f64 = 3.0;

/// How long each probe thread spins. Long enough for the scheduler to share the cores out
/// (its slices are a few milliseconds), short enough not to delay a run noticeably.
const PROBE_SPIN: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, PartialEq)]
pub struct TimeoutScale {
    /// What every step's `within` is multiplied by.
    pub factor: f64,
    /// One line for the report and `summary.json`: where the factor comes from.
    pub why: String,
}

/// The share of a core the run's vCPU threads can expect, as measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Contention {
    /// Wall time over CPU time of the slowest probe thread: 1.0 on an idle machine, 2.0 when a
    /// thread gets half a core.
    pub slowdown: f64,
    /// How many probe threads ran at once (the run's guest vCPUs).
    pub threads: u32,
}

impl Contention {
    /// Spins `threads` threads at once and measures how much CPU each got; `None` when the
    /// thread CPU clock is unreadable (the bounds then stay as written).
    pub fn measure(threads: u32) -> Option<Contention> {
        let threads = threads.max(1);
        let handles: Vec<_> = (0..threads)
            .map(|_| std::thread::spawn(spin_and_measure))
            .collect();
        let mut worst: f64 = 1.0;
        for h in handles {
            let ratio = h.join().ok()??;
            worst = worst.max(ratio);
        }
        Some(Contention {
            slowdown: worst,
            threads,
        })
    }
}

/// Busy-waits [`PROBE_SPIN`] of wall time; returns wall time over this thread's CPU time.
fn spin_and_measure() -> Option<f64> {
    let cpu0 = thread_cpu()?;
    let start = Instant::now();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while start.elapsed() < PROBE_SPIN {
        for _ in 0..10_000 {
            x = x.rotate_left(5) ^ x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        }
        std::hint::black_box(x);
    }
    let wall = start.elapsed();
    let cpu = thread_cpu()?.saturating_sub(cpu0);
    if cpu.is_zero() {
        return None;
    }
    Some(wall.as_secs_f64() / cpu.as_secs_f64())
}

/// CPU time this thread has used.
fn thread_cpu() -> Option<Duration> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).ok()?;
    Some(Duration::new(
        u64::try_from(t.tv_sec()).ok()?,
        u32::try_from(t.tv_nsec()).ok()?,
    ))
}

/// The factor for a run under `accel`, on top of the user's `user_scale`, given the measured
/// contention.
pub fn scale(accel: Accel, user_scale: f64, measured: Option<Contention>) -> TimeoutScale {
    let user = if (user_scale - 1.0).abs() > f64::EPSILON {
        format!(" x{user_scale} (--timeout-scale)")
    } else {
        String::new()
    };
    match (accel, measured) {
        (Accel::Kvm, _) => TimeoutScale {
            factor: user_scale,
            why: format!("KVM: step bounds as written{user}"),
        },
        (Accel::Tcg, None) => TimeoutScale {
            factor: user_scale,
            why: format!("TCG: CPU share unknown, step bounds as written{user}"),
        },
        (Accel::Tcg, Some(c)) => {
            let load = c.slowdown.clamp(1.0, MAX_LOAD_FACTOR);
            let capped = if c.slowdown > MAX_LOAD_FACTOR {
                format!(", capped at x{MAX_LOAD_FACTOR}")
            } else {
                String::new()
            };
            TimeoutScale {
                factor: user_scale * load,
                why: format!(
                    "TCG: {} probe thread(s), one per guest vCPU, got 1/{:.2} of a core each: x{load:.2}{capped}{user}",
                    c.threads, c.slowdown
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(slowdown: f64) -> Option<Contention> {
        Some(Contention {
            slowdown,
            threads: 1,
        })
    }

    #[test]
    fn an_idle_machine_keeps_the_bounds() {
        let s = scale(Accel::Tcg, 1.0, measured(1.01));
        assert!((s.factor - 1.01).abs() < 1e-9, "{s:?}");
        assert!(s.why.contains("x1.01"), "{}", s.why);
        // Never shrunk below the written bounds.
        assert_eq!(scale(Accel::Tcg, 1.0, measured(0.97)).factor, 1.0);
    }

    #[test]
    fn tcg_stretches_by_the_measured_share() {
        let s = scale(Accel::Tcg, 1.0, measured(1.5));
        assert!((s.factor - 1.5).abs() < 1e-9, "{s:?}");
        // The user's scale multiplies on top.
        let s = scale(Accel::Tcg, 2.0, measured(1.5));
        assert!((s.factor - 3.0).abs() < 1e-9, "{s:?}");
        assert!(s.why.contains("--timeout-scale"), "{}", s.why);
    }

    #[test]
    fn the_stretch_is_capped_and_says_so() {
        let s = scale(Accel::Tcg, 1.0, measured(20.0));
        assert_eq!(s.factor, MAX_LOAD_FACTOR);
        assert!(s.why.contains("capped"), "{}", s.why);
    }

    #[test]
    fn kvm_and_unknown_share_keep_the_written_bounds() {
        assert_eq!(scale(Accel::Kvm, 1.0, measured(9.0)).factor, 1.0);
        assert_eq!(scale(Accel::Kvm, 2.0, None).factor, 2.0);
        assert_eq!(scale(Accel::Tcg, 1.0, None).factor, 1.0);
    }

    #[test]
    fn the_probe_sees_competition() {
        // Alone, a probe thread gets (nearly) a whole core.
        let alone = Contention::measure(1).expect("the thread CPU clock is readable on Linux");
        assert!(alone.slowdown >= 1.0, "{alone:?}");
        // More spinning threads than cores: each gets a share, and the probe says so.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        let crowded = Contention::measure(cores * 3).unwrap();
        assert!(
            crowded.slowdown > 2.0,
            "{} threads on {cores} cores: {crowded:?}",
            cores * 3
        );
    }
}
