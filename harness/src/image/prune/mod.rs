//! `image prune`: frees the image cache of images nothing asks for any more.
//!
//! An image is wanted when the current recipes build it with their default parameters or a
//! scenario under `scenarios/` names it; the names come from [`image::cache_key`] and
//! [`image::image_dir_name`], exactly as [`image::ensure_built`] makes them, so a recipe edit
//! turns the old image into garbage and nothing else does.
//!
//! The cache is shared by every checkout of the user, each at its own commit. Every build and
//! every reuse records the checkout in the image's folder ([`image::USERS_FILE`]), and an image
//! this checkout does not want goes only when no other recorded checkout wants it either: each
//! one that still exists is asked the same question (its recipes' defaults and its
//! `scenarios/`, keyed by this harness). An image is kept when that cannot be told: no record
//! (built before images kept one), a record begun on a reuse (earlier users unknown), a
//! checkout whose harness keys images another way, or whose recipes or scenarios this harness
//! cannot read. `--all` removes them all.
//!
//! Only entries the harness itself makes are touched (image folders, their lock files,
//! leftovers of killed builds and build logs); anything else in the cache is left alone, and a
//! symlink that leads out of the cache is never followed nor removed.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::image::{self, ImageError};
use crate::scenario::{self, ImageRef};

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum PruneError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Recipe(#[from] crate::scenario::recipe::RecipeError),
    #[error("scenario {path} is invalid, so the images it needs are unknown: {message}")]
    #[diagnostic(help("fix the scenario (see `netboot-harness check`), or use `--all`"))]
    Scenario { path: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} leads outside the cache ({target}); nothing was removed")]
    #[diagnostic(help("point NETBOOT_HARNESS_CACHE at the real folder instead"))]
    Escapes { path: String, target: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PruneError + '_ {
    move |source| PruneError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Image folder name -> why it is kept (recipe defaults, scenario names).
pub type Wanted = BTreeMap<String, Vec<String>>;

/// Why an image this checkout does not want is kept all the same, if it is: what other checkouts
/// that recorded using it ([`image::USERS_FILE`]) want, judged once per checkout.
struct OtherCheckouts {
    here: Option<PathBuf>,
    judged: HashMap<PathBuf, Result<Wanted, String>>,
}

impl OtherCheckouts {
    fn new(here: &Path) -> OtherCheckouts {
        OtherCheckouts {
            here: here.canonicalize().ok(),
            judged: HashMap::new(),
        }
    }

    /// `Some(why)` to keep the image folder `dir` named `name`, `None` when nobody wants it.
    fn keep(&mut self, dir: &Path, name: &str) -> Option<String> {
        let Some(users) = image::image_users(dir) else {
            return Some(
                "no record of the checkouts that use it (built before images kept one); \
                 --all removes it"
                    .into(),
            );
        };
        let mut why = Vec::new();
        for (scheme, root) in users {
            if scheme == image::EARLIER_USES_UNKNOWN {
                why.push(
                    "used before images recorded their checkouts, so others may still want it; \
                     --all removes it"
                        .to_string(),
                );
                continue;
            }
            if self.here.as_deref() == Some(root.as_path()) || !is_checkout(&root) {
                continue;
            }
            if scheme != image::KEY_SCHEME {
                why.push(format!(
                    "used by {}, whose harness keys images another way ({scheme})",
                    root.display()
                ));
                continue;
            }
            let judged = self
                .judged
                .entry(root.clone())
                .or_insert_with(|| checkout_wants(&root));
            match judged {
                Ok(w) => {
                    if let Some(reasons) = w.get(name) {
                        why.push(format!("{} in {}", reasons.join(", "), root.display()));
                    }
                }
                Err(e) => why.push(format!(
                    "used by {}, whose images this harness cannot tell: {e}",
                    root.display()
                )),
            }
        }
        (!why.is_empty()).then(|| why.join("; "))
    }
}

fn is_checkout(root: &Path) -> bool {
    root.join("images").is_dir() && root.join("scenarios").is_dir()
}

/// What another checkout's recipes and scenarios ask for, read loosely: only each scenario's
/// `image`, since that checkout may be at a commit whose scenario format this one does not know.
fn checkout_wants(root: &Path) -> Result<Wanted, String> {
    let images_dir = root.join("images");
    let mut out = recipe_defaults(&images_dir).map_err(|e| e.to_string())?;
    let dir = root.join("scenarios");
    let mut files = crate::support::paths::scenario_files(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    files.extend(crate::support::paths::example_files(root));
    for f in files {
        let text = std::fs::read(&f)
            .ok()
            .filter(|t| t.len() <= scenario::MAX_SCENARIO_BYTES as usize)
            .and_then(|t| String::from_utf8(t).ok())
            .ok_or_else(|| format!("{}: unreadable", f.display()))?;
        let s: LooseScenario =
            serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", f.display()))?;
        let (name, set, add) = match s.image {
            LooseImage::Name(name) => (name, BTreeMap::new(), image::Additions::default()),
            LooseImage::Recipe {
                recipe: Some(name),
                set,
                overlay,
                customize,
                dracut_source,
            } => {
                // Read where that scenario's own run would read them: beside the scenario.
                let here = f.parent().unwrap_or(Path::new("."));
                let add = image::Additions {
                    overlay: overlay.map(|p| here.join(p)),
                    customize: customize.map(|p| here.join(p)),
                    dracut_source: dracut_source.map(|p| here.join(p)),
                };
                (name, set, add)
            }
            // `{ file: PATH }`: a disk of the user's, not in the cache.
            LooseImage::Recipe { recipe: None, .. } => continue,
        };
        let at = |e: ImageError| format!("{}: {e}", f.display());
        let r = image::load_recipe(&images_dir, &name)
            .map_err(ImageError::from)
            .map_err(at)?;
        let params = r.resolve(&set).map_err(ImageError::from).map_err(at)?;
        let key = image::cache_key_with(&r, &images_dir, &params, &add).map_err(at)?;
        out.entry(image::image_dir_name(&name, &key))
            .or_default()
            .push(format!("scenario {}", s.name.unwrap_or_default()));
    }
    Ok(out)
}

/// A scenario of another checkout, as far as its image goes.
#[derive(serde::Deserialize)]
struct LooseScenario {
    #[serde(default)]
    name: Option<String>,
    image: LooseImage,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum LooseImage {
    Name(String),
    Recipe {
        recipe: Option<String>,
        #[serde(default)]
        set: BTreeMap<String, String>,
        #[serde(default)]
        overlay: Option<PathBuf>,
        #[serde(default)]
        customize: Option<PathBuf>,
        #[serde(default)]
        dracut_source: Option<PathBuf>,
    },
}

fn recipe_defaults(images_dir: &Path) -> Result<Wanted, ImageError> {
    let mut out = Wanted::new();
    for r in image::list_recipes(images_dir)? {
        let params = r.resolve(&BTreeMap::new())?;
        let key = image::cache_key(&r, images_dir, &params)?;
        out.entry(image::image_dir_name(&r.name, &key))
            .or_default()
            .push(format!("default parameters of {}", r.name));
    }
    Ok(out)
}

/// The images the current recipes (default parameters), the shipped scenarios and the worked
/// examples ask for.
pub fn wanted(images_dir: &Path, scenarios_dir: &Path) -> Result<Wanted, PruneError> {
    let mut out = recipe_defaults(images_dir)?;
    let mut files =
        crate::support::paths::scenario_files(scenarios_dir).map_err(io(scenarios_dir))?;
    // The worked examples beside the scenarios (examples/<example>/*.yaml) are run as they are.
    if let Some(root) = scenarios_dir.parent() {
        files.extend(crate::support::paths::example_files(root));
    }
    for f in files {
        let s = scenario::load(&f).map_err(|e| PruneError::Scenario {
            path: f.display().to_string(),
            message: e.summary(),
        })?;
        for wanted in s.images() {
            if let ImageRef::Recipe { name, set, add } = wanted {
                let r = image::load_recipe(images_dir, name)?;
                let params = r.resolve(set)?;
                let key = image::cache_key_with(&r, images_dir, &params, add)?;
                out.entry(image::image_dir_name(name, &key))
                    .or_default()
                    .push(format!("scenario {}", s.name));
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Removed,
    /// Dry run: would have been removed.
    WouldRemove,
    Kept,
    /// A build holds it (lock taken, or its process is alive).
    InUse,
    /// A symlink leading out of the cache: never followed, never removed.
    Refused,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub path: PathBuf,
    pub action: Action,
    /// Bytes on disk (allocated blocks: images are sparse).
    pub bytes: u64,
    pub note: String,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub entries: Vec<Entry>,
}

impl Outcome {
    /// Bytes freed, or that a dry run would free.
    pub fn freed(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| matches!(e.action, Action::Removed | Action::WouldRemove))
            .map(|e| e.bytes)
            .sum()
    }

    pub fn refused(&self) -> bool {
        self.entries.iter().any(|e| e.action == Action::Refused)
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct PruneOptions {
    /// Remove every image, wanted or not.
    pub all: bool,
    pub dry_run: bool,
}

/// What an entry of the cache is, by the names the harness gives them.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    /// `images/<recipe>-<key16>`
    Image(String),
    /// `images/.<recipe>-<key16>.lock`
    Lock(String),
    /// `images/.build-<key16>-<pid>`: a build's temporary folder.
    Build(i32),
    /// `build-<recipe>-<key16>.log` at the top of the cache.
    Log(String),
}

fn is_image_name(n: &str) -> bool {
    n.rsplit_once('-').is_some_and(|(recipe, key)| {
        !recipe.is_empty()
            && key.len() == 16
            && key.bytes().all(|b| b.is_ascii_hexdigit())
            && recipe
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

fn kind_in_images(name: &str) -> Option<Kind> {
    if let Some(rest) = name.strip_prefix(".build-") {
        let (key, pid) = rest.split_once('-')?;
        if key.len() == 16 && key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return pid.parse().ok().map(Kind::Build);
        }
        return None;
    }
    if let Some(n) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".lock")) {
        return is_image_name(n).then(|| Kind::Lock(n.to_string()));
    }
    is_image_name(name).then(|| Kind::Image(name.to_string()))
}

fn kind_at_top(name: &str) -> Option<Kind> {
    let n = name.strip_prefix("build-")?.strip_suffix(".log")?;
    is_image_name(n).then(|| Kind::Log(n.to_string()))
}

/// Removes (or lists, with `dry_run`) what neither this checkout (`here`, whose images are
/// `wanted`) nor another checkout recorded in an image's folder wants. Touches nothing outside
/// `cache`.
pub fn prune(
    cache: &Path,
    wanted: &Wanted,
    here: &Path,
    opts: PruneOptions,
) -> Result<Outcome, PruneError> {
    let mut out = Outcome::default();
    let mut others = OtherCheckouts::new(here);
    // Image name -> why it stays (None: it goes), shared by its folder, lock and log.
    let mut verdicts: HashMap<String, Option<String>> = HashMap::new();
    if !cache.exists() {
        return Ok(out);
    }
    let root = cache.canonicalize().map_err(io(cache))?;
    let images = cache.join("images");
    if images.exists() {
        let real = images.canonicalize().map_err(io(&images))?;
        if !real.starts_with(&root) || real == root {
            return Err(PruneError::Escapes {
                path: images.display().to_string(),
                target: real.display().to_string(),
            });
        }
    }
    let mut candidates: Vec<(PathBuf, Kind)> = Vec::new();
    for (dir, classify) in [
        (&images, kind_in_images as fn(&str) -> Option<Kind>),
        (&cache.to_path_buf(), kind_at_top),
    ] {
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in rd {
            let e = e.map_err(io(dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(k) = classify(&name) {
                candidates.push((e.path(), k));
            }
        }
    }
    candidates.sort_by(|a, b| a.0.cmp(&b.0));

    for (path, kind) in candidates {
        let span = tracing::debug_span!("prune", path = %path.display());
        let _g = span.enter();
        let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
        if meta.file_type().is_symlink() {
            let inside = path
                .canonicalize()
                .ok()
                .filter(|t| t.starts_with(&root) && *t != root);
            if inside.is_none() {
                let target = std::fs::read_link(&path)
                    .map(|t| t.display().to_string())
                    .unwrap_or_else(|_| "?".into());
                out.entries.push(Entry {
                    path,
                    action: Action::Refused,
                    bytes: 0,
                    note: format!("symlink to {target}, outside the cache: left alone"),
                });
                continue;
            }
        }
        let (keep, note) = match &kind {
            Kind::Image(_) | Kind::Lock(_) | Kind::Log(_) if opts.all => (false, String::new()),
            Kind::Image(n) | Kind::Lock(n) | Kind::Log(n) => {
                let why = verdicts.entry(n.clone()).or_insert_with(|| {
                    if let Some(why) = wanted.get(n) {
                        return Some(why.join(", "));
                    }
                    let dir = images.join(n);
                    dir.is_dir().then(|| others.keep(&dir, n)).flatten()
                });
                match why {
                    Some(why) => (true, why.clone()),
                    None => (false, String::new()),
                }
            }
            Kind::Build(_) => (false, "left over from a build that ended".into()),
        };
        // Only the link itself goes when an entry is a symlink: its size is not ours to count.
        let bytes = if meta.file_type().is_symlink() {
            0
        } else {
            disk_usage(&path)
        };
        if keep {
            out.entries.push(Entry {
                path,
                action: Action::Kept,
                bytes,
                note,
            });
            continue;
        }
        let busy = match &kind {
            Kind::Build(pid) => process_alive(*pid),
            Kind::Lock(_) => !opts.dry_run && lock_is_held(&path),
            _ => false,
        };
        if busy {
            out.entries.push(Entry {
                path,
                action: Action::InUse,
                bytes,
                note: "a build is using it".into(),
            });
            continue;
        }
        let action = if opts.dry_run {
            Action::WouldRemove
        } else {
            remove(&path, meta.is_dir() && !meta.file_type().is_symlink())?;
            tracing::info!(bytes, "removed");
            Action::Removed
        };
        out.entries.push(Entry {
            path,
            action,
            bytes,
            note,
        });
    }
    Ok(out)
}

fn remove(path: &Path, is_dir: bool) -> Result<(), PruneError> {
    // remove_dir_all does not follow symlinks inside the tree, so an image folder with a link
    // in it cannot take anything outside along.
    let r = if is_dir {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    r.map_err(io(path))
}

/// Allocated bytes of a file or tree, links not followed.
fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = m.blocks() * 512;
    if m.is_dir() {
        if let Ok(rd) = std::fs::read_dir(path) {
            total += rd.flatten().map(|e| disk_usage(&e.path())).sum::<u64>();
        }
    }
    total
}

fn process_alive(pid: i32) -> bool {
    use nix::errno::Errno;
    if pid <= 0 {
        return false;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(Errno::ESRCH) => false,
        // EPERM: it exists, it is just not ours.
        Err(_) => true,
    }
}

/// A build holds its lock for as long as it runs: a lock we cannot take is in use.
fn lock_is_held(path: &Path) -> bool {
    let Ok(f) = std::fs::File::open(path) else {
        return false;
    };
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).is_err()
}

/// `1.2 GiB`, `340.0 MiB`, `12 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

#[cfg(test)]
mod tests;
