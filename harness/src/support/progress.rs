//! Live progress on the terminal: an image build by stage, each boot by the last step met.
//!
//! Only when stderr is a terminal: under `cargo test`, CI or a pipe nothing is drawn and
//! nothing changes in the output. Spinners go to stderr; reports stay on stdout. While spinners
//! are drawn, log lines to stderr go through [`StderrWriter`], which lifts the spinners out of
//! the way for the line instead of tearing them.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// Spinners are drawn only for a person watching.
pub fn enabled() -> bool {
    std::io::stderr().is_terminal()
}

static ACTIVE: Mutex<Option<MultiProgress>> = Mutex::new(None);

fn active() -> Option<MultiProgress> {
    ACTIVE.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Writes to stderr, around whatever spinners are on screen.
pub struct StderrWriter;

impl Write for StderrWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match active() {
            Some(mp) => mp.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for StderrWriter {
    type Writer = StderrWriter;
    fn make_writer(&'a self) -> StderrWriter {
        StderrWriter
    }
}

/// A set of spinner lines, one per key; cleared from the screen when dropped.
pub struct Board {
    mp: MultiProgress,
    bars: Mutex<BTreeMap<String, ProgressBar>>,
}

impl Board {
    /// None when stderr is not a terminal.
    pub fn start() -> Option<Board> {
        if !enabled() {
            return None;
        }
        let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        *ACTIVE.lock().unwrap_or_else(|p| p.into_inner()) = Some(mp.clone());
        Some(Board {
            mp,
            bars: Mutex::new(BTreeMap::new()),
        })
    }

    /// Adds a line `<prefix>  <seconds since now>  <message>`.
    pub fn line(&self, key: &str, prefix: &str, message: &str) {
        let style = ProgressStyle::with_template("{spinner} {prefix}  {secs:>7}  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .with_key("secs", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.1}s", s.elapsed().as_secs_f64());
            });
        let pb = self.mp.add(ProgressBar::new_spinner());
        pb.set_style(style);
        pb.set_prefix(prefix.to_string());
        pb.set_message(message.to_string());
        pb.enable_steady_tick(Duration::from_millis(100));
        self.lock().insert(key.to_string(), pb);
    }

    pub fn set(&self, key: &str, message: &str) {
        if let Some(pb) = self.lock().get(key) {
            pb.set_message(message.to_string());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ProgressBar>> {
        self.bars.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        for pb in self.lock().values() {
            pb.finish_and_clear();
        }
        let _ = self.mp.clear();
        *ACTIVE.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_drawn_without_a_terminal() {
        // cargo test captures stderr: it is never a terminal here.
        if !std::io::stderr().is_terminal() {
            assert!(Board::start().is_none());
            assert!(active().is_none());
        }
    }
}
