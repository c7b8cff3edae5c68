//! `threadstore serve | migrate | schema`.

use std::time::Duration;

use clap::Parser;
use threadstore::{
    config::{Cli, Command, LogFormat},
    graphql, shutdown,
    startup::Application,
    store, telemetry,
};

/// mimalloc: the request path allocates many small short-lived objects,
/// where it is markedly faster than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long the exit waits for blocking threads still busy with a request
/// phase (a heavy validation) after shutdown; they hold no state to drain.
const BLOCKING_EXIT_GRACE: Duration = Duration::from_secs(1);

fn main() -> anyhow::Result<()> {
    // Test builds only: crash points from the FAILPOINTS variable.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(run(Cli::parse().command));
    // Dropping a runtime waits for every blocking thread without a bound;
    // a request phase still computing there must not hold the exit.
    runtime.shutdown_timeout(BLOCKING_EXIT_GRACE);
    result
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(settings) => {
            telemetry::init(settings.log_format);
            let app = Application::build(*settings).await?;
            app.run_until_stopped(shutdown::signal()).await
        }
        Command::Migrate(db) => {
            telemetry::init(LogFormat::Text);
            store::migrate(db.database_url.expose()).await
        }
        Command::Schema => {
            print!("{}", graphql::sdl());
            Ok(())
        }
    }
}
