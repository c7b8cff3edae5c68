//! One scenario's world: a real `redis-server`, a real PostgreSQL cluster,
//! optional fault proxies in front of them, and `threadstore serve` running
//! as separate OS processes, so a fault can be a real `kill -9`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context};

use crate::service::Service;
use support::{ChaosProxy, PostgresServer, RedisServer, RespValue};

/// How the services reach the servers.
#[derive(Default, Clone)]
pub struct Layout {
    /// Services talk to Redis through a [`ChaosProxy`].
    pub redis_proxy: bool,
    /// Services talk to PostgreSQL through a [`ChaosProxy`].
    pub pg_proxy: bool,
    /// Extra `redis-server` flags.
    pub redis_args: Vec<&'static str>,
}

/// The servers, the proxies and the service instances of one scenario.
pub struct Cluster {
    pub redis: RedisServer,
    pub pg: PostgresServer,
    pub db: String,
    pub redis_proxy: Option<ChaosProxy>,
    pub pg_proxy: Option<ChaosProxy>,
    pub services: Vec<Service>,
    pub dir: PathBuf,
}

impl Cluster {
    /// Starts Redis, PostgreSQL and the proxies (services are added with
    /// [`Cluster::add_service`]). `dir` receives the logs and the history.
    pub async fn start(layout: Layout, dir: &Path) -> anyhow::Result<Cluster> {
        let redis_args = layout.redis_args.clone();
        let (redis, pg) =
            tokio::task::spawn_blocking(move || (RedisServer::start_with(&redis_args), PostgresServer::start()))
                .await
                .context("starting redis and postgres")?;
        let db_url = {
            let pg = &pg;
            tokio::task::block_in_place(|| pg.create_database())
        };
        let db = db_url.rsplit('/').next().unwrap_or_default().to_owned();
        let redis_proxy = layout.redis_proxy.then(|| ChaosProxy::to_port(redis.port()));
        let pg_proxy = layout.pg_proxy.then(|| ChaosProxy::to_port(pg.port()));
        Ok(Cluster { redis, pg, db, redis_proxy, pg_proxy, services: Vec::new(), dir: dir.to_owned() })
    }

    /// The Redis URL services use (through the proxy if there is one).
    pub fn redis_url(&self) -> String {
        match &self.redis_proxy {
            Some(p) => format!("redis://{}", p.addr()),
            None => self.redis.url(),
        }
    }

    /// The PostgreSQL URL services use (through the proxy if there is one).
    pub fn database_url(&self) -> String {
        let port = self.pg_proxy.as_ref().map_or(self.pg.port(), |p| p.port());
        format!("postgres://postgres@127.0.0.1:{port}/{}", self.db)
    }

    /// Starts one more `threadstore serve` (consumer `name`) with the
    /// suite's settings plus `extra` environment, and waits until it is ready.
    pub async fn add_service(&mut self, name: &str, extra: &[(&str, String)]) -> anyhow::Result<usize> {
        let mut env = vec![
            ("REDIS_URL".to_owned(), self.redis_url()),
            ("DATABASE_URL".to_owned(), self.database_url()),
            ("CONSUMER_NAME".to_owned(), name.to_owned()),
            // The suite tests storage; authentication has its own tests.
            ("AUTH_MODE".to_owned(), "none".to_owned()),
            // Short enough that claims and breaker cycles fit in a scenario.
            ("PERSIST_CLAIM_IDLE_MS".to_owned(), "3000".to_owned()),
            ("BREAKER_COOLDOWN_MS".to_owned(), "1000".to_owned()),
            ("PG_TIMEOUT_MS".to_owned(), "2000".to_owned()),
            // One line per request would bury the events that matter.
            ("RUST_LOG".to_owned(), "info,tower_http=warn".to_owned()),
        ];
        for (k, v) in extra {
            env.retain(|(key, _)| key != k);
            env.push(((*k).to_owned(), v.clone()));
        }
        let mut service = Service::new(name, env, &self.dir.join(format!("service-{name}.log")));
        service.start().await?;
        self.services.push(service);
        Ok(self.services.len() - 1)
    }

    /// The HTTP addresses of all services (dead ones included: clients
    /// move on when one does not answer).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.services.iter().map(|s| s.addr).collect()
    }

    /// One Redis command (blocking, on a fresh connection, straight to the server).
    pub fn redis_cmd(&self, args: &[&str]) -> anyhow::Result<RespValue> {
        let reply = tokio::task::block_in_place(|| self.redis.try_cmd(args, Duration::from_secs(5)))?;
        if reply.is_error() {
            bail!("redis {args:?}: {reply}");
        }
        Ok(reply)
    }

    /// An integer-valued Redis command.
    pub fn redis_int(&self, args: &[&str]) -> anyhow::Result<i64> {
        self.redis_cmd(args)?.as_int().with_context(|| format!("{args:?} is not an integer"))
    }

    /// A numeric field of `INFO`.
    pub fn redis_info(&self, field: &str) -> anyhow::Result<i64> {
        let info = self.redis_cmd(&["INFO", "all"])?.to_string();
        let prefix = format!("{field}:");
        let line = info.lines().find_map(|l| l.trim().strip_prefix(prefix.as_str()));
        line.and_then(|v| v.trim().parse().ok()).with_context(|| format!("INFO has no {field}"))
    }

    /// The Redis proxy (the layout must have one).
    pub fn redis_proxy(&self) -> anyhow::Result<&ChaosProxy> {
        self.redis_proxy.as_ref().context("no redis proxy in this layout")
    }

    /// The PostgreSQL proxy (the layout must have one).
    pub fn pg_proxy(&self) -> anyhow::Result<&ChaosProxy> {
        self.pg_proxy.as_ref().context("no postgres proxy in this layout")
    }

    /// Entries delivered to `consumer` and not acknowledged.
    pub fn pending_of(&self, consumer: &str) -> anyhow::Result<i64> {
        let reply = self.redis_cmd(&["XPENDING", "ts:persist", "persisters", "-", "+", "100000", consumer])?;
        Ok(reply.as_array().map_or(0, |a| a.len() as i64))
    }

    /// Rows of `sql` on the scenario's database (psql, blocking).
    pub fn sql(&self, sql: &str) -> anyhow::Result<Vec<Vec<String>>> {
        let out = tokio::task::block_in_place(|| self.pg.try_psql(&self.db, sql)).map_err(anyhow::Error::msg)?;
        Ok(out.lines().filter(|l| !l.is_empty()).map(|l| l.split('|').map(str::to_owned).collect()).collect())
    }

    /// Entries the persistence stream holds (acknowledged ones are deleted)
    /// and entries delivered but not acknowledged.
    pub fn backlog(&self) -> anyhow::Result<(i64, i64)> {
        let len = self.redis_int(&["XLEN", "ts:persist"])?;
        let pending = match self.redis_cmd(&["XPENDING", "ts:persist", "persisters"]) {
            Ok(r) => r.as_array().and_then(|a| a.first()).and_then(RespValue::as_int).unwrap_or(0),
            Err(_) => 0, // no group yet
        };
        Ok((len, pending))
    }

    /// Waits until the persistence group is drained: nothing pending, nothing
    /// queued (so PostgreSQL holds everything Redis acknowledged).
    pub async fn drain(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match self.backlog() {
                Ok((0, 0)) => return Ok(()),
                Ok((len, pending)) if tokio::time::Instant::now() >= deadline => {
                    bail!("not drained after {within:?}: {len} queued, {pending} pending")
                }
                Err(e) if tokio::time::Instant::now() >= deadline => bail!("not drained after {within:?}: {e}"),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}
