//! EST request bodies (raw DER, base64 with any white space, PEM): whatever the frontend
//! accepts is strict DER that decodes as PKCS#10.
#![no_main]

use der::Decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(der) = hsm_est_frontend::est::decode_csr_body(data) {
        assert!(x509_cert::request::CertReq::from_der(&der).is_ok());
    }
});
