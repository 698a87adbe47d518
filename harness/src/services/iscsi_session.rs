//! A logged-in connection through the login proxy, followed PDU by PDU.
//!
//! The proxy reads each PDU's header to know where the next one starts (lengths only: SCSI
//! commands and data pass through unread) and records the two things a shutdown is judged by:
//! the initiator's Logout Request, and which side closed the connection, after or without the
//! target's Logout Response. Each PDU goes on in one write, as it came, so the follower adds a
//! header read per PDU and no copy that a plain splice would not make.

use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::services::events::{EventKind, EventLog, IscsiSession};
use crate::support::iscsi_pdu::{self, Digests, BHS_LEN, OP_LOGOUT_REQUEST, OP_LOGOUT_RESPONSE};

/// Read-ahead per direction: a burst of small PDUs costs one system call.
const READ_AHEAD: usize = 64 * 1024;

/// How one direction of the connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    /// The sender closed its end between two PDUs.
    Closed,
    /// The sender closed or failed in the middle of a PDU, or the receiver went away.
    Broken(String),
}

/// Carries the connection until both directions have ended, then records who closed it.
pub(super) async fn follow(
    client: TcpStream,
    server: TcpStream,
    digests: Digests,
    session: IscsiSession,
    events: Arc<EventLog>,
) {
    // iSCSI initiators and tgtd both turn Nagle off; a relay that kept it on would hold back
    // the last segment of each PDU behind the previous one's acknowledgement.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Each direction says when it ended; the earlier end is the side that closed.
    let upstream = async {
        let end = relay(client_read, server_write, digests, |bhs| {
            if iscsi_pdu::opcode(bhs) == Some(OP_LOGOUT_REQUEST) {
                events.push(EventKind::IscsiLogout {
                    session: session.clone(),
                    reason: iscsi_pdu::logout_reason(bhs).to_string(),
                });
            }
        })
        .await;
        (end, Instant::now())
    };
    let downstream = async {
        let mut answer = None;
        let end = relay(server_read, client_write, digests, |bhs| {
            if iscsi_pdu::opcode(bhs) == Some(OP_LOGOUT_RESPONSE) {
                answer = Some(iscsi_pdu::logout_response(bhs).to_string());
            }
        })
        .await;
        (end, Instant::now(), answer)
    };
    let ((up, up_at), (down, down_at, logout_response)) = tokio::join!(upstream, downstream);
    for (dir, end) in [("from the initiator", up), ("from the target", down)] {
        if let End::Broken(why) = end {
            tracing::debug!(initiator = %session.initiator, "iscsi connection {dir}: {why}");
        }
    }
    let closed_by = if up_at <= down_at {
        "initiator"
    } else {
        "target"
    };
    events.push(EventKind::IscsiConnectionClosed {
        session,
        closed_by: closed_by.to_string(),
        logout_response,
    });
}

/// Passes PDUs from `from` to `to` until `from` ends, showing each header to `seen`; then
/// closes `to`'s sending side, as the sender closed its own.
async fn relay<R, W>(from: R, mut to: W, digests: Digests, mut seen: impl FnMut(&[u8])) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut from = BufReader::with_capacity(READ_AHEAD, from);
    let mut pdu = Vec::with_capacity(READ_AHEAD);
    let end = loop {
        match read_pdu(&mut from, &mut pdu, digests).await {
            Ok(true) => {}
            Ok(false) => break End::Closed,
            Err(e) => break End::Broken(e),
        }
        seen(&pdu[..BHS_LEN]);
        if let Err(e) = to.write_all(&pdu).await {
            break End::Broken(format!("the receiver went away: {e}"));
        }
    };
    let _ = to.shutdown().await;
    end
}

/// Reads one whole PDU into `pdu`. `Ok(false)`: a clean end before its first byte.
async fn read_pdu<R: AsyncRead + Unpin>(
    from: &mut R,
    pdu: &mut Vec<u8>,
    digests: Digests,
) -> Result<bool, String> {
    let bhs = match read_bhs(from).await {
        Ok(Some(bhs)) => bhs,
        Ok(None) => return Ok(false),
        Err(ShortHeader { cause: Some(e), .. }) => return Err(format!("read failed: {e}")),
        Err(ShortHeader { got, .. }) => {
            return Err(format!("closed after {got} bytes of a PDU header"))
        }
    };
    let len = iscsi_pdu::full_feature_len(&bhs, digests);
    pdu.clear();
    pdu.extend_from_slice(&bhs);
    pdu.resize(len, 0);
    from.read_exact(&mut pdu[BHS_LEN..])
        .await
        .map_err(|e| format!("a PDU of {len} bytes cut short: {e}"))?;
    Ok(true)
}

/// A PDU header that did not arrive whole: how much of it did, and the read error if one ended it.
#[derive(Debug)]
pub(super) struct ShortHeader {
    pub got: usize,
    pub cause: Option<std::io::Error>,
}

/// Reads one Basic Header Segment; `Ok(None)`: a clean end before its first byte.
pub(super) async fn read_bhs<R: AsyncRead + Unpin>(
    from: &mut R,
) -> Result<Option<[u8; BHS_LEN]>, ShortHeader> {
    let mut bhs = [0u8; BHS_LEN];
    let mut got = 0;
    while got < BHS_LEN {
        match from.read(&mut bhs[got..]).await {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(ShortHeader { got, cause: None }),
            Ok(n) => got += n,
            Err(e) => {
                return Err(ShortHeader {
                    got,
                    cause: Some(e),
                })
            }
        }
    }
    Ok(Some(bhs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdu(opcode: u8, byte1: u8, byte2: u8, data: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; BHS_LEN];
        b[0] = opcode;
        b[1] = byte1;
        b[2] = byte2;
        let n = data.len() as u32;
        b[5..8].copy_from_slice(&n.to_be_bytes()[1..]);
        b.extend_from_slice(data);
        b.resize(BHS_LEN + data.len().div_ceil(4) * 4, 0);
        b
    }

    #[tokio::test]
    async fn relays_pdus_whole_and_shows_each_header() {
        // A SCSI command with 5 bytes of data (padded to 8), a logout, then the end.
        let mut input = pdu(0x01, 0x80, 0, b"hello");
        input.extend(pdu(OP_LOGOUT_REQUEST, 0x80, 0, b""));
        let mut out = Vec::new();
        let mut seen = Vec::new();
        let end = relay(&input[..], &mut out, Digests::default(), |h| {
            seen.push(iscsi_pdu::opcode(h))
        })
        .await;
        assert_eq!(end, End::Closed);
        assert_eq!(out, input);
        assert_eq!(seen, vec![Some(0x01), Some(OP_LOGOUT_REQUEST)]);
    }

    #[tokio::test]
    async fn digests_lengthen_the_pdu() {
        // With both digests the header has 4 more bytes, and so does the non-empty data.
        let mut input = pdu(0x01, 0x80, 0, b"");
        input.extend([0u8; 4]);
        input.extend(pdu(0x05, 0x80, 0, b"abcd")[..BHS_LEN].iter());
        input.extend([0u8; 4]); // header digest
        input.extend(b"abcd");
        input.extend([0u8; 4]); // data digest
        let mut out = Vec::new();
        let mut n = 0;
        let both = Digests {
            header: true,
            data: true,
        };
        let end = relay(&input[..], &mut out, both, |_| n += 1).await;
        assert_eq!((end, n), (End::Closed, 2));
        assert_eq!(out, input);
        // Read without digests the same bytes do not divide into whole PDUs.
        let mut n = 0;
        let end = relay(&input[..], &mut Vec::new(), Digests::default(), |_| n += 1).await;
        assert!(matches!(end, End::Broken(_)), "{end:?}");
    }

    #[tokio::test]
    async fn a_pdu_cut_short_is_a_broken_end() {
        let whole = pdu(0x01, 0x80, 0, b"12345678");
        let mut out = Vec::new();
        let end = relay(&whole[..BHS_LEN + 3], &mut out, Digests::default(), |_| {}).await;
        assert!(
            matches!(&end, End::Broken(w) if w.contains("cut short")),
            "{end:?}"
        );
        let end = relay(&whole[..20], &mut out, Digests::default(), |_| {}).await;
        assert!(
            matches!(&end, End::Broken(w) if w.contains("20 bytes")),
            "{end:?}"
        );
        assert!(out.is_empty());
    }
}
