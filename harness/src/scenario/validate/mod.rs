//! From the file as written to a [`Scenario`] the harness can trust. Every error names
//! file:line:column and, where a name is unknown, the names that would have been valid.
//!
//! This file reads and parses the scenario file, holds its errors and the helpers every section
//! shares, checks the top-level `name`, and runs the sections in order; each section has its
//! own module.

mod each_node;
mod expect_failure;
mod fleet;
mod image;
mod network;
mod nodes;
mod services;
mod steps;
mod template;
mod vars;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use miette::{Diagnostic, NamedSource, SourceSpan};
use serde_saphyr::{Location, Spanned};

use super::raw::RawScenario;
use super::values::shown;
use super::{scenario_dir, Scenario};

/// Default wait for a step that does not say `within`.
pub const DEFAULT_WITHIN: Duration = Duration::from_secs(120);
/// The name NICs use for the boot network in `segment:`.
pub const BOOT_SEGMENT: &str = "boot";
/// A scenario is a page or two of hand-written YAML; anything bigger is a mistake (or a device
/// like /dev/zero) and is not read into memory.
pub const MAX_SCENARIO_BYTES: u64 = 1024 * 1024;
/// Injected faults per service: enough for any retry loop worth testing.
const MAX_FAULTS: u32 = 100;

#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum ScenarioError {
    /// The reason is in the message, not a source: the report would print it twice.
    #[error("{path}: cannot read: {error}")]
    #[diagnostic(code(scenario::read))]
    Read { path: String, error: std::io::Error },

    #[error("{path}: not a regular file ({kind})")]
    #[diagnostic(code(scenario::read), help("a scenario is a YAML file"))]
    NotAFile { path: String, kind: String },

    #[error("{path}: {size} bytes is too big for a scenario (at most {MAX_SCENARIO_BYTES})")]
    #[diagnostic(code(scenario::read))]
    TooBig { path: String, size: u64 },

    /// Boxed: the error carries the whole file for its snippet, and errors travel by value.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Invalid(Box<Invalid>),
}

#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{location}: {message}")]
#[diagnostic(code(scenario::invalid))]
pub struct Invalid {
    /// `file:line:column`
    pub location: String,
    pub message: String,
    #[source_code]
    pub src: NamedSource<String>,
    #[label("here")]
    pub span: Option<SourceSpan>,
    #[help]
    pub help: Option<String>,
}

impl ScenarioError {
    /// The one-line form: `file:line:col: message`, plus the help if any.
    pub fn summary(&self) -> String {
        match self {
            ScenarioError::Invalid(b) => match &b.help {
                Some(h) => format!("{}: {} ({h})", b.location, b.message),
                None => format!("{}: {}", b.location, b.message),
            },
            other => other.to_string(),
        }
    }
}

/// Reads, parses and validates a scenario file.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let bytes = read_limited(path)?;
    match String::from_utf8(bytes) {
        Ok(text) => load_str(path, &text),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let bad = e.as_bytes()[at];
            let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
            let cx = Cx {
                file: path.display().to_string(),
                text: &text,
            };
            Err(cx.err_at(
                at,
                format!("byte {bad:#04x} is not UTF-8 text"),
                Some("a scenario is a UTF-8 YAML file".into()),
            ))
        }
    }
}

/// The file's bytes, if it is a regular file of at most [`MAX_SCENARIO_BYTES`].
fn read_limited(path: &Path) -> Result<Vec<u8>, ScenarioError> {
    let shown_path = || path.display().to_string();
    let read_err = |error| ScenarioError::Read {
        path: shown_path(),
        error,
    };
    // Non-blocking: opening a FIFO for reading would otherwise wait for a writer forever. The
    // type is checked on the open file, so it cannot change between the check and the read.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a folder"
        } else {
            "a device, FIFO or socket"
        };
        return Err(ScenarioError::NotAFile {
            path: shown_path(),
            kind: kind.into(),
        });
    }
    if meta.len() > MAX_SCENARIO_BYTES {
        return Err(ScenarioError::TooBig {
            path: shown_path(),
            size: meta.len(),
        });
    }
    let mut bytes = Vec::new();
    // The file may grow after the size check: read one byte past the limit to notice.
    file.take(MAX_SCENARIO_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_SCENARIO_BYTES {
        return Err(ScenarioError::TooBig {
            path: shown_path(),
            size: bytes.len() as u64,
        });
    }
    Ok(bytes)
}

/// Parses and validates scenario text; `path` names it in errors and anchors relative paths.
pub fn load_str(path: &Path, text: &str) -> Result<Scenario, ScenarioError> {
    let cx = Cx {
        file: path.display().to_string(),
        text,
    };
    if let Some(at) = text.find('\0') {
        return Err(cx.err_at(at, "a NUL byte: a scenario is a text file", None));
    }
    let blank = text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---" || l == "..."
    });
    if blank {
        return Err(cx.err(
            None,
            "the file holds no scenario: it is empty or only comments",
            Some(
                "a scenario is a mapping with at least name, image, nodes, services and expect"
                    .into(),
            ),
        ));
    }
    let raw: RawScenario = serde_saphyr::from_str_with_options(text, yaml_options())
        .map_err(|e| cx.parse_error(&e))?;
    Validator { cx: &cx, path }.run(raw)
}

/// Tags are refused: the format has no use for them. The limits are far above any real
/// scenario (a few hundred lines, nesting six deep, no aliases in the shipped ones) and far
/// below what costs time or memory: a billion-laughs alias bomb or a thousand nested brackets
/// ends in an error, not in a stalled run.
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        // A tag like `!include /etc/passwd` would otherwise be dropped silently: the text
        // would be used as it is, and the writer would think the file was read.
        reject_unsupported_tags: true,
        budget: serde_saphyr::budget! {
            max_events: 200_000,
            max_aliases: 1_000,
            max_anchors: 1_000,
            max_depth: 24,
            max_documents: 1,
            max_nodes: 100_000,
            max_total_scalar_bytes: MAX_SCENARIO_BYTES as usize,
            max_merge_keys: 100,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: 10_000,
            max_replay_stack_depth: 16,
        },
    }
}

struct Cx<'a> {
    file: String,
    text: &'a str,
}

impl Cx<'_> {
    fn err(
        &self,
        loc: Option<Location>,
        message: impl Into<String>,
        help: Option<String>,
    ) -> ScenarioError {
        match loc.filter(|l| *l != Location::UNKNOWN) {
            Some(l) => {
                let offset = l
                    .span()
                    .byte_offset()
                    .map(|o| o as usize)
                    .unwrap_or_else(|| offset_of(self.text, l.line(), l.column()));
                let len = l.span().byte_len().unwrap_or(1).max(1) as usize;
                self.invalid(
                    format!("{}:{}:{}", self.file, l.line(), l.column()),
                    Some((offset, len)),
                    message.into(),
                    help,
                )
            }
            None => self.invalid(self.file.clone(), None, message.into(), help),
        }
    }

    /// An error at a byte offset of the text (which must be a char boundary).
    fn err_at(
        &self,
        offset: usize,
        message: impl Into<String>,
        help: Option<String>,
    ) -> ScenarioError {
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        self.invalid(
            format!("{}:{line}:{column}", self.file),
            Some((offset, 1)),
            message.into(),
            help,
        )
    }

    fn invalid(
        &self,
        location: String,
        span: Option<(usize, usize)>,
        message: String,
        help: Option<String>,
    ) -> ScenarioError {
        // A snippet of a line thousands of characters long (a huge value, a minified file)
        // buries the message; the location alone says where to look.
        let span = span
            .filter(|(offset, _)| line_len_at(self.text, *offset) <= SNIPPET_MAX_LINE)
            .map(|(offset, len)| {
                let offset = offset.min(self.text.len());
                SourceSpan::from((offset, len.min(self.text.len() - offset)))
            });
        ScenarioError::Invalid(Box::new(Invalid {
            location,
            message,
            src: NamedSource::new(self.file.clone(), self.text.to_string()),
            span,
            help,
        }))
    }

    fn parse_error(&self, e: &serde_saphyr::Error) -> ScenarioError {
        if let Some(message) = own_parse_message(e) {
            return self.err(e.location(), message, None);
        }
        // The library's message carries its own snippet; we want the bare reason on one line.
        let rendered = e.to_string();
        let message = rendered
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("invalid YAML")
            .trim_start_matches("error: ")
            .to_string();
        let message = strip_location_prefix(&strip_location_suffix(&message));
        self.err(e.location(), message, None)
    }
}

/// Our words for the parser's errors whose own text speaks to a programmer (it names library
/// options and functions) rather than to someone writing a scenario.
fn own_parse_message(e: &serde_saphyr::Error) -> Option<String> {
    use serde_saphyr::budget::BudgetBreach;
    use serde_saphyr::Error as E;
    let too_much =
        |what: &str| format!("{what}: more than any scenario needs, so the file is refused unread");
    Some(match e {
        E::AliasError { error, .. } | E::WithSnippet { error, .. } => {
            return own_parse_message(error)
        }
        E::DuplicateMappingKey { key: Some(k), .. } => {
            format!("the key `{}` is given twice in this mapping", shown(k))
        }
        E::DuplicateMappingKey { key: None, .. } => "a key is given twice in this mapping".into(),
        E::InvalidScalar { ty, .. } => match *ty {
            "u8" => "expected a whole number from 0 to 255".into(),
            "u16" => "expected a whole number from 0 to 65535".into(),
            "u32" => "expected a whole number from 0 to 4294967295".into(),
            "boolean" => "expected true or false".into(),
            _ => return None,
        },
        E::Unexpected { expected, .. } => match *expected {
            "sequence start" => "expected a list here".into(),
            "mapping start" => "expected a mapping (`key: value`) here".into(),
            "string scalar" => "expected a text here".into(),
            _ => return None,
        },
        E::MultipleDocuments { .. } => {
            "a second YAML document (after `---`): a scenario file holds exactly one".into()
        }
        E::Budget { breach, .. } => match breach {
            BudgetBreach::Depth { .. } => too_much("nested too deeply"),
            BudgetBreach::Aliases { .. } | BudgetBreach::Anchors { .. } => {
                too_much("too many anchors or aliases (`&name`, `*name`)")
            }
            BudgetBreach::ScalarBytes { .. } => {
                too_much("more than 1 MiB of text in values (an alias counts each time it is used)")
            }
            BudgetBreach::Documents { .. } => {
                "a second YAML document (after `---`): a scenario file holds exactly one".into()
            }
            _ => too_much("too many YAML values"),
        },
        E::AliasReplayLimitExceeded { .. }
        | E::AliasExpansionLimitExceeded { .. }
        | E::AliasReplayStackDepthExceeded { .. }
        | E::AliasReplayCounterOverflow { .. } => {
            too_much("aliases (`*name`) that expand to too many values")
        }
        _ => return None,
    })
}

/// serde-saphyr appends ` at line L, column C` to some messages; we print the location first.
fn strip_location_suffix(m: &str) -> String {
    match m.rfind(" at line ") {
        Some(i) => m[..i].to_string(),
        None => m.to_string(),
    }
}

/// ... and prefixes others with `line L column C: `.
fn strip_location_prefix(m: &str) -> String {
    let re = regex::Regex::new(r"^line \d+ column \d+: ").expect("valid regex");
    re.replace(m, "").into_owned()
}

/// Longest line an error shows as a snippet.
const SNIPPET_MAX_LINE: usize = 200;

/// Length in bytes of the line holding byte `offset`.
fn line_len_at(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    let start = text.as_bytes()[..offset]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let end = text.as_bytes()[offset..]
        .iter()
        .position(|b| *b == b'\n')
        .map_or(text.len(), |i| offset + i);
    end - start
}

fn offset_of(text: &str, line: u64, column: u64) -> usize {
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i as u64 + 1 == line {
            return offset + (column.saturating_sub(1) as usize).min(l.len());
        }
        offset += l.len();
    }
    text.len()
}

fn one_of<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let names: Vec<String> = names
        .into_iter()
        .map(|n| format!("`{}`", shown(n)))
        .collect();
    if names.is_empty() {
        "there are none".to_string()
    } else {
        format!("valid: {}", names.join(", "))
    }
}

/// The scenario's folder, as written and resolved.
struct Folder {
    dir: PathBuf,
    canon: PathBuf,
}

struct Validator<'a> {
    cx: &'a Cx<'a>,
    path: &'a Path,
}

impl Validator<'_> {
    fn at<T>(
        &self,
        s: &Spanned<T>,
        message: impl Into<String>,
        help: Option<String>,
    ) -> ScenarioError {
        self.cx.err(Some(s.referenced), message, help)
    }

    fn run(&self, mut raw: RawScenario) -> Result<Scenario, ScenarioError> {
        let stagger = self.expand_fleet(&mut raw)?;
        let dir = scenario_dir(self.path);
        let name = self.name(&raw.name)?;
        let image = self.image(&raw.image, &dir)?;
        let subnet = network::boot_subnet(&raw);
        let vars = self.vars(&raw, &subnet)?;

        let segments = self.segments(&raw, &subnet)?;
        // Files the scenario names must resolve inside this folder, links included.
        let folder = Folder {
            canon: self.dir_canon(&dir)?,
            dir,
        };
        let nodes = self.nodes(&raw, &folder, &vars, &segments)?;
        let dhcp = self.dhcp(&raw, &subnet, &nodes, &vars)?;
        let http = self.http(&raw, &folder, &vars)?;
        let mut iscsi = self.iscsi(&raw, &subnet, &segments, &dhcp)?;
        let facts = self.node_facts(&raw, &nodes, &dhcp, &iscsi);
        self.node_addresses(&raw, &mut iscsi.per_node, &facts)?;
        let steps = self.steps(&raw, &nodes, &facts)?;
        let expect_failure = self.expect_failure(&raw, &steps)?;
        let fail_on = self.fail_on(&raw)?;

        Ok(Scenario {
            name,
            description: raw.description.trim().to_string(),
            path: self.path.to_path_buf(),
            image,
            subnet,
            router_advertisements: raw.network.router_advertisements.unwrap_or(true),
            segments,
            nodes,
            dhcp,
            http,
            iscsi,
            steps,
            fail_on,
            expect_failure,
            tier: raw.tier,
            stagger,
        })
    }

    fn name(&self, n: &Spanned<String>) -> Result<String, ScenarioError> {
        let ok = !n.value.is_empty()
            && n.value.len() <= 64
            && n.value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(self.at(
                n,
                format!(
                    "scenario name `{}` is not usable as a folder name",
                    shown(&n.value)
                ),
                Some("use 1-64 letters, digits, '-' or '_'".into()),
            ));
        }
        Ok(n.value.clone())
    }

    fn dir_canon(&self, dir: &Path) -> Result<PathBuf, ScenarioError> {
        dir.canonicalize().map_err(|e| {
            self.cx.err(
                None,
                format!("scenario folder {}: {e}", dir.display()),
                None,
            )
        })
    }
}

/// Fills `{{name}}` placeholders. iPXE's own `${name}` syntax passes through untouched, which
/// is why the harness uses double braces.
pub fn render(text: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| "`{{` without a closing `}}`".to_string())?;
        let name = after[..end].trim();
        let value = vars
            .get(name)
            .ok_or_else(|| format!("unknown variable `{{{{{}}}}}`", shown(name)))?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}
