//! The bare comparison run of `bench`: the same lab, services and QEMU command line, but no
//! console cleaning and no step engine, only the raw serial bytes scanned for one text. The
//! time it takes the guest to print that text is what a person with a shell script and the
//! same QEMU command would see; `bench` sets it against the harness-driven runs.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::services::events::RunClock;

/// Copies `from` to `raw_log` as it comes and returns the run-clock time at which `needle`
/// first appeared, or `None` if it did not within `limit` (or the stream ended).
pub async fn time_to_text<R: AsyncRead + Unpin>(
    mut from: R,
    raw_log: &Path,
    needle: &[u8],
    clock: RunClock,
    limit: Duration,
) -> std::io::Result<Option<f64>> {
    let mut log = tokio::fs::File::create(raw_log).await?;
    let mut buf = vec![0u8; 16 * 1024];
    // The end of the previous chunk, so a text split across two reads is still found.
    let mut carry: Vec<u8> = Vec::new();
    let scan = async {
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(None);
            }
            let at = clock.now();
            log.write_all(&buf[..n]).await?;
            carry.extend_from_slice(&buf[..n]);
            if carry.windows(needle.len()).any(|w| w == needle) {
                return Ok(Some(at));
            }
            let keep = needle.len().saturating_sub(1).min(carry.len());
            carry.drain(..carry.len() - keep);
        }
    };
    let found = match tokio::time::timeout(limit, scan).await {
        Ok(r) => r?,
        Err(_) => None,
    };
    log.flush().await?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn finds_a_text_split_across_reads_and_keeps_the_bytes() {
        let tmp = tempfile::Builder::new()
            .prefix("nbh-bare-")
            .tempdir()
            .unwrap();
        let dir = tmp.path();
        let log = dir.join("raw.log");
        let (mut w, r) = tokio::io::duplex(8);
        let writer = tokio::spawn(async move {
            for part in [
                &b"\x1b[2Jboot... EXT4-fs (sd"[..],
                b"a1): mounted filesystem\r\n",
            ] {
                // The reader stops at the text; what comes after may find the pipe closed.
                let _ = w.write_all(part).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let got = time_to_text(
            r,
            &log,
            b"EXT4-fs (sda1): mounted filesystem",
            RunClock::start(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        writer.await.unwrap();
        assert!(got.is_some());
        let raw = std::fs::read(&log).unwrap();
        assert!(raw.starts_with(b"\x1b[2Jboot"), "{raw:?}");
        // Not there at all: the stream ends and nothing is found.
        let (w, r) = tokio::io::duplex(8);
        drop(w);
        let none = time_to_text(r, &log, b"never", RunClock::start(), Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(none, None);
    }
}
