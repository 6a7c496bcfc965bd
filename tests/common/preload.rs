//! Devices written straight into a stopped signer's ledger, for scale tests and for the
//! benchmark's million-device ledger (`examples/preload_ledger.rs`).

/// Writes `devices` enrolled devices (CNs `ward-<letter>-pump-NNNNNN`) straight into a
/// stopped signer's ledger through the ledger's own interface: a tenth expire within the
/// week, one in a hundred is revoked. The audit head stays where the signer left it.
pub fn preload_devices(ledger: &hsm_est_signer::ledger::SqliteLedger, devices: u32) {
    use hsm_est_signer::ledger::{CertificateRecord, DeviceState, Ledger, LedgerWrite};
    let head = ledger
        .audit_head()
        .unwrap()
        .expect("the signer started once");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for chunk in (0..devices).collect::<Vec<_>>().chunks(20_000) {
        let writes: Vec<LedgerWrite> = chunk
            .iter()
            .map(|&i| {
                let cn = format!("ward-{}-pump-{i:06}", (b'a' + (i % 26) as u8) as char);
                let mut serial = vec![0x41];
                serial.extend_from_slice(&i.to_be_bytes());
                LedgerWrite::Issue {
                    certificate: Box::new(CertificateRecord {
                        serial,
                        subject: format!("CN={cn}"),
                        common_name: cn,
                        sans: vec![],
                        spki_sha256: vec![0; 32],
                        not_before: 0,
                        // A tenth expire within the week, the rest in a year.
                        not_after: now + if i % 10 == 0 { 3 } else { 365 } * 86_400,
                        profile: "iqe-pump".into(),
                        operation: "enroll".into(),
                        requester: "basic:preload".into(),
                        client_ip: "192.0.2.1".into(),
                        issued_at_ms: 0,
                        der: vec![0x30, 0x00],
                        ca: "default".into(),
                    }),
                    device_status: Some(if i % 100 == 0 {
                        DeviceState::Revoked
                    } else {
                        DeviceState::Enrolled
                    }),
                    supersedes: None,
                }
            })
            .collect();
        // The audit head stays where the signer left it: these rows bypass the audit log.
        ledger.apply(&writes, &head).unwrap();
    }
}
