//! The device rules of the IQE guide, enforced in the signer so that they hold even against
//! a compromised frontend: one bootstrap per device, one enrolment after it, re-enrolment
//! only with the device's current certificate (or by a registration authority, keeping the
//! names of record), nothing for a revoked device. Also the per-device claim that makes
//! check-then-issue atomic, and the operator's device actions.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use hsm_est_common::util::{log_safe, unix_seconds};
use hsm_est_pki::{cert, name};
use hsm_est_policy::{Approved, Operation, Profile, RekeyRule};

use crate::error::{unavailable, DeviceRefusal, SignerError};
use crate::issuance::{CurrentDevice, IssueInput};
use crate::ledger::{self, DeviceRecord, DeviceState};
use crate::quota::QuotaKind;
use crate::service::SignerService;

/// Device CNs with a decision in progress.
#[derive(Default)]
pub struct Claims(Mutex<HashSet<String>>);

/// Releases a device claim when the decision is over, however it ends: the ledger's hold
/// (other signer nodes) first, then this process's.
pub struct Claim<'a> {
    claims: &'a Claims,
    cn: String,
    hold: Option<ledger::DeviceHold<'a>>,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        drop(self.hold.take());
        if let Ok(mut s) = self.claims.0.lock() {
            s.remove(&self.cn);
        }
    }
}

impl Claims {
    /// Claims `cn`, or `None` while another request holds it.
    pub fn claim(&self, cn: &str) -> Option<Claim<'_>> {
        let mut set = self.0.lock().ok()?;
        if !set.insert(cn.to_string()) {
            return None;
        }
        Some(Claim {
            claims: self,
            cn: cn.to_string(),
            hold: None,
        })
    }
}

impl SignerService {
    /// Claims device `cn` in this process and then in the ledger, so that no other
    /// decision about it runs here or on another signer node until the claim is dropped.
    pub(crate) fn claim(&self, cn: &str) -> Result<Claim<'_>, SignerError> {
        let mut claim = self.claims.claim(cn).ok_or(SignerError::DeviceBusy)?;
        match self.ledger.lock_device(cn) {
            Ok(Some(hold)) => {
                claim.hold = Some(hold);
                Ok(claim)
            }
            Ok(None) => Err(SignerError::DeviceBusy),
            Err(e) => Err(unavailable("ledger device lock", e)),
        }
    }

    /// A bootstrap retry: the device is `bootstrap_only`, and its current certificate was
    /// issued under the same profile for the very key this CSR carries, is not revoked and
    /// has not expired. The pump never saw the first answer (the frontend died or its
    /// deadline passed after the signer issued); it gets the same certificate again rather
    /// than a 409 that only an operator could clear. Returns that certificate.
    pub(crate) fn bootstrap_retry(
        &self,
        input: &IssueInput,
        spki_sha256: &[u8],
        device: &CurrentDevice,
        ca: &str,
    ) -> Option<ledger::StoredCertificate> {
        if input.operation != Operation::Bootstrap
            || device.record.status != DeviceState::BootstrapOnly
        {
            return None;
        }
        let current = &device.certificate;
        let now = unix_seconds(SystemTime::now());
        let same = current.record.spki_sha256 == spki_sha256
            && current.record.profile == input.profile
            && current.record.ca == ca
            && !ledger::is_revoked(current)
            && now < current.record.not_after;
        same.then(|| current.clone())
    }

    /// The profile's re-key rule and hourly quotas, after the device rules allowed the
    /// issuance: a device seen for the first time counts against `new_devices_per_hour`,
    /// a renewal with a key other than the current certificate's against `rekeys_per_hour`
    /// (and is refused outright under `rekey: same_key_only`).
    pub(crate) fn rekey_and_quotas(
        &self,
        input: &IssueInput,
        profile: &Profile,
        spki_sha256: &[u8],
        device: Option<&CurrentDevice>,
    ) -> Result<(), SignerError> {
        let kind = match (input.operation, device) {
            (Operation::Bootstrap | Operation::Enroll, None) => QuotaKind::NewDevices,
            (Operation::Reenroll, Some(d)) => {
                if d.certificate.record.spki_sha256 == spki_sha256 {
                    return Ok(());
                }
                if profile.rekey == RekeyRule::SameKeyOnly {
                    return Err(DeviceRefusal::RekeyForbidden.into());
                }
                QuotaKind::Rekeys
            }
            _ => return Ok(()),
        };
        let limit = match kind {
            QuotaKind::NewDevices => profile.quota.new_devices_per_hour,
            QuotaKind::Rekeys => profile.quota.rekeys_per_hour,
        };
        let Some(limit) = limit else {
            return Ok(());
        };
        if self
            .quotas
            .try_take(&profile.name, kind, limit, Instant::now())
        {
            return Ok(());
        }
        tracing::warn!(
            "profile {} quota {kind:?} of {limit} per hour used up; refusing {} for {}",
            profile.name,
            input.operation.as_str(),
            log_safe(&input.requester)
        );
        Err(SignerError::QuotaExceeded(kind))
    }

    /// Returns the device's state after the issuance, or why the rules refuse it.
    pub(crate) fn device_rules(
        &self,
        input: &IssueInput,
        approved: &Approved,
        device: Option<&CurrentDevice>,
    ) -> Result<DeviceState, SignerError> {
        match input.operation {
            Operation::Bootstrap => match device.map(|d| d.record.status) {
                None => Ok(DeviceState::BootstrapOnly),
                Some(DeviceState::Revoked) => Err(DeviceRefusal::DeviceRevoked.into()),
                Some(_) => Err(DeviceRefusal::AlreadyKnown.into()),
            },
            Operation::Enroll => self.enroll_rules(input, approved, device),
            Operation::Reenroll if input.registration_authority => {
                // An RA re-enrols a device it vouches for: the names must still be those of
                // the device's current certificate, taken from the ledger.
                let d = live_device(device)?;
                let cert = cert::parse_certificate(&d.certificate.record.der)
                    .map_err(|e| unavailable("certificate of record", e))?;
                same_names(&cert, approved)?;
                Ok(d.record.status)
            }
            Operation::Reenroll => {
                if input.client_cert_der.is_empty() {
                    return Err(DeviceRefusal::NoCertificate.into());
                }
                let presented = self.check_presented_certificate(input, approved)?;
                let d = live_device(device)?;
                if d.record.current_serial != presented {
                    return Err(DeviceRefusal::NotCurrent.into());
                }
                Ok(d.record.status)
            }
        }
    }

    fn enroll_rules(
        &self,
        input: &IssueInput,
        approved: &Approved,
        device: Option<&CurrentDevice>,
    ) -> Result<DeviceState, SignerError> {
        match device.map(|d| d.record.status) {
            Some(DeviceState::Revoked) => return Err(DeviceRefusal::DeviceRevoked.into()),
            Some(DeviceState::Enrolled) => return Err(DeviceRefusal::AlreadyEnrolled.into()),
            _ => {}
        }
        if !input.client_cert_der.is_empty() && !input.registration_authority {
            // A device's bootstrap certificate enrols that same device only.
            let presented = self.check_presented_certificate(input, approved)?;
            match device {
                Some(d) if d.record.current_serial == presented => {}
                _ => return Err(DeviceRefusal::CertificateMismatch.into()),
            }
        }
        Ok(DeviceState::Enrolled)
    }

    /// Checks a presented client certificate: issued by the CA of the request's profile,
    /// by its current key or an earlier one (signature verified here, not trusted from the
    /// frontend; a certificate of another CA of this signer is foreign here), on record as
    /// that key's, not revoked, not expired,
    /// and naming the same subject and SANs as the request (RFC 7030 §4.2.2, compared by
    /// meaning). Returns its serial.
    fn check_presented_certificate(
        &self,
        input: &IssueInput,
        approved: &Approved,
    ) -> Result<Vec<u8>, SignerError> {
        let presented = cert::parse_certificate(&input.client_cert_der)
            .map_err(|_| DeviceRefusal::CertificateMalformed)?;
        // Any key of the profile's CA: a certificate from before a rollover renews onto
        // the current key.
        let current = self.authority(self.policy.profile(&input.profile)?)?;
        let ca = std::iter::once(current)
            .chain(self.cas.earlier(&current.name))
            .find(|a| {
                cert::verify_certificate_signature(&input.client_cert_der, &a.chain.spki).is_ok()
            })
            .ok_or(DeviceRefusal::CertificateForeign)?;
        let serial = presented.tbs_certificate.serial_number.as_bytes().to_vec();
        let stored = self
            .ledger
            .certificate(&serial)
            .map_err(|e| unavailable("ledger read", e))?
            .ok_or(DeviceRefusal::CertificateUnknown)?;
        if stored.record.der != input.client_cert_der {
            return Err(DeviceRefusal::CertificateUnknown.into());
        }
        if stored.record.ca != ca.id {
            return Err(DeviceRefusal::CertificateForeign.into());
        }
        if ledger::is_revoked(&stored) {
            return Err(DeviceRefusal::CertificateRevoked.into());
        }
        let now = unix_seconds(SystemTime::now());
        let (nb, na) = cert::validity_seconds(&presented);
        if now > na || now < nb {
            return Err(DeviceRefusal::CertificateExpired.into());
        }
        same_names(&presented, approved)?;
        Ok(serial)
    }

    /// A page of devices after `query.after`, and whether more follow.
    pub(crate) fn list_devices(
        &self,
        query: &ledger::DeviceQuery<'_>,
    ) -> Result<(Vec<DeviceRecord>, bool), SignerError> {
        let rows = self
            .ledger
            .list_devices(&ledger::DeviceQuery {
                limit: query.limit + 1,
                ..query.clone()
            })
            .map_err(|e| unavailable("device list", e))?;
        Ok(page(rows, query.limit))
    }

    /// A page of the certificates issued for `cn` after `after_serial`, and whether more
    /// follow.
    pub(crate) fn device_certificates(
        &self,
        cn: &str,
        after_serial: &[u8],
        limit: u32,
    ) -> Result<(Vec<ledger::StoredCertificate>, bool), SignerError> {
        let rows = self
            .ledger
            .certificates_for_cn(cn, after_serial, limit + 1)
            .map_err(|e| unavailable("certificate history", e))?;
        Ok(page(rows, limit))
    }

    pub(crate) fn device(&self, cn: &str) -> Result<DeviceRecord, SignerError> {
        self.ledger
            .device(cn)
            .map_err(|e| unavailable("device get", e))?
            .ok_or(SignerError::DeviceNotFound)
    }
}

/// A page from rows fetched with one more than `limit`: the first `limit`, and whether
/// the extra one (a next page) was there.
pub(crate) fn page<T>(mut rows: Vec<T>, limit: u32) -> (Vec<T>, bool) {
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    (rows, more)
}

/// RFC 7030 §4.2.2: a renewal keeps the subject and SANs of the current certificate,
/// compared by meaning.
fn same_names(current: &x509_cert::Certificate, approved: &Approved) -> Result<(), SignerError> {
    if name::names_equal(&current.tbs_certificate.subject, &approved.subject)
        && name::sans_equal(
            &cert::subject_alt_names(current),
            &approved.subject_alt_names,
        )
    {
        Ok(())
    } else {
        Err(DeviceRefusal::NameMismatch.into())
    }
}

/// The device a re-enrolment is for: it must exist and not be revoked.
fn live_device(device: Option<&CurrentDevice>) -> Result<&CurrentDevice, SignerError> {
    let Some(d) = device else {
        return Err(DeviceRefusal::UnknownDevice.into());
    };
    if d.record.status == DeviceState::Revoked {
        return Err(DeviceRefusal::DeviceRevoked.into());
    }
    Ok(d)
}
