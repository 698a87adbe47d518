//! The hostile and broken input corpus: every `tests/corpus/*.yaml` is a scenario broken in one
//! way (its first line says how). `netboot-harness run` must refuse each one quickly, before
//! anything starts, with a message that names file:line:column where a place in the file is to
//! blame. The whole message is compared with its snapshot in `tests/snapshots/`.
//!
//! Each case runs the real binary with HOME, the cache, TMPDIR and `--runs-dir` pointed at
//! empty folders of its own; afterwards they must still be empty, the corpus folder unchanged,
//! and no process may be left that carries the case's marker in its environment.
//!
//! A few inputs cannot live in a folder of files (a FIFO, /dev/zero, a file over the size limit);
//! they are made in the case's own folder.
//!
//! Review changed messages with `cargo insta review`, or accept them all with
//! `INSTA_UPDATE=always cargo test --test input_corpus`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};

/// A refusal is a parse and a few file checks: seconds at most, even in a debug build on a
/// busy 2-core machine.
const QUICK: Duration = Duration::from_secs(10);

/// The done-when of the corpus: at least this many files, so a lost folder cannot pass.
const MIN_CASES: usize = 35;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the project folder exists")
}

fn corpus() -> PathBuf {
    root().join("tests/corpus")
}

/// Cases whose fault is the file as a whole, so no line and column apply.
const NO_LOCATION: &[&str] = &[
    "empty-file",
    "only-a-comment",
    "special-folder",
    "special-fifo",
    "special-dev-zero",
    "special-too-big",
    "special-missing",
];

/// The empty folders one case may not write to, plus one for inputs it makes; removed when
/// dropped, also when the case panics.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new(case: &str) -> Result<Sandbox, Failed> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("nbh-corpus-{case}-"))
            .tempdir()
            .map_err(|e| format!("a temporary folder for {case}: {e}"))?;
        for sub in ["home", "cache", "tmp", "runs", "input"] {
            std::fs::create_dir_all(dir.path().join(sub))
                .map_err(|e| format!("{}: {e}", dir.path().display()))?;
        }
        Ok(Sandbox { dir })
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// Everything under the folders the harness may not write to.
    fn written(&self) -> Vec<String> {
        ["home", "cache", "tmp", "runs"]
            .iter()
            .flat_map(|sub| listing(&self.path(sub)))
            .collect()
    }
}

/// Every path below `dir` with its size and modification time: a changed file shows.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        let meta = std::fs::symlink_metadata(&p).ok();
        let stamp = meta
            .as_ref()
            .map(|m| format!("{} {:?}", m.len(), m.modified().ok()))
            .unwrap_or_default();
        out.push(format!("{} {stamp}", p.display()));
        if meta.is_some_and(|m| m.is_dir()) {
            out.extend(listing(&p));
        }
    }
    out.sort();
    out
}

/// Processes whose environment holds `needle` (`NAME=value`).
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
        if env.split(|b| *b == 0).any(|v| v == needle.as_bytes()) {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            found.push(format!(
                "{name}: {}",
                String::from_utf8_lossy(&cmd).replace('\0', " ")
            ));
        }
    }
    found
}

/// What the first line of the message must start with: `file:` and, where a place in the file
/// is to blame, `file:line:column:`.
fn check_location(case: &str, shown_file: &str, stderr: &str) -> Result<(), Failed> {
    let first = stderr
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("× "))
        .ok_or_else(|| format!("no error line (`× ...`) in:\n{stderr}"))?;
    let rest = first
        .strip_prefix(shown_file)
        .and_then(|r| r.strip_prefix(':'))
        .ok_or_else(|| format!("the message does not start with `{shown_file}:`: {first}"))?;
    let located = {
        let mut parts = rest.splitn(3, ':');
        let mut number = || {
            parts
                .next()
                .is_some_and(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        };
        number() && number()
    };
    match (NO_LOCATION.contains(&case), located) {
        (false, false) => Err(format!("no line:column after the file name: {first}").into()),
        (true, true) => {
            Err(format!("{case} is listed in NO_LOCATION but names a line: {first}").into())
        }
        _ => Ok(()),
    }
}

/// One case: `run` must refuse `arg` (a path relative to `cwd`, so that the message, wrapped at
/// 80 columns, does not depend on where the checkout or the temp folder is) and leave no trace.
/// `why` goes into the snapshot's description.
fn refused(case: &str, cwd: &Path, arg: &str, why: &str, sandbox: &Sandbox) -> Result<(), Failed> {
    let marker = format!("nbh-corpus-{case}-{}", std::process::id());
    let before = listing(&corpus());
    let t = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_netboot-harness"))
        .args(["run", "--runs-dir"])
        .arg(sandbox.path("runs"))
        .arg(arg)
        .current_dir(cwd)
        .env("HOME", sandbox.path("home"))
        .env("XDG_CACHE_HOME", sandbox.path("cache"))
        .env("NETBOOT_HARNESS_CACHE", sandbox.path("cache"))
        .env("TMPDIR", sandbox.path("tmp"))
        .env("NETBOOT_HARNESS_ROOT", root())
        .env("NETBOOT_HARNESS_CORPUS_CASE", &marker)
        .env("NO_COLOR", "1")
        .env("RUST_BACKTRACE", "0")
        .env_remove("NETBOOT_HARNESS_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting netboot-harness: {e}"))?;
    // Output is small (one message), so the pipes cannot fill while we wait.
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if t.elapsed() > QUICK {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("still running after {QUICK:?}: not refused quickly").into());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = t.elapsed();
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();

    if status.code() != Some(2) {
        return Err(format!("exit status {status}, expected 2 (refused):\n{stderr}").into());
    }
    if stderr.contains("panicked") {
        return Err(format!("the harness panicked:\n{stderr}").into());
    }
    if !stdout.trim().is_empty() {
        return Err(format!("a refusal prints nothing on stdout, got:\n{stdout}").into());
    }
    check_location(case, arg, &stderr)?;
    let written = sandbox.written();
    if !written.is_empty() {
        return Err(format!("written outside any run: {written:#?}").into());
    }
    if listing(&corpus()) != before {
        return Err("the corpus folder changed".into());
    }
    let left = processes_with(&format!("NETBOOT_HARNESS_CORPUS_CASE={marker}"));
    if !left.is_empty() {
        return Err(format!("processes were started and are still there: {left:#?}").into());
    }
    assert!(took <= QUICK);

    let snapshot = stderr
        .replace(&sandbox.dir.path().display().to_string(), "[SANDBOX]")
        .replace(&root().display().to_string(), "[ROOT]");
    let mut settings = insta::Settings::clone_current();
    settings.set_description(why);
    settings.set_omit_expression(true);
    settings.set_prepend_module_to_snapshot(false);
    settings.set_snapshot_path(root().join("tests/snapshots/input_corpus"));
    // insta reports a mismatch by panicking, with the diff; libtest-mimic makes that the
    // trial's failure.
    settings.bind(|| insta::assert_snapshot!(case.to_string(), snapshot));
    Ok(())
}

/// The case's first line, `# what is wrong`, or a fallback for files that cannot have one.
fn why_of(file: &Path) -> String {
    let bytes = std::fs::read(file).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    text.lines()
        .next()
        .and_then(|l| l.strip_prefix("# "))
        .map(str::to_string)
        .unwrap_or_else(|| "an empty file".to_string())
}

fn corpus_cases() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus())
        .expect("tests/corpus exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// Inputs made at run time: (case, what is wrong, how to make it in the input folder; returns
/// the argument to pass, relative to that folder).
type Maker = fn(&Path) -> std::io::Result<String>;

fn special_cases() -> Vec<(&'static str, &'static str, Maker)> {
    vec![
        (
            "special-folder",
            "a folder given as the scenario",
            |input| {
                std::fs::create_dir_all(input.join("scenario.yaml"))?;
                Ok("scenario.yaml".into())
            },
        ),
        (
            "special-fifo",
            "a FIFO given as the scenario: opening it must not wait for a writer",
            |input| {
                let p = input.join("fifo.yaml");
                nix::unistd::mkfifo(&p, nix::sys::stat::Mode::S_IRWXU)
                    .map_err(std::io::Error::from)?;
                Ok("fifo.yaml".into())
            },
        ),
        (
            "special-dev-zero",
            "/dev/zero given as the scenario: an endless file",
            |_| Ok("/dev/zero".to_string()),
        ),
        (
            "special-too-big",
            "a 2 MiB scenario file (sparse)",
            |input| {
                let p = input.join("big.yaml");
                std::fs::File::create(&p)?.set_len(2 * 1024 * 1024)?;
                Ok("big.yaml".into())
            },
        ),
        (
            "special-missing",
            "a scenario file that does not exist",
            |_| Ok("missing.yaml".into()),
        ),
    ]
}

fn main() {
    let args = Arguments::from_args();
    let files = corpus_cases();
    let mut trials = vec![Trial::test("corpus_has_enough_cases", move || {
        if files.len() < MIN_CASES {
            return Err(
                format!("only {} cases, at least {MIN_CASES} expected", files.len()).into(),
            );
        }
        Ok(())
    })];
    for file in corpus_cases() {
        let case = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let why = why_of(&file);
        let name = file
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        trials.push(Trial::test(format!("corpus::{case}"), move || {
            let sandbox = Sandbox::new(&case)?;
            refused(&case, &corpus(), &name, &why, &sandbox)
        }));
    }
    for (case, why, make) in special_cases() {
        trials.push(Trial::test(format!("corpus::{case}"), move || {
            let sandbox = Sandbox::new(case)?;
            let arg = make(&sandbox.path("input")).map_err(|e| format!("making {case}: {e}"))?;
            refused(case, &sandbox.path("input"), &arg, why, &sandbox)
        }));
    }
    libtest_mimic::run(&args, trials).exit();
}
