//! Standard output for the parts that own child processes and a cleanup (`run`, `bench`, image
//! builds, the lab): a reader that went away must not stop them half-way. `println!` panics
//! when stdout is a closed pipe; [`print`] drops the text instead and the work goes on, its exit
//! status still saying how it went. (Verbs that only print end at that write instead, killed by
//! SIGPIPE as Unix tools are: see `main.rs`.)

use std::io::{ErrorKind, Write};

/// Writes `text` to stdout as it is (no newline added). A closed pipe drops it; any other error
/// is said on stderr, since the text is then lost for a reason the user may fix.
pub fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let written = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::BrokenPipe => {}
        Err(e) => eprintln!("netboot-harness: cannot write to stdout: {e}"),
    }
}
