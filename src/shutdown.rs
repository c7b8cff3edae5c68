//! Shutdown in three parts: decide (a signal), tell (a `CancellationToken`
//! every long-lived task watches), wait (a `TaskTracker` holding them).
//!
//! Drain order: the HTTP server stops accepting and finishes in-flight
//! requests; then the token is cancelled, so subscriptions complete, the
//! pub/sub listener and the stats poller stop, and the persister finishes the
//! batch in flight (commit + ack, or leaves it pending for redelivery); then
//! the tracker is awaited, bounded by a deadline.

/// Resolves on SIGTERM or SIGINT.
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}
