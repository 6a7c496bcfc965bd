//! `estctl bench token`: the raw signing rate of the configured token with the CA key,
//! through the same PKCS#11 path the signer uses (one session per thread, the digest made
//! here for ECDSA as SoftHSM needs), so that every other figure can be given as a ratio to
//! what the token can do on the same machine at the same time.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hsm_est_pki::cert::CaSigner;
use hsm_est_signer::config::SignerConfig;
use hsm_est_signer::token::{self, SessionSigner, Token};

use super::{outcome, Report};

#[derive(clap::Args)]
pub struct TokenArgs {
    /// signer.yaml: the token, its PIN file and the CA key's label.
    #[arg(long)]
    config: PathBuf,
    /// Sessions signing at once (one thread each); the signer uses token.sessions.
    #[arg(long)]
    sessions: Option<usize>,
    /// How long to sign.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    #[arg(long)]
    json: bool,
}

pub fn run(a: TokenArgs) -> Result<(), String> {
    let cfg = SignerConfig::load(&a.config)?;
    let sessions = a.sessions.unwrap_or(cfg.token.sessions).clamp(1, 64);
    let tok = Token::open(&cfg.token).map_err(|e| e.to_string())?;
    let pin = token::read_pin(&cfg.token.pin).map_err(|e| e.to_string())?;
    let first = tok.login(&pin, false).map_err(|e| e.to_string())?;
    drop(pin);
    let (private, public) = tok.find_key_pair(&first).map_err(|e| e.to_string())?;
    let spki = token::public_key_info(&first, public).map_err(|e| e.to_string())?;
    let algorithm = token::ca_signature_algorithm(&spki).map_err(|e| e.to_string())?;
    let mut all = vec![first];
    for _ in 1..sessions {
        all.push(tok.open_session(false).map_err(|e| e.to_string())?);
    }
    let duration = Duration::from_secs(a.seconds.clamp(1, 600));
    // A tbsCertificate-sized message.
    let message = vec![0x5a_u8; 400];
    let start = Instant::now();
    let reports: Vec<Report> = std::thread::scope(|s| {
        let handles: Vec<_> = all
            .into_iter()
            .map(|session| {
                let message = &message;
                s.spawn(move || {
                    let signer = SessionSigner {
                        session: &session,
                        key: private,
                        algorithm,
                    };
                    let mut r = Report::default();
                    while start.elapsed() < duration {
                        let t = Instant::now();
                        match signer.sign(message) {
                            Ok(_) => r.latencies_us.push(t.elapsed().as_micros() as u32),
                            Err(e) => r.fail(e),
                        }
                    }
                    r
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut report = Report {
        elapsed: start.elapsed(),
        ..Report::default()
    };
    for r in reports {
        report.merge(r);
    }
    let what = format!(
        "token {:?}: {} signatures with {} sessions",
        tok.key_label,
        algorithm.name(),
        sessions
    );
    report.print(
        &what,
        &[
            ("sessions", sessions.to_string()),
            ("algorithm", format!("{:?}", algorithm.name())),
        ],
        a.json,
    );
    outcome(&report)
}
