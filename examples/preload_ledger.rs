//! Fills a stopped signer's ledger with enrolled devices, for the benchmark's
//! million-device case (docs/PERFORMANCE.md):
//!
//!   cargo run --release --example preload_ledger -- demo/ledger.sqlite 1000000
//!
//! The rows go through the ledger's own interface in batches of 20,000; they bypass the
//! audit log, so `estctl audit verify` reports them: use a benchmark ledger only.

#[path = "../tests/common/preload.rs"]
mod preload;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(path), Some(count)) = (args.get(1), args.get(2).and_then(|n| n.parse().ok())) else {
        eprintln!("usage: preload_ledger LEDGER.sqlite DEVICES");
        std::process::exit(2);
    };
    let ledger =
        hsm_est_signer::ledger::SqliteLedger::open(path.as_ref()).expect("open the ledger");
    let start = std::time::Instant::now();
    preload::preload_devices(&ledger, count);
    println!(
        "{count} devices written in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}
