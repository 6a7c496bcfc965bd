//! The shipped unit files stay hardened: `systemd-analyze security --offline` must score the
//! signer at 0.5 or better (SAFE). The threshold is in tenths.

use std::path::Path;
use std::process::Command;

fn exposure(unit: &str, threshold_tenths: u32) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("systemd")
        .join(unit);
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(format!("--threshold={threshold_tenths}"))
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd) must be installed");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{unit} is less hardened than {threshold_tenths}/10:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Overall exposure level"), "{text}");
}

#[test]
fn signer_unit_is_safe() {
    exposure("est-signer.service", 5);
}
