//! The close-code mapping table and close payloads.

use peerd_codec::Code;
use peerd_ws::{
    close_payload, close_status_allowed, code_for, status_for, write_masked_frame, Deframer, Event,
    Opcode, Role,
};

#[test]
fn mapping_table() {
    let table: [(Code, u16); 23] = [
        (Code::Normal, 1000),
        (Code::Shutdown, 1001),
        (Code::BadFrame, 1002),
        (Code::TooLarge, 1009),
        (Code::Unauthorized, 4004),
        (Code::PeerIdTaken, 4005),
        (Code::UnknownPeer, 4006),
        (Code::MethodNotFound, 4007),
        (Code::Timeout, 4008),
        (Code::Overloaded, 1013),
        (Code::SlowConsumer, 4010),
        (Code::Replaced, 4011),
        (Code::PeerGone, 4012),
        (Code::UnsupportedVersion, 4013),
        (Code::HandshakeTimeout, 4014),
        (Code::LimitExceeded, 4015),
        (Code::InvalidArgument, 4016),
        (Code::NotMember, 4017),
        (Code::Internal, 1011),
        (Code::IdleTimeout, 4019),
        (Code::TokenExpired, 4020),
        (Code::RateLimited, 4021),
        (Code::Reconnect, 4022),
    ];
    for (code, status) in table {
        assert_eq!(status_for(code.as_u16()), status, "{code:?}");
        assert_eq!(code_for(status), Some(code.as_u16()), "{code:?}");
    }
    // Every defined code but Ok is in the table.
    assert_eq!(table.len(), Code::ALL.len() - 1);
}

#[test]
fn every_code_round_trips_to_a_sendable_status() {
    for &code in Code::ALL.iter().filter(|c| **c != Code::Ok) {
        let status = status_for(code.as_u16());
        assert!(close_status_allowed(status), "{code:?} -> {status}");
        assert_eq!(code_for(status), Some(code.as_u16()));
    }
}

#[test]
fn application_codes_pass_through() {
    for app in (4000..=4003).chain([4009, 4018]).chain(4023..5000) {
        assert_eq!(status_for(app), app);
        assert_eq!(code_for(app), Some(app), "{app}");
    }
}

#[test]
fn unknown_codes() {
    for unknown in [0u16, 1, 999, 1023, 1999, 2000, 3000, 3999, 5000, u16::MAX] {
        assert_eq!(status_for(unknown), 1008, "{unknown}");
    }
    for other in [1003u16, 1007, 1008, 1010, 1012, 3000, 5000, 0] {
        assert_eq!(code_for(other), None, "{other}");
    }
}

#[test]
fn close_payload_fits_a_control_frame() {
    assert_eq!(close_payload(1000, ""), vec![0x03, 0xe8]);
    assert_eq!(close_payload(4004, "no"), vec![0x0f, 0xa4, b'n', b'o']);
    // 62 two-byte chars (124 bytes) must be cut to 61 chars (122 bytes), not mid-char.
    let reason = "é".repeat(62);
    let p = close_payload(1001, &reason);
    assert_eq!(p.len(), 124);
    assert_eq!(std::str::from_utf8(&p[2..]).unwrap(), "é".repeat(61));
    let p = close_payload(1001, &"a".repeat(500));
    assert_eq!(p.len(), 125);
    // And the deframer accepts it.
    let mut wire = Vec::new();
    write_masked_frame(Opcode::Close, true, &p, [1, 2, 3, 4], &mut wire);
    let mut d = Deframer::new(Role::Server, 0, false);
    let n = wire.len();
    let step = d.step(&mut wire, 0, 0, n).unwrap();
    match step.event {
        Event::Close { status, reason } => {
            assert_eq!(status, Some(1001));
            assert_eq!(&wire[reason], "a".repeat(123).as_bytes());
        }
        other => panic!("{other:?}"),
    }
}
