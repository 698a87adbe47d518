//! iSCSI: tgtd exports the run's disk copy; the harness's proxy stands in front of it on the
//! bridge address and records every login (see [`crate::iscsi_proxy`]).
//!
//! tgtd listens on loopback only, inside the lab namespace. Its control socket lives under
//! /run, which the lab made a private tmpfs, so parallel runs never reach each other's tgtd.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

use super::{log_tail, ServiceContext, ServiceError};
use crate::iscsi_proxy::{IscsiProxy, LoginFaults};
use crate::scenario::Scenario;

/// tgtd's portal inside the namespace; the guests reach it through the proxy.
const UPSTREAM: &str = "127.0.0.1:3260";

pub struct Iscsi {
    child: Child,
    proxy: IscsiProxy,
    adm_log: PathBuf,
}

impl Iscsi {
    pub async fn start(s: &Scenario, cx: &ServiceContext) -> Result<Iscsi, ServiceError> {
        let log_path = cx.run_dir.join("tgtd.log");
        let adm_log = cx.run_dir.join("tgtadm.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| other(format!("{}: {e}", log_path.display())))?;
        let log2 = log.try_clone().map_err(|e| other(e.to_string()))?;
        let mut cmd = Command::new("tgtd");
        cmd.arg("-f")
            .arg("--iscsi")
            .arg(format!("portal={UPSTREAM}"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .kill_on_drop(true);
        crate::process::die_with_parent(&mut cmd);
        let mut child = cmd.spawn().map_err(|source| ServiceError::Spawn {
            service: "iscsi",
            program: "tgtd (Debian package tgt)".into(),
            source,
        })?;

        // Ready when tgtadm gets an answer on the control socket.
        let mut ready = false;
        for _ in 0..100 {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(ServiceError::NotReady {
                    service: "iscsi",
                    message: format!("tgtd exited at once ({status})"),
                    log_tail: log_tail(&log_path, 20),
                });
            }
            if tgtadm(
                &adm_log,
                &["--lld", "iscsi", "--op", "show", "--mode", "system"],
            )
            .await
            .is_ok()
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut this = Iscsi {
            child,
            proxy: IscsiProxy::start(
                SocketAddr::from((cx.server_ip, 3260)),
                UPSTREAM.parse().map_err(|e| other(format!("{e}")))?,
                LoginFaults::default(),
                cx.events.clone(),
                &cx.run_dir.join("iscsi-logins.jsonl"),
            )
            .await
            .map_err(|e| other(format!("login proxy on {}:3260: {e}", cx.server_ip)))?,
            adm_log: adm_log.clone(),
        };
        if !ready {
            kill(&mut this.child).await;
            return Err(ServiceError::NotReady {
                service: "iscsi",
                message: "tgtd did not answer tgtadm within 10s".into(),
                log_tail: log_tail(&log_path, 20),
            });
        }
        let lun = s.iscsi.lun.to_string();
        let disk = cx.disk.display().to_string();
        let steps: [&[&str]; 3] = [
            &[
                "--lld",
                "iscsi",
                "--op",
                "new",
                "--mode",
                "target",
                "--tid",
                "1",
                "-T",
                s.iscsi.target.as_str(),
            ],
            &[
                "--lld",
                "iscsi",
                "--op",
                "new",
                "--mode",
                "logicalunit",
                "--tid",
                "1",
                "--lun",
                &lun,
                "-b",
                &disk,
            ],
            &[
                "--lld", "iscsi", "--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL",
            ],
        ];
        for args in steps {
            if let Err(message) = tgtadm(&adm_log, args).await {
                this.stop().await;
                return Err(ServiceError::NotReady {
                    service: "iscsi",
                    message,
                    log_tail: log_tail(&log_path, 20),
                });
            }
        }
        tracing::info!(target = %s.iscsi.target, lun = s.iscsi.lun, "iscsi up");
        Ok(this)
    }

    /// tgtd ignores SIGTERM while it has targets: ask it to exit, then kill it, then reap it.
    pub async fn stop(self) {
        let Iscsi {
            mut child,
            proxy,
            adm_log,
        } = self;
        proxy.stop();
        let _ = tgtadm(&adm_log, &["--op", "delete", "--mode", "system", "--force"]).await;
        if tokio::time::timeout(Duration::from_secs(3), child.wait())
            .await
            .is_err()
        {
            kill(&mut child).await;
        }
    }
}

async fn kill(child: &mut Child) {
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
}

fn other(message: String) -> ServiceError {
    ServiceError::Other {
        service: "iscsi",
        message,
    }
}

/// Runs tgtadm, appends the command and its output to `log`; Err carries the output.
async fn tgtadm(log: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("tgtadm")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("tgtadm (Debian package tgt): {e}"))?;
    let text = format!(
        "$ tgtadm {}\n{}{}exit: {}\n",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status
    );
    if let Ok(mut f) = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .await
    {
        let _ = f.write_all(text.as_bytes()).await;
    }
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`tgtadm {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
