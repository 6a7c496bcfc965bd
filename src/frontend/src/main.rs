//! est-frontend: the network-facing EST server. Reaches the CA only through est-signer.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "est-frontend",
    version,
    about = "hsm-est EST frontend (RFC 7030, IQE gateway)"
)]
struct Args {
    /// Path of frontend.yaml.
    #[arg(long)]
    config: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match hsm_est_frontend::config::FrontendConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("est-frontend: {e}");
            return ExitCode::from(2);
        }
    };
    hsm_est_common::logging::init("est-frontend", &config.log);
    match hsm_est_frontend::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("not starting: {e}");
            eprintln!("est-frontend: {e}");
            ExitCode::from(1)
        }
    }
}
