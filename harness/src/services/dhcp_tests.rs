//! Unit tests of `dhcp`.

use super::*;

fn scenario() -> Scenario {
    crate::scenario::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/debian-ibft-e1000.yaml"),
    )
    .expect("the default scenario loads")
}

/// Recorded from dnsmasq 2.90 serving a real iPXE (e1000 option ROM) in a throwaway
/// namespace, two boots in a row.
const RECORDED: &str = "\
dnsmasq[11]: started, version 2.90 DNS disabled
dnsmasq[11]: compile time options: IPv6 GNU-getopt DBus no-UBus i18n IDN2 DHCP DHCPv6 no-Lua TFTP conntrack ipset nftset auth cryptohash DNSSEC loop-detect inotify dumpfile
dnsmasq-dhcp[11]: DHCP, IP range 10.77.0.128 -- 10.77.0.254, lease time 1h
dnsmasq-dhcp[11]: router advertisement on nbr0
dnsmasq-dhcp[11]: router advertisement on fd77:6e62:6800::, constructed for nbr0
dnsmasq-dhcp[11]: IPv6 router advertisement enabled
dnsmasq-dhcp[11]: DHCP, sockets bound exclusively to interface nbr0
dnsmasq-dhcp[11]: RTR-ADVERT(nbr0) fd77:6e62:6800::
dnsmasq-dhcp[11]: 2708813915 available DHCP range: 10.77.0.128 -- 10.77.0.254
dnsmasq-dhcp[11]: 2708813915 vendor class: PXEClient:Arch:00000:UNDI:002001
dnsmasq-dhcp[11]: 2708813915 user class: iPXE
dnsmasq-dhcp[11]: RTR-SOLICIT(nbr0) 52:54:00:aa:00:01
dnsmasq-dhcp[11]: RTR-ADVERT(nbr0) fd77:6e62:6800::
dnsmasq-dhcp[11]: 2708813915 DHCPDISCOVER(nbr0) 52:54:00:aa:00:01 
dnsmasq-dhcp[11]: 2708813915 tags: known, ipxe, nbr0
dnsmasq-dhcp[11]: 2708813915 DHCPOFFER(nbr0) 10.77.0.163 52:54:00:aa:00:01 
dnsmasq-dhcp[11]: 2708813915 requested options: 1:netmask, 3:router, 6:dns-server, 7:log-server, 
dnsmasq-dhcp[11]: 2708813915 requested options: 128, 129, 130, 131, 132, 133, 134, 135, 175, 
dnsmasq-dhcp[11]: 2708813915 next server: 10.77.0.1
dnsmasq-dhcp[11]: 2708813915 sent size:  1 option: 53 message-type  2
dnsmasq-dhcp[11]: 2708813915 sent size: 27 option: 67 bootfile-name  http://10.77.0.1/boot.ipxe
dnsmasq-dhcp[11]: 2708813915 sent size:  6 option: 12 hostname  node01
dnsmasq-dhcp[11]: 2708813915 DHCPREQUEST(nbr0) 10.77.0.163 52:54:00:aa:00:01 
dnsmasq-dhcp[11]: 2708813915 tags: known, ipxe, nbr0
dnsmasq-dhcp[11]: 2708813915 DHCPACK(nbr0) 10.77.0.163 52:54:00:aa:00:01 node01
dnsmasq[11]: exiting on receipt of SIGTERM
";

#[test]
fn parses_recorded_dnsmasq_lines() {
    let got: Vec<DhcpLine> = RECORDED.lines().filter_map(parse_line).collect();
    let kinds: Vec<&str> = got.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(
        kinds,
        ["DHCPDISCOVER", "DHCPOFFER", "DHCPREQUEST", "DHCPACK"],
        "{got:#?}"
    );
    for d in &got {
        assert_eq!(d.mac, "52:54:00:aa:00:01");
        assert_eq!(d.interface, "nbr0");
        assert_eq!(d.detail, None);
    }
    assert_eq!(got[0].ip, None);
    assert_eq!(got[1].ip, Some(Ipv4Addr::new(10, 77, 0, 163)));
    assert_eq!(got[1].hostname, None, "the offer line ends in a bare space");
    assert_eq!(got[3].hostname.as_deref(), Some("node01"));
    assert_eq!(got[3].ip, Some(Ipv4Addr::new(10, 77, 0, 163)));
}

#[test]
fn reasons_are_not_hostnames() {
    let nak =
        parse_line("dnsmasq-dhcp[7]: 42 DHCPNAK(nbr0) 10.77.0.9 52:54:00:AA:00:02 wrong network")
            .unwrap();
    assert_eq!(nak.message, "DHCPNAK");
    assert_eq!(nak.mac, "52:54:00:aa:00:02");
    assert_eq!(nak.hostname, None);
    assert_eq!(nak.detail.as_deref(), Some("wrong network"));
    let full =
        parse_line("dnsmasq-dhcp[7]: 43 DHCPDISCOVER(nbr0) 52:54:00:aa:00:03 no address available")
            .unwrap();
    assert_eq!(full.hostname, None);
    assert_eq!(full.detail.as_deref(), Some("no address available"));
}

#[test]
fn other_lines_are_not_dhcp_messages() {
    for l in [
        "dnsmasq-dhcp[11]: DHCP, IP range 10.77.0.128 -- 10.77.0.254, lease time 1h",
        "dnsmasq-dhcp[11]: RTR-SOLICIT(nbr0) 52:54:00:aa:00:01",
        "dnsmasq-dhcp[11]: 2708813915 tags: known, ipxe, nbr0",
        "dnsmasq-dhcp[11]: 2708813915 sent size:  6 option: 12 hostname  node01",
        "dnsmasq-dhcp[11]: DHCP, sockets bound exclusively to interface nbr0",
        "",
    ] {
        assert_eq!(parse_line(l), None, "{l}");
    }
}

#[test]
fn ready_line_names_the_bridge() {
    let l = "dnsmasq-dhcp[11]: DHCP, sockets bound exclusively to interface nbr0";
    let range = "dnsmasq-dhcp[11]: DHCP, IP range 10.77.0.128 -- 10.77.0.254, lease time 1h";
    let one = ReadyLine::Exclusive("nbr0".into());
    assert!(one.matches(l));
    assert!(!ReadyLine::Exclusive("nbr1".into()).matches(l));
    assert!(!one.matches(range));
    // Recorded from dnsmasq 2.90 on two bridges: no "exclusively" line, one range each.
    let two = ReadyLine::BootRange(Ipv4Addr::new(10, 77, 0, 128));
    assert!(two.matches(range));
    assert!(
        !two.matches("dnsmasq-dhcp[43]: DHCP, IP range 10.78.0.128 -- 10.78.0.254, lease time 1h")
    );
}

#[test]
fn finds_a_global_ipv6_address() {
    // Recorded /proc/net/if_inet6 lines: a ULA and a link-local on the bridge.
    let t = "\
fd776e62680000000000000000000001 05 40 00 80     nbr0
fe80000000000000a8bbccfffedd0001 05 40 20 80     nbr0
00000000000000000000000000000001 01 80 10 80       lo
";
    assert!(has_global_ipv6(t, "nbr0"));
    assert!(!has_global_ipv6(t, "lo"));
    let link_only = "fe80000000000000a8bbccfffedd0001 05 40 20 80     nbr0\n";
    assert!(!has_global_ipv6(link_only, "nbr0"));
    assert!(!has_global_ipv6("", "nbr0"));
}

#[test]
fn args_bind_only_the_bridge_and_ignore_host_config() {
    let s = scenario();
    let a = args(&s, "nbr0", Path::new("/r/dnsmasq.leases"), true, None);
    for want in [
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--pid-file=",
        "--port=0",
        "--interface=nbr0",
        "--bind-interfaces",
        "--except-interface=lo",
        "--log-facility=-",
        "--log-dhcp",
        "--dhcp-leasefile=/r/dnsmasq.leases",
        "--dhcp-range=set:boot,10.77.0.128,10.77.0.254,255.255.255.0,1h",
        "--dhcp-host=52:54:00:aa:00:01,node01",
        "--dhcp-userclass=set:ipxe,iPXE",
        "--dhcp-boot=tag:ipxe,tag:boot,http://10.77.0.1/boot.ipxe",
        "--no-ping",
        "--dhcp-option=tag:ipxe,encap:175,176,1b",
        "--enable-ra",
        "--dhcp-range=::,constructor:nbr0,ra-only",
    ] {
        assert!(a.iter().any(|x| x == want), "{want} missing: {a:?}");
    }
    // Nothing that would listen elsewhere or read other configuration.
    assert!(!a.iter().any(|x| x.starts_with("--listen-address")
        || x.starts_with("--conf-dir")
        || x.starts_with("--addn-hosts")));
    let no_ra = args(&s, "nbr0", Path::new("/x"), false, None);
    assert!(!no_ra
        .iter()
        .any(|x| x == "--enable-ra" || x.contains("ra-only")));
}

#[test]
fn chain_args_serve_tftp_on_the_bridge_and_tag_the_chain_node() {
    let s = crate::scenario::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/chain-undionly.yaml"),
    )
    .expect("the chain-undionly scenario loads");
    let marks = ChainMarks::for_scenario(&s, Path::new("/r")).expect("a chain node");
    let chain = ChainArgs {
        tftp_root: Path::new("/r/tftp"),
        marks: Some(&marks),
    };
    let a = args(
        &s,
        "nbr0",
        Path::new("/r/dnsmasq.leases"),
        true,
        Some(chain),
    );
    for want in [
        "--interface=nbr0",
        "--bind-interfaces",
        "--enable-tftp=nbr0",
        "--tftp-root=/r/tftp",
        "--tftp-secure",
        "--dhcp-vendorclass=set:pxe,PXEClient",
        "--dhcp-mac=set:chain,52:54:00:aa:00:41",
        "--dhcp-mac=set:chain1,52:54:00:aa:00:41",
        "--dhcp-optsfile=/r/dnsmasq-chain-opts",
        "--dhcp-userclass=set:ipxe,iPXE",
        "--dhcp-boot=tag:ipxe,tag:boot,tag:!chain,http://10.77.0.1/boot.ipxe",
    ] {
        assert!(a.iter().any(|x| x == want), "{want} missing: {a:?}");
    }
    // The plain rule would hand the URL to the ROM stage; the hosts file crashed dnsmasq.
    assert!(!a.iter().any(
        |x| x == "--dhcp-boot=tag:ipxe,tag:boot,http://10.77.0.1/boot.ipxe"
            || x.starts_with("--dhcp-hostsfile")
    ));
    // Without a chain node there is no TFTP at all.
    let plain = args(&scenario(), "nbr0", Path::new("/x"), true, None);
    assert!(!plain
        .iter()
        .any(|x| x.contains("tftp") || x.starts_with("--dhcp-optsfile")));
}

#[test]
fn a_fleets_server_answers_known_macs_and_reads_added_hosts() {
    let lease = Path::new("/run/x/dnsmasq.leases");
    // The default: anyone gets an address, and no hosts file is read.
    let plain = args(&scenario(), "nbr0", lease, false, None);
    assert!(
        !plain.iter().any(|a| a.starts_with("--dhcp-ignore")),
        "{plain:?}"
    );
    assert!(
        !plain.iter().any(|a| a.starts_with("--dhcp-hostsfile")),
        "{plain:?}"
    );
    let s = crate::scenario::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/fleet-add-a-node.yaml"),
    )
    .expect("the fleet scenario loads");
    let a = args(&s, "nbr0", lease, false, None);
    assert!(a.contains(&"--dhcp-ignore=tag:!known".to_string()), "{a:?}");
    assert!(
        a.contains(&"--dhcp-hostsfile=/run/x/dnsmasq.hosts-added".to_string()),
        "{a:?}"
    );
    // node01 is known from the start; node02 only once a step adds it.
    assert!(
        a.contains(&"--dhcp-host=52:54:00:aa:01:21,10.77.0.121,node01".to_string()),
        "{a:?}"
    );
    assert!(!a.iter().any(|x| x.contains("52:54:00:aa:01:22")), "{a:?}");
}

#[test]
fn snponly_nodes_get_snponly_efi_by_uefi_architecture_and_the_url_only_as_ipxe() {
    let s = crate::scenario::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/uefi-snponly-chain.yaml"),
    )
    .expect("the uefi-snponly-chain scenario loads");
    assert!(ChainMarks::for_scenario(&s, Path::new("/r")).is_none());
    let chain = ChainArgs {
        tftp_root: Path::new("/r/tftp"),
        marks: None,
    };
    let a = args(&s, "nbr0", Path::new("/r/l"), true, Some(chain));
    for want in [
        "--enable-tftp=nbr0",
        "--tftp-root=/r/tftp",
        "--tftp-secure",
        "--dhcp-match=set:efi64,option:client-arch,7",
        "--dhcp-match=set:efi64,option:client-arch,9",
        "--dhcp-boot=tag:efi64,tag:!ipxe,tag:boot,snponly.efi",
        "--dhcp-boot=tag:ipxe,tag:boot,http://10.77.0.1/boot.ipxe",
    ] {
        assert!(a.iter().any(|x| x == want), "{want} missing: {a:?}");
    }
    // No undionly marks: those are for chain-undionly nodes only.
    assert!(!a.iter().any(|x| x.starts_with("--dhcp-optsfile")), "{a:?}");
}

#[test]
fn without_ipxe_fast_dhcp_dnsmasq_pings_and_sends_no_no_pxedhcp() {
    let fast = args(&scenario(), "nbr0", Path::new("/x"), true, None);
    assert!(fast.iter().any(|x| x == "--no-ping"), "{fast:?}");
    assert!(fast
        .iter()
        .any(|x| x == "--dhcp-option=tag:ipxe,encap:175,176,1b"));
    let mut s = scenario();
    s.dhcp.ipxe_fast_dhcp = false;
    let packaged = args(&s, "nbr0", Path::new("/x"), true, None);
    assert!(
        !packaged
            .iter()
            .any(|x| x == "--no-ping" || x.contains("encap:175")),
        "{packaged:?}"
    );
}
