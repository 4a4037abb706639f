//! The `weir` binary: the broker (`weir serve`) and the tools that talk to any
//! Kafka-compatible broker (`weir bench`, `topic`, `produce`, `consume`,
//! `cluster`, `group`, `txn`, `user`, `acl`), and `weir cert`, which makes
//! certificates for trying TLS.
//!
//! It only parses the command line, dispatches, and turns an error into its
//! message and exit code: the broker lives in weir-serve, the client
//! commands in weir-cli, `weir bench` in weir-bench. Without the `rdkafka`
//! feature, the commands that run on librdkafka (`produce`, `consume`,
//! `bench`) are absent.

use std::error::Error;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use weir_cli as cli;

/// Weir: a message queue that speaks the Apache Kafka protocol.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about, long_about = None, after_help = cli::EXIT_CODES_HELP)]
struct Cli {
    /// Bootstrap brokers, comma-separated host:port, for every command that
    /// talks to a broker (`weir serve` ignores it).
    #[arg(long, global = true, env = "WEIR_BROKERS", default_value = cli::BROKERS_DEFAULT,
          value_name = "HOST:PORT[,...]")]
    brokers: String,
    /// The broker's HTTP admin API, for `weir delayed` and the delayed
    /// records of `weir topic describe` (`weir serve --admin-listen`).
    /// [default: port 9644 on the host of the first of --brokers]
    #[arg(long, global = true, env = "WEIR_ADMIN_URL", value_name = "URL")]
    admin_url: Option<String>,
    /// A token of the broker's admin.auth.token.file, sent to the admin API
    /// as `Authorization: Bearer`. Prefer WEIR_ADMIN_TOKEN: a flag's value
    /// shows in the process list.
    #[arg(
        long,
        global = true,
        env = "WEIR_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    admin_token: Option<String>,
    /// For an https --admin-url: a PEM file of CA certificates to trust
    /// besides the system's (e.g. ca.crt of `weir cert dev`).
    #[arg(long, global = true, env = "WEIR_ADMIN_CA", value_name = "FILE")]
    admin_ca: Option<std::path::PathBuf>,
    /// For an https --admin-url whose broker asks for client certificates
    /// (admin.ssl.client.auth): the PEM client certificate, which may hold
    /// the key too (client.pem of `weir cert dev`).
    #[arg(long, global = true, env = "WEIR_ADMIN_CERT", value_name = "FILE")]
    admin_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --admin-cert, when that file does not hold it.
    #[arg(long, global = true, env = "WEIR_ADMIN_KEY", value_name = "FILE")]
    admin_key: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a broker.
    Serve(weir_serve::ServeArgs),
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
    /// List and describe transactions, and abort a hanging one.
    Txn(cli::txn::TxnArgs),
    /// List and cancel delayed records a broker holds back.
    Delayed(cli::delayed::DelayedArgs),
    /// Move dead letters back to a topic once their cause is fixed.
    #[cfg(feature = "rdkafka")]
    Dlq(cli::dlq::DlqArgs),
    /// Make certificates for trying TLS listeners locally.
    Cert(cli::cert::CertArgs),
    /// Create, delete and list SCRAM users.
    User(cli::user::UserArgs),
    /// Add, list and remove ACLs, with kafka-acls.sh's flags.
    Acl(cli::acl::AclArgs),
    /// Describe and alter client quotas, with rpk cluster quotas' flags.
    Quota(cli::quota::QuotaArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let brokers = cli.brokers.as_str();
    let admin = cli::admin_api::AdminTarget {
        url: cli::admin_api::admin_url(brokers, cli.admin_url.as_deref()),
        token: cli.admin_token,
        ca: cli.admin_ca,
        cert: cli.admin_cert,
        key: cli.admin_key,
    };
    let result = match cli.command {
        Command::Serve(args) => weir_serve::run(args).map_err(|err| {
            let code = if err.is_usage() {
                cli::EXIT_USAGE
            } else {
                cli::EXIT_FAILED
            };
            failed(&err, ExitCode::from(code))
        }),
        #[cfg(feature = "rdkafka")]
        Command::Bench(cmd) => weir_bench::run(cmd)
            .map_err(|err| failed(err.as_ref(), cli::exit_code_of_chain(err.as_ref()))),
        Command::Topic(args) => cli::topic::run(brokers, &admin, args).map_err(cli_failed),
        #[cfg(feature = "rdkafka")]
        Command::Produce(args) => cli::produce::run(brokers, args).map_err(cli_failed),
        #[cfg(feature = "rdkafka")]
        Command::Consume(args) => cli::consume::run(brokers, args).map_err(cli_failed),
        Command::Cluster(args) => cli::cluster::run(brokers, args).map_err(cli_failed),
        Command::Group(args) => cli::group::run(brokers, &admin, args).map_err(cli_failed),
        Command::Txn(args) => cli::txn::run(brokers, args).map_err(cli_failed),
        Command::Delayed(args) => cli::delayed::run(&admin, args).map_err(cli_failed),
        #[cfg(feature = "rdkafka")]
        Command::Dlq(args) => cli::dlq::run(brokers, args).map_err(cli_failed),
        Command::Cert(args) => cli::cert::run(args).map_err(cli_failed),
        Command::User(args) => cli::user::run(brokers, args).map_err(cli_failed),
        Command::Acl(args) => cli::acl::run(brokers, args).map_err(cli_failed),
        Command::Quota(args) => cli::quota::run(brokers, args).map_err(cli_failed),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

fn cli_failed(err: cli::CliError) -> ExitCode {
    failed(&err, cli::exit_code(&err))
}

/// Prints `error: ` and the error followed by each of its causes, separated
/// by `: `, on stderr, and gives back `code`.
fn failed(err: &(dyn Error + 'static), code: ExitCode) -> ExitCode {
    let mut message = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        cause = inner.source();
    }
    eprintln!("error: {message}");
    code
}
