//! Kafka's ACLs and the authorizer that decides with them, as pure data and
//! functions: no I/O, no storage, no clock.
//!
//! The model is Kafka's own, with its wire codes and names: a binding
//! ([`AclBinding`]) says "principal P is allowed (or denied) operation O
//! from host H on the resources of type T matching pattern R". Patterns are
//! `LITERAL` (one name, or `*` for every name of the type) or `PREFIXED`
//! (every name starting with it, KIP-290). A filter ([`AclBindingFilter`])
//! selects bindings for DescribeAcls and DeleteAcls; its `MATCH` pattern
//! type selects every binding that would apply to one resource name.
//!
//! [`Authorizer`] holds the bindings the broker keeps in its metadata and
//! answers, per request and resource, as Kafka's `StandardAuthorizer` does:
//!
//! 1. A super user (`super.users`) is allowed everything.
//! 2. The bindings that apply to the resource are the literal ones of its
//!    exact name, the literal `*` of its type, and the prefixed ones whose
//!    prefix its name starts with.
//! 3. Of those, one applies to the request when its principal is the
//!    client's (type and name) or `User:*` (any client, of any principal
//!    type), its host is the client's address or `*`, and its operation is
//!    the one asked or implies it. Only an ALLOW implies: ALLOW of `READ`,
//!    `WRITE`, `DELETE` or `ALTER` implies `DESCRIBE`, and ALLOW of
//!    `ALTER_CONFIGS` implies `DESCRIBE_CONFIGS`. `ALL` covers every
//!    operation, for ALLOW and DENY alike; any other DENY denies exactly
//!    its own operation (DENY `READ` leaves `DESCRIBE` alone).
//! 4. Any applying DENY denies; otherwise any applying ALLOW allows.
//! 5. When no binding at all applies to the resource (for any principal),
//!    `allow.everyone.if.no.acl.found` decides; otherwise it is denied.
//!
//! Lookups are indexed, so a check costs the length of the resource name
//! plus the bindings of the client's principal on that resource, not the
//! number of bindings: literal names sit in a hash map per resource type,
//! prefixes in a radix tree walked along the name, and each pattern's
//! bindings are grouped by principal.
//!
//! # Differences from Kafka
//!
//! - Kafka compares a binding's host with the client address as Java
//!   prints it; here both are parsed, so `::1` and `0:0:0:0:0:0:0:1` are
//!   the same host, and an IPv4-mapped IPv6 client (`::ffff:10.0.0.1`, as a
//!   dual-stack socket reports it) is the IPv4 host Java would see.
//! - Kafka stores a host that is not an address (`host1`), which can then
//!   never apply; [`AclBinding::validate`] refuses it. It also refuses a
//!   principal with an empty type or name (Kafka needs only a colon), and
//!   names, principals and hosts past the limits below.
//! - For `authorized_operations`, a transactional id lists `WRITE` and
//!   `DESCRIBE`, as Kafka's `AclEntry.supportedOperations` does (it does
//!   not list `TWO_PHASE_COMMIT`, though bindings may grant it).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::str::FromStr;
use std::sync::Arc;

use crate::principal::KafkaPrincipal;

/// The only name a `CLUSTER` binding may have: Kafka has one cluster
/// resource, and the broker only ever asks about it by this name.
pub const CLUSTER_RESOURCE_NAME: &str = "kafka-cluster";

/// A literal resource name that matches every resource of its type.
pub const WILDCARD_RESOURCE_NAME: &str = "*";

/// A binding principal that matches every client, whatever its type.
pub const WILDCARD_PRINCIPAL: &str = "User:*";

/// A binding host that matches every client address.
pub const WILDCARD_HOST: &str = "*";

/// The longest resource name a binding may have. Topic names stop at 249
/// bytes; group and transactional ids longer than this can still be
/// covered by a prefix.
pub const ACL_RESOURCE_NAME_BYTES_MAX: usize = 1024;

/// The longest principal a binding may name (`User:` and a SASL user name
/// or a certificate's mapped distinguished name).
pub const ACL_PRINCIPAL_BYTES_MAX: usize = 1024;

/// The longest host a binding may name; the longest IP address text is 45
/// bytes.
pub const ACL_HOST_BYTES_MAX: usize = 64;

/// Declares one of Kafka's ACL enums with its wire codes and names.
macro_rules! kafka_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident, described as $what:literal {
            $( $(#[$variant_meta:meta])* $variant:ident = $code:literal, $kafka_name:literal; )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$variant_meta])* $variant, )+
        }

        impl $name {
            /// Every value, in the order of their codes.
            pub const VALUES: &'static [$name] = &[$($name::$variant),+];

            /// The value's code on the wire (an INT8 in Kafka's ACL
            /// requests).
            pub const fn code(self) -> i8 {
                match self {
                    $($name::$variant => $code,)+
                }
            }

            /// The value with wire code `code`; `Unknown` for a code this
            /// crate does not know, as Kafka's `fromCode` answers.
            pub const fn from_code(code: i8) -> Self {
                match code {
                    $($code => $name::$variant,)+
                    _ => $name::Unknown,
                }
            }

            /// Kafka's name of the value, as its Java enum prints it.
            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $kafka_name,)+
                }
            }

            /// Parses a name as Kafka's tools accept it, in any case: the
            /// Java name (`TRANSACTIONAL_ID`), the same without underscores
            /// (`TransactionalId`, as `kafka-acls.sh` prints), or with
            /// hyphens (`transactional-id`, as its options are spelled).
            /// `Unknown` is never parsed.
            pub fn parse(text: &str) -> Result<Self, AclParseError> {
                let wanted = normalize_name(text);
                Self::VALUES
                    .iter()
                    .copied()
                    .filter(|value| *value != $name::Unknown)
                    .find(|value| name_matches(value.name(), &wanted))
                    .ok_or_else(|| AclParseError {
                        kind: $what,
                        input: text.to_owned(),
                    })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $name {
            type Err = AclParseError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::parse(text)
            }
        }
    };
}

kafka_enum! {
    /// The type of resource a binding is on (Kafka's `ResourceType`).
    pub enum ResourceType, described as "resource type" {
        /// A code this crate does not know.
        Unknown = 0, "UNKNOWN";
        /// In a filter, any resource type.
        Any = 1, "ANY";
        /// A topic.
        Topic = 2, "TOPIC";
        /// A consumer, share or streams group.
        Group = 3, "GROUP";
        /// The cluster itself, always named [`CLUSTER_RESOURCE_NAME`].
        Cluster = 4, "CLUSTER";
        /// A producer's transactional id.
        TransactionalId = 5, "TRANSACTIONAL_ID";
        /// A delegation token.
        DelegationToken = 6, "DELEGATION_TOKEN";
        /// A user, for delegation tokens made on its behalf.
        User = 7, "USER";
    }
}

kafka_enum! {
    /// How a binding's resource name is read (Kafka's `PatternType`).
    /// `Any` and `Match` appear only in filters, never in a stored binding.
    pub enum PatternType, described as "pattern type" {
        /// A code this crate does not know.
        Unknown = 0, "UNKNOWN";
        /// In a filter, any pattern type, with the name compared exactly.
        Any = 1, "ANY";
        /// In a filter, every binding that applies to the filter's
        /// resource name: its literal, the literal `*`, and the prefixes
        /// of it.
        Match = 2, "MATCH";
        /// The name itself, or every name when it is `*`.
        Literal = 3, "LITERAL";
        /// Every name that starts with it.
        Prefixed = 4, "PREFIXED";
    }
}

kafka_enum! {
    /// What a binding allows or denies (Kafka's `AclOperation`).
    pub enum AclOperation, described as "operation" {
        /// A code this crate does not know.
        Unknown = 0, "UNKNOWN";
        /// In a filter, any operation.
        Any = 1, "ANY";
        /// Every operation.
        All = 2, "ALL";
        /// Read (fetch, join a group, commit offsets).
        Read = 3, "READ";
        /// Write (produce).
        Write = 4, "WRITE";
        /// Create (topics, partitions).
        Create = 5, "CREATE";
        /// Delete (topics, records, groups).
        Delete = 6, "DELETE";
        /// Alter (partitions, ACLs, replicas).
        Alter = 7, "ALTER";
        /// Describe (metadata, offsets, groups).
        Describe = 8, "DESCRIBE";
        /// Broker-to-broker and controller actions.
        ClusterAction = 9, "CLUSTER_ACTION";
        /// Describe configurations.
        DescribeConfigs = 10, "DESCRIBE_CONFIGS";
        /// Alter configurations.
        AlterConfigs = 11, "ALTER_CONFIGS";
        /// Idempotent produce on the cluster.
        IdempotentWrite = 12, "IDEMPOTENT_WRITE";
        /// Create delegation tokens for a user.
        CreateTokens = 13, "CREATE_TOKENS";
        /// Describe a user's delegation tokens.
        DescribeTokens = 14, "DESCRIBE_TOKENS";
        /// Two-phase commit with a transactional id (KIP-939).
        TwoPhaseCommit = 15, "TWO_PHASE_COMMIT";
    }
}

kafka_enum! {
    /// Whether a binding allows or denies (Kafka's `AclPermissionType`).
    pub enum AclPermissionType, described as "permission type" {
        /// A code this crate does not know.
        Unknown = 0, "UNKNOWN";
        /// In a filter, either permission.
        Any = 1, "ANY";
        /// Denies; any applying DENY wins over every ALLOW.
        Deny = 2, "DENY";
        /// Allows.
        Allow = 3, "ALLOW";
    }
}

/// Upper-cases a name and reads hyphens as underscores, so that every
/// spelling Kafka's tools use compares with the Java name.
fn normalize_name(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '-' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

/// Whether a normalized name is `kafka_name` with or without its
/// underscores, as Kafka's `SecurityUtils` looks names up.
fn name_matches(kafka_name: &str, wanted: &str) -> bool {
    kafka_name == wanted || kafka_name.chars().filter(|c| *c != '_').eq(wanted.chars())
}

impl ResourceType {
    /// The operations Kafka reports in a resource's
    /// `authorized_operations` (Metadata, DescribeCluster, DescribeGroups),
    /// as its `AclEntry.supportedOperations`, in code order; empty for
    /// `Unknown` and `Any`.
    pub const fn supported_operations(self) -> &'static [AclOperation] {
        use AclOperation as Op;
        match self {
            ResourceType::Topic => &[
                Op::Read,
                Op::Write,
                Op::Create,
                Op::Delete,
                Op::Alter,
                Op::Describe,
                Op::DescribeConfigs,
                Op::AlterConfigs,
            ],
            ResourceType::Group => &[
                Op::Read,
                Op::Delete,
                Op::Describe,
                Op::DescribeConfigs,
                Op::AlterConfigs,
            ],
            ResourceType::Cluster => &[
                Op::Create,
                Op::Alter,
                Op::Describe,
                Op::ClusterAction,
                Op::DescribeConfigs,
                Op::AlterConfigs,
                Op::IdempotentWrite,
            ],
            ResourceType::TransactionalId => &[Op::Write, Op::Describe],
            ResourceType::DelegationToken => &[Op::Describe],
            ResourceType::User => &[Op::CreateTokens, Op::DescribeTokens],
            ResourceType::Unknown | ResourceType::Any => &[],
        }
    }
}

/// A name that is not one of an ACL enum's values.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("unknown {kind} `{input}`")]
pub struct AclParseError {
    /// Which enum was parsed (`resource type`, `operation`, ...).
    pub kind: &'static str,
    /// The text that is none of its names.
    pub input: String,
}

/// Why a binding may not be stored. The messages of the checks Kafka makes
/// too are Kafka's.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum AclError {
    /// `UNKNOWN` or `ANY`: a filter's value, not a binding's.
    #[error("Invalid resourceType {0}")]
    InvalidResourceType(ResourceType),
    /// Not `LITERAL` or `PREFIXED`.
    #[error("Invalid patternType {0}")]
    InvalidPatternType(PatternType),
    /// `UNKNOWN` or `ANY`.
    #[error("Invalid operation {0}")]
    InvalidOperation(AclOperation),
    /// Not `ALLOW` or `DENY`.
    #[error("Invalid permissionType {0}")]
    InvalidPermissionType(AclPermissionType),
    /// An empty resource name.
    #[error("Resource name should not be empty")]
    EmptyResourceName,
    /// A `CLUSTER` binding not on [`CLUSTER_RESOURCE_NAME`].
    #[error("The only valid name for the CLUSTER resource is kafka-cluster")]
    InvalidClusterResourceName {
        /// The name the binding has.
        name: String,
    },
    /// A principal that is not `Type:name`, with both parts non-empty.
    #[error("Could not parse principal from `{principal}` (expected `Type:name`)")]
    InvalidPrincipal {
        /// The principal as given.
        principal: String,
    },
    /// A host that is neither `*` nor an IP address.
    #[error("Invalid host `{host}`: expected `*` or an IP address")]
    InvalidHost {
        /// The host as given.
        host: String,
    },
    /// A resource name, principal or host past its limit.
    #[error("{field} is {len_bytes} bytes, more than {bytes_max}")]
    TooLong {
        /// Which field (`resource name`, `principal`, `host`).
        field: &'static str,
        /// Its length.
        len_bytes: usize,
        /// Its limit.
        bytes_max: usize,
    },
}

/// One ACL: a resource pattern and an access control entry, as Kafka's
/// `AclBinding` and as CreateAcls and DescribeAcls carry it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AclBinding {
    /// The type of resource.
    pub resource_type: ResourceType,
    /// The name, prefix, or `*` (see [`PatternType`]).
    pub resource_name: String,
    /// How the name is read: `Literal` or `Prefixed`.
    pub pattern_type: PatternType,
    /// Whom it applies to, as `Type:name` (`User:alice`), or
    /// [`WILDCARD_PRINCIPAL`].
    pub principal: String,
    /// From where: an IP address, or [`WILDCARD_HOST`].
    pub host: String,
    /// The operation.
    pub operation: AclOperation,
    /// Allow or deny.
    pub permission: AclPermissionType,
}

/// Whom an indexed binding applies to.
#[derive(Clone, Debug)]
enum PrincipalMatch {
    /// `User:*`: every client.
    Any,
    /// One principal, type and name.
    Exact {
        principal_type: String,
        name: String,
    },
}

/// From where an indexed binding applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HostMatch {
    /// `*`.
    Any,
    /// One address, canonical (an IPv4-mapped IPv6 address as IPv4).
    Ip(IpAddr),
    /// Nothing: a host that does not parse (never stored; see
    /// [`AclBinding::index_parts`]).
    Never,
}

/// Splits `Type:name` at its first colon, as Kafka parses principals,
/// requiring both parts.
fn split_principal(text: &str) -> Option<(&str, &str)> {
    let (principal_type, name) = text.split_once(':')?;
    (!principal_type.is_empty() && !name.is_empty()).then_some((principal_type, name))
}

/// Parses a principal written `Type:name` (`User:alice`, `Group:ops`), as
/// bindings and `super.users` name them.
pub fn parse_principal(text: &str) -> Result<KafkaPrincipal, AclError> {
    split_principal(text)
        .map(|(principal_type, name)| KafkaPrincipal {
            principal_type: principal_type.to_owned(),
            name: name.to_owned(),
        })
        .ok_or_else(|| AclError::InvalidPrincipal {
            principal: text.to_owned(),
        })
}

/// Reads a binding's host: `*` or an IP address.
fn parse_host(host: &str) -> Option<HostMatch> {
    if host == WILDCARD_HOST {
        return Some(HostMatch::Any);
    }
    host.parse::<IpAddr>()
        .ok()
        .map(|ip| HostMatch::Ip(ip.to_canonical()))
}

/// Refuses `text` when it is longer than `bytes_max`.
fn check_len(field: &'static str, text: &str, bytes_max: usize) -> Result<(), AclError> {
    if text.len() > bytes_max {
        return Err(AclError::TooLong {
            field,
            len_bytes: text.len(),
            bytes_max,
        });
    }
    Ok(())
}

impl AclBinding {
    /// Checks that the binding may be stored: a concrete resource type,
    /// operation and permission; a `LITERAL` or `PREFIXED` pattern; a
    /// non-empty resource name ([`CLUSTER_RESOURCE_NAME`] for `CLUSTER`); a
    /// `Type:name` principal; a host that is `*` or an IP address; and
    /// every string within its limit.
    pub fn validate(&self) -> Result<(), AclError> {
        match self.resource_type {
            ResourceType::Unknown | ResourceType::Any => {
                return Err(AclError::InvalidResourceType(self.resource_type));
            }
            _ => {}
        }
        match self.pattern_type {
            PatternType::Literal | PatternType::Prefixed => {}
            other => return Err(AclError::InvalidPatternType(other)),
        }
        match self.operation {
            AclOperation::Unknown | AclOperation::Any => {
                return Err(AclError::InvalidOperation(self.operation));
            }
            _ => {}
        }
        match self.permission {
            AclPermissionType::Allow | AclPermissionType::Deny => {}
            other => return Err(AclError::InvalidPermissionType(other)),
        }
        if self.resource_name.is_empty() {
            return Err(AclError::EmptyResourceName);
        }
        check_len(
            "resource name",
            &self.resource_name,
            ACL_RESOURCE_NAME_BYTES_MAX,
        )?;
        if self.resource_type == ResourceType::Cluster
            && self.resource_name != CLUSTER_RESOURCE_NAME
        {
            return Err(AclError::InvalidClusterResourceName {
                name: self.resource_name.clone(),
            });
        }
        check_len("principal", &self.principal, ACL_PRINCIPAL_BYTES_MAX)?;
        if split_principal(&self.principal).is_none() {
            return Err(AclError::InvalidPrincipal {
                principal: self.principal.clone(),
            });
        }
        check_len("host", &self.host, ACL_HOST_BYTES_MAX)?;
        if parse_host(&self.host).is_none() {
            return Err(AclError::InvalidHost {
                host: self.host.clone(),
            });
        }
        Ok(())
    }

    /// The filter that matches this binding and no other.
    pub fn to_filter(&self) -> AclBindingFilter {
        AclBindingFilter {
            resource_type: self.resource_type,
            resource_name: Some(self.resource_name.clone()),
            pattern_type: self.pattern_type,
            principal: Some(self.principal.clone()),
            host: Some(self.host.clone()),
            operation: self.operation,
            permission: self.permission,
        }
    }

    /// The principal and host as the index matches them. Infallible so
    /// that rebuilding the index cannot fail; only validated bindings reach
    /// the index, and any other would get a principal and host that no
    /// authenticated client has.
    fn index_parts(&self) -> (PrincipalMatch, HostMatch) {
        let principal = if self.principal == WILDCARD_PRINCIPAL {
            PrincipalMatch::Any
        } else {
            let (principal_type, name) =
                split_principal(&self.principal).unwrap_or((&self.principal, ""));
            PrincipalMatch::Exact {
                principal_type: principal_type.to_owned(),
                name: name.to_owned(),
            }
        };
        let host = parse_host(&self.host).unwrap_or(HostMatch::Never);
        (principal, host)
    }
}

/// Kafka's `AclBinding.toString`, which its tools and logs print.
impl fmt::Display for AclBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "(pattern=ResourcePattern(resourceType={}, name={}, patternType={}), \
             entry=(principal={}, host={}, operation={}, permissionType={}))",
            self.resource_type,
            self.resource_name,
            self.pattern_type,
            self.principal,
            self.host,
            self.operation,
            self.permission,
        )
    }
}

/// A selection of bindings, for DescribeAcls and DeleteAcls (Kafka's
/// `AclBindingFilter`). `None` and the enums' `Any` match anything; the
/// principal and host, when given, are compared as strings, so `User:*`
/// selects only bindings for `User:*`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AclBindingFilter {
    /// A resource type, or `Any`.
    pub resource_type: ResourceType,
    /// A resource name, or `None` for any; read as `pattern_type` says.
    pub resource_name: Option<String>,
    /// `Any` (the name compared exactly, whatever the pattern type),
    /// `Match` (every binding that applies to the name), or `Literal` or
    /// `Prefixed` (that pattern type, the name compared exactly).
    pub pattern_type: PatternType,
    /// A principal (`User:alice`), or `None` for any.
    pub principal: Option<String>,
    /// A host, or `None` for any.
    pub host: Option<String>,
    /// An operation, or `Any`.
    pub operation: AclOperation,
    /// A permission, or `Any`.
    pub permission: AclPermissionType,
}

impl AclBindingFilter {
    /// The filter that matches every binding.
    pub const ANY: AclBindingFilter = AclBindingFilter {
        resource_type: ResourceType::Any,
        resource_name: None,
        pattern_type: PatternType::Any,
        principal: None,
        host: None,
        operation: AclOperation::Any,
        permission: AclPermissionType::Any,
    };

    /// Whether any of the filter's enums is `Unknown`, which Kafka's
    /// DescribeAcls and DeleteAcls refuse.
    pub fn is_unknown(&self) -> bool {
        self.resource_type == ResourceType::Unknown
            || self.pattern_type == PatternType::Unknown
            || self.operation == AclOperation::Unknown
            || self.permission == AclPermissionType::Unknown
    }

    /// Whether the filter selects `binding`, as Kafka's
    /// `AclBindingFilter.matches`.
    pub fn matches(&self, binding: &AclBinding) -> bool {
        self.matches_pattern(binding) && self.matches_entry(binding)
    }

    /// Kafka's `ResourcePatternFilter.matches`.
    fn matches_pattern(&self, binding: &AclBinding) -> bool {
        if self.resource_type != ResourceType::Any && self.resource_type != binding.resource_type {
            return false;
        }
        let any_pattern = matches!(self.pattern_type, PatternType::Any | PatternType::Match);
        if !any_pattern && self.pattern_type != binding.pattern_type {
            return false;
        }
        let Some(name) = &self.resource_name else {
            return true;
        };
        if self.pattern_type != PatternType::Match || binding.pattern_type == PatternType::Match {
            return *name == binding.resource_name;
        }
        match binding.pattern_type {
            PatternType::Literal => {
                *name == binding.resource_name || binding.resource_name == WILDCARD_RESOURCE_NAME
            }
            PatternType::Prefixed => name.starts_with(binding.resource_name.as_str()),
            // A stored binding has no other pattern type; Kafka throws here.
            _ => false,
        }
    }

    /// Kafka's `AccessControlEntryFilter.matches`.
    fn matches_entry(&self, binding: &AclBinding) -> bool {
        self.principal
            .as_ref()
            .is_none_or(|principal| *principal == binding.principal)
            && self.host.as_ref().is_none_or(|host| *host == binding.host)
            && (self.operation == AclOperation::Any || self.operation == binding.operation)
            && (self.permission == AclPermissionType::Any || self.permission == binding.permission)
    }
}

/// Kafka's `AclBindingFilter.toString`, with `<any>` for a missing string.
impl fmt::Display for AclBindingFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let any = |value: &Option<String>| value.clone().unwrap_or_else(|| "<any>".to_owned());
        write!(
            f,
            "(patternFilter=ResourcePattern(resourceType={}, name={}, patternType={}), \
             entryFilter=(principal={}, host={}, operation={}, permissionType={}))",
            self.resource_type,
            any(&self.resource_name),
            self.pattern_type,
            any(&self.principal),
            any(&self.host),
            self.operation,
            self.permission,
        )
    }
}

/// How the authorizer is configured, as Kafka's broker properties.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthorizerConfig {
    /// `super.users`: principals (`User:admin`) allowed everything.
    pub super_users: Vec<String>,
    /// `allow.everyone.if.no.acl.found`: whether a resource no binding
    /// applies to is open to everyone (Kafka's default: no).
    pub allow_everyone_if_no_acl_found: bool,
}

impl AuthorizerConfig {
    /// Reads a `super.users` value as Kafka does: principals separated by
    /// semicolons (certificate names hold commas), each trimmed, empty
    /// ones dropped.
    pub fn parse_super_users(value: &str) -> Vec<String> {
        value
            .split(';')
            .map(str::trim)
            .filter(|principal| !principal.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// The authorizer's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    /// The operation may go ahead.
    Allowed,
    /// It may not.
    Denied,
}

impl Decision {
    /// Whether it is [`Decision::Allowed`].
    pub fn is_allowed(self) -> bool {
        self == Decision::Allowed
    }
}

/// Why the authorizer decided as it did, for the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecisionReason<'a> {
    /// The client is a super user.
    SuperUser,
    /// This binding applied: a DENY, or (with no DENY applying) an ALLOW.
    MatchingAcl(&'a AclBinding),
    /// No binding applies to the resource at all, so
    /// `allow.everyone.if.no.acl.found` decided.
    NoAclFound,
    /// Bindings apply to the resource, but none to this client, host and
    /// operation.
    NoMatchingAcl,
}

impl fmt::Display for DecisionReason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecisionReason::SuperUser => f.write_str("SuperUser"),
            DecisionReason::MatchingAcl(binding) => write!(f, "MatchingAcl(acl={binding})"),
            DecisionReason::NoAclFound => f.write_str("NoAclFound"),
            DecisionReason::NoMatchingAcl => f.write_str("NoMatchingAcl"),
        }
    }
}

/// A decision and its reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Authorization<'a> {
    /// Allowed or denied.
    pub decision: Decision,
    /// Why.
    pub reason: DecisionReason<'a>,
}

/// Kafka's ACL authorizer over a set of bindings (see the module docs for
/// its rules). Build it from the bindings in the metadata, or keep it up
/// to date with [`Authorizer::add`] and [`Authorizer::remove`].
pub struct Authorizer {
    config: AuthorizerConfig,
    /// `super.users` by principal type, then name, so a check needs no
    /// allocation.
    super_users: HashMap<String, HashSet<String>>,
    /// Every binding, once, in order (resource type, then name).
    bindings: BTreeSet<Arc<AclBinding>>,
    index: Index,
}

impl fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorizer")
            .field("config", &self.config)
            .field("bindings", &self.bindings.len())
            .finish_non_exhaustive()
    }
}

impl Authorizer {
    /// An authorizer with `config` and `bindings` (duplicates kept once).
    /// Refuses a super user that is not `Type:name` and a binding that
    /// does not validate, rather than authorize with a set that is not
    /// what was written.
    pub fn new(
        config: AuthorizerConfig,
        bindings: impl IntoIterator<Item = AclBinding>,
    ) -> Result<Self, AclError> {
        let mut super_users: HashMap<String, HashSet<String>> = HashMap::new();
        for entry in &config.super_users {
            let principal = parse_principal(entry)?;
            super_users
                .entry(principal.principal_type)
                .or_default()
                .insert(principal.name);
        }
        let mut authorizer = Authorizer {
            config,
            super_users,
            bindings: BTreeSet::new(),
            index: Index::default(),
        };
        for binding in bindings {
            authorizer.add(binding)?;
        }
        Ok(authorizer)
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &AuthorizerConfig {
        &self.config
    }

    /// How many bindings it holds.
    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    /// Whether it holds no binding.
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    /// Adds a binding after validating it; `false` when it was already
    /// there (Kafka keeps each binding once).
    pub fn add(&mut self, binding: AclBinding) -> Result<bool, AclError> {
        binding.validate()?;
        if self.bindings.contains(&binding) {
            return Ok(false);
        }
        let binding = Arc::new(binding);
        self.index.insert(&binding);
        self.bindings.insert(binding);
        Ok(true)
    }

    /// Removes every binding `filter` matches and returns them, in order.
    /// The index is rebuilt from the rest, which is linear in their number.
    pub fn remove(&mut self, filter: &AclBindingFilter) -> Vec<AclBinding> {
        let mut removed = Vec::new();
        self.bindings.retain(|binding| {
            let matches = filter.matches(binding);
            if matches {
                removed.push(Arc::clone(binding));
            }
            !matches
        });
        if removed.is_empty() {
            return Vec::new();
        }
        let mut index = Index::default();
        for binding in &self.bindings {
            index.insert(binding);
        }
        // Dropping the old index leaves `removed` the only owner of each
        // removed binding, so each comes out without a copy.
        self.index = index;
        removed.into_iter().map(Arc::unwrap_or_clone).collect()
    }

    /// The bindings `filter` matches, in order (DescribeAcls).
    pub fn acls<'a>(
        &'a self,
        filter: &'a AclBindingFilter,
    ) -> impl Iterator<Item = &'a AclBinding> + 'a {
        self.iter().filter(move |binding| filter.matches(binding))
    }

    /// Every binding, in order.
    pub fn iter(&self) -> impl Iterator<Item = &AclBinding> {
        self.bindings.iter().map(|binding| &**binding)
    }

    /// Whether `principal`, connected from `host`, may do `operation` on
    /// the resource of type `resource_type` named `resource_name`.
    pub fn authorize(
        &self,
        principal: &KafkaPrincipal,
        host: IpAddr,
        operation: AclOperation,
        resource_type: ResourceType,
        resource_name: &str,
    ) -> Decision {
        self.authorize_with_reason(principal, host, operation, resource_type, resource_name)
            .decision
    }

    /// [`Authorizer::authorize`], with the reason for the audit log.
    pub fn authorize_with_reason(
        &self,
        principal: &KafkaPrincipal,
        host: IpAddr,
        operation: AclOperation,
        resource_type: ResourceType,
        resource_name: &str,
    ) -> Authorization<'_> {
        if self.is_super_user(principal) {
            return Authorization {
                decision: Decision::Allowed,
                reason: DecisionReason::SuperUser,
            };
        }
        let host = host.to_canonical();
        let mut resource_has_acls = false;
        let mut allow = None;
        let deny = self
            .index
            .for_each_bucket(resource_type, resource_name, |bucket| {
                resource_has_acls = true;
                for rule in bucket.rules_for(principal) {
                    match rule.decides(host, operation) {
                        Some(Decision::Denied) => return ControlFlow::Break(&*rule.binding),
                        Some(Decision::Allowed) => {
                            allow.get_or_insert(&*rule.binding);
                        }
                        None => {}
                    }
                }
                ControlFlow::Continue(())
            });
        let (decision, reason) = match (deny, allow) {
            (Some(binding), _) => (Decision::Denied, DecisionReason::MatchingAcl(binding)),
            (None, Some(binding)) => (Decision::Allowed, DecisionReason::MatchingAcl(binding)),
            (None, None) if !resource_has_acls => {
                let decision = if self.config.allow_everyone_if_no_acl_found {
                    Decision::Allowed
                } else {
                    Decision::Denied
                };
                (decision, DecisionReason::NoAclFound)
            }
            (None, None) => (Decision::Denied, DecisionReason::NoMatchingAcl),
        };
        Authorization { decision, reason }
    }

    /// Kafka's `authorized_operations` bit field for a resource (bit `n`
    /// set when the operation of code `n` is allowed), over the operations
    /// [`ResourceType::supported_operations`] lists for its type.
    pub fn authorized_operations(
        &self,
        principal: &KafkaPrincipal,
        host: IpAddr,
        resource_type: ResourceType,
        resource_name: &str,
    ) -> i32 {
        resource_type
            .supported_operations()
            .iter()
            .filter(|operation| {
                self.authorize(principal, host, **operation, resource_type, resource_name)
                    .is_allowed()
            })
            .fold(0, |bits, operation| bits | (1_i32 << operation.code()))
    }

    /// Whether `principal` is in `super.users`.
    fn is_super_user(&self, principal: &KafkaPrincipal) -> bool {
        self.super_users
            .get(&principal.principal_type)
            .is_some_and(|names| names.contains(&principal.name))
    }
}

/// One binding as the index checks it.
struct Rule {
    host: HostMatch,
    operation: AclOperation,
    permission: AclPermissionType,
    binding: Arc<AclBinding>,
}

impl Rule {
    /// What this binding decides for a request from `host` (canonical) for
    /// `operation`, or `None` when it does not apply. Its principal and
    /// resource already matched.
    fn decides(&self, host: IpAddr, operation: AclOperation) -> Option<Decision> {
        let host_applies = match self.host {
            HostMatch::Any => true,
            HostMatch::Ip(ip) => ip == host,
            HostMatch::Never => false,
        };
        if !host_applies {
            return None;
        }
        let decision = match self.permission {
            AclPermissionType::Allow => Decision::Allowed,
            AclPermissionType::Deny => Decision::Denied,
            AclPermissionType::Unknown | AclPermissionType::Any => return None,
        };
        let operation_applies = self.operation == AclOperation::All
            || self.operation == operation
            // Only an ALLOW implies another operation (StandardAuthorizer).
            || (decision == Decision::Allowed && allow_implies(self.operation, operation));
        operation_applies.then_some(decision)
    }
}

/// Whether an ALLOW of `granted` also allows `wanted` (other than `ALL`
/// and `wanted` itself), per Kafka's `AclOperation` docs.
fn allow_implies(granted: AclOperation, wanted: AclOperation) -> bool {
    use AclOperation as Op;
    match wanted {
        Op::Describe => matches!(granted, Op::Read | Op::Write | Op::Delete | Op::Alter),
        Op::DescribeConfigs => granted == Op::AlterConfigs,
        _ => false,
    }
}

/// The bindings of one resource pattern, by principal.
#[derive(Default)]
struct Bucket {
    /// Bindings for `User:*`.
    any_principal: Vec<Rule>,
    /// Bindings for one principal, by type, then name.
    by_principal: HashMap<String, HashMap<String, Vec<Rule>>>,
}

impl Bucket {
    fn insert(&mut self, principal: PrincipalMatch, rule: Rule) {
        match principal {
            PrincipalMatch::Any => self.any_principal.push(rule),
            PrincipalMatch::Exact {
                principal_type,
                name,
            } => self
                .by_principal
                .entry(principal_type)
                .or_default()
                .entry(name)
                .or_default()
                .push(rule),
        }
    }

    /// The bindings that apply to `principal`: its own and `User:*`'s.
    fn rules_for<'a>(&'a self, principal: &KafkaPrincipal) -> impl Iterator<Item = &'a Rule> {
        let own = self
            .by_principal
            .get(&principal.principal_type)
            .and_then(|names| names.get(&principal.name));
        self.any_principal.iter().chain(own.into_iter().flatten())
    }
}

/// The bindings of one resource type.
#[derive(Default)]
struct TypeIndex {
    /// Literal names, `*` among them.
    literal: HashMap<String, Bucket>,
    /// Prefixes.
    prefixed: RadixNode,
}

/// Every binding, by resource type (indexed by code), then pattern.
struct Index {
    by_type: [TypeIndex; ResourceType::VALUES.len()],
}

impl Default for Index {
    fn default() -> Self {
        Index {
            by_type: std::array::from_fn(|_| TypeIndex::default()),
        }
    }
}

impl Index {
    fn type_index(&self, resource_type: ResourceType) -> Option<&TypeIndex> {
        usize::try_from(resource_type.code())
            .ok()
            .and_then(|code| self.by_type.get(code))
    }

    fn insert(&mut self, binding: &Arc<AclBinding>) {
        let Some(type_index) = usize::try_from(binding.resource_type.code())
            .ok()
            .and_then(|code| self.by_type.get_mut(code))
        else {
            return;
        };
        let bucket = match binding.pattern_type {
            PatternType::Literal => type_index
                .literal
                .entry(binding.resource_name.clone())
                .or_default(),
            PatternType::Prefixed => type_index
                .prefixed
                .bucket_mut(binding.resource_name.as_bytes()),
            // Never stored (validate); such a binding could apply to nothing.
            PatternType::Unknown | PatternType::Any | PatternType::Match => return,
        };
        let (principal, host) = binding.index_parts();
        bucket.insert(
            principal,
            Rule {
                host,
                operation: binding.operation,
                permission: binding.permission,
                binding: Arc::clone(binding),
            },
        );
    }

    /// Calls `visit` with each pattern's bindings that apply to the named
    /// resource (its literal, the literal `*`, its prefixes) until `visit`
    /// breaks, and returns what it broke with.
    fn for_each_bucket<'a, B>(
        &'a self,
        resource_type: ResourceType,
        resource_name: &str,
        mut visit: impl FnMut(&'a Bucket) -> ControlFlow<B>,
    ) -> Option<B> {
        let type_index = self.type_index(resource_type)?;
        match type_index.walk(resource_name, &mut visit) {
            ControlFlow::Break(value) => Some(value),
            ControlFlow::Continue(()) => None,
        }
    }
}

impl TypeIndex {
    /// [`Index::for_each_bucket`] within one resource type.
    fn walk<'a, B>(
        &'a self,
        resource_name: &str,
        visit: &mut impl FnMut(&'a Bucket) -> ControlFlow<B>,
    ) -> ControlFlow<B> {
        if let Some(bucket) = self.literal.get(resource_name) {
            visit(bucket)?;
        }
        if resource_name != WILDCARD_RESOURCE_NAME
            && let Some(bucket) = self.literal.get(WILDCARD_RESOURCE_NAME)
        {
            visit(bucket)?;
        }
        self.prefixed
            .for_each_prefix(resource_name.as_bytes(), visit)
    }
}

/// A radix tree of prefixes: each node adds `label` to its parent's path,
/// and holds the bindings of the prefix its path spells. Labels are bytes,
/// since a split may fall inside a character; a name matches a prefix
/// exactly when its bytes start with the prefix's.
#[derive(Default)]
struct RadixNode {
    /// Empty only at the root.
    label: Box<[u8]>,
    /// Sorted by the first byte of their labels, no two alike.
    children: Vec<RadixNode>,
    bucket: Option<Box<Bucket>>,
}

impl RadixNode {
    fn child_slot(&self, byte: u8) -> Result<usize, usize> {
        self.children
            .binary_search_by_key(&byte, |child| child.label.first().copied().unwrap_or(0))
    }

    /// The bucket of the prefix `key` (relative to this node), made if new.
    fn bucket_mut(&mut self, key: &[u8]) -> &mut Bucket {
        let Some(&first) = key.first() else {
            return self.bucket.get_or_insert_with(Box::default);
        };
        let slot = match self.child_slot(first) {
            Ok(slot) => slot,
            Err(slot) => {
                self.children.insert(
                    slot,
                    RadixNode {
                        label: key.into(),
                        ..RadixNode::default()
                    },
                );
                slot
            }
        };
        // `slot` came from the search or the insertion just above.
        let child = &mut self.children[slot];
        let common = child
            .label
            .iter()
            .zip(key)
            .take_while(|(a, b)| a == b)
            .count();
        if common < child.label.len() {
            // The key leaves the child's label part-way: split the label
            // there, the child's old node going below the shared part.
            let shared: Box<[u8]> = child.label[..common].into();
            let mut below = std::mem::replace(
                child,
                RadixNode {
                    label: shared,
                    ..RadixNode::default()
                },
            );
            below.label = below.label[common..].into();
            child.children.push(below);
        }
        child.bucket_mut(&key[common..])
    }

    /// Calls `visit` with the bucket of every stored prefix of `name`,
    /// shortest first: one step per node on the path, never a scan.
    fn for_each_prefix<'a, B>(
        &'a self,
        name: &[u8],
        visit: &mut impl FnMut(&'a Bucket) -> ControlFlow<B>,
    ) -> ControlFlow<B> {
        let mut node = self;
        let mut rest = name;
        loop {
            if let Some(bucket) = &node.bucket {
                visit(bucket)?;
            }
            let Some(&first) = rest.first() else {
                return ControlFlow::Continue(());
            };
            let Some(child) = node
                .child_slot(first)
                .ok()
                .and_then(|slot| node.children.get(slot))
            else {
                return ControlFlow::Continue(());
            };
            let Some(after) = rest.strip_prefix(&*child.label) else {
                return ControlFlow::Continue(());
            };
            node = child;
            rest = after;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    const HOST: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const OTHER_HOST: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    fn binding(
        resource_type: ResourceType,
        name: &str,
        pattern_type: PatternType,
        principal: &str,
        host: &str,
        operation: AclOperation,
        permission: AclPermissionType,
    ) -> AclBinding {
        AclBinding {
            resource_type,
            resource_name: name.to_owned(),
            pattern_type,
            principal: principal.to_owned(),
            host: host.to_owned(),
            operation,
            permission,
        }
    }

    fn allow(name: &str, principal: &str, operation: AclOperation) -> AclBinding {
        binding(
            ResourceType::Topic,
            name,
            PatternType::Literal,
            principal,
            "*",
            operation,
            AclPermissionType::Allow,
        )
    }

    fn deny(name: &str, principal: &str, operation: AclOperation) -> AclBinding {
        AclBinding {
            permission: AclPermissionType::Deny,
            ..allow(name, principal, operation)
        }
    }

    fn prefixed(mut binding: AclBinding) -> AclBinding {
        binding.pattern_type = PatternType::Prefixed;
        binding
    }

    fn with_acls(bindings: Vec<AclBinding>) -> Authorizer {
        Authorizer::new(AuthorizerConfig::default(), bindings).expect("valid bindings")
    }

    fn alice() -> KafkaPrincipal {
        KafkaPrincipal::user("alice")
    }

    fn topic(authorizer: &Authorizer, who: &KafkaPrincipal, op: AclOperation, name: &str) -> bool {
        authorizer
            .authorize(who, HOST, op, ResourceType::Topic, name)
            .is_allowed()
    }

    // -- codes and names --

    #[test]
    fn codes_are_kafkas() {
        let resource_types: Vec<_> = ResourceType::VALUES.iter().map(|v| v.code()).collect();
        assert_eq!(resource_types, (0..=7).collect::<Vec<i8>>());
        assert_eq!(ResourceType::TransactionalId.code(), 5);
        assert_eq!(ResourceType::User.code(), 7);
        assert_eq!(PatternType::Literal.code(), 3);
        assert_eq!(PatternType::Prefixed.code(), 4);
        assert_eq!(PatternType::Match.code(), 2);
        assert_eq!(AclOperation::IdempotentWrite.code(), 12);
        assert_eq!(AclOperation::TwoPhaseCommit.code(), 15);
        assert_eq!(AclOperation::VALUES.len(), 16);
        assert_eq!(AclPermissionType::Deny.code(), 2);
        assert_eq!(AclPermissionType::Allow.code(), 3);
        for value in AclOperation::VALUES {
            assert_eq!(AclOperation::from_code(value.code()), *value);
        }
        for value in PatternType::VALUES {
            assert_eq!(PatternType::from_code(value.code()), *value);
        }
        assert_eq!(AclOperation::from_code(16), AclOperation::Unknown);
        assert_eq!(ResourceType::from_code(-1), ResourceType::Unknown);
        assert_eq!(AclPermissionType::from_code(4), AclPermissionType::Unknown);
    }

    #[test]
    fn names_parse_in_every_kafka_spelling() {
        for (text, expected) in [
            ("topic", ResourceType::Topic),
            ("TOPIC", ResourceType::Topic),
            ("Group", ResourceType::Group),
            ("cluster", ResourceType::Cluster),
            ("transactional-id", ResourceType::TransactionalId),
            ("TransactionalId", ResourceType::TransactionalId),
            ("TRANSACTIONAL_ID", ResourceType::TransactionalId),
            ("delegation-token", ResourceType::DelegationToken),
            ("user", ResourceType::User),
            ("any", ResourceType::Any),
        ] {
            assert_eq!(text.parse::<ResourceType>(), Ok(expected), "{text}");
        }
        for (text, expected) in [
            ("Read", AclOperation::Read),
            ("read", AclOperation::Read),
            ("READ", AclOperation::Read),
            ("IdempotentWrite", AclOperation::IdempotentWrite),
            ("idempotent-write", AclOperation::IdempotentWrite),
            ("IDEMPOTENT_WRITE", AclOperation::IdempotentWrite),
            ("ClusterAction", AclOperation::ClusterAction),
            ("describe-configs", AclOperation::DescribeConfigs),
            ("TwoPhaseCommit", AclOperation::TwoPhaseCommit),
            ("All", AclOperation::All),
        ] {
            assert_eq!(AclOperation::parse(text), Ok(expected), "{text}");
        }
        for (text, expected) in [
            ("literal", PatternType::Literal),
            ("PREFIXED", PatternType::Prefixed),
            ("match", PatternType::Match),
            ("Any", PatternType::Any),
        ] {
            assert_eq!(PatternType::parse(text), Ok(expected), "{text}");
        }
        assert_eq!(
            AclPermissionType::parse("allow"),
            Ok(AclPermissionType::Allow)
        );
        assert_eq!(
            AclPermissionType::parse("Deny"),
            Ok(AclPermissionType::Deny)
        );
    }

    #[test]
    fn unknown_and_misspelled_names_are_refused() {
        for text in [
            "unknown",
            "",
            "topics",
            "transactional id",
            "trans_actional_id",
        ] {
            assert!(ResourceType::parse(text).is_err(), "{text}");
        }
        for text in [
            "UNKNOWN",
            "idempotent write",
            "IDEMPOTENTWRITES",
            "read,write",
        ] {
            assert!(AclOperation::parse(text).is_err(), "{text}");
        }
        assert_eq!(
            PatternType::parse("suffixed"),
            Err(AclParseError {
                kind: "pattern type",
                input: "suffixed".to_owned(),
            })
        );
    }

    #[test]
    fn supported_operations_are_kafkas_lists() {
        use AclOperation as Op;
        assert_eq!(
            ResourceType::Group.supported_operations(),
            &[
                Op::Read,
                Op::Delete,
                Op::Describe,
                Op::DescribeConfigs,
                Op::AlterConfigs
            ]
        );
        assert_eq!(
            ResourceType::TransactionalId.supported_operations(),
            &[Op::Write, Op::Describe]
        );
        assert_eq!(ResourceType::Topic.supported_operations().len(), 8);
        assert_eq!(ResourceType::Cluster.supported_operations().len(), 7);
        assert!(ResourceType::Any.supported_operations().is_empty());
    }

    // -- validation --

    #[test]
    fn valid_bindings_validate() {
        allow("orders", "User:alice", AclOperation::Read)
            .validate()
            .expect("literal");
        allow("*", "User:*", AclOperation::All)
            .validate()
            .expect("wildcards");
        prefixed(allow("team-", "Group:ops", AclOperation::Write))
            .validate()
            .expect("prefixed, another principal type");
        let mut cluster = allow(CLUSTER_RESOURCE_NAME, "User:a", AclOperation::Alter);
        cluster.resource_type = ResourceType::Cluster;
        cluster.validate().expect("cluster");
        for host in ["10.0.0.1", "::1", "0:0:0:0:0:0:0:1", "fe80::1"] {
            AclBinding {
                host: host.to_owned(),
                ..allow("t", "User:a", AclOperation::Read)
            }
            .validate()
            .expect(host);
        }
    }

    #[test]
    fn invalid_bindings_are_refused_with_kafkas_reason() {
        let base = allow("orders", "User:alice", AclOperation::Read);
        let with = |change: fn(&mut AclBinding)| {
            let mut binding = base.clone();
            change(&mut binding);
            binding
        };
        let long_name = "x".repeat(ACL_RESOURCE_NAME_BYTES_MAX + 1);
        let long_host = "1".repeat(ACL_HOST_BYTES_MAX + 1);
        let invalid_principal = |principal: &str| AclError::InvalidPrincipal {
            principal: principal.to_owned(),
        };
        let cases = [
            (
                with(|b| b.resource_type = ResourceType::Any),
                AclError::InvalidResourceType(ResourceType::Any),
            ),
            (
                with(|b| b.resource_type = ResourceType::Unknown),
                AclError::InvalidResourceType(ResourceType::Unknown),
            ),
            (
                with(|b| b.pattern_type = PatternType::Match),
                AclError::InvalidPatternType(PatternType::Match),
            ),
            (
                with(|b| b.pattern_type = PatternType::Any),
                AclError::InvalidPatternType(PatternType::Any),
            ),
            (
                with(|b| b.operation = AclOperation::Any),
                AclError::InvalidOperation(AclOperation::Any),
            ),
            (
                with(|b| b.permission = AclPermissionType::Any),
                AclError::InvalidPermissionType(AclPermissionType::Any),
            ),
            (
                with(|b| b.resource_name.clear()),
                AclError::EmptyResourceName,
            ),
            (
                with(|b| {
                    b.resource_type = ResourceType::Cluster;
                    b.resource_name = "*".to_owned();
                }),
                AclError::InvalidClusterResourceName {
                    name: "*".to_owned(),
                },
            ),
            (
                with(|b| b.principal = "alice".to_owned()),
                invalid_principal("alice"),
            ),
            (
                with(|b| b.principal = "User:".to_owned()),
                invalid_principal("User:"),
            ),
            (
                with(|b| b.principal = ":alice".to_owned()),
                invalid_principal(":alice"),
            ),
            (
                with(|b| b.host = "host1".to_owned()),
                AclError::InvalidHost {
                    host: "host1".to_owned(),
                },
            ),
            (
                AclBinding {
                    resource_name: long_name,
                    ..base.clone()
                },
                AclError::TooLong {
                    field: "resource name",
                    len_bytes: ACL_RESOURCE_NAME_BYTES_MAX + 1,
                    bytes_max: ACL_RESOURCE_NAME_BYTES_MAX,
                },
            ),
            (
                AclBinding {
                    host: long_host,
                    ..base.clone()
                },
                AclError::TooLong {
                    field: "host",
                    len_bytes: ACL_HOST_BYTES_MAX + 1,
                    bytes_max: ACL_HOST_BYTES_MAX,
                },
            ),
        ];
        for (binding, expected) in cases {
            assert_eq!(binding.validate(), Err(expected), "{binding}");
        }
        assert_eq!(
            AclError::InvalidClusterResourceName {
                name: "x".to_owned()
            }
            .to_string(),
            "The only valid name for the CLUSTER resource is kafka-cluster"
        );
        let mut authorizer = with_acls(Vec::new());
        assert!(
            authorizer
                .add(AclBinding {
                    host: "h".to_owned(),
                    ..base
                })
                .is_err()
        );
        assert!(authorizer.is_empty());
    }

    #[test]
    fn bad_super_user_is_refused() {
        let config = AuthorizerConfig {
            super_users: vec!["admin".to_owned()],
            allow_everyone_if_no_acl_found: false,
        };
        assert!(matches!(
            Authorizer::new(config, Vec::new()),
            Err(AclError::InvalidPrincipal { .. })
        ));
    }

    #[test]
    fn super_users_parse_as_kafka_reads_them() {
        assert_eq!(
            AuthorizerConfig::parse_super_users(" User:Bob; User:CN=a,O=b ;;"),
            vec!["User:Bob".to_owned(), "User:CN=a,O=b".to_owned()]
        );
    }

    #[test]
    fn binding_prints_as_kafka() {
        assert_eq!(
            allow("orders", "User:alice", AclOperation::Read).to_string(),
            "(pattern=ResourcePattern(resourceType=TOPIC, name=orders, patternType=LITERAL), \
             entry=(principal=User:alice, host=*, operation=READ, permissionType=ALLOW))"
        );
        assert!(AclBindingFilter::ANY.to_string().contains("name=<any>"));
    }

    // -- the authorizer --

    #[test]
    fn super_user_is_allowed_despite_deny_all() {
        let config = AuthorizerConfig {
            super_users: vec!["User:admin".to_owned()],
            allow_everyone_if_no_acl_found: false,
        };
        let authorizer =
            Authorizer::new(config, vec![deny("*", "User:*", AclOperation::All)]).expect("valid");
        let admin = KafkaPrincipal::user("admin");
        let decision = authorizer.authorize_with_reason(
            &admin,
            HOST,
            AclOperation::Write,
            ResourceType::Topic,
            "orders",
        );
        assert_eq!(decision.decision, Decision::Allowed);
        assert_eq!(decision.reason, DecisionReason::SuperUser);
        assert_eq!(
            authorizer.authorized_operations(&admin, HOST, ResourceType::Cluster, "kafka-cluster"),
            (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12)
        );
        // The same name under another principal type is not the super user.
        let group_admin = KafkaPrincipal {
            principal_type: "Group".to_owned(),
            name: "admin".to_owned(),
        };
        assert!(!topic(
            &authorizer,
            &group_admin,
            AclOperation::Write,
            "orders"
        ));
        assert!(!topic(&authorizer, &alice(), AclOperation::Write, "orders"));
    }

    #[test]
    fn deny_wins_over_allow() {
        let authorizer = with_acls(vec![
            allow("orders", "User:*", AclOperation::All),
            deny("orders", "User:alice", AclOperation::Read),
        ]);
        let decision = authorizer.authorize_with_reason(
            &alice(),
            HOST,
            AclOperation::Read,
            ResourceType::Topic,
            "orders",
        );
        assert_eq!(decision.decision, Decision::Denied);
        assert_eq!(
            decision.reason,
            DecisionReason::MatchingAcl(&deny("orders", "User:alice", AclOperation::Read))
        );
        assert!(topic(
            &authorizer,
            &KafkaPrincipal::user("bob"),
            AclOperation::Read,
            "orders"
        ));
        // A deny on a prefix or on `*` wins over a literal allow too.
        let authorizer = with_acls(vec![
            allow("orders", "User:alice", AclOperation::Write),
            prefixed(deny("ord", "User:alice", AclOperation::Write)),
        ]);
        assert!(!topic(&authorizer, &alice(), AclOperation::Write, "orders"));
        let authorizer = with_acls(vec![
            allow("orders", "User:alice", AclOperation::Write),
            deny("*", "User:alice", AclOperation::Write),
        ]);
        assert!(!topic(&authorizer, &alice(), AclOperation::Write, "orders"));
    }

    #[test]
    fn allow_implies_describe_and_describe_configs() {
        use AclOperation as Op;
        for granted in [Op::Read, Op::Write, Op::Delete, Op::Alter] {
            let authorizer = with_acls(vec![allow("t", "User:alice", granted)]);
            assert!(topic(&authorizer, &alice(), Op::Describe, "t"), "{granted}");
            assert!(
                !topic(&authorizer, &alice(), Op::DescribeConfigs, "t"),
                "{granted}"
            );
        }
        let authorizer = with_acls(vec![allow("t", "User:alice", Op::AlterConfigs)]);
        assert!(topic(&authorizer, &alice(), Op::DescribeConfigs, "t"));
        assert!(!topic(&authorizer, &alice(), Op::Describe, "t"));
        // Nothing else implies anything: not CREATE, not DESCRIBE.
        let authorizer = with_acls(vec![
            allow("t", "User:alice", Op::Create),
            allow("t", "User:alice", Op::Describe),
        ]);
        assert!(!topic(&authorizer, &alice(), Op::Read, "t"));
        assert!(!topic(&authorizer, &alice(), Op::Write, "t"));
    }

    #[test]
    fn deny_denies_only_its_own_operation() {
        use AclOperation as Op;
        // As Kafka's testImplicationsOfDeny: DENY X with ALLOW ALL denies X
        // alone (DENY READ leaves DESCRIBE allowed).
        for denied in [
            Op::Read,
            Op::Describe,
            Op::DescribeConfigs,
            Op::AlterConfigs,
        ] {
            let authorizer = with_acls(vec![
                allow("t", "User:alice", Op::All),
                deny("t", "User:alice", denied),
            ]);
            for wanted in &Op::VALUES[2..] {
                let expected = *wanted != denied;
                assert_eq!(
                    topic(&authorizer, &alice(), *wanted, "t"),
                    expected,
                    "deny {denied}, want {wanted}"
                );
            }
        }
    }

    #[test]
    fn all_covers_every_operation() {
        use AclOperation as Op;
        let allowed = with_acls(vec![allow("t", "User:alice", Op::All)]);
        let denied = with_acls(vec![
            allow("t", "User:alice", Op::All),
            deny("t", "User:alice", Op::All),
        ]);
        for wanted in &Op::VALUES[2..] {
            assert!(topic(&allowed, &alice(), *wanted, "t"), "{wanted}");
            assert!(!topic(&denied, &alice(), *wanted, "t"), "{wanted}");
        }
    }

    #[test]
    fn wildcard_principal_matches_every_principal_type() {
        let authorizer = with_acls(vec![allow("t", "User:*", AclOperation::Read)]);
        let group = KafkaPrincipal {
            principal_type: "Group".to_owned(),
            name: "x".to_owned(),
        };
        assert!(topic(&authorizer, &alice(), AclOperation::Read, "t"));
        assert!(topic(&authorizer, &group, AclOperation::Read, "t"));
        assert!(topic(
            &authorizer,
            &KafkaPrincipal::anonymous(),
            AclOperation::Read,
            "t"
        ));
    }

    #[test]
    fn principal_of_another_type_does_not_match() {
        let authorizer = with_acls(vec![allow("t", "User:bob", AclOperation::Read)]);
        let group_bob = KafkaPrincipal {
            principal_type: "Group".to_owned(),
            name: "bob".to_owned(),
        };
        assert!(topic(
            &authorizer,
            &KafkaPrincipal::user("bob"),
            AclOperation::Read,
            "t"
        ));
        assert!(!topic(&authorizer, &group_bob, AclOperation::Read, "t"));
        // Names compare exactly, case included.
        assert!(!topic(
            &authorizer,
            &KafkaPrincipal::user("Bob"),
            AclOperation::Read,
            "t"
        ));
        // `Group:*` is no wildcard: only `User:*` is.
        let authorizer = with_acls(vec![allow("t", "Group:*", AclOperation::Read)]);
        assert!(!topic(&authorizer, &group_bob, AclOperation::Read, "t"));
    }

    #[test]
    fn host_must_be_the_clients_or_wildcard() {
        let authorizer = with_acls(vec![
            AclBinding {
                host: "10.0.0.1".to_owned(),
                ..allow("t", "User:alice", AclOperation::Read)
            },
            AclBinding {
                host: "0:0:0:0:0:0:0:1".to_owned(),
                ..allow("t", "User:alice", AclOperation::Write)
            },
        ]);
        let read = |host| {
            authorizer
                .authorize(&alice(), host, AclOperation::Read, ResourceType::Topic, "t")
                .is_allowed()
        };
        assert!(read(HOST));
        assert!(!read(OTHER_HOST));
        // A dual-stack socket's IPv4-mapped address is the IPv4 host.
        assert!(read(IpAddr::V6(
            Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped()
        )));
        // Java's spelling of ::1 is ::1.
        assert!(
            authorizer
                .authorize(
                    &alice(),
                    IpAddr::V6(Ipv6Addr::LOCALHOST),
                    AclOperation::Write,
                    ResourceType::Topic,
                    "t"
                )
                .is_allowed()
        );
        // A host-specific deny applies from that host only.
        let authorizer = with_acls(vec![
            allow("t", "User:alice", AclOperation::Read),
            AclBinding {
                host: "10.0.0.2".to_owned(),
                ..deny("t", "User:alice", AclOperation::Read)
            },
        ]);
        assert!(topic(&authorizer, &alice(), AclOperation::Read, "t"));
        assert!(
            !authorizer
                .authorize(
                    &alice(),
                    OTHER_HOST,
                    AclOperation::Read,
                    ResourceType::Topic,
                    "t"
                )
                .is_allowed()
        );
    }

    #[test]
    fn literal_prefixed_and_wildcard_names() {
        let authorizer = with_acls(vec![
            allow("foo", "User:alice", AclOperation::Read),
            prefixed(allow("bar", "User:alice", AclOperation::Read)),
            prefixed(allow("*", "User:alice", AclOperation::Write)),
            prefixed(allow("_", "User:alice", AclOperation::Delete)),
        ]);
        let read = |name| topic(&authorizer, &alice(), AclOperation::Read, name);
        assert!(read("foo"));
        assert!(!read("foobar"));
        assert!(!read("fo"));
        assert!(read("bar"));
        assert!(read("barn"));
        assert!(!read("ba"));
        assert!(!read("xbar"));
        // A prefix of `*` is a prefix, not a wildcard.
        assert!(topic(&authorizer, &alice(), AclOperation::Write, "*x"));
        assert!(!topic(&authorizer, &alice(), AclOperation::Write, "x"));
        // As Kafka's testSingleCharacterResourceAcls.
        assert!(topic(&authorizer, &alice(), AclOperation::Delete, "_foo"));
        assert!(topic(&authorizer, &alice(), AclOperation::Delete, "_"));
        assert!(!topic(&authorizer, &alice(), AclOperation::Delete, "foo_"));

        let authorizer = with_acls(vec![allow("*", "User:alice", AclOperation::Read)]);
        assert!(topic(&authorizer, &alice(), AclOperation::Read, "anything"));
        assert!(topic(&authorizer, &alice(), AclOperation::Read, "*"));
        // Kafka's testAuthorizeWithEmptyResourceName: `*` covers "" too.
        assert!(topic(&authorizer, &alice(), AclOperation::Read, ""));
        // The wildcard is per resource type.
        assert!(
            !authorizer
                .authorize(&alice(), HOST, AclOperation::Read, ResourceType::Group, "g")
                .is_allowed()
        );
    }

    #[test]
    fn prefixes_split_and_share_nodes() {
        // Prefixes that share and split labels, and one that ends inside a
        // multi-byte character's neighbour.
        let names = ["abc", "abd", "ab", "a", "abcdef", "é", "éa", "b"];
        let authorizer = with_acls(
            names
                .iter()
                .map(|name| prefixed(allow(name, &format!("User:{name}"), AclOperation::Read)))
                .collect(),
        );
        for resource in ["abcdefg", "abd", "a", "éab", "bz", "c", "", "ab"] {
            for name in names {
                let expected = resource.starts_with(name);
                let who = KafkaPrincipal::user(name);
                assert_eq!(
                    topic(&authorizer, &who, AclOperation::Read, resource),
                    expected,
                    "prefix {name}, resource {resource}"
                );
            }
        }
    }

    #[test]
    fn no_acl_found_follows_allow_everyone() {
        for allow_everyone in [false, true] {
            let config = AuthorizerConfig {
                super_users: Vec::new(),
                allow_everyone_if_no_acl_found: allow_everyone,
            };
            let authorizer = Authorizer::new(
                config,
                vec![
                    allow("owned", "User:bob", AclOperation::Read),
                    prefixed(allow("team-", "User:bob", AclOperation::Read)),
                ],
            )
            .expect("valid");
            let open = authorizer.authorize_with_reason(
                &alice(),
                HOST,
                AclOperation::Read,
                ResourceType::Topic,
                "free",
            );
            assert_eq!(open.decision.is_allowed(), allow_everyone);
            assert_eq!(open.reason, DecisionReason::NoAclFound);
            // KAFKA-14435: once any binding applies to the resource, for
            // anyone, the setting no longer opens it.
            for name in ["owned", "team-x"] {
                let closed = authorizer.authorize_with_reason(
                    &alice(),
                    HOST,
                    AclOperation::Read,
                    ResourceType::Topic,
                    name,
                );
                assert_eq!(closed.decision, Decision::Denied, "{name}");
                assert_eq!(closed.reason, DecisionReason::NoMatchingAcl, "{name}");
            }
        }
    }

    #[test]
    fn authorized_operations_sets_a_bit_per_allowed_operation() {
        let authorizer = with_acls(vec![allow("t", "User:alice", AclOperation::Read)]);
        let bits = authorizer.authorized_operations(&alice(), HOST, ResourceType::Topic, "t");
        assert_eq!(bits, (1 << 3) | (1 << 8), "READ and DESCRIBE");
        let all = with_acls(vec![allow("t", "User:alice", AclOperation::All)]);
        assert_eq!(
            all.authorized_operations(&alice(), HOST, ResourceType::Topic, "t"),
            0b1101_1111_1000
        );
        assert_eq!(
            authorizer.authorized_operations(&alice(), HOST, ResourceType::Any, "t"),
            0
        );
    }

    #[test]
    fn add_keeps_each_binding_once_and_remove_returns_what_went() {
        let mut authorizer = with_acls(Vec::new());
        let read = allow("t", "User:alice", AclOperation::Read);
        let deny_read = deny("t", "User:alice", AclOperation::Read);
        assert_eq!(authorizer.add(read.clone()), Ok(true));
        assert_eq!(authorizer.add(read.clone()), Ok(false));
        assert_eq!(authorizer.add(deny_read.clone()), Ok(true));
        assert_eq!(authorizer.len(), 2);
        assert!(!topic(&authorizer, &alice(), AclOperation::Read, "t"));

        let removed = authorizer.remove(&deny_read.to_filter());
        assert_eq!(removed, vec![deny_read]);
        assert!(topic(&authorizer, &alice(), AclOperation::Read, "t"));
        assert!(
            authorizer
                .remove(&AclBinding::to_filter(&allow(
                    "u",
                    "User:a",
                    AclOperation::Read
                )))
                .is_empty()
        );
        assert_eq!(authorizer.remove(&AclBindingFilter::ANY), vec![read]);
        assert!(authorizer.is_empty());
        assert!(!topic(&authorizer, &alice(), AclOperation::Read, "t"));
    }

    // -- filters --

    #[test]
    fn filters_select_as_kafkas_acls_filter_test() {
        let acl1 = allow("foo-1", "User:alice", AclOperation::Read);
        let acl2 = AclBinding {
            host: "192.168.0.1".to_owned(),
            ..allow("foo-1", "User:alice", AclOperation::Write)
        };
        let acl3 = allow("bar-1", "User:alice", AclOperation::Describe);
        let acl4 = prefixed(allow("bar-", "User:*", AclOperation::Read));
        let authorizer = with_acls(vec![acl1.clone(), acl2.clone(), acl3.clone(), acl4.clone()]);
        let selected = |filter: AclBindingFilter| -> Vec<AclBinding> {
            authorizer.acls(&filter).cloned().collect()
        };
        let by_name = |name: &str, pattern_type| AclBindingFilter {
            resource_type: ResourceType::Any,
            resource_name: Some(name.to_owned()),
            pattern_type,
            ..AclBindingFilter::ANY
        };
        assert_eq!(selected(AclBindingFilter::ANY).len(), 4);
        assert_eq!(
            selected(by_name("foo-1", PatternType::Literal)),
            vec![acl1.clone(), acl2]
        );
        assert_eq!(
            selected(by_name("bar-", PatternType::Prefixed)),
            vec![acl4.clone()]
        );
        assert_eq!(
            selected(by_name("bar-", PatternType::Literal)),
            Vec::<AclBinding>::new()
        );
        assert_eq!(
            selected(by_name("bar-1", PatternType::Match)),
            vec![acl4.clone(), acl3]
        );
        assert_eq!(selected(by_name("bar-", PatternType::Any)), vec![acl4]);
        assert_eq!(
            selected(by_name("baz", PatternType::Any)),
            Vec::<AclBinding>::new()
        );
        // Principal and host compare as strings: no wildcard meaning.
        let wildcard_principal = AclBindingFilter {
            principal: Some("User:*".to_owned()),
            ..AclBindingFilter::ANY
        };
        assert_eq!(selected(wildcard_principal).len(), 1);
        let star_host = AclBindingFilter {
            host: Some("*".to_owned()),
            ..AclBindingFilter::ANY
        };
        assert_eq!(selected(star_host).len(), 3);
        let reads = AclBindingFilter {
            operation: AclOperation::Read,
            permission: AclPermissionType::Allow,
            ..AclBindingFilter::ANY
        };
        assert_eq!(selected(reads).len(), 2);
        assert!(acl1.to_filter().matches(&acl1));
        assert!(
            !AclBindingFilter {
                resource_type: ResourceType::Unknown,
                ..AclBindingFilter::ANY
            }
            .matches(&acl1)
        );
    }

    #[test]
    fn match_filter_selects_wildcard_and_prefixes_only_for_a_name() {
        let wildcard = allow("*", "User:a", AclOperation::Read);
        let literal = allow("abc", "User:a", AclOperation::Read);
        let prefix = prefixed(allow("ab", "User:a", AclOperation::Read));
        let longer_prefix = prefixed(allow("abcd", "User:a", AclOperation::Read));
        let mut filter = AclBindingFilter {
            resource_type: ResourceType::Topic,
            resource_name: Some("abc".to_owned()),
            pattern_type: PatternType::Match,
            ..AclBindingFilter::ANY
        };
        assert!(filter.matches(&wildcard));
        assert!(filter.matches(&literal));
        assert!(filter.matches(&prefix));
        assert!(!filter.matches(&longer_prefix));
        // Without a name, MATCH selects every pattern.
        filter.resource_name = None;
        assert!(filter.matches(&longer_prefix));
        assert!(!filter.is_unknown());
    }

    // -- scale --

    #[test]
    fn ten_thousand_bindings_answer_as_kafka() {
        let mut bindings = Vec::new();
        for i in 0..4000 {
            bindings.push(allow(
                &format!("orders-{i}"),
                &format!("User:consumer-{}", i % 50),
                AclOperation::Read,
            ));
        }
        for i in 0..4000 {
            bindings.push(prefixed(allow(
                &format!("team-{i}-"),
                &format!("User:producer-{i}"),
                AclOperation::Write,
            )));
        }
        for i in 0..1999 {
            bindings.push(binding(
                ResourceType::Group,
                &format!("group-{i}"),
                PatternType::Literal,
                &format!("User:consumer-{}", i % 50),
                "*",
                AclOperation::Read,
                AclPermissionType::Allow,
            ));
        }
        bindings.push(deny("*", "User:mallory", AclOperation::Write));
        let config = AuthorizerConfig {
            super_users: vec!["User:admin".to_owned()],
            allow_everyone_if_no_acl_found: true,
        };
        let authorizer = Authorizer::new(config, bindings).expect("valid");
        assert_eq!(authorizer.len(), 10_000);

        let consumer = KafkaPrincipal::user("consumer-7");
        assert!(topic(
            &authorizer,
            &consumer,
            AclOperation::Read,
            "orders-7"
        ));
        assert!(topic(
            &authorizer,
            &consumer,
            AclOperation::Describe,
            "orders-3957"
        ));
        assert!(!topic(
            &authorizer,
            &consumer,
            AclOperation::Read,
            "orders-8"
        ));
        assert!(!topic(
            &authorizer,
            &consumer,
            AclOperation::Write,
            "orders-7"
        ));

        let producer = KafkaPrincipal::user("producer-42");
        assert!(topic(
            &authorizer,
            &producer,
            AclOperation::Write,
            "team-42-events"
        ));
        assert!(!topic(
            &authorizer,
            &producer,
            AclOperation::Write,
            "team-421-events"
        ));
        assert!(!topic(
            &authorizer,
            &producer,
            AclOperation::Write,
            "team-4-events"
        ));

        let mallory = KafkaPrincipal::user("mallory");
        let denied = authorizer.authorize_with_reason(
            &mallory,
            HOST,
            AclOperation::Write,
            ResourceType::Topic,
            "team-42-events",
        );
        assert_eq!(
            denied.reason,
            DecisionReason::MatchingAcl(&deny("*", "User:mallory", AclOperation::Write))
        );
        // The `*` binding is on every topic, so no topic is open to all.
        let nothing = authorizer.authorize_with_reason(
            &alice(),
            HOST,
            AclOperation::Read,
            ResourceType::Topic,
            "nothing",
        );
        assert_eq!(nothing.reason, DecisionReason::NoMatchingAcl);
        // No binding applies to this group, so everyone may use it.
        let open = authorizer.authorize_with_reason(
            &alice(),
            HOST,
            AclOperation::Read,
            ResourceType::Group,
            "unclaimed",
        );
        assert_eq!(open.decision, Decision::Allowed);
        assert_eq!(open.reason, DecisionReason::NoAclFound);
        assert!(
            authorizer
                .authorize(
                    &consumer,
                    HOST,
                    AclOperation::Read,
                    ResourceType::Group,
                    "group-57"
                )
                .is_allowed()
        );
        assert!(topic(
            &authorizer,
            &KafkaPrincipal::user("admin"),
            AclOperation::Alter,
            "orders-1"
        ));
        let match_filter = AclBindingFilter {
            resource_type: ResourceType::Topic,
            resource_name: Some("team-42-events".to_owned()),
            pattern_type: PatternType::Match,
            ..AclBindingFilter::ANY
        };
        assert_eq!(authorizer.acls(&match_filter).count(), 2, "team-42- and *");
    }

    // -- properties --

    /// Kafka's filter rules, written out case by case from its docs.
    fn reference_matches(filter: &AclBindingFilter, binding: &AclBinding) -> bool {
        let resource_type = filter.resource_type == ResourceType::Any
            || filter.resource_type == binding.resource_type;
        let pattern = match (&filter.resource_name, filter.pattern_type) {
            (None, PatternType::Any | PatternType::Match) => true,
            (None, pattern_type) => pattern_type == binding.pattern_type,
            (Some(name), PatternType::Any) => *name == binding.resource_name,
            (Some(name), PatternType::Match) => match binding.pattern_type {
                PatternType::Literal => {
                    *name == binding.resource_name || binding.resource_name == "*"
                }
                PatternType::Prefixed => name.starts_with(&binding.resource_name),
                _ => false,
            },
            (Some(name), pattern_type) => {
                pattern_type == binding.pattern_type && *name == binding.resource_name
            }
        };
        let principal =
            filter.principal.is_none() || filter.principal.as_ref() == Some(&binding.principal);
        let host = filter.host.is_none() || filter.host.as_ref() == Some(&binding.host);
        let operation =
            filter.operation == AclOperation::Any || filter.operation == binding.operation;
        let permission =
            filter.permission == AclPermissionType::Any || filter.permission == binding.permission;
        resource_type && pattern && principal && host && operation && permission
    }

    /// Kafka's authorizer without an index: every binding checked.
    fn reference_authorize(
        config: &AuthorizerConfig,
        bindings: &[AclBinding],
        principal: &KafkaPrincipal,
        host: IpAddr,
        operation: AclOperation,
        resource_type: ResourceType,
        name: &str,
    ) -> Decision {
        use AclOperation as Op;
        if config.super_users.contains(&principal.to_string()) {
            return Decision::Allowed;
        }
        let on_resource: Vec<&AclBinding> = bindings
            .iter()
            .filter(|b| {
                b.resource_type == resource_type
                    && match b.pattern_type {
                        PatternType::Literal => b.resource_name == name || b.resource_name == "*",
                        PatternType::Prefixed => name.starts_with(&b.resource_name),
                        _ => false,
                    }
            })
            .collect();
        let applies = |b: &&&AclBinding| {
            let who = b.principal == principal.to_string() || b.principal == "User:*";
            let from = b.host == "*"
                || b.host.parse::<IpAddr>().map(|ip| ip.to_canonical()) == Ok(host.to_canonical());
            let what = b.operation == Op::All
                || b.operation == operation
                || (b.permission == AclPermissionType::Allow
                    && ((operation == Op::Describe
                        && [Op::Read, Op::Write, Op::Delete, Op::Alter].contains(&b.operation))
                        || (operation == Op::DescribeConfigs && b.operation == Op::AlterConfigs)));
            who && from && what
        };
        let applying: Vec<_> = on_resource.iter().filter(applies).collect();
        let denied = applying
            .iter()
            .any(|b| b.permission == AclPermissionType::Deny);
        let allowed = applying
            .iter()
            .any(|b| b.permission == AclPermissionType::Allow);
        let open = on_resource.is_empty() && config.allow_everyone_if_no_acl_found;
        if !denied && (allowed || open) {
            Decision::Allowed
        } else {
            Decision::Denied
        }
    }

    const NAMES: &[&str] = &["a", "ab", "abc", "b", "ba", "*", "é", "éa"];
    const PRINCIPALS: &[&str] = &["User:alice", "User:bob", "User:*", "Group:alice"];
    const HOSTS: &[&str] = &["*", "10.0.0.1", "10.0.0.2", "::1"];

    fn stored_binding() -> impl Strategy<Value = AclBinding> {
        (
            prop::sample::select(vec![ResourceType::Topic, ResourceType::Group]),
            prop::sample::select(NAMES),
            prop::sample::select(vec![PatternType::Literal, PatternType::Prefixed]),
            prop::sample::select(PRINCIPALS),
            prop::sample::select(HOSTS),
            prop::sample::select(&AclOperation::VALUES[2..]),
            prop::sample::select(vec![AclPermissionType::Allow, AclPermissionType::Deny]),
        )
            .prop_map(
                |(resource_type, name, pattern_type, principal, host, operation, permission)| {
                    binding(
                        resource_type,
                        name,
                        pattern_type,
                        principal,
                        host,
                        operation,
                        permission,
                    )
                },
            )
    }

    fn any_filter() -> impl Strategy<Value = AclBindingFilter> {
        let maybe = |values: &'static [&'static str]| {
            prop::option::of(prop::sample::select(values).prop_map(str::to_owned))
        };
        (
            prop::sample::select(ResourceType::VALUES),
            maybe(&["a", "ab", "abc", "abcd", "b", "*", "é", "éab", "c"]),
            prop::sample::select(PatternType::VALUES),
            maybe(PRINCIPALS),
            maybe(HOSTS),
            prop::sample::select(AclOperation::VALUES),
            prop::sample::select(AclPermissionType::VALUES),
        )
            .prop_map(
                |(
                    resource_type,
                    resource_name,
                    pattern_type,
                    principal,
                    host,
                    operation,
                    permission,
                )| {
                    AclBindingFilter {
                        resource_type,
                        resource_name,
                        pattern_type,
                        principal,
                        host,
                        operation,
                        permission,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn filter_matches_agrees_with_the_reference(
            filter in any_filter(),
            bindings in prop::collection::vec(stored_binding(), 1..16),
        ) {
            for binding in &bindings {
                prop_assert_eq!(
                    filter.matches(binding),
                    reference_matches(&filter, binding),
                    "{} against {}", filter, binding
                );
            }
        }

        #[test]
        fn indexed_authorizer_agrees_with_checking_every_binding(
            bindings in prop::collection::vec(stored_binding(), 0..24),
            allow_everyone in any::<bool>(),
            principal in prop::sample::select(vec!["User:alice", "User:bob", "Group:alice", "User:admin"]),
            host in prop::sample::select(vec![
                HOST,
                OTHER_HOST,
                IpAddr::V6(Ipv6Addr::LOCALHOST),
                IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped()),
            ]),
            operation in prop::sample::select(&AclOperation::VALUES[2..]),
            resource_type in prop::sample::select(vec![ResourceType::Topic, ResourceType::Group]),
            name in prop::sample::select(vec!["a", "ab", "abc", "abcd", "b", "ba", "*", "", "c", "éab"]),
        ) {
            let config = AuthorizerConfig {
                super_users: vec!["User:admin".to_owned()],
                allow_everyone_if_no_acl_found: allow_everyone,
            };
            let authorizer = Authorizer::new(config.clone(), bindings.clone()).expect("valid");
            let principal = parse_principal(principal).expect("principal");
            let expected = reference_authorize(
                &config, &bindings, &principal, host, operation, resource_type, name,
            );
            prop_assert_eq!(
                authorizer.authorize(&principal, host, operation, resource_type, name),
                expected
            );
        }
    }
}
