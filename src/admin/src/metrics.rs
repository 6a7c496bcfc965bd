//! `/metrics` of est-admin (Prometheus text, the `prometheus-client` crate): its own
//! counters (admin logins, admin actions), and the signer's counts fetched over the admin
//! socket at each scrape. Every label takes values from a bounded set.

use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use hsm_est_proto::Stats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// delete, revoke, allow.
    pub action: String,
    /// ok, or the signer's reason.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Default)]
pub struct Metrics {
    pub login_failures: Counter,
    pub logins: Counter,
    pub actions: Family<ActionLabels, Counter>,
}

impl Metrics {
    pub fn action(&self, action: &str, result: &str) {
        self.actions
            .get_or_create(&ActionLabels {
                action: action.into(),
                result: result.into(),
            })
            .inc();
    }

    /// The text of every metric: this process's, and the signer's from `stats` (`None`
    /// when the signer did not answer: `hsm_est_signer_up` is then 0).
    pub fn encode(&self, stats: Option<&Stats>) -> String {
        let mut registry = Registry::default();
        let admin = registry.sub_registry_with_prefix("hsm_est_admin");
        admin.register(
            "logins",
            "Successful admin logins (dashboard and API)",
            self.logins.clone(),
        );
        admin.register(
            "login_failures",
            "Admin logins refused for wrong credentials or tokens",
            self.login_failures.clone(),
        );
        admin.register(
            "actions",
            "Device actions taken by admins, by action and result",
            self.actions.clone(),
        );
        let signer = registry.sub_registry_with_prefix("hsm_est_signer");
        let up = Gauge::<i64, AtomicI64>::default();
        up.set(i64::from(stats.is_some()));
        signer.register("up", "1 when the signer answered this scrape", up);
        if let Some(s) = stats {
            let devices = Family::<StatusLabels, Gauge>::default();
            for (status, n) in &s.devices_by_status {
                devices
                    .get_or_create(&StatusLabels {
                        status: status.clone(),
                    })
                    .set(*n as i64);
            }
            signer.register("devices", "Devices in the ledger by status", devices);
            let gauge = |v: u64| {
                let g = Gauge::<i64, AtomicI64>::default();
                g.set(i64::try_from(v).unwrap_or(i64::MAX));
                g
            };
            let counter = |v: u64| {
                let c = Counter::<u64, AtomicU64>::default();
                c.inc_by(v);
                c
            };
            signer.register(
                "issued_last_24h",
                "Certificates issued in the last 24 hours",
                gauge(s.issued_last_24h),
            );
            signer.register(
                "certificates_expiring_30d",
                "Unrevoked certificates whose notAfter is within 30 days",
                gauge(s.expiring_within_30_days),
            );
            let refusals = Family::<ReasonLabels, Counter>::default();
            for (reason, n) in &s.refusals_by_reason {
                refusals
                    .get_or_create(&ReasonLabels {
                        reason: reason.clone(),
                    })
                    .inc_by(*n);
            }
            signer.register(
                "refusals",
                "Requests the signer refused since it started, by stable reason",
                refusals,
            );
            signer.register(
                "commits",
                "Durable group commits since the signer started",
                counter(s.commits),
            );
            signer.register(
                "committed_decisions",
                "Decisions those commits carried (their ratio is the mean batch size)",
                counter(s.decisions),
            );
            signer.register(
                "queue_depth",
                "Decisions waiting for the commit thread",
                gauge(s.queue_depth),
            );
            signer.register(
                "max_batch",
                "Largest group commit since the signer started, in decisions",
                gauge(s.max_batch),
            );
            signer.register(
                "token_signs",
                "Signatures made in the token (the CA key and the OCSP responder key)",
                counter(s.token_signs),
            );
            signer.register(
                "token_sign_microseconds",
                "Total time of those signatures (divide by token_signs for the mean)",
                counter(s.token_sign_micros),
            );
            signer.register(
                "ocsp_responses",
                "OCSP requests the signer answered",
                counter(s.ocsp_responses),
            );
            signer.register(
                "ocsp_cache_hits",
                "OCSP requests answered from the signer's cache",
                counter(s.ocsp_cache_hits),
            );
            signer.register(
                "ocsp_cached",
                "OCSP answers in the signer's cache",
                gauge(s.ocsp_cached),
            );
            signer.register(
                "ca_not_after_seconds",
                "The CA certificate's notAfter, seconds since the epoch",
                {
                    let g = Gauge::<i64, AtomicI64>::default();
                    g.set(s.ca_not_after);
                    g
                },
            );
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}
