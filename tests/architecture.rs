//! The layout keeps its promises (ARCHITECTURE.md): the stages depend on each other one way
//! only, every child process goes through the one owned-process type, files stay small enough
//! to read, and the architecture page names only modules that exist.

use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The stages in pipeline order; `support` is beneath them all.
const STAGES: [&str; 9] = [
    "support", "scenario", "image", "lab", "services", "guest", "expect", "report", "cli",
];

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The stage a file belongs to: its first folder under src/ (`None` for lib.rs and main.rs,
/// which sit above every stage).
fn stage_of(file: &Path) -> Option<usize> {
    let rel = file.strip_prefix(src()).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.trim_end_matches(".rs");
    STAGES.iter().position(|s| *s == name)
}

/// The code of a file without its comments and without its test code: test modules sit at the
/// end, after the first `#[cfg(test)]` at the start of a line, and files that are tests
/// altogether are named so.
fn code_lines(file: &Path) -> Vec<(usize, String)> {
    let name = file.file_name().unwrap().to_string_lossy();
    let in_test_folder = file.components().any(|c| c.as_os_str() == "tests");
    if in_test_folder || name.ends_with("tests.rs") || name == "test_rig.rs" {
        return Vec::new();
    }
    let text = std::fs::read_to_string(file).unwrap();
    text.lines()
        .enumerate()
        .take_while(|(_, l)| !l.starts_with("#[cfg(test)]"))
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(i, l)| (i + 1, l.to_string()))
        .collect()
}

/// Every `crate::<stage>` a line names, also inside `use crate::{a, b}`.
fn named_stages(line: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            group
                .split('}')
                .next()
                .unwrap_or_default()
                .split(',')
                .map(|n| n.trim().split("::").next().unwrap_or_default())
                .collect()
        } else {
            vec![rest
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next()
                .unwrap_or_default()]
        };
        out.extend(
            names
                .iter()
                .filter_map(|n| STAGES.iter().position(|s| s == n)),
        );
    }
    out
}

#[test]
fn no_stage_uses_a_later_one() {
    let mut back_edges = Vec::new();
    for file in rust_files(&src()) {
        let Some(stage) = stage_of(&file) else {
            continue;
        };
        for (n, line) in code_lines(&file) {
            for used in named_stages(&line) {
                if used > stage {
                    back_edges.push(format!(
                        "{}:{n}: {} uses {}: {}",
                        file.strip_prefix(src()).unwrap().display(),
                        STAGES[stage],
                        STAGES[used],
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        back_edges.is_empty(),
        "a stage uses a later one (the pipeline runs {}):\n{}",
        STAGES.join(" -> "),
        back_edges.join("\n")
    );
}

#[test]
fn the_checker_sees_a_back_edge() {
    assert_eq!(named_stages("use crate::report::Summary;"), [7]);
    assert_eq!(
        named_stages("use crate::{scenario::Scenario, cli::run};"),
        [1, 8]
    );
    assert_eq!(
        named_stages("let x = crate::support::process::Owned::spawn(a);"),
        [0]
    );
    assert!(named_stages("let crate_name = 1;").is_empty());
}

#[test]
fn every_child_process_is_started_through_the_owned_type() {
    let owner = src().join("support/process.rs");
    let mut others = Vec::new();
    for file in rust_files(&src()) {
        if file == owner {
            continue;
        }
        for (n, line) in code_lines(&file) {
            // A command's `.spawn()`: tasks and threads are spawned with arguments.
            if line.contains(".spawn()") {
                others.push(format!(
                    "{}:{n}: {}",
                    file.strip_prefix(src()).unwrap().display(),
                    line.trim()
                ));
            }
        }
    }
    assert!(
        others.is_empty(),
        "child processes started outside support::process::Owned:\n{}",
        others.join("\n")
    );
}

/// A file longer than this says why in its first lines.
const LONG_FILE: usize = 700;

#[test]
fn files_stay_readable_or_say_why_not() {
    let mut long = Vec::new();
    for file in rust_files(&src()) {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines = text.lines().count();
        let head: String = text.lines().take(20).collect::<Vec<_>>().join("\n");
        if lines > LONG_FILE && !head.contains("Longer than 700 lines:") {
            long.push(format!(
                "{}: {lines} lines",
                file.strip_prefix(src()).unwrap().display()
            ));
        }
    }
    assert!(
        long.is_empty(),
        "files over {LONG_FILE} lines whose header does not say why (`Longer than 700 lines: ...`):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_architecture_page_names_only_modules_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let page = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let mut missing = Vec::new();
    let mut named = 0;
    for part in page.split('`').skip(1).step_by(2) {
        if let Some(rel) = part.strip_prefix("harness/src/") {
            named += 1;
            let p = src().join(rel.trim_end_matches('/'));
            if !p.exists() {
                missing.push(part.to_string());
            }
        }
    }
    assert!(named >= STAGES.len(), "the page names {named} modules");
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names what does not exist: {missing:?}"
    );
    for stage in STAGES {
        assert!(
            page.contains(&format!("`harness/src/{stage}/`")),
            "ARCHITECTURE.md does not present the stage {stage}"
        );
    }
}
