//! One rule for every test that needs root and boots guests (or needs the host that `ci/setup`
//! prepares): a machine that cannot run it never lets the suite pass quietly.
//!
//! - The machine can: the test runs.
//! - It cannot, under `CI=true`: the test fails with the reason. A CI machine must boot, so
//!   `NETBOOT_HARNESS_SKIP_BOOTS` is not honoured there.
//! - It cannot, with `NETBOOT_HARNESS_SKIP_BOOTS=1`: the test is reported ignored and the reason
//!   printed once. A plain `#[test]` cannot be marked ignored at run time, so it returns early
//!   after printing `ignored: <test>: <reason>` to stderr. Either way, when
//!   `NETBOOT_HARNESS_SKIP_LOG` names a file (`ci/test` sets it), the skipped tests are counted
//!   there, one line `<count>\t<what>\t<reason>` per decision, for `ci/test`'s last line.
//! - It cannot, otherwise (a developer's plain `cargo test`): the test fails with the reason and
//!   a hint to set `NETBOOT_HARNESS_SKIP_BOOTS=1`.
//!
//! Shared by the test binaries (`#[path]`) and the library's unit tests; each uses a part.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use libtest_mimic::{Arguments, Conclusion, Failed, Trial};

/// Set to `1` by a user who wants the suite without the boots this machine cannot do.
pub const SKIP_VAR: &str = "NETBOOT_HARNESS_SKIP_BOOTS";
/// A file to count skipped tests in (set by `ci/test`).
pub const SKIP_LOG_VAR: &str = "NETBOOT_HARNESS_SKIP_LOG";

/// What the rule makes of a test, given why this machine cannot run it (if it cannot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Run,
    Ignore(String),
    Fail(String),
}

/// The rule, with `CI` and `NETBOOT_HARNESS_SKIP_BOOTS` from the environment.
pub fn verdict(blocker: Option<String>) -> Verdict {
    verdict_for(blocker, env_is("CI", "true"), env_is(SKIP_VAR, "1"))
}

/// The rule itself; `ci` and `skip` passed in so it can be tested without touching the
/// environment of a multi-threaded test binary.
pub fn verdict_for(blocker: Option<String>, ci: bool, skip: bool) -> Verdict {
    let Some(why) = blocker else {
        return Verdict::Run;
    };
    if ci {
        Verdict::Fail(format!(
            "this machine cannot run it, and under CI=true that is a failure: {why}"
        ))
    } else if skip {
        Verdict::Ignore(why)
    } else {
        Verdict::Fail(format!(
            "this machine cannot run it: {why}\n\
             hint: {SKIP_VAR}=1 reports such tests ignored instead (README.md, Tests)"
        ))
    }
}

/// The test binary's name without cargo's hash, for the skip log.
fn this_binary() -> String {
    let arg0 = std::env::args().next().unwrap_or_default();
    let file = arg0.rsplit('/').next().unwrap_or_default();
    file.rsplit_once('-')
        .map_or(file, |(name, _)| name)
        .to_string()
}

fn env_is(var: &str, want: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == want)
}

/// For a plain `#[test]`: whether it should go on. Panics with the reason when the rule says
/// fail; prints `ignored: ...` and counts the test when it says ignore.
pub fn require(test: &str, blocker: Option<String>) -> bool {
    match verdict(blocker) {
        Verdict::Run => true,
        Verdict::Fail(why) => panic!("{test}: {why}"),
        Verdict::Ignore(why) => {
            eprintln!("ignored: {test}: {why}");
            record(1, test, &why);
            false
        }
    }
}

/// Counts `count` skipped tests in the file `NETBOOT_HARNESS_SKIP_LOG` names, if any. One
/// `write` per line with `O_APPEND`: test binaries and threads appending at once do not mix
/// their lines.
pub fn record(count: usize, what: &str, why: &str) {
    if let Some(path) = std::env::var_os(SKIP_LOG_VAR) {
        record_to(Path::new(&path), count, what, why);
    }
}

/// [`record`] into `path`: one line `<count>\t<what>\t<first line of why>`.
pub fn record_to(path: &Path, count: usize, what: &str, why: &str) {
    let why = why.lines().next().unwrap_or_default();
    let line = format!("{count}\t{what}\t{why}\n");
    let written = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        // The count would be wrong: say so loudly rather than report a smaller number.
        panic!("cannot count a skipped test in {path:?}: {e}");
    }
}

/// The rule for a libtest-mimic binary: decided once, applied to each trial that boots.
pub struct Boots {
    verdict: Verdict,
    /// The trials made under this rule, to count the ignored ones.
    gated: Vec<String>,
    /// Where to count them (`NETBOOT_HARNESS_SKIP_LOG`).
    log: Option<PathBuf>,
}

impl Boots {
    /// `blocker`: why this machine cannot boot, if it cannot (see `can_boot.rs`).
    pub fn new(blocker: Option<String>) -> Boots {
        let log = std::env::var_os(SKIP_LOG_VAR).map(PathBuf::from);
        Boots::with(verdict(blocker), log)
    }

    /// A given verdict and skip log, for testing the rule without the environment.
    pub fn with(verdict: Verdict, log: Option<PathBuf>) -> Boots {
        Boots {
            verdict,
            gated: Vec::new(),
            log,
        }
    }

    /// A trial that runs `f` when the machine can boot, fails with the reason or is ignored
    /// when it cannot. Run anyway (`--ignored`), an ignored one fails with the reason too.
    pub fn trial<F>(&mut self, name: impl Into<String>, f: F) -> Trial
    where
        F: FnOnce() -> Result<(), Failed> + Send + 'static,
    {
        let name = name.into();
        self.gated.push(name.clone());
        match &self.verdict {
            Verdict::Run => Trial::test(name, f),
            Verdict::Fail(why) => {
                let why = why.clone();
                Trial::test(name, move || Err(why.into()))
            }
            Verdict::Ignore(why) => {
                let why = format!("this machine cannot boot: {why}");
                Trial::test(name, move || Err(why.into())).with_ignored_flag(true)
            }
        }
    }

    /// `libtest_mimic::run`, and then, if the rule ignored trials this run would have run, the
    /// reason once and their count in the skip log.
    pub fn run(self, args: &Arguments, trials: Vec<Trial>) -> Conclusion {
        if let Verdict::Ignore(why) = &self.verdict {
            let skipped = trials
                .iter()
                .filter(|t| self.gated.iter().any(|g| g == t.name()))
                .filter(|t| !args.list && !args.is_filtered_out(t) && args.is_ignored(t))
                .count();
            if skipped > 0 {
                eprintln!("ignored: {skipped} tests that boot ({SKIP_VAR}=1): {why}");
                if let Some(log) = &self.log {
                    record_to(log, skipped, &this_binary(), why);
                }
            }
        }
        libtest_mimic::run(args, trials)
    }
}
