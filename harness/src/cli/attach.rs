//! After the steps: `run --keep` holds the lab, services and guests up until Ctrl-C, and
//! `run --console` puts a guest's serial console on the terminal.
//!
//! Both run in the lab process, which owns everything that stays up. For `--console` the host
//! side hands the lab its terminal as stdin (see [`crate::cli::run`]); the lab puts it in
//! character mode, so keys reach the guest as typed (the guest echoes them, as a serial console
//! does) and Ctrl-] is seen at once. Ctrl-C keeps its meaning: the terminal sends SIGINT to
//! every process of the run, which ends the run in the usual orderly way.

use std::io::{Read, Seek, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::guest::console::Console;

/// Ctrl-]: detaches, as in telnet and virsh.
pub const DETACH: u8 = 0x1d;

/// Name of the file in the run directory where the host side leaves the lab process's pid as
/// the host sees it: inside its own PID namespace the lab is pid 1 and cannot tell.
pub const LAB_PID_FILE: &str = ".lab.pid";

/// What a person needs to poke at a kept lab.
pub struct KeptLab<'a> {
    pub run_dir: &'a Path,
    pub bridge: &'a str,
    pub server: String,
    pub nodes: Vec<String>,
}

impl KeptLab<'_> {
    pub fn instructions(&self) -> String {
        let pid = std::fs::read_to_string(self.run_dir.join(LAB_PID_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        let mut s = String::from("the lab, its services and guests stay up until Ctrl-C\n");
        match pid {
            Some(pid) => {
                s.push_str(&format!("  lab process   pid {pid}\n"));
                s.push_str(&format!(
                    "  enter it      nsenter -t {pid} -n -m    (then: ip addr, ss -ltnp, ...)\n"
                ));
            }
            None => s.push_str("  lab process   pid unknown (the host side did not record it)\n"),
        }
        s.push_str(&format!(
            "  bridge        {} ({})\n",
            self.bridge, self.server
        ));
        for n in &self.nodes {
            s.push_str(&format!(
                "  console       {}    (raw; `tail -f` it; console-{n}.txt has the lines)\n",
                self.run_dir.join(format!("console-{n}.log")).display()
            ));
        }
        s
    }
}

/// Resolves when the run is cancelled (Ctrl-C, SIGTERM, SIGHUP).
pub async fn cancelled(mut rx: watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Why a console session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Detached {
    Key,
    Cancelled,
    GuestStopped,
}

/// Shows the guest's raw console output on stderr and sends stdin's bytes to the guest, until
/// Ctrl-], cancellation, or the guest's end. `raw_log` is the console's raw log, which the
/// console task writes as bytes arrive.
pub async fn console_session(
    raw_log: &Path,
    console: &Console,
    input: mpsc::Sender<Vec<u8>>,
    cancel: watch::Receiver<bool>,
) -> std::io::Result<Detached> {
    let _raw = TerminalMode::character(std::io::stdin())?;
    let keys = stdin_chunks();
    tokio::select! {
        d = pump(raw_log, console, input, keys) => d,
        _ = cancelled(cancel) => Ok(Detached::Cancelled),
    }
}

async fn pump(
    raw_log: &Path,
    console: &Console,
    input: mpsc::Sender<Vec<u8>>,
    mut keys: mpsc::Receiver<Vec<u8>>,
) -> std::io::Result<Detached> {
    let mut log = std::fs::File::open(raw_log)?;
    // Start a little before the end, so the prompt the guest printed last is on screen.
    let end = log.seek(std::io::SeekFrom::End(0))?;
    log.seek(std::io::SeekFrom::Start(end.saturating_sub(512)))?;
    let mut buf = vec![0u8; 8192];
    let mut tick = tokio::time::interval(Duration::from_millis(40));
    loop {
        tokio::select! {
            k = keys.recv() => {
                let Some(k) = k else { return Ok(Detached::Key) };
                let (send, detach) = match k.iter().position(|b| *b == DETACH) {
                    Some(i) => (&k[..i], true),
                    None => (&k[..], false),
                };
                if !send.is_empty() && input.send(send.to_vec()).await.is_err() {
                    return Ok(Detached::GuestStopped);
                }
                if detach {
                    return Ok(Detached::Key);
                }
            }
            _ = tick.tick() => {
                let mut err = std::io::stderr();
                loop {
                    let n = log.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    err.write_all(&buf[..n])?;
                }
                err.flush()?;
                if console.closed() {
                    return Ok(Detached::GuestStopped);
                }
            }
        }
    }
}

/// Stdin's bytes as they are typed. The reading thread blocks in read(2) and is left behind
/// when the session ends; it goes with the lab process.
fn stdin_chunks() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 256];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// A terminal's settings, put back when dropped.
pub struct TerminalMode<F: AsFd> {
    fd: F,
    saved: nix::sys::termios::Termios,
}

impl<F: AsFd> TerminalMode<F> {
    /// Remembers the settings as they are, changing nothing.
    pub fn save(fd: F) -> std::io::Result<Self> {
        let saved = nix::sys::termios::tcgetattr(fd.as_fd())?;
        Ok(TerminalMode { fd, saved })
    }

    /// Keys delivered one by one and not echoed; Ctrl-C still signals. Enter sends CR, as a
    /// serial terminal does.
    pub fn character(fd: F) -> std::io::Result<Self> {
        use nix::sys::termios::{
            tcsetattr, InputFlags, LocalFlags, SetArg, SpecialCharacterIndices,
        };
        let me = Self::save(fd)?;
        let mut t = me.saved.clone();
        t.local_flags
            .remove(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::IEXTEN);
        t.input_flags.remove(InputFlags::ICRNL | InputFlags::IXON);
        t.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
        t.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
        tcsetattr(me.fd.as_fd(), SetArg::TCSADRAIN, &t)?;
        Ok(me)
    }
}

impl<F: AsFd> Drop for TerminalMode<F> {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            self.fd.as_fd(),
            nix::sys::termios::SetArg::TCSADRAIN,
            &self.saved,
        );
    }
}

/// The lab process's pid as the host sees it: the child `unshare --fork` started.
pub fn lab_pid(unshare_pid: u32) -> Option<u32> {
    let children = PathBuf::from(format!("/proc/{unshare_pid}/task/{unshare_pid}/children"));
    for _ in 0..50 {
        if let Some(pid) = std::fs::read_to_string(&children)
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
        {
            return Some(pid);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::events::RunClock;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn instructions_name_pid_nsenter_bridge_and_console() {
        let tmp = tempfile::Builder::new()
            .prefix("nbh-attach-")
            .tempdir()
            .unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join(LAB_PID_FILE), "4242\n").unwrap();
        let k = KeptLab {
            run_dir: dir,
            bridge: "nbr0",
            server: "10.77.0.1/24".into(),
            nodes: vec!["node01".into()],
        };
        let s = k.instructions();
        assert!(s.contains("pid 4242"), "{s}");
        assert!(s.contains("nsenter -t 4242 -n -m"), "{s}");
        assert!(s.contains("nbr0 (10.77.0.1/24)"), "{s}");
        assert!(s.contains("console-node01.log"), "{s}");
        tmp.close().unwrap();
    }

    #[test]
    fn lab_pid_is_the_child_of_unshare() {
        use std::process::Stdio;
        // The grandchild gets no handle of the test's: killing `sh` alone would leave `sleep`
        // holding the test's output open (a leaky test to nextest) until it ends by itself.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 5 & wait"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = lab_pid(child.id());
        if let Some(p) = pid.and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(pid.is_some_and(|p| p != child.id()), "{pid:?}");
    }

    #[tokio::test]
    async fn keys_go_to_the_guest_until_ctrl_bracket() {
        let tmp = tempfile::Builder::new()
            .prefix("nbh-attach-pump-")
            .tempdir()
            .unwrap();
        let dir = tmp.path();
        let (mut w, r) = tokio::io::duplex(64);
        let raw = dir.join("console.log");
        let (console, _t) =
            Console::spawn(r, &raw, &dir.join("console.txt"), RunClock::start()).unwrap();
        w.write_all(b"login# ").await.unwrap();
        let (to_guest, mut typed) = mpsc::channel(8);
        let (keys_tx, keys) = mpsc::channel(8);
        keys_tx.send(b"ls\r".to_vec()).await.unwrap();
        keys_tx.send(vec![b'x', DETACH, b'y']).await.unwrap();
        let d = pump(&raw, &console, to_guest, keys).await.unwrap();
        assert_eq!(d, Detached::Key);
        assert_eq!(typed.recv().await.unwrap(), b"ls\r");
        assert_eq!(typed.recv().await.unwrap(), b"x");
        assert!(typed.try_recv().is_err(), "bytes after Ctrl-] were sent");
        tmp.close().unwrap();
    }
}
