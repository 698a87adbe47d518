//! A run touches nothing outside its own namespaces and files, checked from the host while runs
//! are going on:
//!
//! - `host_namespace_untouched`: while a guest boots, no socket of any process of the run is in
//!   the host's network namespace tables (`/proc/net/{tcp,tcp6,udp,udp6,raw,raw6}`), every such
//!   process is in another network namespace, no new listening socket or interface appears on
//!   the host, and no address of the scenario's subnet is on any host interface. The cached base
//!   image the run booted from hashes the same before and after.
//! - `two_runs_at_once`: two copies of one scenario (same subnet, same MAC, different names and
//!   host names) boot at the same time from one raw image file the user brings. Both pass, each
//!   run's DHCP log and leases and iSCSI login records show only its own guest (its host name,
//!   its initiator name), each guest's marker lands on its own disk copy, and the user's file is
//!   byte for byte unchanged.
//!
//! Processes of a run are found as tests/cleanup.rs finds them: by `NETBOOT_HARNESS_RUN=<run
//! dir>` in their environment, or the run directory on their command line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[path = "support/boots.rs"]
mod boots;
#[path = "support/can_boot.rs"]
mod can_boot;
#[path = "support/leftovers.rs"]
mod leftovers;
use leftovers::{processes_of, run_dirs, wait_for};
use libtest_mimic::{Arguments, Failed, Trial};

/// The subnet the test scenarios use: the harness's default.
const SUBNET_PREFIX: &str = "10.77.0.";
const MAC: &str = "52:54:00:aa:00:61";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn harness() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_netboot-harness"));
    c.current_dir(root()).stdin(Stdio::null());
    c
}

fn err(what: impl std::fmt::Display) -> Failed {
    Failed::from(what.to_string())
}

/// A scenario that boots to the shell, writes a marker naming its host to the raw disk outside
/// the partitions and reads it back from the run's disk copy. `firmware` is the node's
/// `firmware:` value.
fn scenario(name: &str, hostname: &str, image: &str, firmware: &str) -> String {
    format!(
        r#"name: {name}
description: Isolation test copy ({hostname}).
image: {image}
nodes:
  - name: node01
    firmware: {firmware}
    nics:
      - {{ model: e1000, mac: "{MAC}", boot: true }}
services:
  dhcp:
    hosts:
      - {{ mac: "{MAC}", hostname: {hostname} }}
  http:
    files:
      boot.ipxe: boot/sanboot.ipxe
  iscsi:
    target: iqn.2026-11.lab:node01-root
expect:
  - name: sanboot
    console: "Booting from SAN device 0x80"
    within: 120s
  - name: root mounted from the iSCSI disk
    console: "netboot-harness: root=/dev/sda1"
    within: 300s
  - name: shell ready
    console: "netboot-harness: shell ready"
    within: 90s
  - name: the guest marks its disk
    shell: "printf '%-512s' 'written-by-{hostname}' | dd of=/dev/sda bs=512 seek=1000 count=1 oflag=direct status=none"
    within: 90s
  - name: the mark is on this run's disk copy
    lun_bytes: {{ offset: 512000, text: "written-by-{hostname} " }}
    within: 20s
"#
    )
}

/// A folder holding a scenario file and the boot script it serves; removed when dropped, also
/// when the test panics, so the test keeps it until its runs have ended.
fn scenario_dir(tag: &str) -> Result<tempfile::TempDir, Failed> {
    let tmp = tempfile::Builder::new()
        .prefix(&format!("nbh-isolation-{tag}-"))
        .tempdir()
        .map_err(err)?;
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("boot")).map_err(err)?;
    std::fs::copy(
        root().join("scenarios/boot/sanboot.ipxe"),
        dir.join("boot/sanboot.ipxe"),
    )
    .map_err(err)?;
    Ok(tmp)
}

/// The cached image of the default recipe, built if needed.
fn cached_image() -> Result<PathBuf, Failed> {
    let out = harness()
        .args(["image", "prepare", "scenarios/debian-ibft-e1000.yaml"])
        .output()
        .map_err(err)?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("debian-ibft-e1000: "))
        .map(PathBuf::from)
        .ok_or_else(|| {
            err(format!(
                "image prepare said: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            ))
        })
}

fn sha256(p: &Path) -> Result<String, Failed> {
    // coreutils is much faster than a debug build of a hasher on a 1 GiB image.
    let out = Command::new("sha256sum").arg(p).output().map_err(err)?;
    if !out.status.success() {
        return Err(err(format!("sha256sum {}: {:?}", p.display(), out.status)));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .next()
        .map(str::to_string)
        .ok_or_else(|| err(format!("sha256sum printed {text:?}")))
}

fn start_run(runs: &Path, scenario: &Path) -> Result<Child, Failed> {
    harness()
        .arg("run")
        .arg("--runs-dir")
        .arg(runs)
        .arg(scenario)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(err)
}

/// Waits for a run and turns a failed one into the test's failure, with its report.
fn finish(child: Child, what: &str) -> Result<(), Failed> {
    let out = child.wait_with_output().map_err(err)?;
    if out.status.success() {
        return Ok(());
    }
    Err(err(format!(
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )))
}

fn netns_of(pid: &str) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|p| p.display().to_string())
}

/// Socket inodes a process holds open.
fn socket_inodes(pid: u32) -> BTreeSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// One socket of the namespace this test runs in (the host's), from /proc/net.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct HostSocket {
    table: &'static str,
    local: String,
    listening: bool,
    inode: u64,
}

fn host_sockets() -> Vec<HostSocket> {
    let mut out = Vec::new();
    for table in ["tcp", "tcp6", "udp", "udp6", "raw", "raw6"] {
        let text = std::fs::read_to_string(format!("/proc/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            // TCP state 0A is LISTEN; any bound UDP or raw socket receives.
            let listening = !table.starts_with("tcp") || f[3] == "0A";
            out.push(HostSocket {
                table,
                local: f[1].to_string(),
                listening,
                inode: f[9].parse().unwrap_or(0),
            });
        }
    }
    out
}

/// DHCP (67, 547), TFTP (69), HTTP (80), iSCSI (3260), or an IPv4 address of the subnet.
/// `local` is /proc/net's `ADDR:PORT` in hex, IPv4 addresses in host (little-endian) order.
fn looks_like_the_lab(local: &str) -> bool {
    let Some((addr, port)) = local.split_once(':') else {
        return false;
    };
    let port = u16::from_str_radix(port, 16).unwrap_or(0);
    let in_subnet = addr.len() == 8
        && u32::from_str_radix(addr, 16)
            .map(|a| {
                let ip = std::net::Ipv4Addr::from(a.swap_bytes());
                ip.to_string().starts_with(SUBNET_PREFIX)
            })
            .unwrap_or(false);
    in_subnet || [67, 69, 80, 547, 3260].contains(&port)
}

/// `ip -o addr` of the host namespace: interface and address, one per line.
fn host_addresses() -> Vec<String> {
    Command::new("ip")
        .args(["-o", "addr", "show"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    Some(format!("{} {}", f.get(1)?, f.get(3)?))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn host_interfaces() -> BTreeSet<String> {
    std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// What the host namespace looks like right now, as far as a leak would change it.
struct HostView {
    listening: BTreeSet<(String, String)>,
    interfaces: BTreeSet<String>,
}

fn host_view() -> HostView {
    HostView {
        listening: host_sockets()
            .into_iter()
            .filter(|s| s.listening)
            .map(|s| (s.table.to_string(), s.local))
            .collect(),
        interfaces: host_interfaces(),
    }
}

/// Everything the run's processes hold in the host namespace, and what the host gained.
fn check_host(run: &Path, before: &HostView, own_ns: &str) -> Result<usize, Failed> {
    let procs = processes_of(run);
    let host = host_sockets();
    let mut problems = Vec::new();
    let mut with_env = 0;
    let mut sockets = 0;
    for (pid, cmd) in &procs {
        let ns = netns_of(&pid.to_string()).unwrap_or_default();
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let in_lab = env
            .split(|b| *b == 0)
            .any(|v| v.starts_with(b"NETBOOT_HARNESS_RUN="));
        if in_lab {
            with_env += 1;
            if ns == own_ns {
                problems.push(format!(
                    "{pid} ({cmd}) runs in the host's network namespace"
                ));
            }
        }
        let inodes = socket_inodes(*pid);
        sockets += inodes.len();
        for s in host.iter().filter(|s| inodes.contains(&s.inode)) {
            problems.push(format!("{pid} ({cmd}) holds a host socket: {s:?}"));
        }
    }
    let now = host_view();
    // Other software on the host may open sockets meanwhile; the ones a leaked lab would open
    // are on the services' ports or the scenario's subnet.
    for (table, local) in now.listening.difference(&before.listening) {
        if looks_like_the_lab(local) {
            problems.push(format!(
                "new listening socket in the host namespace: {table} {local}"
            ));
        }
    }
    for i in now.interfaces.difference(&before.interfaces) {
        problems.push(format!("new host interface: {i}"));
    }
    for a in host_addresses() {
        if a.contains(&format!(" {SUBNET_PREFIX}")) {
            problems.push(format!("scenario address on a host interface: {a}"));
        }
    }
    // Shown with --nocapture: what the look covered.
    eprintln!(
        "{}: {} processes of the run ({with_env} inside the lab), {sockets} sockets, \
         {} host sockets compared",
        run.display(),
        procs.len(),
        host.len()
    );
    if !problems.is_empty() {
        return Err(err(problems.join("\n")));
    }
    Ok(with_env)
}

fn host_namespace_untouched() -> Result<(), Failed> {
    let base = cached_image()?;
    let base_hash = sha256(&base)?;
    let tmp = scenario_dir("host")?;
    let dir = tmp.path();
    let file = dir.join("isolation-host.yaml");
    std::fs::write(
        &file,
        // The chain puts dnsmasq's TFTP server up too: it must stay in the lab as well.
        scenario(
            "isolation-host",
            "node-h",
            "debian-initramfs-tools",
            "chain-undionly",
        ),
    )
    .map_err(err)?;
    if let Some(a) = host_addresses()
        .into_iter()
        .find(|a| a.contains(&format!(" {SUBNET_PREFIX}")))
    {
        return Err(err(format!(
            "cannot tell: the host already has an address in the scenario's subnet: {a}"
        )));
    }
    let own_ns = netns_of("self").ok_or_else(|| err("cannot read /proc/self/ns/net"))?;
    let before = host_view();
    let runs = dir.join("runs");
    let child = start_run(&runs, &file)?;
    // Look once every service is up and again once the guest has logged in: the lab's sockets
    // (DHCP, HTTP, the login proxy, tgtd, QEMU's taps) all exist by then.
    let mut run = PathBuf::new();
    let mut looks = Vec::new();
    let seen = wait_for(
        "the guest's first iSCSI login",
        Duration::from_secs(300),
        || {
            if let Some(r) = run_dirs(&runs).pop() {
                run = r;
                if looks.is_empty() && std::fs::metadata(run.join("console-node01.log")).is_ok() {
                    looks.push(check_host(&run, &before, &own_ns));
                }
                return std::fs::read_to_string(run.join("iscsi-logins.jsonl"))
                    .is_ok_and(|t| t.contains("\"accepted\""));
            }
            false
        },
    );
    if let Err(e) = seen {
        let _ = finish(child, "the run");
        return Err(e);
    }
    looks.push(check_host(&run, &before, &own_ns));
    let finished = finish(child, "the run");
    let mut lab_processes = 0;
    for l in looks {
        lab_processes = lab_processes.max(l?);
    }
    finished?;
    // The check above is only worth something if it saw the lab's processes.
    if lab_processes < 3 {
        return Err(err(format!(
            "only {lab_processes} processes of the run carried NETBOOT_HARNESS_RUN: \
             the check did not see the lab"
        )));
    }
    let after = sha256(&base)?;
    if after != base_hash {
        return Err(err(format!(
            "the cached image {} changed: {base_hash} -> {after}",
            base.display()
        )));
    }
    drop(tmp);
    Ok(())
}

/// Reads a run's records and checks they show this run's guest only.
fn only_own_guest(run: &Path, own: &str, other: &str) -> Result<(), Failed> {
    let read = |f: &str| {
        std::fs::read_to_string(run.join(f)).map_err(|e| err(format!("{}/{f}: {e}", run.display())))
    };
    let dhcp = read("dnsmasq.log")?;
    let acks: Vec<&str> = dhcp.lines().filter(|l| l.contains("DHCPACK")).collect();
    if acks.is_empty() || acks.iter().any(|l| !l.contains(own)) {
        return Err(err(format!(
            "{}: DHCP ACKs not all for {own}: {acks:?}",
            run.display()
        )));
    }
    if dhcp.contains(other) {
        return Err(err(format!(
            "{}: dnsmasq.log mentions the other run's {other}",
            run.display()
        )));
    }
    let leases = read("dnsmasq.leases")?;
    let lines: Vec<&str> = leases.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() != 1 || !lines[0].contains(MAC) || !lines[0].contains(own) {
        return Err(err(format!(
            "{}: expected one lease, for {MAC} named {own}: {lines:?}",
            run.display()
        )));
    }
    let logins = read("iscsi-logins.jsonl")?;
    let want = format!("\"initiator\":\"iqn.2026-11.lab:{own}\"");
    let records: Vec<&str> = logins.lines().filter(|l| !l.trim().is_empty()).collect();
    if records.len() < 2 || records.iter().any(|l| !l.contains(&want)) {
        return Err(err(format!(
            "{}: login records not all from iqn.2026-11.lab:{own}: {records:?}",
            run.display()
        )));
    }
    Ok(())
}

fn two_runs_at_once() -> Result<(), Failed> {
    let tmp = scenario_dir("two")?;
    let dir = tmp.path();
    // The user's own disk: a copy of the cached image, booted by both runs at once.
    let disk = dir.join("my-disk.img");
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(cached_image()?)
        .arg(&disk)
        .status()
        .map_err(err)?;
    if !st.success() {
        return Err(err("copying the image failed"));
    }
    let before = sha256(&disk)?;
    let image = "{ file: my-disk.img }";
    let (a, b) = (dir.join("isolation-a.yaml"), dir.join("isolation-b.yaml"));
    std::fs::write(&a, scenario("isolation-a", "node-a", image, "rom")).map_err(err)?;
    std::fs::write(&b, scenario("isolation-b", "node-b", image, "rom")).map_err(err)?;
    let runs = dir.join("runs");
    let first = start_run(&runs, &a)?;
    let second = start_run(&runs, &b);
    let second = match second {
        Ok(c) => c,
        Err(e) => {
            let _ = finish(first, "isolation-a");
            return Err(e);
        }
    };
    let ra = finish(first, "isolation-a");
    let rb = finish(second, "isolation-b");
    ra?;
    rb?;
    let all = run_dirs(&runs);
    let run_of = |name: &str| {
        all.iter()
            .rfind(|r| r.parent().is_some_and(|p| p.ends_with(name)))
            .cloned()
            .ok_or_else(|| err(format!("no run directory for {name} in {all:?}")))
    };
    only_own_guest(&run_of("isolation-a")?, "node-a", "node-b")?;
    only_own_guest(&run_of("isolation-b")?, "node-b", "node-a")?;
    let after = sha256(&disk)?;
    if after != before {
        return Err(err(format!(
            "the user's image changed: {before} -> {after}"
        )));
    }
    drop(tmp);
    Ok(())
}

/// The reader of /proc/net addresses, on values as the kernel writes them.
fn reads_proc_net_addresses() -> Result<(), Failed> {
    let cases = [
        ("01004D0A:1234", true),                         // 10.77.0.1
        ("0100007F:0CBC", true),                         // port 3260
        ("0100007F:1F90", false),                        // 127.0.0.1:8080
        ("00000000000000000000000000000000:0050", true), // [::]:80
    ];
    for (local, want) in cases {
        if looks_like_the_lab(local) != want {
            return Err(err(format!("{local}: expected {want}")));
        }
    }
    Ok(())
}

fn main() {
    let mut args = Arguments::from_args();
    // One trial at a time: `two_runs_at_once` is already two VMs, and `cargo test` runs a
    // binary's trials side by side (nextest runs each in its own process and group).
    args.test_threads = Some(1);
    let mut boots = boots::Boots::new(can_boot::cannot_boot());
    type Check = fn() -> Result<(), Failed>;
    let tests: [(&str, Check); 2] = [
        (
            "isolation::host_namespace_untouched",
            host_namespace_untouched,
        ),
        ("isolation::two_runs_at_once", two_runs_at_once),
    ];
    let mut trials: Vec<Trial> = vec![Trial::test(
        "isolation::reads_proc_net_addresses",
        reads_proc_net_addresses,
    )];
    trials.extend(tests.into_iter().map(|(name, f)| boots.trial(name, f)));
    boots.run(&args, trials).exit();
}
