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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

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
