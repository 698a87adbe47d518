//! ci/github-workflow.yml, the GitHub Actions workflow users copy, stays valid and in step with
//! the rest of the project: the same image build as ci/test, the nextest profile that writes the
//! JUnit file it uploads, the host set-up script.

use std::path::{Path, PathBuf};

use serde_json::Value;

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
fn runs_on_push_and_pull_requests_in_two_shards() {
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
        serde_json::json!([1, 2]),
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
        test.ends_with("--partition count:${{ matrix.shard }}/2"),
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
fn builds_the_image_as_ci_test_does() {
    let ci_test = read("ci/test");
    let build = ci_test
        .lines()
        .map(str::trim)
        .find(|l| !l.starts_with('#') && l.contains(" image prepare "))
        .expect("ci/test prepares the images");
    let w = workflow();
    let lines = run_lines(&w);
    let ours = lines
        .iter()
        .find(|l| l.contains(" image prepare "))
        .unwrap_or_else(|| panic!("the workflow prepares no image: {lines:#?}"));
    assert!(ours.starts_with("sudo "), "{ours}");
    assert!(
        ours.ends_with(build),
        "workflow: `{ours}`, ci/test: `{build}`"
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
    let ci_test = read("ci/test");
    let soak = ci_test
        .lines()
        .map(str::trim)
        .find(|l| !l.starts_with('#') && l.contains("--test soak"))
        .expect("ci/test runs the soak");
    // ci/test collects the status itself; the workflow step fails on its own.
    let soak = soak.trim_end_matches(" || status=$?");
    let w = workflow();
    let lines = run_lines(&w);
    let ours = lines
        .iter()
        .find(|l| l.contains("--test soak"))
        .unwrap_or_else(|| panic!("the workflow runs no soak: {lines:#?}"));
    assert!(ours.starts_with("sudo "), "the soak needs root: {ours}");
    assert!(
        ours.ends_with(soak),
        "workflow: `{ours}`, ci/test: `{soak}`"
    );
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
