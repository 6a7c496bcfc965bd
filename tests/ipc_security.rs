//! The signer socket as a trust boundary: peer uid checks, hostile frames, the permit table.
//! Each hostile frame must end that connection (not hang it, not crash the signer) while
//! other clients keep being served.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use common::*;
use hsm_est_proto::codec::{FrameHeader, HEADER_LEN, MAX_FRAME_BODY};
use hsm_est_proto::messages::msg_type;
use hsm_est_proto::{Request, Response};

fn header(msg: u8, body_len: u32) -> [u8; HEADER_LEN] {
    FrameHeader {
        msg_type: msg,
        request_id: 1,
        body_len,
    }
    .encode()
}

/// Sends `bytes` (optionally half-closing) and asserts the signer closes the connection.
fn assert_closed(app: &Appliance, what: &str, bytes: &[u8], half_close: bool) {
    let mut s = UnixStream::connect(&app.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    if half_close {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("{what}: got {n} bytes of answer instead of a closed connection"),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{what}: connection not closed: {e}"),
    }
}

fn ping_works(app: &Appliance) {
    match app.client().call(&Request::Ping).unwrap() {
        Response::Pong { .. } => {}
        other => panic!("ping answered {other:?}"),
    }
}

#[test]
fn hostile_frames_close_only_their_connection() {
    let mut app = Appliance::create("frames", "ec-p256");
    app.start();
    // A client that stays connected throughout must keep being served.
    let mut steady = app.client();
    let mut cases: Vec<(&str, Vec<u8>, bool)> = Vec::new();
    cases.push((
        "oversized length",
        header(msg_type::PING, MAX_FRAME_BODY + 1).to_vec(),
        false,
    ));
    let mut bad_magic = header(msg_type::PING, 0);
    bad_magic[0] = b'X';
    cases.push(("bad magic", bad_magic.to_vec(), false));
    let mut bad_version = header(msg_type::PING, 0);
    bad_version[4] = 9;
    cases.push(("bad version", bad_version.to_vec(), false));
    let mut flags = header(msg_type::PING, 0);
    flags[7] = 1;
    cases.push(("non-zero flags", flags.to_vec(), false));
    let mut reserved = header(msg_type::PING, 0);
    reserved[11] = 1;
    cases.push(("non-zero reserved", reserved.to_vec(), false));
    cases.push(("unknown type", header(0x42, 0).to_vec(), false));
    cases.push((
        "response type sent as request",
        header(msg_type::PONG, 0).to_vec(),
        false,
    ));
    let mut truncated = header(msg_type::ISSUE, 100).to_vec();
    truncated.extend_from_slice(&[0u8; 10]);
    cases.push(("truncated body", truncated, true));
    cases.push((
        "truncated header",
        header(msg_type::PING, 0)[..10].to_vec(),
        true,
    ));
    let mut trailing = header(msg_type::PING, 1).to_vec();
    trailing.push(0);
    cases.push(("trailing data", trailing, false));
    let mut bad_field = header(msg_type::DEVICE_GET, 8).to_vec();
    bad_field.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
    cases.push(("field length beyond the body", bad_field, false));
    for (what, bytes, half_close) in &cases {
        assert_closed(&app, what, bytes, *half_close);
        assert!(
            matches!(steady.call(&Request::Ping).unwrap(), Response::Pong { .. }),
            "steady client after {what}"
        );
        ping_works(&app);
    }
    let log = app.signer_log();
    assert!(
        log.matches("connection closed").count() >= cases.len() - 2,
        "{log}"
    );
}

#[test]
fn unpermitted_request_type_closes_the_connection() {
    let mut app = Appliance::create("permit", "ec-p256");
    app.start();
    // Root is the frontend in test configs; revocation is an operator action only.
    let body = Request::Revoke {
        serial: vec![0x40, 1],
        reason: 0,
        actor: "frontend".into(),
    }
    .encode()
    .unwrap();
    let mut frame = header(msg_type::REVOKE, body.len() as u32).to_vec();
    frame.extend_from_slice(&body);
    assert_closed(&app, "revoke from the frontend", &frame, false);
    assert!(app.signer_log().contains("not permitted"));
    ping_works(&app);
}

#[test]
fn wrong_peer_uid_is_refused_and_allowed_uids_are_served() {
    let mut app = Appliance::create("peeruid", "ec-p256");
    app.start();
    // uid 65534 gets through the file permissions (group 1) but not SO_PEERCRED.
    let out = run(app
        .estctl_cmd()
        .args(["ping", "--socket"])
        .arg(&app.socket)
        .uid(65534)
        .gid(OPERATOR_GID));
    assert!(!out.status.success(), "uid 65534 was served");
    assert!(
        app.signer_log()
            .contains("refused connection from uid 65534"),
        "{}",
        app.signer_log()
    );
    // The operator uid is served, and so is the frontend (root).
    ok(&app.estctl_operator(&["ping", "--config", app.config_arg()]));
    ping_works(&app);
    // The socket is 0660 with the configured group.
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(&app.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), OPERATOR_GID);
}

#[test]
fn request_ids_are_echoed_and_every_request_is_answered() {
    let mut app = Appliance::create("reqid", "ec-p256");
    app.start();
    let mut s = UnixStream::connect(&app.admin_socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for id in [7u64, 0xdead_beef_0000_0001] {
        let frame = FrameHeader {
            msg_type: msg_type::DEVICE_GET,
            request_id: id,
            body_len: 0,
        };
        let body = Request::DeviceGet {
            cn: "no-such-device".into(),
        }
        .encode()
        .unwrap();
        let mut f = FrameHeader {
            body_len: body.len() as u32,
            ..frame
        }
        .encode()
        .to_vec();
        f.extend_from_slice(&body);
        s.write_all(&f).unwrap();
        let (h, body) = hsm_est_proto::codec::read_frame(&mut s).unwrap();
        assert_eq!(h.request_id, id);
        match Response::decode(h.msg_type, &body).unwrap() {
            Response::Error(e) => assert_eq!(e.reason, "device.not_found"),
            other => panic!("{other:?}"),
        }
    }
}
