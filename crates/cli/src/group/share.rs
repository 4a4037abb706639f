//! `weir group describe` of a share group (KIP-932): its members
//! (ShareGroupDescribe), each partition's start offset
//! (DescribeShareGroupOffsets) and lag to the log end, its dead-letter
//! topic (the group config), and what it has in flight per partition
//! (records acquired, redeliverable, backing off, dead-lettering, and
//! their delivery counts) from the broker's admin API
//! (`GET /v1/share-groups/{group}`), when it answers.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::describe_share_group_offsets_request::DescribeShareGroupOffsetsRequestGroup;
use kafka_protocol::messages::{DescribeShareGroupOffsetsRequest, ShareGroupDescribeRequest};
use serde_json::{Value, json};
use weir_client::{Client, LATEST_TIMESTAMP, Led, check_message};

use super::{group_configs, group_id, non_empty, partitions_of};
use crate::{Result, print_json};

/// Kafka's error codes for a group that is not a share group.
const GROUP_ID_NOT_FOUND: i16 = 69;
const INVALID_GROUP_TYPE: i16 = 129;
/// The version sent (what Kafka 4.1's admin client sends).
const DESCRIBE_VERSION: i16 = 1;

/// One member, as shown.
struct Member {
    id: String,
    client_id: String,
    host: String,
    assignment: Vec<(String, i32)>,
}

/// Describe `group` if it is a share group; `Ok(false)` when it is not
/// (or the broker serves no share groups), for the other describe.
pub(super) fn describe(
    client: &mut Client,
    admin: &crate::admin_api::AdminTarget,
    group: &str,
    json_out: bool,
) -> Result<bool> {
    let coordinator = client.coordinator(group)?;
    if !client.serves::<ShareGroupDescribeRequest>(coordinator)? {
        return Ok(false);
    }
    let request = ShareGroupDescribeRequest::default().with_group_ids(vec![group_id(group)]);
    let response = client.send_to(coordinator, &request, DESCRIBE_VERSION)?;
    let Some(described) = response.groups.into_iter().next() else {
        return Ok(false);
    };
    if matches!(
        described.error_code,
        GROUP_ID_NOT_FOUND | INVALID_GROUP_TYPE
    ) {
        return Ok(false);
    }
    check_message(
        described.error_code,
        described.error_message.as_ref(),
        || format!("cannot describe share group {group}"),
    )?;
    let members: Vec<Member> = described
        .members
        .iter()
        .map(|m| Member {
            id: m.member_id.to_string(),
            client_id: m.client_id.to_string(),
            host: m.client_host.to_string(),
            assignment: m
                .assignment
                .topic_partitions
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .map(|p| (t.topic_name.0.to_string(), *p))
                })
                .collect(),
        })
        .collect();
    // Each partition's start offset.
    let request = DescribeShareGroupOffsetsRequest::default().with_groups(vec![
        DescribeShareGroupOffsetsRequestGroup::default()
            .with_group_id(group_id(group))
            .with_topics(None),
    ]);
    let offsets = client.send_to(coordinator, &request, 0)?;
    let mut starts: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for g in offsets.groups {
        check_message(g.error_code, g.error_message.as_ref(), || {
            format!("cannot describe the offsets of share group {group}")
        })?;
        for t in g.topics {
            for p in t.partitions {
                if p.error_code == 0 && p.start_offset >= 0 {
                    starts.insert(
                        (t.topic_name.0.to_string(), p.partition_index),
                        p.start_offset,
                    );
                }
            }
        }
    }
    let dead_letter_topic = group_configs(client, group)?
        .into_iter()
        .find(|(name, _, _)| name == "errors.deadletterqueue.topic.name")
        .map(|(_, value, _)| value)
        .filter(|v| !v.is_empty());
    let keys: BTreeSet<(String, i32)> = starts
        .keys()
        .cloned()
        .chain(members.iter().flat_map(|m| m.assignment.iter().cloned()))
        .collect();
    let topics: Vec<String> = keys
        .iter()
        .map(|(t, _)| t.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let led: Vec<Led> = partitions_of(client, &topics)?
        .into_iter()
        .filter(|l| keys.contains(&(l.topic.clone(), l.partition)))
        .collect();
    let ends = client.list_offsets(&led, LATEST_TIMESTAMP)?;
    // What is in flight, from the admin API of the broker asked.
    let in_flight = crate::admin_api::AdminApi::new(admin)
        .and_then(|api| api.get(&["v1", "share-groups", group], &[]));
    let in_flight: Result<BTreeMap<(String, i32), Value>> = in_flight.map(|answer| {
        answer["partitions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let topic = p["topic"].as_str()?.to_owned();
                let partition = i32::try_from(p["partition"].as_i64()?).ok()?;
                Some(((topic, partition), p.clone()))
            })
            .collect()
    });
    let owners: BTreeMap<(String, i32), Vec<String>> =
        members.iter().fold(BTreeMap::new(), |mut acc, m| {
            for key in &m.assignment {
                acc.entry(key.clone()).or_default().push(m.id.clone());
            }
            acc
        });
    let rows: Vec<Value> = keys
        .iter()
        .map(|key| {
            let start = starts.get(key).copied();
            let end = ends.get(key).copied().flatten();
            let flight = in_flight.as_ref().ok().and_then(|f| f.get(key));
            let count = |name: &str| flight.and_then(|f| f[name].as_u64());
            json!({
                "topic": key.0,
                "partition": key.1,
                "start_offset": start,
                "log_end_offset": end,
                "lag": start.zip(end).map(|(s, e)| (e - s).max(0)),
                "acquired": count("acquired"),
                "redeliverable": count("redeliverable"),
                "backing_off": count("backing_off"),
                "dead_lettering": count("dead_lettering"),
                "delivery_counts": flight.map(|f| f["delivery_counts"].clone()),
                "member_ids": owners.get(key).cloned().unwrap_or_default(),
            })
        })
        .collect();
    let state = non_empty(described.group_state.as_str()).unwrap_or("Empty");
    if json_out {
        print_json(&json!({
            "group": group,
            "type": "share",
            "state": state,
            "group_epoch": described.group_epoch,
            "dead_letter_topic": dead_letter_topic,
            "members": members.iter().map(|m| json!({
                "member_id": m.id,
                "client_id": m.client_id,
                "host": m.host,
                "assignment": m.assignment.iter().map(|(t, p)| json!({"topic": t, "partition": p})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "partitions": rows,
            "in_flight_from": match &in_flight {
                Ok(_) => json!(admin.url),
                Err(_) => Value::Null,
            },
        }))?;
        return Ok(true);
    }
    let mut out = format!(
        "group: {group}\ntype: share\nstate: {state}\ngroup epoch: {}\nmembers: {}\ndead-letter topic: {}\n",
        described.group_epoch,
        members.len(),
        dead_letter_topic
            .as_deref()
            .unwrap_or("- (none: records given up on are archived)"),
    );
    if !members.is_empty() {
        let mut table = vec![
            ["MEMBER", "CLIENT-ID", "HOST", "ASSIGNMENT"]
                .map(str::to_owned)
                .to_vec(),
        ];
        for m in &members {
            let shown: Vec<String> = m
                .assignment
                .iter()
                .map(|(t, p)| format!("{t}/{p}"))
                .collect();
            table.push(vec![
                m.id.clone(),
                non_empty(&m.client_id).unwrap_or("-").to_owned(),
                non_empty(&m.host).unwrap_or("-").to_owned(),
                if shown.is_empty() {
                    "-".to_owned()
                } else {
                    shown.join(",")
                },
            ]);
        }
        out.push('\n');
        out.push_str(&crate::table(&table));
    }
    out.push('\n');
    let mut table = vec![
        [
            "TOPIC",
            "PARTITION",
            "START-OFFSET",
            "LOG-END",
            "LAG",
            "ACQUIRED",
            "REDELIVERABLE",
            "BACKING-OFF",
            "DEAD-LETTERING",
            "DELIVERY-COUNTS",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    let show = |v: &Value| {
        if v.is_null() {
            "-".to_owned()
        } else {
            v.to_string()
        }
    };
    for r in &rows {
        let counts = r["delivery_counts"]
            .as_object()
            .map(|c| {
                let shown: Vec<String> = c.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                if shown.is_empty() {
                    "-".to_owned()
                } else {
                    shown.join(" ")
                }
            })
            .unwrap_or_else(|| "-".to_owned());
        table.push(vec![
            r["topic"].as_str().unwrap_or_default().to_owned(),
            show(&r["partition"]),
            show(&r["start_offset"]),
            show(&r["log_end_offset"]),
            show(&r["lag"]),
            show(&r["acquired"]),
            show(&r["redeliverable"]),
            show(&r["backing_off"]),
            show(&r["dead_lettering"]),
            counts,
        ]);
    }
    out.push_str(&crate::table(&table));
    crate::print_out(&out)?;
    if let Err(e) = in_flight {
        eprintln!(
            "note: records in flight are not shown: the admin API at {} did not answer ({e}); set --admin-url",
            admin.url
        );
    }
    Ok(true)
}
