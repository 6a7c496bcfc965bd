//! Device listings at scale: 100,000 devices pre-loaded through the ledger's own interface,
//! then listed through the real signer by key. The walk sees every device once, the last
//! page answers like the first, filters answer, and `estctl device list` streams them
//! all. Timings are printed for docs/PERFORMANCE.md, never asserted.

mod common;

use std::time::Instant;

use common::*;
use hsm_est_proto::{DeviceFilter, DeviceStatus, Request, Response};

const DEVICES: u32 = 100_000;

fn page(app: &Appliance, after: &str, filter: DeviceFilter) -> (Vec<String>, bool, f64) {
    let start = Instant::now();
    let resp = app
        .admin_client()
        .call(&Request::DeviceList {
            after: after.into(),
            limit: 500,
            filter,
        })
        .unwrap();
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    match resp {
        Response::Devices { devices, more } => {
            (devices.into_iter().map(|d| d.cn).collect(), more, ms)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_hundred_thousand_devices_list_by_key() {
    let mut app = Appliance::create("scale", "ec-p256");
    app.start();
    app.stop();
    let load = Instant::now();
    preload_devices(&app.ledger(), DEVICES);
    eprintln!(
        "preloaded {DEVICES} devices in {:.1} s",
        load.elapsed().as_secs_f64()
    );
    app.start();

    // The whole walk, page by page by key: every device once, in order.
    let (mut after, mut seen, mut timings) = (String::new(), 0u32, Vec::new());
    let mut previous = String::new();
    loop {
        let (cns, more, ms) = page(&app, &after, DeviceFilter::default());
        timings.push(ms);
        assert!(cns.first().is_none_or(|c| *c > previous));
        seen += cns.len() as u32;
        if !more {
            break;
        }
        after = cns.last().unwrap().clone();
        previous = after.clone();
    }
    assert_eq!(seen, DEVICES);
    assert_eq!(timings.len(), (DEVICES / 500) as usize);
    let first = timings[0];
    let last = *timings.last().unwrap();
    let mut sorted = timings.clone();
    sorted.sort_by(f64::total_cmp);
    eprintln!(
        "device list, 500 per page over {DEVICES}: first page {first:.1} ms, last page \
         {last:.1} ms, median {:.1} ms, p99 {:.1} ms",
        sorted[sorted.len() / 2],
        sorted[sorted.len() * 99 / 100]
    );

    // Filters answer, by status index and by key range.
    let revoked = DeviceFilter {
        status: Some(DeviceStatus::Revoked),
        ..Default::default()
    };
    let (cns, more, ms) = page(&app, "", revoked);
    assert_eq!((cns.len(), more), (500, true));
    eprintln!("revoked filter, first page: {ms:.1} ms");
    let prefix = DeviceFilter {
        cn_prefix: "ward-q-pump-0999".into(),
        ..Default::default()
    };
    let (cns, _, ms) = page(&app, "", prefix);
    assert!(!cns.is_empty() && cns.iter().all(|c| c.starts_with("ward-q-pump-0999")));
    eprintln!("prefix search: {} device(s) in {ms:.1} ms", cns.len());

    // estctl streams the whole list.
    let cfg = app.config_arg().to_string();
    let start = Instant::now();
    let out = ok(&app.estctl_operator(&["device", "list", "--config", &cfg]));
    eprintln!(
        "estctl device list of {DEVICES}: {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert!(
        out.contains(&format!("{DEVICES} device(s)")),
        "{}",
        &out[out.len() - 200..]
    );
    let out = ok(&app.estctl_operator(&[
        "device", "list", "--config", &cfg, "--status", "revoked", "--prefix", "ward-a-",
    ]));
    // i % 100 == 0 and i % 26 == 0: multiples of 1300 below 100,000.
    assert!(out.contains("77 device(s)"), "{out}");
    let out = ok(&app.estctl_operator(&[
        "device",
        "list",
        "--config",
        &cfg,
        "--expiring-within-days",
        "7",
        "--prefix",
        "ward-a-",
    ]));
    // i % 10 == 0 and i % 26 == 0: multiples of 130 below 100,000.
    assert!(out.contains("770 device(s)"), "{}", &out[out.len() - 200..]);
}
