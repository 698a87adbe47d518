//! ci/github-workflow.yml, the GitHub Actions workflow users copy, stays valid and in step with
//! the rest of the project: the same image build as ci/test, the nextest profile that writes the
//! JUnit file it uploads, the host set-up script. And ci/test never passes without booting
//! unless asked to: the can-this-machine-boot gate (`ci/can-boot`, `ci/lib.sh`) and the rule
//! the tests follow (`tests/support/boots.rs`), checked without booting anything.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "support/boots.rs"]
mod boots;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn workflow() -> Value {
    serde_saphyr::from_str(&read("ci/github-workflow.yml"))
        .unwrap_or_else(|e| panic!("ci/github-workflow.yml is not valid YAML: {e}"))
}

/// Every step of every job.
fn steps(w: &Value) -> Vec<&Value> {
    w["jobs"]
        .as_object()
        .expect("jobs")
        .values()
        .flat_map(|j| j["steps"].as_array().expect("steps").iter())
        .collect()
}

/// Every command line of every `run:` step.
fn run_lines(w: &Value) -> Vec<String> {
    steps(w)
        .iter()
        .filter_map(|s| s["run"].as_str())
        .flat_map(|r| r.lines().map(|l| l.trim().to_string()))
        .collect()
}

fn uploads(w: &Value) -> Vec<&Value> {
    steps(w)
        .into_iter()
        .filter(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/upload-artifact@"))
        })
        .collect()
}

#[test]
fn runs_on_push_and_pull_requests_in_four_shards() {
    let w = workflow();
    let on = &w["on"];
    assert!(
        on.get("push").is_some() && on.get("pull_request").is_some(),
        "triggers: {on}"
    );
    let jobs = w["jobs"].as_object().unwrap();
    assert_eq!(jobs.len(), 1, "one job, sharded");
    let job = jobs.values().next().unwrap();
    assert_eq!(
        job["strategy"]["matrix"]["shard"],
        serde_json::json!([1, 2, 3, 4]),
        "{job}"
    );
}

#[test]
fn sets_up_the_host_and_runs_its_nextest_partition_as_root() {
    let w = workflow();
    let lines = run_lines(&w);
    assert!(
        lines.iter().any(|l| l == "sudo bash ci/setup"),
        "{lines:#?}"
    );
    let test = lines
        .iter()
        .find(|l| l.contains("cargo nextest run --profile ci --partition"))
        .unwrap_or_else(|| panic!("no nextest run: {lines:#?}"));
    assert!(test.starts_with("sudo "), "tests need root: {test}");
    assert!(
        test.ends_with("--partition count:${{ matrix.shard }}/4"),
        "{test}"
    );
    assert!(
        steps(&w).iter().any(|s| s["uses"]
            .as_str()
            .is_some_and(|u| u.starts_with("taiki-e/install-action@nextest"))),
        "nextest is installed"
    );
    // The profile exists and writes the JUnit file the workflow uploads.
    let nextest = read(".config/nextest.toml");
    assert!(nextest.contains("[profile.ci]"), "{nextest}");
    assert!(
        nextest.contains("[profile.ci.junit]\npath = \"junit.xml\""),
        "{nextest}"
    );
}

#[test]
fn builds_the_images_as_ci_test_does() {
    // ci/test prepares the images of the scenarios its tier boots; with --full, all of them,
    // which is what the workflow's shards boot.
    let ci_test = read("ci/test");
    let code: Vec<&str> = ci_test
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let build = code
        .iter()
        .find(|l| l.contains(" image prepare "))
        .expect("ci/test prepares the images");
    assert!(
        build.ends_with(r#"image prepare "${scenario_files[@]}""#),
        "{build}"
    );
    assert!(
        code.contains(&"scenario_files=(scenarios/*.yaml)"),
        "ci/test --full prepares every scenario's image"
    );
    let w = workflow();
    let lines = run_lines(&w);
    let ours = lines
        .iter()
        .find(|l| l.contains(" image prepare "))
        .unwrap_or_else(|| panic!("the workflow prepares no image: {lines:#?}"));
    assert!(ours.starts_with("sudo "), "{ours}");
    assert!(
        ours.ends_with("target/debug/netboot-harness image prepare scenarios/*.yaml"),
        "the workflow boots every tier, so it prepares every scenario's image: `{ours}`"
    );
    let cache = steps(&w)
        .into_iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/cache@"))
        })
        .expect("the image cache");
    assert_eq!(cache["with"]["path"], "~/.cache/netboot-harness");
    assert!(
        cache["with"]["key"]
            .as_str()
            .unwrap()
            .contains("hashFiles('images/**')"),
        "{cache}"
    );
}

#[test]
fn runs_the_soak_as_ci_test_does() {
    // ci/test runs the soak inside its one nextest run (beside the other boots); the workflow
    // gives it a step of its own on the first shard. Both run it as many times, under the
    // same profile.
    let ci_test = read("ci/test");
    let soak = ci_test
        .lines()
        .map(str::trim)
        .find(|l| !l.starts_with('#') && l.contains("NETBOOT_HARNESS_SOAK_RUNS="))
        .expect("ci/test runs the soak");
    assert!(
        soak.contains("--run-ignored all") && soak.contains("--profile ci"),
        "ci/test: {soak}"
    );
    let count = |line: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("NETBOOT_HARNESS_SOAK_RUNS="))
            .map(str::to_owned)
    };
    let w = workflow();
    let lines = run_lines(&w);
    let ours = lines
        .iter()
        .find(|l| l.contains("--test soak"))
        .unwrap_or_else(|| panic!("the workflow runs no soak: {lines:#?}"));
    assert!(ours.starts_with("sudo "), "the soak needs root: {ours}");
    assert!(
        ours.contains("--profile ci") && ours.contains("--run-ignored only"),
        "workflow: {ours}"
    );
    assert_eq!(
        count(ours),
        count(soak),
        "workflow: `{ours}`, ci/test: `{soak}`"
    );
    assert!(count(soak).is_some(), "ci/test: {soak}");
}

#[test]
fn uploads_the_junit_report_always_and_the_runs_on_failure() {
    let w = workflow();
    let ups = uploads(&w);
    let junit = ups
        .iter()
        .find(|s| s["with"]["path"] == "target/nextest/ci/junit.xml")
        .unwrap_or_else(|| panic!("no JUnit upload: {ups:#?}"));
    assert_eq!(junit["if"], "always()");
    let runs = ups
        .iter()
        .find(|s| {
            s["with"]["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("target/netboot-harness/runs"))
        })
        .unwrap_or_else(|| panic!("no run-directory upload: {ups:#?}"));
    assert_eq!(runs["if"], "failure()");
    // Shards must not overwrite each other's artifacts.
    for s in &ups {
        assert!(
            s["with"]["name"]
                .as_str()
                .is_some_and(|n| n.contains("${{ matrix.shard }}")),
            "{s}"
        );
    }
}

/// `setpriv` with the given identity options, in an empty environment (nothing of this test's,
/// such as `NETBOOT_HARNESS_SKIP_BOOTS` under ci/test, may leak in) plus `env`.
fn as_user(ids: &[&str], env: &[&str], args: &[&str]) -> (Output, Duration) {
    let t = Instant::now();
    let out = Command::new("setpriv")
        .args(ids)
        .args(["env", "-i", "PATH=/usr/bin:/bin", "HOME=/nonexistent"])
        .args(env)
        .args(args)
        .current_dir(root())
        .stdin(Stdio::null())
        .output()
        .expect("setpriv runs");
    (out, t.elapsed())
}

const NOBODY: &[&str] = &[
    "--reuid=nobody",
    "--regid=nogroup",
    "--clear-groups",
    "--inh-caps=-all",
];

/// Root without a single capability: `id -u` says 0, namespaces are refused.
const POWERLESS_ROOT: &[&str] = &["--inh-caps=-all", "--bounding-set=-all"];

/// Why this test cannot switch users, if it cannot.
fn needs_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let blocker = (unsafe { libc::geteuid() } != 0)
        .then(|| "not root: only root can become `nobody` or drop its capabilities".into());
    boots::require(test, blocker)
}

fn both(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn ci_can_boot_says_why_not_without_root() {
    if !needs_root("ci_can_boot_says_why_not_without_root") {
        return;
    }
    let (o, took) = as_user(NOBODY, &[], &["bash", "ci/can-boot"]);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(said.starts_with("not root: "), "{said}");
    assert_eq!(said.lines().count(), 1, "one reason, one line: {said}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn ci_can_boot_says_why_not_without_namespaces() {
    if !needs_root("ci_can_boot_says_why_not_without_namespaces") {
        return;
    }
    let (o, _) = as_user(POWERLESS_ROOT, &[], &["bash", "ci/can-boot"]);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    let said = String::from_utf8_lossy(&o.stdout);
    // A host whose /dev/net/tun is unusable says that first, and rightly.
    assert!(
        said.starts_with("cannot create a network namespace (`unshare --net true`: ")
            || said.starts_with("/dev/net/tun cannot be opened"),
        "{said}"
    );
}

/// As a user who is not root and cannot become root (no sudo here, or sudo with no terminal to
/// ask a password on), ci/test stops before installing or compiling anything, with the reason
/// and the way to run the rest of the suite.
#[test]
fn ci_test_without_root_stops_at_once_with_the_reason() {
    if !needs_root("ci_test_without_root_stops_at_once_with_the_reason") {
        return;
    }
    let (o, took) = as_user(NOBODY, &[], &["bash", "ci/test"]);
    let t = both(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains("ci/test: this machine cannot boot guests: not root, and sudo "),
        "{t}"
    );
    assert!(t.contains("set NETBOOT_HARNESS_SKIP_BOOTS=1"), "{t}");
    assert!(!t.contains("ci/setup"), "it went on to the set-up: {t}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}

/// Under CI the boots are required: asking to skip them changes nothing.
#[test]
fn ci_test_under_ci_does_not_skip_boots() {
    if !needs_root("ci_test_under_ci_does_not_skip_boots") {
        return;
    }
    let env = ["CI=true", "NETBOOT_HARNESS_SKIP_BOOTS=1"];
    let (o, took) = as_user(NOBODY, &env, &["bash", "ci/test"]);
    let t = both(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("under CI=true the boots are required"), "{t}");
    assert!(!t.contains("going on without boots"), "{t}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}

/// With the variable and a machine that cannot boot, ci/test goes on, saying why there will be
/// no boots. What follows is the whole suite: a `cargo` that refuses to do anything stops it at
/// its first build, so only its first words are checked here.
#[test]
fn ci_test_goes_on_without_boots_when_asked() {
    if !needs_root("ci_test_goes_on_without_boots_when_asked") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::Builder::new()
        .prefix("nbh-cargo-stub-")
        .tempdir()
        .unwrap();
    let stub = tmp.path();
    // `nobody` runs the stub: the folder must be open to it, as a plain new folder is.
    std::fs::set_permissions(stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cargo = stub.join("cargo");
    std::fs::write(&cargo, "#!/bin/sh\necho \"cargo stub: $*\" >&2\nexit 97\n").unwrap();
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("PATH={}:/usr/bin:/bin", stub.display());
    let (o, _) = as_user(
        NOBODY,
        &[&path, "NETBOOT_HARNESS_SKIP_BOOTS=1"],
        &["bash", "ci/test"],
    );
    drop(tmp);
    let t = both(&o);
    let first = String::from_utf8_lossy(&o.stderr);
    assert!(
        first.starts_with(
            "ci/test: going on without boots (NETBOOT_HARNESS_SKIP_BOOTS=1): not root"
        ),
        "{t}"
    );
    assert!(!t.contains("cannot boot guests"), "{t}");
}

#[test]
fn the_rule_for_tests_this_machine_cannot_run() {
    use boots::{verdict_for, Verdict};
    let why = || Some("no /dev/net/tun".to_string());
    for (ci, skip) in [(false, false), (false, true), (true, false), (true, true)] {
        assert_eq!(
            verdict_for(None, ci, skip),
            Verdict::Run,
            "ci {ci} skip {skip}"
        );
    }
    let Verdict::Fail(m) = verdict_for(why(), false, false) else {
        panic!("a developer's plain cargo test must fail");
    };
    assert!(m.contains("no /dev/net/tun"), "{m}");
    assert!(m.contains("NETBOOT_HARNESS_SKIP_BOOTS=1"), "the hint: {m}");
    assert_eq!(
        verdict_for(why(), false, true),
        Verdict::Ignore("no /dev/net/tun".into())
    );
    for skip in [false, true] {
        let Verdict::Fail(m) = verdict_for(why(), true, skip) else {
            panic!("under CI a machine that cannot boot fails (skip {skip})");
        };
        assert!(
            m.contains("CI=true") && m.contains("no /dev/net/tun"),
            "{m}"
        );
    }
}

/// The skip log ci/test sums: one line per decision, the count first, one line of reason.
#[test]
fn skipped_tests_are_counted_one_line_each() {
    let tmp = tempfile::Builder::new()
        .prefix("nbh-skip-log-")
        .tempdir()
        .unwrap();
    let log = tmp.path().join("skipped");
    boots::record_to(&log, 25, "scenarios", "not root: the lab needs\nmore lines");
    boots::record_to(&log, 1, "own_image", "not root");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text,
        "25\tscenarios\tnot root: the lab needs\n1\town_image\tnot root\n"
    );
    tmp.close().unwrap();
}

/// A libtest-mimic binary under the rule: each verdict does to the trials what it says, and the
/// skip log counts exactly the ignored trials this run would have run (not those a filter left
/// out, nothing for `--list`).
#[test]
fn trials_follow_the_rule_and_ignored_ones_are_counted() {
    use boots::{Boots, Verdict};
    use libtest_mimic::{Arguments, Trial};
    let tmp = tempfile::Builder::new()
        .prefix("nbh-skip-trials-")
        .tempdir()
        .unwrap();
    let log = tmp.path().join("skipped");
    // The inner runs' own report goes here, not into this test's output.
    let report = log.with_extension("report");
    let logfile = format!("--logfile={}", report.display());
    let run = |verdict: Verdict, argv: &[&str]| {
        let mut b = Boots::with(verdict, Some(log.clone()));
        let mut trials: Vec<Trial> = ["boot::a", "boot::b", "boot::c"]
            .into_iter()
            .map(|n| b.trial(n, || Ok(())))
            .collect();
        trials.push(Trial::test("plain::d", || Ok(())));
        let fixed = ["bin", "--test-threads=1", logfile.as_str()];
        let args = Arguments::from_iter(fixed.iter().chain(argv));
        b.run(&args, trials)
    };
    let c = run(Verdict::Run, &[]);
    assert_eq!((c.num_passed, c.num_failed, c.num_ignored), (4, 0, 0));
    let c = run(Verdict::Fail("no tun".into()), &[]);
    assert_eq!((c.num_passed, c.num_failed, c.num_ignored), (1, 3, 0));
    assert!(!log.exists(), "nothing skipped, nothing counted");

    let ignore = || Verdict::Ignore("no tun".into());
    let c = run(ignore(), &["--skip", "boot::c"]);
    assert_eq!((c.num_passed, c.num_failed, c.num_ignored), (1, 0, 2));
    let c = run(ignore(), &["--list"]);
    assert_eq!(c.num_ignored, 0);
    // Asked for explicitly, an ignored trial still cannot boot: a failure, not a pass.
    let c = run(ignore(), &["--ignored", "boot::a"]);
    assert_eq!((c.num_passed, c.num_failed), (0, 1));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("2\tworkflow\tno tun"), "{text}");
    tmp.close().unwrap();
}

#[test]
fn ci_test_refuses_an_unknown_tier_before_anything_runs() {
    for (args, env, want) in [
        (&["--fastest"][..], None, "unknown argument: --fastest"),
        (
            &[][..],
            Some("nightly"),
            "NETBOOT_HARNESS_TIER is `nightly`; valid: fast, full",
        ),
    ] {
        let mut cmd = std::process::Command::new("bash");
        cmd.arg(root().join("ci/test"))
            .args(args)
            .current_dir(root());
        cmd.env_remove("NETBOOT_HARNESS_TIER");
        if let Some(t) = env {
            cmd.env("NETBOOT_HARNESS_TIER", t);
        }
        let o = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(want), "{err}");
        assert_eq!(
            err.lines().count(),
            1,
            "refused before the set-up ran: {err}"
        );
    }
}
