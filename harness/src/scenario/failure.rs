//! How a scenario fails: the console texts that mean failure, and the one failure a negative
//! scenario expects (its step, cause and evidence).

#[derive(Debug, Clone)]
pub struct FailPattern {
    pub text: String,
    /// Why this text means failure, for the verdict.
    pub meaning: String,
}

#[derive(Debug, Clone)]
pub struct ExpectedFailure {
    /// The step at which the run must fail.
    pub step: String,
    /// Why it must fail there.
    pub cause: Cause,
    /// Text that one piece of the failure's evidence (a console line the guest printed, a
    /// record a service made, an exit status) must contain. Never matched against the
    /// harness's own wording: that wording is the same whatever the real cause.
    pub evidence: Option<String>,
}

/// Why a step failed, as the verdict records it and `expect_failure.cause` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// The step's time ran out: what it waited for never came.
    Timeout,
    /// A console showed one of the run's failure texts (`fail_on`).
    ConsoleFailure,
    /// The node's QEMU ended while the step waited (a `qemu_exit` step: ended other than by a
    /// guest poweroff).
    QemuExited,
    /// A `shell` command finished with a status other than 0.
    ShellStatus,
    /// A `shell` command never finished: the guest's shell stopped answering.
    ShellSilent,
    /// A service (or the lab) died under the run.
    ServiceDied,
    /// A service record contradicts the step (`iscsi_logins_all`: a login that does not match).
    RecordMismatch,
    /// The guest's own report contradicts what the lab served (`ibft_matches_lab`,
    /// `root_on_session`).
    LabMismatch,
    /// The harness could not carry out the step's own action (typing, a restart, reading the
    /// LUN): nothing the guest did.
    ActionFailed,
}

impl Cause {
    pub const ALL: [Cause; 9] = [
        Cause::Timeout,
        Cause::ConsoleFailure,
        Cause::QemuExited,
        Cause::ShellStatus,
        Cause::ShellSilent,
        Cause::ServiceDied,
        Cause::RecordMismatch,
        Cause::LabMismatch,
        Cause::ActionFailed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cause::Timeout => "timeout",
            Cause::ConsoleFailure => "console-failure",
            Cause::QemuExited => "qemu-exited",
            Cause::ShellStatus => "shell-status",
            Cause::ShellSilent => "shell-silent",
            Cause::ServiceDied => "service-died",
            Cause::RecordMismatch => "record-mismatch",
            Cause::LabMismatch => "lab-mismatch",
            Cause::ActionFailed => "action-failed",
        }
    }

    /// Whether a failure of this cause comes with evidence from the guest or a service. A
    /// timeout is an absence, and a failed action is the harness's own: neither has any.
    pub fn has_evidence(self) -> bool {
        !matches!(self, Cause::Timeout | Cause::ActionFailed)
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Text the firmware or kernel prints only when the chain is broken. Matching one ends the
/// current step at once instead of letting it run into its timeout.
pub fn default_fail_patterns() -> Vec<FailPattern> {
    [
        (
            "Boot from SAN device 0x80 failed",
            "iPXE could not boot from the iSCSI disk",
        ),
        (
            "Could not open SAN device",
            "iPXE could not log in to the iSCSI target or open the LUN",
        ),
        // iPXE wraps its console at 80 columns, and after `Configuring (net0 MAC)` and its
        // dots the word "succeeded" lands on the next line.
        (
            "No configuration methods",
            "iPXE got no address (DHCP failed)",
        ),
        // SeaBIOS, when no boot entry worked: with a boot NIC, its option ROM never ran or
        // gave up. It retries only after 60 s, the same way.
        (
            "No bootable device.",
            "the BIOS found nothing to boot (the boot NIC's option ROM did not run, or gave up)",
        ),
        // iPXE's autoboot, when it has tried every NIC and none booted.
        (
            "No more network devices",
            "iPXE tried every network device and booted from none",
        ),
        ("Kernel panic", "the guest kernel panicked"),
        ("ALERT!", "the initramfs dropped to its emergency shell"),
        (
            "Gave up waiting for root",
            "the initramfs could not find the root device",
        ),
    ]
    .into_iter()
    .map(|(t, m)| FailPattern {
        text: t.to_string(),
        meaning: m.to_string(),
    })
    .collect()
}
