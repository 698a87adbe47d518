//! `fleet:` (a node template and a count) and the node's own values in `each_node` steps.

use super::tests::{err, load_text};
use super::Action;

/// Three nodes from a template; node02 has another NIC make and joins later (no DHCP host).
const FLEET: &str = r#"name: t
image: debian-initramfs-tools
fleet:
  count: 3
  ip: 10.77.0.101
  node:
    memory_mib: 768
    nics:
      - { model: e1000, mac: "52:54:00:aa:01:{xx}", boot: true }
  overrides:
    node02:
      nics:
        - { model: rtl8139, mac: "52:54:00:aa:01:{xx}", boot: true }
      dhcp_host: false
services:
  http:
    files:
      boot.ipxe: boot/fleet/menu.ipxe
  iscsi:
    per_node: { target: "iqn.2026-11.lab:{node}-root", initiator: "iqn.2026-11.lab:{node}" }
expect:
STEPS"#;

fn fleet(steps: &str) -> String {
    FLEET.replace("STEPS", steps)
}

const CONSOLE: &str = "  - each_node: true\n    console: \"SeaBIOS\"\n";

#[test]
fn a_template_and_a_count_write_out_the_nodes_and_their_dhcp_hosts() {
    let s = load_text(&fleet(CONSOLE)).unwrap();
    let names: Vec<&str> = s.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["node01", "node02", "node03"]);
    let macs: Vec<String> = s.nodes.iter().map(|n| n.nics[0].mac.to_string()).collect();
    assert_eq!(
        macs,
        [
            "52:54:00:aa:01:01",
            "52:54:00:aa:01:02",
            "52:54:00:aa:01:03"
        ]
    );
    assert!(s.nodes.iter().all(|n| n.memory_mib == 768));
    // The override replaces the template's NICs for node02 only.
    let models: Vec<String> = s
        .nodes
        .iter()
        .map(|n| format!("{:?}", n.nics[0].model))
        .collect();
    assert_eq!(models, ["E1000", "Rtl8139", "E1000"]);
    // Addresses count up by the node's number; node02 is left for a `dhcp_add_host` step.
    let hosts: Vec<String> = s
        .dhcp
        .hosts
        .iter()
        .map(|h| {
            format!(
                "{} {} {}",
                h.mac,
                h.hostname.as_deref().unwrap_or("-"),
                h.ip.map(|i| i.to_string()).unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        hosts,
        [
            "52:54:00:aa:01:01 node01 10.77.0.101",
            "52:54:00:aa:01:03 node03 10.77.0.103"
        ]
    );
    // The same fleet's targets come from the node names, as written-out nodes' do.
    let targets: Vec<&str> = s.iscsi.per_node.iter().map(|e| e.target.as_str()).collect();
    assert_eq!(
        targets,
        [
            "iqn.2026-11.lab:node01-root",
            "iqn.2026-11.lab:node02-root",
            "iqn.2026-11.lab:node03-root"
        ]
    );
}

#[test]
fn a_fleets_names_and_macs_must_differ_per_node() {
    let e = err(&fleet(CONSOLE).replace("count: 3", "count: 3\n  name: worker"));
    assert!(e.contains("fleet name `worker` has no {n} or {nn}"), "{e}");
    let e = err(&fleet(CONSOLE).replace(
        "mac: \"52:54:00:aa:01:{xx}\", boot: true }\n  overrides",
        "mac: \"52:54:00:aa:01:07\", boot: true }\n  overrides",
    ));
    assert!(
        e.contains("MAC `52:54:00:aa:01:07` has no {nn} or {xx}"),
        "{e}"
    );
    assert!(
        e.contains("test.yaml:9:"),
        "points at the template's MAC: {e}"
    );
    let e = err(&fleet(CONSOLE).replace(
        "mac: \"52:54:00:aa:01:{xx}\", boot: true }\n  overrides",
        "mac: \"52:54:00:zz:01:{xx}\", boot: true }\n  overrides",
    ));
    assert!(e.contains("MAC `52:54:00:zz:01:01` (node 1)"), "{e}");
    // An override for a node the fleet does not have lists the ones it has.
    let e = err(&fleet(CONSOLE).replace("    node02:\n", "    node09:\n"));
    assert!(e.contains("`overrides` names `node09`"), "{e}");
    assert!(e.contains("`node01`, `node02`, `node03`"), "{e}");
    let e = err(&fleet(CONSOLE).replace("count: 3", "count: 9"));
    assert!(e.contains("a fleet has 1 to 8 nodes, not 9"), "{e}");
    // Two nodes of the fleet on one MAC (an override's own MAC, another node's) are refused as
    // written-out nodes would be.
    let e = err(&fleet(CONSOLE).replace(
        "        - { model: rtl8139, mac: \"52:54:00:aa:01:{xx}\", boot: true }",
        "        - { model: rtl8139, mac: \"52:54:00:aa:01:{nn}\", boot: true }\n    node03:\n      nics:\n        - { model: e1000, mac: \"52:54:00:aa:01:02\", boot: true }",
    ));
    assert!(e.contains("52:54:00:aa:01:02"), "{e}");
}

#[test]
fn nodes_and_fleet_are_one_or_the_other() {
    let both = fleet(CONSOLE).replace(
        "fleet:",
        "nodes:\n  - name: node09\n    nics:\n      - { model: e1000, mac: \"52:54:00:aa:00:09\" }\nfleet:",
    );
    let e = err(&both);
    assert!(e.contains("`nodes` and `fleet` both list the nodes"), "{e}");
    let neither = super::tests::GOOD.replace(
        "nodes:\n  - name: node01\n    nics:\n      - { model: e1000, mac: \"52:54:00:aa:00:01\", boot: true }\n",
        "",
    );
    assert!(!neither.contains("nodes:"), "{neither}");
    let e = err(&neither);
    assert!(e.contains("needs `nodes` (written out) or `fleet`"), "{e}");
}

#[test]
fn each_node_fills_a_service_step_with_the_nodes_own_values() {
    let s = load_text(&fleet(
        "  - name: lease\n    each_node: true\n    dhcp_ack: { mac: \"{mac}\", hostname: \"{node}\" }\n\
         \x20 - name: own logins\n    each_node: true\n    iscsi_logins_all: { initiator: \"{initiator}\", target: \"{target}\", at_least: 3 }\n",
    ))
    .unwrap();
    let leases: Vec<String> = s
        .steps
        .iter()
        .filter_map(|st| match &st.action {
            Action::DhcpAck { mac, hostname, .. } => Some(format!(
                "{} {:?} {:?}",
                st.name,
                mac.map(|m| m.to_string()),
                hostname
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        leases[1],
        "lease (node02) Some(\"52:54:00:aa:01:02\") Some(\"node02\")"
    );
    assert_eq!(leases.len(), 3);
    let Action::AllLogins {
        initiator, target, ..
    } = &s.steps[5].action
    else {
        panic!("{:?}", s.steps[5]);
    };
    assert_eq!(s.steps[5].node, "node03");
    assert_eq!(
        initiator.as_ref().map(|i| i.as_str()),
        Some("iqn.2026-11.lab:node03")
    );
    assert_eq!(
        target.as_ref().map(|i| i.as_str()),
        Some("iqn.2026-11.lab:node03-root")
    );
}

#[test]
fn a_nodes_own_value_needs_each_node_and_a_node_that_has_it() {
    // Outside `each_node` there is no node to take `{mac}` from.
    let e = err(&fleet(
        "  - node: node01\n    dhcp_ack: { mac: \"{mac}\" }\n",
    ));
    assert!(e.contains("`{mac}` takes a node's value"), "{e}");
    // node02 has no fixed address: it is added later, and the step that adds it has none.
    let e = err(&fleet(
        "  - each_node: true\n    iscsi_logins_all: { from: \"{ip}\", at_least: 1 }\n",
    ));
    assert!(e.contains("{ip}: node node02 has no fixed address"), "{e}");
    // With the address in the step that adds node02, every node has one.
    let s = load_text(&fleet(
        "  - node: node02\n    dhcp_add_host: { mac: \"52:54:00:aa:01:02\", hostname: node02, ip: 10.77.0.102 }\n\
         \x20 - each_node: true\n    iscsi_logins_all: { from: \"{ip}\", at_least: 1 }\n",
    ))
    .unwrap();
    assert!(
        matches!(&s.steps[2].action, Action::AllLogins { from: Some(f), .. } if f.to_string() == "10.77.0.102")
    );
    // A place the harness does not know is named, with the ones it knows.
    let e = err(&fleet(
        "  - each_node: true\n    iscsi_login: { initiator: \"{iqn}\" }\n",
    ));
    assert!(e.contains("`{iqn}` holds an unknown place"), "{e}");
    assert!(e.contains("{initiator}"), "{e}");
    // A filled value is still checked as what it is.
    let e = err(&fleet(
        "  - each_node: true\n    iscsi_login: { target: \"{node}\" }\n",
    ));
    assert!(e.contains("iSCSI name `node01` for node node01"), "{e}");
}

#[test]
fn a_per_node_address_acl_needs_every_nodes_fixed_address() {
    let with_acl = fleet(CONSOLE).replace(
        "initiator: \"iqn.2026-11.lab:{node}\" }",
        "initiator: \"iqn.2026-11.lab:{node}\", address: true }",
    );
    // node02 is added later, by a step that gives it no address: nothing to admit.
    let e = err(&with_acl);
    assert!(
        e.contains("per_node.address: node node02 has no fixed address"),
        "{e}"
    );
    let s = load_text(&with_acl.replace(
        "expect:\n",
        "expect:\n  - node: node02\n    dhcp_add_host: { mac: \"52:54:00:aa:01:02\", ip: 10.77.0.102 }\n",
    ))
    .unwrap();
    let admitted: Vec<String> = s
        .iscsi
        .per_node
        .iter()
        .map(|e| {
            format!(
                "{} {:?}",
                e.target.as_str(),
                e.address.map(|a| a.to_string())
            )
        })
        .collect();
    assert_eq!(
        admitted,
        [
            "iqn.2026-11.lab:node01-root Some(\"10.77.0.101\")",
            "iqn.2026-11.lab:node02-root Some(\"10.77.0.102\")",
            "iqn.2026-11.lab:node03-root Some(\"10.77.0.103\")"
        ]
    );
}

#[test]
fn a_fleet_powers_on_at_once_or_staggered_by_seconds() {
    assert!(load_text(&fleet(CONSOLE)).unwrap().stagger.is_zero());
    let s = load_text(&fleet(CONSOLE).replace("count: 3", "count: 3\n  stagger: 5s")).unwrap();
    assert_eq!(s.stagger, std::time::Duration::from_secs(5));
    let e = err(&fleet(CONSOLE).replace("count: 3", "count: 3\n  stagger: 5m"));
    assert!(
        e.contains("stagger 300s is more than 60s between two nodes"),
        "{e}"
    );
}

#[test]
fn per_node_names_may_come_from_the_nodes_mac_as_ipxe_writes_it() {
    let by_mac = fleet(CONSOLE).replace(
        "per_node: { target: \"iqn.2026-11.lab:{node}-root\", initiator: \"iqn.2026-11.lab:{node}\" }",
        "per_node: { target: \"iqn.2026-11.lab:{node}-root\", initiator: \"iqn.2026-11.lab:{mac:hexhyp}\" }",
    );
    let s = load_text(&by_mac).unwrap();
    let initiators: Vec<&str> = s
        .iscsi
        .per_node
        .iter()
        .filter_map(|e| e.initiator.as_ref().map(|i| i.as_str()))
        .collect();
    // `${mac:hexhyp}` in iPXE: what a menu without host names sets as the node's IQN.
    assert_eq!(
        initiators,
        [
            "iqn.2026-11.lab:52-54-00-aa-01-01",
            "iqn.2026-11.lab:52-54-00-aa-01-02",
            "iqn.2026-11.lab:52-54-00-aa-01-03"
        ]
    );
}
