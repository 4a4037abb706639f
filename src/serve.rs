//! `weir serve`: configuration (flags, environment, TOML file) and start-up.

/// Arguments of `weir serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {}

/// Run the broker until SIGINT or SIGTERM.
pub fn run(_args: ServeArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
