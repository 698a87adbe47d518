//! Against a real report: the marker's lines and the lab's records of one run of
//! `debian-ibft-e1000`, then the same with one fact changed at a time.

use crate::expect::oracle::*;
use crate::expect::Evidence;
use crate::guest::console::ConsoleLine;
use crate::scenario::Scenario;
use crate::services::events::Event;

const MARKER: &str = include_str!("../../../tests-data/marker-debian-ibft-e1000.txt");
const EVENTS: &str = include_str!("../../../tests-data/events-debian-ibft-e1000.jsonl");

fn lines(text: &str) -> Vec<ConsoleLine> {
    text.lines()
        .filter_map(|l| {
            let (at, text) = l.strip_prefix('[')?.split_once("] ")?;
            Some(ConsoleLine {
                at: at.trim().parse().ok()?,
                text: text.to_string(),
            })
        })
        .collect()
}

fn events(text: &str) -> Vec<Event> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn scenario() -> Scenario {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios/debian-ibft-e1000.yaml");
    crate::scenario::load(&path).unwrap()
}

fn ibft_of(marker: &str, ev: &str, s: &Scenario) -> Checked {
    let lab = Lab {
        scenario: s,
        node: &s.nodes[0],
    };
    ibft(&Report::parse(&lines(marker)), &lab, &events(ev), "node01")
}

#[test]
fn the_recorded_run_matches_its_lab() {
    let s = scenario();
    let c = ibft_of(MARKER, EVENTS, &s);
    assert!(c.differences.is_empty(), "{:?}", c.differences);
    assert!(c.summary.contains("3 login(s)"), "{}", c.summary);
    // The guest's lines and the lab's records it compared are the evidence.
    assert!(c
        .evidence
        .iter()
        .any(|e| matches!(e, Evidence::Record { .. })));
    assert!(c
        .evidence
        .iter()
        .any(|e| matches!(e, Evidence::Console { .. })));
    let lab = Lab {
        scenario: &s,
        node: &s.nodes[0],
    };
    let r = root_on_session(&Report::parse(&lines(MARKER)), &lab, "node01");
    assert!(r.differences.is_empty(), "{:?}", r.differences);
}

#[test]
fn each_field_that_differs_is_named() {
    let s = scenario();
    let one = |marker: &str, ev: &str| {
        let c = ibft_of(marker, ev, &s);
        assert_eq!(c.differences.len(), 1, "{:?}", c.differences);
        c.differences[0].clone()
    };
    // Another lease: the address differs in the table, on the interface, and no login
    // came from the leased address.
    let c = ibft_of(
        MARKER,
        &EVENTS.replace("\"ip\":\"10.77.0.163\"", "\"ip\":\"10.77.0.170\""),
        &s,
    );
    assert_eq!(
        c.differences,
        [
            "ethernet0 ip is 10.77.0.163, but the DHCP lease's address is 10.77.0.170",
            "interface eth0 (the iBFT NIC) has addresses 10.77.0.163/24, not the lease's 10.77.0.170/24",
            "the target recorded no accepted login from 10.77.0.170, the boot NIC's address",
        ]
    );
    let d = one(&MARKER.replace("prefix=24", "prefix=16"), EVENTS);
    assert!(
        d.contains("ethernet0 prefix is 16, but the lease's netmask is 24"),
        "{d}"
    );
    let d = one(
        &MARKER.replace("gateway=10.77.0.1", "gateway=10.77.0.254"),
        EVENTS,
    );
    assert!(
        d.contains("gateway is 10.77.0.254, but the router the DHCP server sent is 10.77.0.1"),
        "{d}"
    );
    let d = one(&MARKER.replace("dhcp=10.77.0.1", "dhcp=10.77.0.9"), EVENTS);
    assert!(
        d.contains("dhcp is 10.77.0.9, but the lab's DHCP server is 10.77.0.1"),
        "{d}"
    );
    let d = one(&MARKER.replace("origin=3", "origin=1"), EVENTS);
    assert!(d.contains("origin is 1"), "{d}");
    let d = one(&MARKER.replace("lun=01000000", "lun=02000000"), EVENTS);
    assert!(
        d.contains("target0 lun is 02000000, but LUN 1 as sysfs prints it is 01000000"),
        "{d}"
    );
    let d = one(&MARKER.replace("port=3260", "port=3261"), EVENTS);
    assert!(d.contains("target0 port is 3261"), "{d}");
    let d = one(
        &MARKER.replace(
            "name=iqn.2026-11.lab:node01-root",
            "name=iqn.2026-11.lab:other",
        ),
        EVENTS,
    );
    assert!(d.contains("target0 name is iqn.2026-11.lab:other"), "{d}");
    let d = one(&MARKER.replace("nic=0", "nic=1"), EVENTS);
    assert!(d.contains("target0 nic is 1"), "{d}");
    let d = one(
        &MARKER.replace(
            "initiator=iqn.2026-11.lab:node01 flags=3",
            "initiator=iqn.2026-11.lab:node01 flags=1",
        ),
        EVENTS,
    );
    assert!(d.contains("initiator flags are 1"), "{d}");
    // The iBFT NIC's interface lost its address (a bridge took it, say).
    let d = one(
        &MARKER.replace("addr=10.77.0.163/24 pci", "addr=none pci"),
        EVENTS,
    );
    assert!(
        d.contains("interface eth0 (the iBFT NIC) has addresses none"),
        "{d}"
    );
}

#[test]
fn logins_with_another_iqn_or_nic_are_named() {
    let s = scenario();
    // The booted system's login (the last one) under another name, from another NIC.
    let mut ev: Vec<&str> = EVENTS.lines().collect();
    let last = ev
        .iter()
        .rposition(|l| l.contains("\"kind\":\"iscsi_login\""))
        .unwrap();
    let changed = ev[last]
        .replace(
            "\"initiator\":\"iqn.2026-11.lab:node01\"",
            "\"initiator\":\"iqn.2026-11.lab:stranger\"",
        )
        .replace(
            "\"source_mac\":\"52:54:00:aa:00:01\"",
            "\"source_mac\":\"52:54:00:bb:00:01\"",
        );
    ev[last] = &changed;
    let c = ibft_of(MARKER, &ev.join("\n"), &s);
    assert_eq!(c.differences.len(), 2, "{:?}", c.differences);
    assert!(
        c.differences[0].contains("used iqn.2026-11.lab:stranger"),
        "{:?}",
        c.differences
    );
    assert!(
        c.differences[1].contains("from MAC 52:54:00:bb:00:01"),
        "{:?}",
        c.differences
    );
    // A discovery session is not one of the boot's logins.
    let disc = EVENTS.replace(
        "\"session_type\":\"Normal\"",
        "\"session_type\":\"Discovery\"",
    );
    let c = ibft_of(MARKER, &disc, &s);
    assert!(
        c.differences
            .iter()
            .any(|d| d.contains("no accepted login from 10.77.0.163")),
        "{:?}",
        c.differences
    );
}

#[test]
fn no_ibft_and_a_local_root_are_failures() {
    let s = scenario();
    let c = ibft_of("[ 1.0] netboot-harness: ibft none\n", EVENTS, &s);
    assert!(c.differences[0].contains("no iBFT"), "{:?}", c.differences);
    let lab = Lab {
        scenario: &s,
        node: &s.nodes[0],
    };
    let local = lines("[ 2.0] netboot-harness: root-disk dev=vda transport=none device=/sys/devices/pci0000:00/0000:00:05.0/virtio2\n");
    let r = root_on_session(&Report::parse(&local), &lab, "node01");
    assert!(
        r.differences[0].contains("not on an iSCSI session"),
        "{:?}",
        r.differences
    );
    let other = MARKER.replace(
        "root-disk dev=sda transport=iscsi lun=1 session=session1 target=iqn.2026-11.lab:node01-root",
        "root-disk dev=sda transport=iscsi lun=1 session=session1 target=iqn.2026-11.lab:node02-root",
    );
    let r = root_on_session(&Report::parse(&lines(&other)), &lab, "node01");
    assert!(
        r.differences[0].contains("target is iqn.2026-11.lab:node02-root"),
        "{:?}",
        r.differences
    );
}

#[test]
fn luns_as_sysfs_prints_them() {
    assert_eq!(sysfs_lun(1), "01000000");
    assert_eq!(sysfs_lun(0), "00000000");
    assert_eq!(sysfs_lun(17), "011000000");
}

#[test]
fn with_two_portals_each_ibft_target_must_be_a_portal_the_firmware_logged_in_through() {
    let mut s = scenario();
    s.iscsi.second_portal = Some(crate::scenario::SecondPortal {
        address: "10.77.0.2".parse().unwrap(),
        start_after: None,
        down: Vec::new(),
    });
    let on = |portal: &str| {
        EVENTS.replace(
            "\"session_type\":\"Normal\"",
            &format!("\"session_type\":\"Normal\",\"portal\":\"{portal}\""),
        )
    };
    // iPXE logged in through the first portal, and the table names it.
    let c = ibft_of(MARKER, &on("first"), &s);
    assert!(c.differences.is_empty(), "{:?}", c.differences);
    // Only through the second, while the table names the first: a path that never worked.
    let c = ibft_of(MARKER, &on("second"), &s);
    assert_eq!(
        c.differences,
        ["target0 ip is 10.77.0.1, but no accepted login from 10.77.0.163 came in on that portal (logins came in on: 10.77.0.2)"]
    );
    let c = ibft_of(
        &MARKER.replace("ip=10.77.0.1 port=3260", "ip=10.77.0.2 port=3260"),
        &on("second"),
        &s,
    );
    assert!(c.differences.is_empty(), "{:?}", c.differences);
    // Records that do not say which portal name none.
    let c = ibft_of(MARKER, EVENTS, &s);
    assert!(
        c.differences
            .iter()
            .any(|d| d.contains("(logins came in on: none)")),
        "{:?}",
        c.differences
    );
    // The root's session may be through either portal of the lab, and no other.
    let lab = Lab {
        scenario: &s,
        node: &s.nodes[0],
    };
    let root = |marker: &str| root_on_session(&Report::parse(&lines(marker)), &lab, "node01");
    let via_second = MARKER.replace("portal=10.77.0.1:3260", "portal=10.77.0.2:3260");
    assert!(root(&via_second).differences.is_empty());
    let elsewhere = MARKER.replace("portal=10.77.0.1:3260", "portal=10.77.0.9:3260");
    assert_eq!(
        root(&elsewhere).differences,
        ["root-disk portal is 10.77.0.9:3260, not the lab's portal (10.77.0.1:3260 or 10.77.0.2:3260)"]
    );
}
