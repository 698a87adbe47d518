//! Each shipped negative scenario, fed its real failure and the failures that only look like it.
//!
//! A negative scenario is worth something only if it passes for its named cause alone. Each test
//! loads the scenario file as shipped, keeps its steps from the one the run's point turns on,
//! and feeds the step engine console lines and service records as the guest and the services
//! would produce them: the right failure must be judged a pass, and a killed QEMU, an unrelated
//! failure line or a failure of another service must be judged a failure.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::test_rig::{no_cancel, rig, Rig};
use super::{judge, run_steps, Judgement};
use crate::scenario::Scenario;
use crate::services::events::EventKind;

/// The shipped scenario, with its steps from `from` on, each allowed `within_ms`.
fn negative(file: &str, from: &str, within_ms: u64) -> Scenario {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(file);
    let mut s = crate::scenario::load(&path).unwrap();
    let at = s
        .steps
        .iter()
        .position(|st| st.name == from)
        .unwrap_or_else(|| panic!("{file} has no step {from:?}"));
    s.steps.drain(..at);
    for st in &mut s.steps {
        st.within = Duration::from_millis(within_ms);
        st.after = None;
    }
    assert!(
        s.expect_failure.is_some(),
        "{file} is not a negative scenario"
    );
    s
}

/// Runs the scenario's steps on the rig and judges the outcome against its `expect_failure`.
async fn judged(s: &Scenario, r: &Rig) -> Judgement {
    let out = run_steps(s, &r.nodes, &r.events, 1.0, no_cancel()).await;
    judge(&out, s.expect_failure.as_ref())
}

async fn say(r: &mut Rig, text: &str) {
    r.writer.write_all(text.as_bytes()).await.unwrap();
    // Let the console reader split and timestamp the lines before the steps look.
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// QEMU killed from outside: the console ends and the owner reports the signal.
fn kill_qemu(r: &mut Rig) {
    drop(std::mem::replace(&mut r.writer, tokio::io::duplex(1).0));
    r.nodes["node01"]
        .console
        .note_end("killed by signal 9 (SIGKILL)");
}

/// QEMU killed from outside, with nothing else said: never a negative scenario's named cause.
async fn a_killed_qemu_fails(s: &Scenario, rig_name: &str) {
    let mut r = rig(rig_name);
    kill_qemu(&mut r);
    assert_fail(&judged(s, &r).await, "a killed QEMU");
}

fn assert_pass(j: &Judgement) {
    assert!(
        j.ok,
        "the real failure was not judged a pass: {}",
        j.message
    );
}

fn assert_fail(j: &Judgement, why: &str) {
    assert!(!j.ok, "{why} was judged a pass: {}", j.message);
}

const GAVE_UP: &str = "Begin: Running /scripts/local-block ... done.\r\n\
    Gave up waiting for root file system device.  Common problems:\r\n\
    ALERT!  UUID=4f1c8e0c does not exist.  Dropping to a shell!\r\n";
const UNRELATED_ALERT: &str = "ALERT! something unrelated happened\r\n";

async fn root_never_appears(file: &str, step: &str) {
    let s = negative(file, step, 2000);

    let mut r = rig("root-gone");
    say(&mut r, GAVE_UP).await;
    assert_pass(&judged(&s, &r).await);

    let mut r = rig("root-alert");
    say(&mut r, UNRELATED_ALERT).await;
    assert_fail(&judged(&s, &r).await, "an unrelated ALERT! line");

    a_killed_qemu_fails(&s, "root-killed").await;

    let r = rig("root-timeout");
    assert_fail(&judged(&s, &r).await, "a root step that only timed out");
}

#[tokio::test]
async fn initramfs_no_sd_mod_passes_only_when_the_initramfs_gives_up_on_the_root() {
    root_never_appears(
        "initramfs-no-sd-mod.yaml",
        "root mounted from the iSCSI disk",
    )
    .await;
}

#[tokio::test]
async fn local_disk_no_driver_passes_only_when_the_initramfs_gives_up_on_the_root() {
    root_never_appears(
        "local-disk-no-driver.yaml",
        "root mounted from the local disk",
    )
    .await;
}

#[tokio::test]
async fn nic_order_broken_passes_only_when_the_initramfs_gives_up_on_the_root() {
    root_never_appears("nic-order-broken.yaml", "root mounted from the iSCSI disk").await;
}

fn refused(status: Option<&str>, by: Option<&str>, result: &str) -> EventKind {
    EventKind::IscsiLoginFailed {
        initiator: "iqn.2026-11.lab:node01".into(),
        target: "iqn.2026-11.lab:no-such-disk".into(),
        source_ip: "10.77.0.128".parse().unwrap(),
        result: result.into(),
        session_type: "Normal".into(),
        status: status.map(str::to_string),
        answered_by: by.map(str::to_string),
    }
}

const SAN_FAILED: &str =
    "Could not open SAN device: Operation not permitted (https://ipxe.org/410c613c)\r\n";

#[tokio::test]
async fn sanboot_wrong_target_passes_only_when_the_target_rejects_the_name() {
    let s = negative(
        "sanboot-wrong-target.yaml",
        "the target rejects the unknown target name",
        1500,
    );

    let mut r = rig("wrong-target");
    r.events.push(refused(
        Some("not-found"),
        Some("target"),
        "rejected by target (class 2 detail 3)",
    ));
    say(&mut r, SAN_FAILED).await;
    assert_pass(&judged(&s, &r).await);

    // The portal down: iPXE prints the same error, but no target refused any name.
    let mut r = rig("portal-down");
    r.events.push(refused(
        None,
        None,
        "target unreachable: Connection refused (os error 111)",
    ));
    say(&mut r, SAN_FAILED).await;
    assert_fail(&judged(&s, &r).await, "an unreachable target");

    // Nothing listening at all: no record, the same console line.
    let mut r = rig("portal-silent");
    say(&mut r, SAN_FAILED).await;
    assert_fail(&judged(&s, &r).await, "a portal nobody listens on");

    // Refused for another reason (an ACL, the fault plan).
    let mut r = rig("acl");
    r.events.push(refused(
        Some("authentication-failure"),
        Some("login proxy"),
        "refused: address 10.77.0.128 is not allowed",
    ));
    say(&mut r, SAN_FAILED).await;
    assert_fail(&judged(&s, &r).await, "a login refused by an ACL");

    let mut r = rig("wrong-target-killed");
    r.events.push(refused(
        Some("not-found"),
        Some("target"),
        "rejected by target (class 2 detail 3)",
    ));
    kill_qemu(&mut r);
    assert_fail(&judged(&s, &r).await, "a killed QEMU after the rejection");
}

#[tokio::test]
async fn no_retry_strands_passes_only_on_dhcp_silence_from_a_live_node() {
    let s = negative("no-retry-strands.yaml", "DHCP lease", 500);

    let mut r = rig("silence");
    say(&mut r, "iPXE> \r\n").await;
    assert_pass(&judged(&s, &r).await);

    a_killed_qemu_fails(&s, "silence-killed").await;

    // A node that did ask again and got its lease disproves the point.
    let r = rig("silence-ack");
    r.events.push(EventKind::Dhcp {
        message: "DHCPACK".into(),
        mac: "52:54:00:aa:00:25".into(),
        ip: Some("10.77.0.25".parse().unwrap()),
        hostname: Some("node01".into()),
        boot_file: None,
        netmask: None,
        router: None,
    });
    assert_fail(&judged(&s, &r).await, "a lease the node got after all");
}

/// A guest whose shell echoes the command it is given, then prints `reply`, then (when
/// `status` is given) the status line as bash prints it: the tag the harness typed, `$?`
/// expanded. Without a status the shell stops answering after `reply`.
fn guest_shell(
    r: &mut Rig,
    reply: &'static str,
    status: Option<u8>,
) -> tokio::task::JoinHandle<()> {
    let mut w = std::mem::replace(&mut r.writer, tokio::io::duplex(1).0);
    let (_, dummy) = tokio::sync::mpsc::channel(1);
    let mut typed = std::mem::replace(&mut r.typed, dummy);
    tokio::spawn(async move {
        let line = typed.recv().await.unwrap();
        let text = String::from_utf8(line).unwrap();
        let text = text.trim_end();
        w.write_all(format!("root@netboot-guest:~# {text}\r\n").as_bytes())
            .await
            .unwrap();
        w.write_all(reply.as_bytes()).await.unwrap();
        if let Some(status) = status {
            let tag = text
                .rsplit_once("echo \"")
                .map(|(_, t)| t.trim_end_matches(" $?\""))
                .unwrap_or_default();
            w.write_all(format!("{tag} {status}\r\n").as_bytes())
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
}

#[tokio::test]
async fn logout_kills_root_passes_only_on_the_kernels_offline_device() {
    let s = negative("logout-kills-root.yaml", "the root still answers", 1500);

    let mut r = rig("offline");
    let g = guest_shell(
        &mut r,
        "[   48.1] sd 2:0:0:1: rejecting I/O to offline device\r\n\
         [   48.1] I/O error, dev sda, sector 2048 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 2\r\n\
         [   48.1] device offline error, dev sda, sector 2048 op 0x0:(READ)\r\n\
         dd: error reading '/etc/os-release': Input/output error\r\n",
        Some(1),
    );
    assert_pass(&judged(&s, &r).await);
    g.abort();

    // dd failing for a reason of its own: the root is fine.
    let mut r = rig("offline-other");
    let g = guest_shell(
        &mut r,
        "dd: failed to open '/etc/os-release': No such file or directory\r\n",
        Some(1),
    );
    assert_fail(&judged(&s, &r).await, "a command that failed on its own");
    g.abort();

    a_killed_qemu_fails(&s, "offline-killed").await;
}

#[tokio::test]
async fn bridge_ibft_nic_passes_only_on_the_kernels_ping_timeout() {
    let s = negative(
        "bridge-ibft-nic.yaml",
        "the root answers without the address",
        1000,
    );

    let mut r = rig("ping");
    let g = guest_shell(
        &mut r,
        "[   70.2]  connection1:0: ping timeout of 5 secs expired, recv timeout 5, last rx 4294, last ping 4295, now 4296\r\n\
         [   70.2]  connection1:0: detected conn error (1022)\r\n",
        None,
    );
    assert_pass(&judged(&s, &r).await);
    g.abort();

    // A shell that hangs with nothing said about the root disk.
    let mut r = rig("ping-silent");
    let g = guest_shell(&mut r, "", None);
    assert_fail(&judged(&s, &r).await, "a silent shell with no kernel line");
    g.abort();

    a_killed_qemu_fails(&s, "ping-killed").await;
}

#[tokio::test]
async fn dracut_iscsid_unfixed_passes_only_on_iscsids_failure() {
    let s = negative(
        "dracut-iscsid-unfixed.yaml",
        "initramfs login seen by the target",
        1500,
    );

    let mut r = rig("iscsid");
    say(
        &mut r,
        "[FAILED] Failed to start iscsid.ser…e - Open-iSCSI.\r\n",
    )
    .await;
    assert_pass(&judged(&s, &r).await);

    let mut r = rig("iscsid-other");
    say(
        &mut r,
        "[FAILED] Failed to start systemd-udev-settle.service.\r\n",
    )
    .await;
    assert_fail(&judged(&s, &r).await, "another unit's failure");

    a_killed_qemu_fails(&s, "iscsid-killed").await;
}

#[tokio::test]
async fn fleet_wrong_lun_refused_passes_only_when_the_other_nodes_target_refuses_it() {
    let mut s = negative(
        "fleet-wrong-lun-refused.yaml",
        "node01's target refuses node02",
        1500,
    );
    // The rig has one console; node02's steps read it.
    for st in &mut s.steps {
        st.node = "node01".into();
    }
    let refusal = |target: &str, status: Option<&str>, by: Option<&str>, result: &str| {
        EventKind::IscsiLoginFailed {
            initiator: "iqn.2026-11.lab:node02".into(),
            target: target.into(),
            source_ip: "10.77.0.102".parse().unwrap(),
            result: result.into(),
            session_type: "Normal".into(),
            status: status.map(str::to_string),
            answered_by: by.map(str::to_string),
        }
    };
    let tgtd_says_no = "rejected by target (class 2 detail 3)";

    let mut r = rig("wrong-lun");
    r.events.push(refusal(
        "iqn.2026-11.lab:node01-root",
        Some("not-found"),
        Some("target"),
        tgtd_says_no,
    ));
    say(&mut r, SAN_FAILED).await;
    assert_pass(&judged(&s, &r).await);

    // Its own target refusing it is another fault (its own ACL, its own disk missing).
    let mut r = rig("own-lun-refused");
    r.events.push(refusal(
        "iqn.2026-11.lab:node02-root",
        Some("not-found"),
        Some("target"),
        tgtd_says_no,
    ));
    say(&mut r, SAN_FAILED).await;
    assert_fail(&judged(&s, &r).await, "its own target refusing it");

    // The portal down: the same iPXE error, no answer from any target.
    let mut r = rig("wrong-lun-portal-down");
    r.events.push(refusal(
        "iqn.2026-11.lab:node01-root",
        None,
        None,
        "target unreachable: Connection refused (os error 111)",
    ));
    say(&mut r, SAN_FAILED).await;
    assert_fail(&judged(&s, &r).await, "an unreachable portal");

    // Turned away by the login proxy's address ACL, not by the target.
    let mut r = rig("wrong-lun-address-acl");
    r.events.push(refusal(
        "iqn.2026-11.lab:node01-root",
        Some("authentication-failure"),
        Some("login proxy"),
        "refused: address 10.77.0.102 is not allowed",
    ));
    say(&mut r, SAN_FAILED).await;
    assert_fail(&judged(&s, &r).await, "the proxy's address ACL");

    // The target refused it, then the node was killed before iPXE said anything.
    let mut r = rig("wrong-lun-killed");
    r.events.push(refusal(
        "iqn.2026-11.lab:node01-root",
        Some("not-found"),
        Some("target"),
        tgtd_says_no,
    ));
    kill_qemu(&mut r);
    assert_fail(&judged(&s, &r).await, "a killed QEMU after the refusal");
}

#[tokio::test]
async fn cable_out_too_long_passes_only_on_the_kernels_offline_device() {
    root_goes_offline("cable-out-too-long.yaml").await;
}

#[tokio::test]
async fn ha_portal_dies_after_boot_passes_only_on_the_kernels_offline_device() {
    root_goes_offline("ha-portal-dies-after-boot.yaml").await;
}

/// The root's session is lost (a cable out too long, a portal gone) and a read of the root
/// fails with the kernel's line for it.
async fn root_goes_offline(file: &str) {
    let s = negative(file, "the root still answers", 1500);

    // As recorded: the session timed out, then the read cannot even start dd.
    let mut r = rig("cable-offline");
    let g = guest_shell(
        &mut r,
        "[   70.59]  session1: session recovery timed out after 10 secs\r\n\
         [   70.59] sd 0:0:0:1: rejecting I/O to offline device\r\n\
         [   70.59] I/O error, dev sda, sector 1595392 op 0x1:(WRITE) flags 0x103000 phys_seg 4 prio class 2\r\n\
         -bash: /usr/bin/dd: Input/output error\r\n",
        Some(126),
    );
    assert_pass(&judged(&s, &r).await);
    g.abort();

    // The read failing for a reason of its own, with the disk still there.
    let mut r = rig("cable-other");
    let g = guest_shell(
        &mut r,
        "dd: failed to open '/etc/os-release': No such file or directory\r\n",
        Some(1),
    );
    assert_fail(&judged(&s, &r).await, "a command that failed on its own");
    g.abort();

    // The root still answering: the cable was not out long enough.
    let mut r = rig("cable-survived");
    let g = guest_shell(&mut r, "", Some(0));
    assert_fail(&judged(&s, &r).await, "a root that still answers");
    g.abort();

    a_killed_qemu_fails(&s, "cable-killed").await;
}

#[tokio::test]
async fn udev_stale_rules_passes_only_when_the_initramfs_gives_up_on_eth0() {
    eth0_never_appears("udev-stale-rules.yaml").await;
}

#[tokio::test]
async fn nic_order_predictable_eth0_passes_only_when_the_initramfs_gives_up_on_eth0() {
    eth0_never_appears("nic-order-predictable-eth0.yaml").await;
}

/// The initramfs waits for `DEVICE=eth0`, which no NIC is called, and says so.
async fn eth0_never_appears(file: &str) {
    let s = negative(file, "root mounted from the iSCSI disk", 1500);

    // As recorded: the wait's line ends with the initramfs's own failure.
    let mut r = rig("stale-rules");
    say(
        &mut r,
        "Begin: Waiting up to 180 secs for eth0 to become available ... Failure: Network device did not appear in time\r\n",
    )
    .await;
    assert_pass(&judged(&s, &r).await);

    // Another way for the root never to come: not the one the scenario names.
    let mut r = rig("stale-rules-gave-up");
    say(&mut r, GAVE_UP).await;
    assert_fail(
        &judged(&s, &r).await,
        "an initramfs that gave up on the root disk",
    );

    // Nothing at all: the step times out, which is no evidence of the cause.
    let r = rig("stale-rules-silent");
    assert_fail(&judged(&s, &r).await, "a silent guest");

    a_killed_qemu_fails(&s, "stale-rules-killed").await;
}

#[tokio::test]
async fn uefi_no_removable_path_passes_only_when_sanboot_finds_no_boot_loader() {
    let s = negative("uefi-no-removable-path.yaml", "GRUB starts", 1500);

    // iPXE's UEFI sanboot, with the LUN open and no \EFI\BOOT\BOOTX64.EFI on it.
    let mut r = rig("no-loader");
    say(
        &mut r,
        "Booting from SAN device 0x80\r\nBoot from SAN device 0x80 failed: Error 0x7f22208e (http://ipxe.org/7f22208e)\r\n",
    )
    .await;
    assert_pass(&judged(&s, &r).await);

    // The LUN never opened (a login refused, a portal down): not the point.
    let mut r = rig("no-loader-no-lun");
    say(&mut r, SAN_FAILED).await;
    assert_fail(&judged(&s, &r).await, "a SAN device that never opened");

    // Another sanboot failure (here: the loader found but not startable, iPXE's "Exec format
    // error") fails the step the same way, for another cause.
    let mut r = rig("no-loader-other-error");
    say(
        &mut r,
        "Boot from SAN device 0x80 failed: Error 0x2e008081 (http://ipxe.org/2e008081)\r\n",
    )
    .await;
    assert_fail(&judged(&s, &r).await, "another sanboot error");

    // The loader found after all: GRUB starts, the point is disproved.
    let mut r = rig("no-loader-grub");
    say(&mut r, "Welcome to GRUB!\r\n").await;
    assert_fail(&judged(&s, &r).await, "a boot loader that started");

    a_killed_qemu_fails(&s, "no-loader-killed").await;

    let r = rig("no-loader-timeout");
    assert_fail(&judged(&s, &r).await, "silence after sanboot");
}

const ZERO_IQN: &str = "iqn.2010-04.org.ipxe:00000000-0000-0000-0000-000000000000";

fn login(initiator: &str, target_mac: &str, ip: &str) -> EventKind {
    EventKind::IscsiLogin {
        initiator: initiator.into(),
        target: format!("iqn.2026-11.lab:{target_mac}-root"),
        source_ip: ip.parse().unwrap(),
        source_mac: None,
        session_type: "Normal".into(),
        isid: "400027231258".into(),
        tsih: 256,
        portal: None,
    }
}

#[tokio::test]
async fn uefi_default_iqn_collision_passes_only_when_another_node_logs_in_with_the_same_iqn() {
    let s = negative(
        "uefi-default-iqn-collision.yaml",
        "node01's IQN is node01's alone",
        1500,
    );
    let (own, other) = ("52-54-00-aa-02-01", "52-54-00-aa-02-02");

    // node01, then node02 under the same zero-UUID name: the collision.
    let r = rig("iqn-collision");
    r.events.push(login(ZERO_IQN, own, "10.77.0.121"));
    r.events.push(login(ZERO_IQN, other, "10.77.0.122"));
    assert_pass(&judged(&s, &r).await);

    // node02 with a name of its own: no collision, the step only waits, and times out.
    let r = rig("iqn-distinct");
    r.events.push(login(ZERO_IQN, own, "10.77.0.121"));
    r.events
        .push(login("iqn.2010-04.org.ipxe:node02", other, "10.77.0.122"));
    assert_fail(&judged(&s, &r).await, "two distinct IQNs");

    // node01 itself asking for the other target (a wrong root path), not a second node.
    let r = rig("iqn-wrong-target");
    r.events.push(login(ZERO_IQN, other, "10.77.0.121"));
    assert_fail(
        &judged(&s, &r).await,
        "node01 logging in to node02's target",
    );

    a_killed_qemu_fails(&s, "iqn-killed").await;
}

#[tokio::test]
async fn ha_first_portal_down_passes_only_when_the_initramfs_goes_to_the_dead_portal() {
    let s = negative(
        "ha-first-portal-down.yaml",
        "the initramfs logs in through the second portal",
        1500,
    );

    // As recorded: iscsistart logs in to the iBFT's first target, the portal that is down.
    let mut r = rig("ha-dead-first");
    say(
        &mut r,
        "iscsistart: Logging into iqn.2026-11.lab:node01-root 10.77.0.1:3260,1\r\n\
         iscsistart: connect to 10.77.0.1:3260 failed (Connection reset by peer)\r\n",
    )
    .await;
    assert_pass(&judged(&s, &r).await);

    // The live portal failing too is another story: the lab's, not the iBFT's order.
    let mut r = rig("ha-live-fails");
    say(
        &mut r,
        "iscsistart: connect to 10.77.0.2:3260 failed (Connection refused)\r\n",
    )
    .await;
    assert_fail(&judged(&s, &r).await, "a failure at the live portal");

    // Silence: the step times out, which names no portal.
    let r = rig("ha-silent");
    assert_fail(&judged(&s, &r).await, "a silent guest");

    a_killed_qemu_fails(&s, "ha-killed").await;
}
