//! What a client may do: the authorizer built from the ACL bindings in the
//! metadata, the checks handlers make with it, and the audit log of what
//! it denied.
//!
//! ACLs are enforced when `authorizer.class.name` names Kafka's
//! `StandardAuthorizer` ([`BrokerConfig::authorizer`](crate::BrokerConfig)).
//! Without it every check allows, as a Kafka broker without an authorizer
//! does. The bindings live in the metadata (replicated on a cluster); this
//! module keeps an [`Authorizer`] built from them and builds it again when
//! their version changes: at once after this broker changed them, and on a
//! cluster when the change feed shows another broker did. A check reads
//! only this broker's copy, never the metadata store, so it costs a lock
//! read and weir-auth's indexed lookup.
//!
//! A request that came over no connection (the broker's own, `peer` unset)
//! is the broker itself and is allowed everything.
//!
//! Each denial a handler reports is logged once, at INFO, under the
//! `weir::audit` target, with the principal, operation, resource, client
//! address, API and why. Checks that only filter what a listing shows
//! (the topics of a Metadata request for all topics, the groups of
//! ListGroups) are not logged, as Kafka does not log them.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, RwLock};

use weir_auth::{
    AclBinding, AclOperation, Authorizer, AuthorizerConfig, PatternType, ResourceType,
};
use weir_metadata::{AclEntry, MetadataStore};

use kafka_protocol::ResponseError;

use crate::{ApiError, RequestContext};

/// Kafka's name of the authorizer Weir's ACLs stand in for; setting
/// `authorizer.class.name` to it turns enforcement on.
pub const STANDARD_AUTHORIZER: &str = "org.apache.kafka.metadata.authorizer.StandardAuthorizer";

/// What Kafka sends as `authorized_operations` when they were not asked for.
pub(crate) const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

/// Why the authorizer cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum AclsUnusable {
    /// A `super.users` entry that is not `Type:name`.
    #[error("super.users: {0}")]
    SuperUsers(#[source] weir_auth::AclError),
    /// A binding in the metadata that does not validate.
    #[error("ACL binding {binding:?} in the metadata cannot be used: {source}")]
    Binding {
        /// The binding as stored.
        binding: AclEntry,
        /// Why.
        #[source]
        source: weir_auth::AclError,
    },
}

/// The broker's authorizer, current with the metadata's bindings.
#[derive(Debug)]
pub(crate) struct Acls {
    /// `None` when no authorizer is configured: everything is allowed.
    config: Option<AuthorizerConfig>,
    /// The bindings' version and the authorizer built from them.
    current: RwLock<(u64, Arc<Authorizer>)>,
    /// Held while building, so one build at a time reads the store.
    building: Mutex<()>,
}

impl Acls {
    /// The authorizer for `config` over the bindings `metadata` keeps.
    pub(crate) fn new(
        config: Option<AuthorizerConfig>,
        metadata: &dyn MetadataStore,
    ) -> Result<Self, AclsUnusable> {
        let (version, authorizer) = match &config {
            Some(config) => {
                let (version, entries) = metadata.acls();
                (version, build(config, entries)?)
            }
            None => (0, empty()),
        };
        Ok(Self {
            config,
            current: RwLock::new((version, Arc::new(authorizer))),
            building: Mutex::new(()),
        })
    }

    /// Whether ACLs are enforced (`authorizer.class.name` is set).
    pub(crate) fn enabled(&self) -> bool {
        self.config.is_some()
    }

    /// The authorizer as of the last refresh.
    pub(crate) fn authorizer(&self) -> Arc<Authorizer> {
        match self.current.read() {
            Ok(current) => current.1.clone(),
            Err(poisoned) => poisoned.into_inner().1.clone(),
        }
    }

    /// Builds the authorizer again when the metadata's bindings changed
    /// since it was built. A set that cannot be used keeps the last one and
    /// is logged: dropping a binding could drop a DENY.
    pub(crate) fn refresh(&self, metadata: &dyn MetadataStore) {
        let Some(config) = &self.config else {
            return;
        };
        let Ok(_building) = self.building.lock() else {
            return;
        };
        let built_version = match self.current.read() {
            Ok(current) => current.0,
            Err(poisoned) => poisoned.into_inner().0,
        };
        if metadata.acls_version() == built_version {
            return;
        }
        let (version, entries) = metadata.acls();
        let count = entries.len();
        match build(config, entries) {
            Ok(authorizer) => {
                let mut current = match self.current.write() {
                    Ok(current) => current,
                    Err(poisoned) => poisoned.into_inner(),
                };
                *current = (version, Arc::new(authorizer));
                tracing::debug!(version, bindings = count, "ACLs reloaded");
            }
            Err(e) => tracing::error!(
                error = %e,
                "the ACLs in the metadata changed but cannot be used; the previous ACLs stay in \
                 force. Remove the binding with `weir acl remove`"
            ),
        }
    }
}

/// TOPIC_AUTHORIZATION_FAILED for a topic the client may not `operation`.
pub(crate) fn topic_denied(ctx: &RequestContext, operation: AclOperation, topic: &str) -> ApiError {
    ApiError::new(
        ResponseError::TopicAuthorizationFailed,
        format!("{} may not {operation} topic '{topic}'", ctx.principal),
    )
}

/// CLUSTER_AUTHORIZATION_FAILED for a cluster operation the client may not do.
pub(crate) fn cluster_denied(ctx: &RequestContext, operation: AclOperation) -> ApiError {
    ApiError::new(
        ResponseError::ClusterAuthorizationFailed,
        format!("{} may not {operation} the cluster", ctx.principal),
    )
}

/// What a client must be allowed to describe or alter the configs of a
/// config resource (DescribeConfigs, AlterConfigs,
/// IncrementalAlterConfigs): `operation` on the topic, the cluster (a
/// broker) or the group. `None` when it may, or for a resource type no
/// handler serves.
pub(crate) fn config_denial(
    broker: &crate::Broker,
    ctx: &RequestContext,
    operation: AclOperation,
    (config_resource_type, name): (i8, &str),
) -> Option<ApiError> {
    let (resource_type, name, denied) = match config_resource_type {
        crate::admin::RESOURCE_TOPIC => (
            ResourceType::Topic,
            name,
            ResponseError::TopicAuthorizationFailed,
        ),
        crate::admin::RESOURCE_BROKER => (
            ResourceType::Cluster,
            weir_auth::CLUSTER_RESOURCE_NAME,
            ResponseError::ClusterAuthorizationFailed,
        ),
        crate::group_config::RESOURCE_GROUP => (
            ResourceType::Group,
            name,
            ResponseError::GroupAuthorizationFailed,
        ),
        _ => return None,
    };
    (!broker.allowed(ctx, operation, resource_type, name)).then(|| {
        ApiError::new(
            denied,
            format!(
                "{} may not {operation} of {resource_type} '{name}'",
                ctx.principal
            ),
        )
    })
}

/// An authorizer with no binding and no super user.
fn empty() -> Authorizer {
    match Authorizer::new(AuthorizerConfig::default(), []) {
        Ok(authorizer) => authorizer,
        Err(e) => unreachable!("an authorizer without bindings or super users is valid: {e}"),
    }
}

fn build(config: &AuthorizerConfig, entries: Vec<AclEntry>) -> Result<Authorizer, AclsUnusable> {
    let mut authorizer = Authorizer::new(config.clone(), []).map_err(AclsUnusable::SuperUsers)?;
    for entry in entries {
        authorizer
            .add(binding_of(&entry))
            .map_err(|source| AclsUnusable::Binding {
                binding: entry,
                source,
            })?;
    }
    Ok(authorizer)
}

/// A stored binding as weir-auth checks it.
pub(crate) fn binding_of(entry: &AclEntry) -> AclBinding {
    AclBinding {
        resource_type: ResourceType::from_code(entry.resource_type),
        resource_name: entry.resource_name.clone(),
        pattern_type: PatternType::from_code(entry.pattern_type),
        principal: entry.principal.clone(),
        host: entry.host.clone(),
        operation: AclOperation::from_code(entry.operation),
        permission: weir_auth::AclPermissionType::from_code(entry.permission_type),
    }
}

/// A binding as the metadata stores it.
pub(crate) fn entry_of(binding: &AclBinding) -> AclEntry {
    AclEntry {
        resource_type: binding.resource_type.code(),
        resource_name: binding.resource_name.clone(),
        pattern_type: binding.pattern_type.code(),
        principal: binding.principal.clone(),
        host: binding.host.clone(),
        operation: binding.operation.code(),
        permission_type: binding.permission.code(),
    }
}

/// What a handler asks about one resource.
impl crate::Broker {
    /// Whether the request's client may do `operation` on the resource;
    /// a denial is logged to the audit log.
    pub(crate) fn allowed(
        &self,
        ctx: &RequestContext,
        operation: AclOperation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        self.decide(ctx, operation, resource_type, name, true)
    }

    /// [`Broker::allowed`] without the audit line, for checks that only
    /// filter what a listing shows.
    pub(crate) fn allowed_quietly(
        &self,
        ctx: &RequestContext,
        operation: AclOperation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        self.decide(ctx, operation, resource_type, name, false)
    }

    /// Whether the client may do `operation` on the cluster.
    pub(crate) fn allowed_on_cluster(&self, ctx: &RequestContext, operation: AclOperation) -> bool {
        self.allowed(
            ctx,
            operation,
            ResourceType::Cluster,
            weir_auth::CLUSTER_RESOURCE_NAME,
        )
    }

    /// Whether the client may do `operation` on the topic.
    pub(crate) fn allowed_on_topic(
        &self,
        ctx: &RequestContext,
        operation: AclOperation,
        topic: &str,
    ) -> bool {
        self.allowed(ctx, operation, ResourceType::Topic, topic)
    }

    /// Whether the client may do `operation` on the group.
    pub(crate) fn allowed_on_group(
        &self,
        ctx: &RequestContext,
        operation: AclOperation,
        group: &str,
    ) -> bool {
        self.allowed(ctx, operation, ResourceType::Group, group)
    }

    /// Whether the client may create topic `name` (CREATE on the cluster
    /// or on the topic), as an auto-create needs.
    pub(crate) fn may_create_topic(&self, ctx: &RequestContext, name: &str) -> bool {
        self.allowed_quietly(
            ctx,
            AclOperation::Create,
            ResourceType::Cluster,
            weir_auth::CLUSTER_RESOURCE_NAME,
        ) || self.allowed_on_topic(ctx, AclOperation::Create, name)
    }

    /// Whether the client may do `operation` on any resource of `resource_type`
    /// (Kafka's `authorizeByResourceType`): some ALLOW of the operation
    /// applies to the client on a resource of the type, and no DENY covers
    /// every name. Kafka lets a producer with WRITE on any topic be
    /// idempotent without IDEMPOTENT_WRITE on the cluster this way.
    pub(crate) fn allowed_on_any(
        &self,
        ctx: &RequestContext,
        operation: AclOperation,
        resource_type: ResourceType,
    ) -> bool {
        if !self.acls.enabled() || ctx.peer.is_none() {
            return true;
        }
        let authorizer = self.acls.authorizer();
        let host = client_ip(ctx);
        let principal = &ctx.principal;
        if authorizer
            .authorize(principal, host, operation, resource_type, "")
            .is_allowed()
        {
            // A super user, or `*` allowed with no DENY on the empty name.
            return true;
        }
        let applies = |binding: &AclBinding| {
            (binding.principal == weir_auth::WILDCARD_PRINCIPAL
                || binding.principal == principal.to_string())
                && (binding.host == weir_auth::WILDCARD_HOST
                    || binding
                        .host
                        .parse::<IpAddr>()
                        .ok()
                        .map(|ip| ip.to_canonical())
                        == Some(host.to_canonical()))
        };
        let filter = weir_auth::AclBindingFilter {
            resource_type,
            ..weir_auth::AclBindingFilter::ANY
        };
        authorizer
            .acls(&filter)
            .filter(|b| applies(b))
            .any(|allow| {
                allow.permission == weir_auth::AclPermissionType::Allow
                    && (allow.operation == operation || allow.operation == AclOperation::All)
                    && authorizer
                        .authorize(
                            principal,
                            host,
                            operation,
                            resource_type,
                            &allow.resource_name,
                        )
                        .is_allowed()
            })
    }

    /// A group the client may not describe is answered
    /// GROUP_AUTHORIZATION_FAILED; otherwise the group's
    /// `authorized_operations` when `asked` (else Kafka's "not asked"
    /// marker).
    pub(crate) fn describable_group(
        &self,
        ctx: &RequestContext,
        asked: bool,
        group: &str,
    ) -> Result<i32, kafka_protocol::ResponseError> {
        if !self.allowed_on_group(ctx, AclOperation::Describe, group) {
            return Err(kafka_protocol::ResponseError::GroupAuthorizationFailed);
        }
        Ok(match asked {
            true => self.authorized_operations(ctx, ResourceType::Group, group),
            false => AUTHORIZED_OPERATIONS_OMITTED,
        })
    }

    /// Kafka's `authorized_operations` bit field for a resource: every
    /// operation its type supports when ACLs are not enforced.
    pub(crate) fn authorized_operations(
        &self,
        ctx: &RequestContext,
        resource_type: ResourceType,
        name: &str,
    ) -> i32 {
        if !self.acls.enabled() || ctx.peer.is_none() {
            return resource_type
                .supported_operations()
                .iter()
                .fold(0, |bits, operation| bits | (1_i32 << operation.code()));
        }
        self.acls.authorizer().authorized_operations(
            &ctx.principal,
            client_ip(ctx),
            resource_type,
            name,
        )
    }

    fn decide(
        &self,
        ctx: &RequestContext,
        operation: AclOperation,
        resource_type: ResourceType,
        name: &str,
        audit: bool,
    ) -> bool {
        if !self.acls.enabled() {
            return true;
        }
        let Some(peer) = ctx.peer else {
            return true;
        };
        let authorizer = self.acls.authorizer();
        let decision = authorizer.authorize_with_reason(
            &ctx.principal,
            peer.ip(),
            operation,
            resource_type,
            name,
        );
        let allowed = decision.decision.is_allowed();
        if !allowed && audit {
            self.audit_denial(ctx, operation, (resource_type, name), &decision.reason);
        }
        allowed
    }

    /// The audit log's line for a denied request.
    pub(crate) fn audit_denial(
        &self,
        ctx: &RequestContext,
        operation: AclOperation,
        (resource_type, name): (ResourceType, &str),
        reason: &dyn std::fmt::Display,
    ) {
        tracing::info!(
            target: "weir::audit",
            principal = %ctx.principal,
            operation = %operation,
            resource = %format_args!("{resource_type}:{name}"),
            client = %ctx.peer.map_or_else(|| "-".to_owned(), |peer| peer.to_string()),
            api = ?ctx.api_key,
            reason = %reason,
            "denied"
        );
    }
}

/// The client's address; the unspecified address for the broker's own
/// requests, which are never checked.
fn client_ip(ctx: &RequestContext) -> IpAddr {
    ctx.peer
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |peer| peer.ip())
}
