//! Unit tests of `services`.

use super::*;
use std::time::Instant;

#[test]
fn a_missing_binary_names_its_debian_package() {
    let e = find_binary("dhcp", "nbh-no-such-binary", "nbh-some-package").unwrap_err();
    assert!(matches!(e, ServiceError::MissingBinary { .. }));
    assert!(e.to_string().contains("nbh-no-such-binary"), "{e}");
    let help = miette::Diagnostic::help(&e).map(|h| h.to_string());
    assert_eq!(
        help.as_deref(),
        Some("install the Debian package nbh-some-package: apt-get install nbh-some-package")
    );
}

#[test]
fn command_lines_quote_what_needs_it() {
    let c = command_line(
        Path::new("/usr/sbin/dnsmasq"),
        &["--pid-file=".into(), "a b".into(), "it's".into(), "".into()],
    );
    assert_eq!(c, r"/usr/sbin/dnsmasq --pid-file= 'a b' 'it'\''s' ''");
}

const INNER_ENV: &str = "NBH_SERVICES_TEST_HOST_NETNS";
const BRIDGE: &str = "nbt0";

/// All three services for real, in a throwaway network + mount + PID namespace made by
/// `unshare`: the test binary runs itself again inside it. Where it cannot (not root, a tool
/// missing, no namespaces) the suite's rule decides (`tests/support/boots.rs`): a failure
/// with the reason, or `ignored: ...` under `NETBOOT_HARNESS_SKIP_BOOTS=1`. Nothing it
/// starts can outlive the namespace.
#[test]
fn all_services_in_a_throwaway_namespace() {
    match std::env::var(INNER_ENV) {
        Ok(host) => inside_namespace(&host),
        Err(_) => outside_namespace(),
    }
}

const NS_ARGS: [&str; 6] = [
    "--net",
    "--mount",
    "--pid",
    "--fork",
    "--kill-child",
    "--mount-proc",
];

/// Why this machine cannot run the services in a namespace of their own, if it cannot.
fn namespace_blocker() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("creating network namespaces needs root".into());
    }
    for tool in ["unshare", "ip", "dnsmasq", "tgtd", "tgtadm"] {
        if crate::support::tools::find(tool).is_none() {
            return Some(format!("`{tool}` is not installed (ci/setup installs it)"));
        }
    }
    let probe = std::process::Command::new("unshare")
        .args(NS_ARGS)
        .arg("true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    (!probe.is_ok_and(|s| s.success()))
        .then(|| "this machine does not allow new namespaces".to_string())
}

fn outside_namespace() {
    let test = "services::tests::all_services_in_a_throwaway_namespace";
    if !crate::test_boots::require(test, namespace_blocker()) {
        return;
    }
    let host = crate::lab::netns_inode().expect("own network namespace");
    let exe = std::env::current_exe().unwrap();
    let full = concat!(module_path!(), "::all_services_in_a_throwaway_namespace");
    let name = full.split_once("::").map_or(full, |(_, rest)| rest);
    let mut child = std::process::Command::new("unshare")
        .args(NS_ARGS)
        .arg(&exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(INNER_ENV, host.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            // Killing unshare ends the namespace and everything in it.
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Shown with --nocapture: timings and the real tgtadm output of the run.
    eprintln!("{text}");
    assert!(out.status.success(), "inside the namespace:\n{text}");
    assert!(
        text.contains("1 passed"),
        "the inner test did not run:\n{text}"
    );
}

fn ip(args: &[&str]) {
    let st = std::process::Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "ip {args:?}");
}

fn inside_namespace(host: &str) {
    // Refuse to build anything unless this is a namespace of our own with nothing but lo.
    let ours = crate::lab::netns_inode().expect("own network namespace");
    assert_ne!(host, ours.to_string(), "not in a private network namespace");
    let links = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout).into_owned();
    assert_eq!(links.lines().count(), 1, "expected only lo: {links}");
    use nix::mount::{mount, MsFlags};
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .unwrap();
    // tgtd's control socket and lock file land here, not in the host's /run.
    mount(
        Some("tmpfs"),
        "/run",
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    ip(&["link", "set", "lo", "up"]);
    ip(&["link", "add", BRIDGE, "type", "bridge"]);
    ip(&["addr", "add", "10.77.0.1/24", "dev", BRIDGE]);
    ip(&["link", "set", BRIDGE, "up"]);

    let tmp = tempfile::Builder::new()
        .prefix("nbh-services-ns-")
        .tempdir()
        .unwrap();
    let run_dir = tmp.path();
    eprintln!("run directory: {}", run_dir.display());
    let disk = run_dir.join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(exercise(run_dir, &disk));
    assert_eq!(
        processes_named(&["dnsmasq", "tgtd", "tgtadm"]),
        Vec::<String>::new(),
        "left running after stop"
    );
    tmp.close().unwrap();
}

async fn exercise(run_dir: &Path, disk: &Path) {
    use crate::services::events::RunClock;
    let s = crate::scenario::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/debian-ibft-e1000.yaml"),
    )
    .unwrap();
    assert_eq!(s.subnet.server(), Ipv4Addr::new(10, 77, 0, 1));
    let events =
        Arc::new(EventLog::new(RunClock::start(), Some(&run_dir.join("events.jsonl"))).unwrap());
    let t = Instant::now();
    let services = Services::start(
        &s,
        ServiceContext {
            node_disks: Default::default(),
            bridge: BRIDGE.into(),
            server_ip: s.subnet.server(),
            run_dir: run_dir.to_path_buf(),
            disk: disk.to_path_buf(),
            events: events.clone(),
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{:?}", miette::Report::new(e)));
    eprintln!("services up in {:?}", t.elapsed());

    // iSCSI: the target and LUN exist, backed by this run's disk.
    assert_lun_exported(&services, &s, disk);

    // No login proxy: tgtd holds the portal on the bridge address itself, two logins reach
    // it directly as two sessions, and nothing records them.
    let tlog = std::fs::read_to_string(run_dir.join("tgtd.log")).unwrap();
    assert!(tlog.contains("portal=10.77.0.1:3260"), "{tlog}");
    let a = login(&s, [0, 2, 0x3d, 0, 0, 1]).await;
    let b = login(&s, [0, 2, 0x3d, 0, 0, 2]).await;
    let shown = tgtadm_show(&services);
    eprintln!("tgtadm show with two sessions:\n{shown}");
    assert_eq!(shown.matches("I_T nexus:").count(), 2, "{shown}");
    assert_eq!(
        shown.matches("IP Address: 10.77.0.1\n").count(),
        2,
        "{shown}"
    );

    // HTTP on the bridge address.
    let reply = http_get(SocketAddr::from((s.subnet.server(), 80)), "/boot.ipxe").await;
    assert!(
        reply.contains(" 200 ") && reply.contains("sanboot"),
        "{reply}"
    );

    // DHCP: bound to the bridge, RA on the prefix the service gave it; no guest, no lease.
    let dlog = std::fs::read_to_string(run_dir.join("dnsmasq.log")).unwrap();
    assert!(
        dlog.contains(&format!("sockets bound exclusively to interface {BRIDGE}")),
        "{dlog}"
    );
    assert!(
        dlog.contains("router advertisement on fd77:6e62:6800::"),
        "{dlog}"
    );

    let mut artifacts = services.artifacts();
    let stopped = services.stop().await;
    drop((a, b));
    artifacts.sort();
    let mut written = stopped.clone();
    written.sort();
    assert_eq!(artifacts, written, "every artifact exists after stop");
    for name in [
        "dnsmasq.args",
        "dnsmasq.log",
        "dnsmasq.leases",
        "http.log",
        "tgtd.log",
        "tgtadm.log",
    ] {
        assert!(stopped.contains(&run_dir.join(name)), "{name}: {stopped:?}");
    }
    assert!(!run_dir.join("iscsi-logins.jsonl").exists(), "{stopped:?}");
    let adm = std::fs::read_to_string(run_dir.join("tgtadm.log")).unwrap();
    assert!(adm.contains("--op delete --mode system"), "{adm}");
    let kinds: Vec<String> = events
        .snapshot()
        .iter()
        .map(|e| serde_json::to_value(e).unwrap()["kind"].to_string())
        .collect();
    assert!(!kinds.iter().any(|k| k.contains("dhcp\"")), "{kinds:?}");
    assert!(
        !kinds.iter().any(|k| k.contains("iscsi_login")),
        "{kinds:?}"
    );

    with_login_proxy(&s, run_dir, disk).await;
    dhcp_down_window(&s, run_dir, disk).await;
    failed_start_stops_the_rest(&s, run_dir, disk).await;
}

fn context(s: &Scenario, bridge: &str, run_dir: &Path, disk: &Path) -> ServiceContext {
    ServiceContext {
        node_disks: Default::default(),
        bridge: bridge.into(),
        server_ip: s.subnet.server(),
        run_dir: run_dir.to_path_buf(),
        disk: disk.to_path_buf(),
        events: Arc::new(EventLog::new(crate::services::events::RunClock::start(), None).unwrap()),
    }
}

/// The proxy records the login, once. Another tgtd
/// (standing in for a parallel run) holds the control port tried first: this run must move
/// to another one and leave that tgtd alone.
async fn with_login_proxy(s: &Scenario, run_dir: &Path, disk: &Path) {
    const TAKEN: u16 = 4242;
    let decoy_args: Vec<String> = ["-f", "-C", "4242", "--iscsi", "portal=127.0.0.1:3261"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    let tgtd = crate::support::tools::find("tgtd").unwrap();
    let mut decoy = service_command(&tgtd, &decoy_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let decoy_pid = decoy.id().and_then(|p| i32::try_from(p).ok());
    let t = Instant::now();
    while iscsi::socket_owner(TAKEN).await.is_none() && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let cx = context(s, BRIDGE, run_dir, disk);
    let events = cx.events.clone();
    let opts = ServiceOptions {
        login_proxy: Some(LoginFaults::default()),
        tgtd_control_port: Some(TAKEN),
        ..ServiceOptions::default()
    };
    let services = Services::start_with(s, cx, opts)
        .await
        .unwrap_or_else(|e| panic!("{:?}", miette::Report::new(e)));
    assert_ne!(services.tgtd_control_port(), TAKEN);
    let tlog = std::fs::read_to_string(run_dir.join("tgtd.log")).unwrap();
    assert!(tlog.contains("another tgtd is using"), "{tlog}");
    let theirs = std::process::Command::new("tgtadm")
        .args([
            "-C", "4242", "--lld", "iscsi", "--op", "show", "--mode", "target",
        ])
        .output()
        .unwrap();
    assert!(
        theirs.status.success() && theirs.stdout.is_empty(),
        "the other tgtd got a target: {theirs:?}"
    );
    assert!(
        decoy.try_wait().unwrap().is_none(),
        "the other tgtd was touched"
    );
    assert_eq!(iscsi::socket_owner(TAKEN).await, decoy_pid);
    let c = login(s, [0, 2, 0x3d, 0, 0, 3]).await;
    wait_for_logins(&events, 1).await;

    // A restart replaces tgtd behind the proxy: the open session ends, a new login is a new
    // record, and the target is back with its LUN on the same disk and control port.
    // Watched all along, as the steps watch it: a restart is not a death.
    let t = Instant::now();
    let detail = tokio::select! {
        died = services.died() => panic!("the restart was taken for a death: {died}"),
        r = services.restart(Service::Iscsi) => r,
    }
    .unwrap_or_else(|e| panic!("{:?}", miette::Report::new(e)));
    eprintln!("restart: {detail} ({:?})", t.elapsed());
    let mut c = c;
    let mut buf = [0u8; 64];
    use tokio::io::AsyncReadExt;
    let ended = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await;
    assert!(
        matches!(ended, Ok(Ok(0)) | Ok(Err(_))),
        "the session survived the restart: {ended:?}"
    );
    let d = login(s, [0, 2, 0x3d, 0, 0, 4]).await;
    wait_for_logins(&events, 2).await;
    assert_lun_exported(&services, s, disk);
    let states = service_states(&events, "iscsi");
    assert_eq!(
        states,
        [
            "started",
            "stopped (restart step)",
            "restarted (restart step)"
        ],
        "{states:?}"
    );

    // HTTP and DHCP restart in place, appending to the logs they had.
    let count = |file: &str, text: &str| {
        std::fs::read_to_string(run_dir.join(file))
            .unwrap()
            .matches(text)
            .count()
    };
    let addr = services.http_addr();
    assert!(http_get(addr, "/boot.ipxe").await.contains(" 200 "));
    let requests = count("http.log", "/boot.ipxe");
    services
        .restart(Service::Http)
        .await
        .unwrap_or_else(|e| panic!("{:?}", miette::Report::new(e)));
    assert!(http_get(addr, "/boot.ipxe").await.contains(" 200 "));
    assert_eq!(count("http.log", "/boot.ipxe"), requests + 1);
    let bound = count("dnsmasq.log", "sockets bound exclusively");
    services
        .restart(Service::Dhcp)
        .await
        .unwrap_or_else(|e| panic!("{:?}", miette::Report::new(e)));
    assert_eq!(count("dnsmasq.log", "sockets bound exclusively"), bound + 1);
    let quiet = tokio::time::timeout(Duration::from_secs(1), services.died()).await;
    assert!(quiet.is_err(), "a death after the restarts: {quiet:?}");

    // dnsmasq killed from outside: the watcher names it and how it ended, and records it.
    for p in processes_named(&["dnsmasq"]) {
        let pid = p.split(' ').next().and_then(|p| p.parse().ok()).unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    let died = tokio::time::timeout(Duration::from_secs(5), services.died())
        .await
        .expect("the dead dnsmasq is noticed");
    assert_eq!(
        died,
        "service died: dhcp: dnsmasq killed by signal 9 (SIGKILL)"
    );
    assert!(
        events.snapshot().iter().any(|e| matches!(&e.kind,
        EventKind::Service { service, state } if service == "dhcp" && state.starts_with("died: ")))
    );
    services.stop().await;
    drop((c, d));
    // The stand-in for another run's tgtd: SIGKILL is the only signal it heeds.
    let _ = decoy.start_kill();
    let _ = decoy.wait().await;
}

/// A DHCP down window stops the real dnsmasq at its start and starts it again at its end,
/// both recorded; a stop during a later window leaves no dnsmasq behind.
async fn dhcp_down_window(s: &Scenario, run_dir: &Path, disk: &Path) {
    use crate::scenario::DownWindow;
    let mut s = s.clone();
    let cx = context(&s, BRIDGE, run_dir, disk);
    let events = cx.events.clone();
    let now = events.clock().now();
    // Relative to this context's run clock, leaving the start time to bring dnsmasq up.
    let at = |secs: f64| Duration::from_secs_f64(now + secs);
    s.dhcp.down = vec![
        DownWindow {
            at: at(1.5),
            length: Duration::from_secs(1),
        },
        DownWindow {
            at: at(4.0),
            length: Duration::from_secs(30),
        },
    ];
    let bound = || {
        std::fs::read_to_string(run_dir.join("dnsmasq.log"))
            .unwrap_or_default()
            .matches("sockets bound exclusively")
            .count()
    };
    let services = Services::start_with(&s, cx, ServiceOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{:?}", miette::Report::new(e)));
    let before = bound();
    assert_eq!(processes_named(&["dnsmasq"]).len(), 1);
    let wait_until = |t: f64| events.clock().sleep_until(t);
    wait_until(now + 2.0).await;
    assert_eq!(
        processes_named(&["dnsmasq"]),
        Vec::<String>::new(),
        "dnsmasq runs during its window"
    );
    wait_until(now + 3.5).await;
    assert_eq!(
        processes_named(&["dnsmasq"]).len(),
        1,
        "not back after the window"
    );
    assert_eq!(bound(), before + 1, "started again on the bridge");
    // Stopped for good in the middle of the second window: nothing starts behind the stop.
    wait_until(now + 4.5).await;
    services.stop().await;
    let states = service_states(&events, "dhcp");
    assert_eq!(states.len(), 5, "{states:?}");
    assert_eq!(states[0], "started");
    assert!(states[1].contains("(down window)"), "{states:?}");
    assert_eq!(states[2], "started");
    assert!(states[3].contains("(down window)"), "{states:?}");
    assert_eq!(states[4], "stopped");
    assert_eq!(processes_named(&["dnsmasq"]), Vec::<String>::new());
}

/// A service that cannot start ends the start with its log quoted, and stops the ones
/// already running.
async fn failed_start_stops_the_rest(s: &Scenario, run_dir: &Path, disk: &Path) {
    let cx = context(s, "nbt-missing", run_dir, disk);
    let e = match Services::start(s, cx).await {
        Ok(_) => panic!("dnsmasq started on a bridge that does not exist"),
        Err(e) => e,
    };
    let text = e.to_string();
    eprintln!("expected failure: {text}");
    assert!(
        matches!(
            e,
            ServiceError::Exited {
                service: "dhcp",
                ..
            }
        ),
        "{text}"
    );
    assert!(text.contains("--interface=nbt-missing"), "{text}");
    assert!(text.contains("nbt-missing"), "{text}");
    assert_eq!(
        processes_named(&["dnsmasq", "tgtd", "tgtadm"]),
        Vec::<String>::new(),
        "left running after a failed start"
    );
}

/// Logs in to the target like an initiator would, in one step from operational
/// negotiation to full feature phase; keeps the connection open.
async fn login(s: &Scenario, isid: [u8; 6]) -> tokio::net::TcpStream {
    use crate::support::iscsi_pdu::{self, LoginPdu};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut keys = std::collections::BTreeMap::new();
    keys.insert("InitiatorName".into(), "iqn.2026-11.lab:servicetest".into());
    keys.insert("TargetName".into(), s.iscsi.target.as_str().into());
    keys.insert("SessionType".into(), "Normal".into());
    keys.insert("HeaderDigest".into(), "None".into());
    keys.insert("DataDigest".into(), "None".into());
    let req = iscsi_pdu::build_login(&LoginPdu {
        opcode: iscsi_pdu::OP_LOGIN_REQUEST,
        transit: true,
        current_stage: 1,
        next_stage: 3,
        isid,
        tsih: 0,
        itt: 1,
        status_class: 0,
        status_detail: 0,
        keys,
    });
    let mut c = tokio::net::TcpStream::connect(SocketAddr::from((s.subnet.server(), 3260)))
        .await
        .unwrap();
    c.write_all(&req).await.unwrap();
    let mut buf = vec![0u8; iscsi_pdu::BHS_LEN];
    c.read_exact(&mut buf).await.unwrap();
    let len = iscsi_pdu::pdu_len(&buf).unwrap();
    buf.resize(len, 0);
    c.read_exact(&mut buf[iscsi_pdu::BHS_LEN..]).await.unwrap();
    let resp = iscsi_pdu::parse_login(&buf).unwrap();
    assert!(resp.completes_login(), "{resp:?}");
    c
}

/// What tgtd, asked on its own control port, says of its targets.
fn tgtadm_show(services: &Services) -> String {
    let port = services.tgtd_control_port().to_string();
    let shown = std::process::Command::new("tgtadm")
        .args([
            "-C", &port, "--lld", "iscsi", "--op", "show", "--mode", "target",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&shown.stdout).into_owned()
}

/// tgtd lists the scenario's target and LUN backed by `disk`.
fn assert_lun_exported(services: &Services, s: &Scenario, disk: &Path) {
    let shown = tgtadm_show(services);
    assert!(
        iscsi::has_lun(&shown, s.iscsi.target.as_str(), s.iscsi.lun, disk),
        "{shown}"
    );
}

/// The states one service's records went through, in order.
fn service_states(events: &EventLog, name: &str) -> Vec<String> {
    events
        .snapshot()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Service { service, state } if service == name => Some(state),
            _ => None,
        })
        .collect()
}

async fn wait_for_logins(events: &EventLog, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let logins: Vec<_> = events
            .snapshot()
            .into_iter()
            .filter(|e| matches!(e.kind, EventKind::IscsiLogin { .. }))
            .collect();
        if logins.len() >= n {
            assert_eq!(logins.len(), n, "{logins:?}");
            assert!(matches!(
                &logins[n - 1].kind,
                EventKind::IscsiLogin { initiator, target, source_ip, .. }
                    if initiator == "iqn.2026-11.lab:servicetest"
                        && target == "iqn.2026-11.lab:node01-root"
                        && *source_ip == std::net::IpAddr::from(Ipv4Addr::new(10, 77, 0, 1))
            ));
            return;
        }
        assert!(
            Instant::now() < deadline,
            "login {n} not recorded: {logins:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Processes in this PID namespace (its own /proc) with one of these names.
fn processes_named(names: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if names.contains(&comm.trim()) {
            out.push(format!(
                "{} {}",
                e.file_name().to_string_lossy(),
                comm.trim()
            ));
        }
    }
    out
}
