//! The `Authorization: Basic` header parser: any bytes, no panic; a user name never holds
//! the separator.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((user, _password)) = hsm_est_frontend::auth::parse_basic(data) {
        assert!(!user.contains(':'));
    }
});
