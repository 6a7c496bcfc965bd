//! OCSP requests as the publication listener parses them: whatever parses stays within
//! the protocol's bounds, and builds back into a request that parses to the same thing.
#![no_main]

use hsm_est_pki::ocsp::{build_request, parse_request, MAX_OCSP_CERTS, MAX_OCSP_NONCE_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = parse_request(data) else {
        return;
    };
    assert!(!parsed.certs.is_empty() && parsed.certs.len() <= MAX_OCSP_CERTS);
    assert!(parsed
        .nonce
        .as_ref()
        .is_none_or(|n| n.len() <= MAX_OCSP_NONCE_LEN));
    let again = build_request(&parsed.certs, parsed.nonce.as_deref()).expect("builds");
    assert_eq!(parse_request(&again).expect("parses"), parsed);
});
