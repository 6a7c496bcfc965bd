//! EST wire formats (RFC 7030, RFC 8951, and the IQE gateway's raw DER): response framing,
//! certs-only CMS, and the CSR request body in any of the forms clients send.

use base64ct::{Base64, Encoding};
use der::{Decode, Encode, Header, Reader, SliceReader, Tag, TagNumber};

/// The largest request body accepted (libest uses 8 KiB; RSA-4096 CSRs with SANs fit).
pub const MAX_BODY: usize = 16 * 1024;
/// RFC 2045 line length for the wrapped base64 form.
pub const BASE64_LINE: usize = 76;

pub const CT_CERTS_ONLY: &str = "application/pkcs7-mime; smime-type=certs-only";
pub const CT_PKCS7: &str = "application/pkcs7-mime";
pub const CT_CSRATTRS: &str = "application/csrattrs";

/// How a response body is framed, globally (`response_format`) and per label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFormat {
    /// Raw DER, no Content-Transfer-Encoding: what the IQE gateway requires.
    Der,
    /// RFC 7030: base64 in lines of at most 76 characters, `Content-Transfer-Encoding: base64`.
    Base64,
    /// One line of base64 ended by CRLF (strongSwan 5.9 decodes only a single line).
    Base64SingleLine,
}

impl std::str::FromStr for ResponseFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "der" => Ok(ResponseFormat::Der),
            "base64" => Ok(ResponseFormat::Base64),
            "base64-single-line" => Ok(ResponseFormat::Base64SingleLine),
            other => Err(format!(
                "{other:?} is not der, base64 or base64-single-line"
            )),
        }
    }
}

impl ResponseFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseFormat::Der => "der",
            ResponseFormat::Base64 => "base64",
            ResponseFormat::Base64SingleLine => "base64-single-line",
        }
    }

    /// The body and whether `Content-Transfer-Encoding: base64` goes with it.
    pub fn encode(self, der_bytes: &[u8]) -> (Vec<u8>, bool) {
        match self {
            ResponseFormat::Der => (der_bytes.to_vec(), false),
            ResponseFormat::Base64SingleLine => {
                // One line, ended by CRLF: strongSwan reads it, and libest cannot decode
                // a last line without its line ending.
                let mut out = Base64::encode_string(der_bytes).into_bytes();
                out.extend_from_slice(b"\r\n");
                (out, true)
            }
            ResponseFormat::Base64 => {
                let one = Base64::encode_string(der_bytes);
                let mut out = Vec::with_capacity(one.len() + one.len() / BASE64_LINE * 2 + 2);
                for chunk in one.as_bytes().chunks(BASE64_LINE) {
                    out.extend_from_slice(chunk);
                    out.extend_from_slice(b"\r\n");
                }
                (out, true)
            }
        }
    }
}

/// id-signedData and id-data (RFC 5652 §5.1, §4), DER-encoded with their tags.
const OID_SIGNED_DATA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02,
];
const OID_DATA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01,
];

/// `tag`, its DER length, and `content`.
fn tlv(tag: Tag, content: &[u8]) -> Result<Vec<u8>, der::Error> {
    let mut out = Header::new(tag, content.len())?.to_der()?;
    out.extend_from_slice(content);
    Ok(out)
}

/// DER's SET OF order (X.690 §11.6): encodings compared as octet strings, the shorter
/// padded with zero octets at its end.
fn set_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            let x = a.get(i).copied().unwrap_or(0);
            let y = b.get(i).copied().unwrap_or(0);
            x.cmp(&y)
        })
        .find(|o| o.is_ne())
        .unwrap_or(std::cmp::Ordering::Equal)
}

/// A certs-only CMS SignedData (RFC 5652, RFC 7030 §4.1.3) holding `certs`: version 1, no
/// digest algorithms, id-data with no content, the certificates as a DER-sorted SET (so
/// clients must not rely on order), an empty CRL set, no signers. The certificates' own DER is spliced in
/// unchanged: each must be one whole SEQUENCE, but is not decoded and encoded again (that
/// was a sixth of the frontend's time per enrolment).
pub fn certs_only(certs: &[Vec<u8>]) -> Result<Vec<u8>, der::Error> {
    for c in certs {
        let mut r = SliceReader::new(c)?;
        let header = Header::decode(&mut r)?;
        header.tag.assert_eq(Tag::Sequence)?;
        r.read_slice(header.length)?;
        r.finish(())?;
    }
    let mut sorted: Vec<&Vec<u8>> = certs.iter().collect();
    sorted.sort_by(|a, b| set_order(a, b));
    let set: Vec<u8> = sorted.into_iter().flatten().copied().collect();
    let mut signed = vec![0x02, 0x01, 0x01, 0x31, 0x00];
    signed.extend(tlv(Tag::Sequence, OID_DATA)?);
    signed.extend(tlv(
        Tag::ContextSpecific {
            constructed: true,
            number: TagNumber::N0,
        },
        &set,
    )?);
    // An empty crls [1] and an empty signerInfos SET, as the cms crate wrote them before:
    // the answers stay byte for byte what clients already take.
    signed.extend_from_slice(&[0xa1, 0x00, 0x31, 0x00]);
    let signed = tlv(Tag::Sequence, &signed)?;
    let mut info = OID_SIGNED_DATA.to_vec();
    info.extend(tlv(
        Tag::ContextSpecific {
            constructed: true,
            number: TagNumber::N0,
        },
        &signed,
    )?);
    tlv(Tag::Sequence, &info)
}

/// Why a request body is not a CSR.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    Empty,
    NotBase64,
    BadPem,
    NotPkcs10,
}

impl BodyError {
    pub fn message(&self) -> &'static str {
        match self {
            BodyError::Empty => "The request body is empty.",
            BodyError::NotBase64 => "The request body is not base64, PEM or DER.",
            BodyError::BadPem => "The PEM block in the request is malformed.",
            BodyError::NotPkcs10 => "Invalid or corrupted PKCS#10 request.",
        }
    }
}

/// Takes the CSR from a request body: base64 with any white space (RFC 7030, RFC 8951:
/// Content-Transfer-Encoding is ignored), PEM, or raw DER (the IQE guide allows all three).
/// Returns strict DER that decodes as PKCS#10.
pub fn decode_csr_body(body: &[u8]) -> Result<Vec<u8>, BodyError> {
    // Raw DER (the IQE gateway's format) first, on the body as it came: DER may end in any
    // byte, 0x0d and 0x20 included, so trimming white space first would break ~2 % of
    // them. It is recognised by decoding it; the signer parses it once more, for good.
    if body.first() == Some(&0x30) && x509_cert::request::CertReq::from_der(body).is_ok() {
        return Ok(body.to_vec());
    }
    let trimmed = trim_ascii(body);
    if trimmed.is_empty() {
        return Err(BodyError::Empty);
    }
    let der_bytes = if trimmed.starts_with(b"-----BEGIN") {
        let text = std::str::from_utf8(trimmed).map_err(|_| BodyError::BadPem)?;
        let (label, der_bytes) =
            der::pem::decode_vec(text.as_bytes()).map_err(|_| BodyError::BadPem)?;
        if label != "CERTIFICATE REQUEST" && label != "NEW CERTIFICATE REQUEST" {
            return Err(BodyError::BadPem);
        }
        der_bytes
    } else {
        let compact: Vec<u8> = trimmed
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        Base64::decode_vec(std::str::from_utf8(&compact).map_err(|_| BodyError::NotBase64)?)
            .map_err(|_| BodyError::NotBase64)?
    };
    x509_cert::request::CertReq::from_der(&der_bytes).map_err(|_| BodyError::NotPkcs10)?;
    Ok(der_bytes)
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map(|p| p + 1)
        .unwrap_or(start);
    &b[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cms crate's certs-only encoding, the reference for the spliced one.
    fn reference(certs: &[Vec<u8>]) -> Vec<u8> {
        let parsed = certs
            .iter()
            .map(|c| x509_cert::Certificate::from_der(c).unwrap())
            .collect::<Vec<_>>();
        cms::content_info::ContentInfo::try_from(parsed)
            .unwrap()
            .to_der()
            .unwrap()
    }

    fn ca_certificates() -> Vec<Vec<u8>> {
        // Two real certificates of different lengths from the repository's test data.
        let text = include_str!("../../../tests/data/two-certificates.pem");
        hsm_est_pki::pem_certificates(text).unwrap()
    }

    #[test]
    fn certs_only_is_byte_for_byte_what_the_cms_crate_makes() {
        let certs = ca_certificates();
        assert!(certs.len() >= 2);
        assert_eq!(certs_only(&certs[..1]).unwrap(), reference(&certs[..1]));
        assert_eq!(certs_only(&certs).unwrap(), reference(&certs));
        let reversed: Vec<Vec<u8>> = certs.iter().rev().cloned().collect();
        assert_eq!(certs_only(&reversed).unwrap(), reference(&certs));
        // Not one whole SEQUENCE: refused, never spliced.
        let mut trailing = certs[0].clone();
        trailing.push(0);
        assert!(certs_only(&[trailing]).is_err());
        assert!(certs_only(&[vec![0x31, 0x00]]).is_err());
        assert!(certs_only(&[certs[0][..certs[0].len() - 1].to_vec()]).is_err());
    }

    #[test]
    fn formats_frame_as_specified() {
        let data = vec![0xabu8; 200];
        let (der_body, cte) = ResponseFormat::Der.encode(&data);
        assert_eq!((der_body, cte), (data.clone(), false));
        let (one, cte) = ResponseFormat::Base64SingleLine.encode(&data);
        assert!(cte && one.ends_with(b"\r\n"));
        assert_eq!(one.iter().filter(|b| **b == b'\n').count(), 1);
        let (wrapped, _) = ResponseFormat::Base64.encode(&data);
        let text = String::from_utf8(wrapped).unwrap();
        assert!(text.lines().all(|l| l.len() <= BASE64_LINE));
        assert!(text.lines().count() > 1);
        assert_eq!(Base64::decode_vec(&text.replace("\r\n", "")).unwrap(), data);
    }

    #[test]
    fn csr_bodies_in_every_form() {
        let csr = crate::csrgen::csr(&[(crate::csrgen::CN, "pump-1")]);
        let b64 = Base64::encode_string(&csr);
        let wrapped: String = b64
            .as_bytes()
            .chunks(64)
            .map(|c| format!("{}\r\n", std::str::from_utf8(c).unwrap()))
            .collect();
        let pem = hsm_est_pki::to_pem("CERTIFICATE REQUEST", &csr);
        for body in [
            csr.clone(),
            b64.into_bytes(),
            wrapped.into_bytes(),
            pem.into_bytes(),
        ] {
            assert_eq!(decode_csr_body(&body).unwrap(), csr);
        }
        assert_eq!(decode_csr_body(b"  \r\n"), Err(BodyError::Empty));
        assert_eq!(
            decode_csr_body(b"!!!not base64!!!"),
            Err(BodyError::NotBase64)
        );
        assert_eq!(decode_csr_body(b"aGVsbG8="), Err(BodyError::NotPkcs10));
        let mut trailing = csr.clone();
        trailing.push(0);
        assert!(decode_csr_body(&trailing).is_err());
    }

    /// Raw DER whose last byte is a white-space byte (part of the signature) is DER, not
    /// text to trim.
    #[test]
    fn raw_der_ending_in_white_space_bytes() {
        for last in [0x0d, 0x20] {
            let csr = (0..20_000)
                .map(|_| crate::csrgen::csr(&[(crate::csrgen::CN, "pump-1")]))
                .find(|c| c.last() == Some(&last))
                .expect("such a signature within 20000 tries");
            assert_eq!(decode_csr_body(&csr).unwrap(), csr, "last byte {last:#04x}");
        }
    }
}
