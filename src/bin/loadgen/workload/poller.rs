//! The `storageMetrics` poller run alongside save workloads: samples every
//! 250 ms and keeps the peak persistence queue depth and lag.

use std::time::Duration;

use tokio::sync::watch;

use crate::gql::Gql;

#[derive(Default)]
pub(super) struct MetricsPeak {
    samples: u64,
    failures: u64,
    depth: f64,
    lag_ms: Option<f64>,
    first_error: Option<String>,
}

impl MetricsPeak {
    pub(super) fn describe(&self) -> String {
        if self.samples == 0 {
            return format!(
                "peak persistence queue depth n/a ({})",
                self.first_error.as_deref().unwrap_or("no sample")
            );
        }
        let lag = self.lag_ms.map_or_else(|| "n/a".to_string(), |l| format!("{l:.1} ms"));
        format!(
            "peak persistence queue depth {}, peak persistence lag {lag} ({} samples every 250 ms, {} failed)",
            self.depth, self.samples, self.failures
        )
    }
}

/// Polls `storageMetrics` every 250 ms until told to stop; keeps the peaks.
pub(super) async fn poll_metrics(gql: Gql, mut stop: watch::Receiver<bool>) -> MetricsPeak {
    let mut peak = MetricsPeak::default();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => {}
        }
        match gql.storage_metrics().await {
            Ok((depth, lag)) => {
                peak.samples += 1;
                peak.depth = peak.depth.max(depth);
                if let Some(l) = lag {
                    peak.lag_ms = Some(peak.lag_ms.map_or(l, |p| p.max(l)));
                }
            }
            Err(e) => {
                peak.failures += 1;
                peak.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    peak
}
