//! From the file as written to a [`Scenario`] the harness can trust. Every error names
//! file:line:column and, where a name is unknown, the names that would have been valid.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use miette::{Diagnostic, NamedSource, SourceSpan};
use serde_saphyr::{Location, Spanned};

use super::raw::{RawDownWindow, RawExpectedFailure, RawFirmware, RawImage, RawScenario, RawStep};
use super::values::shown;
use super::{
    default_fail_patterns, scenario_dir, Action, Cause, Dhcp, DhcpHost, ExpectedFailure,
    FailPattern, Firmware, Http, HttpFault, HttpFile, ImageRef, Iscsi, Nic, Node, Scenario,
    Segment, Service, Step,
};

/// Default wait for a step that does not say `within`.
pub const DEFAULT_WITHIN: Duration = Duration::from_secs(120);
const MAX_NODES: usize = 8;
const MAX_NICS: usize = 8;
const MAX_SEGMENTS: usize = 4;
const MAX_HTTP_DELAY: Duration = Duration::from_secs(300);
/// The name NICs use for the boot network in `segment:`.
pub const BOOT_SEGMENT: &str = "boot";
const MAX_HTTP_FILE: u64 = 16 * 1024 * 1024;
/// All HTTP files together: the server holds them in memory for the whole run, and a list of
/// many names for one big file must not multiply it.
const MAX_HTTP_TOTAL: u64 = 64 * 1024 * 1024;
/// A scenario is a page or two of hand-written YAML; anything bigger is a mistake (or a device
/// like /dev/zero) and is not read into memory.
pub const MAX_SCENARIO_BYTES: u64 = 1024 * 1024;
/// Injected faults per service: enough for any retry loop worth testing.
const MAX_FAULTS: u32 = 100;
/// A marker on the LUN is a short text, read back in one go.
const MAX_LUN_TEXT: usize = 512;
const MEMORY_RANGE: std::ops::RangeInclusive<u32> = 256..=16384;
const CPU_RANGE: std::ops::RangeInclusive<u8> = 1..=4;
/// PCI slots 0-2 hold the host bridge, ISA bridge and (absent) VGA on QEMU's `pc` machine.
const SLOT_RANGE: std::ops::RangeInclusive<u8> = 3..=31;

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

    /// `expect_failure` names its cause and the guest's or a service's own words for it.
    fn expected_failure(
        &self,
        ef: &Spanned<RawExpectedFailure>,
    ) -> Result<ExpectedFailure, ScenarioError> {
        let causes = || one_of(Cause::ALL.iter().map(|c| c.name()));
        if let Some(old) = &ef.value.reason {
            return Err(self.at(
                old,
                "`expect_failure.reason` is no longer read: it was matched against the harness's \
                 own wording of the failure, which other failures share; name the failure's \
                 `cause` and its `evidence` (text of the console line or service record that \
                 proves it) instead",
                Some(format!(
                    "e.g. `cause: console-failure` with `evidence: \"Gave up waiting for root\"`; \
                     the causes, {}",
                    causes()
                )),
            ));
        }
        let Some(cause) = ef.value.cause else {
            return Err(self.at(
                ef,
                "`expect_failure` needs a `cause`: why the step must fail",
                Some(causes()),
            ));
        };
        let evidence = match (&ef.value.evidence, cause.has_evidence()) {
            (Some(e), false) => {
                return Err(self.at(
                    e,
                    format!(
                        "a `{cause}` failure has no evidence to match: drop `evidence`, and let \
                         the steps before it assert what the guest and the services did"
                    ),
                    None,
                ))
            }
            (Some(e), true) if e.value.trim().is_empty() => {
                return Err(self.at(e, "`evidence` is empty: it would match anything", None))
            }
            (None, true) => {
                return Err(self.at(
                    ef,
                    format!(
                        "a `{cause}` failure must name its `evidence`: text of the console line, \
                         record or exit status that proves it"
                    ),
                    None,
                ))
            }
            (e, _) => e.as_ref().map(|e| e.value.clone()),
        };
        Ok(ExpectedFailure {
            step: ef.value.step.clone(),
            cause,
            evidence,
        })
    }

    fn run(&self, raw: RawScenario) -> Result<Scenario, ScenarioError> {
        let dir = scenario_dir(self.path);
        let name = self.name(&raw.name)?;
        let image = self.image(&raw.image, &dir)?;
        let subnet = raw
            .network
            .subnet
            .unwrap_or_else(|| "10.77.0.0/24".parse().expect("default subnet is valid"));
        let mut vars = builtin_vars(&subnet, &raw);
        for (k, v) in &raw.vars {
            if vars.contains_key(k) {
                return Err(self.at(
                    v,
                    format!(
                        "`vars.{}` would replace the harness's own variable",
                        shown(k)
                    ),
                    Some(format!(
                        "harness variables: {}",
                        one_of(vars.keys().map(String::as_str))
                    )),
                ));
            }
            vars.insert(k.clone(), v.value.clone());
        }

        let segments = self.segments(&raw, &subnet)?;
        // Files the scenario names must resolve inside this folder, links included.
        let folder = Folder {
            canon: self.dir_canon(&dir)?,
            dir,
        };
        let nodes = self.nodes(&raw, &folder, &vars, &segments)?;
        let dhcp = self.dhcp(&raw, &subnet, &nodes, &vars)?;
        let http = self.http(&raw, &folder, &vars)?;
        let lun = match &raw.services.iscsi.lun {
            Some(l) if l.value == 0 => {
                return Err(self.at(
                    l,
                    "LUN 0 is tgtd's controller; the disk must be LUN 1 or higher",
                    None,
                ))
            }
            Some(l) => l.value,
            None => 1,
        };
        let faults = raw.services.iscsi.faults.as_ref();
        if let Some(f) = faults {
            // Each alone can be near u32::MAX: add without wrapping.
            if u64::from(f.value.refuse_first) + u64::from(f.value.drop_first)
                > u64::from(MAX_FAULTS)
            {
                return Err(self.at(
                    f,
                    format!("more than {MAX_FAULTS} faulty logins: no boot waits that long"),
                    None,
                ));
            }
        }
        let start_after = raw.services.iscsi.start_after.map(|d| d.0);
        let refuse_until = faults.and_then(|f| f.value.refuse_until.map(|d| d.0));
        if let (Some(f), Some(until)) = (faults, refuse_until) {
            if let Some(start) = start_after.filter(|s| until <= *s) {
                return Err(self.at(
                    f,
                    format!(
                        "refuse_until {} ends before the target starts (start_after: {}): it would refuse nothing",
                        humantime::format_duration(until),
                        humantime::format_duration(start)
                    ),
                    Some("make refuse_until later than start_after, or leave it out".into()),
                ));
            }
        }
        let iscsi = Iscsi {
            target: raw.services.iscsi.target.clone(),
            lun,
            refuse_first: faults.map(|f| f.value.refuse_first).unwrap_or(0),
            drop_first: faults.map(|f| f.value.drop_first).unwrap_or(0),
            refuse_until,
            start_after,
            down: self.down_windows(&raw.services.iscsi.down, start_after)?,
            allow_initiators: Vec::new(),
            allow_addresses: Vec::new(),
        };
        let mut iscsi = iscsi;
        if let Some(acl) = &raw.services.iscsi.acl {
            if acl.value.initiators.is_empty() && acl.value.addresses.is_empty() {
                return Err(self.at(
                    acl,
                    "an empty `acl` would let nobody log in",
                    Some(
                        "list `initiators`, `addresses` or both; leave `acl` out to allow all"
                            .into(),
                    ),
                ));
            }
            if let Some(a) =
                acl.value.addresses.iter().find(|a| {
                    !subnet.contains(**a) && !segments.iter().any(|g| g.subnet.contains(**a))
                })
            {
                return Err(self.at(
                    acl,
                    format!("ACL address {a} is on no network of the lab"),
                    Some(format!("the boot network is {subnet}")),
                ));
            }
            iscsi.allow_initiators = acl.value.initiators.clone();
            iscsi.allow_addresses = acl.value.addresses.clone();
        }
        let steps = self.steps(&raw, &nodes)?;
        let expect_failure = match &raw.expect_failure {
            None => None,
            Some(ef) => {
                let matching = steps.iter().filter(|s| s.name == ef.value.step).count();
                if matching != 1 {
                    let msg = if matching == 0 {
                        format!(
                            "`expect_failure.step` names no step: `{}`",
                            shown(&ef.value.step)
                        )
                    } else {
                        format!(
                            "`{}` names {matching} steps; give them distinct `name`s",
                            ef.value.step
                        )
                    };
                    return Err(self.at(
                        ef,
                        msg,
                        Some(one_of(steps.iter().map(|s| s.name.as_str()))),
                    ));
                }
                Some(self.expected_failure(ef)?)
            }
        };
        let mut fail_on = if raw.default_fail_on {
            default_fail_patterns()
        } else {
            Vec::new()
        };
        for t in &raw.fail_on {
            if t.value.trim().is_empty() {
                return Err(self.at(
                    t,
                    "`fail_on` has an empty text, which would match every line",
                    None,
                ));
            }
            fail_on.push(FailPattern {
                text: t.value.clone(),
                meaning: "the scenario lists this text under fail_on".into(),
            });
        }

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

    fn image(&self, img: &Spanned<RawImage>, dir: &Path) -> Result<ImageRef, ScenarioError> {
        match &img.value {
            RawImage::Recipe { name, set } => {
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return Err(self.at(
                        img,
                        format!("`{}` is not a recipe name", shown(name)),
                        None,
                    ));
                }
                self.recipe_exists(img, name, set)?;
                Ok(ImageRef::Recipe {
                    name: name.clone(),
                    set: set.clone(),
                })
            }
            RawImage::File(f) => {
                let rel = Path::new(f);
                if rel.is_absolute() || rel.components().any(|c| matches!(c, Component::ParentDir))
                {
                    // The file becomes a disk the guest reads and the run's console records:
                    // a scenario must not be able to hand it any file of the host.
                    return Err(self.at(
                        img,
                        format!("image file `{}` leaves the scenario's folder", shown(f)),
                        Some(
                            "put the disk image in or below the folder of the scenario file".into(),
                        ),
                    ));
                }
                let p = dir.join(rel);
                let meta = std::fs::symlink_metadata(&p)
                    .map_err(|e| self.at(img, format!("image file {}: {e}", p.display()), None))?;
                if meta.file_type().is_symlink() {
                    return Err(self.at(
                        img,
                        format!("image file {} is a symbolic link", p.display()),
                        Some("name the real file: a link could be swapped for another disk between check and use".into()),
                    ));
                }
                if !meta.is_file() {
                    return Err(self.at(
                        img,
                        format!("image file {} is not a regular file", p.display()),
                        None,
                    ));
                }
                Ok(ImageRef::File(p))
            }
        }
    }

    /// A recipe the images folder does not have, or a parameter it does not take, would
    /// otherwise only show when `run` builds the image: after the run directory was made.
    fn recipe_exists(
        &self,
        img: &Spanned<RawImage>,
        name: &str,
        set: &BTreeMap<String, String>,
    ) -> Result<(), ScenarioError> {
        use crate::image::ImageError;
        let images = crate::paths::images_dir();
        let checked = crate::image::load_recipe(&images, name).and_then(|r| r.resolve(set));
        match checked {
            Ok(_) => Ok(()),
            Err(ImageError::UnknownRecipe { name, valid }) => Err(self.at(
                img,
                format!("unknown image recipe `{name}`"),
                Some(format!(
                    "valid: {valid}; recipes are the folders of images/ that hold a recipe.yaml"
                )),
            )),
            Err(ImageError::UnknownParam {
                recipe,
                param,
                valid,
            }) => Err(self.at(
                img,
                format!("recipe `{recipe}` has no parameter `{}`", shown(&param)),
                Some(format!("valid: {valid}")),
            )),
            Err(other) => Err(self.at(img, format!("image recipe `{name}`: {other}"), None)),
        }
    }

    fn nodes(
        &self,
        raw: &RawScenario,
        folder: &Folder,
        vars: &BTreeMap<String, String>,
        segments: &[Segment],
    ) -> Result<Vec<Node>, ScenarioError> {
        if raw.nodes.value.is_empty() {
            return Err(self.at(
                &raw.nodes,
                "`nodes` is empty: a scenario boots at least one node",
                None,
            ));
        }
        if raw.nodes.value.len() > MAX_NODES {
            return Err(self.at(
                &raw.nodes.value[MAX_NODES].name,
                format!("more than {MAX_NODES} nodes"),
                Some("each node is a QEMU process; split the scenario".into()),
            ));
        }
        let mut names = BTreeSet::new();
        let mut macs = HashMap::new();
        let mut out = Vec::new();
        for n in &raw.nodes.value {
            let name = &n.name.value;
            let ok = !name.is_empty()
                && name.len() <= 32
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !name.starts_with('-');
            if !ok {
                return Err(self.at(
                    &n.name,
                    format!("node name `{}` is not a valid host name", shown(name)),
                    Some("use 1-32 letters, digits and '-'".into()),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(self.at(
                    &n.name,
                    format!("node `{}` is defined twice", shown(name)),
                    None,
                ));
            }
            let memory_mib = match &n.memory_mib {
                Some(m) if !MEMORY_RANGE.contains(&m.value) => {
                    return Err(self.at(
                        m,
                        format!(
                            "memory_mib {} is outside {}..={}",
                            m.value,
                            MEMORY_RANGE.start(),
                            MEMORY_RANGE.end()
                        ),
                        None,
                    ))
                }
                Some(m) => m.value,
                None => 1024,
            };
            let cpus = match &n.cpus {
                Some(c) if !CPU_RANGE.contains(&c.value) => {
                    return Err(self.at(
                        c,
                        format!(
                            "cpus {} is outside {}..={}",
                            c.value,
                            CPU_RANGE.start(),
                            CPU_RANGE.end()
                        ),
                        None,
                    ))
                }
                Some(c) => c.value,
                None => 1,
            };
            let nics_raw = &n.nics.value;
            if nics_raw.is_empty() || nics_raw.len() > MAX_NICS {
                return Err(self.at(
                    &n.nics,
                    format!("a node has 1 to {MAX_NICS} NICs, not {}", nics_raw.len()),
                    None,
                ));
            }
            let boots = nics_raw.iter().filter(|x| x.boot).count();
            if boots > 1 || (boots == 0 && nics_raw.len() > 1) {
                return Err(self.at(
                    &n.nics,
                    format!("node `{name}` must mark exactly one NIC `boot: true` (found {boots})"),
                    None,
                ));
            }
            let mut slots = BTreeSet::new();
            let mut nics = Vec::new();
            for (i, x) in nics_raw.iter().enumerate() {
                if let Some(other) = macs.insert(x.mac.value, name.clone()) {
                    return Err(self.at(
                        &x.mac,
                        format!(
                            "MAC {} is already used by a NIC of node `{other}`",
                            x.mac.value
                        ),
                        None,
                    ));
                }
                let slot = match &x.slot {
                    Some(s) if !SLOT_RANGE.contains(&s.value) => {
                        return Err(self.at(
                            s,
                            format!(
                                "PCI slot {} is outside {}..={}",
                                s.value,
                                SLOT_RANGE.start(),
                                SLOT_RANGE.end()
                            ),
                            Some("slots 0-2 belong to the machine's own devices".into()),
                        ))
                    }
                    Some(s) => s.value,
                    None => SLOT_RANGE.start() + i as u8,
                };
                if !slots.insert(slot) {
                    let at = x
                        .slot
                        .as_ref()
                        .map(|s| s.referenced)
                        .unwrap_or(x.mac.referenced);
                    return Err(self.cx.err(
                        Some(at),
                        format!("PCI slot {slot} is used twice in node `{name}`"),
                        None,
                    ));
                }
                let boot = x.boot || nics_raw.len() == 1;
                if let Some(why) = crate::boot_files::boot_refusal(x.model).filter(|_| boot) {
                    let bootable = super::NicModel::ALL
                        .into_iter()
                        .filter(|m| crate::boot_files::boot_refusal(*m).is_none())
                        .map(|m| m.name())
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(self.at(
                        &x.mac,
                        format!("a {} NIC cannot be the boot NIC: {why}", x.model.name()),
                        Some(format!(
                            "boot from one of {bootable}; a {} may be a second NIC (`boot: false`)",
                            x.model.name()
                        )),
                    ));
                }
                let segment = match &x.segment {
                    None => None,
                    Some(sg) if sg.value == BOOT_SEGMENT => None,
                    Some(sg) => match segments.iter().position(|g| g.name == sg.value) {
                        Some(i) if boot => {
                            return Err(self.at(
                                sg,
                                format!(
                                "the boot NIC is on segment `{}`; it must be on the boot network",
                                segments[i].name
                            ),
                                Some(
                                    "the boot network is where DHCP hands out the boot URL".into(),
                                ),
                            ))
                        }
                        Some(i) => Some(i),
                        None => {
                            return Err(self.at(
                                sg,
                                format!("unknown segment `{}`", sg.value),
                                Some(one_of(
                                    std::iter::once(BOOT_SEGMENT)
                                        .chain(segments.iter().map(|g| g.name.as_str())),
                                )),
                            ))
                        }
                    },
                };
                nics.push(Nic {
                    model: x.model,
                    mac: x.mac.value,
                    slot,
                    boot,
                    segment,
                });
            }
            let firmware = match &n.firmware {
                None => Firmware::Rom,
                Some(f) => match &f.value {
                    RawFirmware::Rom => Firmware::Rom,
                    RawFirmware::ChainUndionly => Firmware::ChainUndionly,
                    RawFirmware::EmbeddedScript(file) => {
                        let src = Spanned {
                            value: file.clone(),
                            referenced: f.referenced,
                            defined: f.defined,
                        };
                        let (source, body) =
                            self.template(&src, folder, vars, "embedded script")?;
                        if !body.starts_with(b"#!ipxe") {
                            return Err(self.at(
                                f,
                                format!("{} does not start with `#!ipxe`", source.display()),
                                Some("iPXE runs a script only with that first line".into()),
                            ));
                        }
                        Firmware::EmbeddedScript { source, body }
                    }
                },
            };
            out.push(Node {
                name: name.clone(),
                memory_mib,
                cpus,
                nics,
                firmware,
            });
        }
        Ok(out)
    }

    fn dhcp(
        &self,
        raw: &RawScenario,
        subnet: &super::Subnet,
        nodes: &[Node],
        vars: &BTreeMap<String, String>,
    ) -> Result<Dhcp, ScenarioError> {
        let mut hosts = Vec::new();
        let mut seen = BTreeSet::new();
        let mut ips = BTreeSet::new();
        let known: BTreeSet<_> = nodes
            .iter()
            .flat_map(|n| n.nics.iter().map(|x| x.mac))
            .collect();
        for h in &raw.services.dhcp.hosts {
            if !seen.insert(h.mac.value) {
                return Err(self.at(
                    &h.mac,
                    format!("DHCP host {} is listed twice", h.mac.value),
                    None,
                ));
            }
            if !known.contains(&h.mac.value) {
                return Err(self.at(
                    &h.mac,
                    format!("DHCP host {} is not a NIC of any node", h.mac.value),
                    Some(one_of(
                        known
                            .iter()
                            .map(|m| m.to_string())
                            .collect::<Vec<_>>()
                            .iter()
                            .map(String::as_str),
                    )),
                ));
            }
            if let Some(hn) = &h.hostname {
                let ok = !hn.value.is_empty()
                    && hn.value.len() <= 63
                    && hn
                        .value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !hn.value.starts_with('-');
                if !ok {
                    return Err(self.at(
                        hn,
                        format!("`{}` is not a valid host name", shown(&hn.value)),
                        None,
                    ));
                }
            }
            let on_segment = nodes
                .iter()
                .flat_map(|n| n.nics.iter())
                .any(|x| x.mac == h.mac.value && x.segment.is_some());
            if let (Some(ip), true) = (&h.ip, on_segment) {
                return Err(self.at(
                    ip,
                    format!(
                        "{} is on a segment: static addresses are for the boot network",
                        h.mac.value
                    ),
                    Some(
                        "leave out `ip`; the segment's DHCP gives an address from its pool".into(),
                    ),
                ));
            }
            if let Some(ip) = &h.ip {
                let (lo, _) = subnet.pool();
                if !subnet.contains(ip.value) || ip.value == subnet.server() || ip.value >= lo {
                    return Err(self.at(
                        ip,
                        format!("{} is not a free static address in {subnet}", ip.value),
                        Some(format!(
                            "use {}..{}: {} is the harness, {lo} and up the dynamic pool",
                            subnet.host(2),
                            subnet.host(subnet.size() / 2 - 1),
                            subnet.server()
                        )),
                    ));
                }
                if !ips.insert(ip.value) {
                    return Err(self.at(ip, format!("{} is given to two hosts", ip.value), None));
                }
            }
            hosts.push(DhcpHost {
                mac: h.mac.value,
                hostname: h.hostname.as_ref().map(|s| s.value.clone()),
                ip: h.ip.as_ref().map(|s| s.value),
            });
        }
        let boot_url = match &raw.services.dhcp.boot_url {
            Some(u) => {
                let url = render(&u.value, vars)
                    .map_err(|m| self.at(u, m, Some(one_of(vars.keys().map(String::as_str)))))?;
                // dnsmasq takes the URL as a field of `--dhcp-boot=tag,file,server,...`: a
                // comma would start another field, and a blank or control character is no URL.
                if let Some(c) = url
                    .chars()
                    .find(|c| *c == ',' || c.is_whitespace() || c.is_control())
                {
                    return Err(self.at(
                        u,
                        format!(
                            "boot URL `{}` has {}, which dnsmasq cannot pass on",
                            shown(&url),
                            shown(&format!("{c:?}"))
                        ),
                        Some("percent-encode it (`%2C`, `%20`)".into()),
                    ));
                }
                url
            }
            None => format!("http://{}/boot.ipxe", subnet.server()),
        };
        let start_after = raw.services.dhcp.start_after.map(|d| d.0);
        Ok(Dhcp {
            hosts,
            boot_url,
            start_after,
            down: self.down_windows(&raw.services.dhcp.down, start_after)?,
        })
    }

    fn http(
        &self,
        raw: &RawScenario,
        folder: &Folder,
        vars: &BTreeMap<String, String>,
    ) -> Result<Http, ScenarioError> {
        let mut files = Vec::new();
        let mut total: u64 = 0;
        for (url, src) in &raw.services.http.files {
            let url_ok = !url.is_empty()
                && url
                    .split('/')
                    .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
                && url
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'));
            if !url_ok {
                return Err(self.at(
                    src,
                    format!("`{}` is not a usable URL path", shown(url)),
                    Some("use a relative path like `boot.ipxe` or `menus/node01.ipxe`".into()),
                ));
            }
            let (full, body) = self.template(src, folder, vars, "HTTP file")?;
            total += body.len() as u64;
            if total > MAX_HTTP_TOTAL {
                return Err(self.at(
                    src,
                    format!(
                        "the HTTP files add up to more than {} MiB",
                        MAX_HTTP_TOTAL / 1024 / 1024
                    ),
                    Some("the server keeps every file in memory for the whole run".into()),
                ));
            }
            files.push(HttpFile {
                url_path: url.clone(),
                source: full,
                body,
            });
        }
        let mut faults = Vec::new();
        for f in &raw.services.http.faults {
            let path = if f.value.path.starts_with('/') {
                f.value.path.clone()
            } else {
                format!("/{}", f.value.path)
            };
            if !files.iter().any(|x| format!("/{}", x.url_path) == path) {
                return Err(self.at(
                    f,
                    format!(
                        "fault for `{}`, which is not one of the HTTP files",
                        shown(&path)
                    ),
                    Some(one_of(files.iter().map(|x| x.url_path.as_str()))),
                ));
            }
            // Without a delay, a fault is an error status; 503 unless the scenario says.
            let status = match (f.value.status, f.value.delay) {
                (Some(s), _) => Some(s),
                (None, None) => Some(503),
                (None, Some(_)) => None,
            };
            if let Some(status) = status.filter(|s| !(400..=599).contains(s)) {
                return Err(self.at(
                    f,
                    format!("status {status} is not an error (400..=599)"),
                    None,
                ));
            }
            if f.value.fail_first == 0 || f.value.fail_first > MAX_FAULTS {
                return Err(self.at(f, format!("fail_first must be 1..={MAX_FAULTS}"), None));
            }
            if f.value.delay.is_some_and(|d| d.0 > MAX_HTTP_DELAY) {
                return Err(self.at(
                    f,
                    format!("delay longer than {MAX_HTTP_DELAY:?}: iPXE would give up first"),
                    None,
                ));
            }
            faults.push(HttpFault {
                path,
                first: f.value.fail_first,
                status,
                delay: f.value.delay.map(|d| d.0),
            });
        }
        let start_after = raw.services.http.start_after.map(|d| d.0);
        Ok(Http {
            files,
            faults,
            start_after,
            down: self.down_windows(&raw.services.http.down, start_after)?,
        })
    }

    /// A service's `down` windows, in time order, each after its late start.
    fn down_windows(
        &self,
        written: &[Spanned<RawDownWindow>],
        start_after: Option<Duration>,
    ) -> Result<Vec<super::DownWindow>, ScenarioError> {
        let pairs: Vec<(Duration, Duration)> = written
            .iter()
            .map(|w| (w.value.at.0, w.value.length.0))
            .collect();
        super::windows::check(&pairs, start_after)
            .map_err(|e| self.at(&written[e.index], e.message, e.help))
    }

    /// Reads a file the harness serves or hands to a guest: it must stay inside the scenario's
    /// folder (links included), be a regular file of bounded size, and its `{{variables}}` must
    /// all be known. Binary files are taken as they are.
    fn template(
        &self,
        src: &Spanned<String>,
        folder: &Folder,
        vars: &BTreeMap<String, String>,
        what: &str,
    ) -> Result<(PathBuf, Vec<u8>), ScenarioError> {
        let rel = Path::new(&src.value);
        if rel.is_absolute() || rel.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(self.at(
                src,
                format!("`{}` leaves the scenario's folder", shown(&src.value)),
                Some(format!(
                    "{what}s must live in or below the folder of the scenario file"
                )),
            ));
        }
        let full = folder.dir.join(rel);
        let canon = full
            .canonicalize()
            .map_err(|e| self.at(src, format!("{what} {}: {e}", full.display()), None))?;
        if !canon.starts_with(&folder.canon) {
            return Err(self.at(
                src,
                format!(
                    "`{}` resolves outside the scenario's folder (through a link)",
                    shown(&src.value)
                ),
                None,
            ));
        }
        let meta = std::fs::metadata(&canon)
            .map_err(|e| self.at(src, format!("{}: {e}", full.display()), None))?;
        if !meta.is_file() || meta.len() > MAX_HTTP_FILE {
            return Err(self.at(
                src,
                format!("{} is not a regular file of at most 16 MiB", full.display()),
                None,
            ));
        }
        let bytes = std::fs::read(&canon)
            .map_err(|e| self.at(src, format!("{}: {e}", full.display()), None))?;
        let body = match String::from_utf8(bytes) {
            Ok(text) => render(&text, vars)
                .map_err(|m| {
                    self.at(
                        src,
                        format!("{}: {m}", full.display()),
                        Some(one_of(vars.keys().map(String::as_str))),
                    )
                })?
                .into_bytes(),
            Err(e) => e.into_bytes(),
        };
        Ok((full, body))
    }

    fn segments(
        &self,
        raw: &RawScenario,
        subnet: &super::Subnet,
    ) -> Result<Vec<Segment>, ScenarioError> {
        let mut out: Vec<Segment> = Vec::new();
        if raw.network.segments.len() > MAX_SEGMENTS {
            return Err(self.at(
                &raw.network.segments[MAX_SEGMENTS],
                format!("more than {MAX_SEGMENTS} segments"),
                None,
            ));
        }
        for sg in &raw.network.segments {
            let name = &sg.value.name;
            let ok = !name.is_empty()
                && name.len() <= 16
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok {
                return Err(self.at(
                    sg,
                    format!("segment name `{name}` is not valid"),
                    Some("use 1-16 letters, digits, '-' and '_'".into()),
                ));
            }
            if name == BOOT_SEGMENT || out.iter().any(|g| &g.name == name) {
                return Err(self.at(
                    sg,
                    format!("segment name `{name}` is taken"),
                    Some(format!("`{BOOT_SEGMENT}` names the boot network")),
                ));
            }
            let net = sg.value.subnet;
            if let Some(other) = std::iter::once((BOOT_SEGMENT, subnet))
                .chain(out.iter().map(|g| (g.name.as_str(), &g.subnet)))
                .find(|(_, s)| s.overlaps(&net))
            {
                return Err(self.at(
                    sg,
                    format!(
                        "segment `{name}` ({net}) overlaps `{}` ({})",
                        other.0, other.1
                    ),
                    Some("each segment needs its own subnet".into()),
                ));
            }
            out.push(Segment {
                name: name.clone(),
                subnet: net,
                dhcp: sg.value.dhcp,
            });
        }
        Ok(out)
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

    fn steps(&self, raw: &RawScenario, nodes: &[Node]) -> Result<Vec<Step>, ScenarioError> {
        if raw.expect.value.is_empty() {
            return Err(self.at(
                &raw.expect,
                "`expect` is empty: a scenario must assert something",
                None,
            ));
        }
        let mut out = Vec::new();
        for s in &raw.expect.value {
            let step: &RawStep = &s.value;
            let mut actions = Vec::new();
            if let Some(t) = &step.console {
                actions.push(("console", Action::Console(t.clone())));
            }
            if let Some(r) = &step.console_regex {
                let re = regex::Regex::new(r)
                    .map_err(|e| self.at(s, format!("bad console_regex: {e}"), None))?;
                actions.push(("console_regex", Action::ConsoleRegex(re)));
            }
            if let Some(d) = &step.dhcp_ack {
                actions.push((
                    "dhcp_ack",
                    Action::DhcpAck {
                        mac: d.mac,
                        hostname: d.hostname.clone(),
                        boot_file: d.boot_file.clone(),
                    },
                ));
            }
            if let Some(t) = &step.tftp_sent {
                actions.push((
                    "tftp_sent",
                    Action::TftpSent {
                        file: t.file.clone(),
                        mac: t.mac,
                    },
                ));
            }
            if let Some(p) = &step.http_get {
                let p = if p.starts_with('/') {
                    p.clone()
                } else {
                    format!("/{p}")
                };
                actions.push(("http_get", Action::HttpGet(p)));
            }
            if let Some(l) = &step.iscsi_login {
                actions.push((
                    "iscsi_login",
                    Action::IscsiLogin {
                        initiator: l.initiator.clone(),
                        target: l.target.clone(),
                        from: l.from,
                        mac: l.mac,
                        session: l.session.unwrap_or_default(),
                    },
                ));
            }
            if let Some(h) = &step.http_status {
                let path = if h.path.starts_with('/') {
                    h.path.clone()
                } else {
                    format!("/{}", h.path)
                };
                actions.push((
                    "http_status",
                    Action::HttpStatus {
                        path,
                        status: h.status,
                    },
                ));
            }
            if let Some(l) = &step.iscsi_login_refused {
                actions.push((
                    "iscsi_login_refused",
                    Action::IscsiLoginRefused {
                        initiator: l.initiator.clone(),
                        target: l.target.clone(),
                        status: l.status,
                    },
                ));
            }
            if let Some(a) = &step.iscsi_logins_all {
                if a.at_least == 0 || a.at_least > MAX_FAULTS {
                    return Err(self.at(s, format!("`at_least` must be 1..={MAX_FAULTS}"), None));
                }
                if a.initiator.is_none()
                    && a.target.is_none()
                    && a.from.is_none()
                    && a.mac.is_none()
                {
                    return Err(self.at(
                        s,
                        "`iscsi_logins_all` needs `initiator`, `target`, `from` or `mac` to compare",
                        None,
                    ));
                }
                actions.push((
                    "iscsi_logins_all",
                    Action::AllLogins {
                        initiator: a.initiator.clone(),
                        target: a.target.clone(),
                        from: a.from,
                        mac: a.mac,
                        at_least: a.at_least,
                    },
                ));
            }
            if let Some(r) = &step.refused {
                if r.service == Service::Dhcp {
                    return Err(self.at(
                        s,
                        "`refused` applies to http and iscsi: a DHCP server that is down is simply not running",
                        Some("assert a late DHCP server with `service_started: dhcp`".into()),
                    ));
                }
                actions.push((
                    "refused",
                    Action::Refused {
                        service: r.service,
                        from: r.from,
                    },
                ));
            }
            if let Some(svc) = step.service_started {
                actions.push(("service_started", Action::ServiceStarted(svc)));
            }
            if let Some(t) = &step.send {
                actions.push(("send", Action::Send(t.clone())));
            }
            if let Some(svc) = step.restart {
                actions.push(("restart", Action::Restart(svc)));
            }
            if let Some(c) = &step.shell {
                if c.trim().is_empty() || c.contains(['\n', '\r']) {
                    return Err(self.at(
                        s,
                        "`shell` takes one non-empty command line",
                        Some("join several commands with `&&` or `;`".into()),
                    ));
                }
                actions.push(("shell", Action::Shell(c.clone())));
            }
            if let Some(b) = &step.lun_bytes {
                if b.text.is_empty() || b.text.len() > MAX_LUN_TEXT {
                    return Err(self.at(
                        s,
                        format!("`lun_bytes.text` must be 1..={MAX_LUN_TEXT} bytes"),
                        None,
                    ));
                }
                actions.push((
                    "lun_bytes",
                    Action::LunBytes {
                        offset: b.offset,
                        text: b.text.clone(),
                    },
                ));
            }
            for (kind, flag, action) in [
                ("qemu_exit", step.qemu_exit, Action::QemuExit),
                (
                    "ibft_matches_lab",
                    step.ibft_matches_lab,
                    Action::IbftMatchesLab,
                ),
                (
                    "root_on_session",
                    step.root_on_session,
                    Action::RootOnSession,
                ),
            ] {
                match flag {
                    Some(true) => actions.push((kind, action)),
                    Some(false) => {
                        return Err(self.at(
                            s,
                            format!("`{kind}: false` asserts nothing"),
                            Some(format!("write `{kind}: true`, or drop the step")),
                        ))
                    }
                    None => {}
                }
            }
            const KINDS: [&str; 18] = [
                "console",
                "console_regex",
                "dhcp_ack",
                "tftp_sent",
                "http_get",
                "http_status",
                "iscsi_login",
                "iscsi_login_refused",
                "iscsi_logins_all",
                "refused",
                "service_started",
                "send",
                "restart",
                "shell",
                "lun_bytes",
                "qemu_exit",
                "ibft_matches_lab",
                "root_on_session",
            ];
            if actions.len() != 1 {
                let found: Vec<_> = actions.iter().map(|(k, _)| *k).collect();
                return Err(self.at(
                    s,
                    format!(
                        "a step needs exactly one action, found {}: {:?}",
                        found.len(),
                        found
                    ),
                    Some(format!("actions: {}", one_of(KINDS))),
                ));
            }
            let (kind, action) = actions.remove(0);
            if matches!(&action, Action::Console(t) if t.is_empty()) {
                return Err(self.at(s, "an empty `console` text matches any line", None));
            }
            let node = match &step.node {
                Some(n) if nodes.iter().any(|x| &x.name == n) => n.clone(),
                Some(n) => {
                    return Err(self.at(
                        s,
                        format!("step names unknown node `{}`", shown(n)),
                        Some(one_of(nodes.iter().map(|x| x.name.as_str()))),
                    ))
                }
                None if nodes.len() == 1 => nodes[0].name.clone(),
                None => {
                    return Err(self.at(
                        s,
                        "with several nodes every step must say which `node` it is about",
                        Some(one_of(nodes.iter().map(|x| x.name.as_str()))),
                    ))
                }
            };
            let name = step
                .name
                .clone()
                .unwrap_or_else(|| default_step_name(kind, &action));
            let after = match &step.after {
                None => None,
                Some(a) if out.iter().any(|p: &Step| p.name == a.value) => Some(a.value.clone()),
                Some(a) => {
                    return Err(self.at(
                        a,
                        format!("`after` names no earlier step: `{}`", shown(&a.value)),
                        Some(one_of(out.iter().map(|p| p.name.as_str()))),
                    ))
                }
            };
            out.push(Step {
                name,
                node,
                within: step.within.map(|d| d.0).unwrap_or(DEFAULT_WITHIN),
                action,
                after,
            });
        }
        Ok(out)
    }
}

fn default_step_name(kind: &str, a: &Action) -> String {
    match a {
        Action::Console(t) | Action::Send(t) | Action::HttpGet(t) | Action::Shell(t) => {
            format!("{kind} {t:?}")
        }
        Action::Restart(service) => format!("{kind} {}", service.name()),
        Action::LunBytes { offset, .. } => format!("{kind} at {offset}"),
        Action::QemuExit => kind.to_string(),
        Action::IbftMatchesLab => "the iBFT matches what the lab served".to_string(),
        Action::RootOnSession => "the root is on the iSCSI session".to_string(),
        Action::ConsoleRegex(r) => format!("{kind} /{}/", r.as_str()),
        Action::TftpSent { file, mac } => match mac {
            Some(m) => format!("{kind} {file} to {m}"),
            None => format!("{kind} {file}"),
        },
        Action::DhcpAck { mac, hostname, .. } => {
            let who = mac
                .map(|m| m.to_string())
                .or(hostname.clone())
                .unwrap_or_else(|| "any".into());
            format!("{kind} {who}")
        }
        Action::HttpStatus { path, status } => format!("{kind} {path} {status}"),
        Action::Refused { service, .. } | Action::ServiceStarted(service) => {
            format!("{kind} {}", service.name())
        }
        Action::IscsiLogin { initiator, .. }
        | Action::IscsiLoginRefused { initiator, .. }
        | Action::AllLogins { initiator, .. } => {
            format!(
                "{kind} {}",
                initiator.as_ref().map(|i| i.as_str()).unwrap_or("any")
            )
        }
    }
}

/// Harness variables available to HTTP files and the boot URL as `{{name}}`.
fn builtin_vars(subnet: &super::Subnet, raw: &RawScenario) -> BTreeMap<String, String> {
    let server = subnet.server().to_string();
    let lun = raw
        .services
        .iscsi
        .lun
        .as_ref()
        .map(|l| l.value)
        .unwrap_or(1);
    let target = raw.services.iscsi.target.to_string();
    BTreeMap::from([
        ("server".to_string(), server.clone()),
        ("subnet".to_string(), subnet.to_string()),
        ("http_url".to_string(), format!("http://{server}")),
        ("target_iqn".to_string(), target.clone()),
        ("lun".to_string(), lun.to_string()),
        (
            "root_path".to_string(),
            format!("iscsi:{server}:::{lun}:{target}"),
        ),
    ])
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
