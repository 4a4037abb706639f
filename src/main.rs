//! The `weir` binary: the broker (`weir serve`) and the tools that talk to any
//! Kafka-compatible broker (`weir bench`, `topic`, `produce`, `consume`,
//! `cluster`, `group`).
//!
//! It parses the command line and dispatches: the broker's start-up lives
//! in `serve`, the client commands in weir-cli, `weir bench` in weir-bench.
//! Without the `rdkafka` feature, the commands that run on librdkafka
//! (`produce`, `consume`, `bench`) are absent.

mod serve;

use weir_cli as cli;

use clap::{Parser, Subcommand};

/// Weir: a message queue that speaks the Apache Kafka protocol.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about, long_about = None, after_help = cli::EXIT_CODES_HELP)]
struct Cli {
    /// Bootstrap brokers, comma-separated host:port, for every command that
    /// talks to a broker (`weir serve` ignores it).
    #[arg(long, global = true, env = "WEIR_BROKERS", default_value = cli::BROKERS_DEFAULT,
          value_name = "HOST:PORT[,...]")]
    brokers: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a broker.
    Serve(serve::ServeArgs),
    /// Measure a Kafka-compatible broker with librdkafka.
    #[cfg(feature = "rdkafka")]
    #[command(subcommand)]
    Bench(weir_bench::BenchCommand),
    /// Create, list, describe, alter and delete topics.
    Topic(cli::topic::TopicArgs),
    /// Send records, one per line of stdin or a file.
    #[cfg(feature = "rdkafka")]
    Produce(cli::produce::ProduceArgs),
    /// Print a topic's records as text or JSON.
    #[cfg(feature = "rdkafka")]
    Consume(cli::consume::ConsumeArgs),
    /// Show the state of the cluster.
    Cluster(cli::cluster::ClusterArgs),
    /// List, describe, reset the offsets of, and delete consumer groups.
    Group(cli::group::GroupArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        #[cfg(feature = "rdkafka")]
        Command::Bench(cmd) => weir_bench::run(cmd),
        Command::Topic(args) => cli::topic::run(&cli.brokers, args),
        #[cfg(feature = "rdkafka")]
        Command::Produce(args) => cli::produce::run(&cli.brokers, args),
        #[cfg(feature = "rdkafka")]
        Command::Consume(args) => cli::consume::run(&cli.brokers, args),
        Command::Cluster(args) => cli::cluster::run(&cli.brokers, args),
        Command::Group(args) => cli::group::run(&cli.brokers, args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            cli::exit_code(&err)
        }
    }
}
