//! est-admin: the dashboard and the admin API. Reaches the CA only through the signer's
//! admin socket.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(name = "est-admin", version, about = "hsm-est dashboard and admin API")]
struct Args {
    /// Path of admin.yaml.
    #[arg(long)]
    config: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match hsm_est_admin::config::AdminConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("est-admin: {e}");
            return ExitCode::from(2);
        }
    };
    hsm_est_common::logging::init("est-admin", &config.log);
    match hsm_est_admin::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("not starting: {e}");
            eprintln!("est-admin: {e}");
            ExitCode::from(1)
        }
    }
}
