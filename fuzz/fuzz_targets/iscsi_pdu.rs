//! Any bytes as what an initiator or target sent: the login proxy's parser may refuse them,
//! never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netboot_harness::support::iscsi_pdu;

fuzz_target!(|data: &[u8]| {
    let _ = iscsi_pdu::opcode(data);
    let _ = iscsi_pdu::pdu_len(data);
    if let Ok(pdu) = iscsi_pdu::parse_login(data) {
        // What parses must survive a round trip through the builder.
        let again = iscsi_pdu::parse_login(&iscsi_pdu::build_login(&pdu));
        assert_eq!(again.as_ref(), Ok(&pdu));
    }
    let _ = iscsi_pdu::parse_text(data);
});
