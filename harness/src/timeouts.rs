//! How far a run stretches its scenario's step timeouts on this machine.
//!
//! A scenario's `within` values are written for the slow case the suite runs in: software
//! emulation (TCG) with a free host core for every guest vCPU. TCG executes each vCPU on a host
//! thread, so a guest sharing its cores with other busy processes (another run, a build) is
//! slower by about the ratio of demand to cores, and a bound that holds on an idle machine turns
//! into a flaky failure on a loaded one. Under TCG the bounds are therefore stretched by that
//! ratio. Under KVM they stay as written: a KVM guest is faster than the bounds assume, but
//! several steps wait on wall-clock time that KVM does not shorten (fault-plan outages, retry
//! sleeps in iPXE scripts, iSCSI timeouts), so shrinking them would trade a quicker failure for
//! false ones. `--timeout-scale` multiplies on top of either.

use crate::guest::Accel;

/// More than this many times slower and the machine is too busy for a bound to mean anything;
/// the run says so in its `why` rather than waiting forever.
pub const MAX_LOAD_FACTOR: f64 = 3.0;

#[derive(Debug, Clone, PartialEq)]
pub struct TimeoutScale {
    /// What every step's `within` is multiplied by.
    pub factor: f64,
    /// One line for the report and `summary.json`: where the factor comes from.
    pub why: String,
}

/// What the host looked like when the run started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostLoad {
    /// Runnable processes, the kernel's one-minute load average.
    pub busy: f64,
    pub cores: usize,
}

impl HostLoad {
    /// Read from `/proc/loadavg` and the CPUs this process may use; `None` when either is
    /// unreadable (the bounds then stay as written).
    pub fn now() -> Option<HostLoad> {
        let text = std::fs::read_to_string("/proc/loadavg").ok()?;
        let busy = text.split_whitespace().next()?.parse::<f64>().ok()?;
        let cores = std::thread::available_parallelism().ok()?.get();
        Some(HostLoad { busy, cores })
    }
}

/// The factor for a run of `guest_vcpus` vCPUs under `accel`, on top of the user's `user_scale`.
pub fn scale(
    accel: Accel,
    user_scale: f64,
    guest_vcpus: u32,
    load: Option<HostLoad>,
) -> TimeoutScale {
    let user = if (user_scale - 1.0).abs() > f64::EPSILON {
        format!(" x{user_scale} (--timeout-scale)")
    } else {
        String::new()
    };
    match (accel, load) {
        (Accel::Kvm, _) => TimeoutScale {
            factor: user_scale,
            why: format!("KVM: step bounds as written{user}"),
        },
        (Accel::Tcg, None) => TimeoutScale {
            factor: user_scale,
            why: format!("TCG: host load unknown, step bounds as written{user}"),
        },
        (Accel::Tcg, Some(l)) => {
            let demand = l.busy.max(0.0) + f64::from(guest_vcpus);
            let ratio = demand / l.cores.max(1) as f64;
            let load = ratio.clamp(1.0, MAX_LOAD_FACTOR);
            let capped = if ratio > MAX_LOAD_FACTOR {
                format!(", capped at x{MAX_LOAD_FACTOR}")
            } else {
                String::new()
            };
            TimeoutScale {
                factor: user_scale * load,
                why: format!(
                    "TCG: load {:.1} + {guest_vcpus} guest vCPU(s) on {} core(s): x{load:.2}{capped}{user}",
                    l.busy, l.cores
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(busy: f64, cores: usize) -> Option<HostLoad> {
        Some(HostLoad { busy, cores })
    }

    #[test]
    fn an_idle_machine_with_a_core_per_vcpu_keeps_the_bounds() {
        let s = scale(Accel::Tcg, 1.0, 1, load(0.3, 2));
        assert_eq!(s.factor, 1.0);
        assert!(s.why.contains("x1.00"), "{}", s.why);
    }

    #[test]
    fn tcg_stretches_with_the_demand_per_core() {
        // Another run's guest busy on a 2-core machine, plus this run's one vCPU.
        let s = scale(Accel::Tcg, 1.0, 1, load(2.0, 2));
        assert!((s.factor - 1.5).abs() < 1e-9, "{s:?}");
        // Two guests of this run alone oversubscribe one core.
        assert!((scale(Accel::Tcg, 1.0, 2, load(0.0, 1)).factor - 2.0).abs() < 1e-9);
        // The user's scale multiplies on top.
        let s = scale(Accel::Tcg, 2.0, 1, load(2.0, 2));
        assert!((s.factor - 3.0).abs() < 1e-9, "{s:?}");
        assert!(s.why.contains("--timeout-scale"), "{}", s.why);
    }

    #[test]
    fn the_stretch_is_capped_and_says_so() {
        let s = scale(Accel::Tcg, 1.0, 1, load(40.0, 2));
        assert_eq!(s.factor, MAX_LOAD_FACTOR);
        assert!(s.why.contains("capped"), "{}", s.why);
    }

    #[test]
    fn kvm_and_unknown_load_keep_the_written_bounds() {
        assert_eq!(scale(Accel::Kvm, 1.0, 4, load(9.0, 1)).factor, 1.0);
        assert_eq!(scale(Accel::Kvm, 2.0, 1, None).factor, 2.0);
        assert_eq!(scale(Accel::Tcg, 1.0, 1, None).factor, 1.0);
    }

    #[test]
    fn the_host_load_reads() {
        let l = HostLoad::now().expect("/proc/loadavg and the CPU count are readable on Linux");
        assert!(l.cores >= 1 && l.busy >= 0.0, "{l:?}");
    }
}
