//! QEMU guests: the command line built from typed values (never a shell string), the process,
//! its serial console and QMP socket.

pub mod accel_probe;
pub mod boot_files;
pub mod console;
pub mod ovmf;
pub mod qmp;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::sync::mpsc;

use crate::guest::boot_files::SearchPath;
use crate::lab::TapPlan;
use crate::scenario::Node;

/// How QEMU executes guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Tcg,
    Kvm,
}

impl std::str::FromStr for Accel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcg" => Ok(Accel::Tcg),
            "kvm" => Ok(Accel::Kvm),
            other => Err(format!(
                "unknown accelerator `{other}`; valid: `tcg`, `kvm`, `auto`"
            )),
        }
    }
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        })
    }
}

/// KVM only when it can really run firmware: `/dev/kvm` opening is not enough (on some hosts
/// the module is a paravirtual stand-in without VMX/SVM, and SeaBIOS/iPXE reset-loop under it).
/// The CPU flags and modules rule out the known stand-ins cheaply; what passes them must still
/// boot the firmware in a probe ([`crate::guest::accel_probe`]).
///
/// Decided once per process: `bench` runs many boots, and a probe is a QEMU start.
pub fn detect_accel() -> (Accel, String) {
    static DETECTED: std::sync::OnceLock<(Accel, String)> = std::sync::OnceLock::new();
    DETECTED.get_or_init(probe_accel).clone()
}

fn probe_accel() -> (Accel, String) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let modules = std::fs::read_to_string("/proc/modules").unwrap_or_default();
    let pvm = modules.lines().any(|l| l.starts_with("kvm_pvm"));
    match (dev, hw, pvm) {
        (true, true, false) => {
            match crate::guest::accel_probe::firmware_runs(Accel::Kvm, crate::guest::accel_probe::PROBE_LIMIT) {
                Ok(took) => (
                    Accel::Kvm,
                    format!(
                        "/dev/kvm opens, the CPU has VMX/SVM, and a probe ran SeaBIOS and iPXE under KVM in {:.1}s",
                        took.as_secs_f64()
                    ),
                ),
                Err(e) => (Accel::Tcg, format!("KVM looked usable but its probe failed: {e}")),
            }
        }
        (false, _, _) => (Accel::Tcg, "/dev/kvm is missing or not accessible".into()),
        (true, false, _) => (
            Accel::Tcg,
            "/dev/kvm opens but the CPU shows no VMX/SVM flags".into(),
        ),
        (true, true, true) => (
            Accel::Tcg,
            "KVM is the kvm_pvm stand-in, which cannot run firmware".into(),
        ),
    }
}

/// Everything QEMU needs for one node.
#[derive(Debug, Clone)]
pub struct GuestConfig {
    pub node: Node,
    pub taps: Vec<TapPlan>,
    pub accel: Accel,
    pub qmp_socket: PathBuf,
    /// For `firmware: { embedded-script: ... }`: the rendered script, handed to `ipxe.lkrn`.
    pub embedded_script: Option<PathBuf>,
    /// Where the NIC ROMs and `ipxe.lkrn` are found.
    pub files: SearchPath,
    /// A `platform: uefi` node's firmware flash: OVMF's code and the node's own variables.
    pub uefi: Option<UefiFlash>,
    /// The node's local disk (`local_disk: image`): its per-run overlay.
    pub local_disk: Option<PathBuf>,
}

/// The two flash devices of a UEFI node.
#[derive(Debug, Clone)]
pub struct UefiFlash {
    /// OVMF's code, shared and read-only.
    pub code: PathBuf,
    /// The node's variable store: a copy of OVMF's template in the run directory, so that
    /// what the firmware writes (boot entries, the boot order) stays with this run and lasts
    /// across the node's power cycles.
    pub vars: PathBuf,
}

impl GuestConfig {
    /// QEMU's name for the netdev of the node's NIC with `mac` (what QMP's `set_link` takes).
    pub fn netdev_of(&self, mac: crate::scenario::MacAddr) -> Option<String> {
        self.node
            .nics
            .iter()
            .position(|nic| nic.mac == mac)
            .map(netdev_id)
    }

    /// The argument vector after the program name.
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |s: &str| a.push(OsString::from(s));
        push("-name");
        push(&format!(
            "{},process=nbh-{}",
            self.node.name, self.node.name
        ));
        // graphics=off makes SeaBIOS mirror its text to the serial port, so firmware and iPXE
        // output reach the same stream as the kernel's (OVMF writes to the serial port anyway).
        // `pc` under either platform: see crate::scenario::Platform.
        push("-machine");
        push("pc,graphics=off");
        push("-accel");
        push(&self.accel.to_string());
        push("-m");
        push(&self.node.memory_mib.to_string());
        push("-smp");
        push(&self.node.cpus.to_string());
        // Also keeps q35-style defaults (a DVD drive) away, which OVMF would try first.
        push("-nodefaults");
        if let Some(flash) = &self.uefi {
            push("-drive");
            push(&format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={}",
                flash.code.display()
            ));
            push("-drive");
            push(&format!(
                "if=pflash,format=raw,unit=1,file={}",
                flash.vars.display()
            ));
        }
        push("-no-user-config");
        push("-display");
        push("none");
        push("-serial");
        push("stdio");
        push("-monitor");
        push("none");
        push("-qmp");
        push(&format!(
            "unix:{},server=on,wait=off",
            self.qmp_socket.display()
        ));
        if let Some(script) = &self.embedded_script {
            push("-kernel");
            push(&self.files.ipxe_lkrn().display().to_string());
            push("-initrd");
            push(&script.display().to_string());
        }
        for (i, nic) in self.node.nics.iter().enumerate() {
            let tap = self
                .taps
                .iter()
                .find(|t| t.nic_index == i)
                .map(|t| t.name.clone())
                .unwrap_or_default();
            let netdev = netdev_id(i);
            push("-netdev");
            push(&format!(
                "tap,id={netdev},ifname={tap},script=no,downscript=no"
            ));
            // With an embedded script the firmware is ipxe.lkrn alone, as on a NIC flashed with
            // a custom ROM: no stock option ROM may take over the boot when the script gives up.
            // Otherwise the model's ROM, or QEMU's default where that is the one that runs
            // (see crate::guest::boot_files::NIC_ROMS).
            // chain-snponly: OVMF's own PXE boots, through its own virtio-net driver, and no
            // option ROM's iPXE may answer first or take over when it gives up.
            let no_rom = self.embedded_script.is_some()
                || self.node.firmware == crate::scenario::Firmware::ChainSnponly;
            let rom = if no_rom {
                Some(String::new())
            } else {
                self.files.romfile(nic.model, self.node.platform)
            };
            let mut dev = format!(
                "{},netdev={netdev},mac={},bus=pci.0,addr={:#x}",
                nic.model.qemu_device(),
                nic.mac,
                nic.slot,
            );
            if let Some(rom) = rom {
                dev.push_str(&format!(",romfile={rom}"));
            }
            if nic.boot {
                dev.push_str(",bootindex=1");
            }
            push("-device");
            push(&dev);
        }
        a.extend(self.local_disk.iter().flat_map(|d| local_disk_args(d)));
        a
    }
}

/// A local disk on a virtio SCSI controller, so that Linux names it `sda` as it names the iSCSI
/// LUN, tried by the firmware after the boot NIC. The controller comes after the NICs and takes
/// the first PCI slot they left free, so the NICs' slots (and the guest's NIC order) are as the
/// scenario gives them.
fn local_disk_args(disk: &Path) -> Vec<OsString> {
    [
        "-device".to_string(),
        "virtio-scsi-pci,id=localscsi,bus=pci.0".to_string(),
        "-drive".to_string(),
        format!("if=none,id=localdisk,format=qcow2,file={}", disk.display()),
        "-device".to_string(),
        "scsi-hd,drive=localdisk,bus=localscsi.0,bootindex=2".to_string(),
    ]
    .into_iter()
    .map(OsString::from)
    .collect()
}

/// The id of the netdev behind the node's `i`th NIC.
fn netdev_id(i: usize) -> String {
    format!("net{i}")
}

/// A running guest.
pub struct Guest {
    pub name: String,
    pub stdout: Option<tokio::process::ChildStdout>,
    /// Bytes to type on the serial console.
    pub input: mpsc::Sender<Vec<u8>>,
    pub argv: Vec<OsString>,
    /// The QEMU process. Killed from outside it must be told apart from one that powered
    /// off, and the steps learn of either at once: its owner publishes how it ended.
    pub process: crate::support::process::Owned,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("could not start QEMU for node {node}: {source}")]
pub struct GuestError {
    pub node: String,
    #[source]
    pub source: std::io::Error,
}

impl Guest {
    /// Starts QEMU; `stderr_log` receives QEMU's own messages. The argv is written to
    /// `<run_dir>/qemu-<node>.args` by the caller for the artifacts.
    pub fn start(cfg: &GuestConfig, stderr_log: &Path) -> Result<Guest, GuestError> {
        let name = cfg.node.name.clone();
        let err = |source| GuestError {
            node: name.clone(),
            source,
        };
        let argv = cfg.args();
        // Appended to: after a power cycle the next QEMU's messages follow the first's.
        let stderr = std::fs::File::options()
            .create(true)
            .append(true)
            .open(stderr_log)
            .map_err(err)?;
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(&argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true);
        crate::support::process::die_with_parent(&mut cmd);
        let (process, pipes) =
            crate::support::process::Owned::spawn(format!("QEMU {name}"), &mut cmd).map_err(err)?;
        let stdout = pipes.stdout;
        let mut stdin = pipes.stdin;
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
        crate::support::tasks::spawn(format!("qemu-input:{name}"), async move {
            while let Some(bytes) = rx.recv().await {
                let Some(w) = stdin.as_mut() else { break };
                if w.write_all(&bytes).await.is_err() || w.flush().await.is_err() {
                    break;
                }
            }
        });
        Ok(Guest {
            process,
            name,
            stdout,
            input: tx,
            argv,
        })
    }

    /// Stops the guest at once: a test guest has nothing to save.
    pub async fn stop(self) {
        let ended = self.process.stop(std::time::Duration::ZERO).await;
        tracing::debug!(node = %self.name, ?ended, "QEMU stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Nic, NicModel};

    fn node() -> Node {
        Node {
            name: "node01".into(),
            memory_mib: 1024,
            cpus: 1,
            firmware: crate::scenario::Firmware::Rom,
            platform: crate::scenario::Platform::Bios,
            image: None,
            local_disk: None,
            nics: vec![
                Nic {
                    model: NicModel::Rtl8139,
                    mac: "52:54:00:bb:00:01".parse().unwrap(),
                    slot: 3,
                    boot: false,
                    segment: None,
                },
                Nic {
                    model: NicModel::E1000,
                    mac: "52:54:00:aa:00:01".parse().unwrap(),
                    slot: 4,
                    boot: true,
                    segment: None,
                },
            ],
        }
    }

    fn joined(cfg: &GuestConfig) -> String {
        cfg.args()
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A host tree with bookworm's layout, and the search path over it.
    fn files() -> (tempfile::TempDir, SearchPath) {
        let t = tempfile::tempdir().unwrap();
        for f in [
            "usr/lib/ipxe/qemu/pxe-rtl8139.rom",
            "usr/lib/ipxe/qemu/pxe-e1000.rom",
            "usr/lib/ipxe/ipxe.lkrn",
        ] {
            let p = t.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        let s = SearchPath::new(vec![], t.path());
        (t, s)
    }

    #[test]
    fn qemu_args_carry_nics_slots_roms_and_boot_order() {
        let taps = vec![
            TapPlan {
                node: "node01".into(),
                nic_index: 0,
                name: "t0n0".into(),
                mac: node().nics[0].mac,
                bridge: "nbr0".into(),
            },
            TapPlan {
                node: "node01".into(),
                nic_index: 1,
                name: "t0n1".into(),
                mac: node().nics[1].mac,
                bridge: "nbr0".into(),
            },
        ];
        let (t, files) = files();
        let root = std::fs::canonicalize(t.path()).unwrap();
        let cfg = GuestConfig {
            node: node(),
            taps,
            accel: Accel::Tcg,
            qmp_socket: "/tmp/run/qmp.sock".into(),
            embedded_script: None,
            uefi: None,
            files,
            local_disk: None,
        };
        let s = joined(&cfg);
        assert!(s.contains("-machine pc,graphics=off"), "{s}");
        assert!(s.contains("-accel tcg"), "{s}");
        assert!(s.contains("-serial stdio"), "{s}");
        assert!(s.contains("-nodefaults"), "{s}");
        assert!(
            s.contains("-netdev tap,id=net0,ifname=t0n0,script=no,downscript=no"),
            "{s}"
        );
        assert!(s.contains(&format!(
            "-device rtl8139,netdev=net0,mac=52:54:00:bb:00:01,bus=pci.0,addr=0x3,romfile={}/usr/lib/ipxe/qemu/pxe-rtl8139.rom -netdev",
            root.display()
        )), "{s}");
        assert!(s.contains(&format!(
            "-device e1000,netdev=net1,mac=52:54:00:aa:00:01,bus=pci.0,addr=0x4,romfile={}/usr/lib/ipxe/qemu/pxe-e1000.rom,bootindex=1",
            root.display()
        )), "{s}");
        assert_eq!(s.matches("bootindex").count(), 1);
        assert!(!s.contains("-kernel"), "{s}");
        assert!(
            s.contains("-qmp unix:/tmp/run/qmp.sock,server=on,wait=off"),
            "{s}"
        );
        // The name QMP's set_link takes for a NIC is the netdev the arguments gave it.
        assert_eq!(cfg.netdev_of(node().nics[1].mac).as_deref(), Some("net1"));
        assert_eq!(cfg.netdev_of("52:54:00:cc:00:01".parse().unwrap()), None);
    }

    /// `n` without taps, UEFI, a local disk or an embedded script.
    fn plain(n: Node, files: SearchPath) -> GuestConfig {
        GuestConfig {
            node: n,
            taps: vec![],
            accel: Accel::Tcg,
            qmp_socket: "/tmp/run/qmp.sock".into(),
            embedded_script: None,
            uefi: None,
            files,
            local_disk: None,
        }
    }

    #[test]
    fn a_local_disk_is_a_scsi_disk_the_firmware_tries_after_the_boot_nic() {
        let (_t, files) = files();
        let mut cfg = plain(node(), files);
        cfg.local_disk = Some("/tmp/run/scratch/local-node01.qcow2".into());
        let args: Vec<String> = cfg
            .args()
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        let tail = &args[args.len() - 6..];
        assert_eq!(
            tail,
            [
                "-device",
                "virtio-scsi-pci,id=localscsi,bus=pci.0",
                "-drive",
                "if=none,id=localdisk,format=qcow2,file=/tmp/run/scratch/local-node01.qcow2",
                "-device",
                "scsi-hd,drive=localdisk,bus=localscsi.0,bootindex=2",
            ]
        );
        // After every NIC: it takes a slot they left free.
        let last_nic = args.iter().rposition(|a| a.starts_with("e1000,")).unwrap();
        assert!(last_nic < args.len() - 6, "{args:?}");
        // Without one, no disk at all: the LUN is the node's only disk.
        let mut none = cfg.clone();
        none.local_disk = None;
        assert!(!joined(&none).contains("scsi"));
    }

    #[test]
    fn a_virtio_boot_nic_keeps_qemus_default_rom() {
        let mut n = node();
        n.nics[1].model = NicModel::VirtioNet;
        let (_t, files) = files();
        let cfg = plain(n, files);
        let s = joined(&cfg);
        assert!(
            s.contains(
                "-device virtio-net-pci,netdev=net1,mac=52:54:00:aa:00:01,bus=pci.0,addr=0x4,bootindex=1"
            ),
            "{s}"
        );
        assert_eq!(s.matches("romfile=").count(), 1, "{s}");
    }

    #[test]
    fn an_embedded_script_boots_ipxe_lkrn_with_the_script_as_initrd() {
        let (t, files) = files();
        let mut n = node();
        n.nics[0].model = NicModel::VirtioNet;
        let cfg = GuestConfig {
            node: n,
            taps: vec![],
            accel: Accel::Tcg,
            qmp_socket: "/tmp/run/qmp.sock".into(),
            embedded_script: Some("/tmp/run/ipxe-embedded-node01.ipxe".into()),
            uefi: None,
            files,
            local_disk: None,
        };
        let s = joined(&cfg);
        let lkrn = std::fs::canonicalize(t.path())
            .unwrap()
            .join("usr/lib/ipxe/ipxe.lkrn");
        assert!(
            s.contains(&format!(
                "-kernel {} -initrd /tmp/run/ipxe-embedded-node01.ipxe",
                lkrn.display()
            )),
            "{s}"
        );
        // No NIC may bring a ROM, not even QEMU's default.
        assert_eq!(s.matches("romfile=").count(), 2, "{s}");
        assert!(!s.contains("romfile=/"), "{s}");
    }

    #[test]
    fn accel_parses() {
        assert_eq!("tcg".parse::<Accel>().unwrap(), Accel::Tcg);
        assert!("xen".parse::<Accel>().unwrap_err().contains("valid"));
        let (_, why) = detect_accel();
        assert!(!why.is_empty());
    }
}
