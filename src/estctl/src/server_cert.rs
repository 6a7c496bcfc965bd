//! `estctl server-cert issue`: a TLS certificate for the frontend, issued by the CA under the
//! operator-only `tls-server` profile. The key is made here (P-256) and written 0600; only
//! the CSR goes to the signer. Through the socket when the signer runs (as the operator
//! uid), otherwise directly with the token, audited the same way.

use std::net::IpAddr;
use std::path::Path;

use der::asn1::{Ia5String, OctetString};
use der::Encode;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::request::{CertReqInfo, ExtensionReq, Version};

use hsm_est_pki::cert::{assemble_signed, extension};
use hsm_est_pki::keys::SignatureAlgorithm;
use hsm_est_pki::{name, oid, to_pem};
use hsm_est_policy::Caller;
use hsm_est_proto::client::SignerClient;
use hsm_est_proto::{IssueRequest, Operation, Request, Response};
use hsm_est_signer::config::SignerConfig;
use hsm_est_signer::dispatch::CallContext;

/// The profile server certificates are issued under.
pub const SERVER_PROFILE: &str = "tls-server";

/// Makes a P-256 key and a CSR for `dns` and `ips`. Returns (CSR DER, key PKCS#8 DER).
fn key_and_csr(dns: &[String], ips: &[IpAddr]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .map_err(|_| "cannot generate a key")?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|_| "cannot load the generated key")?;
    let spki = spki::SubjectPublicKeyInfoOwned {
        algorithm: spki::AlgorithmIdentifierOwned {
            oid: oid::EC_PUBLIC_KEY,
            parameters: Some(der::asn1::Any::from(&oid::SECP256R1)),
        },
        subject_public_key: der::asn1::BitString::from_bytes(pair.public_key().as_ref())
            .map_err(|e| e.to_string())?,
    };
    let mut sans = Vec::new();
    for d in dns {
        sans.push(GeneralName::DnsName(
            Ia5String::new(d).map_err(|_| format!("{d:?} is not a DNS name"))?,
        ));
    }
    for ip in ips {
        let octets = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        sans.push(GeneralName::IpAddress(
            OctetString::new(octets).map_err(|e| e.to_string())?,
        ));
    }
    let cn = dns
        .first()
        .cloned()
        .or_else(|| ips.first().map(|i| i.to_string()))
        .ok_or("give at least one --dns or --ip")?;
    let san_ext = extension(oid::CE_SUBJECT_ALT_NAME, false, &SubjectAltName(sans))
        .map_err(|e| e.to_string())?;
    let value =
        der::asn1::Any::encode_from(&ExtensionReq(vec![san_ext])).map_err(|e| e.to_string())?;
    let mut attributes = der::asn1::SetOfVec::new();
    attributes
        .insert(x509_cert::attr::Attribute {
            oid: oid::EXTENSION_REQUEST,
            values: der::asn1::SetOfVec::try_from(vec![value]).map_err(|e| e.to_string())?,
        })
        .map_err(|e| e.to_string())?;
    let info = CertReqInfo {
        version: Version::V1,
        subject: name::make_name(&[(oid::AT_COMMON_NAME, cn)])?,
        public_key: spki,
        attributes,
    };
    let info_der = info.to_der().map_err(|e| e.to_string())?;
    let sig = pair
        .sign(&rng, &info_der)
        .map_err(|_| "cannot sign the CSR")?;
    let csr = assemble_signed(&info_der, SignatureAlgorithm::EcdsaSha256, sig.as_ref())
        .map_err(|e| e.to_string())?;
    Ok((csr, pkcs8.as_ref().to_vec()))
}

pub fn issue(
    config: &Path,
    dns: &[String],
    ips: &[IpAddr],
    out_cert: &Path,
    out_key: &Path,
) -> Result<(), String> {
    let cfg = SignerConfig::load(config)?;
    let (csr, key) = key_and_csr(dns, ips)?;
    let request = Request::Issue(IssueRequest {
        operation: Operation::Enroll,
        profile: SERVER_PROFILE.into(),
        requester: super::operator_name(),
        client_ip: "local".into(),
        csr_der: csr,
        client_cert_der: Vec::new(),
        client_chain: Vec::new(),
        tls_exporter: vec![],
        registration_authority: false,
    });
    let (answer, chain) = match SignerClient::connect(&super::operator_socket(&cfg)?) {
        Ok(mut client) => {
            let answer = client.call(&request).map_err(|e| e.to_string())?;
            let chain_request = Request::CaChain {
                profile: SERVER_PROFILE.into(),
            };
            let chain = match client.call(&chain_request).map_err(|e| e.to_string())? {
                Response::CaChain { certs, .. } => certs,
                _ => return Err("unexpected answer from the signer".into()),
            };
            (answer, chain)
        }
        Err(_) => {
            // No signer listening: issue directly, with the same checks and records.
            let (service, _journal) = hsm_est_signer::open_service(&cfg, "estctl server-cert")
                .map_err(|e| e.to_string())?;
            let ctx = CallContext {
                caller: Caller::Operator,
                uid: nix::unistd::getuid().as_raw(),
                request_id: 1,
            };
            let answer = service.handle(ctx, request);
            let chain = match service.handle(
                ctx,
                Request::CaChain {
                    profile: SERVER_PROFILE.into(),
                },
            ) {
                Response::CaChain { certs, .. } => certs,
                _ => return Err("the signer has no CA for the server profile".into()),
            };
            (answer, chain)
        }
    };
    let cert = match answer {
        Response::Issued { cert_der, .. } => cert_der,
        Response::Error(e) => return Err(format!("{} [{}]", e.message, e.reason)),
        _ => return Err("unexpected answer from the signer".into()),
    };
    // The leaf and the intermediates; a self-signed root is the client's to have.
    let mut pem = to_pem("CERTIFICATE", &cert);
    if chain.len() > 1 {
        for c in &chain[..chain.len() - 1] {
            pem.push_str(&to_pem("CERTIFICATE", c));
        }
    }
    super::write_file(out_key, &to_pem("PRIVATE KEY", &key), 0o600, false)?;
    super::write_file(out_cert, &pem, 0o644, false)?;
    println!(
        "server certificate for {} written to {} (key {})",
        dns.iter()
            .cloned()
            .chain(ips.iter().map(|i| i.to_string()))
            .collect::<Vec<_>>()
            .join(", "),
        out_cert.display(),
        out_key.display()
    );
    Ok(())
}
