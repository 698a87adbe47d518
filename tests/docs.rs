//! docs/scenario-reference.md cannot drift from the scenario format: every field of the `Raw*`
//! structs in harness/src/scenario/raw.rs (the file format itself) must have its entry, every
//! entry must still be a field, and every NIC model must be named.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use netboot_harness::scenario::NicModel;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where each struct's fields sit in a scenario file. A new `Raw*` struct fails the test until
/// it is added here.
const STRUCT_PATHS: &[(&str, &str)] = &[
    ("RawScenario", ""),
    ("RawImageMap", "image"),
    // The same keys as RawImageMap's, once checked: what a scenario adds to a recipe.
    ("RawAdditions", "image"),
    ("RawNetwork", "network"),
    ("RawSegment", "network.segments[]"),
    ("RawNode", "nodes[]"),
    ("RawNic", "nodes[].nics[]"),
    // The fleet's keys are described in its one entry, its template's as `nodes[]`'s.
    ("RawFleet", "fleet"),
    ("RawNodeTemplate", "nodes[]"),
    ("RawServices", "services"),
    ("RawDhcp", "services.dhcp"),
    ("RawDhcpHost", "services.dhcp.hosts[]"),
    ("RawHttp", "services.http"),
    ("RawHttpFault", "services.http.faults[]"),
    // The same window shape serves dhcp, http and iscsi; the reference describes it once.
    ("RawDownWindow", "services.http.down[]"),
    ("RawIscsi", "services.iscsi"),
    ("RawIscsiFaults", "services.iscsi.faults"),
    ("RawAcl", "services.iscsi.acl"),
    ("RawPerNode", "services.iscsi.per_node"),
    ("RawSecondPortal", "services.iscsi.second_portal"),
    ("RawStep", "expect[]"),
    ("RawDhcpAck", "expect[].dhcp_ack"),
    ("RawTftpSent", "expect[].tftp_sent"),
    ("RawIscsiLogin", "expect[].iscsi_login"),
    ("RawLoginRefused", "expect[].iscsi_login_refused"),
    ("RawHttpStatus", "expect[].http_status"),
    ("RawRefused", "expect[].refused"),
    ("RawAllLogins", "expect[].iscsi_logins_all"),
    ("RawNoLogin", "expect[].no_iscsi_login"),
    // `no_iscsi_logout` takes the same two keys; its entry says so.
    ("RawLogout", "expect[].iscsi_logout"),
    ("RawLunBytes", "expect[].lun_bytes"),
    ("RawLink", "expect[].link"),
    ("RawPowerCycle", "expect[].power_cycle"),
    ("RawAddedHost", "expect[].dhcp_add_host"),
    ("RawExpectedFailure", "expect_failure"),
];

/// (struct, YAML key) for every field of every `Raw*` struct, read from the source text.
fn raw_fields() -> Vec<(String, String)> {
    let src = std::fs::read_to_string(root().join("harness/src/scenario/raw.rs")).unwrap();
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    let mut rename: Option<String> = None;
    let mut prev = "";
    for line in src.lines() {
        let t = line.trim();
        if current.is_none() {
            let decl = t.strip_prefix("pub ").unwrap_or(t);
            if let Some(rest) = decl.strip_prefix("struct Raw") {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                assert!(
                    rest.trim_end().ends_with('{'),
                    "Raw{name}: only structs with named fields are understood here"
                );
                assert!(
                    !prev.contains("rename_all"),
                    "Raw{name} renames its fields: teach tests/docs.rs about rename_all"
                );
                current = Some(format!("Raw{name}"));
            }
            prev = t;
            continue;
        }
        if line.starts_with('}') {
            current = None;
            continue;
        }
        if t.starts_with("//") || t.is_empty() {
            continue;
        }
        if t.starts_with("#[") {
            assert!(
                !t.contains("flatten"),
                "{t}: a flattened field: teach tests/docs.rs about it"
            );
            if let Some(i) = t.find("rename = \"") {
                let v = &t[i + "rename = \"".len()..];
                rename = Some(v[..v.find('"').unwrap()].to_string());
            }
            continue;
        }
        let decl = t.strip_prefix("pub ").unwrap_or(t);
        let field: String = decl
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let is_field = !field.is_empty() && decl[field.len()..].trim_start().starts_with(':');
        assert!(is_field, "cannot read this line of a Raw struct: {line}");
        let key = rename.take().unwrap_or(field);
        out.push((current.clone().unwrap(), key));
    }
    out
}

/// Every dotted path of the scenario format, e.g. `nodes[].nics[].mac`.
fn source_paths() -> BTreeSet<String> {
    raw_fields()
        .into_iter()
        .map(|(st, key)| {
            let prefix = STRUCT_PATHS
                .iter()
                .find(|(s, _)| *s == st)
                .unwrap_or_else(|| {
                    panic!(
                        "{st} is new: add its place in the file to STRUCT_PATHS in tests/docs.rs"
                    )
                })
                .1;
            if prefix.is_empty() {
                key
            } else {
                format!("{prefix}.{key}")
            }
        })
        .collect()
}

fn reference() -> String {
    std::fs::read_to_string(root().join("docs/scenario-reference.md")).unwrap()
}

#[test]
fn the_source_reader_finds_the_fields() {
    let paths = source_paths();
    // Guards the reader itself: a parsing slip must not make the other tests pass vacuously.
    for p in [
        "name",
        "image.recipe",
        "image.set",
        "image.file",
        "nodes[].nics[].mac",
        "services.dhcp.hosts[].ip",
        "expect[].iscsi_login.from",
        "expect_failure.reason",
    ] {
        assert!(paths.contains(p), "{p} not found in raw.rs: {paths:?}");
    }
    assert!(paths.len() >= 45, "only {} fields: {paths:?}", paths.len());
    // Every struct in the table is still in the source.
    let structs: BTreeSet<String> = raw_fields().into_iter().map(|(s, _)| s).collect();
    for (s, _) in STRUCT_PATHS {
        assert!(structs.contains(*s), "{s} is gone from raw.rs");
    }
}

#[test]
fn every_field_has_an_entry() {
    let doc = reference();
    let missing: Vec<String> = source_paths()
        .into_iter()
        .filter(|p| !doc.contains(&format!("`{p}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/scenario-reference.md does not document: {missing:?}"
    );
}

#[test]
fn every_entry_is_still_a_field() {
    let paths = source_paths();
    let doc = reference();
    let stale: Vec<&str> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("### `"))
        .filter_map(|l| l.split('`').next())
        .filter(|p| !paths.contains(*p))
        .collect();
    assert!(
        stale.is_empty(),
        "docs/scenario-reference.md has entries for fields raw.rs no longer has: {stale:?}"
    );
}

#[test]
fn every_nic_model_is_named() {
    let doc = reference();
    for m in NicModel::ALL {
        assert!(
            doc.contains(&format!("`{}`", m.name())),
            "NIC model {} is missing from docs/scenario-reference.md",
            m.name()
        );
    }
}
