//! A guest's serial console: drained always (QEMU blocks when nobody reads), logged raw, and
//! cleaned into timestamped lines the expectations match against.
//!
//! Firmware, iPXE, the kernel and systemd all share this stream. It carries ANSI escapes
//! (colours, cursor moves, screen clears), `\r\n` line ends, bare `\r` for progress redraws and
//! the odd NUL or non-UTF-8 byte; [`Cleaner`] turns that into plain lines.
//!
//! The kernel prints to the same port without regard for a line a program is half-way through:
//! `...flags=3[   54.357371] piix4_smbus ...\r\n` and then the program's `\r\n`, or between
//! the `\r` and the `\n` the tty makes of a program's line end. The cleaner gives the kernel's
//! message a line of its own and puts the program's line back together from the bytes before
//! and after it, so a report line is never read with a kernel message in it, nor lost to it.

use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::services::events::RunClock;

/// Longer lines are cut: a runaway guest must not eat the harness's memory.
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct ConsoleLine {
    /// Seconds since the run started, when the line was completed.
    pub at: f64,
    pub text: String,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum Esc {
    #[default]
    Text,
    /// After ESC.
    Escape,
    /// In a CSI sequence (`ESC [`), until a final byte 0x40..=0x7e.
    Csi,
    /// In an OSC or other string sequence, until BEL or `ESC \`.
    Str,
    /// ESC seen inside a string sequence: `\` ends it.
    StrEscape,
    /// Character-set designations (`ESC (`, `ESC )`): one more byte.
    Charset,
}

/// Byte-at-a-time state machine, so escapes split across reads are handled.
#[derive(Debug, Default)]
pub struct Cleaner {
    state: Esc,
    line: Vec<u8>,
    /// A bare `\r` was seen: the next printable byte starts the line over (a progress redraw),
    /// unless `\n` follows, which just ends the line.
    pending_cr: bool,
    /// Where the text drawn after a bare `\r` starts in `line`. What is before it counts as
    /// overwritten once the line ends, unless that text is a kernel message: then the `\r` was
    /// the program's line end, split from its `\n` by the kernel's line.
    redraw_from: Option<usize>,
    /// The start of a program's line a kernel message broke into: the line the guest goes on
    /// with is its rest.
    interrupted: Vec<u8>,
}

/// Where a kernel message (`[   54.357371] ...`, the printk time stamp) starts inside `line`,
/// if not at its start.
fn kernel_message_inside(line: &[u8]) -> Option<usize> {
    (1..line.len()).find(|&at| line[at] == b'[' && is_printk_stamp(&line[at..]))
}

/// `[`, spaces, seconds, `.`, six digits of microseconds, `] `.
fn is_printk_stamp(s: &[u8]) -> bool {
    let Some(rest) = s.strip_prefix(b"[") else {
        return false;
    };
    let rest = &rest[rest.iter().take_while(|b| **b == b' ').count()..];
    let secs = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let rest = &rest[secs..];
    secs > 0
        && rest.len() >= 9
        && rest[0] == b'.'
        && rest[1..7].iter().all(u8::is_ascii_digit)
        && &rest[7..9] == b"] "
}

impl Cleaner {
    /// Feeds bytes; returns the lines they completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut done = Vec::new();
        for &b in bytes {
            match self.state {
                Esc::Text => self.text_byte(b, &mut done),
                Esc::Escape => {
                    if b == b'c' {
                        self.screen_cleared(&mut done);
                    }
                    self.state = match b {
                        b'[' => Esc::Csi,
                        b']' | b'P' | b'X' | b'^' | b'_' => Esc::Str,
                        b'(' | b')' | b'*' | b'+' => Esc::Charset,
                        _ => Esc::Text,
                    }
                }
                Esc::Csi => {
                    if (0x40..=0x7e).contains(&b) {
                        self.state = Esc::Text;
                        if b == b'J' {
                            self.screen_cleared(&mut done);
                        }
                    }
                }
                Esc::Str => match b {
                    0x07 => self.state = Esc::Text,
                    0x1b => self.state = Esc::StrEscape,
                    _ => {}
                },
                Esc::StrEscape => self.state = if b == b'\\' { Esc::Text } else { Esc::Str },
                Esc::Charset => self.state = Esc::Text,
            }
        }
        done
    }

    fn text_byte(&mut self, b: u8, done: &mut Vec<String>) {
        match b {
            0x1b => self.state = Esc::Escape,
            b'\n' => {
                self.pending_cr = false;
                self.end_line(done);
            }
            b'\r' => self.pending_cr = true,
            b'\t' => self.push(b' '),
            0x08 => {
                if self.line.len() > self.redraw_from.unwrap_or(0) {
                    self.line.pop();
                }
            }
            // Other control bytes (NUL, BEL, form feed, ...) carry no text.
            0x00..=0x1f | 0x7f => {}
            _ => self.push(b),
        }
    }

    fn push(&mut self, b: u8) {
        if self.pending_cr {
            self.pending_cr = false;
            // Keep what was redrawn so far visible: iPXE redraws "Configuring ... ok" in place,
            // and the final text is what a person saw. Overwriting from column 0 is the rule;
            // it is carried out when the line ends (`end_line`), an earlier redraw's now.
            if let Some(from) = self.redraw_from.take() {
                self.line.drain(..from);
            }
            self.redraw_from = Some(self.line.len());
            // A program redrawing its line after a kernel message broke into it (systemd's
            // "A start job is running" spinner) overwrites what it had drawn before.
            self.interrupted.clear();
        }
        // The cap is on the drawing: the one a redraw overwrites still sits before it.
        if self.line.len() - self.redraw_from.unwrap_or(0) < MAX_LINE {
            self.line.push(b);
        }
    }

    /// A terminal reset (`ESC c`) or an erase of the display (`CSI J`): what was on the screen
    /// is done with, so the line so far is a line, and no later one continues it (the kernel's
    /// setup code leaves `Probing EDD ... o` unfinished, then resets the terminal).
    fn screen_cleared(&mut self, done: &mut Vec<String>) {
        let drawn = self.line.len() > self.redraw_from.unwrap_or(0);
        if drawn || !self.interrupted.is_empty() {
            self.pending_cr = false;
            self.end_line(done);
        } else {
            self.line.clear();
            self.redraw_from = None;
        }
        if !self.interrupted.is_empty() {
            let held = std::mem::take(&mut self.interrupted);
            done.push(text(&held));
        }
    }

    fn end_line(&mut self, done: &mut Vec<String>) {
        let mut line = std::mem::take(&mut self.line);
        let from = self.redraw_from.take().unwrap_or(0);
        let kernel_at = if from > 0 && is_printk_stamp(&line[from..]) {
            // `text\r`, the kernel's line, then the `\n` that ends `text`: no redraw.
            Some(from)
        } else {
            line.drain(..from);
            kernel_message_inside(&line)
        };
        match kernel_at {
            Some(at) => {
                // The program's line goes on after the kernel's: keep its start for that.
                self.interrupted.extend_from_slice(&line[..at]);
                done.push(text(&line[at..]));
            }
            // Another kernel line: the program's line, if one was broken into, goes on later.
            None if is_printk_stamp(&line) => done.push(text(&line)),
            None => {
                let mut whole = std::mem::take(&mut self.interrupted);
                whole.extend_from_slice(&line);
                done.push(text(&whole));
            }
        }
    }

    /// The unfinished line, as it stands.
    pub fn partial(&self) -> String {
        let mut whole = self.interrupted.clone();
        whole.extend_from_slice(&self.line[self.redraw_from.unwrap_or(0)..]);
        String::from_utf8_lossy(&whole).to_string()
    }
}

fn text(line: &[u8]) -> String {
    String::from_utf8_lossy(line).trim_end().to_string()
}

#[derive(Default)]
struct Shared {
    lines: Vec<ConsoleLine>,
    partial: String,
    closed: bool,
    /// How the process behind the console ended, once its owner said.
    ended: Option<String>,
}

/// One guest's console. Cheap to clone.
#[derive(Clone)]
pub struct Console {
    shared: Arc<Mutex<Shared>>,
    changed: watch::Sender<u64>,
    /// The raw and the cleaned log, kept for the QEMU a power cycle starts next.
    sinks: Arc<Sinks>,
    clock: RunClock,
    /// Named after its node, as the log is (`console-node01.log` -> `console:node01`).
    task_name: String,
}

struct Sinks {
    raw: crate::support::filesink::FileSink,
    clean: crate::support::filesink::FileSink,
}

impl Console {
    /// Starts draining `reader` into the logs and the line list.
    pub fn spawn(
        reader: impl AsyncRead + Unpin + Send + 'static,
        raw_log: &Path,
        clean_log: &Path,
        clock: RunClock,
    ) -> std::io::Result<(Console, JoinHandle<()>)> {
        // Written by threads of their own: a slow disk must not stall the reader of the guest's
        // output (QEMU blocks when its serial pipe is full).
        let sinks = Sinks {
            raw: crate::support::filesink::FileSink::create(raw_log)?,
            clean: crate::support::filesink::FileSink::create(clean_log)?,
        };
        let (changed, _) = watch::channel(0u64);
        let node = raw_log
            .file_stem()
            .map(|s| {
                s.to_string_lossy()
                    .trim_start_matches("console-")
                    .to_string()
            })
            .unwrap_or_default();
        let console = Console {
            shared: Arc::new(Mutex::new(Shared::default())),
            changed,
            sinks: Arc::new(sinks),
            clock,
            task_name: format!("console:{node}"),
        };
        let task = console.drain(reader);
        Ok((console, task))
    }

    /// The same console, now fed by the QEMU a power cycle started: its lines follow the old
    /// ones in the same list and logs, and it counts as open again. Call it once the old
    /// reader has ended (`closed`).
    pub fn power_on_again(
        &self,
        reader: impl AsyncRead + Unpin + Send + 'static,
    ) -> JoinHandle<()> {
        {
            let mut s = self.lock();
            s.closed = false;
            s.ended = None;
        }
        self.changed.send_modify(|g| *g += 1);
        self.drain(reader)
    }

    fn drain(&self, mut reader: impl AsyncRead + Unpin + Send + 'static) -> JoinHandle<()> {
        let c = self.clone();
        crate::support::tasks::spawn(self.task_name.clone(), async move {
            let clock = c.clock;
            let mut cleaner = Cleaner::default();
            let mut buf = vec![0u8; 8192];
            loop {
                let n = match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                // The raw log is the evidence of last resort: write it before anything else.
                c.sinks.raw.write(buf[..n].to_vec());
                let done = cleaner.feed(&buf[..n]);
                let at = clock.now();
                if !done.is_empty() {
                    let mut text = String::new();
                    for l in &done {
                        text.push_str(&format!("[{at:9.3}] {l}\n"));
                    }
                    c.sinks.clean.write(text.into_bytes());
                }
                {
                    let mut s = c.lock();
                    s.lines
                        .extend(done.into_iter().map(|text| ConsoleLine { at, text }));
                    s.partial = cleaner.partial();
                }
                c.changed.send_modify(|g| *g += 1);
            }
            let rest = cleaner.partial();
            {
                let mut s = c.lock();
                if !rest.trim().is_empty() {
                    s.lines.push(ConsoleLine {
                        at: clock.now(),
                        text: rest.trim_end().to_string(),
                    });
                }
                s.partial.clear();
            }
            // Whoever sees the console closed may read the logs whole: the writers first.
            let sinks = c.sinks.clone();
            let _ = tokio::task::spawn_blocking(move || {
                sinks.raw.sync();
                sinks.clean.sync();
            })
            .await;
            c.lock().closed = true;
            c.changed.send_modify(|g| *g += 1);
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn lines_from(&self, index: usize) -> Vec<ConsoleLine> {
        let s = self.lock();
        s.lines.get(index..).map(<[_]>::to_vec).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.lock().lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn partial(&self) -> String {
        self.lock().partial.clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn tail(&self, n: usize) -> Vec<String> {
        let s = self.lock();
        let mut out: Vec<String> = s.lines[s.lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| l.text.clone())
            .collect();
        if !s.partial.trim().is_empty() {
            out.push(s.partial.clone());
        }
        out
    }

    /// Returns once `done` holds for this console, looked at again after each change.
    pub async fn wait_until(&self, done: impl Fn(&Console) -> bool) {
        let mut rx = self.subscribe();
        // The sender lives in `self`: `changed` cannot fail while this waits.
        while !done(self) && rx.changed().await.is_ok() {}
    }

    /// The guest's output ended (QEMU exited).
    pub fn closed(&self) -> bool {
        self.lock().closed
    }

    /// Records how the process writing this console ended (e.g. `killed by signal 9`).
    pub fn note_end(&self, how: &str) {
        self.lock().ended = Some(how.to_string());
        self.changed.send_modify(|g| *g += 1);
    }

    /// How the process writing this console ended, if known yet.
    pub fn ended(&self) -> Option<String> {
        self.lock().ended.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn clean(bytes: &[u8]) -> Vec<String> {
        Cleaner::default().feed(bytes)
    }

    #[test]
    fn strips_colours_and_cursor_moves() {
        assert_eq!(
            clean(b"\x1b[2J\x1b[1;1H\x1b[0;1mSeaBIOS\x1b[0m (version 1.16.2)\r\n"),
            vec!["SeaBIOS (version 1.16.2)"]
        );
        assert_eq!(clean(b"\x1b[?25lBooting\x1b[?25h\n"), vec!["Booting"]);
    }

    #[test]
    fn strips_osc_and_charset_sequences() {
        assert_eq!(
            clean(b"\x1b]0;title\x07a\x1b]2;t\x1b\\b\x1b(Bc\n"),
            vec!["abc"]
        );
    }

    #[test]
    fn escape_split_across_reads() {
        let mut c = Cleaner::default();
        assert!(c.feed(b"iPXE \x1b[").is_empty());
        assert!(c.feed(b"0").is_empty());
        assert_eq!(c.feed(b"minitialising\r\n"), vec!["iPXE initialising"]);
    }

    #[test]
    fn bare_cr_redraws_the_line() {
        assert_eq!(
            clean(b"Configuring (net0 52:54:00:aa:00:01)...\rConfiguring (net0 52:54:00:aa:00:01)...... ok\r\n"),
            vec!["Configuring (net0 52:54:00:aa:00:01)...... ok"]
        );
        // CR LF and CR CR LF end a line without losing it.
        assert_eq!(clean(b"a\r\r\nb\r\n"), vec!["a", "b"]);
        // Only the last drawing counts, and a backspace cannot reach into an overwritten one.
        assert_eq!(clean(b"one\rtwo\rsix\n"), vec!["six"]);
        assert_eq!(clean(b"abc\rx\x08\x08y\n"), vec!["y"]);
        let mut c = Cleaner::default();
        c.feed(b"10%\r20%");
        assert_eq!(c.partial(), "20%");
    }

    #[test]
    fn control_bytes_and_bad_utf8() {
        assert_eq!(clean(b"a\0b\x07c\td\n"), vec!["abc d"]);
        assert_eq!(clean(b"x\xffy\n"), vec!["x\u{fffd}y"]);
        assert_eq!(clean(b"ab\x08c\n"), vec!["ac"]);
    }

    #[test]
    fn long_lines_are_capped() {
        let mut long = vec![b'x'; MAX_LINE * 2];
        long.push(b'\n');
        assert_eq!(clean(&long)[0].len(), MAX_LINE);
        // A redraw after a capped line is a drawing of its own, capped on its own.
        let mut redrawn = vec![b'x'; MAX_LINE];
        redrawn.extend_from_slice(b"\rshort\n");
        assert_eq!(clean(&redrawn), vec!["short"]);
    }

    /// The bytes a bookworm guest sent when the kernel's SMBus message broke into the marker's
    /// initiator line (a CI run's raw console): the report line is whole again, after the
    /// kernel's, which is a line of its own.
    #[test]
    fn a_kernel_message_inside_a_line_is_taken_out_of_it() {
        let raw = b"netboot-harness: ibft initiator=iqn.2026-11.lab:node01 flags=3[   54.357371] \
piix4_smbus 0000:00:01.3: SMBus Host Controller at 0x700, revision 0\r\n\r\n\
\r\n[   55.331472] powernow_k8: Power state transitions not supported\r\n";
        assert_eq!(
            clean(raw),
            vec![
                "[   54.357371] piix4_smbus 0000:00:01.3: SMBus Host Controller at 0x700, revision 0",
                "netboot-harness: ibft initiator=iqn.2026-11.lab:node01 flags=3",
                "",
                "[   55.331472] powernow_k8: Power state transitions not supported",
            ]
        );
        // Broken inside a value, and with the rest coming in a later read.
        let mut c = Cleaner::default();
        assert_eq!(
            c.feed(b"netboot-harness: iface eth0 mac=52:54:00:aa:00:01 driver=e1\x1b[0m[12345.000001] sd 0:0:0:1: reset\r\n"),
            vec!["[12345.000001] sd 0:0:0:1: reset"]
        );
        assert_eq!(
            c.partial(),
            "netboot-harness: iface eth0 mac=52:54:00:aa:00:01 driver=e1"
        );
        assert_eq!(
            c.feed(b"000 addr=10.77.0.163/24\r\n"),
            vec!["netboot-harness: iface eth0 mac=52:54:00:aa:00:01 driver=e1000 addr=10.77.0.163/24"]
        );
    }

    /// The raw bytes of a bookworm guest's kernel start: the kernel's setup code leaves its line
    /// unfinished and resets the terminal before the kernel's first line. Kernel lines that
    /// follow a broken-into line are not its rest.
    #[test]
    fn a_terminal_reset_ends_the_line_and_kernel_lines_do_not_continue_one() {
        let raw = b"\rProbing EDD (edd=off to disable)... o\x1bc\x1b[?7l\x1b[2J[    0.000000] Linux version 6.1.0-57-amd64\r\n[    0.000000] Command line: BOOT_IMAGE=vmlinuz\r\n";
        assert_eq!(
            clean(raw),
            vec![
                "Probing EDD (edd=off to disable)... o",
                "[    0.000000] Linux version 6.1.0-57-amd64",
                "[    0.000000] Command line: BOOT_IMAGE=vmlinuz",
            ]
        );
        let raw = b"node01 login: [   70.000001] sd 0:0:0:1: reset\r\n[   70.000002] reboot: Restarting system\r\n\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2)\r\n";
        assert_eq!(
            clean(raw),
            vec![
                "[   70.000001] sd 0:0:0:1: reset",
                "[   70.000002] reboot: Restarting system",
                "node01 login:",
                "SeaBIOS (version 1.16.2)",
            ]
        );
        let raw = b"flags=[   54.357371] a\r\n[   54.400000] b\r\n3\r\n";
        assert_eq!(
            clean(raw),
            vec!["[   54.357371] a", "[   54.400000] b", "flags=3"]
        );
    }

    /// The tty turns a program's `\n` into `\r\n`; the kernel's line can come between the two.
    #[test]
    fn a_kernel_message_between_a_lines_cr_and_its_lf_leaves_the_line_whole() {
        let raw = b"netboot-harness: marker done\r[   60.651408] sd 0:0:0:1: Power-on or device reset occurred\r\n\nnext\r\n";
        assert_eq!(
            clean(raw),
            vec![
                "[   60.651408] sd 0:0:0:1: Power-on or device reset occurred",
                "netboot-harness: marker done",
                "next",
            ]
        );
    }

    /// systemd's spinner redraws its line with `\r`; a kernel line between two drawings leaves
    /// the last drawing, not the one the kernel broke into.
    #[test]
    fn a_line_redrawn_after_a_kernel_message_is_its_last_drawing() {
        let raw = b"\r[***   ] A start job is running\r[   61.000001] e1000: eth0 NIC Link is Up\r\n\r[ ***  ] A start job is running\r[  OK  ] Started foo.service\r\n";
        assert_eq!(
            clean(raw),
            vec![
                "[   61.000001] e1000: eth0 NIC Link is Up",
                "[  OK  ] Started foo.service",
            ]
        );
    }

    #[test]
    fn lines_that_only_look_like_a_kernel_message_stay_whole() {
        let lines = [
            "[   54.357371] piix4_smbus 0000:00:01.3: SMBus Host Controller",
            "[  OK  ] Started iscsid.service - iSCSI initiator daemon (iscsid).",
            "Booting from ROM... [1.5] not a stamp [ 2.34567] nor this [x.123456] ",
            "netboot-harness: step 1 out [   3.000000]no space after",
        ];
        let mut raw = Vec::new();
        for l in lines {
            raw.extend_from_slice(l.as_bytes());
            raw.extend_from_slice(b"\r\n");
        }
        let want: Vec<String> = lines.iter().map(|l| l.trim_end().to_string()).collect();
        assert_eq!(clean(&raw), want);
    }

    #[test]
    fn partial_line_is_visible() {
        let mut c = Cleaner::default();
        c.feed(b"iPXE> ");
        assert_eq!(c.partial(), "iPXE> ");
    }

    /// A console whose logs are `raw.log` and `clean.txt` in a folder of its own, fed by the
    /// returned writer as QEMU's stdout would.
    fn fed_console(
        prefix: &str,
    ) -> (
        tempfile::TempDir,
        tokio::io::DuplexStream,
        Console,
        JoinHandle<()>,
    ) {
        let tmp = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        let (w, r) = tokio::io::duplex(64);
        let (console, task) = Console::spawn(
            r,
            &tmp.path().join("raw.log"),
            &tmp.path().join("clean.txt"),
            RunClock::start(),
        )
        .unwrap();
        (tmp, w, console, task)
    }

    #[tokio::test]
    async fn console_drains_logs_and_notifies() {
        let (tmp, mut w, console, task) = fed_console("nbh-console-");
        let dir = tmp.path();
        let mut rx = console.subscribe();
        w.write_all(b"\x1b[0mhello\r\nwor").await.unwrap();
        while console.is_empty() {
            rx.changed().await.unwrap();
        }
        assert_eq!(console.lines_from(0)[0].text, "hello");
        w.write_all(b"ld\r\nprompt# ").await.unwrap();
        drop(w);
        task.await.unwrap();
        assert!(console.closed());
        let texts: Vec<String> = console.lines_from(0).into_iter().map(|l| l.text).collect();
        assert_eq!(texts, vec!["hello", "world", "prompt#"]);
        assert_eq!(console.tail(2), vec!["world", "prompt#"]);
        let raw = std::fs::read(dir.join("raw.log")).unwrap();
        assert_eq!(raw, b"\x1b[0mhello\r\nworld\r\nprompt# ");
        let cleaned = std::fs::read_to_string(dir.join("clean.txt")).unwrap();
        assert!(cleaned.contains("] hello"), "{cleaned}");
        tmp.close().unwrap();
    }

    #[tokio::test]
    async fn after_a_power_cycle_the_next_qemus_lines_follow_in_the_same_logs() {
        let (tmp, mut w, console, task) = fed_console("nbh-console-cycle-");
        let dir = tmp.path();
        w.write_all(b"first boot\r\n").await.unwrap();
        drop(w);
        task.await.unwrap();
        console.note_end("killed by signal 15 (SIGTERM)");
        assert!(console.closed() && console.ended().is_some());

        let (mut w, r) = tokio::io::duplex(64);
        let task = console.power_on_again(r);
        assert!(!console.closed(), "open again for the steps");
        assert_eq!(
            console.ended(),
            None,
            "the old QEMU's end is not the new one's"
        );
        w.write_all(b"second boot\r\n").await.unwrap();
        drop(w);
        task.await.unwrap();
        let texts: Vec<String> = console.lines_from(0).into_iter().map(|l| l.text).collect();
        assert_eq!(texts, vec!["first boot", "second boot"]);
        let raw = std::fs::read(dir.join("raw.log")).unwrap();
        assert_eq!(raw, b"first boot\r\nsecond boot\r\n");
        tmp.close().unwrap();
    }
}
