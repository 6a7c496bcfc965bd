//! Revocation and the operator's device life-cycle actions. Deleting and revoking keep their
//! meaning: a deleted device's unexpired certificates are revoked with it (unless the
//! operator keeps them on purpose), revoking a device revokes every unexpired certificate it
//! holds, and a revoked device stays blocked, through a delete too, until an operator allows
//! it. Each action takes the device's claim, so it never interleaves with an issuance for
//! that device, and is audited with the caller's role and SO_PEERCRED uid.

use std::time::SystemTime;

use hsm_est_common::util::{log_safe, now_millis, unix_seconds};

use crate::audit::AuditRecord;
use crate::dispatch::CallContext;
use crate::error::{unavailable, SignerError};
use crate::ledger::{self, DeviceState, LedgerWrite};
use crate::service::SignerService;

/// RFC 5280 CRLReason cessationOfOperation: what deleting a device means for its
/// certificates.
pub const CESSATION_OF_OPERATION: u8 = 5;
/// RFC 5280 CRLReason superseded.
pub const SUPERSEDED: u8 = 4;

/// Audit records and ledger writes that belong in one commit.
#[derive(Default)]
struct Batch {
    records: Vec<AuditRecord>,
    writes: Vec<LedgerWrite>,
}

impl SignerService {
    /// Revokes one certificate. When it is a device's current certificate, the device is
    /// revoked, and with it every unexpired certificate the device still holds (an older
    /// 365-day certificate must not outlive the revocation of its device). Returns how many
    /// certificates were revoked.
    pub(crate) fn revoke(
        &self,
        ctx: CallContext,
        serial: &[u8],
        reason: u8,
        actor: &str,
    ) -> Result<u32, SignerError> {
        let cert = self
            .ledger
            .certificate(serial)
            .map_err(|e| unavailable("revoke", e))?
            .ok_or(SignerError::CertificateNotFound)?;
        if ledger::is_revoked(&cert) {
            return Err(SignerError::AlreadyRevoked);
        }
        let cn = &cert.record.common_name;
        let device = self
            .ledger
            .device(cn)
            .map_err(|e| unavailable("revoke", e))?;
        if device.is_some_and(|d| d.current_serial == serial) {
            return self.revoke_device(ctx, cn, reason, actor);
        }
        let mut batch = Batch::default();
        self.push_revocation(&mut batch, ctx, serial, cn, reason, actor);
        self.commit(batch, "revoke")?;
        Ok(1)
    }

    /// Revokes every unexpired certificate of a device, and the device itself: it gets
    /// nothing more until `device allow`.
    pub(crate) fn revoke_device(
        &self,
        ctx: CallContext,
        cn: &str,
        reason: u8,
        actor: &str,
    ) -> Result<u32, SignerError> {
        let _claim = self.claim(cn)?;
        let device = self.device(cn)?;
        let mut serials = self.unexpired_device_certificates(cn)?;
        // The current certificate blocks the device when revoked, even if it has expired.
        let current = self
            .ledger
            .certificate(&device.current_serial)
            .map_err(|e| unavailable("revoke", e))?;
        if current.is_some_and(|c| !ledger::is_revoked(&c))
            && !serials.contains(&device.current_serial)
        {
            serials.push(device.current_serial.clone());
        }
        if serials.is_empty() {
            return Err(SignerError::AlreadyRevoked);
        }
        let mut batch = Batch::default();
        for serial in &serials {
            self.push_revocation(&mut batch, ctx, serial, cn, reason, actor);
        }
        self.commit(batch, "device revoke")?;
        tracing::info!(
            "device {} revoked by {}: {} certificate(s)",
            log_safe(cn),
            log_safe(&ctx.actor(actor)),
            serials.len()
        );
        Ok(serials.len() as u32)
    }

    /// Deletes a device: its row and certificates stay as history, and it may bootstrap
    /// again. Its unexpired certificates are revoked (cessationOfOperation) unless
    /// `keep_certificates`. A revoked device cannot be deleted back into life: that takes
    /// `device allow`. Returns how many certificates were revoked.
    pub(crate) fn delete_device(
        &self,
        ctx: CallContext,
        cn: &str,
        keep_certificates: bool,
        actor: &str,
    ) -> Result<u32, SignerError> {
        let _claim = self.claim(cn)?;
        let device = self.device(cn)?;
        match device.status {
            DeviceState::Deleted => return Err(SignerError::DeviceNotFound),
            DeviceState::Revoked => return Err(SignerError::DeviceRevoked),
            DeviceState::BootstrapOnly | DeviceState::Enrolled => {}
        }
        let mut batch = Batch::default();
        let serials = if keep_certificates {
            Vec::new()
        } else {
            self.unexpired_device_certificates(cn)?
        };
        for serial in &serials {
            self.push_revocation(&mut batch, ctx, serial, cn, CESSATION_OF_OPERATION, actor);
        }
        batch.records.push(AuditRecord::DeviceDeleted {
            cn: cn.to_string(),
            status: device.status.as_str().to_string(),
            current_serial: hex::encode(&device.current_serial),
            keep_certificates,
            revoked: serials.len() as u32,
            actor: ctx.actor(actor),
            request_id: ctx.request_id,
        });
        // After the revocations: a revocation of the current certificate marks the device
        // revoked, and the delete then marks it deleted.
        batch.writes.push(LedgerWrite::DeleteDevice {
            common_name: cn.to_string(),
        });
        self.commit(batch, "device delete")?;
        tracing::info!(
            "device {} deleted by {}; {} certificate(s) revoked{}",
            log_safe(cn),
            log_safe(&ctx.actor(actor)),
            serials.len(),
            if keep_certificates {
                " (certificates kept)"
            } else {
                ""
            }
        );
        Ok(serials.len() as u32)
    }

    /// Lets a revoked device bootstrap again; its certificates stay revoked.
    pub(crate) fn allow_device(
        &self,
        ctx: CallContext,
        cn: &str,
        actor: &str,
    ) -> Result<(), SignerError> {
        let _claim = self.claim(cn)?;
        let device = self.device(cn)?;
        if device.status != DeviceState::Revoked {
            return Err(SignerError::DeviceNotRevoked);
        }
        let batch = Batch {
            records: vec![AuditRecord::DeviceAllowed {
                cn: cn.to_string(),
                current_serial: hex::encode(&device.current_serial),
                actor: ctx.actor(actor),
                request_id: ctx.request_id,
            }],
            writes: vec![LedgerWrite::AllowDevice {
                common_name: cn.to_string(),
            }],
        };
        self.commit(batch, "device allow")?;
        tracing::info!(
            "device {} allowed to bootstrap again by {}",
            log_safe(cn),
            log_safe(&ctx.actor(actor))
        );
        Ok(())
    }

    /// The audit record and ledger write of revoking `serial`, for a re-issue that
    /// supersedes it (the issuance commits them with the new certificate).
    pub(crate) fn superseded_revocation(
        &self,
        ctx: CallContext,
        serial: &[u8],
        cn: &str,
    ) -> (AuditRecord, LedgerWrite) {
        let mut batch = Batch::default();
        self.push_revocation(&mut batch, ctx, serial, cn, SUPERSEDED, "revoke_superseded");
        (batch.records.remove(0), batch.writes.remove(0))
    }

    /// The serials of a device's certificates that are neither revoked nor expired. Only
    /// certificates of device profiles count: a server certificate that happens to carry
    /// the same CN is not the device's.
    fn unexpired_device_certificates(&self, cn: &str) -> Result<Vec<Vec<u8>>, SignerError> {
        let now = unix_seconds(SystemTime::now());
        let rows = self
            .ledger
            .unexpired_valid(cn, now)
            .map_err(|e| unavailable("ledger read", e))?;
        Ok(rows
            .into_iter()
            .filter(|(_, profile)| {
                // A profile no longer configured cannot say; its certificates are revoked.
                self.policy
                    .profile(profile)
                    .map(|p| p.track_devices)
                    .unwrap_or(true)
            })
            .map(|(serial, _)| serial)
            .collect())
    }

    fn push_revocation(
        &self,
        batch: &mut Batch,
        ctx: CallContext,
        serial: &[u8],
        cn: &str,
        reason: u8,
        actor: &str,
    ) {
        batch.records.push(AuditRecord::Revoked {
            serial: hex::encode(serial),
            cn: cn.to_string(),
            reason_code: reason,
            actor: ctx.actor(actor),
            request_id: ctx.request_id,
        });
        batch.writes.push(LedgerWrite::Revoke {
            serial: serial.to_vec(),
            at_ms: now_millis(),
            reason,
        });
    }

    fn commit(&self, batch: Batch, what: &str) -> Result<(), SignerError> {
        let revoked: Vec<Vec<u8>> = batch
            .writes
            .iter()
            .filter_map(|w| match w {
                LedgerWrite::Revoke { serial, .. } => Some(serial.clone()),
                _ => None,
            })
            .collect();
        self.journal
            .record(batch.records, batch.writes)
            .map_err(|e| unavailable(what, e))?;
        if !revoked.is_empty() {
            self.revocation_committed(revoked.iter().map(Vec::as_slice));
        }
        Ok(())
    }
}
