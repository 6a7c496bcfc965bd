//! Device listings at scale: 100,000 devices pre-loaded through the ledger's own interface,
//! then listed through the real signer by key. The walk sees every device once, the last
//! page answers like the first, filters answer, and `estctl device list` streams them
//! all. Timings are printed for docs/PERFORMANCE.md, never asserted.

mod common;

use std::time::Instant;

use common::*;
use hsm_est_proto::{DeviceFilter, DeviceStatus, Request, Response};
use hsm_est_signer::ledger::{CertificateRecord, DeviceState, Ledger, LedgerWrite};

const DEVICES: u32 = 100_000;

fn preload(app: &Appliance) {
    let ledger = app.ledger();
    let head = ledger
        .audit_head()
        .unwrap()
        .expect("the signer started once");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for chunk in (0..DEVICES).collect::<Vec<_>>().chunks(20_000) {
        let writes: Vec<LedgerWrite> = chunk
            .iter()
            .map(|&i| {
                let cn = format!("ward-{}-pump-{i:06}", (b'a' + (i % 26) as u8) as char);
                let mut serial = vec![0x41];
                serial.extend_from_slice(&i.to_be_bytes());
                LedgerWrite::Issue {
                    certificate: Box::new(CertificateRecord {
                        serial,
                        subject: format!("CN={cn}"),
                        common_name: cn,
                        sans: vec![],
                        spki_sha256: vec![0; 32],
                        not_before: 0,
                        // A tenth expire within the week, the rest in a year.
                        not_after: now + if i % 10 == 0 { 3 } else { 365 } * 86_400,
                        profile: "iqe-pump".into(),
                        operation: "enroll".into(),
                        requester: "basic:preload".into(),
                        client_ip: "192.0.2.1".into(),
                        issued_at_ms: 0,
                        der: vec![0x30, 0x00],
                    }),
                    device_status: Some(if i % 100 == 0 {
                        DeviceState::Revoked
                    } else {
                        DeviceState::Enrolled
                    }),
                    supersedes: None,
                }
            })
            .collect();
        // The audit head stays where the signer left it: these rows bypass the audit log.
        ledger.apply(&writes, &head).unwrap();
    }
}

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
    preload(&app);
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
