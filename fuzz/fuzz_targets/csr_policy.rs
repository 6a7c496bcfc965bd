//! CSR parsing and policy evaluation, the signer's whole judgement of a request: any
//! bytes are parsed strictly and, when they parse, evaluated under every shipped profile.
#![no_main]

use std::sync::OnceLock;

use hsm_est_policy::Profile;
use libfuzzer_sys::fuzz_target;

fn profiles() -> &'static [Profile] {
    static P: OnceLock<Vec<Profile>> = OnceLock::new();
    P.get_or_init(|| {
        [
            include_str!("../../policy/iqe-bootstrap.yaml"),
            include_str!("../../policy/iqe-pump.yaml"),
            include_str!("../../policy/tls-server.yaml"),
        ]
        .iter()
        .map(|text| Profile::from_yaml("shipped", text).expect("shipped profiles parse"))
        .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(csr) = hsm_est_pki::csr::parse_csr(data) else {
        return;
    };
    for profile in profiles() {
        let _ = profile.evaluate(&csr);
    }
});
