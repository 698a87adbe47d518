//! Guest images: recipes under `images/`, built by `images/lib/build-image`, cached by a hash of
//! everything that goes into them, and copied per run so the cached image is never written.

pub mod node_disks;
pub mod prune;
pub mod scratch;

pub use crate::scenario::additions::Additions;
pub use crate::scenario::recipe::{list_recipes, load_recipe, ParamSpec, Recipe};

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ImageError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Recipe(#[from] crate::scenario::recipe::RecipeError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("building image `{recipe}` failed ({status}); build log: {log}\n{tail}")]
    #[diagnostic(help(
        "the log holds the whole build; mmdebstrap needs the Debian mirror to be reachable"
    ))]
    BuildFailed {
        recipe: String,
        status: String,
        log: String,
        tail: String,
    },
    #[error("image `{recipe}` is not in the cache {cache}, and this user cannot build it")]
    #[diagnostic(help("{}", crate::support::rootless::IMAGE_BUILD_NEEDS_ROOT))]
    NeedsRoot { recipe: String, cache: String },
    #[error("cannot copy {from} to {to}: {message}")]
    Copy {
        from: String,
        to: String,
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The version of [`cache_key`]'s recipe: a checkout whose harness keys images another way
/// (recorded in [`USERS_FILE`]) cannot be judged by this one's keys.
pub const KEY_SCHEME: &str = "v1";

/// In an image's folder: one line per checkout that built or used the image,
/// `<KEY_SCHEME>\t<checkout folder>`, so `image prune` run from one checkout can ask the others.
pub const USERS_FILE: &str = "used-by";

/// The first line of a [`USERS_FILE`] begun on a reuse rather than by the build: the image is
/// older than the records, and the checkouts that used it before are unknown.
pub const EARLIER_USES_UNKNOWN: &str = "earlier-uses-unknown";

/// Hash of every input of a build: the shared `images/lib` tree, the recipe's folder and the
/// resolved parameters. Same inputs, same key; any change, a new image.
pub fn cache_key(
    recipe: &Recipe,
    images_dir: &Path,
    params: &BTreeMap<String, String>,
) -> Result<String, ImageError> {
    cache_key_with(recipe, images_dir, params, &Additions::default())
}

/// [`cache_key`] with a scenario's additions to the recipe, each hashed by content (relative
/// paths, bytes, modes, link targets), never by where it lies; none given, the same key as
/// [`cache_key`].
pub fn cache_key_with(
    recipe: &Recipe,
    images_dir: &Path,
    params: &BTreeMap<String, String>,
    add: &Additions,
) -> Result<String, ImageError> {
    let mut h = Sha256::new();
    h.update(format!("netboot-harness image {KEY_SCHEME}\0").as_bytes());
    for (label, root) in [
        ("lib", images_dir.join("lib")),
        ("recipe", recipe.dir.clone()),
    ] {
        let mut files = Vec::new();
        walk(&root, &root, &mut files)?;
        files.sort();
        for rel in files {
            let p = root.join(&rel);
            let bytes = std::fs::read(&p).map_err(io(&p))?;
            h.update(label.as_bytes());
            h.update(b"\0");
            h.update(rel.to_string_lossy().as_bytes());
            h.update(b"\0");
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(&bytes);
        }
    }
    for (k, v) in params {
        h.update(b"param\0");
        h.update(k.as_bytes());
        h.update(b"=");
        h.update(v.as_bytes());
        h.update(b"\0");
    }
    if let Some(dir) = &add.overlay {
        hash_tree(&mut h, "overlay", dir, &[])?;
    }
    if let Some(file) = &add.customize {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(file).map_err(io(file))?;
        let bytes = std::fs::read(file).map_err(io(file))?;
        h.update(b"customize\0");
        h.update((meta.permissions().mode() & 0o7777).to_le_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    if let Some(dir) = &add.dracut_source {
        // A git checkout's history is not what gets built.
        hash_tree(&mut h, "dracut_source", dir, &[".git"])?;
    }
    Ok(hex::encode(h.finalize()))
}

/// Every entry of a tree into the hash: kind, relative path, mode, and a file's bytes or a
/// link's target.
fn hash_tree(h: &mut Sha256, label: &str, dir: &Path, skip: &[&str]) -> Result<(), ImageError> {
    use crate::scenario::additions::{tree, Entry};
    use std::os::unix::ffi::OsStrExt;
    let entries = tree(dir, skip).map_err(|message| ImageError::Io {
        path: dir.display().to_string(),
        source: std::io::Error::other(message),
    })?;
    h.update(label.as_bytes());
    h.update(b"\0");
    for e in entries {
        let rel = e.rel().as_os_str().as_bytes();
        match &e {
            Entry::Dir { mode, .. } => {
                h.update(b"d\0");
                h.update(rel);
                h.update(b"\0");
                h.update(mode.to_le_bytes());
            }
            Entry::File { mode, .. } => {
                let p = dir.join(e.rel());
                let bytes = std::fs::read(&p).map_err(io(&p))?;
                h.update(b"f\0");
                h.update(rel);
                h.update(b"\0");
                h.update(mode.to_le_bytes());
                h.update((bytes.len() as u64).to_le_bytes());
                h.update(&bytes);
            }
            Entry::Symlink { target, .. } => {
                h.update(b"l\0");
                h.update(rel);
                h.update(b"\0");
                h.update(target.as_os_str().as_bytes());
                h.update(b"\0");
            }
        }
    }
    h.update(b"end\0");
    Ok(())
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ImageError> {
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        let p = e.path();
        let ft = e.file_type().map_err(io(&p))?;
        if ft.is_dir() {
            walk(root, &p, out)?;
        } else if ft.is_file() {
            out.push(p.strip_prefix(root).unwrap_or(&p).to_path_buf());
        }
    }
    Ok(())
}

/// The folder under `<cache>/images` that holds the image built with this key. `image prune`
/// names what it keeps the same way, so the two cannot disagree.
pub fn image_dir_name(recipe: &str, key: &str) -> String {
    format!("{recipe}-{}", &key[..key.len().min(16)])
}

/// The build log `image build` and `image prepare` keep per image, at the top of the cache
/// (`build-<recipe>-<key16>.log`); `image prune` removes it with its image.
pub fn build_log(cache: &Path, recipe: &str, key: &str) -> PathBuf {
    cache.join(format!("build-{}.log", image_dir_name(recipe, key)))
}

/// Builds or reuses a recipe's image with these parameter settings, its build log kept per
/// image ([`build_log`]).
pub fn ensure_recipe(
    images_dir: &Path,
    name: &str,
    set: &BTreeMap<String, String>,
    add: &Additions,
    cache: &Path,
) -> Result<BuiltImage, ImageError> {
    let recipe = load_recipe(images_dir, name)?;
    let params = recipe.resolve(set)?;
    let key = cache_key_with(&recipe, images_dir, &params, add)?;
    std::fs::create_dir_all(cache).map_err(io(cache))?;
    ensure_built(
        images_dir,
        &recipe,
        &params,
        add,
        cache,
        &build_log(cache, name, &key),
    )
}

/// The checkouts recorded in an image folder's [`USERS_FILE`]: (key scheme, folder), each once;
/// an [`EARLIER_USES_UNKNOWN`] line comes back as that scheme with an empty folder.
pub fn image_users(image_dir: &Path) -> Option<Vec<(String, PathBuf)>> {
    let text = std::fs::read_to_string(image_dir.join(USERS_FILE)).ok()?;
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for line in text.lines() {
        if line == EARLIER_USES_UNKNOWN {
            out.push((EARLIER_USES_UNKNOWN.to_string(), PathBuf::new()));
            continue;
        }
        if let Some((scheme, root)) = line.split_once('\t') {
            let user = (scheme.to_string(), PathBuf::from(root));
            if !root.is_empty() && !out.contains(&user) {
                out.push(user);
            }
        }
    }
    Some(out)
}

/// Notes in the image's folder that the checkout owning `images_dir` uses it; `built`: the
/// record starts with the build, so it names every user. Best effort: a cache this user cannot
/// write (a root-built cache read by a rootless run) records nothing.
fn record_user(image_dir: &Path, images_dir: &Path, built: bool) {
    use std::io::Write;
    let Some(root) = images_dir
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    else {
        return;
    };
    let Some(root) = root.to_str().filter(|r| !r.contains(['\n', '\t'])) else {
        return;
    };
    let known = image_users(image_dir);
    if known
        .iter()
        .flatten()
        .any(|(s, r)| s == KEY_SCHEME && r == Path::new(root))
    {
        return;
    }
    // An image older than the records: other checkouts may have used it, unrecorded.
    let first = if known.is_none() && !built {
        format!("{EARLIER_USES_UNKNOWN}\n")
    } else {
        String::new()
    };
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(image_dir.join(USERS_FILE))
        .and_then(|mut f| f.write_all(format!("{first}{KEY_SCHEME}\t{root}\n").as_bytes()));
    if let Err(e) = appended {
        tracing::debug!(dir = %image_dir.display(), "cannot record the image's user: {e}");
    }
}

/// `$NETBOOT_HARNESS_CACHE`, else `$XDG_CACHE_HOME/netboot-harness`, else `~/.cache/netboot-harness`.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("NETBOOT_HARNESS_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("netboot-harness");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache").join("netboot-harness")
}

#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub path: PathBuf,
    pub key: String,
    pub reused: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    recipe: String,
    params: BTreeMap<String, String>,
    key: String,
    built_at: String,
    build_seconds: f64,
    /// Where the additions were read from when it was built (the key holds their content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    overlay: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    customize: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dracut_source: Option<PathBuf>,
}

/// Returns the cached image for these inputs, building it first if needed. Concurrent callers
/// wait for one build instead of racing.
pub fn ensure_built(
    images_dir: &Path,
    recipe: &Recipe,
    params: &BTreeMap<String, String>,
    add: &Additions,
    cache: &Path,
    log: &Path,
) -> Result<BuiltImage, ImageError> {
    let key = cache_key_with(recipe, images_dir, params, add)?;
    let dir = cache
        .join("images")
        .join(image_dir_name(&recipe.name, &key));
    let disk = dir.join("disk.img");
    if disk.is_file() {
        record_user(&dir, images_dir, false);
        return Ok(BuiltImage {
            path: disk,
            key,
            reused: true,
        });
    }
    // Said before the build starts rather than as mmdebstrap's failure minutes into it.
    if !crate::support::rootless::is_root() {
        return Err(ImageError::NeedsRoot {
            recipe: recipe.name.clone(),
            cache: cache.display().to_string(),
        });
    }
    std::fs::create_dir_all(cache.join("images")).map_err(io(cache))?;
    let lock_path = cache
        .join("images")
        .join(format!(".{}.lock", image_dir_name(&recipe.name, &key)));
    let lock = std::fs::File::create(&lock_path).map_err(io(&lock_path))?;
    let _guard =
        nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| {
            ImageError::Io {
                path: lock_path.display().to_string(),
                source: std::io::Error::from(e),
            }
        })?;
    // Someone else may have finished the build while we waited for the lock.
    if disk.is_file() {
        record_user(&dir, images_dir, false);
        return Ok(BuiltImage {
            path: disk,
            key,
            reused: true,
        });
    }
    let tmp = cache
        .join("images")
        .join(format!(".build-{}-{}", &key[..16], std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let result = build_into(images_dir, recipe, params, add, &tmp, log);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let (secs, _) = result.unwrap_or_default();
    let meta = Meta {
        recipe: recipe.name.clone(),
        params: params.clone(),
        key: key.clone(),
        built_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        build_seconds: secs,
        overlay: add.overlay.clone(),
        customize: add.customize.clone(),
        dracut_source: add.dracut_source.clone(),
    };
    let meta_path = tmp.join("meta.json");
    std::fs::write(
        &meta_path,
        serde_json::to_vec_pretty(&meta).unwrap_or_default(),
    )
    .map_err(io(&meta_path))?;
    set_read_only(&tmp.join("disk.img"))?;
    record_user(&tmp, images_dir, true);
    std::fs::rename(&tmp, &dir).map_err(io(&dir))?;
    Ok(BuiltImage {
        path: disk,
        key,
        reused: false,
    })
}

fn build_into(
    images_dir: &Path,
    recipe: &Recipe,
    params: &BTreeMap<String, String>,
    add: &Additions,
    tmp: &Path,
    log: &Path,
) -> Result<(f64, ()), ImageError> {
    crate::support::tools::check(crate::support::tools::IMAGE_TOOLS, Vec::new()).map_err(|e| {
        ImageError::BuildFailed {
            recipe: recipe.name.clone(),
            status: "missing tools".into(),
            log: log.display().to_string(),
            tail: format!("{e}: {}", e.help),
        }
    })?;
    let log_file = std::fs::File::create(log).map_err(io(log))?;
    // One pipe for both streams keeps the log in the order the script wrote it, and lets the
    // harness see the script's stage lines as they come. Both ends close on exec: the child
    // gets the write end only as its stdout and stderr. An inherited extra descriptor moves
    // every descriptor mmdebstrap opens up by one, and apt's status pipe past 9 breaks its
    // `cat >&11` under dash ("Bad fd number", the build fails at once as an apt download).
    let (pipe_r, pipe_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io(log)(e.into()))?;
    let pipe_w2 = pipe_w.try_clone().map_err(io(log))?;
    let script = images_dir.join("lib/build-image");
    let mut cmd = Command::new("bash");
    cmd.arg(&script)
        .arg(&recipe.dir)
        .arg(tmp.join("disk.img"))
        .stdin(Stdio::null())
        .stdout(Stdio::from(pipe_w))
        .stderr(Stdio::from(pipe_w2));
    for (k, v) in params {
        cmd.env(format!("NBH_PARAM_{}", k.to_ascii_uppercase()), v);
    }
    // The additions, applied by build-image before its initramfs step.
    for (var, path) in [
        ("NBH_OVERLAY", &add.overlay),
        ("NBH_CUSTOMIZE", &add.customize),
        ("NBH_DRACUT_SOURCE", &add.dracut_source),
    ] {
        match path {
            Some(p) => cmd.env(var, p),
            None => cmd.env_remove(var),
        };
    }
    // Its own process group, so the script can stop everything it started (mmdebstrap, chroot
    // commands) as one; and SIGTERM when the harness dies, so a killed or interrupted harness
    // never leaves a build running or its tree and mounts behind.
    cmd.env("NBH_HARNESS_PID", std::process::id().to_string());
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    crate::support::process::signal_on_parent_death(&mut cmd, libc::SIGTERM);
    eprintln!("image {}: building (log: {})", recipe.name, log.display());
    let board = crate::support::progress::Board::start();
    if let Some(b) = &board {
        b.line("build", &format!("image {}", recipe.name), "starting");
    }
    let t = Instant::now();
    // Dropped before the build ends (the harness is interrupted), the whole group gets SIGTERM
    // and the script cleans up its tree and mounts.
    let (child, _) = crate::support::process::Owned::spawn_std(
        format!("image build {}", recipe.name),
        &mut cmd,
        nix::sys::signal::Signal::SIGTERM,
    )
    .map_err(io(&script))?;
    // Our copies of the write end must go, or the reader never sees the end of the output.
    drop(cmd);
    let (stage_tx, stage_rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || copy_build_output(pipe_r, log_file, stage_tx));
    let ended = loop {
        while let Ok(stage) = stage_rx.try_recv() {
            tracing::info!(recipe = %recipe.name, %stage, "image build stage");
            if let Some(b) = &board {
                b.set("build", &stage);
            }
        }
        match child.has_ended() {
            Some(e) => break e,
            None => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    };
    drop(board);
    // A daemon the build left behind could hold the pipe open: do not wait on it for long.
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let secs = t.elapsed().as_secs_f64();
    if !ended.success() || !tmp.join("disk.img").is_file() {
        return Err(ImageError::BuildFailed {
            recipe: recipe.name.clone(),
            status: ended.how,
            log: log.display().to_string(),
            tail: tail(log, 20),
        });
    }
    eprintln!("image {}: built in {secs:.0}s", recipe.name);
    Ok((secs, ()))
}

/// Copies the build's output to its log, line by line, and reports stage lines.
fn copy_build_output(
    from: std::os::fd::OwnedFd,
    mut log: std::fs::File,
    stages: std::sync::mpsc::Sender<String>,
) {
    use std::io::{BufRead, Write};
    let mut r = std::io::BufReader::new(std::fs::File::from(from));
    let mut line = Vec::new();
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let _ = log.write_all(&line);
        let text = String::from_utf8_lossy(&line);
        if let Some(stage) = build_stage(text.trim_end()) {
            let _ = stages.send(stage.to_string());
        }
    }
}

fn set_read_only(p: &Path) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o444)).map_err(io(p))
}

fn tail(p: &Path, n: usize) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(p) {
        let _ = f.read_to_string(&mut s);
    }
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A per-run working copy: sparse (holes stay holes) and a reflink where the filesystem can,
/// so a run never rewrites the base image's unchanged blocks.
/// A qcow2 image (a disk a user brings) is converted to raw instead: tgtd exports raw files.
pub fn per_run_copy(base: &Path, dest: &Path) -> Result<(), ImageError> {
    let mut cmd = if is_qcow2(base) {
        let mut c = Command::new("qemu-img");
        c.args(["convert", "-q", "-f", "qcow2", "-O", "raw"]);
        c
    } else {
        let mut c = Command::new("cp");
        c.args(["--sparse=always", "--reflink=auto"]);
        c
    };
    let out = cmd
        .arg(base)
        .arg(dest)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ImageError::Copy {
            from: base.display().to_string(),
            to: dest.display().to_string(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(ImageError::Copy {
            from: base.display().to_string(),
            to: dest.display().to_string(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    // The copy inherits the base's read-only mode; the run's copy must be writable by tgtd.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o644)).map_err(io(dest))?;
    Ok(())
}

/// qcow2 files start with "QFI\xfb".
fn is_qcow2(p: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"QFI\xfb"
}

/// What `build-image` says when it enters a stage: `build-image: stage: <what>`.
pub fn build_stage(line: &str) -> Option<&str> {
    line.strip_prefix("build-image: stage: ").map(str::trim)
}

#[cfg(test)]
mod tests;
