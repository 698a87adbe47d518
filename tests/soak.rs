//! Soak: many runs in a row, ending every way a run can end, and nothing left behind.
//!
//! `NETBOOT_HARNESS_SOAK_RUNS` runs (default 4) cycle through: a passing boot (the default
//! scenario cut short at the root mount), SIGTERM to `netboot-harness` mid-boot (as a CI runner
//! stops a job), an expected failure (`sanboot-wrong-target`), SIGKILL mid-boot, a step that
//! times out, Ctrl-C (SIGINT to the whole process group) mid-boot, and SIGTERM and SIGKILL
//! during the per-run disk copy, before the lab exists. The mid-boot interrupts land at
//! different points of the boot from one round to the next.
//!
//! A SIGKILL during the copy cannot be cleaned up by the run itself: the next run must remove
//! its `scratch` folder (its lock is free) and give it an `interrupted` summary. If the soak
//! ends on such a run, one more run (the expected failure) is made to sweep it.
//!
//! After each run and again at the end: no process of any run remains (found by
//! `NETBOOT_HARNESS_RUN`, see `support/leftovers.rs`), no interface, named namespace, loop
//! device or mount was added on the host, no temporary file is left (image build trees, the
//! per-run `scratch` copy, sockets, half-written summaries), and every run directory holds a
//! `summary.json` whose verdict matches how the run ended, and (once a guest ran) the raw
//! console log.
//!
//! Ignored by default (under a minute at the default count under TCG, half an hour at 50):
//! `NETBOOT_HARNESS_SOAK_RUNS=50 cargo test --test soak -- --ignored`

use std::collections::BTreeSet;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};

#[path = "support/can_boot.rs"]
mod can_boot;
#[path = "support/leftovers.rs"]
mod leftovers;
use leftovers::{host_state, in_use, processes_of, run_dirs, wait_for, wait_processes_gone};

const DEFAULT_RUNS: usize = 4;

/// The step the step-timeout run waits for in vain.
const NEVER_STEP: &str = "a line that never comes";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Pass,
    ExpectedFailure,
    StepTimeout,
    Interrupt(Sig),
    /// SIGTERM while the per-run disk copy is being made, before the lab exists.
    EarlyTerm,
    /// SIGKILL at the same point: only a later run can remove what it leaves.
    EarlyKill,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Sig {
    /// Ctrl-C: the terminal signals the whole foreground process group.
    Int,
    /// A CI runner or `kill`: the harness process only.
    Term,
    /// No chance to clean up in the harness process itself.
    Kill,
}

/// The order runs take: the first five (what `ci/test` runs) already cover a pass, an expected
/// failure, an interrupt the harness can see (SIGTERM) and one it cannot (SIGKILL), mid-boot
/// and during the disk copy (swept by the run after it). tests/cleanup.rs covers Ctrl-C on its
/// own, so it comes late.
const CYCLE: [Kind; 8] = [
    Kind::Pass,
    Kind::Interrupt(Sig::Term),
    Kind::EarlyKill,
    Kind::ExpectedFailure,
    Kind::Interrupt(Sig::Kill),
    Kind::StepTimeout,
    Kind::Interrupt(Sig::Int),
    Kind::EarlyTerm,
];

/// Seconds after the first console bytes at which the n-th interrupt lands: firmware and DHCP,
/// sanboot and the kernel, the initramfs login, the booted system.
const INTERRUPT_AFTER: [u64; 4] = [2, 8, 15, 22];

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Pass => "pass",
            Kind::ExpectedFailure => "expected failure",
            Kind::StepTimeout => "step timeout",
            Kind::Interrupt(Sig::Int) => "SIGINT (group)",
            Kind::Interrupt(Sig::Term) => "SIGTERM",
            Kind::Interrupt(Sig::Kill) => "SIGKILL",
            Kind::EarlyTerm => "SIGTERM (copy)",
            Kind::EarlyKill => "SIGKILL (copy)",
        }
    }
}

/// The scenario files the soak runs, written to its own folder so a shortened copy never sits
/// among the shipped scenarios.
struct Scenarios {
    pass: PathBuf,
    step_timeout: PathBuf,
    wrong_target: PathBuf,
    full: PathBuf,
}

impl Scenarios {
    fn write(dir: &Path) -> Result<Scenarios, Failed> {
        let shipped = root().join("scenarios");
        let default = std::fs::read_to_string(shipped.join("debian-ibft-e1000.yaml"))
            .map_err(|e| format!("scenarios/debian-ibft-e1000.yaml: {e}"))?;
        std::fs::create_dir_all(dir.join("boot")).map_err(|e| e.to_string())?;
        // HTTP files are found next to the scenario.
        std::fs::copy(
            shipped.join("boot/sanboot.ipxe"),
            dir.join("boot/sanboot.ipxe"),
        )
        .map_err(|e| format!("copying boot/sanboot.ipxe: {e}"))?;

        // Up to and including the root mount: the whole network-boot chain in half the time.
        let pass = cut_before(&default, "  - name: the marker sees the root")?;
        let pass = rename(&pass, "soak-pass")?;
        // Firmware, then a line the guest never prints, with a short limit.
        let timeout = cut_before(&default, "  - name: iPXE started")?;
        let timeout = format!(
            "{}  - name: {NEVER_STEP}\n    console: \"netboot-harness soak: never printed\"\n    within: 5s\n",
            rename(&timeout, "soak-step-timeout")?
        );
        let s = Scenarios {
            pass: dir.join("soak-pass.yaml"),
            step_timeout: dir.join("soak-step-timeout.yaml"),
            wrong_target: shipped.join("sanboot-wrong-target.yaml"),
            full: shipped.join("debian-ibft-e1000.yaml"),
        };
        std::fs::write(&s.pass, pass).map_err(|e| e.to_string())?;
        std::fs::write(&s.step_timeout, timeout).map_err(|e| e.to_string())?;
        Ok(s)
    }

    fn for_kind(&self, k: Kind) -> &Path {
        match k {
            Kind::Pass => &self.pass,
            Kind::ExpectedFailure => &self.wrong_target,
            Kind::StepTimeout => &self.step_timeout,
            // The whole boot, so every interrupt point is still mid-boot.
            Kind::Interrupt(_) | Kind::EarlyTerm | Kind::EarlyKill => &self.full,
        }
    }
}

/// The text before `marker`'s line; fails loudly if the default scenario changed shape.
fn cut_before(text: &str, marker: &str) -> Result<String, Failed> {
    let at = text
        .find(&format!("\n{marker}"))
        .ok_or_else(|| format!("scenarios/debian-ibft-e1000.yaml has no line `{marker}`"))?;
    Ok(text[..=at].to_string())
}

fn rename(text: &str, name: &str) -> Result<String, Failed> {
    let old = "name: debian-ibft-e1000\n";
    if !text.starts_with(old) {
        return Err(format!("scenarios/debian-ibft-e1000.yaml does not start with `{old}`").into());
    }
    Ok(format!("name: {name}\n{}", &text[old.len()..]))
}

/// One line of the table.
struct Row {
    n: usize,
    kind: Kind,
    exit: String,
    verdict: String,
    failed_step: String,
    secs: f64,
    problems: Vec<String>,
    /// What `netboot-harness` printed, shown when something is wrong.
    output: PathBuf,
    /// The run's directory, once there is one.
    run: Option<PathBuf>,
    status: Option<ExitStatus>,
}

struct Soak {
    dir: PathBuf,
    runs: PathBuf,
    scenarios: Scenarios,
    timeout_scale: Option<String>,
}

impl Soak {
    fn command(&self, scenario: &Path) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_netboot-harness"));
        c.current_dir(root())
            .stdin(Stdio::null())
            .arg("run")
            .arg("--runs-dir")
            .arg(&self.runs);
        if let Some(scale) = &self.timeout_scale {
            c.arg("--timeout-scale").arg(scale);
        }
        c.arg(scenario);
        c
    }

    fn run_one(&self, n: usize, kind: Kind, interrupt_no: usize) -> Row {
        let t = Instant::now();
        let out_path = self.dir.join(format!("run-{n:03}.out"));
        let mut row = Row {
            n,
            kind,
            exit: "-".into(),
            verdict: "-".into(),
            failed_step: "-".into(),
            secs: 0.0,
            problems: Vec::new(),
            output: out_path.clone(),
            run: None,
            status: None,
        };
        let before: BTreeSet<PathBuf> = run_dirs(&self.runs).into_iter().collect();
        match self.boot(kind, interrupt_no, &before, &out_path) {
            Ok((status, run)) => {
                row.exit = describe(status);
                row.status = Some(status);
                match run {
                    Some(run) => {
                        if let Err(e) = wait_processes_gone(&run) {
                            row.problems.push(e.message().unwrap_or("").to_string());
                        }
                        if kind == Kind::EarlyKill {
                            // Judged after the next run, which must sweep it.
                            row.problems.extend(verdict_problems(
                                kind,
                                status,
                                &serde_json::Value::Null,
                            ));
                        } else {
                            let found = check_run_dir(&run, kind, status, &mut row);
                            row.problems.extend(found);
                        }
                        row.run = Some(run);
                    }
                    None => row.problems.push("no run directory was created".into()),
                }
            }
            Err(e) => row.problems.push(e.message().unwrap_or("").to_string()),
        }
        row.secs = t.elapsed().as_secs_f64();
        row
    }

    /// Runs the harness to its end (interrupting it when the kind says so); returns how it
    /// exited and its run directory.
    fn boot(
        &self,
        kind: Kind,
        interrupt_no: usize,
        before: &BTreeSet<PathBuf>,
        out_path: &Path,
    ) -> Result<(ExitStatus, Option<PathBuf>), Failed> {
        let out = std::fs::File::create(out_path).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        // Its own process group: a Ctrl-C for this run must not reach the test.
        let mut child = self
            .command(self.scenarios.for_kind(kind))
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start netboot-harness: {e}"))?;
        let new_run = || {
            run_dirs(&self.runs)
                .into_iter()
                .find(|d| !before.contains(d))
        };
        if matches!(kind, Kind::EarlyTerm | Kind::EarlyKill) {
            // The copy takes a fraction of a second: look often. Landing just after it is
            // fine too; the run must then end interrupted all the same.
            let t = Instant::now();
            while !new_run().is_some_and(|r| r.join("scratch/disk.img").exists())
                && t.elapsed() < Duration::from_secs(300)
                && child.try_wait().ok().flatten().is_none()
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            let signal = if kind == Kind::EarlyKill {
                libc::SIGKILL
            } else {
                libc::SIGTERM
            };
            // SAFETY: plain kill(2) on the process this test started.
            unsafe { libc::kill(child.id() as i32, signal) };
        }
        if let Kind::Interrupt(sig) = kind {
            let mut run = None;
            let started = wait_for(
                "QEMU to print on the console",
                Duration::from_secs(300),
                || {
                    run = new_run();
                    run.as_ref().is_some_and(|r| {
                        std::fs::metadata(r.join("console-node01.log")).is_ok_and(|m| m.len() > 0)
                    })
                },
            );
            if let Err(e) = started {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
            std::thread::sleep(Duration::from_secs(
                INTERRUPT_AFTER[interrupt_no % INTERRUPT_AFTER.len()],
            ));
            let pid = child.id() as i32;
            let (target, signal) = match sig {
                Sig::Int => (-pid, libc::SIGINT),
                Sig::Term => (pid, libc::SIGTERM),
                Sig::Kill => (pid, libc::SIGKILL),
            };
            // SAFETY: plain kill(2) on the process or group this test started.
            unsafe { libc::kill(target, signal) };
        }
        // Longer than any scenario here takes, so a hang is reported rather than waited out.
        let limit = Duration::from_secs(600);
        let t = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
                break s;
            }
            if t.elapsed() > limit {
                // SAFETY: as above.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.wait();
                return Err(format!("netboot-harness still running after {limit:?}").into());
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        Ok((status, new_run()))
    }
}

/// What is wrong with run `killed` (SIGKILLed during the disk copy) once the next run, `by`,
/// has started: its scratch folder must be gone, its directory must hold an `interrupted`
/// summary, and if the folder was still there the next run must say it removed it.
fn swept(killed: usize, run: &Path, status: ExitStatus, by: Option<&Path>) -> Vec<String> {
    let mut p: Vec<String> = Vec::new();
    let mut row = Row {
        n: killed,
        kind: Kind::EarlyKill,
        exit: describe(status),
        verdict: "-".into(),
        failed_step: "-".into(),
        secs: 0.0,
        problems: Vec::new(),
        output: PathBuf::new(),
        run: None,
        status: Some(status),
    };
    for problem in check_run_dir(run, Kind::EarlyKill, status, &mut row) {
        p.push(format!(
            "run {killed} (SIGKILL during the copy), after this run: {problem}"
        ));
    }
    let removed_by_sweep = by
        .and_then(|b| std::fs::read_to_string(b.join("harness.log")).ok())
        .is_some_and(|log| {
            log.contains("removed the scratch folder") && log.contains(&run.display().to_string())
        });
    let lab_cleaned = std::fs::read_to_string(run.join("summary.json"))
        .is_ok_and(|s| !s.contains("a later run removed it"));
    if removed_by_sweep {
        println!("         run {killed}'s scratch folder: removed by this run's sweep");
    } else if lab_cleaned {
        println!("         run {killed}'s scratch folder: removed by its own lab (killed after the copy)");
    }
    if !removed_by_sweep && !lab_cleaned {
        p.push(format!(
            "run {killed}'s scratch was neither removed by its own lab nor swept by this run"
        ));
    }
    p
}

fn describe(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => format!("{s}"),
    }
}

/// Everything wrong with a finished run's directory; fills in the row's verdict.
fn check_run_dir(run: &Path, kind: Kind, status: ExitStatus, row: &mut Row) -> Vec<String> {
    let mut problems = Vec::new();
    let summary: Option<serde_json::Value> = std::fs::read_to_string(run.join("summary.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    match &summary {
        Some(s) => {
            row.verdict = s["verdict"].as_str().unwrap_or("?").to_string();
            row.failed_step = s["failed_step"]["name"].as_str().unwrap_or("-").to_string();
            problems.extend(verdict_problems(kind, status, s));
        }
        None => problems.push(format!("no readable summary.json in {}", run.display())),
    }
    let console = run.join("console-node01.log");
    // Stopped during the disk copy, a run never had a guest to log.
    let needs_console = !matches!(kind, Kind::EarlyTerm | Kind::EarlyKill);
    if needs_console && !std::fs::metadata(&console).is_ok_and(|m| m.is_file() && m.len() > 0) {
        problems.push(format!("no raw console log {}", console.display()));
    }
    problems.extend(temp_files_in(run));
    problems
}

/// The verdict and exit status each kind of ending must give.
fn verdict_problems(kind: Kind, status: ExitStatus, s: &serde_json::Value) -> Vec<String> {
    let verdict = s["verdict"].as_str().unwrap_or("?");
    let ok = s["ok"].as_bool();
    let failed_step = s["failed_step"]["name"].as_str();
    let mut p = Vec::new();
    let mut want = |cond: bool, what: String| {
        if !cond {
            p.push(what);
        }
    };
    match kind {
        Kind::Pass => {
            want(
                verdict == "passed",
                format!("verdict {verdict}, not passed"),
            );
            want(status.code() == Some(0), "a passing run must exit 0".into());
        }
        Kind::ExpectedFailure => {
            want(
                verdict == "failed",
                format!("verdict {verdict}, not failed"),
            );
            want(
                ok == Some(true),
                "an expected failure must count as ok".into(),
            );
            want(
                failed_step == Some("sanboot"),
                format!("failed at {failed_step:?}, not sanboot"),
            );
            want(
                status.code() == Some(0),
                "an expected failure must exit 0".into(),
            );
        }
        Kind::StepTimeout => {
            want(
                verdict == "failed",
                format!("verdict {verdict}, not failed"),
            );
            want(
                ok == Some(false),
                "a timed-out step must not count as ok".into(),
            );
            want(
                failed_step == Some(NEVER_STEP),
                format!("failed at {failed_step:?}, not `{NEVER_STEP}`"),
            );
            want(status.code() == Some(1), "a failed run must exit 1".into());
        }
        Kind::EarlyTerm => {
            want(
                verdict == "interrupted",
                format!("verdict {verdict}, not interrupted"),
            );
            want(
                status.code() == Some(1),
                format!("{} after SIGTERM", describe(status)),
            );
        }
        // Seen right after the kill (the summary comes from the next run's sweep, or from the
        // lab if the kill landed after it started).
        Kind::EarlyKill => {
            want(
                status.signal() == Some(libc::SIGKILL),
                format!("{} after SIGKILL", describe(status)),
            );
            if !s.is_null() {
                want(
                    verdict == "interrupted",
                    format!("verdict {verdict}, not interrupted"),
                );
            }
        }
        Kind::Interrupt(sig) => {
            want(
                verdict == "interrupted",
                format!("verdict {verdict}, not interrupted"),
            );
            want(!status.success(), "an interrupted run exited 0".into());
            if sig == Sig::Kill {
                want(
                    status.signal() == Some(libc::SIGKILL),
                    format!("{} after SIGKILL", describe(status)),
                );
            }
        }
    }
    p
}

/// Working files that must be gone once a run has ended: the per-run disk copy, QMP sockets,
/// a half-written summary.
fn temp_files_in(run: &Path) -> Vec<String> {
    use std::os::unix::fs::FileTypeExt;
    let mut p = Vec::new();
    if run.join("scratch").exists() {
        p.push(format!(
            "per-run disk copy left: {}",
            run.join("scratch").display()
        ));
    }
    for e in std::fs::read_dir(run).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().is_ok_and(|t| t.is_socket()) {
            p.push(format!("socket left: {}", e.path().display()));
        } else if name.ends_with(".tmp") {
            p.push(format!("temporary file left: {}", e.path().display()));
        }
    }
    p
}

/// Image build trees (`/var/tmp/nbh-build.*`, or under `$TMPDIR`).
fn build_trees() -> BTreeSet<PathBuf> {
    let mut dirs: Vec<PathBuf> = vec!["/var/tmp".into()];
    if let Some(t) = std::env::var_os("TMPDIR") {
        dirs.push(t.into());
    }
    dirs.iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with("nbh-build."))
        .map(|e| e.path())
        .collect()
}

fn runs_wanted() -> Result<usize, Failed> {
    match std::env::var("NETBOOT_HARNESS_SOAK_RUNS") {
        Err(_) => Ok(DEFAULT_RUNS),
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("NETBOOT_HARNESS_SOAK_RUNS={v}: want a whole number above 0").into()),
        },
    }
}

fn soak() -> Result<(), Failed> {
    let count = runs_wanted()?;
    // Removed when dropped, also on a panic; kept on purpose below when runs had problems.
    let tmp = tempfile::Builder::new()
        .prefix("nbh-soak-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let dir = tmp.path();
    let soak = Soak {
        runs: dir.join("runs"),
        scenarios: Scenarios::write(&dir.join("scenarios"))?,
        timeout_scale: std::env::var("NETBOOT_HARNESS_TIMEOUT_SCALE").ok(),
        dir: dir.to_path_buf(),
    };
    let host_before = host_state();
    let trees_before = build_trees();
    let t = Instant::now();
    println!(
        "soak: {count} runs, run directories under {}",
        soak.runs.display()
    );
    println!(
        "  {:>3}  {:<17} {:<10} {:<12} {:<42} {:>7}",
        "run", "ending", "exit", "verdict", "failed step", "took"
    );

    let mut rows = Vec::new();
    let mut interrupts = 0;
    // The run a SIGKILL during the copy left, for the next run to sweep.
    let mut orphan: Option<(usize, PathBuf, ExitStatus)> = None;
    let mut n = 0;
    while n < count || orphan.is_some() {
        n += 1;
        let kind = if n <= count {
            CYCLE[(n - 1) % CYCLE.len()]
        } else {
            Kind::ExpectedFailure
        };
        let mut row = soak.run_one(n, kind, interrupts);
        if matches!(kind, Kind::Interrupt(_)) {
            interrupts += 1;
        }
        if let Some((killed, run, status)) = orphan.take() {
            row.problems
                .extend(swept(killed, &run, status, row.run.as_deref()));
        }
        if kind == Kind::EarlyKill {
            if let (Some(run), Some(status)) = (&row.run, row.status) {
                orphan = Some((n, run.clone(), status));
            }
        }
        // Pins a host-wide leak on the run that made it.
        let host = host_state();
        if host != host_before {
            row.problems.push(format!(
                "host changed:\n      before {host_before:?}\n      after  {host:?}"
            ));
        }
        print_row(&row);
        rows.push(row);
    }

    // Once more over everything: a straggler may outlive a later run.
    let mut end_problems = Vec::new();
    for run in run_dirs(&soak.runs) {
        let procs = processes_of(&run);
        if !procs.is_empty() {
            end_problems.push(format!("processes of {} remain: {procs:?}", run.display()));
        }
        end_problems.extend(temp_files_in(&run));
    }
    let host = host_state();
    if host != host_before {
        end_problems.push(format!(
            "host changed:\n  before {host_before:?}\n  after  {host:?}"
        ));
    }
    // The soak's images are cached, so a build still running now is another checkout's.
    let (busy, left): (Vec<PathBuf>, Vec<PathBuf>) = build_trees()
        .difference(&trees_before)
        .cloned()
        .partition(|t| in_use(t));
    if !busy.is_empty() {
        println!("soak: not counted, still in use by a running image build: {busy:?}");
    }
    if !left.is_empty() {
        end_problems.push(format!("image build trees left: {left:?}"));
    }

    print_totals(&rows, &end_problems, t.elapsed());
    let failed = rows.iter().filter(|r| !r.problems.is_empty()).count();
    if failed == 0 && end_problems.is_empty() {
        drop(tmp);
        return Ok(());
    }
    let _ = tmp.keep();
    Err(format!(
        "{failed} of {count} runs had problems, {} at the end; run directories kept in {}",
        end_problems.len(),
        soak.runs.display()
    )
    .into())
}

fn print_row(r: &Row) {
    let mark = if r.problems.is_empty() { "ok" } else { "BAD" };
    println!(
        "  {:>3}  {:<17} {:<10} {:<12} {:<42} {:>6.1}s  {mark}",
        r.n,
        r.kind.label(),
        r.exit,
        r.verdict,
        r.failed_step,
        r.secs
    );
    for p in &r.problems {
        println!("         - {p}");
    }
    if !r.problems.is_empty() {
        println!("         harness output: {}", r.output.display());
    }
}

fn print_totals(rows: &[Row], end_problems: &[String], took: Duration) {
    let count = |v: &str| rows.iter().filter(|r| r.verdict == v).count();
    let leftovers: usize =
        rows.iter().map(|r| r.problems.len()).sum::<usize>() + end_problems.len();
    println!(
        "soak: {} runs in {:.0}s: {} passed, {} failed, {} interrupted, {} without a verdict; \
         {} problems (leftovers or wrong verdicts)",
        rows.len(),
        took.as_secs_f64(),
        count("passed"),
        count("failed"),
        count("interrupted"),
        rows.iter().filter(|r| r.verdict == "-").count(),
        leftovers
    );
    for p in end_problems {
        println!("  - {p}");
    }
}

fn main() {
    let args = Arguments::from_args();
    let trial = Trial::test("soak::runs_in_a_row", || {
        // Asked for explicitly (it is ignored otherwise): a machine that cannot boot is a
        // failure with the reason, never a quiet pass.
        if let Some(why) = can_boot::cannot_boot() {
            return Err(format!("cannot boot scenarios here: {why}").into());
        }
        soak()
    })
    .with_ignored_flag(true);
    libtest_mimic::run(&args, vec![trial]).exit();
}
