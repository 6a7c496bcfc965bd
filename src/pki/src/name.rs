//! Distinguished names: parsing the operator's DN strings, reading attribute values, and
//! comparing names by meaning (RFC 5280 §7.1) rather than by bytes: a CN re-encoded as
//! UTF8String where the old certificate had PrintableString is still the same name.

use der::asn1::{Any, Ia5StringRef, ObjectIdentifier, PrintableStringRef, SetOfVec, Utf8StringRef};
use der::{Tag, Tagged};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};

use super::oid;

/// Short names for the attribute types this project accepts in DN strings and profiles.
pub const ATTRIBUTE_NAMES: &[(&str, ObjectIdentifier)] = &[
    ("CN", oid::AT_COMMON_NAME),
    ("O", oid::AT_ORGANIZATION),
    ("OU", oid::AT_ORG_UNIT),
    ("C", oid::AT_COUNTRY),
    ("L", oid::AT_LOCALITY),
    ("ST", oid::AT_STATE),
    ("serialNumber", oid::AT_SERIAL_NUMBER),
];

pub fn attribute_oid(short: &str) -> Option<ObjectIdentifier> {
    ATTRIBUTE_NAMES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(short))
        .map(|(_, o)| *o)
}

pub fn attribute_short_name(o: &ObjectIdentifier) -> Option<&'static str> {
    ATTRIBUTE_NAMES
        .iter()
        .find(|(_, x)| x == o)
        .map(|(n, _)| *n)
}

/// Builds one attribute. countryName and serialNumber are PrintableString (RFC 5280
/// Appendix A); everything else is UTF8String, which RFC 5280 §4.1.2.6 prefers.
pub fn make_attribute(
    attr: ObjectIdentifier,
    value: &str,
) -> Result<AttributeTypeAndValue, String> {
    let any = if attr == oid::AT_COUNTRY || attr == oid::AT_SERIAL_NUMBER {
        let p = PrintableStringRef::new(value)
            .map_err(|_| format!("{value:?} is not a PrintableString"))?;
        Any::from(p)
    } else {
        let u = Utf8StringRef::new(value).map_err(|e| e.to_string())?;
        Any::from(u)
    };
    Ok(AttributeTypeAndValue {
        oid: attr,
        value: any,
    })
}

/// Builds a Name from `(type, value)` pairs in encoding order, one attribute per RDN.
pub fn make_name(attrs: &[(ObjectIdentifier, String)]) -> Result<Name, String> {
    let mut rdns = Vec::with_capacity(attrs.len());
    for (o, v) in attrs {
        let atv = make_attribute(*o, v)?;
        let set = SetOfVec::try_from(vec![atv]).map_err(|e| e.to_string())?;
        rdns.push(RelativeDistinguishedName(set));
    }
    Ok(RdnSequence(rdns))
}

/// Parses an operator DN: either OpenSSL's `/C=US/O=Hospital/CN=Device CA` (encoded in the
/// order written) or RFC 4514's `CN=Device CA,O=Hospital,C=US` (most specific first, so
/// encoded in reverse). Escapes and multi-valued RDNs are not supported and are refused.
pub fn parse_dn(text: &str) -> Result<Name, String> {
    let text = text.trim();
    let (parts, reverse): (Vec<&str>, bool) = if let Some(rest) = text.strip_prefix('/') {
        (rest.split('/').collect(), false)
    } else {
        (text.split(',').collect(), true)
    };
    let mut attrs = Vec::new();
    for part in parts {
        let part = part.trim();
        if part.contains(['\\', '+', '"', '#', ';', '<', '>']) {
            return Err(format!(
                "{part:?}: escapes and multi-valued RDNs are not supported"
            ));
        }
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not TYPE=value"))?;
        let o = attribute_oid(k.trim()).ok_or_else(|| {
            format!(
                "unknown attribute type {:?} (use CN, O, OU, C, L, ST or serialNumber)",
                k.trim()
            )
        })?;
        let v = v.trim();
        if v.is_empty() {
            return Err(format!("{part:?} has an empty value"));
        }
        attrs.push((o, v.to_string()));
    }
    if attrs.is_empty() {
        return Err("empty distinguished name".into());
    }
    if reverse {
        attrs.reverse();
    }
    make_name(&attrs)
}

/// The text of a directory string. Only the string types RFC 5280 allows for the attributes
/// this project accepts are read; anything else is `None` and policy refuses it.
pub fn attribute_string(value: &Any) -> Option<String> {
    match value.tag() {
        Tag::Utf8String => Utf8StringRef::try_from(value)
            .ok()
            .map(|s| s.as_str().to_string()),
        Tag::PrintableString => PrintableStringRef::try_from(value)
            .ok()
            .map(|s| s.as_str().to_string()),
        Tag::Ia5String => Ia5StringRef::try_from(value)
            .ok()
            .map(|s| s.as_str().to_string()),
        _ => None,
    }
}

/// The common name of a Name (the last one, as TLS stacks do), if any.
pub fn common_name(name: &Name) -> Option<String> {
    name.0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .filter(|atv| atv.oid == oid::AT_COMMON_NAME)
        .filter_map(|atv| attribute_string(&atv.value))
        .next_back()
}

/// RFC 4518-style preparation, reduced to what matters for these attribute types: trim,
/// fold runs of white space into one space, compare case-insensitively.
fn prepare(value: &str) -> String {
    value
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn atv_key(atv: &AttributeTypeAndValue) -> (ObjectIdentifier, Result<String, Vec<u8>>) {
    let value = match attribute_string(&atv.value) {
        Some(s) => Ok(prepare(&s)),
        None => Err(atv.value.value().to_vec()),
    };
    (atv.oid, value)
}

/// Two names are equal when they have the same RDNs in the same order, each RDN holding the
/// same set of attribute types with values equal after preparation.
pub fn names_equal(a: &Name, b: &Name) -> bool {
    if a.0.len() != b.0.len() {
        return false;
    }
    a.0.iter().zip(b.0.iter()).all(|(ra, rb)| {
        let mut ka: Vec<_> = ra.0.iter().map(atv_key).collect();
        let mut kb: Vec<_> = rb.0.iter().map(atv_key).collect();
        ka.sort_by(|x, y| format!("{x:?}").cmp(&format!("{y:?}")));
        kb.sort_by(|x, y| format!("{x:?}").cmp(&format!("{y:?}")));
        ka == kb
    })
}

/// A general name reduced to what identifies it: DNS names case-insensitively, IP addresses
/// by their octets, e-mail and URI as written (RFC 5280 §7.5 local parts are case-sensitive).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SanKey {
    Dns(String),
    Ip(Vec<u8>),
    Email(String),
    Uri(String),
    Other(Vec<u8>),
}

pub fn san_key(gn: &GeneralName) -> SanKey {
    match gn {
        GeneralName::DnsName(d) => SanKey::Dns(d.as_str().trim_end_matches('.').to_lowercase()),
        GeneralName::IpAddress(ip) => SanKey::Ip(ip.as_bytes().to_vec()),
        GeneralName::Rfc822Name(e) => SanKey::Email(e.as_str().to_string()),
        GeneralName::UniformResourceIdentifier(u) => SanKey::Uri(u.as_str().to_string()),
        other => SanKey::Other(der::Encode::to_der(other).unwrap_or_default()),
    }
}

/// SAN lists compared as sets of [`SanKey`].
pub fn sans_equal(a: &[GeneralName], b: &[GeneralName]) -> bool {
    let mut ka: Vec<_> = a.iter().map(san_key).collect();
    let mut kb: Vec<_> = b.iter().map(san_key).collect();
    ka.sort();
    ka.dedup();
    kb.sort();
    kb.dedup();
    ka == kb
}

/// A human-readable text for a SAN, for the ledger and the audit log.
pub fn san_text(gn: &GeneralName) -> String {
    match san_key(gn) {
        SanKey::Dns(d) => format!("DNS:{d}"),
        SanKey::Ip(ip) => match ip.len() {
            4 => format!("IP:{}", std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])),
            16 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(&ip);
                format!("IP:{}", std::net::Ipv6Addr::from(a))
            }
            _ => format!("IP:{}", hex::encode(&ip)),
        },
        SanKey::Email(e) => format!("email:{e}"),
        SanKey::Uri(u) => format!("URI:{u}"),
        SanKey::Other(raw) => format!("other:{}", hex::encode(&raw)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::Encode;

    #[test]
    fn both_dn_forms_encode_the_same() {
        let a = parse_dn("/C=US/O=Hospital/CN=Device CA").unwrap();
        let b = parse_dn("CN=Device CA, O=Hospital, C=US").unwrap();
        assert_eq!(a.to_der().unwrap(), b.to_der().unwrap());
        assert_eq!(common_name(&a).as_deref(), Some("Device CA"));
        assert!(parse_dn("CN=a+O=b").is_err());
        assert!(parse_dn("XX=a").is_err());
        assert!(parse_dn("C=USA").is_ok(), "length is policy's business");
    }

    #[test]
    fn names_compare_by_meaning() {
        let printable = {
            let atv = AttributeTypeAndValue {
                oid: oid::AT_COMMON_NAME,
                value: Any::from(PrintableStringRef::new("Pump 1").unwrap()),
            };
            RdnSequence(vec![RelativeDistinguishedName(
                SetOfVec::try_from(vec![atv]).unwrap(),
            )])
        };
        let utf8 = parse_dn("CN=pump  1").unwrap();
        assert!(names_equal(&printable, &utf8));
        assert!(!names_equal(&printable, &parse_dn("CN=pump 2").unwrap()));
        assert!(!names_equal(
            &printable,
            &parse_dn("/CN=pump 1/O=x").unwrap()
        ));
    }

    #[test]
    fn sans_compare_as_sets() {
        let a = vec![
            GeneralName::DnsName(der::asn1::Ia5String::new("A.example").unwrap()),
            GeneralName::IpAddress(der::asn1::OctetString::new(vec![127, 0, 0, 1]).unwrap()),
        ];
        let b = vec![
            GeneralName::IpAddress(der::asn1::OctetString::new(vec![127, 0, 0, 1]).unwrap()),
            GeneralName::DnsName(der::asn1::Ia5String::new("a.example").unwrap()),
        ];
        assert!(sans_equal(&a, &b));
        assert!(!sans_equal(&a, &b[..1]));
        assert_eq!(san_text(&a[1]), "IP:127.0.0.1");
    }
}
