//! Round trips and one refusal per malformed field.

use super::*;

fn round_trip_request(req: Request) {
    let body = req.encode().unwrap();
    assert_eq!(Request::decode(req.msg_type(), &body).unwrap(), req);
    let mut longer = body.clone();
    longer.push(0);
    assert!(matches!(
        Request::decode(req.msg_type(), &longer),
        Err(FrameError::TrailingData(1))
    ));
}

#[test]
fn requests_round_trip_and_reject_trailing_bytes() {
    round_trip_request(Request::Ping);
    round_trip_request(Request::CaChain {
        profile: String::new(),
    });
    round_trip_request(Request::CaChain {
        profile: "staff".into(),
    });
    round_trip_request(Request::Issue(IssueRequest {
        operation: Operation::Reenroll,
        profile: "iqe-pump".into(),
        requester: "basic:iqe".into(),
        client_ip: "::1".into(),
        csr_der: vec![0x30, 0x00],
        client_cert_der: vec![],
        client_chain: vec![vec![0x30, 0x00]],
        tls_exporter: vec![],
        registration_authority: false,
    }));
    round_trip_request(Request::DeviceList {
        after: "ward-a-pump-001".into(),
        limit: 100,
        filter: DeviceFilter::default(),
    });
    round_trip_request(Request::DeviceList {
        after: String::new(),
        limit: 1,
        filter: DeviceFilter {
            status: Some(DeviceStatus::Revoked),
            cn_prefix: "icu-".into(),
            expiring_within_days: 30,
        },
    });
    round_trip_request(Request::DeviceGet { cn: "a".into() });
    round_trip_request(Request::DeviceDelete {
        cn: "a".into(),
        keep_certificates: true,
        actor: "uid:0".into(),
    });
    round_trip_request(Request::DeviceCertificates {
        cn: "a".into(),
        after_serial: vec![0x40, 1],
        limit: MAX_CERTIFICATE_PAGE,
    });
    round_trip_request(Request::Stats);
    round_trip_request(Request::ExpiringCertificates {
        within_days: 30,
        after_not_after: 1_900_000_000,
        after_serial: vec![0x40, 1],
        limit: 100,
    });
    round_trip_request(Request::DeviceAllow {
        cn: "a".into(),
        actor: "uid:0".into(),
    });
    round_trip_request(Request::CrlGet {
        known_number: 7,
        ca: "staff".into(),
    });
    round_trip_request(Request::OcspStatus {
        certs: vec![ocsp_id(OcspHash::Sha1), ocsp_id(OcspHash::Sha384)],
        nonce: Some(vec![4, 16, 1, 2]),
    });
    round_trip_request(Request::OcspStatus {
        certs: vec![ocsp_id(OcspHash::Sha256)],
        nonce: None,
    });
    round_trip_request(Request::CrlGenerate {
        actor: "alice".into(),
        ca: String::new(),
    });
    round_trip_request(Request::DeviceRevoke {
        cn: "a".into(),
        reason: 5,
        actor: "uid:0".into(),
    });
    round_trip_request(Request::CsrAttrs {
        profile: "iqe-pump".into(),
    });
    round_trip_request(Request::Revoke {
        serial: vec![1, 2],
        reason: 1,
        actor: "uid:0".into(),
    });
}

#[test]
fn request_decode_rejects_bad_values() {
    assert!(matches!(
        Request::decode(0x42, &[]),
        Err(FrameError::UnknownType(0x42))
    ));
    let mut body = Request::Issue(IssueRequest {
        operation: Operation::Enroll,
        profile: "p".into(),
        requester: "r".into(),
        client_ip: "i".into(),
        csr_der: vec![],
        client_cert_der: vec![],
        client_chain: vec![vec![0x30, 0x00]],
        tls_exporter: vec![],
        registration_authority: false,
    })
    .encode()
    .unwrap();
    body[0] = 9;
    assert!(matches!(
        Request::decode(msg_type::ISSUE, &body),
        Err(FrameError::BadValue("operation"))
    ));
    let list = Request::DeviceList {
        after: String::new(),
        limit: MAX_DEVICE_PAGE + 1,
        filter: DeviceFilter::default(),
    }
    .encode()
    .unwrap();
    assert!(Request::decode(msg_type::DEVICE_LIST, &list).is_err());
    let revoke = Request::Revoke {
        serial: vec![1],
        reason: 7,
        actor: "a".into(),
    }
    .encode()
    .unwrap();
    assert!(Request::decode(msg_type::REVOKE, &revoke).is_err());
}

#[test]
fn responses_round_trip() {
    let dev = DeviceInfo {
        cn: "ward-a-pump-001".into(),
        status: DeviceStatus::Enrolled,
        first_enrolled_ms: 1,
        last_enrolled_ms: 2,
        last_ip: "127.0.0.1".into(),
        current_serial: vec![0x40; 16],
        current_not_after: 3,
    };
    for resp in [
        Response::Pong {
            version: "1".into(),
            ca_subject: "CN=x".into(),
            commits: 2,
            decisions: 9,
        },
        Response::CaChain {
            ca: "default".into(),
            certs: vec![vec![1], vec![2]],
        },
        Response::Issued {
            serial: vec![1],
            cert_der: vec![2],
        },
        Response::Devices {
            devices: vec![dev.clone()],
            more: true,
        },
        Response::Device(dev),
        Response::Done,
        Response::Revoked { count: 3 },
        Response::Stats(Stats {
            devices_by_status: vec![("enrolled".into(), 7), ("revoked".into(), 1)],
            issued_last_24h: 9,
            expiring_within_30_days: 2,
            refusals_by_reason: vec![("device.exists".into(), 4)],
            commits: 5,
            decisions: 12,
            ca_not_after: 1_900_000_000,
            queue_depth: 3,
            max_batch: 17,
            token_signs: 40,
            token_sign_micros: 1_800,
            ocsp_responses: 9,
            ocsp_cache_hits: 5,
            ocsp_cached: 3,
        }),
        Response::Certificates {
            certificates: vec![
                CertificateInfo {
                    serial: vec![0x40; 16],
                    common_name: "ward-a-pump-001".into(),
                    not_before: 1,
                    not_after: 2,
                    issued_at_ms: 3,
                    profile: "iqe-pump".into(),
                    operation: "enroll".into(),
                    requester: "basic:iqe-gateway".into(),
                    revoked_at_ms: Some(4),
                    revocation_reason: Some(5),
                    superseded_by: Some(vec![0x41; 16]),
                },
                CertificateInfo {
                    serial: vec![0x41; 16],
                    common_name: "ward-a-pump-001".into(),
                    not_before: 1,
                    not_after: 2,
                    issued_at_ms: 3,
                    profile: "iqe-pump".into(),
                    operation: "reenroll".into(),
                    requester: "cert:ab".into(),
                    revoked_at_ms: None,
                    revocation_reason: None,
                    superseded_by: None,
                },
            ],
            more: false,
        },
        Response::CsrAttrs { der: vec![0x30, 0] },
        Response::Crl {
            der: vec![0x30, 3, 2, 1, 1],
        },
        Response::Ocsp {
            der: vec![0x30, 3, 0x0a, 1, 6],
        },
        Response::Error(WireError::new(ErrorCode::KeyRejected, "key.rsa_size", "no")),
    ] {
        let body = resp.encode().unwrap();
        assert_eq!(Response::decode(resp.msg_type(), &body).unwrap(), resp);
    }
}

#[test]
fn error_codes_are_stable() {
    for code in [
        ErrorCode::BadRequest,
        ErrorCode::CsrMalformed,
        ErrorCode::ProofOfPossession,
        ErrorCode::KeyRejected,
        ErrorCode::SignatureAlgorithmRejected,
        ErrorCode::SubjectRejected,
        ErrorCode::SanRejected,
        ErrorCode::UnknownProfile,
        ErrorCode::NotAllowed,
        ErrorCode::DeviceDuplicate,
        ErrorCode::DeviceNotFound,
        ErrorCode::Revoked,
        ErrorCode::ReenrollRefused,
        ErrorCode::CertificateNotFound,
        ErrorCode::QuotaExceeded,
        ErrorCode::Unavailable,
    ] {
        assert_eq!(ErrorCode::from_wire(code.to_wire()).unwrap(), code);
    }
    assert_eq!(ErrorCode::DeviceDuplicate.to_wire(), 200);
    assert!(ErrorCode::from_wire(999).is_err());
}

fn ocsp_id(hash: OcspHash) -> OcspCertId {
    OcspCertId {
        hash,
        hash_params_null: hash == OcspHash::Sha1,
        issuer_name_hash: vec![1; hash.digest_len()],
        issuer_key_hash: vec![2; hash.digest_len()],
        serial: vec![0x40, 9, 9],
    }
}

#[test]
fn ocsp_status_bounds_are_enforced_both_ways() {
    // No certificate, too many, a hash of the wrong length, an empty serial and an
    // oversized nonce are refused by the encoder and, hand-built, by the decoder.
    let too_many = Request::OcspStatus {
        certs: vec![ocsp_id(OcspHash::Sha1); MAX_OCSP_CERTS + 1],
        nonce: None,
    };
    assert!(too_many.encode().is_err());
    let mut short = ocsp_id(OcspHash::Sha256);
    short.issuer_key_hash.pop();
    assert!(Request::OcspStatus {
        certs: vec![short],
        nonce: None
    }
    .encode()
    .is_err());
    assert!(Request::OcspStatus {
        certs: vec![ocsp_id(OcspHash::Sha1)],
        nonce: Some(vec![0; MAX_OCSP_NONCE_LEN + 1]),
    }
    .encode()
    .is_err());

    let good = Request::OcspStatus {
        certs: vec![ocsp_id(OcspHash::Sha1)],
        nonce: None,
    }
    .encode()
    .unwrap();
    // Count 0.
    let mut zero = good.clone();
    zero[0] = 0;
    assert!(Request::decode(msg_type::OCSP_STATUS, &zero).is_err());
    // Count 21 with one entry present.
    let mut many = good.clone();
    many[0] = (MAX_OCSP_CERTS + 1) as u8;
    assert!(Request::decode(msg_type::OCSP_STATUS, &many).is_err());
    // Unknown hash number.
    let mut hash = good.clone();
    hash[1] = 9;
    assert!(matches!(
        Request::decode(msg_type::OCSP_STATUS, &hash),
        Err(FrameError::BadValue("ocsp hash"))
    ));
    // A SHA-256 label on SHA-1-sized hashes.
    let mut label = good.clone();
    label[1] = OcspHash::Sha256.to_wire();
    assert!(matches!(
        Request::decode(msg_type::OCSP_STATUS, &label),
        Err(FrameError::BadValue("ocsp issuer hash"))
    ));
    // A nonce flag of 2.
    let mut nonce = good.clone();
    *nonce.last_mut().unwrap() = 2;
    assert!(Request::decode(msg_type::OCSP_STATUS, &nonce).is_err());
    assert!(Request::decode(msg_type::OCSP_STATUS, &good).is_ok());
}
