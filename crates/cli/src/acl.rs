//! `weir acl add|list|remove`: the ACL bindings a broker authorizes with,
//! through Kafka's CreateAcls, DescribeAcls and DeleteAcls, with the flags
//! of Kafka's `kafka-acls.sh` (`--topic`, `--allow-principal`,
//! `--operation`, `--producer`, `--consumer`, `--resource-pattern-type`, ...).
//!
//! This module owns turning those flags into bindings and filters as
//! `kafka-acls.sh` does: the resources given, each with every entry (each
//! principal from each of its hosts, for each operation), and the
//! `--producer` / `--consumer` shorthands expanded to the operations those
//! roles need. It checks what it can before anything is sent (a principal
//! that is not `Type:name`, an operation a resource type does not have,
//! flags that do not go together: exit code 2), and shows the broker's
//! answer, which decides, with the error's Kafka name (`SECURITY_DISABLED`,
//! `CLUSTER_AUTHORIZATION_FAILED`, `INVALID_REQUEST`) and message.
//!
//! Two defaults differ from `kafka-acls.sh`, which reads every omitted
//! `--resource-pattern-type` as LITERAL and every omitted `--operation` as
//! ALL: `list` defaults to the ANY pattern type (the name compared
//! exactly, literal or prefixed), so a listing shows both; and `remove`
//! without `--operation` removes the principals' bindings for every
//! operation. `remove` reads an omitted pattern type as LITERAL, as Kafka
//! does, so it never removes a prefixed binding unless asked to.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, IsTerminal as _, Write as _};

use clap::{Args, Subcommand};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;
use weir_auth::{
    AclBinding, AclBindingFilter, AclOperation, AclPermissionType, CLUSTER_RESOURCE_NAME,
    PatternType, ResourceType, WILDCARD_HOST,
};
use weir_client::Client;

use crate::{CliError, Result, print_json, print_out, usage};

/// The newest version of CreateAcls, DescribeAcls and DeleteAcls whose
/// fields this module sets (v1 added pattern types; v2 and v3 change only
/// the encoding).
const ACL_API_VERSION_MAX: i16 = 3;

/// Most bindings (or filters) sent in one CreateAcls (or DeleteAcls): the
/// most a Weir broker takes in one request. More go in several requests.
const ITEMS_PER_REQUEST_MAX: usize = 1_000;

/// Most bindings one `add` may make, and filters one `list` or `remove`
/// may send: the flags multiply (resources × principals × hosts ×
/// operations), and a typo in a script should not make a million.
const BINDINGS_PER_COMMAND_MAX: usize = 10_000;

/// The longest answer read at the `remove` confirmation prompt.
const CONFIRMATION_BYTES_MAX: u64 = 64;

/// What a broker that answers SECURITY_DISABLED needs, told with the error.
pub const SECURITY_DISABLED_HINT: &str = "the broker does not enforce ACLs: set \
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer";

/// The operations `--operation` takes, for its help and errors.
const OPERATION_NAMES: &str = "Read, Write, Create, Delete, Alter, Describe, ClusterAction, \
DescribeConfigs, AlterConfigs, IdempotentWrite, CreateTokens, DescribeTokens, TwoPhaseCommit, All";

const ACL_EXAMPLES: &str = "\
Examples:
  weir acl add --allow-principal User:alice --operation Read --operation Describe --topic orders
  weir acl add --allow-principal User:svc --producer --topic orders --transactional-id orders-tx
  weir acl add --allow-principal User:bob --consumer --topic orders --group billing
  weir acl add --allow-principal User:etl --topic etl- --resource-pattern-type prefixed
  weir acl list --topic orders --resource-pattern-type match
  weir acl list --principal User:alice --json
  weir acl remove --allow-principal User:alice --topic orders --force

The flags are kafka-acls.sh's. A broker enforces ACLs when it runs with
--set authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer;
otherwise it refuses ACL requests with SECURITY_DISABLED (exit code 1).";

/// `weir acl`.
#[derive(Debug, Args)]
#[command(after_help = ACL_EXAMPLES)]
pub struct AclArgs {
    #[command(subcommand)]
    command: AclCommand,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

/// `weir acl` subcommands.
#[derive(Debug, Subcommand)]
enum AclCommand {
    /// Create ACL bindings: each resource given, for each principal, from
    /// each of its hosts, for each operation.
    #[command(after_help = "\
Examples:
  weir acl add --allow-principal User:alice --operation Read --topic orders
  weir acl add --allow-principal User:alice --allow-principal User:bob --allow-host 10.0.0.7 \\
      --operation Write --operation Describe --topic orders --topic refunds
  weir acl add --allow-principal 'User:*' --deny-principal User:mallory --operation Read --topic '*'
  weir acl add --allow-principal User:svc --producer --topic orders
  weir acl add --allow-principal User:svc --producer --idempotent --topic orders
  weir acl add --allow-principal User:svc --producer --topic orders --transactional-id orders-tx
  weir acl add --allow-principal User:bob --consumer --topic orders --group billing
  weir acl add --allow-principal User:etl --topic etl- --group etl- --resource-pattern-type prefixed
  weir acl add --allow-principal User:ops --operation Alter --operation Describe --cluster

--producer allows WRITE, DESCRIBE and CREATE on the topics, WRITE and
DESCRIBE on the transactional ids, and with --idempotent IDEMPOTENT_WRITE
on the cluster. --consumer allows READ and DESCRIBE on the topics and READ
on the groups. Without them, --operation (default All) applies to every
resource given. Hosts are IP addresses or * (the default).")]
    Add(AddArgs),
    /// List ACL bindings, grouped by resource, as kafka-acls.sh --list does.
    #[command(after_help = "\
Examples:
  weir acl list
  weir acl list --topic orders
  weir acl list --topic orders.eu --resource-pattern-type match
  weir acl list --principal User:alice --principal User:bob
  weir acl list --group billing --json

--resource-pattern-type (default any) selects: any, the bindings on exactly
the names given, literal or prefixed; match, every binding that applies to
the names (their literal, the literal *, and every prefix of them);
literal or prefixed, only bindings of that pattern type. With no resource
every binding is listed.")]
    List(ListArgs),
    /// Remove the ACL bindings matching the flags.
    #[command(after_help = "\
Examples:
  weir acl remove --allow-principal User:alice --topic orders --force
  weir acl remove --allow-principal User:alice --operation Read --topic orders --force
  weir acl remove --allow-principal User:svc --producer --topic orders --force
  weir acl remove --topic orders --force          # every binding on topic orders
  weir acl remove --topic etl- --resource-pattern-type prefixed

On a terminal, the bindings that match are shown and removed only when
confirmed; without a terminal --force is required. With no principal,
every binding on the resources is removed. --resource-pattern-type
(default literal, as kafka-acls.sh) selects as for `weir acl list`: any
removes literal and prefixed bindings of the names, and match every
binding that applies to them, so use those with care.")]
    Remove(RemoveArgs),
}

/// The resources a command is about, as kafka-acls.sh names them.
#[derive(Debug, Args, Default)]
struct ResourceArgs {
    /// A topic (repeatable); `*` is every topic.
    #[arg(long, value_name = "NAME", value_parser = parse_name)]
    topic: Vec<String>,
    /// A consumer group (repeatable); `*` is every group.
    #[arg(long, value_name = "NAME", value_parser = parse_name)]
    group: Vec<String>,
    /// The cluster (Kafka's one cluster resource, kafka-cluster).
    #[arg(long)]
    cluster: bool,
    /// A producer's transactional id (repeatable); `*` is every id.
    #[arg(long, value_name = "ID", value_parser = parse_name)]
    transactional_id: Vec<String>,
    /// A delegation token id (repeatable); `*` is every token.
    #[arg(long, value_name = "ID", value_parser = parse_name)]
    delegation_token: Vec<String>,
    /// A user principal as a resource, for CreateTokens and
    /// DescribeTokens (repeatable), e.g. User:alice.
    #[arg(long, value_name = "PRINCIPAL", value_parser = parse_name)]
    user_principal: Vec<String>,
}

/// Who, from where and what: the entries of `add` and `remove`.
#[derive(Debug, Args, Default)]
struct EntryArgs {
    /// A principal to allow, Type:name (repeatable); User:* is everyone.
    #[arg(long, value_name = "TYPE:NAME", value_parser = parse_principal)]
    allow_principal: Vec<String>,
    /// A principal to deny, Type:name (repeatable). A DENY wins over every
    /// ALLOW.
    #[arg(long, value_name = "TYPE:NAME", value_parser = parse_principal)]
    deny_principal: Vec<String>,
    /// A host the allowed principals connect from: an IP address or *
    /// (repeatable). [default: *]
    #[arg(long, value_name = "HOST", requires = "allow_principal", value_parser = parse_name)]
    allow_host: Vec<String>,
    /// A host the denied principals are denied from: an IP address or *
    /// (repeatable). [default: *]
    #[arg(long, value_name = "HOST", requires = "deny_principal", value_parser = parse_name)]
    deny_host: Vec<String>,
    /// An operation (repeatable), in any case: Read, Write, Create, Delete,
    /// Alter, Describe, ClusterAction, DescribeConfigs, AlterConfigs,
    /// IdempotentWrite, CreateTokens, DescribeTokens, TwoPhaseCommit, All.
    /// [default: All for add; for remove, every operation]
    #[arg(long, value_name = "OPERATION", value_parser = parse_operation)]
    operation: Vec<AclOperation>,
    /// The producer role: WRITE, DESCRIBE and CREATE on the topics; WRITE
    /// and DESCRIBE on the transactional ids.
    #[arg(long, conflicts_with_all = ["operation", "deny_principal", "deny_host"])]
    producer: bool,
    /// With --producer: IDEMPOTENT_WRITE on the cluster too.
    #[arg(long, requires = "producer")]
    idempotent: bool,
    /// The consumer role: READ and DESCRIBE on the topics, READ on the
    /// groups (needs --topic and --group).
    #[arg(long, conflicts_with_all = ["operation", "deny_principal", "deny_host"])]
    consumer: bool,
}

#[derive(Debug, Args)]
struct AddArgs {
    #[command(flatten)]
    resources: ResourceArgs,
    #[command(flatten)]
    entries: EntryArgs,
    /// How the resource names are read: literal (the name, or * for every
    /// name) or prefixed (every name starting with it).
    #[arg(long, value_name = "TYPE", default_value = "literal", value_parser = parse_pattern_type)]
    resource_pattern_type: PatternType,
}

#[derive(Debug, Args)]
struct ListArgs {
    #[command(flatten)]
    resources: ResourceArgs,
    /// Only bindings of this principal, Type:name (repeatable).
    #[arg(long, value_name = "TYPE:NAME", value_parser = parse_principal)]
    principal: Vec<String>,
    /// any, match, literal or prefixed (see below).
    #[arg(long, value_name = "TYPE", default_value = "any", value_parser = parse_pattern_type)]
    resource_pattern_type: PatternType,
}

#[derive(Debug, Args)]
struct RemoveArgs {
    #[command(flatten)]
    resources: ResourceArgs,
    #[command(flatten)]
    entries: EntryArgs,
    /// any, match, literal or prefixed (see below).
    #[arg(long, value_name = "TYPE", default_value = "literal", value_parser = parse_pattern_type)]
    resource_pattern_type: PatternType,
    /// Remove without asking.
    #[arg(long)]
    force: bool,
}

/// Parses a resource name or host, trimmed as kafka-acls.sh trims them.
fn parse_name(text: &str) -> std::result::Result<String, String> {
    crate::parse_non_empty(text.trim())
}

/// Parses a principal, which must be `Type:name` (as Kafka's
/// `SecurityUtils.parseKafkaPrincipal` requires).
fn parse_principal(text: &str) -> std::result::Result<String, String> {
    let text = text.trim();
    weir_auth::parse_principal(text)
        .map(|_| text.to_owned())
        .map_err(|e| e.to_string())
}

fn parse_operation(text: &str) -> std::result::Result<AclOperation, String> {
    AclOperation::parse(text.trim()).map_err(|e| format!("{e} (one of {OPERATION_NAMES})"))
}

fn parse_pattern_type(text: &str) -> std::result::Result<PatternType, String> {
    PatternType::parse(text.trim()).map_err(|e| format!("{e} (literal, prefixed, any or match)"))
}

/// What bindings are on: a resource type and a name read as its pattern
/// type says, or (ANY, MATCH) what a filter selects.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Pattern {
    resource_type: ResourceType,
    name: String,
    pattern_type: PatternType,
}

/// Who, from where, what, and whether allowed. `operation` is ANY in a
/// `remove` filter that names no operation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    principal: String,
    host: String,
    operation: AclOperation,
    permission: AclPermissionType,
}

/// The entries each resource pattern gets, as kafka-acls.sh computes them.
type Expanded = BTreeMap<Pattern, BTreeSet<Entry>>;

/// The cluster, always literal.
fn cluster_pattern() -> Pattern {
    Pattern {
        resource_type: ResourceType::Cluster,
        name: CLUSTER_RESOURCE_NAME.to_owned(),
        pattern_type: PatternType::Literal,
    }
}

impl ResourceArgs {
    /// The resources given, each read as `pattern_type` (the cluster
    /// always literally, so PREFIXED with --cluster is refused).
    fn patterns(&self, pattern_type: PatternType) -> Result<Vec<Pattern>> {
        if self.cluster && pattern_type == PatternType::Prefixed {
            return Err(usage(
                "--cluster has one resource, kafka-cluster, which cannot be PREFIXED",
            ));
        }
        let named = |resource_type: ResourceType, names: &[String]| -> Vec<Pattern> {
            names
                .iter()
                .map(|name| Pattern {
                    resource_type,
                    name: name.clone(),
                    pattern_type,
                })
                .collect()
        };
        let mut patterns = named(ResourceType::Topic, &self.topic);
        if self.cluster {
            patterns.push(Pattern {
                pattern_type,
                ..cluster_pattern()
            });
        }
        patterns.extend(named(ResourceType::Group, &self.group));
        patterns.extend(named(ResourceType::TransactionalId, &self.transactional_id));
        patterns.extend(named(ResourceType::DelegationToken, &self.delegation_token));
        patterns.extend(named(ResourceType::User, &self.user_principal));
        Ok(patterns)
    }

    /// [`ResourceArgs::patterns`], at least one.
    fn required_patterns(&self, pattern_type: PatternType) -> Result<Vec<Pattern>> {
        let patterns = self.patterns(pattern_type)?;
        if patterns.is_empty() {
            return Err(usage(
                "give at least one resource: --topic NAME, --group NAME, --cluster, \
                 --transactional-id ID, --delegation-token ID or --user-principal PRINCIPAL",
            ));
        }
        Ok(patterns)
    }
}

impl EntryArgs {
    /// Whether any principal is given.
    fn has_principals(&self) -> bool {
        !self.allow_principal.is_empty() || !self.deny_principal.is_empty()
    }

    /// How many entries [`EntryArgs::entries`] makes for `operations`
    /// operations, saturating.
    fn entry_count(&self, operations: usize) -> usize {
        let hosts = |given: &[String]| given.len().max(1);
        let allowed = self
            .allow_principal
            .len()
            .saturating_mul(hosts(&self.allow_host));
        let denied = self
            .deny_principal
            .len()
            .saturating_mul(hosts(&self.deny_host));
        allowed.saturating_add(denied).saturating_mul(operations)
    }

    /// Each allowed principal from each allowed host, and each denied one
    /// from each denied host, for each of `operations` (kafka-acls.sh's
    /// `getAcl`). A principal's hosts default to `*`.
    fn entries(&self, operations: &[AclOperation]) -> BTreeSet<Entry> {
        let wildcard = [WILDCARD_HOST.to_owned()];
        let hosts = |given: &'_ [String]| -> Vec<String> {
            if given.is_empty() {
                wildcard.to_vec()
            } else {
                given.to_vec()
            }
        };
        let sides = [
            (
                &self.allow_principal,
                hosts(&self.allow_host),
                AclPermissionType::Allow,
            ),
            (
                &self.deny_principal,
                hosts(&self.deny_host),
                AclPermissionType::Deny,
            ),
        ];
        let mut entries = BTreeSet::new();
        for (principals, hosts, permission) in sides {
            for principal in principals {
                for host in &hosts {
                    for operation in operations {
                        entries.insert(Entry {
                            principal: principal.clone(),
                            host: host.clone(),
                            operation: *operation,
                            permission,
                        });
                    }
                }
            }
        }
        entries
    }

    /// Refuses what kafka-acls.sh refuses before it expands the flags.
    fn check(&self, resources: &ResourceArgs) -> Result<()> {
        if self.producer && resources.topic.is_empty() {
            return Err(usage("with --producer give a --topic"));
        }
        if self.consumer
            && (resources.topic.is_empty()
                || resources.group.is_empty()
                || (!self.producer
                    && (resources.cluster || !resources.transactional_id.is_empty())))
        {
            return Err(usage(
                "with --consumer give a --topic and a --group, and no --cluster or \
                 --transactional-id (unless with --producer)",
            ));
        }
        Ok(())
    }

    /// The entries of each resource (kafka-acls.sh's
    /// `getResourceFilterToAcls`): `--operation` (or `default_operation`)
    /// on every resource, or the roles' operations with `--producer` and
    /// `--consumer`. Refuses an operation a resource type does not have,
    /// and more than [`BINDINGS_PER_COMMAND_MAX`] bindings.
    fn expand(
        &self,
        resources: &ResourceArgs,
        pattern_type: PatternType,
        default_operation: AclOperation,
    ) -> Result<Expanded> {
        use AclOperation as Op;
        self.check(resources)?;
        let patterns = resources.required_patterns(pattern_type)?;
        let mut expanded = Expanded::new();
        let mut count = 0usize;
        let mut give = |pattern: &Pattern, operations: &[AclOperation]| -> Result<()> {
            count = count.saturating_add(self.entry_count(operations.len()));
            if count > BINDINGS_PER_COMMAND_MAX {
                return Err(usage(format!(
                    "the flags make more than {BINDINGS_PER_COMMAND_MAX} bindings; \
                     run the command in parts"
                )));
            }
            expanded
                .entry(pattern.clone())
                .or_default()
                .extend(self.entries(operations));
            Ok(())
        };
        if !self.producer && !self.consumer {
            let operations = if self.operation.is_empty() {
                vec![default_operation]
            } else {
                self.operation.clone()
            };
            for pattern in &patterns {
                check_operations(pattern.resource_type, &operations, default_operation)?;
                give(pattern, &operations)?;
            }
        }
        let of_type = |resource_type: ResourceType| {
            patterns
                .iter()
                .filter(move |pattern| pattern.resource_type == resource_type)
        };
        if self.producer {
            for topic in of_type(ResourceType::Topic) {
                give(topic, &[Op::Write, Op::Describe, Op::Create])?;
            }
            for id in of_type(ResourceType::TransactionalId) {
                give(id, &[Op::Write, Op::Describe])?;
            }
            if self.idempotent {
                give(&cluster_pattern(), &[Op::IdempotentWrite])?;
            }
        }
        if self.consumer {
            for topic in of_type(ResourceType::Topic) {
                give(topic, &[Op::Read, Op::Describe])?;
            }
            for group in of_type(ResourceType::Group) {
                give(group, &[Op::Read])?;
            }
        }
        Ok(expanded)
    }
}

/// Refuses an operation `resource_type` does not have (kafka-acls.sh's
/// `validateOperation`): its supported operations and ALL, TWO_PHASE_COMMIT
/// on a transactional id, and `also` (ANY in a `remove` filter).
fn check_operations(
    resource_type: ResourceType,
    operations: &[AclOperation],
    also: AclOperation,
) -> Result<()> {
    let supported = |operation: AclOperation| {
        operation == AclOperation::All
            || operation == also
            || resource_type.supported_operations().contains(&operation)
            || (resource_type == ResourceType::TransactionalId
                && operation == AclOperation::TwoPhaseCommit)
    };
    if operations.iter().all(|operation| supported(*operation)) {
        return Ok(());
    }
    let names: Vec<&str> = resource_type
        .supported_operations()
        .iter()
        .map(|operation| operation.name())
        .chain([AclOperation::All.name()])
        .collect();
    Err(usage(format!(
        "resource type {resource_type} supports only the operations {}",
        names.join(", ")
    )))
}

impl AddArgs {
    /// The bindings to create: each resource with each of its entries.
    fn bindings(&self) -> Result<BTreeSet<AclBinding>> {
        if !matches!(
            self.resource_pattern_type,
            PatternType::Literal | PatternType::Prefixed
        ) {
            return Err(usage(format!(
                "--resource-pattern-type {} is a filter: add takes literal or prefixed",
                self.resource_pattern_type
            )));
        }
        let expanded = self.entries.expand(
            &self.resources,
            self.resource_pattern_type,
            AclOperation::All,
        )?;
        let mut bindings = BTreeSet::new();
        for (pattern, entries) in expanded {
            if entries.is_empty() {
                return Err(usage(
                    "give --allow-principal or --deny-principal: whom the ACLs are for",
                ));
            }
            for entry in entries {
                bindings.insert(AclBinding {
                    resource_type: pattern.resource_type,
                    resource_name: pattern.name.clone(),
                    pattern_type: pattern.pattern_type,
                    principal: entry.principal,
                    host: entry.host,
                    operation: entry.operation,
                    permission: entry.permission,
                });
            }
        }
        Ok(bindings)
    }
}

impl RemoveArgs {
    /// The filters of the bindings to remove: per resource, each entry
    /// given, or every binding on it when no principal is given.
    fn filters(&self) -> Result<Vec<AclBindingFilter>> {
        let roles = self.entries.producer || self.entries.consumer;
        if roles && !self.entries.has_principals() {
            return Err(usage(
                "with --producer or --consumer give the principal whose ACLs to remove \
                 (--allow-principal)",
            ));
        }
        let expanded = self.entries.expand(
            &self.resources,
            self.resource_pattern_type,
            AclOperation::Any,
        )?;
        let mut filters = Vec::new();
        for (pattern, entries) in expanded {
            let resource = AclBindingFilter {
                resource_type: pattern.resource_type,
                resource_name: Some(pattern.name.clone()),
                pattern_type: pattern.pattern_type,
                ..AclBindingFilter::ANY
            };
            if entries.is_empty() {
                filters.push(resource);
                continue;
            }
            filters.extend(entries.into_iter().map(|entry| AclBindingFilter {
                principal: Some(entry.principal),
                host: Some(entry.host),
                operation: entry.operation,
                permission: entry.permission,
                ..resource.clone()
            }));
        }
        Ok(filters)
    }
}

impl ListArgs {
    /// The filters to describe, each with the principal it was asked for
    /// (`None`: any principal).
    fn filters(&self) -> Result<Vec<(Option<String>, AclBindingFilter)>> {
        let patterns = self.resources.patterns(self.resource_pattern_type)?;
        let resources: Vec<AclBindingFilter> = if patterns.is_empty() {
            vec![AclBindingFilter {
                pattern_type: self.resource_pattern_type,
                ..AclBindingFilter::ANY
            }]
        } else {
            patterns
                .into_iter()
                .map(|pattern| AclBindingFilter {
                    resource_type: pattern.resource_type,
                    resource_name: Some(pattern.name),
                    pattern_type: pattern.pattern_type,
                    ..AclBindingFilter::ANY
                })
                .collect()
        };
        let principals: Vec<Option<String>> = if self.principal.is_empty() {
            vec![None]
        } else {
            self.principal.iter().cloned().map(Some).collect()
        };
        if resources.len().saturating_mul(principals.len()) > BINDINGS_PER_COMMAND_MAX {
            return Err(usage(format!(
                "the flags make more than {BINDINGS_PER_COMMAND_MAX} filters; run the \
                 command in parts"
            )));
        }
        let mut filters = Vec::new();
        for principal in &principals {
            for resource in &resources {
                filters.push((
                    principal.clone(),
                    AclBindingFilter {
                        principal: principal.clone(),
                        ..resource.clone()
                    },
                ));
            }
        }
        Ok(filters)
    }
}

/// Runs a `weir acl` command against `brokers`. The flags are checked
/// before any broker is asked.
pub fn run(brokers: &str, args: AclArgs) -> Result<()> {
    match args.command {
        AclCommand::Add(add) => {
            let bindings = add.bindings()?;
            let mut client = super::connect(brokers)?;
            self::add(&mut client, &bindings, args.json)
        }
        AclCommand::List(list) => {
            let filters = list.filters()?;
            let mut client = super::connect(brokers)?;
            self::list(&mut client, &filters, !list.principal.is_empty(), args.json)
        }
        AclCommand::Remove(remove) => {
            let filters = remove.filters()?;
            let interactive = !remove.force;
            if interactive && !std::io::stdin().is_terminal() {
                return Err(usage(
                    "weir acl remove asks before removing ACLs, and stdin is not a terminal: \
                     add --force to remove without asking",
                ));
            }
            let mut client = super::connect(brokers)?;
            self::remove(&mut client, filters, interactive, args.json)
        }
    }
}

/// Kafka's name of an error code, as its `Errors` enum spells it
/// (`SECURITY_DISABLED`).
fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".to_owned(),
        Some(ResponseError::Unknown(code)) => format!("UNKNOWN_ERROR_CODE_{code}"),
        Some(error) => {
            // kafka-protocol names the variants in camel case.
            let mut name = String::new();
            for (i, c) in error.to_string().chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    name.push('_');
                }
                name.push(c.to_ascii_uppercase());
            }
            name
        }
    }
}

/// A broker's refusal as one line: the error's name and code, its message,
/// and for SECURITY_DISABLED what the broker needs.
fn refusal(code: i16, message: Option<&StrBytes>) -> String {
    let mut text = format!("{} (error code {code})", error_name(code));
    if let Some(message) = message.map(|m| m.as_str().trim()).filter(|m| !m.is_empty()) {
        text.push_str(": ");
        text.push_str(message);
    }
    if code == ResponseError::SecurityDisabled.code() {
        text.push_str("; ");
        text.push_str(SECURITY_DISABLED_HINT);
    }
    text
}

fn str_bytes(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

/// A binding as the commands' JSON shows it, with Kafka's upper-case names.
fn binding_json(binding: &AclBinding) -> serde_json::Value {
    json!({
        "resource_type": binding.resource_type.name(),
        "resource_name": binding.resource_name,
        "pattern_type": binding.pattern_type.name(),
        "principal": binding.principal,
        "host": binding.host,
        "operation": binding.operation.name(),
        "permission_type": binding.permission.name(),
    })
}

/// Bindings grouped by resource as kafka-acls.sh prints them: `heading`
/// and the resource pattern, then a line per entry, then a blank line.
fn grouped(heading: &str, bindings: &BTreeSet<AclBinding>) -> String {
    let mut text = String::new();
    let mut resource: Option<(ResourceType, &str, PatternType)> = None;
    for binding in bindings {
        let this = (
            binding.resource_type,
            binding.resource_name.as_str(),
            binding.pattern_type,
        );
        if resource != Some(this) {
            if resource.is_some() {
                text.push('\n');
            }
            text.push_str(&format!(
                "{heading} `ResourcePattern(resourceType={}, name={}, patternType={})`:\n",
                binding.resource_type, binding.resource_name, binding.pattern_type
            ));
            resource = Some(this);
        }
        text.push_str(&format!(
            "\t(principal={}, host={}, operation={}, permissionType={})\n",
            binding.principal, binding.host, binding.operation, binding.permission
        ));
    }
    if resource.is_some() {
        text.push('\n');
    }
    text
}

/// A binding the broker refused to create or remove, and why.
struct Refused {
    /// The binding, or the filter as text when the whole filter failed.
    what: String,
    code: i16,
    why: String,
}

/// The error of a command whose items were refused: the one refusal when
/// they all share it, else each on stderr and a count.
fn refused_error(verb: &str, refused: &[Refused], total: usize) -> CliError {
    let first = refused.first();
    let shared = first.filter(|first| {
        refused
            .iter()
            .all(|r| r.code == first.code && r.why == first.why)
    });
    match (shared, refused.len() == total) {
        (Some(first), true) => CliError::Failed(format!("no ACL was {verb}: {}", first.why)),
        _ => {
            for r in refused {
                eprintln!("not {verb}: {}: {}", r.what, r.why);
            }
            let security_disabled = refused
                .iter()
                .any(|r| r.code == ResponseError::SecurityDisabled.code());
            let hint = if security_disabled {
                format!("; {SECURITY_DISABLED_HINT}")
            } else {
                String::new()
            };
            CliError::Failed(format!(
                "{} of {total} ACL requests were refused (listed above){hint}",
                refused.len()
            ))
        }
    }
}

fn add(client: &mut Client, bindings: &BTreeSet<AclBinding>, json: bool) -> Result<()> {
    let all: Vec<&AclBinding> = bindings.iter().collect();
    let mut created = BTreeSet::new();
    let mut refused = Vec::new();
    for chunk in all.chunks(ITEMS_PER_REQUEST_MAX) {
        let request = CreateAclsRequest::default().with_creations(
            chunk
                .iter()
                .map(|b| {
                    AclCreation::default()
                        .with_resource_type(b.resource_type.code())
                        .with_resource_name(str_bytes(&b.resource_name))
                        .with_resource_pattern_type(b.pattern_type.code())
                        .with_principal(str_bytes(&b.principal))
                        .with_host(str_bytes(&b.host))
                        .with_operation(b.operation.code())
                        .with_permission_type(b.permission.code())
                })
                .collect(),
        );
        let response = client.send(&request, ACL_API_VERSION_MAX)?;
        if response.results.len() != chunk.len() {
            return Err(CliError::Failed(format!(
                "the broker answered {} results to {} ACL creations",
                response.results.len(),
                chunk.len()
            )));
        }
        for (binding, result) in chunk.iter().zip(&response.results) {
            if result.error_code == 0 {
                created.insert((*binding).clone());
            } else {
                refused.push(Refused {
                    what: binding.to_string(),
                    code: result.error_code,
                    why: refusal(result.error_code, result.error_message.as_ref()),
                });
            }
        }
    }
    if json {
        print_json(&json!({
            "created": created.iter().map(binding_json).collect::<Vec<_>>(),
        }))?;
    } else {
        print_out(&grouped("Created ACLs for resource", &created))?;
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(refused_error("created", &refused, bindings.len()))
    }
}

/// The bindings matching `filter`.
fn describe(client: &mut Client, filter: &AclBindingFilter) -> Result<Vec<AclBinding>> {
    let request = DescribeAclsRequest::default()
        .with_resource_type_filter(filter.resource_type.code())
        .with_resource_name_filter(filter.resource_name.as_deref().map(str_bytes))
        .with_pattern_type_filter(filter.pattern_type.code())
        .with_principal_filter(filter.principal.as_deref().map(str_bytes))
        .with_host_filter(filter.host.as_deref().map(str_bytes))
        .with_operation(filter.operation.code())
        .with_permission_type(filter.permission.code());
    let response = client.send(&request, ACL_API_VERSION_MAX)?;
    if response.error_code != 0 {
        return Err(CliError::Failed(format!(
            "cannot list ACLs: {}",
            refusal(response.error_code, response.error_message.as_ref())
        )));
    }
    Ok(response
        .resources
        .iter()
        .flat_map(|resource| {
            resource.acls.iter().map(|acl| AclBinding {
                resource_type: ResourceType::from_code(resource.resource_type),
                resource_name: resource.resource_name.to_string(),
                pattern_type: PatternType::from_code(resource.pattern_type),
                principal: acl.principal.to_string(),
                host: acl.host.to_string(),
                operation: AclOperation::from_code(acl.operation),
                permission: AclPermissionType::from_code(acl.permission_type),
            })
        })
        .collect())
}

fn list(
    client: &mut Client,
    filters: &[(Option<String>, AclBindingFilter)],
    by_principal: bool,
    json: bool,
) -> Result<()> {
    let mut found: BTreeMap<Option<String>, BTreeSet<AclBinding>> = BTreeMap::new();
    for (principal, filter) in filters {
        let bindings = describe(client, filter)?;
        found.entry(principal.clone()).or_default().extend(bindings);
    }
    if json {
        let all: BTreeSet<&AclBinding> = found.values().flatten().collect();
        return print_json(&serde_json::Value::Array(
            all.into_iter().map(binding_json).collect(),
        ));
    }
    let mut text = String::new();
    for (principal, bindings) in &found {
        if by_principal && let Some(principal) = principal {
            text.push_str(&format!("ACLs for principal `{principal}`\n"));
        }
        text.push_str(&grouped("Current ACLs for resource", bindings));
    }
    print_out(&text).map(|_| ())
}

/// Shows the bindings `filters` match on stderr and asks whether to remove
/// them; the exact filters of those confirmed, or `None`.
fn confirmed(
    client: &mut Client,
    filters: &[AclBindingFilter],
) -> Result<Option<Vec<AclBindingFilter>>> {
    let mut matching = BTreeSet::new();
    for filter in filters {
        matching.extend(describe(client, filter)?);
    }
    if matching.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let mut stderr = std::io::stderr().lock();
    let prompt = format!(
        "{}Remove these {} ACLs? (y/n) ",
        grouped("ACLs to remove for resource", &matching),
        matching.len()
    );
    stderr
        .write_all(prompt.as_bytes())
        .and_then(|()| stderr.flush())
        .map_err(CliError::io("cannot write the confirmation prompt"))?;
    let mut answer = String::new();
    std::io::Read::take(std::io::stdin().lock(), CONFIRMATION_BYTES_MAX)
        .read_line(&mut answer)
        .map_err(CliError::io("cannot read the confirmation"))?;
    let answer = answer.trim();
    if answer.eq_ignore_ascii_case("y") || answer.eq_ignore_ascii_case("yes") {
        Ok(Some(matching.iter().map(AclBinding::to_filter).collect()))
    } else {
        Ok(None)
    }
}

fn delete_filter(filter: &AclBindingFilter) -> DeleteAclsFilter {
    DeleteAclsFilter::default()
        .with_resource_type_filter(filter.resource_type.code())
        .with_resource_name_filter(filter.resource_name.as_deref().map(str_bytes))
        .with_pattern_type_filter(filter.pattern_type.code())
        .with_principal_filter(filter.principal.as_deref().map(str_bytes))
        .with_host_filter(filter.host.as_deref().map(str_bytes))
        .with_operation(filter.operation.code())
        .with_permission_type(filter.permission.code())
}

fn remove(
    client: &mut Client,
    filters: Vec<AclBindingFilter>,
    interactive: bool,
    json: bool,
) -> Result<()> {
    let filters = if interactive {
        match confirmed(client, &filters)? {
            Some(filters) => filters,
            None => {
                eprintln!("nothing removed");
                return Ok(());
            }
        }
    } else {
        filters
    };
    let mut removed = BTreeSet::new();
    let mut refused = Vec::new();
    for chunk in filters.chunks(ITEMS_PER_REQUEST_MAX) {
        let request =
            DeleteAclsRequest::default().with_filters(chunk.iter().map(delete_filter).collect());
        let response = client.send(&request, ACL_API_VERSION_MAX)?;
        if response.filter_results.len() != chunk.len() {
            return Err(CliError::Failed(format!(
                "the broker answered {} results to {} ACL filters",
                response.filter_results.len(),
                chunk.len()
            )));
        }
        for (filter, result) in chunk.iter().zip(&response.filter_results) {
            if result.error_code != 0 {
                refused.push(Refused {
                    what: filter.to_string(),
                    code: result.error_code,
                    why: refusal(result.error_code, result.error_message.as_ref()),
                });
                continue;
            }
            for acl in &result.matching_acls {
                let binding = AclBinding {
                    resource_type: ResourceType::from_code(acl.resource_type),
                    resource_name: acl.resource_name.to_string(),
                    pattern_type: PatternType::from_code(acl.pattern_type),
                    principal: acl.principal.to_string(),
                    host: acl.host.to_string(),
                    operation: AclOperation::from_code(acl.operation),
                    permission: AclPermissionType::from_code(acl.permission_type),
                };
                if acl.error_code == 0 {
                    removed.insert(binding);
                } else {
                    refused.push(Refused {
                        what: binding.to_string(),
                        code: acl.error_code,
                        why: refusal(acl.error_code, acl.error_message.as_ref()),
                    });
                }
            }
        }
    }
    if json {
        print_json(&json!({
            "removed": removed.iter().map(binding_json).collect::<Vec<_>>(),
        }))?;
    } else if removed.is_empty() && refused.is_empty() {
        print_out("No ACLs matched; nothing was removed.\n")?;
    } else {
        print_out(&grouped("Removed ACLs for resource", &removed))?;
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(refused_error("removed", &refused, filters.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `weir acl` alone, to parse its flags as the binary does.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: AclCommand,
    }

    fn parse(args: &[&str]) -> AclCommand {
        let argv = std::iter::once("weir-acl").chain(args.iter().copied());
        match Cli::try_parse_from(argv) {
            Ok(cli) => cli.command,
            Err(e) => panic!("{args:?} does not parse: {e}"),
        }
    }

    fn add_bindings(args: &[&str]) -> Result<BTreeSet<AclBinding>> {
        let argv: Vec<&str> = std::iter::once("add").chain(args.iter().copied()).collect();
        match parse(&argv) {
            AclCommand::Add(add) => add.bindings(),
            other => panic!("not add: {other:?}"),
        }
    }

    fn remove_filters(args: &[&str]) -> Result<Vec<AclBindingFilter>> {
        let argv: Vec<&str> = std::iter::once("remove")
            .chain(args.iter().copied())
            .collect();
        match parse(&argv) {
            AclCommand::Remove(remove) => remove.filters(),
            other => panic!("not remove: {other:?}"),
        }
    }

    /// `(resource type, name, pattern type, operation)` of each binding
    /// for `User:a` from `*`, allowed.
    fn allowed_ops(
        bindings: &BTreeSet<AclBinding>,
    ) -> BTreeSet<(ResourceType, String, PatternType, AclOperation)> {
        bindings
            .iter()
            .inspect(|b| {
                assert_eq!(b.principal, "User:a");
                assert_eq!(b.host, "*");
                assert_eq!(b.permission, AclPermissionType::Allow);
            })
            .map(|b| {
                (
                    b.resource_type,
                    b.resource_name.clone(),
                    b.pattern_type,
                    b.operation,
                )
            })
            .collect()
    }

    fn on(
        resource_type: ResourceType,
        name: &str,
        operations: &[AclOperation],
    ) -> Vec<(ResourceType, String, PatternType, AclOperation)> {
        operations
            .iter()
            .map(|op| (resource_type, name.to_owned(), PatternType::Literal, *op))
            .collect()
    }

    fn is_usage(result: Result<impl std::fmt::Debug>, needle: &str) {
        match result {
            Err(CliError::Usage(message)) => {
                assert!(message.contains(needle), "{message:?} lacks {needle:?}")
            }
            other => panic!("expected a usage error with {needle:?}, got {other:?}"),
        }
    }

    use AclOperation as Op;
    use ResourceType as Rt;

    #[test]
    fn producer_allows_write_describe_create_on_the_topics() {
        let bindings = add_bindings(&["--producer", "--topic", "t", "--allow-principal", "User:a"]);
        let expected = on(Rt::Topic, "t", &[Op::Write, Op::Describe, Op::Create]);
        assert_eq!(
            allowed_ops(&bindings.expect("expands")),
            expected.into_iter().collect()
        );
    }

    #[test]
    fn producer_with_a_transactional_id_allows_write_and_describe_on_it() {
        let bindings = add_bindings(&[
            "--producer",
            "--topic",
            "t",
            "--transactional-id",
            "x",
            "--allow-principal",
            "User:a",
        ]);
        let mut expected = on(Rt::Topic, "t", &[Op::Write, Op::Describe, Op::Create]);
        expected.extend(on(Rt::TransactionalId, "x", &[Op::Write, Op::Describe]));
        assert_eq!(
            allowed_ops(&bindings.expect("expands")),
            expected.into_iter().collect()
        );
    }

    #[test]
    fn idempotent_producer_allows_idempotent_write_on_the_cluster() {
        let bindings = add_bindings(&[
            "--producer",
            "--idempotent",
            "--topic",
            "t",
            "--allow-principal",
            "User:a",
        ]);
        let mut expected = on(Rt::Topic, "t", &[Op::Write, Op::Describe, Op::Create]);
        expected.extend(on(Rt::Cluster, "kafka-cluster", &[Op::IdempotentWrite]));
        assert_eq!(
            allowed_ops(&bindings.expect("expands")),
            expected.into_iter().collect()
        );
    }

    #[test]
    fn consumer_allows_read_describe_on_topics_and_read_on_groups() {
        let bindings = add_bindings(&[
            "--consumer",
            "--topic",
            "t",
            "--group",
            "g",
            "--allow-principal",
            "User:a",
        ]);
        let mut expected = on(Rt::Topic, "t", &[Op::Read, Op::Describe]);
        expected.extend(on(Rt::Group, "g", &[Op::Read]));
        assert_eq!(
            allowed_ops(&bindings.expect("expands")),
            expected.into_iter().collect()
        );
    }

    #[test]
    fn producer_and_consumer_together_add_up_on_the_topics() {
        let bindings = add_bindings(&[
            "--producer",
            "--consumer",
            "--topic",
            "t",
            "--group",
            "g",
            "--allow-principal",
            "User:a",
        ]);
        let mut expected = on(
            Rt::Topic,
            "t",
            &[Op::Write, Op::Describe, Op::Create, Op::Read],
        );
        expected.extend(on(Rt::Group, "g", &[Op::Read]));
        assert_eq!(
            allowed_ops(&bindings.expect("expands")),
            expected.into_iter().collect()
        );
    }

    #[test]
    fn add_makes_the_product_of_resources_principals_hosts_and_operations() {
        let bindings = add_bindings(&[
            "--topic",
            "t1",
            "--topic",
            "t2",
            "--allow-principal",
            "User:a",
            "--allow-principal",
            "User:b",
            "--allow-host",
            "10.0.0.1",
            "--allow-host",
            "10.0.0.2",
            "--deny-principal",
            "User:c",
            "--operation",
            "read",
            "--operation",
            "DescribeConfigs",
        ])
        .expect("expands");
        // 2 topics × (2 principals × 2 hosts + 1 denied from *) × 2 operations.
        assert_eq!(bindings.len(), 2 * 5 * 2);
        let denied: Vec<&AclBinding> = bindings
            .iter()
            .filter(|b| b.permission == AclPermissionType::Deny)
            .collect();
        assert_eq!(denied.len(), 4);
        assert!(
            denied
                .iter()
                .all(|b| b.principal == "User:c" && b.host == "*")
        );
        assert!(
            bindings
                .iter()
                .all(|b| matches!(b.operation, Op::Read | Op::DescribeConfigs))
        );
    }

    #[test]
    fn add_defaults_to_all_on_a_literal_pattern() {
        let bindings =
            add_bindings(&["--cluster", "--allow-principal", "User:a"]).expect("expands");
        assert_eq!(
            allowed_ops(&bindings),
            on(Rt::Cluster, "kafka-cluster", &[Op::All])
                .into_iter()
                .collect()
        );
        let prefixed = add_bindings(&[
            "--topic",
            "etl-",
            "--resource-pattern-type",
            "PREFIXED",
            "--allow-principal",
            "User:a",
        ])
        .expect("expands");
        assert!(
            prefixed
                .iter()
                .all(|b| b.pattern_type == PatternType::Prefixed)
        );
    }

    #[test]
    fn usage_errors_say_what_is_missing_or_wrong() {
        is_usage(
            add_bindings(&["--allow-principal", "User:a"]),
            "at least one resource",
        );
        is_usage(add_bindings(&["--topic", "t"]), "--allow-principal");
        is_usage(
            add_bindings(&["--consumer", "--topic", "t", "--allow-principal", "User:a"]),
            "--group",
        );
        is_usage(
            add_bindings(&["--producer", "--group", "g", "--allow-principal", "User:a"]),
            "--topic",
        );
        is_usage(
            add_bindings(&[
                "--cluster",
                "--resource-pattern-type",
                "prefixed",
                "--allow-principal",
                "User:a",
            ]),
            "PREFIXED",
        );
        is_usage(
            add_bindings(&[
                "--topic",
                "t",
                "--resource-pattern-type",
                "match",
                "--allow-principal",
                "User:a",
            ]),
            "filter",
        );
        is_usage(
            add_bindings(&[
                "--group",
                "g",
                "--operation",
                "Write",
                "--allow-principal",
                "User:a",
            ]),
            "GROUP supports only",
        );
        is_usage(
            add_bindings(&[
                "--topic",
                "t",
                "--operation",
                "Any",
                "--allow-principal",
                "User:a",
            ]),
            "TOPIC supports only",
        );
        is_usage(
            remove_filters(&["--producer", "--topic", "t"]),
            "--allow-principal",
        );
    }

    #[test]
    fn clap_refuses_what_does_not_parse_or_go_together() {
        let refused = |args: &[&str]| {
            let argv = std::iter::once("weir-acl").chain(args.iter().copied());
            Cli::try_parse_from(argv).is_err()
        };
        assert!(refused(&[
            "add",
            "--topic",
            "t",
            "--operation",
            "Frobnicate"
        ]));
        assert!(refused(&[
            "add",
            "--topic",
            "t",
            "--allow-principal",
            "alice"
        ]));
        assert!(refused(&[
            "add",
            "--producer",
            "--operation",
            "Read",
            "--topic",
            "t"
        ]));
        assert!(refused(&["add", "--idempotent", "--topic", "t"]));
        assert!(refused(&[
            "add",
            "--allow-host",
            "10.0.0.1",
            "--topic",
            "t"
        ]));
        assert!(refused(&["list", "--allow-principal", "User:a"]));
        assert!(refused(&["list", "--resource-pattern-type", "sideways"]));
    }

    #[test]
    fn remove_without_principals_selects_every_literal_binding_on_the_resources() {
        let filters = remove_filters(&["--topic", "t", "--group", "g"]).expect("filters");
        assert_eq!(filters.len(), 2);
        for filter in &filters {
            // As kafka-acls.sh: a prefixed binding is removed only when asked.
            assert_eq!(filter.pattern_type, PatternType::Literal);
            assert_eq!(filter.principal, None);
            assert_eq!(filter.operation, Op::Any);
            assert_eq!(filter.permission, AclPermissionType::Any);
        }
    }

    #[test]
    fn remove_with_a_principal_defaults_to_every_operation() {
        let filters =
            remove_filters(&["--topic", "t", "--allow-principal", "User:a"]).expect("filters");
        assert_eq!(filters.len(), 1);
        let filter = filters.first().expect("one filter");
        assert_eq!(filter.principal.as_deref(), Some("User:a"));
        assert_eq!(filter.host.as_deref(), Some("*"));
        assert_eq!(filter.operation, Op::Any);
        assert_eq!(filter.permission, AclPermissionType::Allow);
    }

    #[test]
    fn list_filters_by_principal_and_defaults_to_any_pattern() {
        let AclCommand::List(list) = parse(&["list", "--topic", "t", "--principal", "User:a"])
        else {
            panic!("not list");
        };
        let filters = list.filters().expect("filters");
        assert_eq!(filters.len(), 1);
        let (principal, filter) = filters.first().expect("one filter");
        assert_eq!(principal.as_deref(), Some("User:a"));
        assert_eq!(filter.principal.as_deref(), Some("User:a"));
        assert_eq!(filter.resource_type, Rt::Topic);
        assert_eq!(filter.pattern_type, PatternType::Any);
        let AclCommand::List(all) = parse(&["list"]) else {
            panic!("not list");
        };
        let filters = all.filters().expect("filters");
        assert_eq!(
            filters.first().map(|(_, f)| f),
            Some(&AclBindingFilter::ANY)
        );
    }

    #[test]
    fn listings_group_by_resource_as_kafka_acls_prints_them() {
        let binding = |name: &str, principal: &str| AclBinding {
            resource_type: Rt::Topic,
            resource_name: name.to_owned(),
            pattern_type: PatternType::Literal,
            principal: principal.to_owned(),
            host: "*".to_owned(),
            operation: Op::Read,
            permission: AclPermissionType::Allow,
        };
        let bindings: BTreeSet<AclBinding> = [
            binding("orders", "User:alice"),
            binding("orders", "User:bob"),
            binding("refunds", "User:alice"),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            grouped("Current ACLs for resource", &bindings),
            "Current ACLs for resource `ResourcePattern(resourceType=TOPIC, name=orders, patternType=LITERAL)`:\n\
             \t(principal=User:alice, host=*, operation=READ, permissionType=ALLOW)\n\
             \t(principal=User:bob, host=*, operation=READ, permissionType=ALLOW)\n\
             \n\
             Current ACLs for resource `ResourcePattern(resourceType=TOPIC, name=refunds, patternType=LITERAL)`:\n\
             \t(principal=User:alice, host=*, operation=READ, permissionType=ALLOW)\n\
             \n"
        );
    }

    #[test]
    fn refusals_name_the_error_as_kafka_does_and_hint_at_the_authorizer() {
        assert_eq!(error_name(54), "SECURITY_DISABLED");
        assert_eq!(error_name(31), "CLUSTER_AUTHORIZATION_FAILED");
        assert_eq!(error_name(42), "INVALID_REQUEST");
        let message = str_bytes("No Authorizer is configured on the broker");
        let text = refusal(54, Some(&message));
        assert!(text.starts_with(
            "SECURITY_DISABLED (error code 54): No Authorizer is configured on the broker"
        ));
        assert!(text.ends_with(SECURITY_DISABLED_HINT));
        assert!(!refusal(42, None).contains("authorizer.class.name"));
    }
}
