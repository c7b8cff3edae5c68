//! `threadstore serve | migrate | schema`.

use clap::Parser;
use threadstore::{
    config::{Cli, Command, LogFormat},
    graphql, shutdown,
    startup::Application,
    store::postgres::PgTier,
    telemetry,
};

/// mimalloc: the request path allocates many small short-lived objects,
/// where it is markedly faster than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Test builds only: crash points from the FAILPOINTS variable.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    match Cli::parse().command {
        Command::Serve(settings) => {
            telemetry::init(settings.log_format);
            let app = Application::build(*settings).await?;
            app.run_until_stopped(shutdown::signal()).await
        }
        Command::Migrate(db) => {
            telemetry::init(LogFormat::Text);
            PgTier::migrate(db.database_url.expose()).await
        }
        Command::Schema => {
            print!("{}", graphql::sdl());
            Ok(())
        }
    }
}
