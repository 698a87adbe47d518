//! A file that async code appends to without blocking: the bytes go to a thread of its own,
//! which writes and flushes each chunk as it comes. Logs that are evidence (the raw serial
//! console, the event log) are written this way, so that a slow disk never stalls the task that
//! reads a guest's console or records a service's event.
//!
//! What was handed over before the process was killed outright may be lost if the thread had
//! not written it yet (it writes within microseconds of the hand-over); dropping the sink waits
//! for everything handed over to be written.

use std::io::Write;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

enum Chunk {
    Bytes(Vec<u8>),
    /// Answered once everything before it is written and flushed.
    Barrier(mpsc::Sender<()>),
}

pub struct FileSink {
    tx: Option<mpsc::Sender<Chunk>>,
    thread: Option<JoinHandle<()>>,
}

impl FileSink {
    /// Creates (truncates) `path` and starts its writer.
    pub fn create(path: &Path) -> std::io::Result<FileSink> {
        let mut file = std::fs::File::create(path)?;
        let (tx, rx) = mpsc::channel::<Chunk>();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let thread = std::thread::Builder::new()
            .name(format!("sink:{name}"))
            .spawn(move || {
                for chunk in rx {
                    match chunk {
                        Chunk::Bytes(b) => {
                            let _ = file.write_all(&b);
                            let _ = file.flush();
                        }
                        Chunk::Barrier(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })?;
        Ok(FileSink {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Hands `bytes` over to the writer; never blocks.
    pub fn write(&self, bytes: Vec<u8>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Chunk::Bytes(bytes));
        }
    }

    /// Waits until everything handed over so far is in the file (tests, and readers that
    /// must see the file complete).
    pub fn sync(&self) {
        let (done, wait) = mpsc::channel();
        if let Some(tx) = &self.tx {
            if tx.send(Chunk::Barrier(done)).is_ok() {
                let _ = wait.recv();
            }
        }
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        // Closing the channel ends the writer once it has written the rest.
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_handed_over_is_written_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let sink = FileSink::create(&path).unwrap();
        for i in 0..1000 {
            sink.write(format!("{i}\n").into_bytes());
        }
        sink.sync();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1000);
        assert_eq!(text.lines().last(), Some("999"));
        sink.write(b"last\n".to_vec());
        drop(sink);
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .ends_with("999\nlast\n"));
    }
}
