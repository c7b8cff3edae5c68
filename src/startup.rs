//! `Application::build` wires the tiers, checks Redis is safe to trust,
//! migrates, spawns the long-lived tasks (all tracked), and binds the
//! listener (port 0 in tests). Tests and `main` share this one build path.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::auth::Authenticator;
use crate::config::Settings;
use crate::graphql::{build_schema, Api, ComputePool, QueryLimits};
use crate::http::{router, AppState};
use crate::live::Events;
use crate::metrics::Metrics;
use crate::rate::RateLimits;
use crate::store::{self, MessageStore, Persister};

/// How long shutdown waits, past the request deadline, for in-flight HTTP
/// requests.
const HTTP_DRAIN_GRACE: Duration = Duration::from_secs(2);
/// How long shutdown waits for tasks before giving up.
const DRAIN_DEADLINE: Duration = Duration::from_secs(15);

/// A built, not yet serving, instance.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    store: MessageStore,
    metrics: Metrics,
    settings: Settings,
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Application {
    /// Builds everything and spawns the background tasks.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let metrics = Metrics::new();
        let events = Events::default();
        let store = MessageStore::connect(&settings, &metrics, Arc::new(events.clone())).await?;

        let listener = TcpListener::bind(settings.listen_addr).await.context("binding the listen address")?;
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();

        let auth = Authenticator::from_settings(&settings.auth)?;
        if auth.is_open() {
            tracing::warn!(
                "AUTHENTICATION IS OFF (AUTH_MODE=none / --insecure-no-auth): every caller can read, write and \
                 watch every thread. For local use only."
            );
        }
        let rate = RateLimits::new(&settings.rate);
        let schema = build_schema(store.clone(), events.clone(), metrics.clone(), stop.clone(), rate, &settings.limits);
        let l = &settings.limits;
        let query_limits = QueryLimits::from(l);
        let pool = ComputePool::new(l.graphql_workers(), l.graphql_queue);
        let router = router(AppState {
            api: Api::new(schema, query_limits, pool),
            store: store.clone(),
            stop: stop.clone(),
            tracker: tracker.clone(),
            auth,
            ws_permits: Arc::new(Semaphore::new(l.max_ws_connections)),
            limits: Arc::new(l.clone()),
        });

        tracker.spawn(events.run(store.pubsub_source(), stop.clone()));
        tracker.spawn(store::queue_stats_loop(store.clone(), stop.clone()));
        let app = Self { listener, router, store, metrics, settings, stop, tracker };
        if app.settings.persist.persister_enabled {
            let persister = app.persister(app.consumer_name()?);
            app.tracker.spawn(persister.run(app.stop.clone()));
        }
        Ok(app)
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The storage facade (tests inspect through it).
    pub fn store(&self) -> &MessageStore {
        &self.store
    }

    /// This instance's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Cancelling this token shuts the instance down.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// A persister for this instance's tiers (tests drive it step by step).
    pub fn persister(&self, consumer: String) -> Persister {
        self.store.persister(self.settings.persist.clone(), consumer, self.metrics.clone())
    }

    fn consumer_name(&self) -> anyhow::Result<String> {
        if let Some(name) = &self.settings.persist.consumer_name {
            return Ok(name.clone());
        }
        // Stable across restarts on the same host and port, so a restarted
        // process picks up its own pending entries at once.
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "threadstore".into());
        Ok(format!("{}-{}", host.trim(), self.port()))
    }

    /// Serves until `shutdown` resolves or the stop token is cancelled, then
    /// drains (see [`crate::shutdown`]).
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let stop = self.stop.clone();
        tracing::info!(addr = %self.local_addr()?, "serving GraphQL on /graphql, GraphiQL on /");
        let signalled = stop.clone();
        // No Nagle: responses and subscription events are small writes that
        // must leave at once, not wait for the previous one's ACK.
        let listener = self.listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY");
            }
        });
        let draining = CancellationToken::new();
        let drain_started = draining.clone();
        let server = axum::serve(listener, self.router).with_graceful_shutdown(async move {
            tokio::select! {
                _ = shutdown => {},
                _ = signalled.cancelled() => {},
            }
            drain_started.cancel();
        });
        let mut served = tokio::spawn(async move { server.await });
        // In-flight requests finish within their deadline (408 after it);
        // past that and a grace, shutdown goes on without them.
        let http_drain = self.settings.limits.request_timeout() + HTTP_DRAIN_GRACE;
        let result = tokio::select! {
            r = &mut served => r,
            _ = async { draining.cancelled().await; tokio::time::sleep(http_drain).await } => {
                tracing::error!(after = ?http_drain, "in-flight HTTP requests did not finish; shutting down without waiting for them");
                served.abort();
                Ok(Ok(()))
            }
        };
        stop.cancel();
        self.tracker.close();
        if tokio::time::timeout(DRAIN_DEADLINE, self.tracker.wait()).await.is_err() {
            tracing::error!("background tasks did not stop within the deadline");
        }
        tracing::info!("stopped");
        result.context("server task")?.context("server")
    }
}
