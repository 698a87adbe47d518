//! From the file as written to a [`Scenario`] the harness can trust. Every error names
//! file:line:column and, where a name is unknown, the names that would have been valid.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use miette::{Diagnostic, NamedSource, SourceSpan};
use serde_saphyr::{Location, Spanned};

use super::raw::{RawFirmware, RawImage, RawScenario, RawStep};
use super::{
    default_fail_patterns, scenario_dir, Action, Dhcp, DhcpHost, ExpectedFailure, FailPattern,
    Firmware, Http, HttpFault, HttpFile, ImageRef, Iscsi, Nic, Node, Scenario, Service, Step,
};

/// Default wait for a step that does not say `within`.
pub const DEFAULT_WITHIN: Duration = Duration::from_secs(120);
const MAX_NODES: usize = 8;
const MAX_NICS: usize = 8;
const MAX_HTTP_FILE: u64 = 16 * 1024 * 1024;
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
    #[error("{path}: cannot read: {source}")]
    #[diagnostic(code(scenario::read))]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },

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
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: path.display().to_string(),
        source,
    })?;
    load_str(path, &text)
}

/// Parses and validates scenario text; `path` names it in errors and anchors relative paths.
pub fn load_str(path: &Path, text: &str) -> Result<Scenario, ScenarioError> {
    let cx = Cx {
        file: path.display().to_string(),
        text,
    };
    let raw: RawScenario = serde_saphyr::from_str(text).map_err(|e| cx.parse_error(&e))?;
    Validator { cx: &cx, path }.run(raw)
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
        let (location, span) = match loc.filter(|l| *l != Location::UNKNOWN) {
            Some(l) => {
                let offset = l
                    .span()
                    .byte_offset()
                    .map(|o| o as usize)
                    .unwrap_or_else(|| offset_of(self.text, l.line(), l.column()));
                let len = l.span().byte_len().unwrap_or(1).max(1) as usize;
                (
                    format!("{}:{}:{}", self.file, l.line(), l.column()),
                    Some(SourceSpan::from((offset, len))),
                )
            }
            None => (self.file.clone(), None),
        };
        ScenarioError::Invalid(Box::new(Invalid {
            location,
            message: message.into(),
            src: NamedSource::new(self.file.clone(), self.text.to_string()),
            span,
            help,
        }))
    }

    fn parse_error(&self, e: &serde_saphyr::Error) -> ScenarioError {
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
    let names: Vec<String> = names.into_iter().map(|n| format!("`{n}`")).collect();
    if names.is_empty() {
        "there are none".to_string()
    } else {
        format!("valid: {}", names.join(", "))
    }
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
                return Err(self.cx.err(
                    None,
                    format!("`vars.{k}` would replace the harness's own variable"),
                    Some(format!(
                        "harness variables: {}",
                        one_of(vars.keys().map(String::as_str))
                    )),
                ));
            }
            vars.insert(k.clone(), v.clone());
        }

        let nodes = self.nodes(&raw, &dir, &vars)?;
        let dhcp = self.dhcp(&raw, &subnet, &nodes, &vars)?;
        let http = self.http(&raw, &dir, &vars)?;
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
            if f.value.refuse_first + f.value.drop_first > MAX_FAULTS {
                return Err(self.at(
                    f,
                    format!("more than {MAX_FAULTS} faulty logins: no boot waits that long"),
                    None,
                ));
            }
        }
        let iscsi = Iscsi {
            target: raw.services.iscsi.target.clone(),
            lun,
            refuse_first: faults.map(|f| f.value.refuse_first).unwrap_or(0),
            drop_first: faults.map(|f| f.value.drop_first).unwrap_or(0),
            start_after: raw.services.iscsi.start_after.map(|d| d.0),
        };
        let steps = self.steps(&raw, &nodes)?;
        let expect_failure = match &raw.expect_failure {
            None => None,
            Some(ef) => {
                let matching = steps.iter().filter(|s| s.name == ef.value.step).count();
                if matching != 1 {
                    let msg = if matching == 0 {
                        format!("`expect_failure.step` names no step: `{}`", ef.value.step)
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
                Some(ExpectedFailure {
                    step: ef.value.step.clone(),
                    reason: ef.value.reason.clone(),
                })
            }
        };
        let mut fail_on = if raw.default_fail_on {
            default_fail_patterns()
        } else {
            Vec::new()
        };
        for t in &raw.fail_on {
            if t.trim().is_empty() {
                return Err(self.cx.err(
                    None,
                    "`fail_on` has an empty text, which would match every line",
                    None,
                ));
            }
            fail_on.push(FailPattern {
                text: t.clone(),
                meaning: "the scenario lists this text under fail_on".into(),
            });
        }

        Ok(Scenario {
            name,
            description: raw.description.trim().to_string(),
            path: self.path.to_path_buf(),
            image,
            subnet,
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
                format!("scenario name `{}` is not usable as a folder name", n.value),
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
                    return Err(self.at(img, format!("`{name}` is not a recipe name"), None));
                }
                Ok(ImageRef::Recipe {
                    name: name.clone(),
                    set: set.clone(),
                })
            }
            RawImage::File(f) => {
                let p = dir.join(f);
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

    fn nodes(
        &self,
        raw: &RawScenario,
        dir: &Path,
        vars: &BTreeMap<String, String>,
    ) -> Result<Vec<Node>, ScenarioError> {
        if raw.nodes.is_empty() {
            return Err(self.cx.err(
                None,
                "`nodes` is empty: a scenario boots at least one node",
                None,
            ));
        }
        if raw.nodes.len() > MAX_NODES {
            return Err(self.at(
                &raw.nodes[MAX_NODES].name,
                format!("more than {MAX_NODES} nodes"),
                Some("each node is a QEMU process; split the scenario".into()),
            ));
        }
        let mut names = BTreeSet::new();
        let mut macs = HashMap::new();
        let mut out = Vec::new();
        for n in &raw.nodes {
            let name = &n.name.value;
            let ok = !name.is_empty()
                && name.len() <= 32
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !name.starts_with('-');
            if !ok {
                return Err(self.at(
                    &n.name,
                    format!("node name `{name}` is not a valid host name"),
                    Some("use 1-32 letters, digits and '-'".into()),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(self.at(&n.name, format!("node `{name}` is defined twice"), None));
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
                nics.push(Nic {
                    model: x.model,
                    mac: x.mac.value,
                    slot,
                    boot: x.boot || nics_raw.len() == 1,
                });
            }
            let firmware = match &n.firmware {
                None => Firmware::Rom,
                Some(f) => match &f.value {
                    RawFirmware::Rom => Firmware::Rom,
                    RawFirmware::EmbeddedScript(file) => {
                        let src = Spanned {
                            value: file.clone(),
                            referenced: f.referenced,
                            defined: f.defined,
                        };
                        let (source, body) = self.template(
                            &src,
                            dir,
                            &self.dir_canon(dir)?,
                            vars,
                            "embedded script",
                        )?;
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
                        format!("`{}` is not a valid host name", hn.value),
                        None,
                    ));
                }
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
            Some(u) => render(&u.value, vars)
                .map_err(|m| self.at(u, m, Some(one_of(vars.keys().map(String::as_str)))))?,
            None => format!("http://{}/boot.ipxe", subnet.server()),
        };
        Ok(Dhcp {
            hosts,
            boot_url,
            start_after: raw.services.dhcp.start_after.map(|d| d.0),
        })
    }

    fn http(
        &self,
        raw: &RawScenario,
        dir: &Path,
        vars: &BTreeMap<String, String>,
    ) -> Result<Http, ScenarioError> {
        let mut files = Vec::new();
        let dir_canon = self.dir_canon(dir)?;
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
                    format!("`{url}` is not a usable URL path"),
                    Some("use a relative path like `boot.ipxe` or `menus/node01.ipxe`".into()),
                ));
            }
            let (full, body) = self.template(src, dir, &dir_canon, vars, "HTTP file")?;
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
                    format!("fault for `{path}`, which is not one of the HTTP files"),
                    Some(one_of(files.iter().map(|x| x.url_path.as_str()))),
                ));
            }
            let status = f.value.status.unwrap_or(503);
            if !(400..=599).contains(&status) {
                return Err(self.at(
                    f,
                    format!("status {status} is not an error (400..=599)"),
                    None,
                ));
            }
            if f.value.fail_first == 0 || f.value.fail_first > MAX_FAULTS {
                return Err(self.at(f, format!("fail_first must be 1..={MAX_FAULTS}"), None));
            }
            faults.push(HttpFault {
                path,
                first: f.value.fail_first,
                status,
            });
        }
        Ok(Http {
            files,
            faults,
            start_after: raw.services.http.start_after.map(|d| d.0),
        })
    }

    /// Reads a file the harness serves or hands to a guest: it must stay inside the scenario's
    /// folder (links included), be a regular file of bounded size, and its `{{variables}}` must
    /// all be known. Binary files are taken as they are.
    fn template(
        &self,
        src: &Spanned<String>,
        dir: &Path,
        dir_canon: &Path,
        vars: &BTreeMap<String, String>,
        what: &str,
    ) -> Result<(PathBuf, Vec<u8>), ScenarioError> {
        let rel = Path::new(&src.value);
        if rel.is_absolute() || rel.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(self.at(
                src,
                format!("`{}` leaves the scenario's folder", src.value),
                Some(format!(
                    "{what}s must live in or below the folder of the scenario file"
                )),
            ));
        }
        let full = dir.join(rel);
        let canon = full
            .canonicalize()
            .map_err(|e| self.at(src, format!("{what} {}: {e}", full.display()), None))?;
        if !canon.starts_with(dir_canon) {
            return Err(self.at(
                src,
                format!(
                    "`{}` resolves outside the scenario's folder (through a link)",
                    src.value
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
        if raw.expect.is_empty() {
            return Err(self.cx.err(
                None,
                "`expect` is empty: a scenario must assert something",
                None,
            ));
        }
        let mut out = Vec::new();
        for s in &raw.expect {
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
                if l.from.is_some() {
                    return Err(self.at(
                        s,
                        "`iscsi_login_refused` takes initiator and target only",
                        None,
                    ));
                }
                actions.push((
                    "iscsi_login_refused",
                    Action::IscsiLoginRefused {
                        initiator: l.initiator.clone(),
                        target: l.target.clone(),
                    },
                ));
            }
            if let Some(a) = &step.iscsi_logins_all {
                if a.at_least == 0 || a.at_least > MAX_FAULTS {
                    return Err(self.at(s, format!("`at_least` must be 1..={MAX_FAULTS}"), None));
                }
                if a.initiator.is_none() && a.target.is_none() && a.from.is_none() {
                    return Err(self.at(
                        s,
                        "`iscsi_logins_all` needs `initiator`, `target` or `from` to compare",
                        None,
                    ));
                }
                actions.push((
                    "iscsi_logins_all",
                    Action::AllLogins {
                        initiator: a.initiator.clone(),
                        target: a.target.clone(),
                        from: a.from,
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
            match step.qemu_exit {
                Some(true) => actions.push(("qemu_exit", Action::QemuExit)),
                Some(false) => {
                    return Err(self.at(
                        s,
                        "`qemu_exit: false` asserts nothing",
                        Some("write `qemu_exit: true`, or drop the step".into()),
                    ))
                }
                None => {}
            }
            const KINDS: [&str; 15] = [
                "console",
                "console_regex",
                "dhcp_ack",
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
                        format!("step names unknown node `{n}`"),
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
            out.push(Step {
                name,
                node,
                within: step.within.map(|d| d.0).unwrap_or(DEFAULT_WITHIN),
                action,
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
        Action::ConsoleRegex(r) => format!("{kind} /{}/", r.as_str()),
        Action::DhcpAck { mac, hostname } => {
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
            .ok_or_else(|| format!("unknown variable `{{{{{name}}}}}`"))?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}
