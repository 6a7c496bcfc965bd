//! Certification path validation for the few paths the signer checks itself (registration
//! authorities): from a leaf, through the intermediates the client sent, to one of the
//! configured trust anchors. Every signature is verified, every certificate's validity
//! checked at `now`, every issuer must be a signing CA and respect its pathLenConstraint.
//! Bounded: at most [`MAX_INTERMEDIATES`] steps, each a scan of the anchors and of the
//! (already bounded) intermediates.

use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage};
use x509_cert::Certificate;

use crate::cert::{
    is_signing_ca, parse_certificate, validity_seconds, verify_certificate_signature,
};
use crate::name::names_equal;

/// Intermediates allowed between a leaf and its anchor.
pub const MAX_INTERMEDIATES: usize = 8;

/// Why a path did not validate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// A certificate does not decode.
    Malformed,
    /// A certificate of the path is outside its validity period.
    Expired,
    /// The leaf itself is a CA certificate.
    LeafIsCa,
    /// No chain of verified signatures reaches an anchor.
    Untrusted,
}

/// A trust anchor: a certificate whose subject and key are trusted as configured.
#[derive(Debug, Clone)]
pub struct Anchor {
    pub cert: Certificate,
}

impl Anchor {
    pub fn from_der(der: &[u8]) -> Result<Anchor, String> {
        Ok(Anchor {
            cert: parse_certificate(der)?,
        })
    }
}

fn current_at(cert: &Certificate, now: i64) -> bool {
    let (not_before, not_after) = validity_seconds(cert);
    not_before <= now && now <= not_after
}

fn path_len_ok(ca: &Certificate, intermediates_below: usize) -> bool {
    match ca.tbs_certificate.get::<BasicConstraints>() {
        Ok(Some((_, bc))) => bc
            .path_len_constraint
            .is_none_or(|n| intermediates_below <= usize::from(n)),
        _ => true,
    }
}

/// Validates `leaf` up to one of `anchors`, using `intermediates` as offered. Returns the
/// decoded leaf.
pub fn validate(
    leaf: &[u8],
    intermediates: &[Vec<u8>],
    anchors: &[Anchor],
    now: i64,
) -> Result<Certificate, PathError> {
    let leaf_cert = parse_certificate(leaf).map_err(|_| PathError::Malformed)?;
    if matches!(
        leaf_cert.tbs_certificate.get::<BasicConstraints>(),
        Ok(Some((_, BasicConstraints { ca: true, .. })))
    ) {
        return Err(PathError::LeafIsCa);
    }
    let offered = intermediates
        .iter()
        .take(MAX_INTERMEDIATES)
        .map(|d| parse_certificate(d).map(|c| (d.as_slice(), c)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| PathError::Malformed)?;
    let (mut der, mut cert) = (leaf, leaf_cert.clone());
    for depth in 0..=MAX_INTERMEDIATES {
        if !current_at(&cert, now) {
            return Err(PathError::Expired);
        }
        let issuer = &cert.tbs_certificate.issuer;
        let signed_by = |ca: &Certificate| {
            names_equal(&ca.tbs_certificate.subject, issuer)
                && is_signing_ca(ca)
                && path_len_ok(ca, depth)
                && verify_certificate_signature(der, &ca.tbs_certificate.subject_public_key_info)
                    .is_ok()
        };
        if let Some(anchor) = anchors.iter().find(|a| signed_by(&a.cert)) {
            if !current_at(&anchor.cert, now) {
                return Err(PathError::Expired);
            }
            return Ok(leaf_cert);
        }
        let Some((next_der, next)) = offered.iter().find(|(_, c)| signed_by(c)) else {
            return Err(PathError::Untrusted);
        };
        (der, cert) = (next_der, next.clone());
    }
    Err(PathError::Untrusted)
}

/// Whether the certificate's extendedKeyUsage names `purpose`.
pub fn has_extended_key_usage(cert: &Certificate, purpose: &der::asn1::ObjectIdentifier) -> bool {
    matches!(
        cert.tbs_certificate.get::<ExtendedKeyUsage>(),
        Ok(Some((_, eku))) if eku.0.contains(purpose)
    )
}
