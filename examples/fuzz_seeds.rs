//! Writes the fuzz targets' seed corpora (fuzz/seeds/<target>/) from what the tests use:
//! the tests' CSR builder, the protocol's own encoders, the shipped configs and profiles,
//! and OCSP requests as OpenSSL's client shapes them. Run from the repository root:
//!
//!   cargo run --example fuzz_seeds

use std::path::Path;

use hsm_est_proto::{
    DeviceFilter, IssueRequest, OcspCertId, OcspHash, Operation, Request, Response, WireError,
};

#[path = "../tests/common/csrgen.rs"]
#[allow(dead_code)]
mod csrgen;

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = Path::new("fuzz/seeds").join(target);
    std::fs::create_dir_all(&dir).expect("create the seed directory");
    std::fs::write(dir.join(name), data).expect("write a seed");
}

fn ocsp_id(hash: OcspHash, serial: &[u8]) -> OcspCertId {
    OcspCertId {
        hash,
        hash_params_null: hash == OcspHash::Sha1,
        issuer_name_hash: vec![0x11; hash.digest_len()],
        issuer_key_hash: vec![0x22; hash.digest_len()],
        serial: serial.to_vec(),
    }
}

fn main() {
    let key = csrgen::P256Key::generate();
    let csrs = [
        ("pump", csrgen::csr_for_key(&key, "ward-a-pump-001")),
        (
            "subject",
            csrgen::csr(&[
                (csrgen::CN, "icu-pump-042"),
                (csrgen::O, "TestHospital"),
                (csrgen::C, "US"),
            ]),
        ),
        ("printable", csrgen::csr_printable(&[(csrgen::CN, "p-1")])),
        ("forged", csrgen::forged(&[(csrgen::CN, "p-2")])),
        (
            "challenge",
            csrgen::csr_with_challenge(&key, "p-3", "binding"),
        ),
    ];
    for (name, der) in &csrs {
        write("csr_policy", &format!("{name}.der"), der);
        write("est_body", &format!("{name}.der"), der);
        let b64 = <base64ct::Base64 as base64ct::Encoding>::encode_string(der);
        write("est_body", &format!("{name}.b64"), b64.as_bytes());
        let pem = hsm_est_pki::to_pem("CERTIFICATE REQUEST", der);
        write("est_body", &format!("{name}.pem"), pem.as_bytes());
    }

    let requests = [
        Request::Ping,
        Request::CaChain {
            profile: "iqe-pump".into(),
        },
        Request::Stats,
        Request::CrlGet {
            known_number: 3,
            ca: "staff".into(),
        },
        Request::Issue(IssueRequest {
            operation: Operation::Bootstrap,
            profile: "iqe-bootstrap".into(),
            requester: "basic:iqe-gateway".into(),
            client_ip: "192.0.2.7".into(),
            csr_der: csrs[0].1.clone(),
            client_cert_der: vec![],
            client_chain: vec![],
            tls_exporter: vec![7; 32],
            registration_authority: false,
        }),
        Request::DeviceList {
            after: "ward-a".into(),
            limit: 50,
            filter: DeviceFilter::default(),
        },
        Request::Revoke {
            serial: vec![0x41, 2, 3],
            reason: 1,
            actor: "alice".into(),
        },
        Request::OcspStatus {
            certs: vec![
                ocsp_id(OcspHash::Sha1, &[0x41, 9]),
                ocsp_id(OcspHash::Sha256, &[1]),
            ],
            nonce: Some(vec![4, 2, 0xab, 0xcd]),
        },
    ];
    for (i, r) in requests.iter().enumerate() {
        let mut data = vec![r.msg_type()];
        data.extend(r.encode().expect("encode"));
        write("ipc_frames", &format!("request-{i}-{}", r.name()), &data);
        let frame = hsm_est_proto::FrameHeader {
            msg_type: r.msg_type(),
            request_id: 7,
            body_len: (data.len() - 1) as u32,
        };
        let mut framed = frame.encode().to_vec();
        framed.extend_from_slice(&data[1..]);
        write("ipc_frames", &format!("frame-{i}-{}", r.name()), &framed);
    }
    let responses = [
        Response::Done,
        Response::Issued {
            serial: vec![0x41, 1],
            cert_der: vec![0x30, 0x03, 0x02, 0x01, 0x01],
        },
        Response::Ocsp {
            der: vec![0x30, 0x03, 0x0a, 0x01, 0x06],
        },
        Response::Error(WireError::new(
            hsm_est_proto::ErrorCode::SubjectRejected,
            "device.exists",
            "exists",
        )),
    ];
    for (i, r) in responses.iter().enumerate() {
        let mut data = vec![r.msg_type()];
        data.extend(r.encode().expect("encode"));
        write("ipc_frames", &format!("response-{i}"), &data);
    }

    for (name, value) in [
        ("good", "Basic ZGVtbzpzZWNyZXQ="),
        ("lower", "basic   aXFlLWdhdGV3YXk6cGFzczp3aXRoOmNvbG9ucw=="),
        ("bearer", "Bearer hsmest_abc_def"),
        ("empty", "Basic "),
    ] {
        write("basic_auth", name, value.as_bytes());
    }

    for dir in ["config", "policy"] {
        for entry in std::fs::read_dir(dir).expect("read the shipped files") {
            let path = entry.expect("an entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let name = format!("{dir}-{}", path.file_name().unwrap().to_string_lossy());
                write("config_yaml", &name, &std::fs::read(&path).expect("read"));
            }
        }
    }
    write(
        "config_yaml",
        "users.yaml",
        b"users:\n- name: iqe-gateway\n  hash: $argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g\n  labels: [iqe]\ntokens: []\n",
    );

    for (name, certs, nonce) in [
        (
            "one-sha1",
            vec![ocsp_id(OcspHash::Sha1, &[0x41, 1, 2])],
            None,
        ),
        (
            "nonce",
            vec![ocsp_id(OcspHash::Sha1, &[0x41, 1, 2])],
            Some(vec![
                0x04, 0x10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
            ]),
        ),
        (
            "several",
            vec![
                ocsp_id(OcspHash::Sha256, &[0x41]),
                ocsp_id(OcspHash::Sha384, &[0x42, 0]),
                ocsp_id(OcspHash::Sha512, &[0x43]),
            ],
            None,
        ),
    ] {
        let der = hsm_est_pki::ocsp::build_request(&certs, nonce.as_deref()).expect("build");
        write("ocsp_request", name, &der);
    }
    println!("seeds written to fuzz/seeds/");
}
