//! A scenario with several nodes: one target, LUN and disk per node, or a refusal.

use super::tests::{err, load_text, GOOD};

#[test]
fn several_nodes_need_node_on_steps() {
    let text = GOOD
        .replace(
            "services:",
            "  - name: node02\n    nics:\n      - { model: e1000, mac: \"52:54:00:aa:00:09\" }\nservices:",
        )
        .replace("boot/sanboot.ipxe", "boot/fleet/menu.ipxe")
        .replace(
            "target: iqn.2026-11.lab:node01-root",
            "per_node: { target: \"iqn.2026-11.lab:{node}-root\" }",
        );
    let e = err(&text);
    assert!(e.contains("must say which `node`"), "{e}");
    assert!(e.contains("`node01`, `node02`"), "{e}");
}

#[test]
fn two_nodes_on_one_writable_lun_are_refused() {
    let two = GOOD.replace(
        "services:",
        "  - name: node02\n    nics:\n      - { model: e1000, mac: \"52:54:00:aa:00:09\", boot: true }\nservices:",
    );
    let e = err(&two);
    assert!(e.contains("2 nodes would share one writable LUN"), "{e}");
    assert!(
        e.contains("iqn.2026-11.lab:{node}-root"),
        "the hint derives the template: {e}"
    );
    assert!(e.contains("test.yaml:18:13"), "{e}");
    // The fix the message gives: one target per node, named from the node.
    let fleet = two
        .replace("boot/sanboot.ipxe", "boot/fleet/menu.ipxe")
        .replace(
            "target: iqn.2026-11.lab:node01-root",
            "per_node: { target: \"iqn.2026-11.lab:{node}-root\", initiator: \"iqn.2026-11.lab:{node}\" }",
        )
        .replace("  - console:", "  - node: node01\n    console:");
    let s = load_text(&fleet).unwrap();
    let exports = s.iscsi.exports();
    assert_eq!(exports.len(), 2);
    assert_eq!(exports[1].node.as_deref(), Some("node02"));
    assert_eq!(exports[1].target.as_str(), "iqn.2026-11.lab:node02-root");
    assert_eq!(exports[1].initiators[0].as_str(), "iqn.2026-11.lab:node02");
    assert_eq!(
        s.iscsi.target_of("node02").as_str(),
        "iqn.2026-11.lab:node02-root"
    );
}

#[test]
fn per_node_names_must_differ_per_node_and_be_iscsi_names() {
    let fleet = |target: &str| {
        GOOD.replace("boot/sanboot.ipxe", "boot/fleet/menu.ipxe")
            .replace(
                "target: iqn.2026-11.lab:node01-root",
                &format!("per_node: {{ target: \"{target}\" }}"),
            )
    };
    let e = err(&fleet("iqn.2026-11.lab:root"));
    assert!(
        e.contains("has no {node} or {mac:hexhyp}: every node would get the same one"),
        "{e}"
    );
    let e = err(&fleet("iqn.lab:{node}"));
    assert!(e.contains("per_node target for node node01"), "{e}");
    let e = err(&GOOD.replace(
        "target: iqn.2026-11.lab:node01-root",
        "per_node: { target: \"iqn.2026-11.lab:{node}-root\" }",
    ));
    assert!(e.contains("unknown variable `{{root_path}}`"), "{e}");
    assert!(
        e.contains("build them in the script from ${hostname}"),
        "{e}"
    );
    let e = err(&GOOD.replace(
        "    target: iqn.2026-11.lab:node01-root\n",
        "    target: iqn.2026-11.lab:node01-root\n    per_node: { target: \"iqn.2026-11.lab:{node}\" }\n",
    ));
    assert!(
        e.contains("`target` and `per_node` both name the targets"),
        "{e}"
    );
}

#[test]
fn a_nodes_own_image_needs_its_own_disk() {
    let own = GOOD.replace(
        "    nics:\n      - { model: e1000, mac: \"52:54:00:aa:00:01\", boot: true }",
        "    image: debian-dracut\n    nics:\n      - { model: e1000, mac: \"52:54:00:aa:00:01\", boot: true }",
    );
    let e = err(&own);
    assert!(
        e.contains("a node's own `image` needs a disk of its own"),
        "{e}"
    );
    let fleet = own
        .replace("boot/sanboot.ipxe", "boot/fleet/menu.ipxe")
        .replace(
            "target: iqn.2026-11.lab:node01-root",
            "per_node: { target: \"iqn.2026-11.lab:{node}-root\" }",
        );
    let s = load_text(&fleet).unwrap();
    assert_eq!(s.images().len(), 2, "the scenario's image and node01's own");
    assert!(matches!(
        s.image_of("node01"),
        crate::scenario::ImageRef::Recipe { name, .. } if name == "debian-dracut"
    ));
}

#[test]
fn a_per_host_file_must_name_a_node() {
    let with = |url: &str| {
        GOOD.replace(
            "      boot.ipxe: boot/sanboot.ipxe\n",
            &format!("      boot.ipxe: boot/sanboot.ipxe\n      {url}: boot/hosts/node01.ipxe\n"),
        )
    };
    let e = err(&with("hosts/node09.ipxe"));
    assert!(
        e.contains("per-host file `hosts/node09.ipxe` names no node"),
        "{e}"
    );
    assert!(e.contains("`node01`"), "the known names are listed: {e}");
    load_text(&with("hosts/node01.ipxe")).unwrap();
    // By MAC, or not a per-host file at all: not checked here.
    load_text(&with("hosts/mac-52-54-00-aa-00-01.ipxe")).unwrap();
    load_text(&with("menus/node09.ipxe")).unwrap();
}

#[test]
fn an_added_dhcp_host_must_be_a_nodes_nic() {
    let add =
        |mac: &str| format!("{GOOD}  - dhcp_add_host: {{ mac: \"{mac}\", hostname: node01 }}\n");
    let e = err(&add("52:54:00:aa:00:99"));
    assert!(
        e.contains("`dhcp_add_host` names MAC 52:54:00:aa:00:99, which no node's NIC has"),
        "{e}"
    );
    let s = load_text(&add("52:54:00:aa:00:01")).unwrap();
    assert!(s.adds_dhcp_hosts());
    assert!(matches!(
        &s.steps[1].action,
        crate::scenario::Action::DhcpAddHost(h) if h.hostname.as_deref() == Some("node01")
    ));
}

#[test]
fn each_node_repeats_a_step_for_every_node_with_its_name() {
    let fleet = |steps: &str| {
        GOOD.replace(
            "services:",
            "  - name: node02\n    nics:\n      - { model: e1000, mac: \"52:54:00:aa:00:09\", boot: true }\nservices:",
        )
        .replace("boot/sanboot.ipxe", "boot/fleet/menu.ipxe")
        .replace(
            "target: iqn.2026-11.lab:node01-root",
            "per_node: { target: \"iqn.2026-11.lab:{node}-root\" }",
        )
        .replace(
            "expect:\n  - console: \"Booting from SAN device\"\n    within: 90s\n",
            &format!("expect:\n{steps}"),
        )
    };
    let s = load_text(&fleet(
        "  - name: firmware\n    each_node: true\n    console: \"SeaBIOS\"\n\
         \x20 - name: lease\n    node: node02\n    dhcp_ack: { mac: \"52:54:00:aa:00:09\" }\n    after: firmware\n\
         \x20 - name: mark\n    each_node: true\n    shell: \"echo {node} > /tmp/x\"\n",
    ))
    .unwrap();
    let names: Vec<_> = s
        .steps
        .iter()
        .map(|st| (st.name.as_str(), st.node.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("firmware (node01)", "node01"),
            ("firmware (node02)", "node02"),
            ("lease", "node02"),
            ("mark (node01)", "node01"),
            ("mark (node02)", "node02"),
        ]
    );
    // `after` a repeated step means this node's own instance of it.
    assert_eq!(s.steps[2].after.as_deref(), Some("firmware (node02)"));
    assert!(
        matches!(&s.steps[4].action, crate::scenario::Action::Shell(c) if c == "echo node02 > /tmp/x")
    );
    // A record step with one fixed MAC, repeated, would wait for one record once per node.
    let e = err(&fleet(
        "  - each_node: true\n    dhcp_ack: { mac: \"52:54:00:aa:00:09\" }\n",
    ));
    assert!(
        e.contains("`each_node` would repeat the same `dhcp_ack` step for every node"),
        "{e}"
    );
    let e = err(&fleet(
        "  - each_node: true\n    node: node01\n    console: \"SeaBIOS\"\n",
    ));
    assert!(
        e.contains("one `node` or runs for `each_node`, not both"),
        "{e}"
    );
}

#[test]
fn a_fleet_without_per_node_initiators_keeps_the_scenarios_acl() {
    let fleet = GOOD.replace("boot/sanboot.ipxe", "boot/fleet/menu.ipxe").replace(
        "target: iqn.2026-11.lab:node01-root",
        "per_node: { target: \"iqn.2026-11.lab:{node}-root\" }\n    acl: { initiators: [\"iqn.2026-11.lab:admin\"] }",
    );
    let s = load_text(&fleet).unwrap();
    let exports = s.iscsi.exports();
    assert_eq!(exports[0].initiators.len(), 1, "{exports:?}");
    assert_eq!(exports[0].initiators[0].as_str(), "iqn.2026-11.lab:admin");
}
