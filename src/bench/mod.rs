//! `weir bench`: load generators that measure any Kafka-compatible broker
//! through librdkafka.

/// The bench modes.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Measure produce throughput and latency.
    Produce,
}

/// Run a benchmark.
pub fn run(_cmd: BenchCommand) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
