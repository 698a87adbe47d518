//! Validation tests: each broken scenario must be refused with file:line:column and a message
//! that says what to write instead.

use std::path::{Path, PathBuf};

use super::*;

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

/// A good scenario to mutate; its HTTP file exists in the shipped scenarios folder.
pub(super) const GOOD: &str = r#"name: t
image: debian-initramfs-tools
nodes:
  - name: node01
    nics:
      - { model: e1000, mac: "52:54:00:aa:00:01", boot: true }
services:
  dhcp:
    hosts:
      - { mac: "52:54:00:aa:00:01", hostname: node01 }
  http:
    files:
      boot.ipxe: boot/sanboot.ipxe
  iscsi:
    target: iqn.2026-11.lab:node01-root
expect:
  - console: "Booting from SAN device"
    within: 90s
"#;

pub(super) fn load_text(text: &str) -> Result<Scenario, ScenarioError> {
    load_str(&scenarios_dir().join("test.yaml"), text)
}

pub(super) fn err(text: &str) -> String {
    match load_text(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.summary(),
    }
}

#[test]
fn the_base_case_is_valid() {
    let s = load_text(GOOD).unwrap();
    assert_eq!(s.nodes[0].nics[0].slot, 3);
    assert!(s.nodes[0].nics[0].boot);
    assert_eq!(s.iscsi.lun, 1);
    assert_eq!(s.steps[0].within, std::time::Duration::from_secs(90));
    assert_eq!(s.steps[0].node, "node01");
    assert_eq!(s.dhcp.boot_url, "http://10.77.0.1/boot.ipxe");
    let body = String::from_utf8(s.http.files[0].body.clone()).unwrap();
    assert!(
        body.contains("sanboot iscsi:10.77.0.1:::1:iqn.2026-11.lab:node01-root"),
        "{body}"
    );
    // iPXE's own variables pass through untouched.
    assert!(body.contains("${hostname}"), "{body}");
}

#[test]
fn every_shipped_scenario_is_valid() {
    let files = crate::support::paths::scenario_files(&scenarios_dir()).unwrap();
    assert!(!files.is_empty());
    for f in files {
        if let Err(e) = load(&f) {
            panic!("{}: {}", f.display(), e.summary());
        }
    }
}

/// A shipped scenario may not wait for a text its own failure texts would stop it at.
#[test]
fn no_shipped_scenario_waits_for_one_of_its_failure_texts() {
    let defaults: Vec<String> = default_fail_patterns()
        .into_iter()
        .map(|p| p.text)
        .collect();
    assert!(defaults.iter().any(|t| t == "No bootable device."));
    assert!(defaults.iter().any(|t| t == "No more network devices"));
    for f in crate::support::paths::scenario_files(&scenarios_dir()).unwrap() {
        let s = load(&f).unwrap();
        for step in &s.steps {
            let Action::Console(text) = &step.action else {
                continue;
            };
            for p in &s.fail_on {
                assert!(
                    !text.contains(&p.text),
                    "{}: step `{}` waits for `{text}`, which fails on `{}`",
                    f.display(),
                    step.name,
                    p.text
                );
            }
        }
    }
}

#[test]
fn unknown_key_names_line_and_column() {
    let e = err(&GOOD.replace("  - name: node01\n", "  - name: node01\n    memroy: 512\n"));
    assert!(e.contains("test.yaml:5:5"), "{e}");
    assert!(e.contains("memroy"), "{e}");
}

#[test]
fn unknown_nic_model_lists_valid_ones() {
    let e = err(&GOOD.replace("model: e1000,", "model: tg3,"));
    assert!(e.contains("test.yaml:6:"), "{e}");
    for m in [
        "e1000",
        "e1000e",
        "rtl8139",
        "virtio-net",
        "pcnet",
        "ne2k-pci",
    ] {
        assert!(e.contains(m), "{m} missing in: {e}");
    }
}

#[test]
fn a_model_that_did_not_boot_is_refused_as_boot_nic_but_not_as_a_second_nic() {
    for m in ["pcnet", "eepro100"] {
        let e = err(&GOOD.replace("model: e1000,", &format!("model: {m},")));
        assert!(e.contains("test.yaml:6:"), "{e}");
        assert!(
            e.contains(&format!(
                "a {m} NIC cannot be the boot NIC: booting from it alone"
            )),
            "{e}"
        );
        assert!(e.contains("no kernel"), "{e}");
        assert!(
            e.contains("boot from one of e1000, e1000e, rtl8139, virtio-net, ne2k-pci"),
            "{e}"
        );
        let second = GOOD.replace(
            "boot: true }\n",
            &format!("boot: true }}\n      - {{ model: {m}, mac: \"52:54:00:bb:00:01\" }}\n"),
        );
        let s = load_text(&second).unwrap();
        assert_eq!(s.nodes[0].nics.len(), 2);
        assert!(!s.nodes[0].nics[1].boot);
    }
}

#[test]
fn bad_mac_is_located() {
    let e = err(&GOOD.replace(
        "mac: \"52:54:00:aa:00:01\", boot",
        "mac: \"52:54:00:aa:00\", boot",
    ));
    assert!(e.contains("test.yaml:6:"), "{e}");
    assert!(e.contains("MAC"), "{e}");
}

#[test]
fn multicast_mac_is_refused() {
    let e = err(&GOOD.replace(
        "mac: \"52:54:00:aa:00:01\", boot",
        "mac: \"01:54:00:aa:00:01\", boot",
    ));
    assert!(e.contains("multicast"), "{e}");
}

#[test]
fn bad_iqn_is_located() {
    let e = err(&GOOD.replace("target: iqn.2026-11.lab:node01-root", "target: node01-root"));
    assert!(e.contains("test.yaml:15:"), "{e}");
    assert!(e.contains("iqn."), "{e}");
}

#[test]
fn duplicate_mac_across_nodes() {
    let text = GOOD.replace(
        "services:",
        "  - name: node02\n    nics:\n      - { model: e1000, mac: \"52:54:00:aa:00:01\" }\nservices:",
    );
    let e = err(&text);
    assert!(e.contains("already used by a NIC of node `node01`"), "{e}");
    assert!(e.contains("test.yaml:9:"), "{e}");
}

#[test]
fn duplicate_node_names() {
    let text = GOOD.replace(
        "services:",
        "  - name: node01\n    nics:\n      - { model: e1000, mac: \"52:54:00:aa:00:09\" }\nservices:",
    );
    assert!(err(&text).contains("defined twice"));
}

#[test]
fn two_boot_nics() {
    let text = GOOD.replace(
        "      - { model: e1000, mac: \"52:54:00:aa:00:01\", boot: true }\n",
        "      - { model: e1000, mac: \"52:54:00:aa:00:01\", boot: true }\n      - { model: rtl8139, mac: \"52:54:00:aa:00:02\", boot: true }\n",
    );
    assert!(err(&text).contains("exactly one NIC `boot: true` (found 2)"));
}

#[test]
fn http_file_escaping_the_folder() {
    let e = err(&GOOD.replace(
        "boot.ipxe: boot/sanboot.ipxe",
        "boot.ipxe: ../../etc/shadow",
    ));
    assert!(e.contains("leaves the scenario's folder"), "{e}");
    assert!(e.contains("test.yaml:13:"), "{e}");
    let e = err(&GOOD.replace("boot.ipxe: boot/sanboot.ipxe", "boot.ipxe: /etc/shadow"));
    assert!(e.contains("leaves the scenario's folder"), "{e}");
}

#[test]
fn missing_http_file() {
    let e = err(&GOOD.replace("boot/sanboot.ipxe", "boot/nope.ipxe"));
    assert!(e.contains("nope.ipxe") && e.contains("No such file"), "{e}");
}

#[test]
fn unknown_template_variable_lists_valid_ones() {
    let e = err(&GOOD.replace(
        "  dhcp:\n",
        "  dhcp:\n    boot_url: \"http://{{sever}}/boot.ipxe\"\n",
    ));
    assert!(e.contains("unknown variable `{{sever}}`"), "{e}");
    assert!(e.contains("`server`"), "{e}");
}

#[test]
fn step_with_two_actions() {
    let e = err(&GOOD.replace(
        "  - console: \"Booting from SAN device\"\n",
        "  - console: \"Booting from SAN device\"\n    send: reboot\n",
    ));
    assert!(e.contains("exactly one action"), "{e}");
    assert!(e.contains("test.yaml:17:"), "{e}");
}

#[test]
fn step_without_action() {
    let e = err(&GOOD.replace(
        "  - console: \"Booting from SAN device\"\n",
        "  - name: nothing\n",
    ));
    assert!(e.contains("exactly one action, found 0"), "{e}");
}

#[test]
fn bad_duration() {
    let e = err(&GOOD.replace("within: 90s", "within: soon"));
    assert!(e.contains("duration"), "{e}");
    assert!(e.contains("test.yaml:18:"), "{e}");
    let e = err(&GOOD.replace("within: 90s", "within: 5h"));
    assert!(e.contains("1h limit"), "{e}");
}

#[test]
fn enormous_memory_is_refused() {
    let e = err(&GOOD.replace(
        "  - name: node01\n",
        "  - name: node01\n    memory_mib: 1000000\n",
    ));
    assert!(e.contains("outside 256..=16384"), "{e}");
    assert!(e.contains("test.yaml:5:"), "{e}");
}

#[test]
fn expect_failure_must_name_a_step() {
    let e = err(&format!("{GOOD}expect_failure:\n  step: nosuch\n"));
    assert!(e.contains("names no step"), "{e}");
    assert!(e.contains("Booting from SAN device"), "{e}");
}

#[test]
fn dhcp_host_must_be_a_known_nic() {
    let e = err(&GOOD.replace(
        "      - { mac: \"52:54:00:aa:00:01\", hostname: node01 }",
        "      - { mac: \"52:54:00:aa:00:07\", hostname: node01 }",
    ));
    assert!(e.contains("not a NIC of any node"), "{e}");
}

#[test]
fn lun_zero_is_the_controller() {
    let e = err(&GOOD.replace(
        "    target: iqn.2026-11.lab:node01-root\n",
        "    target: iqn.2026-11.lab:node01-root\n    lun: 0\n",
    ));
    assert!(e.contains("LUN 0"), "{e}");
}

#[test]
fn malformed_yaml_is_located() {
    let e = err("name: t\nnodes: [\n");
    assert!(e.contains("test.yaml:"), "{e}");
}

#[test]
fn wrong_type_is_located() {
    let e = err(&GOOD.replace("  - name: node01\n", "  - name: node01\n    cpus: many\n"));
    assert!(e.contains("test.yaml:5:"), "{e}");
}

#[test]
fn public_subnet_is_refused() {
    let e = err(&format!("network:\n  subnet: 8.8.8.0/24\n{GOOD}"));
    assert!(e.contains("private"), "{e}");
    assert!(e.contains("test.yaml:2:"), "{e}");
}

#[test]
fn http_fault_must_name_a_served_file() {
    let e = err(&GOOD.replace(
        "      boot.ipxe: boot/sanboot.ipxe\n",
        "      boot.ipxe: boot/sanboot.ipxe\n    faults:\n      - { path: menu.ipxe, fail_first: 2 }\n",
    ));
    assert!(e.contains("not one of the HTTP files"), "{e}");
    assert!(e.contains("`boot.ipxe`"), "{e}");
}

#[test]
fn http_fault_defaults_to_503() {
    let s = load_text(&GOOD.replace(
        "      boot.ipxe: boot/sanboot.ipxe\n",
        "      boot.ipxe: boot/sanboot.ipxe\n    faults:\n      - { path: boot.ipxe, fail_first: 2 }\n",
    ))
    .unwrap();
    assert_eq!(
        s.http.faults,
        vec![HttpFault {
            path: "/boot.ipxe".into(),
            first: 2,
            status: Some(503),
            delay: None,
        }]
    );
    // A delay alone serves the file, late.
    let s = load_text(&GOOD.replace(
        "      boot.ipxe: boot/sanboot.ipxe\n",
        "      boot.ipxe: boot/sanboot.ipxe\n    faults:\n      - { path: boot.ipxe, fail_first: 1, delay: 5s }\n",
    ))
    .unwrap();
    assert_eq!(s.http.faults[0].status, None);
    assert_eq!(
        s.http.faults[0].delay,
        Some(std::time::Duration::from_secs(5))
    );
}

#[test]
fn iscsi_faults_are_bounded() {
    let e = err(&GOOD.replace(
        "    target: iqn.2026-11.lab:node01-root\n",
        "    target: iqn.2026-11.lab:node01-root\n    faults: { refuse_first: 1000 }\n",
    ));
    assert!(e.contains("more than 100 faulty logins"), "{e}");
    let s = load_text(&GOOD.replace(
        "    target: iqn.2026-11.lab:node01-root\n",
        "    target: iqn.2026-11.lab:node01-root\n    faults: { refuse_first: 2, drop_first: 1 }\n",
    ))
    .unwrap();
    assert_eq!((s.iscsi.refuse_first, s.iscsi.drop_first), (2, 1));
}

const TWO_NICS: &str = r#"name: t
image: debian-initramfs-tools
network:
  segments:
    - { name: backend, subnet: 10.78.0.0/24, dhcp: true }
nodes:
  - name: node01
    nics:
      - { model: e1000, mac: "52:54:00:aa:00:01", boot: true }
      - { model: rtl8139, mac: "52:54:00:bb:00:01", segment: backend }
services:
  http:
    files:
      boot.ipxe: boot/sanboot.ipxe
  iscsi:
    target: iqn.2026-11.lab:node01-root
expect:
  - console: "Booting from SAN device"
"#;

#[test]
fn a_nic_can_sit_on_its_own_segment() {
    let s = load_text(TWO_NICS).unwrap();
    assert_eq!(s.segments.len(), 1);
    assert_eq!(s.segments[0].name, "backend");
    assert!(s.segments[0].dhcp);
    assert_eq!(s.nodes[0].nics[0].segment, None);
    assert_eq!(s.nodes[0].nics[1].segment, Some(0));
    // `segment: boot` is the boot network, said out loud.
    let s = load_text(&TWO_NICS.replace("segment: backend", "segment: boot")).unwrap();
    assert_eq!(s.nodes[0].nics[1].segment, None);
}

#[test]
fn segments_are_checked() {
    let e = err(&TWO_NICS.replace("segment: backend", "segment: storage"));
    assert!(e.contains("test.yaml:10:62"), "{e}");
    assert!(e.contains("unknown segment `storage`"), "{e}");
    assert!(e.contains("`backend`") && e.contains("`boot`"), "{e}");

    let e = err(&TWO_NICS.replace("10.78.0.0/24", "10.77.0.0/16"));
    assert!(e.contains("overlaps `boot` (10.77.0.0/24)"), "{e}");

    let e = err(&TWO_NICS.replace("name: backend", "name: boot"));
    assert!(e.contains("segment name `boot` is taken"), "{e}");

    let e = err(&TWO_NICS.replace("boot: true }", "boot: true, segment: backend }"));
    assert!(e.contains("it must be on the boot network"), "{e}");

    let e = err(&TWO_NICS.replace(
        "services:\n",
        "services:\n  dhcp:\n    hosts:\n      - { mac: \"52:54:00:bb:00:01\", ip: 10.77.0.9 }\n",
    ));
    assert!(
        e.contains("static addresses are for the boot network"),
        "{e}"
    );
}

#[test]
fn iscsi_fault_counts_that_overflow_when_added_are_refused() {
    let e = err(&GOOD.replace(
        "    target: iqn.2026-11.lab:node01-root\n",
        "    target: iqn.2026-11.lab:node01-root\n    faults: { refuse_first: 4000000000, drop_first: 4000000000 }\n",
    ));
    assert!(e.contains("more than 100 faulty logins"), "{e}");
}

#[test]
fn image_file_must_stay_in_the_scenario_folder() {
    for path in ["/etc/passwd", "../../etc/passwd"] {
        let e = err(&GOOD.replace(
            "image: debian-initramfs-tools",
            &format!("image: {{ file: {path} }}"),
        ));
        assert!(e.contains("leaves the scenario's folder"), "{e}");
        assert!(e.contains("test.yaml:2:8"), "{e}");
    }
}

#[test]
fn unknown_recipe_and_parameter_are_refused_with_the_valid_ones() {
    let e = err(&GOOD.replace("image: debian-initramfs-tools", "image: no-such-recipe"));
    assert!(
        e.contains("test.yaml:2:8: unknown image recipe `no-such-recipe`"),
        "{e}"
    );
    assert!(
        e.contains("`debian-dracut`, `debian-initramfs-tools`"),
        "{e}"
    );
    let e = err(&GOOD.replace(
        "image: debian-initramfs-tools",
        "image: { recipe: debian-initramfs-tools, set: { colour: blue } }",
    ));
    assert!(e.contains("has no parameter `colour`"), "{e}");
    assert!(e.contains("`kernel_args`"), "{e}");
}

#[test]
fn yaml_tags_and_alias_floods_are_refused() {
    let e = err(&GOOD.replace("name: t\n", "name: t\ndescription: !include /etc/passwd\n"));
    assert!(e.contains("test.yaml:2:"), "{e}");
    assert!(e.contains("!include"), "{e}");
    let flood: String = (0..2000).map(|_| "  - *x\n").collect();
    let e = err(&GOOD.replace(
        "expect:\n",
        &format!("fail_on:\n  - &x boom\n{flood}expect:\n"),
    ));
    assert!(e.contains("too many anchors or aliases"), "{e}");
}

#[test]
fn nul_bytes_and_empty_files_are_refused() {
    let e = err(&GOOD.replace("node01-root", "node01\0-root"));
    assert!(e.contains("test.yaml:15:35: a NUL byte"), "{e}");
    for empty in ["", "\n\n", "# just a comment\n", "---\n"] {
        let e = err(empty);
        assert!(e.contains("holds no scenario"), "{e}");
    }
}

#[test]
fn echoed_values_are_escaped_and_cut() {
    let e = err(&GOOD.replace("- name: node01", "- name: \"node\\e01\""));
    assert!(e.contains("node\\u{1b}01"), "{e}");
    let e = err(&GOOD.replace("- name: node01", &format!("- name: {}", "n".repeat(5000))));
    assert!(e.contains("(5000 characters)") && e.len() < 300, "{e}");
}

/// A scratch folder of its own for a test, removed when dropped, also when the test panics.
fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("nbh-scenario-{name}-"))
        .tempdir()
        .unwrap()
}

#[test]
fn http_files_may_not_add_up_past_the_limit() {
    let tmp = scratch("http-total");
    let dir = tmp.path();
    // Sparse: 15 MiB on paper, nothing on disk.
    let f = std::fs::File::create(dir.join("big.bin")).unwrap();
    f.set_len(15 * 1024 * 1024).unwrap();
    std::fs::create_dir_all(dir.join("boot")).unwrap();
    std::fs::copy(
        scenarios_dir().join("boot/sanboot.ipxe"),
        dir.join("boot/sanboot.ipxe"),
    )
    .unwrap();
    let many: String = (0..5)
        .map(|i| format!("      big{i}.bin: big.bin\n"))
        .collect();
    let text = GOOD.replace(
        "      boot.ipxe: boot/sanboot.ipxe\n",
        &format!("      boot.ipxe: boot/sanboot.ipxe\n{many}"),
    );
    let e = load_str(&dir.join("t.yaml"), &text).unwrap_err().summary();
    assert!(
        e.contains("the HTTP files add up to more than 64 MiB"),
        "{e}"
    );
    tmp.close().unwrap();
}

#[test]
fn scenario_files_that_are_not_small_regular_text_files_are_refused_unread() {
    let tmp = scratch("not-a-file");
    let dir = tmp.path();
    let fifo = dir.join("fifo.yaml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    // Without a writer, a blocking open would hang here.
    let e = load(&fifo).unwrap_err().summary();
    assert!(
        e.contains("not a regular file (a device, FIFO or socket)"),
        "{e}"
    );
    let e = load(Path::new("/dev/zero")).unwrap_err().summary();
    assert!(e.contains("not a regular file"), "{e}");
    let e = load(dir).unwrap_err().summary();
    assert!(e.contains("not a regular file (a folder)"), "{e}");

    let big = dir.join("big.yaml");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(MAX_SCENARIO_BYTES + 1)
        .unwrap();
    let e = load(&big).unwrap_err().summary();
    assert!(e.contains("too big for a scenario"), "{e}");

    let latin1 = dir.join("latin1.yaml");
    std::fs::write(&latin1, b"name: caf\xe9\n").unwrap();
    let e = load(&latin1).unwrap_err().summary();
    assert!(
        e.contains("latin1.yaml:1:10: byte 0xe9 is not UTF-8 text"),
        "{e}"
    );
    tmp.close().unwrap();
}

#[test]
fn boot_url_may_not_carry_commas_or_blanks() {
    for url in [
        "http://{{server}}/a,b",
        "http://{{server}}/a b",
        "http://{{server}}/a\\nb",
    ] {
        let e = err(&GOOD.replace("  dhcp:\n", &format!("  dhcp:\n    boot_url: \"{url}\"\n")));
        assert!(e.contains("which dnsmasq cannot pass on"), "{e}");
    }
}

#[test]
fn guest_side_steps_parse_and_name_themselves() {
    let text = GOOD.replace(
        "    within: 90s\n",
        "    within: 90s\n  - restart: iscsi\n  - shell: \"sync\"\n  - lun_bytes: { offset: 512000, text: \"mark\" }\n  - qemu_exit: true\n",
    );
    let s = load_text(&text).unwrap();
    let names: Vec<&str> = s.steps[1..].iter().map(|x| x.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "restart iscsi",
            "shell \"sync\"",
            "lun_bytes at 512000",
            "qemu_exit"
        ]
    );
    assert!(matches!(s.steps[1].action, Action::Restart(Service::Iscsi)));
    assert!(
        matches!(&s.steps[3].action, Action::LunBytes { offset: 512000, text } if text == "mark")
    );
}

#[test]
fn guest_side_steps_refuse_what_asserts_nothing() {
    let with = |step: &str| {
        GOOD.replace(
            "    within: 90s\n",
            &format!("    within: 90s\n  - {step}\n"),
        )
    };
    let e = err(&with("qemu_exit: false"));
    assert!(e.contains("`qemu_exit: false` asserts nothing"), "{e}");
    let e = err(&with("shell: \"  \""));
    assert!(
        e.contains("`shell` takes one non-empty command line"),
        "{e}"
    );
    let e = err(&with("lun_bytes: { offset: 0, text: \"\" }"));
    assert!(e.contains("`lun_bytes.text` must be 1..=512 bytes"), "{e}");
    let e = err(&with("restart: ftp"));
    assert!(e.contains("unknown variant `ftp`"), "{e}");
}

#[test]
fn down_windows_are_read_for_every_service() {
    let s = load_text(
        &GOOD
            .replace(
                "      - { mac: \"52:54:00:aa:00:01\", hostname: node01 }\n",
                "      - { mac: \"52:54:00:aa:00:01\", hostname: node01 }\n    down: [{ at: 1m, for: 20s }]\n",
            )
            .replace(
                "      boot.ipxe: boot/sanboot.ipxe\n",
                "      boot.ipxe: boot/sanboot.ipxe\n    start_after: 10s\n    down:\n      - { at: 60s, for: 20s }\n      - { at: 2m, for: 5s }\n",
            )
            .replace(
                "    target: iqn.2026-11.lab:node01-root\n",
                "    target: iqn.2026-11.lab:node01-root\n    down: [{ at: 30s, for: 10s }]\n    faults: { refuse_until: 45s }\n",
            ),
    )
    .unwrap();
    let secs = |w: &[crate::scenario::DownWindow]| -> Vec<(u64, u64)> {
        w.iter()
            .map(|w| (w.at.as_secs(), w.until().as_secs()))
            .collect()
    };
    assert_eq!(secs(&s.dhcp.down), [(60, 80)]);
    assert_eq!(secs(&s.http.down), [(60, 80), (120, 125)]);
    assert_eq!(secs(&s.iscsi.down), [(30, 40)]);
    assert_eq!(
        s.iscsi.refuse_until,
        Some(std::time::Duration::from_secs(45))
    );
}

#[test]
fn bad_down_windows_are_located() {
    let e = err(&GOOD.replace(
        "      boot.ipxe: boot/sanboot.ipxe\n",
        "      boot.ipxe: boot/sanboot.ipxe\n    down:\n      - { at: 60s, for: 20s }\n      - { at: 70s, for: 5s }\n",
    ));
    assert!(e.contains("test.yaml:16:9"), "{e}");
    assert!(e.contains("overlaps"), "{e}");
    let e = err(&GOOD.replace(
        "    target: iqn.2026-11.lab:node01-root\n",
        "    target: iqn.2026-11.lab:node01-root\n    start_after: 30s\n    down: [{ at: 10s, for: 5s }]\n",
    ));
    assert!(e.contains("begins before the service has started"), "{e}");
    let e = err(&GOOD.replace(
        "      boot.ipxe: boot/sanboot.ipxe\n",
        "      boot.ipxe: boot/sanboot.ipxe\n    down: [{ at: 60s }]\n",
    ));
    assert!(e.contains("missing field `for`"), "{e}");
}

#[test]
fn refuse_until_must_outlast_the_late_start() {
    let e = err(&GOOD.replace(
        "    target: iqn.2026-11.lab:node01-root\n",
        "    target: iqn.2026-11.lab:node01-root\n    start_after: 30s\n    faults: { refuse_until: 30s }\n",
    ));
    assert!(e.contains("it would refuse nothing"), "{e}");
    assert!(e.contains("test.yaml:17:13"), "{e}");
}
