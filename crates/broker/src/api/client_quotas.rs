//! DescribeClientQuotas (API key 48) and AlterClientQuotas (49): the client
//! quota values kept in the metadata (replicated through the quorum on a
//! cluster), which `crate::quotas` measures clients against.
//!
//! Kafka's answers: describing needs DESCRIBE_CONFIGS on the cluster and
//! altering ALTER_CONFIGS, else CLUSTER_AUTHORIZATION_FAILED. An entity
//! names each of `user`, `client-id` and `ip` at most once, and `ip` alone;
//! a name is `None` for the default entity and otherwise not empty, at
//! most 1,024 bytes (an ip an address). Users and client ids take `producer_byte_rate`,
//! `consumer_byte_rate` (whole numbers), `request_percentage` and
//! `controller_mutation_rate`; an ip takes `connection_creation_rate` (a
//! whole number). A value is finite and above zero. Anything else is
//! INVALID_REQUEST, for that entry, and an entry's ops name each key once.
//! A describe filter's match type is 0 (the name given), 1 (the default)
//! or 2 (any name, the default included); with `strict`, entities with
//! components the filter does not name are left out.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_client_quotas_request::EntryData as AlterEntry;
use kafka_protocol::messages::alter_client_quotas_response::{
    EntityData as AlteredEntity, EntryData as AlteredEntry,
};
use kafka_protocol::messages::describe_client_quotas_response::{
    EntityData as DescribedEntity, EntryData as DescribedEntry, ValueData,
};
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse,
};
use weir_auth::AclOperation;
use weir_metadata::{ClientQuota, ClientQuotaChange, QuotaEntityPart};

use crate::admin::str_bytes;
use crate::quotas::{CLIENT_ID, CLIENT_KEYS, CONNECTION_CREATION_RATE, IP, USER};
use crate::{ApiError, Broker, HandlerError, RequestContext};

/// Most entries one AlterClientQuotas may carry.
const ENTRIES_PER_REQUEST_MAX: usize = 1_000;

/// Longest entity name kept (a user, a client id, an address), as ACLs
/// bound their resource names.
const ENTITY_NAME_BYTES_MAX: usize = 1024;

/// Match types of a describe filter's component.
const MATCH_EXACT: i8 = 0;
const MATCH_DEFAULT: i8 = 1;
const MATCH_ANY: i8 = 2;

fn invalid(why: impl Into<String>) -> ApiError {
    ApiError::new(ResponseError::InvalidRequest, why.into())
}

/// An entity's parts, checked and ordered by entity type.
fn entity_of(parts: Vec<(String, Option<String>)>) -> Result<Vec<QuotaEntityPart>, ApiError> {
    if parts.is_empty() {
        return Err(invalid("a quota entity names at least one entity type"));
    }
    let mut entity = Vec::with_capacity(parts.len());
    for (entity_type, name) in parts {
        if ![USER, CLIENT_ID, IP].contains(&entity_type.as_str()) {
            return Err(invalid(format!(
                "unknown entity type '{entity_type}': user, client-id or ip"
            )));
        }
        if entity
            .iter()
            .any(|p: &QuotaEntityPart| p.entity_type == entity_type)
        {
            return Err(invalid(format!(
                "entity type '{entity_type}' is named twice"
            )));
        }
        match name.as_deref() {
            Some("") => {
                return Err(invalid(format!(
                    "the {entity_type} name is empty: name one, or give none for the default"
                )));
            }
            Some(long) if long.len() > ENTITY_NAME_BYTES_MAX => {
                return Err(invalid(format!(
                    "the {entity_type} name is {} bytes, more than {ENTITY_NAME_BYTES_MAX}",
                    long.len()
                )));
            }
            Some(ip) if entity_type == IP && ip.parse::<std::net::IpAddr>().is_err() => {
                return Err(invalid(format!("'{ip}' is not an IP address")));
            }
            _ => {}
        }
        entity.push(QuotaEntityPart { entity_type, name });
    }
    if entity.len() > 1 && entity.iter().any(|p| p.entity_type == IP) {
        return Err(invalid(
            "an ip entity cannot be combined with a user or client-id",
        ));
    }
    entity.sort();
    Ok(entity)
}

/// Check one entry of AlterClientQuotas and turn it into changes.
fn changes_of(entry: &AlterEntry) -> Result<Vec<ClientQuotaChange>, ApiError> {
    let entity = entity_of(
        entry
            .entity
            .iter()
            .map(|e| {
                (
                    e.entity_type.to_string(),
                    e.entity_name.as_ref().map(|n| n.to_string()),
                )
            })
            .collect(),
    )?;
    let is_ip = entity.iter().any(|p| p.entity_type == IP);
    let mut changes: Vec<ClientQuotaChange> = Vec::with_capacity(entry.ops.len());
    for op in &entry.ops {
        let key = op.key.as_str();
        let whole = if is_ip {
            (key == CONNECTION_CREATION_RATE).then_some(true)
        } else {
            CLIENT_KEYS.iter().find(|(k, _)| *k == key).map(|(_, w)| *w)
        };
        let Some(whole) = whole else {
            let kind = if is_ip {
                "an ip"
            } else {
                "a user or client-id"
            };
            return Err(invalid(format!("'{key}' is not a quota of {kind}")));
        };
        if changes.iter().any(|c| c.key == key) {
            return Err(invalid(format!("'{key}' is changed twice")));
        }
        let value = if op.remove {
            None
        } else {
            let v = op.value;
            if !v.is_finite() || v <= 0.0 || (whole && v.fract() != 0.0) {
                let what = if whole { "a whole number" } else { "a number" };
                return Err(invalid(format!("{key} must be {what} above zero, not {v}")));
            }
            Some(v)
        };
        changes.push(ClientQuotaChange {
            entity: entity.clone(),
            key: key.to_owned(),
            value,
        });
    }
    Ok(changes)
}

pub(crate) async fn alter(
    broker: &Broker,
    ctx: &RequestContext,
    req: AlterClientQuotasRequest,
) -> Result<AlterClientQuotasResponse, HandlerError> {
    let refused = if !broker.allowed_on_cluster(ctx, AclOperation::AlterConfigs) {
        Some(crate::acls::cluster_denied(ctx, AclOperation::AlterConfigs))
    } else if req.entries.len() > ENTRIES_PER_REQUEST_MAX {
        Some(invalid(format!(
            "{} entries is more than {ENTRIES_PER_REQUEST_MAX} in one request",
            req.entries.len()
        )))
    } else {
        None
    };
    let checked: Vec<Result<Vec<ClientQuotaChange>, ApiError>> = req
        .entries
        .iter()
        .map(|entry| match &refused {
            Some(why) => Err(why.clone()),
            None => changes_of(entry),
        })
        .collect();
    let changes: Vec<ClientQuotaChange> = checked.iter().flatten().flatten().cloned().collect();
    let stored = if req.validate_only || changes.is_empty() {
        Ok(())
    } else {
        let stored = broker.metadata().alter_client_quotas(&changes);
        broker.quotas.refresh(broker.metadata().as_ref());
        stored.map_err(ApiError::from)
    };
    if !req.validate_only {
        for change in &changes {
            match &stored {
                Ok(()) => tracing::info!(principal = %ctx.principal,
                    entity = %describe_entity(&change.entity), key = %change.key,
                    value = ?change.value, "client quota altered"),
                Err(e) => tracing::warn!(entity = %describe_entity(&change.entity),
                    key = %change.key, error = %e, "client quota not altered"),
            }
        }
    }
    let entries = req
        .entries
        .into_iter()
        .zip(checked)
        .map(|(entry, checked)| {
            let answer = AlteredEntry::default().with_entity(
                entry
                    .entity
                    .into_iter()
                    .map(|e| {
                        AlteredEntity::default()
                            .with_entity_type(e.entity_type)
                            .with_entity_name(e.entity_name)
                    })
                    .collect(),
            );
            let error = match (checked, &stored) {
                (Err(e), _) => Some(e),
                (Ok(_), Err(e)) => Some(e.clone()),
                (Ok(_), Ok(())) => None,
            };
            match error {
                Some(e) => answer
                    .with_error_code(e.code())
                    .with_error_message(Some(str_bytes(e.message))),
                None => answer,
            }
        })
        .collect();
    Ok(AlterClientQuotasResponse::default().with_entries(entries))
}

/// `user=alice, client-id=<default>`, for logs.
pub(crate) fn describe_entity(entity: &[QuotaEntityPart]) -> String {
    entity
        .iter()
        .map(|p| {
            format!(
                "{}={}",
                p.entity_type,
                p.name.as_deref().unwrap_or("<default>")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a describe filter's component asks for.
enum Wanted {
    Exact(String),
    Default,
    Any,
}

pub(crate) async fn describe(
    broker: &Broker,
    ctx: &RequestContext,
    req: DescribeClientQuotasRequest,
) -> Result<DescribeClientQuotasResponse, HandlerError> {
    let failed = |e: ApiError| {
        DescribeClientQuotasResponse::default()
            .with_error_code(e.code())
            .with_error_message(Some(str_bytes(e.message)))
            .with_entries(None)
    };
    if !broker.allowed_on_cluster(ctx, AclOperation::DescribeConfigs) {
        return Ok(failed(crate::acls::cluster_denied(
            ctx,
            AclOperation::DescribeConfigs,
        )));
    }
    let mut filter: Vec<(String, Wanted)> = Vec::with_capacity(req.components.len());
    for component in &req.components {
        let entity_type = component.entity_type.to_string();
        if ![USER, CLIENT_ID, IP].contains(&entity_type.as_str()) {
            return Ok(failed(invalid(format!(
                "unknown entity type '{entity_type}': user, client-id or ip"
            ))));
        }
        if filter.iter().any(|(t, _)| *t == entity_type) {
            return Ok(failed(invalid(format!(
                "entity type '{entity_type}' is filtered twice"
            ))));
        }
        let wanted = match (component.match_type, &component._match) {
            (MATCH_EXACT, Some(name)) => Wanted::Exact(name.to_string()),
            (MATCH_EXACT, None) => {
                return Ok(failed(invalid(
                    "an exact match (match type 0) names the entity",
                )));
            }
            (MATCH_DEFAULT, _) => Wanted::Default,
            (MATCH_ANY, _) => Wanted::Any,
            (other, _) => {
                return Ok(failed(invalid(format!(
                    "unknown match type {other}: 0 exact, 1 default, 2 any"
                ))));
            }
        };
        filter.push((entity_type, wanted));
    }
    let (_, values) = broker.metadata().client_quotas();
    let mut entries: Vec<DescribedEntry> = Vec::new();
    let mut last: Option<&[QuotaEntityPart]> = None;
    for quota in &values {
        if !matches(&quota.entity, &filter, req.strict) {
            continue;
        }
        if last != Some(quota.entity.as_slice()) {
            entries.push(DescribedEntry::default().with_entity(described_entity(quota)));
            last = Some(&quota.entity);
        }
        if let Some(entry) = entries.last_mut() {
            entry.values.push(
                ValueData::default()
                    .with_key(str_bytes(quota.key.clone()))
                    .with_value(quota.value),
            );
        }
    }
    Ok(DescribeClientQuotasResponse::default().with_entries(Some(entries)))
}

fn described_entity(quota: &ClientQuota) -> Vec<DescribedEntity> {
    quota
        .entity
        .iter()
        .map(|p| {
            DescribedEntity::default()
                .with_entity_type(str_bytes(p.entity_type.clone()))
                .with_entity_name(p.name.clone().map(str_bytes))
        })
        .collect()
}

fn matches(entity: &[QuotaEntityPart], filter: &[(String, Wanted)], strict: bool) -> bool {
    let each = filter.iter().all(|(entity_type, wanted)| {
        let Some(part) = entity.iter().find(|p| p.entity_type == *entity_type) else {
            return false;
        };
        match wanted {
            Wanted::Exact(name) => part.name.as_deref() == Some(name.as_str()),
            Wanted::Default => part.name.is_none(),
            Wanted::Any => true,
        }
    });
    each && (!strict || entity.len() == filter.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::alter_client_quotas_request::{EntityData, OpData};

    fn entry(parts: &[(&str, Option<&str>)], ops: &[(&str, f64, bool)]) -> AlterEntry {
        AlterEntry::default()
            .with_entity(
                parts
                    .iter()
                    .map(|(t, n)| {
                        EntityData::default()
                            .with_entity_type(str_bytes((*t).to_owned()))
                            .with_entity_name(n.map(|n| str_bytes(n.to_owned())))
                    })
                    .collect(),
            )
            .with_ops(
                ops.iter()
                    .map(|(k, v, remove)| {
                        OpData::default()
                            .with_key(str_bytes((*k).to_owned()))
                            .with_value(*v)
                            .with_remove(*remove)
                    })
                    .collect(),
            )
    }

    #[test]
    fn entries_kafka_refuses_are_invalid_requests() {
        let refused = [
            entry(&[], &[("producer_byte_rate", 1.0, false)]),
            entry(
                &[("tenant", Some("a"))],
                &[("producer_byte_rate", 1.0, false)],
            ),
            entry(
                &[(USER, Some("a")), (USER, None)],
                &[("producer_byte_rate", 1.0, false)],
            ),
            entry(
                &[(IP, Some("10.0.0.1")), (USER, None)],
                &[(CONNECTION_CREATION_RATE, 1.0, false)],
            ),
            entry(
                &[(IP, Some("host"))],
                &[(CONNECTION_CREATION_RATE, 1.0, false)],
            ),
            entry(&[(USER, Some(""))], &[("producer_byte_rate", 1.0, false)]),
            entry(
                &[(CLIENT_ID, Some(&"c".repeat(ENTITY_NAME_BYTES_MAX + 1)))],
                &[("producer_byte_rate", 1.0, false)],
            ),
            entry(
                &[(USER, Some("a"))],
                &[(CONNECTION_CREATION_RATE, 1.0, false)],
            ),
            entry(&[(IP, None)], &[("producer_byte_rate", 1.0, false)]),
            entry(&[(USER, Some("a"))], &[("producer_byte_rate", 1.5, false)]),
            entry(&[(USER, Some("a"))], &[("producer_byte_rate", 0.0, false)]),
            entry(
                &[(USER, Some("a"))],
                &[("request_percentage", f64::NAN, false)],
            ),
            entry(
                &[(USER, Some("a"))],
                &[
                    ("producer_byte_rate", 1.0, false),
                    ("producer_byte_rate", 0.0, true),
                ],
            ),
        ];
        for entry in &refused {
            let err = changes_of(entry).err();
            assert_eq!(
                err.map(|e| e.code()),
                Some(ResponseError::InvalidRequest.code()),
                "{entry:?}"
            );
        }
        let changes = changes_of(&entry(
            &[(CLIENT_ID, None), (USER, Some("alice"))],
            &[
                ("request_percentage", 12.5, false),
                ("consumer_byte_rate", 0.0, true),
            ],
        ))
        .unwrap();
        assert_eq!(changes.len(), 2);
        assert_eq!(
            describe_entity(&changes[0].entity),
            "client-id=<default>, user=alice"
        );
        assert_eq!(changes[1].value, None);
    }
}
