//! DescribeUserScramCredentials (API key 50) and AlterUserScramCredentials
//! (API key 51): the SCRAM credentials SASL/SCRAM and SASL/PLAIN check
//! passwords against, kept in the metadata (replicated through the quorum
//! on a cluster), salted and hashed: the request carries a salted password
//! (the client salts it), the metadata keeps StoredKey and ServerKey only.
//!
//! Kafka's answers: a user described with no credential is
//! RESOURCE_NOT_FOUND; a user named twice in one request is
//! DUPLICATE_RESOURCE; an empty name, an empty salt or salted password, or
//! iterations outside 4096..=16384 is UNACCEPTABLE_CREDENTIAL; a mechanism
//! other than SCRAM-SHA-256 (1) and SCRAM-SHA-512 (2) is
//! UNSUPPORTED_SASL_MECHANISM; deleting a credential that is not there is
//! RESOURCE_NOT_FOUND. Each user's changes are applied or refused whole.

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use weir_auth::{AclOperation, ScramMechanism};
use weir_metadata::{ScramChange, ScramCredential};

use crate::admin::str_bytes;
use crate::{Broker, HandlerError, RequestContext};

/// Most users one request may name, so its answer stays bounded.
const USERS_PER_REQUEST_MAX: usize = 10_000;

/// Why one user's changes are refused; `None` when they are not.
type Answer = Option<(ResponseError, String)>;

pub(crate) async fn describe(
    broker: &Broker,
    ctx: &RequestContext,
    req: DescribeUserScramCredentialsRequest,
) -> Result<DescribeUserScramCredentialsResponse, HandlerError> {
    if !broker.allowed_on_cluster(ctx, AclOperation::Describe) {
        let denied = crate::acls::cluster_denied(ctx, AclOperation::Describe);
        return Ok(DescribeUserScramCredentialsResponse::default()
            .with_error_code(denied.code())
            .with_error_message(Some(str_bytes(denied.message))));
    }
    let mut by_user: BTreeMap<String, Vec<CredentialInfo>> = BTreeMap::new();
    for credential in broker.metadata().scram_credentials() {
        by_user.entry(credential.user).or_default().push(
            CredentialInfo::default()
                .with_mechanism(credential.mechanism)
                .with_iterations(credential.iterations),
        );
    }
    let response = DescribeUserScramCredentialsResponse::default();
    let results = match req.users {
        // Null or empty: every user with a credential.
        None => by_user
            .into_iter()
            .map(|(user, infos)| described(&user, Ok(infos)))
            .collect(),
        Some(users) if users.is_empty() => by_user
            .into_iter()
            .map(|(user, infos)| described(&user, Ok(infos)))
            .collect(),
        Some(users) if users.len() > USERS_PER_REQUEST_MAX => {
            return Ok(response
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(Some(str_bytes(format!(
                    "{} users is more than {USERS_PER_REQUEST_MAX} in one request",
                    users.len()
                )))));
        }
        Some(users) => {
            let names: Vec<String> = users.iter().map(|u| u.name.to_string()).collect();
            let mut seen: HashMap<&str, usize> = HashMap::new();
            for name in &names {
                *seen.entry(name).or_default() += 1;
            }
            let mut answered = std::collections::HashSet::new();
            let mut results = Vec::new();
            for name in &names {
                if !answered.insert(name.as_str()) {
                    continue;
                }
                let outcome = if seen.get(name.as_str()).copied().unwrap_or(0) > 1 {
                    Err((
                        ResponseError::DuplicateResource,
                        format!(
                            "Cannot describe SCRAM credentials for the same user twice in a single request: {name}"
                        ),
                    ))
                } else {
                    by_user.get(name).cloned().ok_or_else(|| {
                        (
                            ResponseError::ResourceNotFound,
                            format!(
                                "Attempt to describe a user credential that does not exist: {name}"
                            ),
                        )
                    })
                };
                results.push(described(name, outcome));
            }
            results
        }
    };
    Ok(response.with_results(results))
}

fn described(
    user: &str,
    outcome: Result<Vec<CredentialInfo>, (ResponseError, String)>,
) -> DescribeUserScramCredentialsResult {
    let result =
        DescribeUserScramCredentialsResult::default().with_user(str_bytes(user.to_owned()));
    match outcome {
        Ok(infos) => result.with_credential_infos(infos),
        Err((code, message)) => result
            .with_error_code(code.code())
            .with_error_message(Some(str_bytes(message))),
    }
}

pub(crate) async fn alter(
    broker: &Broker,
    ctx: &RequestContext,
    req: AlterUserScramCredentialsRequest,
) -> Result<AlterUserScramCredentialsResponse, HandlerError> {
    let alterations = req.deletions.len() + req.upsertions.len();
    let refusal = if alterations > USERS_PER_REQUEST_MAX {
        Some((
            ResponseError::InvalidRequest,
            format!("{alterations} alterations is more than {USERS_PER_REQUEST_MAX}"),
        ))
    } else if !broker.allowed_on_cluster(ctx, AclOperation::Alter) {
        let denied = crate::acls::cluster_denied(ctx, AclOperation::Alter);
        Some((denied.code, denied.message))
    } else {
        None
    };
    if let Some((code, message)) = refusal {
        // No per-request error field: every user named is refused.
        let users = req
            .deletions
            .iter()
            .map(|d| d.name.to_string())
            .chain(req.upsertions.iter().map(|u| u.name.to_string()));
        let results = crate::api::first_of_each(users.collect(), Clone::clone)
            .into_iter()
            .map(|user| altered(&user, Some((code, message.clone()))))
            .collect();
        return Ok(AlterUserScramCredentialsResponse::default().with_results(results));
    }
    let existing = broker.metadata().scram_credentials();
    // Each user's changes, in request order, and the first reason to refuse them.
    let mut users: Vec<(String, Vec<ScramChange>, Answer)> = Vec::new();
    let mut pairs: HashMap<(String, i8), usize> = HashMap::new();
    let slot = |users: &mut Vec<(String, Vec<ScramChange>, Answer)>, name: &str| match users
        .iter()
        .position(|(u, _, _)| u == name)
    {
        Some(at) => at,
        None => {
            users.push((name.to_owned(), Vec::new(), None));
            users.len() - 1
        }
    };
    for deletion in &req.deletions {
        let name = deletion.name.to_string();
        let at = slot(&mut users, &name);
        *pairs.entry((name.clone(), deletion.mechanism)).or_default() += 1;
        let refused = check_name_and_mechanism(&name, deletion.mechanism).or_else(|| {
            (!existing
                .iter()
                .any(|c| c.user == name && c.mechanism == deletion.mechanism))
            .then(|| {
                (
                    ResponseError::ResourceNotFound,
                    format!("Attempt to delete a user credential that does not exist: {name}"),
                )
            })
        });
        let (_, changes, answer) = &mut users[at];
        if answer.is_none() {
            *answer = refused;
        }
        changes.push(ScramChange::Delete {
            user: name,
            mechanism: deletion.mechanism,
        });
    }
    for upsertion in &req.upsertions {
        let name = upsertion.name.to_string();
        let at = slot(&mut users, &name);
        *pairs
            .entry((name.clone(), upsertion.mechanism))
            .or_default() += 1;
        let credential = credential_of(
            &name,
            upsertion.mechanism,
            upsertion.iterations,
            &upsertion.salt,
            &upsertion.salted_password,
        );
        let (_, changes, answer) = &mut users[at];
        match credential {
            Ok(credential) => changes.push(ScramChange::Upsert(credential)),
            Err(refused) => {
                if answer.is_none() {
                    *answer = Some(refused);
                }
            }
        }
    }
    for ((user, _), count) in &pairs {
        if *count > 1
            && let Some((_, _, answer)) = users.iter_mut().find(|(u, _, _)| u == user)
        {
            *answer = Some((
                ResponseError::DuplicateResource,
                format!("A user credential cannot be altered twice in the same request: {user}"),
            ));
        }
    }
    // The users whose changes all passed are committed together.
    let accepted: Vec<ScramChange> = users
        .iter()
        .filter(|(_, _, answer)| answer.is_none())
        .flat_map(|(_, changes, _)| changes.iter().cloned())
        .collect();
    let committed: Answer = if accepted.is_empty() {
        None
    } else {
        broker
            .metadata()
            .alter_scram_credentials(&accepted)
            .err()
            .map(|e| {
                let error = crate::ApiError::from(e);
                (error.code, error.message)
            })
    };
    let results = users
        .into_iter()
        .map(|(user, _, answer)| {
            let answer = answer.or_else(|| committed.clone());
            if answer.is_none() {
                // Who holds which mechanism is for the audit trail; the
                // credential itself is never logged.
                tracing::info!(user = %user, "SCRAM credentials altered");
            }
            altered(&user, answer)
        })
        .collect();
    Ok(AlterUserScramCredentialsResponse::default().with_results(results))
}

/// Why a user name or mechanism cannot be used, if it cannot.
fn check_name_and_mechanism(name: &str, mechanism: i8) -> Answer {
    if name.is_empty() {
        return Some((
            ResponseError::UnacceptableCredential,
            "Username must not be empty".to_owned(),
        ));
    }
    if ScramMechanism::from_type_id(mechanism).is_none() {
        return Some((
            ResponseError::UnsupportedSaslMechanism,
            format!(
                "Unknown SCRAM mechanism type {mechanism}: 1 is SCRAM-SHA-256, 2 SCRAM-SHA-512"
            ),
        ));
    }
    None
}

/// The credential an upsertion sets: StoredKey and ServerKey derived from
/// the salted password, which is not kept.
fn credential_of(
    name: &str,
    mechanism: i8,
    iterations: i32,
    salt: &[u8],
    salted_password: &[u8],
) -> Result<ScramCredential, (ResponseError, String)> {
    if let Some(refused) = check_name_and_mechanism(name, mechanism) {
        return Err(refused);
    }
    let unacceptable = |why: String| (ResponseError::UnacceptableCredential, why);
    let Some(scram) = ScramMechanism::from_type_id(mechanism) else {
        return Err(unacceptable("unknown mechanism".into()));
    };
    if salted_password.is_empty() {
        return Err(unacceptable("Salted password must not be empty".into()));
    }
    let rounds = u32::try_from(iterations).unwrap_or(0);
    let derived = weir_auth::ScramCredential::from_salted_password(
        scram,
        salted_password,
        salt.to_vec(),
        rounds,
    )
    .map_err(|e| unacceptable(e.to_string()))?;
    Ok(ScramCredential {
        user: name.to_owned(),
        mechanism,
        salt: derived.salt,
        stored_key: derived.stored_key,
        server_key: derived.server_key,
        iterations,
    })
}

fn altered(user: &str, answer: Answer) -> AlterUserScramCredentialsResult {
    let result = AlterUserScramCredentialsResult::default().with_user(str_bytes(user.to_owned()));
    match answer {
        None => result,
        Some((code, message)) => result
            .with_error_code(code.code())
            .with_error_message(Some(str_bytes(message))),
    }
}
