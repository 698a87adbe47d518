//! iSCSI Login PDUs (RFC 7143, section 11.12 and 11.13): just enough to read who logs in to
//! what and how the target answered. After the login phase only PDU lengths and the logout
//! (sections 11.14 and 11.15) are read; SCSI traffic stays opaque.
//!
//! A PDU starts with a 48-byte Basic Header Segment (BHS), then optional Additional Header
//! Segments (AHS, length in 4-byte words at byte 4), then the data segment (length in bytes at
//! bytes 5..8, padded to a multiple of 4). Digests are negotiated during login but only take
//! effect after it, so login PDUs never carry them.

use std::collections::BTreeMap;

pub const BHS_LEN: usize = 48;
/// Login text is small; anything larger is not a login we want to buffer.
pub const MAX_LOGIN_DATA: usize = 64 * 1024;

pub const OP_LOGIN_REQUEST: u8 = 0x03;
pub const OP_LOGIN_RESPONSE: u8 = 0x23;
pub const OP_LOGOUT_REQUEST: u8 = 0x06;
pub const OP_LOGOUT_RESPONSE: u8 = 0x26;

/// Which digests a session negotiated: each adds 4 bytes to a full-feature PDU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Digests {
    pub header: bool,
    pub data: bool,
}

impl Digests {
    /// Takes in the keys of one login response: the target's answer is the negotiated value.
    pub fn learn(&mut self, keys: &BTreeMap<String, String>) {
        let crc = |k: &str| keys.get(k).map(|v| v.eq_ignore_ascii_case("CRC32C"));
        if let Some(h) = crc("HeaderDigest") {
            self.header = h;
        }
        if let Some(d) = crc("DataDigest") {
            self.data = d;
        }
    }
}

/// Length of a full-feature-phase PDU from its BHS: AHS, header digest, the padded data
/// segment and its digest. No upper bound: the data segment length field is 24 bits.
pub fn full_feature_len(bhs: &[u8; BHS_LEN], digests: Digests) -> usize {
    let ahs = bhs[4] as usize * 4;
    let data = u32::from_be_bytes([0, bhs[5], bhs[6], bhs[7]]) as usize;
    let header_digest = if digests.header { 4 } else { 0 };
    let data_digest = if digests.data && data > 0 { 4 } else { 0 };
    BHS_LEN + ahs + header_digest + data.div_ceil(4) * 4 + data_digest
}

/// A Logout Request's reason (RFC 7143 section 11.14.1), in words.
pub fn logout_reason(bhs: &[u8]) -> &'static str {
    match bhs.get(1).map(|b| b & 0x7f) {
        Some(0) => "close the session",
        Some(1) => "close the connection",
        Some(2) => "remove the connection for recovery",
        _ => "unknown reason",
    }
}

/// A Logout Response's answer (RFC 7143 section 11.15.1), in words.
pub fn logout_response(bhs: &[u8]) -> &'static str {
    match bhs.get(2) {
        Some(0) => "closed successfully",
        Some(1) => "CID not found",
        Some(2) => "connection recovery is not supported",
        Some(3) => "cleanup failed",
        _ => "unknown response",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PduError {
    #[error("truncated PDU: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("data segment of {0} bytes is larger than a login may be ({MAX_LOGIN_DATA})")]
    TooLarge(usize),
    #[error("opcode {0:#04x} is not a login PDU")]
    NotLogin(u8),
    #[error("login text is not key=value pairs: {0}")]
    BadText(String),
}

/// A login response's status (RFC 7143 section 11.13.5), by the name a scenario uses for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoginStatus {
    TargetMovedTemporarily,
    TargetMovedPermanently,
    InitiatorError,
    AuthenticationFailure,
    AuthorizationFailure,
    NotFound,
    TargetRemoved,
    UnsupportedVersion,
    TooManyConnections,
    MissingParameter,
    CantIncludeInSession,
    SessionTypeNotSupported,
    SessionDoesNotExist,
    InvalidDuringLogin,
    TargetError,
    ServiceUnavailable,
    OutOfResources,
}

impl LoginStatus {
    /// Every status with its class and detail bytes.
    pub const TABLE: [(LoginStatus, u8, u8, &'static str); 17] = [
        (
            LoginStatus::TargetMovedTemporarily,
            1,
            1,
            "target-moved-temporarily",
        ),
        (
            LoginStatus::TargetMovedPermanently,
            1,
            2,
            "target-moved-permanently",
        ),
        (LoginStatus::InitiatorError, 2, 0, "initiator-error"),
        (
            LoginStatus::AuthenticationFailure,
            2,
            1,
            "authentication-failure",
        ),
        (
            LoginStatus::AuthorizationFailure,
            2,
            2,
            "authorization-failure",
        ),
        (LoginStatus::NotFound, 2, 3, "not-found"),
        (LoginStatus::TargetRemoved, 2, 4, "target-removed"),
        (LoginStatus::UnsupportedVersion, 2, 5, "unsupported-version"),
        (
            LoginStatus::TooManyConnections,
            2,
            6,
            "too-many-connections",
        ),
        (LoginStatus::MissingParameter, 2, 7, "missing-parameter"),
        (
            LoginStatus::CantIncludeInSession,
            2,
            8,
            "cant-include-in-session",
        ),
        (
            LoginStatus::SessionTypeNotSupported,
            2,
            9,
            "session-type-not-supported",
        ),
        (
            LoginStatus::SessionDoesNotExist,
            2,
            10,
            "session-does-not-exist",
        ),
        (
            LoginStatus::InvalidDuringLogin,
            2,
            11,
            "invalid-during-login",
        ),
        (LoginStatus::TargetError, 3, 0, "target-error"),
        (LoginStatus::ServiceUnavailable, 3, 1, "service-unavailable"),
        (LoginStatus::OutOfResources, 3, 2, "out-of-resources"),
    ];

    pub fn from_bytes(class: u8, detail: u8) -> Option<LoginStatus> {
        Self::TABLE
            .iter()
            .find(|(_, c, d, _)| (*c, *d) == (class, detail))
            .map(|(s, ..)| *s)
    }

    pub fn name(self) -> &'static str {
        Self::TABLE
            .iter()
            .find(|(s, ..)| *s == self)
            .map(|(.., n)| *n)
            .unwrap_or("unknown")
    }
}

/// The parts of a login PDU we record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginPdu {
    pub opcode: u8,
    /// Transit bit: the sender wants to move to the next stage.
    pub transit: bool,
    pub current_stage: u8,
    pub next_stage: u8,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub itt: u32,
    /// Login response only: status class (0 success, 1 redirect, 2 initiator error, 3 target error).
    pub status_class: u8,
    pub status_detail: u8,
    pub keys: BTreeMap<String, String>,
}

impl LoginPdu {
    pub fn is_request(&self) -> bool {
        self.opcode == OP_LOGIN_REQUEST
    }
    pub fn initiator_name(&self) -> Option<&str> {
        self.keys.get("InitiatorName").map(String::as_str)
    }
    pub fn target_name(&self) -> Option<&str> {
        self.keys.get("TargetName").map(String::as_str)
    }
    /// A discovery session asks for no target, only for SendTargets.
    pub fn session_type(&self) -> &str {
        self.keys
            .get("SessionType")
            .map(String::as_str)
            .unwrap_or("Normal")
    }
    /// The response completes the login into full-feature phase.
    pub fn completes_login(&self) -> bool {
        self.opcode == OP_LOGIN_RESPONSE
            && self.status_class == 0
            && self.transit
            && self.next_stage == 3
    }
}

/// Total length of the PDU whose BHS starts `buf`, once the BHS is complete.
pub fn pdu_len(buf: &[u8]) -> Result<usize, PduError> {
    if buf.len() < BHS_LEN {
        return Err(PduError::Truncated {
            need: BHS_LEN,
            have: buf.len(),
        });
    }
    let ahs = buf[4] as usize * 4;
    let data = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
    if data > MAX_LOGIN_DATA {
        return Err(PduError::TooLarge(data));
    }
    Ok(BHS_LEN + ahs + data.div_ceil(4) * 4)
}

/// Opcode of the PDU at the start of `buf` (immediate bit masked off).
pub fn opcode(buf: &[u8]) -> Option<u8> {
    buf.first().map(|b| b & 0x3f)
}

/// Parses one complete login request or response PDU.
pub fn parse_login(buf: &[u8]) -> Result<LoginPdu, PduError> {
    let len = pdu_len(buf)?;
    if buf.len() < len {
        return Err(PduError::Truncated {
            need: len,
            have: buf.len(),
        });
    }
    let op = buf[0] & 0x3f;
    if op != OP_LOGIN_REQUEST && op != OP_LOGIN_RESPONSE {
        return Err(PduError::NotLogin(op));
    }
    let flags = buf[1];
    let ahs = buf[4] as usize * 4;
    let data_len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
    let data = &buf[BHS_LEN + ahs..BHS_LEN + ahs + data_len];
    let mut isid = [0u8; 6];
    isid.copy_from_slice(&buf[8..14]);
    let (status_class, status_detail) = if op == OP_LOGIN_RESPONSE {
        (buf[36], buf[37])
    } else {
        (0, 0)
    };
    Ok(LoginPdu {
        opcode: op,
        transit: flags & 0x80 != 0,
        current_stage: (flags >> 2) & 0x3,
        next_stage: flags & 0x3,
        isid,
        tsih: u16::from_be_bytes([buf[14], buf[15]]),
        itt: u32::from_be_bytes([buf[16], buf[17], buf[18], buf[19]]),
        status_class,
        status_detail,
        keys: parse_text(data)?,
    })
}

/// `key=value` pairs separated by NUL bytes (RFC 7143 section 6).
pub fn parse_text(data: &[u8]) -> Result<BTreeMap<String, String>, PduError> {
    let mut keys = BTreeMap::new();
    for pair in data.split(|b| *b == 0).filter(|p| !p.is_empty()) {
        let text = std::str::from_utf8(pair).map_err(|_| PduError::BadText("not UTF-8".into()))?;
        let (k, v) = text.split_once('=').ok_or_else(|| {
            PduError::BadText(format!(
                "`{}` has no `=`",
                text.chars().take(64).collect::<String>()
            ))
        })?;
        if k.is_empty() || k.len() > 63 {
            return Err(PduError::BadText(format!(
                "key `{k}` is empty or longer than 63 bytes"
            )));
        }
        keys.insert(k.to_string(), v.to_string());
    }
    Ok(keys)
}

/// Builds a login PDU; used to answer a refused login and by tests.
pub fn build_login(pdu: &LoginPdu) -> Vec<u8> {
    let mut data = Vec::new();
    for (k, v) in &pdu.keys {
        data.extend_from_slice(k.as_bytes());
        data.push(b'=');
        data.extend_from_slice(v.as_bytes());
        data.push(0);
    }
    let mut out = vec![0u8; BHS_LEN];
    out[0] = pdu.opcode | if pdu.is_request() { 0x40 } else { 0 };
    out[1] =
        (if pdu.transit { 0x80 } else { 0 }) | (pdu.current_stage & 3) << 2 | (pdu.next_stage & 3);
    let dl = data.len() as u32;
    out[5..8].copy_from_slice(&dl.to_be_bytes()[1..]);
    out[8..14].copy_from_slice(&pdu.isid);
    out[14..16].copy_from_slice(&pdu.tsih.to_be_bytes());
    out[16..20].copy_from_slice(&pdu.itt.to_be_bytes());
    if !pdu.is_request() {
        out[36] = pdu.status_class;
        out[37] = pdu.status_detail;
    }
    out.extend_from_slice(&data);
    while out.len() % 4 != 0 {
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A login request shaped like the first PDU open-iscsi sends (security negotiation
    /// stage, asking to move on to operational negotiation), built by hand per RFC 7143.
    fn request_bytes() -> Vec<u8> {
        let text = b"InitiatorName=iqn.2026-11.lab:node01\0InitiatorAlias=node01\0TargetName=iqn.2026-11.lab:node01-root\0SessionType=Normal\0AuthMethod=None\0";
        let mut bhs = vec![
            0x43, 0x81, 0x00, 0x00, // login request, immediate; T=1, CSG=0, NSG=1; versions 0
            0x00, 0x00, 0x00, 0x00, // AHS 0, data length (filled below)
            0x00, 0x02, 0x3d, 0x00, 0x00, 0x00, // ISID (OUI format)
            0x00, 0x00, // TSIH 0: new session
            0x00, 0x00, 0x00, 0x00, // ITT
            0x00, 0x00, 0x00, 0x00, // CID, reserved
            0x00, 0x00, 0x00, 0x00, // CmdSN
            0x00, 0x00, 0x00, 0x00, // ExpStatSN
        ];
        bhs.resize(48, 0);
        bhs[7] = text.len() as u8;
        bhs.extend_from_slice(text);
        while bhs.len() % 4 != 0 {
            bhs.push(0);
        }
        bhs
    }

    #[test]
    fn parses_a_login_request() {
        let b = request_bytes();
        assert_eq!(pdu_len(&b).unwrap(), b.len());
        let p = parse_login(&b).unwrap();
        assert!(p.is_request());
        assert!(p.transit);
        assert_eq!((p.current_stage, p.next_stage), (0, 1));
        assert_eq!(p.initiator_name(), Some("iqn.2026-11.lab:node01"));
        assert_eq!(p.target_name(), Some("iqn.2026-11.lab:node01-root"));
        assert_eq!(p.session_type(), "Normal");
        assert_eq!(p.isid, [0x00, 0x02, 0x3d, 0, 0, 0]);
    }

    #[test]
    fn response_round_trips_with_status() {
        let mut keys = BTreeMap::new();
        keys.insert("TargetPortalGroupTag".to_string(), "1".to_string());
        let resp = LoginPdu {
            opcode: OP_LOGIN_RESPONSE,
            transit: true,
            current_stage: 1,
            next_stage: 3,
            isid: [0, 2, 0x3d, 0, 0, 0],
            tsih: 7,
            itt: 1,
            status_class: 0,
            status_detail: 0,
            keys,
        };
        let b = build_login(&resp);
        let back = parse_login(&b).unwrap();
        assert_eq!(back, resp);
        assert!(back.completes_login());
        let refused = LoginPdu {
            status_class: 2,
            status_detail: 1,
            ..resp
        };
        assert!(!parse_login(&build_login(&refused))
            .unwrap()
            .completes_login());
    }

    #[test]
    fn truncated_pdus_are_errors_not_panics() {
        let b = request_bytes();
        for cut in [0, 1, 47, 48, 60, b.len() - 1] {
            let e = parse_login(&b[..cut]).unwrap_err();
            assert!(matches!(e, PduError::Truncated { .. }), "cut {cut}: {e}");
        }
    }

    #[test]
    fn oversized_data_segment_is_refused() {
        let mut b = request_bytes();
        b[5] = 0x10; // 1 MiB
        assert!(matches!(pdu_len(&b), Err(PduError::TooLarge(_))));
    }

    #[test]
    fn other_opcodes_are_not_logins() {
        let mut b = request_bytes();
        b[0] = 0x01; // SCSI command
        assert_eq!(parse_login(&b).unwrap_err(), PduError::NotLogin(0x01));
    }

    #[test]
    fn malformed_text_is_an_error() {
        assert!(parse_text(b"novalue\0").is_err());
        assert!(parse_text(b"=x\0").is_err());
        assert!(parse_text(&[0xff, b'=', b'1', 0]).is_err());
        assert_eq!(
            parse_text(b"A=1\0\0B=\0")
                .unwrap()
                .get("B")
                .map(String::as_str),
            Some("")
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A small deterministic sweep over mutated PDUs: the parser must answer, not crash.
        let base = request_bytes();
        let mut x: u32 = 0x9e37_79b9;
        for _ in 0..5000 {
            let mut b = base.clone();
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let i = (x as usize) % b.len();
                b[i] = (x >> 8) as u8;
            }
            let cut = (x as usize) % (b.len() + 1);
            let _ = parse_login(&b[..cut]);
        }
    }

    #[test]
    fn digests_are_what_the_target_answered_and_lengthen_full_feature_pdus() {
        let mut d = Digests::default();
        let keys = |h: &str, dd: &str| {
            BTreeMap::from([
                ("HeaderDigest".to_string(), h.to_string()),
                ("DataDigest".to_string(), dd.to_string()),
            ])
        };
        d.learn(&keys("CRC32C", "None"));
        assert_eq!(
            d,
            Digests {
                header: true,
                data: false
            }
        );
        // A later response without the keys leaves them as negotiated.
        d.learn(&BTreeMap::new());
        assert!(d.header);
        let mut bhs = [0u8; BHS_LEN];
        bhs[4] = 1; // 4 bytes of AHS
        bhs[7] = 5; // 5 bytes of data, padded to 8
        assert_eq!(full_feature_len(&bhs, Digests::default()), 48 + 4 + 8);
        assert_eq!(full_feature_len(&bhs, d), 48 + 4 + 4 + 8);
        d.learn(&keys("None", "crc32c"));
        assert_eq!(full_feature_len(&bhs, d), 48 + 4 + 8 + 4);
        // No data, no data digest; the 24-bit length is not capped as a login's is.
        bhs[5..8].copy_from_slice(&[0x04, 0, 0]);
        assert_eq!(full_feature_len(&bhs, d), 48 + 4 + 0x40000 + 4);
        bhs[5..8].copy_from_slice(&[0, 0, 0]);
        assert_eq!(full_feature_len(&bhs, d), 48 + 4);
    }

    #[test]
    fn logout_reasons_and_answers_in_words() {
        let mut bhs = [0u8; BHS_LEN];
        bhs[1] = 0x80;
        assert_eq!(logout_reason(&bhs), "close the session");
        bhs[1] = 0x81;
        assert_eq!(logout_reason(&bhs), "close the connection");
        bhs[1] = 0x82;
        assert_eq!(logout_reason(&bhs), "remove the connection for recovery");
        bhs[1] = 0x85;
        assert_eq!(logout_reason(&bhs), "unknown reason");
        assert_eq!(logout_response(&bhs), "closed successfully");
        bhs[2] = 3;
        assert_eq!(logout_response(&bhs), "cleanup failed");
    }
}
