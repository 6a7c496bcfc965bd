//! est-signer: holds the CA key in a PKCS#11 token and issues certificates by policy.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "est-signer",
    version,
    about = "hsm-est signer (no network; Unix socket only)"
)]
struct Args {
    /// Path of signer.yaml.
    #[arg(long)]
    config: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match hsm_est_signer::config::SignerConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("est-signer: {e}");
            return ExitCode::from(2);
        }
    };
    hsm_est_common::logging::init("est-signer", &config.log);
    match hsm_est_signer::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e {
                hsm_est_signer::StartError::TokenLost(_) => tracing::error!("{e}"),
                _ => tracing::error!("not starting: {e}"),
            }
            eprintln!("est-signer: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
