//! Every YAML the appliance reads: the signer's, the frontend's and est-admin's
//! configurations, a policy profile, and an accounts file. Bad text is an error, never a
//! panic. (Paths in them are resolved, not opened.)
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let at = Path::new("/nonexistent/hsm-est-fuzz/config.yaml");
    let _ = hsm_est_signer::config::SignerConfig::parse(at, text);
    let _ = hsm_est_frontend::config::FrontendConfig::parse(at, text);
    let _ = hsm_est_admin::config::AdminConfig::parse(at, text);
    let _ = hsm_est_policy::Profile::from_yaml("fuzz", text);
    let _ = hsm_est_web::users::parse(text);
});
