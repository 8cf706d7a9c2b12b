//! An `alert` stage between a memory source and sinks: its tokens, its dead letters,
//! and its durable tracks across a restart on the same data directory.

use std::path::Path;
use std::sync::atomic::Ordering;

use super::*;
use crate::transforms::TransformConfig;
use crate::transforms::alert::AlertTransformConfig;

/// Readings → `hot` (an alert stage) → sink `alerts`, its dead letters → `rejects`.
struct Alerting {
    topology: Topology,
    source: Arc<components::SourceCounters>,
    feed: mpsc::UnboundedSender<Vec<Event>>,
    alerts: Arc<components::SinkRecord>,
    rejects: Arc<components::SinkRecord>,
}

impl Alerting {
    /// The pipeline, in a new data directory or in `data_dir`.
    fn new(data_dir: Option<&Path>) -> Alerting {
        let mut topology = Topology::new();
        if let Some(data_dir) = data_dir {
            topology.config.data_dir = data_dir.to_owned();
        }
        let (source, feed) = topology.source("readings");
        let config: AlertTransformConfig = toml::from_str(
            r#"
            when = { field = "temperature", gt = 80 }
            key = "device_id"
            value = "temperature"
            resolve_after_secs = 1.0
            check_interval_ms = 20
            "#,
        )
        .unwrap();
        topology.config.transforms.insert(
            "hot".into(),
            stage::<dyn TransformConfig>("hot", "alert", &["readings"], Box::new(config)),
        );
        let alerts = topology.sink("alerts", &["hot"]);
        let rejects = topology.sink("rejects", &["hot.dead_letter"]);
        Alerting {
            topology,
            source,
            feed,
            alerts,
            rejects,
        }
    }

    fn send(&self, payloads: &[&str]) {
        let events = payloads
            .iter()
            .map(|p| Event::new(p.as_bytes().to_vec(), "test"))
            .collect();
        self.feed.send(events).unwrap();
    }

    fn alerts(&self) -> Vec<serde_json::Value> {
        let payloads = self.alerts.payloads();
        payloads
            .iter()
            .map(|payload| serde_json::from_str(payload).unwrap())
            .collect()
    }
}

#[tokio::test]
async fn a_restart_between_firing_and_resolved_neither_fires_again_nor_loses_the_resolve() {
    let first = Alerting::new(None);
    let pipeline = Pipeline::start(&first.topology.config).unwrap();
    first.send(&[
        r#"{"device_id": "gw1", "temperature": 90}"#,
        r#"{"temperature": 99}"#,
        r#"{"device_id": "gw1", "temperature": 20}"#,
    ]);
    until("every reading is settled", || {
        first.source.acked.load(Ordering::SeqCst) == 3
    })
    .await;
    let fired = first.alerts();
    assert_eq!(fired.len(), 1);
    assert_eq!(
        (&fired[0]["status"], &fired[0]["key"]),
        (&"firing".into(), &"gw1".into())
    );
    let rejected: serde_json::Value = serde_json::from_str(&first.rejects.payloads()[0]).unwrap();
    assert_eq!(
        rejected["reason"],
        "the payload has no `device_id` to key the alert by"
    );
    stop(pipeline).await;

    // The same stage again, as after a restart: a hot reading while it fires is no news.
    let second = Alerting::new(Some(&first.topology.config.data_dir));
    let pipeline = Pipeline::start(&second.topology.config).unwrap();
    second.send(&[r#"{"device_id": "gw1", "temperature": 91}"#]);
    until("the alert resolves", || second.alerts.count() == 1).await;
    let resolved = &second.alerts()[0];
    assert_eq!(
        resolved["status"], "resolved",
        "no second firing: {resolved}"
    );
    assert_eq!(
        (
            resolved["first_value"].as_f64(),
            resolved["last_value"].as_f64()
        ),
        (Some(90.0), Some(91.0))
    );
    assert_eq!(resolved["count"], 2);
    assert_eq!(second.source.acked.load(Ordering::SeqCst), 1);
    stop(pipeline).await;
}
