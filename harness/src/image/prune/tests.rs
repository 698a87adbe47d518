use super::*;

/// Removed when dropped, also when a test panics.
fn temp(name: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix(&format!("nbh-prune-{name}-"))
        .tempdir()
        .unwrap();
    std::fs::create_dir_all(d.path().join("cache/images")).unwrap();
    d
}

/// A checkout folder: `images/` (one recipe, `alpha`) and `scenarios/`.
fn checkout(root: &Path) -> PathBuf {
    std::fs::create_dir_all(root.join("images/lib/flavours")).unwrap();
    std::fs::create_dir_all(root.join("images/alpha")).unwrap();
    std::fs::create_dir_all(root.join("scenarios")).unwrap();
    std::fs::write(root.join("images/lib/flavours/plain.sh"), "# plain\n").unwrap();
    std::fs::write(
        root.join("images/alpha/recipe.yaml"),
        "description: test\nflavour: plain\nparams:\n  device: { default: eth0, help: nic }\n",
    )
    .unwrap();
    root.canonicalize().unwrap()
}

fn used_by(image_dir: &Path, root: &Path) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(image_dir.join(image::USERS_FILE))
        .unwrap();
    writeln!(f, "{}\t{}", image::KEY_SCHEME, root.display()).unwrap();
}

/// The image folder name `root`'s recipe `alpha` gives with these settings.
fn alpha_image(root: &Path, set: &[(&str, &str)]) -> String {
    let images = root.join("images");
    let r = image::load_recipe(&images, "alpha").unwrap();
    let set = set
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let key = image::cache_key(&r, &images, &r.resolve(&set).unwrap()).unwrap();
    image::image_dir_name("alpha", &key)
}

#[test]
fn images_other_checkouts_want_or_may_want_are_kept() {
    let t = temp("others");
    let cache = t.path().join("cache");
    let here = checkout(&t.path().join("here"));
    let other = checkout(&t.path().join("other"));
    std::fs::write(
        other.join("scenarios/eth1.yaml"),
        "name: on-eth1\nimage: { recipe: alpha, set: { device: eth1 } }\nnodes: []\n",
    )
    .unwrap();
    let image = |name: &str, users: &[&Path]| {
        let d = cache.join("images").join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("disk.img"), b"disk").unwrap();
        for u in users {
            used_by(&d, u);
        }
        d
    };
    // The other checkout's scenario and its recipe's defaults: kept, with the reason.
    let scenario_image = image(&alpha_image(&other, &[("device", "eth1")]), &[&other]);
    let default_image = image(&alpha_image(&other, &[]), &[&here, &other]);
    // Used by the other checkout once, wanted by it no more.
    let stale = image("alpha-00000000000000ee", &[&here, &other]);
    // Used by a checkout that is gone.
    let gone = image("alpha-00000000000000ef", &[&t.path().join("deleted")]);
    // No record at all: nobody can tell.
    let unknown = image("alpha-00000000000000f0", &[]);
    // A record begun on a reuse: the uses before it are unknown.
    let older = image("alpha-00000000000000f2", &[]);
    std::fs::write(
        older.join(image::USERS_FILE),
        format!(
            "{}\n{}\t{}\n",
            image::EARLIER_USES_UNKNOWN,
            image::KEY_SCHEME,
            here.display()
        ),
    )
    .unwrap();
    // A checkout whose scenarios cannot be read.
    let broken = checkout(&t.path().join("broken"));
    std::fs::write(broken.join("scenarios/bad.yaml"), "image: [\n").unwrap();
    let from_broken = image("alpha-00000000000000f1", &[&broken]);

    let out = prune(&cache, &Wanted::new(), &here, PruneOptions::default()).unwrap();
    let note = |p: &Path| {
        out.entries
            .iter()
            .find(|e| e.path == p)
            .map(|e| (e.action, e.note.clone()))
            .unwrap()
    };
    let (action, why) = note(&scenario_image);
    assert_eq!(action, Action::Kept);
    assert!(
        why.contains("scenario on-eth1") && why.contains(&other.display().to_string()),
        "{why}"
    );
    let (action, why) = note(&default_image);
    assert_eq!(action, Action::Kept);
    assert!(why.contains("default parameters of alpha"), "{why}");
    assert!(!stale.exists() && !gone.exists());
    assert!(unknown.exists(), "an image without a record was removed");
    assert!(
        note(&unknown).1.contains("no record"),
        "{:?}",
        note(&unknown)
    );
    assert!(older.exists());
    assert!(
        note(&older).1.contains("others may still want it"),
        "{:?}",
        note(&older)
    );
    assert!(from_broken.exists());
    assert!(
        note(&from_broken).1.contains("cannot tell"),
        "{:?}",
        note(&from_broken)
    );

    prune(
        &cache,
        &Wanted::new(),
        &here,
        PruneOptions {
            all: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(!scenario_image.exists() && !unknown.exists() && !from_broken.exists());
}

#[test]
fn names_are_classified_by_the_harness_patterns() {
    assert_eq!(
        kind_in_images("debian-dracut-0123456789abcdef"),
        Some(Kind::Image("debian-dracut-0123456789abcdef".into()))
    );
    assert_eq!(
        kind_in_images(".debian-dracut-0123456789abcdef.lock"),
        Some(Kind::Lock("debian-dracut-0123456789abcdef".into()))
    );
    assert_eq!(
        kind_in_images(".build-0123456789abcdef-4242"),
        Some(Kind::Build(4242))
    );
    assert_eq!(kind_in_images("notes.txt"), None);
    assert_eq!(kind_in_images("debian-0123"), None);
    assert_eq!(
        kind_at_top("build-debian-dracut-0123456789abcdef.log"),
        Some(Kind::Log("debian-dracut-0123456789abcdef".into()))
    );
    assert_eq!(kind_at_top("image-build.log"), None);
}

#[test]
fn keeps_wanted_removes_the_rest_and_counts_bytes() {
    let t = temp("keep");
    let cache = t.path().join("cache");
    let here = checkout(&t.path().join("here"));
    let keep = cache.join("images/alpha-00000000000000aa");
    let old = cache.join("images/alpha-00000000000000bb");
    for d in [&keep, &old] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("disk.img"), vec![1u8; 64 * 1024]).unwrap();
        used_by(d, &here);
    }
    std::fs::write(cache.join("images/.alpha-00000000000000bb.lock"), b"").unwrap();
    std::fs::write(cache.join("build-alpha-00000000000000bb.log"), b"log").unwrap();
    std::fs::write(cache.join("images/README"), b"not ours").unwrap();
    let wanted = Wanted::from([("alpha-00000000000000aa".into(), vec!["test".into()])]);

    let dry = prune(
        &cache,
        &wanted,
        &here,
        PruneOptions {
            dry_run: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(old.exists(), "a dry run removed something");
    assert!(dry.freed() >= 64 * 1024, "{}", dry.freed());

    let done = prune(&cache, &wanted, &here, PruneOptions::default()).unwrap();
    assert_eq!(done.freed(), dry.freed());
    assert!(keep.join("disk.img").exists());
    assert!(!old.exists());
    assert!(!cache.join("images/.alpha-00000000000000bb.lock").exists());
    assert!(!cache.join("build-alpha-00000000000000bb.log").exists());
    assert!(cache.join("images/README").exists());

    prune(
        &cache,
        &wanted,
        &here,
        PruneOptions {
            all: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(!keep.exists());
}

#[test]
fn symlinks_out_of_the_cache_are_refused_and_left() {
    let t = temp("link");
    let cache = t.path().join("cache");
    let outside = t.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("precious"), b"keep me").unwrap();
    let link = cache.join("images/evil-00000000000000cc");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    let out = prune(
        &cache,
        &Wanted::new(),
        t.path(),
        PruneOptions {
            all: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(out.refused());
    assert!(link.symlink_metadata().is_ok(), "the link was removed");
    assert!(outside.join("precious").exists());
}

#[test]
fn an_images_folder_leading_outside_is_an_error() {
    let t = temp("escape");
    let cache = t.path().join("cache2");
    std::fs::create_dir_all(&cache).unwrap();
    std::os::unix::fs::symlink(t.path().join("cache/images"), cache.join("images")).unwrap();
    let e = prune(&cache, &Wanted::new(), t.path(), PruneOptions::default()).unwrap_err();
    assert!(matches!(e, PruneError::Escapes { .. }), "{e}");
}

#[test]
fn a_live_build_is_left_alone() {
    let t = temp("live");
    let cache = t.path().join("cache");
    let live = cache.join(format!(
        "images/.build-00000000000000dd-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&live).unwrap();
    let out = prune(&cache, &Wanted::new(), t.path(), PruneOptions::default()).unwrap();
    assert!(live.exists());
    assert_eq!(out.entries[0].action, Action::InUse);
}

#[test]
fn shipped_scenarios_and_recipes_give_wanted_images() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let w = wanted(&root.join("images"), &root.join("scenarios")).unwrap();
    let why_of = |reason: &str| {
        w.values()
            .find(|why| why.iter().any(|r| r == reason))
            .map(|why| why.join(", "))
            .unwrap_or_default()
    };
    // The default scenario uses the recipe's defaults: one image serves both.
    let default = why_of("default parameters of debian-initramfs-tools");
    assert!(default.contains("scenario debian-ibft-e1000"), "{w:?}");
    // A scenario with its own parameters keeps an image of its own.
    assert!(!why_of("scenario initramfs-no-sd-mod").is_empty(), "{w:?}");
    // So does a worked example, its overlay part of the key.
    assert!(!why_of("scenario initramfs-hook").is_empty(), "{w:?}");
}

#[test]
fn bytes_read_well() {
    assert_eq!(human_bytes(512), "512 B");
    assert_eq!(human_bytes(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
}
