//! CreateAcls (API key 30), DescribeAcls (29) and DeleteAcls (31): the ACL
//! bindings kept in the metadata (replicated through the quorum on a
//! cluster), which the broker's authorizer (`crate::acls`) decides with.
//!
//! Kafka's answers: without an authorizer (`authorizer.class.name` unset)
//! each is SECURITY_DISABLED; creating or deleting needs ALTER on the
//! cluster and describing DESCRIBE, else CLUSTER_AUTHORIZATION_FAILED; a
//! binding that is not concrete (an UNKNOWN or ANY type, operation or
//! permission, a MATCH or ANY pattern), an empty name, a cluster not named
//! `kafka-cluster`, a principal that is not `Type:name` or a host that is
//! neither `*` nor an address is INVALID_REQUEST, as is a filter with an
//! UNKNOWN value. Creating a binding that exists is a success that keeps
//! it once. A filter of DeleteAcls answers the bindings it removed.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;
use weir_auth::{
    AclBinding, AclBindingFilter, AclOperation, AclPermissionType, PatternType, ResourceType,
};
use weir_metadata::AclChange;

use crate::acls::{binding_of, entry_of};
use crate::admin::str_bytes;
use crate::{Broker, HandlerError, RequestContext};

/// Most bindings one CreateAcls may create, and filters one DeleteAcls may
/// carry: each filter is matched against every binding kept.
const ITEMS_PER_REQUEST_MAX: usize = 1_000;

const SECURITY_DISABLED: &str = "No Authorizer is configured on the broker";

/// A refusal of the whole request, or of each of its items.
fn refusal(
    broker: &Broker,
    ctx: &RequestContext,
    operation: AclOperation,
) -> Option<(ResponseError, String)> {
    if !broker.acls.enabled() {
        return Some((ResponseError::SecurityDisabled, SECURITY_DISABLED.into()));
    }
    if !broker.allowed_on_cluster(ctx, operation) {
        return Some((
            ResponseError::ClusterAuthorizationFailed,
            format!("{} may not {operation} the cluster's ACLs", ctx.principal),
        ));
    }
    None
}

fn message(text: impl Into<String>) -> Option<StrBytes> {
    Some(str_bytes(text.into()))
}

pub(crate) async fn create(
    broker: &Broker,
    ctx: &RequestContext,
    req: CreateAclsRequest,
) -> Result<CreateAclsResponse, HandlerError> {
    let failed = |count: usize, code: ResponseError, why: &str| {
        CreateAclsResponse::default().with_results(
            (0..count)
                .map(|_| {
                    AclCreationResult::default()
                        .with_error_code(code.code())
                        .with_error_message(message(why))
                })
                .collect(),
        )
    };
    if let Some((code, why)) = refusal(broker, ctx, AclOperation::Alter) {
        return Ok(failed(req.creations.len(), code, &why));
    }
    if req.creations.len() > ITEMS_PER_REQUEST_MAX {
        let why = format!(
            "{} bindings is more than {ITEMS_PER_REQUEST_MAX} in one request",
            req.creations.len()
        );
        return Ok(failed(
            req.creations.len(),
            ResponseError::InvalidRequest,
            &why,
        ));
    }
    let checked: Vec<Result<AclBinding, String>> = req
        .creations
        .into_iter()
        .map(|creation| {
            let binding = AclBinding {
                resource_type: ResourceType::from_code(creation.resource_type),
                resource_name: creation.resource_name.to_string(),
                pattern_type: PatternType::from_code(creation.resource_pattern_type),
                principal: creation.principal.to_string(),
                host: creation.host.to_string(),
                operation: AclOperation::from_code(creation.operation),
                permission: AclPermissionType::from_code(creation.permission_type),
            };
            binding
                .validate()
                .map(|()| binding)
                .map_err(|e| e.to_string())
        })
        .collect();
    let changes: Vec<AclChange> = checked
        .iter()
        .filter_map(|binding| binding.as_ref().ok())
        .map(|binding| AclChange::Create(entry_of(binding)))
        .collect();
    let stored = if changes.is_empty() {
        Ok(())
    } else {
        broker.metadata().alter_acls(&changes)
    };
    broker.acls.refresh(broker.metadata().as_ref());
    let stored = stored.map_err(crate::ApiError::from);
    for binding in checked.iter().flatten() {
        match &stored {
            Ok(()) => tracing::info!(principal = %ctx.principal, acl = %binding, "ACL created"),
            Err(e) => tracing::warn!(acl = %binding, error = %e, "ACL not created"),
        }
    }
    let results = checked
        .into_iter()
        .map(|binding| {
            let result = AclCreationResult::default();
            match (binding, &stored) {
                (Err(why), _) => result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(message(why)),
                (Ok(_), Err(e)) => result
                    .with_error_code(e.code())
                    .with_error_message(message(e.message.clone())),
                (Ok(_), Ok(())) => result,
            }
        })
        .collect();
    Ok(CreateAclsResponse::default().with_results(results))
}

/// A filter as DescribeAcls and DeleteAcls carry it.
struct WireFilter {
    resource_type: i8,
    resource_name: Option<StrBytes>,
    pattern_type: i8,
    principal: Option<StrBytes>,
    host: Option<StrBytes>,
    operation: i8,
    permission_type: i8,
}

impl WireFilter {
    fn filter(self) -> Result<AclBindingFilter, String> {
        let filter = AclBindingFilter {
            resource_type: ResourceType::from_code(self.resource_type),
            resource_name: self.resource_name.map(|name| name.to_string()),
            pattern_type: PatternType::from_code(self.pattern_type),
            principal: self.principal.map(|principal| principal.to_string()),
            host: self.host.map(|host| host.to_string()),
            operation: AclOperation::from_code(self.operation),
            permission: AclPermissionType::from_code(self.permission_type),
        };
        if filter.is_unknown() {
            return Err(format!("the filter {filter} has an UNKNOWN value"));
        }
        Ok(filter)
    }
}

impl From<&DeleteAclsFilter> for WireFilter {
    fn from(f: &DeleteAclsFilter) -> Self {
        Self {
            resource_type: f.resource_type_filter,
            resource_name: f.resource_name_filter.clone(),
            pattern_type: f.pattern_type_filter,
            principal: f.principal_filter.clone(),
            host: f.host_filter.clone(),
            operation: f.operation,
            permission_type: f.permission_type,
        }
    }
}

pub(crate) async fn describe(
    broker: &Broker,
    ctx: &RequestContext,
    req: DescribeAclsRequest,
) -> Result<DescribeAclsResponse, HandlerError> {
    if let Some((code, why)) = refusal(broker, ctx, AclOperation::Describe) {
        return Ok(DescribeAclsResponse::default()
            .with_error_code(code.code())
            .with_error_message(message(why)));
    }
    let filter = WireFilter {
        resource_type: req.resource_type_filter,
        resource_name: req.resource_name_filter,
        pattern_type: req.pattern_type_filter,
        principal: req.principal_filter,
        host: req.host_filter,
        operation: req.operation,
        permission_type: req.permission_type,
    }
    .filter();
    let filter = match filter {
        Ok(filter) => filter,
        Err(why) => {
            return Ok(DescribeAclsResponse::default()
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(message(why)));
        }
    };
    // The stored bindings, not the authorizer's copy: what was committed.
    let (_, entries) = broker.metadata().acls();
    let mut by_resource: BTreeMap<(i8, String, i8), Vec<AclDescription>> = BTreeMap::new();
    for binding in entries.iter().map(binding_of).filter(|b| filter.matches(b)) {
        by_resource
            .entry((
                binding.resource_type.code(),
                binding.resource_name.clone(),
                binding.pattern_type.code(),
            ))
            .or_default()
            .push(
                AclDescription::default()
                    .with_principal(str_bytes(binding.principal))
                    .with_host(str_bytes(binding.host))
                    .with_operation(binding.operation.code())
                    .with_permission_type(binding.permission.code()),
            );
    }
    let resources = by_resource
        .into_iter()
        .map(|((resource_type, name, pattern_type), acls)| {
            DescribeAclsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(str_bytes(name))
                .with_pattern_type(pattern_type)
                .with_acls(acls)
        })
        .collect();
    Ok(DescribeAclsResponse::default().with_resources(resources))
}

pub(crate) async fn delete(
    broker: &Broker,
    ctx: &RequestContext,
    req: DeleteAclsRequest,
) -> Result<DeleteAclsResponse, HandlerError> {
    let failed = |count: usize, code: ResponseError, why: &str| {
        DeleteAclsResponse::default().with_filter_results(
            (0..count)
                .map(|_| {
                    DeleteAclsFilterResult::default()
                        .with_error_code(code.code())
                        .with_error_message(message(why))
                })
                .collect(),
        )
    };
    if let Some((code, why)) = refusal(broker, ctx, AclOperation::Alter) {
        return Ok(failed(req.filters.len(), code, &why));
    }
    if req.filters.len() > ITEMS_PER_REQUEST_MAX {
        let why = format!(
            "{} filters is more than {ITEMS_PER_REQUEST_MAX} in one request",
            req.filters.len()
        );
        return Ok(failed(
            req.filters.len(),
            ResponseError::InvalidRequest,
            &why,
        ));
    }
    let (_, entries) = broker.metadata().acls();
    let bindings: Vec<AclBinding> = entries.iter().map(binding_of).collect();
    let matched: Vec<Result<Vec<&AclBinding>, String>> = req
        .filters
        .iter()
        .map(|filter| {
            WireFilter::from(filter)
                .filter()
                .map(|filter| bindings.iter().filter(|b| filter.matches(b)).collect())
        })
        .collect();
    let mut removed: Vec<&AclBinding> = matched.iter().flatten().flatten().copied().collect();
    removed.sort();
    removed.dedup();
    let changes: Vec<AclChange> = removed
        .iter()
        .map(|binding| AclChange::Delete(entry_of(binding)))
        .collect();
    let stored = if changes.is_empty() {
        Ok(())
    } else {
        broker.metadata().alter_acls(&changes)
    };
    broker.acls.refresh(broker.metadata().as_ref());
    let stored = stored.map_err(crate::ApiError::from);
    if stored.is_ok() {
        for binding in &removed {
            tracing::info!(principal = %ctx.principal, acl = %binding, "ACL deleted");
        }
    }
    let results = matched
        .into_iter()
        .map(|matched| {
            let result = DeleteAclsFilterResult::default();
            match (matched, &stored) {
                (Err(why), _) => result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(message(why)),
                (Ok(_), Err(e)) => result
                    .with_error_code(e.code())
                    .with_error_message(message(e.message.clone())),
                (Ok(bindings), Ok(())) => result.with_matching_acls(
                    bindings
                        .into_iter()
                        .map(|binding| {
                            DeleteAclsMatchingAcl::default()
                                .with_resource_type(binding.resource_type.code())
                                .with_resource_name(str_bytes(binding.resource_name.clone()))
                                .with_pattern_type(binding.pattern_type.code())
                                .with_principal(str_bytes(binding.principal.clone()))
                                .with_host(str_bytes(binding.host.clone()))
                                .with_operation(binding.operation.code())
                                .with_permission_type(binding.permission.code())
                        })
                        .collect(),
                ),
            }
        })
        .collect();
    Ok(DeleteAclsResponse::default().with_filter_results(results))
}
