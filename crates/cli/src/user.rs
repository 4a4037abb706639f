//! `weir user create|delete|list`: the SCRAM users a broker authenticates
//! (SASL/SCRAM, and SASL/PLAIN against the same credentials), through
//! Kafka's AlterUserScramCredentials and DescribeUserScramCredentials, as
//! `kafka-configs --entity-type users` and `rpk acl user` do.
//!
//! The password never leaves this process: it is salted and hashed here
//! (PBKDF2 with the mechanism's hash, a random 32-byte salt) and the broker
//! is sent the salted password, from which it keeps only StoredKey and
//! ServerKey.

use std::io::BufRead as _;

use clap::{Args, Subcommand};
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest,
};
use kafka_protocol::protocol::StrBytes;
use rand::RngCore as _;
use serde_json::json;
use weir_auth::{SCRAM_ITERATIONS_MAX, SCRAM_ITERATIONS_MIN, ScramMechanism};

use crate::{CliError, Result, print_json, print_out, usage};

/// Bytes of the random salt of a new credential (Kafka's own tools use 32).
const SALT_BYTES: usize = 32;
/// The longest password read from stdin.
const PASSWORD_BYTES_MAX: usize = 1024;
/// Kafka's error code for a user with no credential.
const RESOURCE_NOT_FOUND: i16 = 91;

/// `weir user`.
#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(subcommand)]
    command: UserCommand,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

/// `weir user` subcommands.
#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a SCRAM user, or set a new password for one.
    #[command(after_help = "\
Examples:
  weir user create alice --password 'correct horse'
  printf '%s\\n' \"$PASSWORD\" | weir user create alice --password-stdin --mechanism SCRAM-SHA-256
  weir user create svc-orders --password-stdin --iterations 8192 --json < secret.txt

The password is salted and hashed here; the broker is sent the salted
password and keeps only what SCRAM needs to check one (RFC 5802).")]
    Create(CreateArgs),
    /// Delete a user's SCRAM credentials.
    #[command(after_help = "\
Examples:
  weir user delete alice
  weir user delete alice --mechanism SCRAM-SHA-256")]
    Delete(DeleteArgs),
    /// List users and the SCRAM mechanisms each has.
    #[command(after_help = "\
Examples:
  weir user list
  weir user list alice bob --json")]
    List(ListArgs),
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// The user name.
    name: String,
    /// The password. It shows in the process list: prefer --password-stdin.
    #[arg(long, conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from the first line of stdin.
    #[arg(long)]
    password_stdin: bool,
    /// SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(long, default_value = "SCRAM-SHA-512", value_parser = parse_mechanism)]
    mechanism: ScramMechanism,
    /// PBKDF2 iterations (4096 to 16384, as Kafka takes them).
    #[arg(long, default_value_t = SCRAM_ITERATIONS_MIN)]
    iterations: u32,
}

#[derive(Debug, Args)]
struct DeleteArgs {
    /// The user name.
    name: String,
    /// Delete only this mechanism's credential. [default: every one the user has]
    #[arg(long, value_parser = parse_mechanism)]
    mechanism: Option<ScramMechanism>,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Only these users. [default: every user]
    names: Vec<String>,
}

fn parse_mechanism(text: &str) -> std::result::Result<ScramMechanism, String> {
    [ScramMechanism::Sha256, ScramMechanism::Sha512]
        .into_iter()
        .find(|m| m.name().eq_ignore_ascii_case(text.trim()))
        .ok_or_else(|| format!("{text:?} is not SCRAM-SHA-256 or SCRAM-SHA-512"))
}

/// Runs a `weir user` command against `brokers`.
pub fn run(brokers: &str, args: UserArgs) -> Result<()> {
    match args.command {
        UserCommand::Create(create) => {
            let password = password(&create)?;
            let mut client = super::connect(brokers)?;
            self::create(&mut client, &create, &password, args.json)
        }
        UserCommand::Delete(delete) => {
            let mut client = super::connect(brokers)?;
            self::delete(&mut client, &delete, args.json)
        }
        UserCommand::List(list) => {
            let mut client = super::connect(brokers)?;
            self::list(&mut client, &list.names, args.json)
        }
    }
}

fn password(args: &CreateArgs) -> Result<Vec<u8>> {
    let password = match (&args.password, args.password_stdin) {
        (Some(password), _) => password.clone().into_bytes(),
        (None, true) => {
            let mut line = String::new();
            let limit = u64::try_from(PASSWORD_BYTES_MAX).unwrap_or(u64::MAX);
            std::io::Read::take(std::io::stdin().lock(), limit)
                .read_line(&mut line)
                .map_err(|e| usage(format!("cannot read the password from stdin: {e}")))?;
            line.trim_end_matches(['\r', '\n']).as_bytes().to_vec()
        }
        (None, false) => {
            return Err(usage(
                "give the password with --password-stdin (or --password)",
            ));
        }
    };
    if password.is_empty() {
        return Err(usage("the password is empty"));
    }
    Ok(password)
}

fn create(
    client: &mut weir_client::Client,
    args: &CreateArgs,
    password: &[u8],
    json: bool,
) -> Result<()> {
    if !(SCRAM_ITERATIONS_MIN..=SCRAM_ITERATIONS_MAX).contains(&args.iterations) {
        return Err(usage(format!(
            "--iterations {} is outside {SCRAM_ITERATIONS_MIN}..={SCRAM_ITERATIONS_MAX}",
            args.iterations
        )));
    }
    let mut salt = vec![0u8; SALT_BYTES];
    rand::rng().fill_bytes(&mut salt);
    let salted = args
        .mechanism
        .salted_password(password, &salt, args.iterations);
    let request = AlterUserScramCredentialsRequest::default().with_upsertions(vec![
        ScramCredentialUpsertion::default()
            .with_name(StrBytes::from_string(args.name.clone()))
            .with_mechanism(args.mechanism.type_id())
            .with_iterations(i32::try_from(args.iterations).unwrap_or(i32::MAX))
            .with_salt(salt.into())
            .with_salted_password(salted.into()),
    ]);
    let response = client.send(&request, 0)?;
    for result in &response.results {
        weir_client::check_message(result.error_code, result.error_message.as_ref(), || {
            format!(
                "setting {}'s {} credential",
                args.name,
                args.mechanism.name()
            )
        })?;
    }
    if json {
        print_json(&json!({
            "user": args.name,
            "mechanism": args.mechanism.name(),
            "iterations": args.iterations,
        }))
    } else {
        print_out(&format!(
            "user {} has a {} credential ({} iterations)\n",
            args.name,
            args.mechanism.name(),
            args.iterations
        ))
        .map(|_| ())
    }
}

/// A user's credentials as `(mechanism type id, iterations)`, or the
/// broker's error code and message for the user.
type Described = std::result::Result<Vec<(i8, i32)>, (i16, String)>;

/// Each user's credentials (every user's when `users` is `None`).
fn described(
    client: &mut weir_client::Client,
    users: Option<&[String]>,
) -> Result<Vec<(String, Described)>> {
    let request = DescribeUserScramCredentialsRequest::default().with_users(users.map(|names| {
        names
            .iter()
            .map(|n| UserName::default().with_name(StrBytes::from_string(n.clone())))
            .collect()
    }));
    let response = client.send(&request, 0)?;
    weir_client::check_message(response.error_code, response.error_message.as_ref(), || {
        "describing SCRAM users".to_owned()
    })?;
    Ok(response
        .results
        .into_iter()
        .map(|r| {
            let user = r.user.to_string();
            if r.error_code != 0 {
                let message = r.error_message.map(|m| m.to_string()).unwrap_or_default();
                return (user, Err((r.error_code, message)));
            }
            let infos = r
                .credential_infos
                .iter()
                .map(|c| (c.mechanism, c.iterations))
                .collect();
            (user, Ok(infos))
        })
        .collect())
}

fn delete(client: &mut weir_client::Client, args: &DeleteArgs, json: bool) -> Result<()> {
    let mechanisms: Vec<ScramMechanism> = match args.mechanism {
        Some(mechanism) => vec![mechanism],
        None => {
            let found = described(client, Some(std::slice::from_ref(&args.name)))?;
            match found.into_iter().next() {
                Some((_, Ok(infos))) => infos
                    .iter()
                    .filter_map(|(id, _)| ScramMechanism::from_type_id(*id))
                    .collect(),
                Some((_, Err((code, _)))) if code == RESOURCE_NOT_FOUND => {
                    return Err(CliError::Failed(format!(
                        "user {} has no SCRAM credential",
                        args.name
                    )));
                }
                Some((_, Err((code, message)))) => {
                    return Err(CliError::Failed(format!(
                        "describing {}: error {code}: {message}",
                        args.name
                    )));
                }
                None => Vec::new(),
            }
        }
    };
    let request = AlterUserScramCredentialsRequest::default().with_deletions(
        mechanisms
            .iter()
            .map(|m| {
                ScramCredentialDeletion::default()
                    .with_name(StrBytes::from_string(args.name.clone()))
                    .with_mechanism(m.type_id())
            })
            .collect(),
    );
    let response = client.send(&request, 0)?;
    for result in &response.results {
        weir_client::check_message(result.error_code, result.error_message.as_ref(), || {
            format!("deleting {}'s credentials", args.name)
        })?;
    }
    let names: Vec<&str> = mechanisms.iter().map(|m| m.name()).collect();
    if json {
        print_json(&json!({ "user": args.name, "deleted": names }))
    } else {
        print_out(&format!(
            "deleted {}'s credentials: {}\n",
            args.name,
            names.join(", ")
        ))
        .map(|_| ())
    }
}

fn list(client: &mut weir_client::Client, names: &[String], json: bool) -> Result<()> {
    let users = described(client, (!names.is_empty()).then_some(names))?;
    let mechanism_name = |id: i8| {
        ScramMechanism::from_type_id(id).map_or_else(|| format!("type {id}"), |m| m.name().into())
    };
    if json {
        let rows: Vec<serde_json::Value> = users
            .iter()
            .map(|(user, found)| match found {
                Ok(infos) => json!({
                    "user": user,
                    "credentials": infos
                        .iter()
                        .map(|(id, iterations)| json!({
                            "mechanism": mechanism_name(*id),
                            "iterations": iterations,
                        }))
                        .collect::<Vec<_>>(),
                }),
                Err((code, message)) => json!({
                    "user": user,
                    "error_code": code,
                    "error": message,
                }),
            })
            .collect();
        return print_json(&json!({ "users": rows }));
    }
    let mut text = String::from("USER\tMECHANISMS\n");
    for (user, found) in &users {
        let cell = match found {
            Ok(infos) => infos
                .iter()
                .map(|(id, iterations)| format!("{} ({iterations})", mechanism_name(*id)))
                .collect::<Vec<_>>()
                .join(", "),
            Err((_, message)) => format!("({message})"),
        };
        text.push_str(&format!("{user}\t{cell}\n"));
    }
    print_out(&text).map(|_| ())
}
