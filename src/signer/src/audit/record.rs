//! The audit vocabulary: every kind of record the signer and `estctl` write, as one typed
//! enum. Serialised in one place ([`AuditRecord::to_fields`]) so that a record's fields can
//! never be misspelt at a call site or collide with the chain fields.

use serde::Serialize;
use serde_json::{Map, Value};

/// One decision or life-cycle event. The `event` field of the JSON line is the variant name
/// in snake case; `seq`, `ts`, `prev` and `hash` are added by the log.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AuditRecord {
    Start {
        version: String,
        process: String,
        ca_subject: String,
        profiles: Vec<String>,
    },
    Stop {
        signal: String,
    },
    /// The single PIN attempt at start-up failed.
    LoginFailure {
        detail: String,
    },
    /// The CA key in the token is not protected as required.
    KeyRefused {
        detail: String,
    },
    /// A torn last line from an interrupted write was cut off at start-up.
    AuditRecovered {
        torn_bytes: u64,
        detail: String,
    },
    Issued(Box<Issued>),
    Rejected(Box<Rejected>),
    /// A bootstrap retry for the same key got the certificate already issued.
    Redelivered {
        serial: String,
        cn: String,
        requester: String,
        client_ip: String,
        caller: String,
        request_id: u64,
    },
    /// The audit records of a batch were written but its ledger transaction failed: these
    /// serials were never released and are not in the ledger, these revocations and
    /// deletions did not happen. `estctl audit verify` uses this to explain every serial.
    CommitFailed {
        serials: Vec<String>,
        revocations: Vec<String>,
        deleted_devices: Vec<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        allowed_devices: Vec<String>,
        /// Numbers of CRLs signed in that batch (never published).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        crls: Vec<u64>,
        detail: String,
    },
    /// A CRL was signed with the CA key; `entries` revoked certificates listed.
    CrlIssued {
        /// The CA whose CRL, when it is not the default CA.
        #[serde(skip_serializing_if = "Option::is_none")]
        ca: Option<String>,
        number: u64,
        this_update: String,
        next_update: String,
        entries: usize,
        sha256: String,
        actor: String,
        request_id: u64,
    },
    /// A certificate the token signed failed the self-check and was discarded.
    SignFailed {
        serial: String,
        detail: String,
        request_id: u64,
    },
    /// An operator deleted a device; `revoked` counts the certificates revoked with it
    /// (each also has its own `revoked` record).
    DeviceDeleted {
        cn: String,
        status: String,
        current_serial: String,
        keep_certificates: bool,
        revoked: u32,
        actor: String,
        request_id: u64,
    },
    /// An operator let a revoked device bootstrap again.
    DeviceAllowed {
        cn: String,
        current_serial: String,
        actor: String,
        request_id: u64,
    },
    Revoked {
        serial: String,
        cn: String,
        reason_code: u8,
        actor: String,
        request_id: u64,
    },
    CaKeyGenerated {
        key_type: String,
        key_label: String,
        subject: String,
        /// The self-signed CA certificate's serial; absent when a CSR was made instead.
        #[serde(skip_serializing_if = "Option::is_none")]
        serial: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        mode: Option<String>,
        spki_sha256: String,
        actor: String,
        /// The CA's name when it is not the default CA.
        #[serde(skip_serializing_if = "Option::is_none")]
        ca: Option<String>,
    },
    CaImported {
        subject: String,
        chain_length: usize,
        actor: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        ca: Option<String>,
    },
    /// `estctl ca rollover` generated a CA's next key in the token, its self-signed
    /// certificate and the link certificates (NewWithOld, OldWithNew).
    CaRolledOver {
        /// The CA's name.
        ca: String,
        generation: u32,
        key_type: String,
        key_label: String,
        previous_key_label: String,
        subject: String,
        serial: String,
        spki_sha256: String,
        new_with_old: String,
        old_with_new: String,
        actor: String,
    },
    /// `estctl ocsp init` generated the delegated OCSP responder's key in the token.
    OcspKeyGenerated {
        key_type: String,
        key_label: String,
        spki_sha256: String,
        actor: String,
    },
}

/// A certificate left the signer.
#[derive(Debug, Clone, Serialize)]
pub struct Issued {
    pub serial: String,
    pub subject: String,
    pub sans: Vec<String>,
    pub spki_sha256: String,
    pub key: String,
    pub profile: String,
    pub operation: String,
    pub requester: String,
    pub client_ip: String,
    pub not_before: i64,
    pub not_after: i64,
    /// The device's state after the issuance, or `untracked`.
    pub device_status: String,
    pub caller: String,
    pub request_id: u64,
    /// Set when the profile's validity would have outlived the CA certificate.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub validity_truncated_to_ca: bool,
    /// Extensions the CSR asked for that the profile did not allow.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ignored_csr_extensions: Vec<String>,
    /// The device's previous certificate, which this one supersedes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<String>,
    /// `verified`, or `not_checked` when the CSR carried a binding value the profile
    /// ignores; absent when there was none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_binding: Option<String>,
    /// The issuing CA when it is not the default CA.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
}

/// How records name a CA: absent for the default CA (as every record before CAs had
/// names), the name for any other.
pub fn named_ca(name: &str) -> Option<String> {
    (name != crate::ledger::DEFAULT_CA).then(|| name.to_string())
}

/// An issuance was refused.
#[derive(Debug, Clone, Serialize)]
pub struct Rejected {
    pub reason: String,
    /// The stable wire code the requester was given.
    pub code: u16,
    pub operation: String,
    pub profile: String,
    pub requester: String,
    pub client_ip: String,
    pub subject: String,
    pub caller: String,
    pub request_id: u64,
}

impl AuditRecord {
    /// The record's fields, `event` included, as a JSON object.
    pub fn to_fields(&self) -> Result<Map<String, Value>, serde_json::Error> {
        match serde_json::to_value(self)? {
            Value::Object(map) => Ok(map),
            // Every variant is a struct or a newtype around one, so serde_json always
            // produces an object; anything else is a bug in this file.
            _ => Err(serde::ser::Error::custom("audit record is not an object")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_their_event_name_and_only_set_optional_fields() {
        let stop = AuditRecord::Stop {
            signal: "SIGTERM".into(),
        }
        .to_fields()
        .unwrap();
        assert_eq!(stop["event"], "stop");
        assert_eq!(stop["signal"], "SIGTERM");
        let imported = AuditRecord::CaKeyGenerated {
            key_type: "EcP256".into(),
            key_label: "k".into(),
            subject: "CN=x".into(),
            serial: None,
            mode: Some("csr".into()),
            spki_sha256: "00".into(),
            actor: "root".into(),
            ca: None,
        }
        .to_fields()
        .unwrap();
        assert_eq!(imported["event"], "ca_key_generated");
        assert!(!imported.contains_key("serial"));
    }
}
