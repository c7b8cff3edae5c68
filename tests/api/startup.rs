//! Start-up checks: a Redis that can lose acknowledged saves is refused
//! unless the risk is accepted explicitly; migrations run at start.

use threadstore::{
    config::{AuthMode, Settings},
    startup::Application,
};

use support::{PostgresServer, RedisServer};

fn settings(redis: &RedisServer) -> Settings {
    let mut s = Settings::from_env().expect("defaults");
    s.listen_addr = "127.0.0.1:0".parse().expect("addr");
    s.redis.redis_url = redis.url().into();
    s.database.database_url = PostgresServer::shared().create_database().into();
    s.persist.persister_enabled = false;
    s.auth.auth_mode = AuthMode::None;
    s
}

async fn build_error(s: Settings) -> Option<String> {
    Application::build(s).await.err().map(|e| format!("{e:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_redis_without_aof_unless_the_risk_is_accepted() {
    let redis = RedisServer::start_with(&["--appendonly", "no"]);
    let err = build_error(settings(&redis)).await.expect("must refuse to start");
    assert!(err.contains("appendonly"), "{err}");

    let mut accepted = settings(&redis);
    accepted.redis.allow_unsafe_redis = true;
    assert_eq!(build_error(accepted).await, None, "ALLOW_UNSAFE_REDIS accepts the risk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_an_evicting_redis() {
    let redis = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    let err = build_error(settings(&redis)).await.expect("must refuse to start");
    assert!(err.contains("allkeys-lru"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrates_at_start_and_serves_without_redis() {
    let mut redis = RedisServer::start();
    let s = settings(&redis);
    let db = s.database.database_url.expose().to_owned();
    redis.kill();
    // Redis down at start is not fatal: the service fails over.
    let app = Application::build(s).await.expect("starts without redis");
    assert!(app.port() > 0);
    let name = db.rsplit('/').next().expect("db name");
    let tables = PostgresServer::shared().psql(name, "SELECT count(*) FROM messages");
    assert_eq!(tables.trim(), "0", "migrations created the schema");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_mode_refuses_to_start_without_a_key() {
    let redis = RedisServer::start();
    let mut s = settings(&redis);
    s.auth.auth_mode = AuthMode::Jwt;
    let err = build_error(s.clone()).await.expect("no key: must refuse to start");
    assert!(err.contains("JWT_SECRET"), "{err}");
    s.auth.jwt_secret = Some("short".to_string().into());
    let err = build_error(s).await.expect("a short secret is refused");
    assert!(err.contains("32 bytes"), "{err}");
}
