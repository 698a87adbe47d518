//! Unit tests of `iscsi_proxy`.

use super::*;

#[test]
fn the_neighbour_table_names_the_initiator_mac() {
    // Recorded from a lab namespace during a two-NIC boot.
    let arp = "\
IP address       HW type     Flags       HW address            Mask     Device
10.77.0.196      0x1         0x2         52:54:00:BB:00:42     *        nbr0
10.77.0.42       0x1         0x2         52:54:00:aa:00:42     *        nbr0
10.77.0.9        0x1         0x0         00:00:00:00:00:00     *        nbr0
";
    let mac = |ip: &str| neighbour_mac(arp, ip.parse().unwrap());
    assert_eq!(mac("10.77.0.42").as_deref(), Some("52:54:00:aa:00:42"));
    assert_eq!(mac("10.77.0.196").as_deref(), Some("52:54:00:bb:00:42"));
    assert_eq!(mac("10.77.0.9"), None, "incomplete entry");
    assert_eq!(mac("10.77.0.7"), None);
    assert_eq!(neighbour_mac("", "10.77.0.42".parse().unwrap()), None);
}
use crate::services::events::RunClock;
use std::collections::BTreeMap;

/// A SCSI Command PDU carrying ten bytes of data (padded to twelve): full-feature traffic.
fn scsi_pdu() -> Vec<u8> {
    let mut p = vec![0u8; BHS_LEN];
    p[0] = 0x01;
    p[1] = 0x80;
    p[7] = 10;
    p.extend_from_slice(b"scsi bytes\0\0");
    p
}

/// A Logout Request with reason `close the session`.
fn logout_pdu() -> Vec<u8> {
    let mut p = vec![0u8; BHS_LEN];
    p[0] = iscsi_pdu::OP_LOGOUT_REQUEST | 0x40;
    p[1] = 0x80;
    p
}

/// Sends `scsi_pdu` and reads its echo.
async fn round_trip(c: &mut TcpStream) {
    let sent = scsi_pdu();
    c.write_all(&sent).await.unwrap();
    let mut back = vec![0u8; sent.len()];
    c.read_exact(&mut back).await.unwrap();
    assert_eq!(back, sent);
}

fn login_request(initiator: &str) -> Vec<u8> {
    let mut keys = BTreeMap::new();
    keys.insert("InitiatorName".to_string(), initiator.to_string());
    keys.insert(
        "TargetName".to_string(),
        "iqn.2026-11.lab:node01-root".to_string(),
    );
    iscsi_pdu::build_login(&LoginPdu {
        opcode: iscsi_pdu::OP_LOGIN_REQUEST,
        transit: true,
        current_stage: 1,
        next_stage: 3,
        isid: [0, 2, 0x3d, 0, 0, 1],
        tsih: 0,
        itt: 9,
        status_class: 0,
        status_detail: 0,
        keys,
    })
}

/// Stands in for tgtd: accepts every login, then echoes each PDU, so the test can see that
/// traffic after the login is passed through untouched; a Logout Request gets its Logout
/// Response, and the connection ends when the initiator closes it.
async fn upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(Some(req)) = read_pdu(&mut s).await else {
                    return;
                };
                let req = iscsi_pdu::parse_login(&req).unwrap();
                let resp = LoginPdu {
                    opcode: OP_LOGIN_RESPONSE,
                    transit: true,
                    current_stage: 1,
                    next_stage: 3,
                    tsih: 1,
                    keys: BTreeMap::new(),
                    ..req
                };
                s.write_all(&iscsi_pdu::build_login(&resp)).await.unwrap();
                while let Ok(Some(mut pdu)) = read_pdu(&mut s).await {
                    if iscsi_pdu::opcode(&pdu) == Some(iscsi_pdu::OP_LOGOUT_REQUEST) {
                        pdu[0] = iscsi_pdu::OP_LOGOUT_RESPONSE;
                        pdu[2] = 0;
                    }
                    if s.write_all(&pdu).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn sink(file: &std::path::Path) -> crate::services::iscsi_proxy::RecordSink {
    std::sync::Arc::new(std::sync::Mutex::new(std::fs::File::create(file).unwrap()))
}

async fn proxy(faults: LoginFaults, name: &str) -> (IscsiProxy, Arc<EventLog>, tempfile::TempPath) {
    let up = upstream().await;
    let events = Arc::new(EventLog::new(RunClock::start(), None).unwrap());
    let file = records_file(&format!("nbh-proxy-{name}-"));
    let p = IscsiProxy::start(
        "127.0.0.1:0".parse().unwrap(),
        up,
        faults,
        events.clone(),
        sink(&file),
        None,
    )
    .await
    .unwrap();
    (p, events, file)
}

/// A file for the proxy's records, removed when dropped, also when a test panics.
fn records_file(prefix: &str) -> tempfile::TempPath {
    tempfile::Builder::new()
        .prefix(prefix)
        .suffix(".jsonl")
        .tempfile()
        .unwrap()
        .into_temp_path()
}

fn failed_logins(events: &EventLog) -> usize {
    events
        .snapshot()
        .iter()
        .filter(|e| matches!(e.kind, EventKind::IscsiLoginFailed { .. }))
        .count()
}

async fn login(addr: SocketAddr, initiator: &str) -> (TcpStream, LoginPdu) {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(&login_request(initiator)).await.unwrap();
    let resp = read_pdu(&mut c).await.unwrap().unwrap();
    (c, iscsi_pdu::parse_login(&resp).unwrap())
}

#[tokio::test]
async fn records_a_login_and_passes_traffic_through() {
    let (p, events, file) = proxy(LoginFaults::default(), "pass").await;
    let (mut c, resp) = login(p.listen, "iqn.2026-11.lab:node01").await;
    assert!(resp.completes_login());
    round_trip(&mut c).await;
    let recs = p.records();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].initiator, "iqn.2026-11.lab:node01");
    assert_eq!(recs[0].target, "iqn.2026-11.lab:node01-root");
    assert_eq!(recs[0].result, "accepted");
    assert_eq!(recs[0].source.ip().to_string(), "127.0.0.1");
    assert!(matches!(
        events.snapshot()[0].kind,
        EventKind::IscsiLogin { .. }
    ));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("\"accepted\""), "{text}");
    p.stop();
}

#[tokio::test]
async fn refuses_the_first_logins_then_lets_them_in() {
    let faults = LoginFaults {
        refuse_first: 2,
        ..Default::default()
    };
    let (p, events, _file) = proxy(faults, "refuse").await;
    for _ in 0..2 {
        let (_c, resp) = login(p.listen, "iqn.2026-11.lab:node01").await;
        assert_eq!((resp.status_class, resp.status_detail), (3, 1));
    }
    let (_c, resp) = login(p.listen, "iqn.2026-11.lab:node01").await;
    assert!(resp.completes_login());
    let results: Vec<String> = p.records().into_iter().map(|r| r.result).collect();
    assert!(results[0].starts_with("refused"), "{results:?}");
    assert!(results[1].starts_with("refused"), "{results:?}");
    assert_eq!(results[2], "accepted");
    assert_eq!(failed_logins(&events), 2);
    p.stop();
}

#[tokio::test]
async fn refuses_logins_until_a_time_then_counts_the_first_n_from_there() {
    let faults = LoginFaults {
        refuse_until: Some(0.6),
        refuse_first: 1,
        ..Default::default()
    };
    let (p, events, file) = proxy(faults, "until").await;
    let (_c, resp) = login(p.listen, "iqn.2026-11.lab:node01").await;
    assert_eq!((resp.status_class, resp.status_detail), (3, 1));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (_c, resp) = login(p.listen, "iqn.2026-11.lab:node01").await;
    assert_eq!((resp.status_class, resp.status_detail), (3, 1));
    let (_c, resp) = login(p.listen, "iqn.2026-11.lab:node01").await;
    assert!(resp.completes_login());
    let recs = p.records();
    let results: Vec<&str> = recs.iter().map(|r| r.result.as_str()).collect();
    assert_eq!(
        results,
        [
            "refused: fault plan refuses logins until 1s",
            "refused: fault plan refuses the first 1 logins",
            "accepted"
        ]
    );
    assert!(recs[0].at < 0.6 && recs[1].at >= 0.6, "{recs:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("refuses logins until 1s"), "{text}");
    assert_eq!(failed_logins(&events), 2);
    p.stop();
}

#[tokio::test]
async fn a_down_window_resets_new_connections_and_spares_open_sessions() {
    let faults = LoginFaults {
        downtime: crate::services::outage::Downtime {
            start_at: None,
            windows: vec![(0.3, 0.8)],
        },
        ..Default::default()
    };
    let (p, events, _file) = proxy(faults, "window").await;
    let (mut early, resp) = login(p.listen, "iqn.2026-11.lab:node01").await;
    assert!(resp.completes_login());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut c = TcpStream::connect(p.listen).await.unwrap();
    let _ = c.write_all(&login_request("iqn.2026-11.lab:node01")).await;
    let mut rest = Vec::new();
    let reset = c.read_to_end(&mut rest).await;
    assert!(
        matches!(&reset, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{reset:?}"
    );
    // The session from before the window still carries traffic during it.
    round_trip(&mut early).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_c, resp) = login(p.listen, "iqn.2026-11.lab:node01").await;
    assert!(resp.completes_login());
    let all = events.snapshot();
    let refused: Vec<_> = all
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Refused { .. }))
        .collect();
    assert_eq!(refused.len(), 1, "{all:?}");
    let states: Vec<String> = all
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Service { state, .. } => Some(state.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(states, ["down until 1s (down window)", "started"]);
    // A reset connection never reached the login phase: two logins, both accepted.
    let results: Vec<String> = p.records().into_iter().map(|r| r.result).collect();
    assert_eq!(results, ["accepted", "accepted"]);
    p.stop();
}

#[tokio::test]
async fn a_target_that_is_down_is_recorded_and_the_client_let_go() {
    // A port that was just free: nothing listens there, as while tgtd restarts.
    let down = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let events = Arc::new(EventLog::new(RunClock::start(), None).unwrap());
    let file = records_file("nbh-proxy-down-");
    let p = IscsiProxy::start(
        "127.0.0.1:0".parse().unwrap(),
        down,
        LoginFaults::default(),
        events.clone(),
        sink(&file),
        None,
    )
    .await
    .unwrap();
    let mut c = TcpStream::connect(p.listen).await.unwrap();
    c.write_all(&login_request("iqn.2026-11.lab:node01"))
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest).await;
    let recs = p.records();
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert!(recs[0].result.starts_with("target unreachable"), "{recs:?}");
    assert!(matches!(
        events.snapshot()[0].kind,
        EventKind::IscsiLoginFailed { .. }
    ));
    p.stop();
}

#[tokio::test]
async fn address_acl_refuses_other_sources() {
    let faults = LoginFaults {
        allow_from: vec!["10.77.0.99".parse().unwrap()],
        ..Default::default()
    };
    let (p, _events, _file) = proxy(faults, "acl").await;
    let (_c, resp) = login(p.listen, "iqn.2026-11.lab:node01").await;
    assert_eq!(resp.status_class, 2);
    assert!(p.records()[0].result.contains("not allowed"));
    p.stop();
}

#[tokio::test]
async fn a_targets_own_address_acl_admits_its_node_only() {
    let acl = |target: &str, ip: &str| LoginFaults {
        allow_at_target: [(target.to_string(), ip.parse().unwrap())].into(),
        ..Default::default()
    };
    // node01's target admits node01's address; this login (from 127.0.0.1) is not node01's.
    let (p, _events, _file) =
        proxy(acl("iqn.2026-11.lab:node01-root", "10.77.0.101"), "tacl1").await;
    let (_c, resp) = login(p.listen, "iqn.2026-11.lab:node01").await;
    assert_eq!((resp.status_class, resp.status_detail), (2, 1));
    let r = &p.records()[0].result;
    assert!(
        r.contains("127.0.0.1 is not allowed at this target (only 10.77.0.101)"),
        "{r}"
    );
    p.stop();
    // From the admitted address it goes through.
    let (p, _events, _file) = proxy(acl("iqn.2026-11.lab:node01-root", "127.0.0.1"), "tacl2").await;
    let (_c, resp) = login(p.listen, "iqn.2026-11.lab:node01").await;
    assert_eq!(resp.status_class, 0, "{:?}", p.records());
    p.stop();
    // Another node's rule says nothing about this target.
    let (p, _events, _file) =
        proxy(acl("iqn.2026-11.lab:node02-root", "10.77.0.102"), "tacl3").await;
    let (_c, resp) = login(p.listen, "iqn.2026-11.lab:node01").await;
    assert_eq!(resp.status_class, 0, "{:?}", p.records());
    p.stop();
}

#[tokio::test]
async fn truncated_pdu_is_recorded_and_the_proxy_keeps_serving() {
    let (p, _events, _file) = proxy(LoginFaults::default(), "trunc").await;
    {
        let mut c = TcpStream::connect(p.listen).await.unwrap();
        c.write_all(&login_request("iqn.2026-11.lab:x")[..20])
            .await
            .unwrap();
        c.shutdown().await.unwrap();
        let mut sink = Vec::new();
        let _ = c.read_to_end(&mut sink).await;
    }
    let (_c, resp) = login(p.listen, "iqn.2026-11.lab:node01").await;
    assert!(resp.completes_login());
    let recs = p.records();
    assert!(
        recs.iter().any(|r| r.result.starts_with("malformed")),
        "{recs:?}"
    );
    assert!(recs.iter().any(|r| r.result == "accepted"), "{recs:?}");
    p.stop();
}

#[tokio::test]
async fn a_killed_portal_cuts_its_sessions_and_refuses_new_ones_while_the_other_serves() {
    let up = upstream().await;
    let events = Arc::new(EventLog::new(RunClock::start(), None).unwrap());
    let file = records_file("nbh-proxy-two-");
    let records = sink(&file);
    let start = |name| {
        IscsiProxy::start(
            "127.0.0.1:0".parse().unwrap(),
            up,
            LoginFaults::default(),
            events.clone(),
            records.clone(),
            Some(name),
        )
    };
    let first = start(crate::scenario::Portal::First).await.unwrap();
    let second = start(crate::scenario::Portal::Second).await.unwrap();
    let (mut on_first, _) = login(first.listen, "iqn.2026-11.lab:node01").await;
    let (mut on_second, _) = login(second.listen, "iqn.2026-11.lab:node01").await;
    // Each login event names the portal it came in on.
    let portals: Vec<_> = events
        .snapshot()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::IscsiLogin { portal, .. } => Some(portal),
            _ => None,
        })
        .collect();
    assert_eq!(
        portals,
        [
            Some(crate::scenario::Portal::First),
            Some(crate::scenario::Portal::Second)
        ]
    );
    assert_eq!(first.kill(), 1);
    // Its session is cut: the client reads the end (or a reset), never its echo.
    let _ = on_first.write_all(&scsi_pdu()).await;
    let mut buf = [0u8; 12];
    let cut = tokio::time::timeout(Duration::from_secs(5), on_first.read(&mut buf))
        .await
        .expect("a cut session ends at once");
    assert!(matches!(cut, Ok(0) | Err(_)), "{cut:?}");
    // Nobody answers on it any more.
    let again = TcpStream::connect(first.listen).await;
    assert!(again.is_err(), "{again:?}");
    // The other portal's session and new logins go on.
    round_trip(&mut on_second).await;
    let (_c, resp) = login(second.listen, "iqn.2026-11.lab:node01").await;
    assert!(resp.completes_login());
    // Both portals' records go to the one file, each with its portal's address.
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        text.contains(&format!("\"portal\":\"{}\"", first.listen)),
        "{text}"
    );
    second.stop();
}

/// Every event up to the first `iscsi_connection_closed`, and that one: the proxy records the
/// close once both directions have ended.
async fn close_record(
    events: &EventLog,
) -> (
    Vec<crate::services::events::Event>,
    crate::services::events::Event,
) {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let all = events.snapshot();
            if let Some(e) = all
                .iter()
                .find(|e| matches!(e.kind, EventKind::IscsiConnectionClosed { .. }))
            {
                return (all.clone(), e.clone());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the close is recorded")
}

#[tokio::test]
async fn a_logout_and_the_close_after_it_are_recorded_with_the_session() {
    let (p, events, _file) = proxy(LoginFaults::default(), "logout").await;
    let (mut c, resp) = login(p.listen, "iqn.2026-11.lab:node01").await;
    round_trip(&mut c).await;
    c.write_all(&logout_pdu()).await.unwrap();
    let answer = read_pdu(&mut c).await.unwrap().unwrap();
    assert_eq!(
        iscsi_pdu::opcode(&answer),
        Some(iscsi_pdu::OP_LOGOUT_RESPONSE)
    );
    drop(c);
    let (all, closed) = close_record(&events).await;
    let logout = all
        .iter()
        .find(|e| matches!(e.kind, EventKind::IscsiLogout { .. }))
        .expect("the logout is recorded");
    assert!(logout.at <= closed.at);
    let EventKind::IscsiLogout { session, reason } = &logout.kind else {
        unreachable!()
    };
    assert_eq!(reason, "close the session");
    assert_eq!(session.initiator, "iqn.2026-11.lab:node01");
    assert_eq!(session.target, "iqn.2026-11.lab:node01-root");
    assert_eq!(session.tsih, resp.tsih);
    assert_eq!(
        closed.kind,
        EventKind::IscsiConnectionClosed {
            session: session.clone(),
            closed_by: "initiator".into(),
            logout_response: Some("closed successfully".into()),
        }
    );
    p.stop();
}

#[tokio::test]
async fn a_connection_dropped_without_a_logout_is_recorded_as_such() {
    let (p, events, _file) = proxy(LoginFaults::default(), "drop").await;
    let (mut c, _) = login(p.listen, "iqn.2026-11.lab:node01").await;
    round_trip(&mut c).await;
    drop(c);
    let (all, closed) = close_record(&events).await;
    let EventKind::IscsiConnectionClosed {
        closed_by,
        logout_response,
        ..
    } = closed.kind
    else {
        unreachable!()
    };
    let closed = (closed_by, logout_response);
    assert_eq!(closed, ("initiator".to_string(), None));
    assert!(!all
        .iter()
        .any(|e| matches!(e.kind, EventKind::IscsiLogout { .. })));
    p.stop();
}
