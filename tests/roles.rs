//! Roles by socket: the socket a connection arrives on decides what it may ask. Written as
//! a compromised frontend would attack: hand-built frames on the frontend's socket for
//! everything that reads or changes devices and certificates, then the takeover of an
//! enrolled pump (delete, bootstrap with our own key, enrol) — and a check that nothing
//! changed. The operator's socket, through `estctl`, still does each of them.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::csrgen;
use common::*;
use hsm_est_proto::codec::FrameHeader;
use hsm_est_proto::{DeviceStatus, ErrorCode, Operation, Request, Response};
use hsm_est_signer::ledger::Ledger;

/// Sends one well-formed request on `socket` and returns whether the signer answered it
/// (`Some`) or closed the connection without a word (`None`).
fn send_raw(socket: &std::path::Path, request: &Request) -> Option<Response> {
    let body = request.encode().unwrap();
    let mut frame = FrameHeader {
        msg_type: request.msg_type(),
        request_id: 42,
        body_len: body.len() as u32,
    }
    .encode()
    .to_vec();
    frame.extend_from_slice(&body);
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&frame).unwrap();
    let mut first = [0u8; 1];
    match s.read(&mut first) {
        Ok(0) => None,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
        Ok(_) => {
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
            let mut all = first.to_vec();
            all.extend_from_slice(&rest);
            let mut cursor = std::io::Cursor::new(all);
            let (h, body) = hsm_est_proto::codec::read_frame(&mut cursor).unwrap();
            Some(Response::decode(h.msg_type, &body).unwrap())
        }
        Err(e) => panic!("no answer and no close: {e}"),
    }
}

fn status(app: &Appliance, cn: &str) -> Option<(DeviceStatus, Vec<u8>)> {
    match app
        .admin_client()
        .call(&Request::DeviceGet { cn: cn.into() })
        .unwrap()
    {
        Response::Device(d) => Some((d.status, d.current_serial)),
        Response::Error(e) if e.reason == "device.not_found" => None,
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_frontend_socket_has_no_power_over_devices_or_certificates() {
    let mut app = Appliance::create("roles-frontend", "ec-p256");
    app.start();
    // A pump that bootstrapped and enrolled.
    let pump_key = csrgen::P256Key::generate();
    let boot = issued(app.issue(
        Operation::Bootstrap,
        "iqe-bootstrap",
        &csrgen::csr_for_key(&pump_key, "ward-a-pump-001"),
        &[],
    ));
    let enrolled = issued(app.issue(
        Operation::Enroll,
        "iqe-pump",
        &csrgen::csr_for_key(&pump_key, "ward-a-pump-001"),
        &boot,
    ));
    let before = status(&app, "ward-a-pump-001").expect("enrolled");
    assert_eq!(before.0, DeviceStatus::Enrolled);
    let serial = before.1.clone();
    let audit_before = std::fs::read_to_string(app.path("audit.jsonl")).unwrap();

    // Every request that reads or changes devices or certificates, on the frontend socket.
    let attacks = [
        Request::DeviceDelete {
            cn: "ward-a-pump-001".into(),
            keep_certificates: false,
            actor: "operator:root".into(),
        },
        Request::DeviceRevoke {
            cn: "ward-a-pump-001".into(),
            reason: 1,
            actor: "operator:root".into(),
        },
        Request::DeviceAllow {
            cn: "ward-a-pump-001".into(),
            actor: "operator:root".into(),
        },
        Request::DeviceList {
            after: String::new(),
            limit: 10,
            filter: hsm_est_proto::DeviceFilter::default(),
        },
        Request::DeviceGet {
            cn: "ward-a-pump-001".into(),
        },
        Request::DeviceCertificates {
            cn: "ward-a-pump-001".into(),
            after_serial: vec![],
            limit: 10,
        },
        Request::Revoke {
            serial: serial.clone(),
            reason: 1,
            actor: "operator:root".into(),
        },
    ];
    for attack in &attacks {
        assert!(
            send_raw(&app.socket, attack).is_none(),
            "{} answered on the frontend socket",
            attack.name()
        );
    }
    let log = app.signer_log();
    assert!(
        log.matches("not permitted; connection closed").count() >= attacks.len(),
        "{log}"
    );

    // The takeover stops at its first step: the pump is still there, enrolled, with its
    // certificate; a bootstrap of its name with another key is a duplicate.
    assert_eq!(status(&app, "ward-a-pump-001"), Some(before.clone()));
    let intruder = csrgen::P256Key::generate();
    assert_eq!(
        refused(app.issue(
            Operation::Bootstrap,
            "iqe-bootstrap",
            &csrgen::csr_for_key(&intruder, "ward-a-pump-001"),
            &[],
        )),
        (ErrorCode::DeviceDuplicate, "device.exists".into())
    );
    // Nothing was deleted or revoked, and the real pump still renews.
    let audit_after = std::fs::read_to_string(app.path("audit.jsonl")).unwrap();
    let added = &audit_after[audit_before.len()..];
    assert!(!added.contains("\"event\":\"device_deleted\""), "{added}");
    assert!(!added.contains("\"event\":\"revoked\""), "{added}");
    let cert = app
        .ledger()
        .certificate(&serial)
        .unwrap()
        .expect("on record");
    assert!(cert.revoked_at_ms.is_none());
    issued(app.issue(
        Operation::Reenroll,
        "iqe-pump",
        &csrgen::csr_for_key(&pump_key, "ward-a-pump-001"),
        &enrolled,
    ));
}

#[test]
fn the_operator_socket_does_each_of_them_and_refuses_other_uids() {
    let mut app = Appliance::create("roles-operator", "ec-p256");
    app.start();
    let key = csrgen::P256Key::generate();
    issued(app.issue(
        Operation::Bootstrap,
        "iqe-bootstrap",
        &csrgen::csr_for_key(&key, "icu-pump-042"),
        &[],
    ));
    let (_, serial) = status(&app, "icu-pump-042").expect("bootstrapped");
    let cfg = app.config_arg().to_string();

    let list = ok(&app.estctl_operator(&["device", "list", "--config", &cfg]));
    assert!(
        list.contains("icu-pump-042") && list.contains("1 device(s)"),
        "{list}"
    );
    let show = ok(&app.estctl_operator(&["device", "show", "--config", &cfg, "icu-pump-042"]));
    assert!(show.contains("bootstrap_only"), "{show}");
    ok(&app.estctl_operator(&[
        "revoke",
        "--config",
        &cfg,
        "--serial",
        &hex::encode(&serial),
    ]));
    assert_eq!(
        status(&app, "icu-pump-042").map(|s| s.0),
        Some(DeviceStatus::Revoked)
    );
    // A revoked device is not deleted back into service: it stays revoked, and a
    // bootstrap of its name is refused, until the operator allows it.
    let out = app.estctl_operator(&["device", "delete", "--config", &cfg, "icu-pump-042"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("device.revoked"),
        "{out:?}"
    );
    assert_eq!(
        status(&app, "icu-pump-042").map(|s| s.0),
        Some(DeviceStatus::Revoked)
    );
    let again = csrgen::csr_for_key(&csrgen::P256Key::generate(), "icu-pump-042");
    assert_eq!(
        refused(app.issue(Operation::Bootstrap, "iqe-bootstrap", &again, &[])).0,
        ErrorCode::Revoked
    );
    ok(&app.estctl_operator(&["device", "allow", "--config", &cfg, "icu-pump-042"]));
    assert_eq!(
        status(&app, "icu-pump-042").map(|s| s.0),
        Some(DeviceStatus::Deleted)
    );
    issued(app.issue(Operation::Bootstrap, "iqe-bootstrap", &again, &[]));
    ok(&app.estctl_operator(&["device", "delete", "--config", &cfg, "icu-pump-042"]));
    assert_eq!(
        status(&app, "icu-pump-042").map(|s| s.0),
        Some(DeviceStatus::Deleted)
    );
    let audit = std::fs::read_to_string(app.path("audit.jsonl")).unwrap();
    // Each action names the operator's uid as the signer saw it, not as estctl said.
    for event in ["revoked", "device_allowed", "device_deleted"] {
        let line = audit
            .lines()
            .find(|l| l.contains(&format!("\"event\":\"{event}\"")))
            .unwrap_or_else(|| panic!("no {event} record"));
        assert!(
            line.contains(&format!("\"actor\":\"operator:uid={OPERATOR_UID}:")),
            "{line}"
        );
    }

    // Root is the frontend (and the admin) in these configs, not an operator: the operator
    // socket refuses it by SO_PEERCRED, although the file's mode would let it in.
    let out = app.estctl(&["device", "list", "--config", &cfg]);
    assert!(!out.status.success());
    assert!(
        app.signer_log()
            .contains("refused connection from uid 0 pid"),
        "{}",
        app.signer_log()
    );
    // Each role's socket has the mode and group its config gives.
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let operator = std::fs::metadata(&app.operator_socket).unwrap();
    assert_eq!(operator.permissions().mode() & 0o777, 0o660);
    assert_eq!(operator.gid(), OPERATOR_GID);
    let admin = std::fs::metadata(&app.admin_socket).unwrap();
    assert_eq!(admin.permissions().mode() & 0o777, 0o600);
}
