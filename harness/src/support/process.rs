//! Child processes tied to the harness's lifetime.

/// Makes a child die with the thread that spawned it. The harness spawns from threads that live
/// as long as the run, so a killed harness takes its children along.
pub fn die_with_parent(cmd: &mut tokio::process::Command) {
    // SAFETY: prctl is async-signal-safe and touches only the child between fork and exec.
    unsafe {
        cmd.pre_exec(|| set_parent_death_signal(libc::SIGKILL));
    }
}

/// [`die_with_parent`] for a `std` command, with the signal the child gets: SIGTERM lets a
/// child that cleans up after itself (an image build) do so.
pub fn signal_on_parent_death(cmd: &mut std::process::Command, signal: libc::c_int) {
    use std::os::unix::process::CommandExt;
    // SAFETY: as in `die_with_parent`.
    unsafe {
        cmd.pre_exec(move || set_parent_death_signal(signal));
    }
}

/// Runs in the child between fork and exec.
fn set_parent_death_signal(signal: libc::c_int) -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_PDEATHSIG reads no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// How a child ended, in words for a verdict: `exited with status 1`, `killed by signal 9
/// (SIGKILL)`.
pub fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => {
            let name = nix::sys::signal::Signal::try_from(sig)
                .map(|s| format!(" ({})", s.as_str()))
                .unwrap_or_default();
            format!("killed by signal {sig}{name}")
        }
        _ => format!("ended ({status})"),
    }
}

/// How an owned child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// `exited with status 0`, `killed by signal 9 (SIGKILL)`: see [`describe_exit`].
    pub how: String,
    /// The harness stopped it ([`Owned::stop`], or the owner dropped it); otherwise it ended by
    /// itself, which for a service is a death.
    pub by_us: bool,
}

/// How [`describe_exit`] words a process that exited by itself with status 0 (for QEMU: the
/// guest powered off).
pub const CLEAN_EXIT: &str = "exited with status 0";

impl Ended {
    /// It exited by itself with status 0.
    pub fn success(&self) -> bool {
        self.how == CLEAN_EXIT
    }
}

/// A child process the harness started and owns: a task of its own reaps it and publishes how
/// it ended, so "did it die?" is a wait on [`Owned::ended`], never a poll; [`Owned::stop`] asks
/// with SIGTERM, gives it a grace period, then SIGKILLs. Dropping the owner kills the child.
/// Spawn the command with [`die_with_parent`] so that a harness killed outright, which runs no
/// destructor, takes the child along too.
pub struct Owned {
    name: String,
    pid: Option<u32>,
    ended: tokio::sync::watch::Receiver<Option<Ended>>,
    kill: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Tells how an [`Owned`] child ended, without owning it.
#[derive(Clone)]
pub struct EndWatch(tokio::sync::watch::Receiver<Option<Ended>>);

impl EndWatch {
    /// Resolves when the child has ended; `None` when its reaper gave up on it.
    pub async fn ended(mut self) -> Option<Ended> {
        self.0.wait_for(Option::is_some).await.ok()?.clone()
    }
}

/// How long a SIGKILLed child may take to be reaped before the stop gives up on it. A process in
/// uninterruptible sleep ignores even SIGKILL for a while; a stop must never hang on it.
const REAP_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The pipes of a child started by [`Owned::spawn`], those its command asked for.
pub struct Pipes {
    pub stdin: Option<tokio::process::ChildStdin>,
    pub stdout: Option<tokio::process::ChildStdout>,
    pub stderr: Option<tokio::process::ChildStderr>,
}

/// The pipes of a child started by [`Owned::spawn_std`].
pub struct StdPipes {
    pub stdout: Option<std::process::ChildStdout>,
    pub stderr: Option<std::process::ChildStderr>,
}

impl Owned {
    /// Starts `cmd` (an async child: the lab's services, QEMU) and owns it; `name` is how
    /// reports and logs call it (`dnsmasq`, `tgtd`, `QEMU node01`).
    pub fn spawn(
        name: impl Into<String>,
        cmd: &mut tokio::process::Command,
    ) -> std::io::Result<(Owned, Pipes)> {
        let mut child = cmd.spawn()?;
        let pipes = Pipes {
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
        };
        Ok((Owned::adopt(name, child), pipes))
    }

    /// Starts `cmd` from synchronous code (the lab process, image builds, the accelerator
    /// probe) and owns it. A thread reaps it; `on_drop` is the signal it gets when its owner is
    /// dropped: SIGKILL, or SIGTERM to its process group for a child that cleans up after
    /// itself (an image build runs as the leader of its own group).
    pub fn spawn_std(
        name: impl Into<String>,
        cmd: &mut std::process::Command,
        on_drop: nix::sys::signal::Signal,
    ) -> std::io::Result<(Owned, StdPipes)> {
        let mut child = cmd.spawn()?;
        let pipes = StdPipes {
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
        };
        let name = name.into();
        let pid = child.id();
        let (tx, ended) = tokio::sync::watch::channel(None);
        let (kill, kill_rx) = tokio::sync::oneshot::channel::<()>();
        let stopped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let by_us = stopped.clone();
        let who = name.clone();
        std::thread::spawn(move || {
            let how = match child.wait() {
                Ok(s) => describe_exit(s),
                Err(e) => format!("could not be waited for: {e}"),
            };
            let by_us = by_us.load(std::sync::atomic::Ordering::SeqCst);
            tracing::debug!(name = %who, pid, %how, by_us, "child ended");
            tx.send_replace(Some(Ended { how, by_us }));
        });
        // Asked to kill, or the owner is gone: signal the child unless it has ended already
        // (then its pid may belong to another process).
        let watch = ended.clone();
        std::thread::spawn(move || {
            let _ = kill_rx.blocking_recv();
            if watch.borrow().is_some() {
                return;
            }
            stopped.store(true, std::sync::atomic::Ordering::SeqCst);
            let Ok(raw) = i32::try_from(pid) else { return };
            let target = if on_drop == nix::sys::signal::Signal::SIGKILL {
                nix::unistd::Pid::from_raw(raw)
            } else {
                // The whole group: the child leads it.
                nix::unistd::Pid::from_raw(-raw)
            };
            let _ = nix::sys::signal::kill(target, on_drop);
        });
        Ok((
            Owned {
                name,
                pid: Some(pid),
                ended,
                kill: Some(kill),
            },
            pipes,
        ))
    }

    /// Takes over an async child spawned elsewhere.
    fn adopt(name: impl Into<String>, mut child: tokio::process::Child) -> Owned {
        let name = name.into();
        let pid = child.id();
        let (tx, ended) = tokio::sync::watch::channel(None);
        let (kill, kill_rx) = tokio::sync::oneshot::channel::<()>();
        let who = name.clone();
        crate::support::tasks::spawn(format!("reap:{name}"), async move {
            let (status, by_us) = tokio::select! {
                status = child.wait() => (status, false),
                // Asked to kill, or the owner is gone: either way the child goes too.
                _ = kill_rx => {
                    let _ = child.start_kill();
                    match tokio::time::timeout(REAP_LIMIT, child.wait()).await {
                        Ok(status) => (status, true),
                        Err(_) => {
                            tracing::error!(name = %who, ?pid, "did not exit {REAP_LIMIT:?} after SIGKILL");
                            return;
                        }
                    }
                }
            };
            let how = match status {
                Ok(s) => describe_exit(s),
                Err(e) => format!("could not be waited for: {e}"),
            };
            tracing::debug!(name = %who, ?pid, %how, by_us, "child ended");
            tx.send_replace(Some(Ended { how, by_us }));
        });
        Owned {
            name,
            pid,
            ended,
            kill: Some(kill),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// A handle that tells how it ended, for a task that outlives this borrow.
    pub fn end_watch(&self) -> EndWatch {
        EndWatch(self.ended.clone())
    }

    /// How it ended, if it has.
    pub fn has_ended(&self) -> Option<Ended> {
        self.ended.borrow().clone()
    }

    /// Resolves when it has ended; never, if it never does.
    pub async fn ended(&self) -> Ended {
        match self.end_watch().ended().await {
            Some(e) => e,
            // The reaper gave up on a child that would not die: it never ends, as far as we know.
            None => std::future::pending().await,
        }
    }

    /// Asks it to stop. Only while it has not ended: until its reaper publishes the end, the pid
    /// is still this child's and cannot have been reused.
    fn sigterm(&self) {
        if self.has_ended().is_some() {
            return;
        }
        if let Some(pid) = self.pid.and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }

    /// Kills it now (SIGKILL; for [`Owned::spawn_std`], its drop signal) without waiting.
    pub fn kill(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
    }

    /// [`Owned::stop`] for synchronous code: the same steps, looking every 20 ms.
    pub fn stop_blocking(mut self, grace: std::time::Duration) -> Option<Ended> {
        let watch = self.ended.clone();
        let poll = |limit: std::time::Duration| {
            let deadline = std::time::Instant::now() + limit;
            loop {
                if let Some(e) = watch.borrow().clone() {
                    return Some(e);
                }
                if std::time::Instant::now() >= deadline {
                    return None;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        };
        if let Some(e) = self.has_ended() {
            return Some(e);
        }
        self.sigterm();
        if let Some(e) = poll(grace) {
            return Some(Ended { by_us: true, ..e });
        }
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        poll(REAP_LIMIT).map(|e| Ended { by_us: true, ..e })
    }

    /// SIGTERM, up to `grace` for it to exit, then SIGKILL; `None` when even that did not end
    /// it within a few seconds.
    pub async fn stop(mut self, grace: std::time::Duration) -> Option<Ended> {
        if let Some(e) = self.has_ended() {
            return Some(e);
        }
        self.sigterm();
        if let Ok(e) = tokio::time::timeout(grace, self.ended()).await {
            return Some(Ended { by_us: true, ..e });
        }
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        tokio::time::timeout(REAP_LIMIT + std::time::Duration::from_secs(1), self.ended())
            .await
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::time::{Duration, Instant};

    fn spawn(script: &str) -> tokio::process::Child {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.args(["-c", script]).kill_on_drop(true);
        die_with_parent(&mut cmd);
        cmd.spawn().unwrap()
    }

    #[tokio::test]
    async fn an_end_of_its_own_is_published_and_not_taken_for_a_stop() {
        let owned = Owned::adopt("quitter", spawn("exit 3"));
        let e = tokio::time::timeout(Duration::from_secs(5), owned.ended())
            .await
            .unwrap();
        assert_eq!(
            e,
            Ended {
                how: "exited with status 3".into(),
                by_us: false
            }
        );
        assert_eq!(owned.has_ended(), Some(e));
    }

    #[tokio::test]
    async fn stop_asks_with_sigterm_first() {
        let owned = Owned::adopt("sleeper", spawn("exec sleep 30"));
        let t = Instant::now();
        let e = owned.stop(Duration::from_secs(5)).await.unwrap();
        assert_eq!(e.how, "killed by signal 15 (SIGTERM)");
        assert!(e.by_us);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    #[tokio::test]
    async fn a_child_that_ignores_sigterm_is_killed_after_the_grace() {
        // The shell ignores TERM, and the sleep it becomes keeps ignoring it (an ignored signal
        // stays ignored across exec): only SIGKILL ends it, and nothing is left behind.
        let owned = Owned::adopt("stubborn", spawn("trap '' TERM; exec sleep 30"));
        // Let the shell set its trap before the signal comes.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t = Instant::now();
        let e = owned.stop(Duration::from_millis(300)).await.unwrap();
        assert_eq!(e.how, "killed by signal 9 (SIGKILL)");
        assert!(e.by_us);
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
    }

    #[tokio::test]
    async fn dropping_the_owner_kills_the_child() {
        let owned = Owned::adopt("orphan", spawn("exec sleep 30"));
        let pid = owned.pid().unwrap() as i32;
        let rx = owned.ended.clone();
        drop(owned);
        let mut rx = rx;
        let e = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(Option::is_some))
            .await
            .unwrap()
            .unwrap()
            .clone()
            .unwrap();
        assert_eq!(e.how, "killed by signal 9 (SIGKILL)");
        // Reaped: the pid is gone.
        assert!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err());
    }

    #[test]
    fn exit_statuses_in_words() {
        assert_eq!(
            describe_exit(std::process::ExitStatus::from_raw(9)),
            "killed by signal 9 (SIGKILL)"
        );
        assert_eq!(
            describe_exit(std::process::ExitStatus::from_raw(1 << 8)),
            "exited with status 1"
        );
    }
}
