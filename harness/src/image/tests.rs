use super::*;

#[test]
fn stage_lines_are_recognised() {
    assert_eq!(
        build_stage("build-image: stage: debootstrap (bookworm: 12 packages)"),
        Some("debootstrap (bookworm: 12 packages)")
    );
    assert_eq!(build_stage("build-image: kernel 6.1.0"), None);
}

/// Removed when dropped, also when a test panics.
fn tree(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::Builder::new()
        .prefix(&format!("nbh-image-{name}-"))
        .tempdir()
        .unwrap();
    let d = tmp.path();
    std::fs::create_dir_all(d.join("lib/flavours")).unwrap();
    std::fs::create_dir_all(d.join("alpha")).unwrap();
    std::fs::write(d.join("lib/build-image"), "#!/bin/sh\n").unwrap();
    std::fs::write(d.join("lib/flavours/plain.sh"), "# plain\n").unwrap();
    std::fs::write(
        d.join("alpha/recipe.yaml"),
        "description: test\nflavour: plain\nparams:\n  device: { default: eth0, help: nic }\n",
    )
    .unwrap();
    tmp
}

#[test]
fn loads_and_resolves_params() {
    let t = tree("load");
    let r = load_recipe(t.path(), "alpha").unwrap();
    assert_eq!(r.flavour, "plain");
    let p = r.resolve(&BTreeMap::new()).unwrap();
    assert_eq!(p["device"], "eth0");
    let p = r
        .resolve(&BTreeMap::from([("device".into(), "eth1".into())]))
        .unwrap();
    assert_eq!(p["device"], "eth1");
}

#[test]
fn unknown_recipe_lists_valid_ones() {
    let t = tree("unknown");
    let e = load_recipe(t.path(), "beta").unwrap_err().to_string();
    assert!(
        e.contains("unknown image recipe `beta`") && e.contains("`alpha`"),
        "{e}"
    );
    let e = load_recipe(t.path(), "../alpha").unwrap_err().to_string();
    assert!(e.contains("unknown image recipe"), "{e}");
}

#[test]
fn unknown_param_lists_valid_ones() {
    let t = tree("param");
    let r = load_recipe(t.path(), "alpha").unwrap();
    let e = r
        .resolve(&BTreeMap::from([("devcie".into(), "eth1".into())]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no parameter `devcie`") && e.contains("`device`"),
        "{e}"
    );
}

#[test]
fn a_value_outside_the_allowed_ones_is_refused() {
    let t = tree("values");
    std::fs::write(
        t.path().join("alpha/recipe.yaml"),
        "description: test\nflavour: plain\nparams:\n  suite: { default: bookworm, values: [bookworm, trixie], help: s }\n",
    )
    .unwrap();
    let r = load_recipe(t.path(), "alpha").unwrap();
    let p = r
        .resolve(&BTreeMap::from([("suite".into(), "trixie".into())]))
        .unwrap();
    assert_eq!(p["suite"], "trixie");
    let e = r
        .resolve(&BTreeMap::from([("suite".into(), "sid".into())]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`suite` cannot be `sid`") && e.contains("`bookworm`, `trixie`"),
        "{e}"
    );
    // The suite is a parameter like the others: it changes the key.
    let k1 = cache_key(&r, t.path(), &r.resolve(&BTreeMap::new()).unwrap()).unwrap();
    assert_ne!(k1, cache_key(&r, t.path(), &p).unwrap());
}

#[test]
fn recipes_that_contradict_themselves_are_refused() {
    let t = tree("contradict");
    std::fs::write(
        t.path().join("alpha/recipe.yaml"),
        "description: test\nflavour: plain\nparams:\n  suite: { default: sid, values: [bookworm], help: s }\n",
    )
    .unwrap();
    let e = load_recipe(t.path(), "alpha").unwrap_err().to_string();
    assert!(e.contains("default `sid` is not one of its values"), "{e}");
    std::fs::write(
        t.path().join("alpha/recipe.yaml"),
        "description: test\nflavour: plain\nsuite: trixie\nparams:\n  suite: { default: bookworm, help: s }\n",
    )
    .unwrap();
    let e = load_recipe(t.path(), "alpha").unwrap_err().to_string();
    assert!(e.contains("give the suite once"), "{e}");
}

#[test]
fn uses_are_recorded_once_per_checkout() {
    let t = tree("users");
    let img = t.path().join("cache/alpha-0000000000000000");
    std::fs::create_dir_all(&img).unwrap();
    assert!(image_users(&img).is_none());
    record_user(&img, t.path(), true);
    record_user(&img, t.path(), false);
    let root = t.path().canonicalize().unwrap();
    let me = (KEY_SCHEME.to_string(), root.parent().unwrap().to_path_buf());
    assert_eq!(image_users(&img).unwrap(), vec![me.clone()]);
    // A record begun on a reuse says that earlier users are unknown.
    let old = t.path().join("cache/alpha-0000000000000001");
    std::fs::create_dir_all(&old).unwrap();
    record_user(&old, t.path(), false);
    assert_eq!(
        image_users(&old).unwrap(),
        vec![(EARLIER_USES_UNKNOWN.to_string(), PathBuf::new()), me]
    );
}

#[test]
fn cache_key_is_stable_and_sensitive() {
    let t = tree("key");
    let r = load_recipe(t.path(), "alpha").unwrap();
    let p = r.resolve(&BTreeMap::new()).unwrap();
    let k1 = cache_key(&r, t.path(), &p).unwrap();
    assert_eq!(k1, cache_key(&r, t.path(), &p).unwrap());
    let p2 = r
        .resolve(&BTreeMap::from([("device".into(), "eth1".into())]))
        .unwrap();
    let k2 = cache_key(&r, t.path(), &p2).unwrap();
    assert_ne!(k1, k2, "a parameter must change the key");
    std::fs::write(t.path().join("lib/flavours/plain.sh"), "# changed\n").unwrap();
    let k3 = cache_key(&r, t.path(), &p).unwrap();
    assert_ne!(k1, k3, "a shared file must change the key");
}

/// An overlay, a customize script and a dracut tree count by content: one byte, one mode or one
/// link target changes the key; moving them elsewhere does not; none given, the plain key.
#[test]
fn additions_are_keyed_by_content_not_path() {
    use std::os::unix::fs::PermissionsExt;
    let t = tree("additions");
    let r = load_recipe(t.path(), "alpha").unwrap();
    let p = r.resolve(&BTreeMap::new()).unwrap();
    let plain = cache_key(&r, t.path(), &p).unwrap();
    assert_eq!(
        plain,
        cache_key_with(&r, t.path(), &p, &Additions::default()).unwrap()
    );
    let here = t.path().join("scenario");
    let hook = here.join("overlay/etc/initramfs-tools/scripts/init-top/hook");
    std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
    std::fs::write(&hook, "#!/bin/sh\necho hello\n").unwrap();
    std::os::unix::fs::symlink("hook", hook.with_file_name("link")).unwrap();
    std::fs::write(here.join("customize.sh"), "echo hi\n").unwrap();
    let add = |dir: &Path| Additions {
        overlay: Some(dir.join("overlay")),
        customize: Some(dir.join("customize.sh")),
        dracut_source: None,
    };
    let key = |dir: &Path| cache_key_with(&r, t.path(), &p, &add(dir)).unwrap();
    let k1 = key(&here);
    assert_ne!(plain, k1, "an overlay must change the key");
    // The same content in another folder: the same image.
    let moved = t.path().join("elsewhere/deeper");
    std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
    std::fs::rename(&here, &moved).unwrap();
    assert_eq!(
        k1,
        key(&moved),
        "moving the scenario's folder must not change the key"
    );
    let hook = moved.join("overlay/etc/initramfs-tools/scripts/init-top/hook");
    std::fs::write(&hook, "#!/bin/sh\necho hullo\n").unwrap();
    let k2 = key(&moved);
    assert_ne!(k1, k2, "one edited file of the overlay must change the key");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o700)).unwrap();
    let k3 = key(&moved);
    assert_ne!(k2, k3, "a file's mode must change the key");
    std::fs::remove_file(hook.with_file_name("link")).unwrap();
    std::os::unix::fs::symlink("other", hook.with_file_name("link")).unwrap();
    let k4 = key(&moved);
    assert_ne!(k3, k4, "a link's target must change the key");
    std::fs::write(moved.join("customize.sh"), "echo ho\n").unwrap();
    assert_ne!(
        k4,
        key(&moved),
        "the customize script's bytes must change the key"
    );
    // A dracut tree's git history is not part of the image.
    let src = t.path().join("dracut");
    std::fs::create_dir_all(src.join(".git")).unwrap();
    std::fs::write(src.join("dracut.sh"), "# dracut\n").unwrap();
    let with_src = Additions {
        dracut_source: Some(src.clone()),
        ..Additions::default()
    };
    let d1 = cache_key_with(&r, t.path(), &p, &with_src).unwrap();
    assert_ne!(plain, d1);
    std::fs::write(src.join(".git/HEAD"), "ref\n").unwrap();
    assert_eq!(d1, cache_key_with(&r, t.path(), &p, &with_src).unwrap());
}

#[test]
fn shipped_recipes_load() {
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images");
    let all = list_recipes(&images).unwrap();
    assert!(all.iter().any(|r| r.name == "debian-initramfs-tools"));
    for r in all {
        assert!(!r.description.is_empty(), "{}", r.name);
    }
}

#[test]
fn qcow2_is_converted_to_raw() {
    let blocker = crate::support::tools::find("qemu-img")
        .is_none()
        .then(|| "qemu-img is missing (Debian package qemu-utils, ci/setup installs it)".into());
    if !crate::test_boots::require("image::tests::qcow2_is_converted_to_raw", blocker) {
        return;
    }
    let t = tree("qcow2");
    let raw = t.path().join("src.raw");
    std::fs::write(&raw, vec![0x5au8; 65536]).unwrap();
    let q = t.path().join("src.qcow2");
    let st = Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&q)
        .status()
        .unwrap();
    assert!(st.success());
    assert!(is_qcow2(&q) && !is_qcow2(&raw));
    let before = std::fs::read(&q).unwrap();
    let dest = t.path().join("run.img");
    per_run_copy(&q, &dest).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), vec![0x5au8; 65536]);
    assert_eq!(
        std::fs::read(&q).unwrap(),
        before,
        "the user's image was changed"
    );
}

#[test]
fn build_output_goes_to_the_log_and_stages_are_reported() {
    use std::io::Write;
    let t = tree("output");
    let log = t.path().join("build.log");
    let (r, w) = nix::unistd::pipe().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let log_file = std::fs::File::create(&log).unwrap();
    let reader = std::thread::spawn(move || copy_build_output(r, log_file, tx));
    let mut w = std::fs::File::from(w);
    w.write_all(b"build-image: stage: configure\nnoise\nbuild-image: stage: disk\nno newline")
        .unwrap();
    drop(w);
    reader.join().unwrap();
    let stages: Vec<String> = rx.iter().collect();
    assert_eq!(stages, vec!["configure", "disk"]);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.starts_with("build-image: stage: configure\nnoise\n"),
        "{text}"
    );
    assert!(text.ends_with("no newline"), "{text}");
}

#[test]
fn per_run_copy_is_writable_and_leaves_base_alone() {
    let t = tree("copy");
    let base = t.path().join("base.img");
    std::fs::write(&base, b"disk").unwrap();
    set_read_only(&base).unwrap();
    let dest = t.path().join("run.img");
    per_run_copy(&base, &dest).unwrap();
    std::fs::write(&dest, b"written").unwrap();
    assert_eq!(std::fs::read(&base).unwrap(), b"disk");
}

#[test]
fn the_build_script_holds_its_output_pipe_only_as_stdout_and_stderr() {
    // Leaked ends of the pipe moved mmdebstrap's status pipe past fd 9, which dash cannot
    // redirect: the build failed at its first apt download.
    let t = tree("fds");
    std::fs::write(
        t.path().join("lib/build-image"),
        "for f in /proc/$$/fd/*; do echo \"fd ${f##*/} $(readlink \"$f\")\"; done\nexit 3\n",
    )
    .unwrap();
    let recipe = load_recipe(t.path(), "alpha").unwrap();
    let out = t.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let log = t.path().join("build.log");
    match build_into(
        t.path(),
        &recipe,
        &BTreeMap::new(),
        &Default::default(),
        &out,
        &log,
    ) {
        Err(ImageError::BuildFailed { status, .. }) if status == "missing tools" => {
            eprintln!("ignored: the image tools are not installed (ci/setup installs them)");
            return;
        }
        Err(ImageError::BuildFailed { .. }) => {}
        other => panic!("the script exits 3: {other:?}"),
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let target = |fd: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("fd {fd} ")))
            .map(str::to_string)
    };
    let pipe = target("1").unwrap_or_else(|| panic!("no fd 1 in {text}"));
    assert_eq!(target("2").as_deref(), Some(pipe.as_str()), "{text}");
    let others: Vec<&str> = text
        .lines()
        .filter(|l| l.ends_with(&format!(" {pipe}")))
        .filter(|l| !l.starts_with("fd 1 ") && !l.starts_with("fd 2 "))
        .collect();
    assert!(others.is_empty(), "the build inherits {others:?}:\n{text}");
}
