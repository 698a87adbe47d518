//! The fault plan "this service is down for a while": windows on the run clock, checked so that
//! each one is a real outage the scenario can observe (the service was up before it, and up
//! again between two of them).

use std::time::Duration;

use super::values::MAX_WAIT;

/// More windows than this is no longer a plan a person can read.
pub const MAX_WINDOWS: usize = 16;

/// The service is down from `at` (run clock, seconds from the lab's start) for `length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownWindow {
    pub at: Duration,
    pub length: Duration,
}

impl DownWindow {
    /// When the service is up again.
    pub fn until(&self) -> Duration {
        self.at + self.length
    }
}

/// Why a window is refused: which one (index in the list), what is wrong, and a hint.
#[derive(Debug, PartialEq, Eq)]
pub struct WindowError {
    pub index: usize,
    pub message: String,
    pub help: Option<String>,
}

/// Checks the windows as written, `(at, for)` in list order, against the service's late start.
pub fn check(
    written: &[(Duration, Duration)],
    start_after: Option<Duration>,
) -> Result<Vec<DownWindow>, WindowError> {
    let fail = |index: usize, message: String, help: Option<&str>| WindowError {
        index,
        message,
        help: help.map(str::to_string),
    };
    if written.len() > MAX_WINDOWS {
        return Err(fail(
            MAX_WINDOWS,
            format!("more than {MAX_WINDOWS} down windows"),
            Some("merge windows that are close together"),
        ));
    }
    let mut out: Vec<DownWindow> = Vec::with_capacity(written.len());
    for (i, &(at, length)) in written.iter().enumerate() {
        let w = DownWindow { at, length };
        if let Some(start) = start_after.filter(|s| at <= *s) {
            // A window that begins before the late start would only extend it.
            return Err(fail(
                i,
                format!(
                    "down window at {} begins before the service has started (start_after: {})",
                    secs(at),
                    secs(start)
                ),
                Some("a window comes after start_after; a longer start_after keeps it down from power-on"),
            ));
        }
        if w.until() > MAX_WAIT {
            return Err(fail(
                i,
                format!(
                    "down window ends at {}, after the 1h limit of a run",
                    secs(w.until())
                ),
                None,
            ));
        }
        if let Some(prev) = out.last() {
            if at < prev.until() {
                return Err(fail(
                    i,
                    format!(
                        "down window at {} overlaps or comes before the one before it ({} to {})",
                        secs(at),
                        secs(prev.at),
                        secs(prev.until())
                    ),
                    Some("list windows in time order, without overlap"),
                ));
            }
            if at == prev.until() {
                return Err(fail(
                    i,
                    format!(
                        "down window at {} begins when the one before it ends: the service is never up between them",
                        secs(at)
                    ),
                    Some("write them as one window"),
                ));
            }
        }
        out.push(w);
    }
    Ok(out)
}

fn secs(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn windows_in_order_with_up_time_between_are_kept() {
        let w = check(&[(s(60), s(20)), (s(100), s(5))], Some(s(30))).unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].until(), s(80));
        assert_eq!(w[1].until(), s(105));
    }

    #[test]
    fn overlap_and_disorder_are_refused_at_the_later_window() {
        let e = check(&[(s(60), s(20)), (s(70), s(5))], None).unwrap_err();
        assert_eq!(e.index, 1);
        assert!(e.message.contains("overlaps"), "{e:?}");
        assert!(e.message.contains("1m to 1m 20s"), "{e:?}");
        let e = check(&[(s(60), s(20)), (s(10), s(5))], None).unwrap_err();
        assert_eq!(e.index, 1);
        assert!(e.help.unwrap().contains("time order"));
    }

    #[test]
    fn touching_windows_are_one_window() {
        let e = check(&[(s(60), s(20)), (s(80), s(5))], None).unwrap_err();
        assert_eq!(e.index, 1);
        assert!(e.message.contains("never up between them"), "{e:?}");
    }

    #[test]
    fn a_window_must_come_after_the_late_start() {
        for at in [10, 30] {
            let e = check(&[(s(at), s(20))], Some(s(30))).unwrap_err();
            assert_eq!(e.index, 0);
            assert!(e.message.contains("start_after: 30s"), "{e:?}");
        }
        assert!(check(&[(s(31), s(20))], Some(s(30))).is_ok());
    }

    #[test]
    fn bounds() {
        let e = check(&[(s(3500), s(200))], None).unwrap_err();
        assert!(e.message.contains("1h limit"), "{e:?}");
        let many: Vec<_> = (0..=MAX_WINDOWS as u64)
            .map(|i| (s(10 + i * 10), s(1)))
            .collect();
        let e = check(&many, None).unwrap_err();
        assert_eq!(e.index, MAX_WINDOWS);
        assert!(check(&many[..MAX_WINDOWS], None).is_ok());
    }
}
