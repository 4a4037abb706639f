//! Server-side assignors of KIP-848 consumer groups: `uniform` (balanced
//! and sticky: partitions stay where they are unless balance needs them
//! elsewhere, so few are revoked when members come and go) and `range`
//! (each topic's partitions split in contiguous ranges over the members
//! subscribed to it, in member id order).

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

/// Partitions by topic id.
pub(crate) type TopicPartitions = BTreeMap<Uuid, BTreeSet<i32>>;

/// A topic as the assignor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TopicShape {
    pub id: Uuid,
    pub partitions: i32,
}

/// The assignors served, by the names clients ask for.
pub(crate) const UNIFORM: &str = "uniform";
/// See [`UNIFORM`].
pub(crate) const RANGE: &str = "range";

/// Whether `name` is a served assignor.
pub(crate) fn is_known(name: &str) -> bool {
    name == UNIFORM || name == RANGE
}

/// Compute a target assignment. `members` maps member id to subscribed
/// topic names; `topics` holds the subscribed topics that exist;
/// `previous` is the last target, which `uniform` keeps where it can.
pub(crate) fn assign(
    assignor: &str,
    members: &BTreeMap<String, BTreeSet<String>>,
    topics: &BTreeMap<String, TopicShape>,
    previous: &BTreeMap<String, TopicPartitions>,
) -> BTreeMap<String, TopicPartitions> {
    if assignor == RANGE {
        range(members, topics)
    } else {
        uniform(members, topics, previous)
    }
}

/// The members subscribed to topic `name`, in member id order.
fn subscribers<'a>(members: &'a BTreeMap<String, BTreeSet<String>>, name: &str) -> Vec<&'a String> {
    members
        .iter()
        .filter(|(_, subs)| subs.contains(name))
        .map(|(m, _)| m)
        .collect()
}

fn range(
    members: &BTreeMap<String, BTreeSet<String>>,
    topics: &BTreeMap<String, TopicShape>,
) -> BTreeMap<String, TopicPartitions> {
    let mut out: BTreeMap<String, TopicPartitions> = members
        .keys()
        .map(|m| (m.clone(), TopicPartitions::new()))
        .collect();
    for (name, shape) in topics {
        let subscribers = subscribers(members, name);
        let n = i32::try_from(subscribers.len()).unwrap_or(i32::MAX);
        if n == 0 {
            continue;
        }
        let (base, extra) = (shape.partitions / n, shape.partitions % n);
        let mut next = 0;
        for (i, member) in (0..).zip(subscribers) {
            let count = base + i32::from(i < extra);
            if count > 0
                && let Some(slot) = out.get_mut(member)
            {
                slot.entry(shape.id).or_default().extend(next..next + count);
            }
            next += count;
        }
    }
    out
}

fn uniform(
    members: &BTreeMap<String, BTreeSet<String>>,
    topics: &BTreeMap<String, TopicShape>,
    previous: &BTreeMap<String, TopicPartitions>,
) -> BTreeMap<String, TopicPartitions> {
    let names: BTreeMap<Uuid, &String> = topics.iter().map(|(n, s)| (s.id, n)).collect();
    let eligible = |member: &str, topic: Uuid| {
        names
            .get(&topic)
            .is_some_and(|name| members.get(member).is_some_and(|subs| subs.contains(*name)))
    };
    let valid = |topic: Uuid, p: i32| {
        names
            .get(&topic)
            .and_then(|n| topics.get(*n))
            .is_some_and(|s| (0..s.partitions).contains(&p))
    };
    // Keep what each member had, where it is still valid and not taken twice.
    let mut taken: BTreeSet<(Uuid, i32)> = BTreeSet::new();
    let mut held: BTreeMap<String, Vec<(Uuid, i32)>> = BTreeMap::new();
    for member in members.keys() {
        let mut mine = Vec::new();
        for (topic, parts) in previous.get(member).into_iter().flatten() {
            for p in parts {
                if eligible(member, *topic) && valid(*topic, *p) && taken.insert((*topic, *p)) {
                    mine.push((*topic, *p));
                }
            }
        }
        held.insert(member.clone(), mine);
    }
    let all: Vec<(Uuid, i32)> = topics
        .values()
        .filter(|s| members.keys().any(|m| eligible(m, s.id)))
        .flat_map(|s| (0..s.partitions).map(move |p| (s.id, p)))
        .collect();
    // Quotas: everyone gets total/n, the members already holding most get the remainder.
    let n = members.len().max(1);
    let (base, extra) = (all.len() / n, all.len() % n);
    let mut by_load: Vec<&String> = members.keys().collect();
    by_load.sort_by_key(|m| std::cmp::Reverse(held.get(*m).map_or(0, Vec::len)));
    let quota: BTreeMap<&String, usize> = by_load
        .iter()
        .enumerate()
        .map(|(i, m)| (*m, base + usize::from(i < extra)))
        .collect();
    for (member, mine) in held.iter_mut() {
        let limit = quota.get(member).copied().unwrap_or(0);
        while mine.len() > limit {
            if let Some(freed) = mine.pop() {
                taken.remove(&freed);
            }
        }
    }
    for partition in all {
        if taken.contains(&partition) {
            continue;
        }
        let pick = |respect_quota: bool| {
            held.iter()
                .filter(|(m, mine)| {
                    eligible(m, partition.0)
                        && (!respect_quota || mine.len() < quota.get(m).copied().unwrap_or(0))
                })
                .min_by_key(|(m, mine)| (mine.len(), (*m).clone()))
                .map(|(m, _)| m.clone())
        };
        if let Some(member) = pick(true).or_else(|| pick(false))
            && let Some(mine) = held.get_mut(&member)
        {
            mine.push(partition);
            taken.insert(partition);
        }
    }
    held.into_iter()
        .map(|(m, mine)| {
            let mut tp = TopicPartitions::new();
            for (topic, p) in mine {
                tp.entry(topic).or_default().insert(p);
            }
            (m, tp)
        })
        .collect()
}

/// The assignment of a share group (KIP-932's `simple` assignor), where
/// members may share a partition: for each topic, with at least as many
/// partitions as subscribers, partition `p` goes to subscriber `p mod n`;
/// with more subscribers than partitions, subscriber `i` gets partition
/// `i mod partitions`, so every subscriber gets one and every partition is
/// covered. Subscribers are taken in member id order.
pub(crate) fn share(
    members: &BTreeMap<String, BTreeSet<String>>,
    topics: &BTreeMap<String, TopicShape>,
) -> BTreeMap<String, TopicPartitions> {
    let mut out: BTreeMap<String, TopicPartitions> = members
        .keys()
        .map(|m| (m.clone(), TopicPartitions::new()))
        .collect();
    for (name, shape) in topics {
        let subscribers = subscribers(members, name);
        let (n, partitions) = (
            subscribers.len(),
            usize::try_from(shape.partitions).unwrap_or(0),
        );
        if n == 0 || partitions == 0 {
            continue;
        }
        let mut give = |i: usize, p: usize| {
            if let (Some(member), Ok(p)) = (subscribers.get(i), i32::try_from(p))
                && let Some(slot) = out.get_mut(*member)
            {
                slot.entry(shape.id).or_default().insert(p);
            }
        };
        if partitions >= n {
            (0..partitions).for_each(|p| give(p % n, p));
        } else {
            (0..n).for_each(|i| give(i, i % partitions));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(n: u128, partitions: i32) -> TopicShape {
        TopicShape {
            id: Uuid::from_u128(n),
            partitions,
        }
    }

    fn subs(members: &[&str], topics: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
        members
            .iter()
            .map(|m| {
                (
                    m.to_string(),
                    topics.iter().map(|t| t.to_string()).collect(),
                )
            })
            .collect()
    }

    fn count(a: &TopicPartitions) -> usize {
        a.values().map(BTreeSet::len).sum()
    }

    fn owners(out: &BTreeMap<String, TopicPartitions>) -> BTreeMap<(Uuid, i32), Vec<String>> {
        let mut o: BTreeMap<(Uuid, i32), Vec<String>> = BTreeMap::new();
        for (m, tp) in out {
            for (t, ps) in tp {
                for p in ps {
                    o.entry((*t, *p)).or_default().push(m.clone());
                }
            }
        }
        o
    }

    #[test]
    fn range_splits_each_topic_in_contiguous_ranges() {
        let topics = BTreeMap::from([("a".to_string(), topic(1, 5))]);
        let out = assign(
            RANGE,
            &subs(&["m1", "m2"], &["a"]),
            &topics,
            &BTreeMap::new(),
        );
        let id = Uuid::from_u128(1);
        assert_eq!(out["m1"][&id], BTreeSet::from([0, 1, 2]));
        assert_eq!(out["m2"][&id], BTreeSet::from([3, 4]));
    }

    #[test]
    fn uniform_balances_and_covers_every_partition_once() {
        let topics = BTreeMap::from([
            ("a".to_string(), topic(1, 4)),
            ("b".to_string(), topic(2, 3)),
        ]);
        let out = assign(
            UNIFORM,
            &subs(&["m1", "m2", "m3"], &["a", "b"]),
            &topics,
            &BTreeMap::new(),
        );
        let o = owners(&out);
        assert_eq!(o.len(), 7);
        assert!(o.values().all(|m| m.len() == 1));
        let counts: Vec<usize> = out.values().map(count).collect();
        assert!(counts.iter().all(|c| (2..=3).contains(c)), "{counts:?}");
    }

    #[test]
    fn uniform_moves_only_what_a_new_member_needs() {
        let topics = BTreeMap::from([("a".to_string(), topic(1, 6))]);
        let before = assign(
            UNIFORM,
            &subs(&["m1", "m2"], &["a"]),
            &topics,
            &BTreeMap::new(),
        );
        let after = assign(
            UNIFORM,
            &subs(&["m1", "m2", "m3"], &["a"]),
            &topics,
            &before,
        );
        for m in ["m1", "m2"] {
            let kept = after[m].values().flatten().count();
            assert_eq!(kept, 2);
            let was: BTreeSet<i32> = before[m].values().flatten().copied().collect();
            let now: BTreeSet<i32> = after[m].values().flatten().copied().collect();
            assert!(now.is_subset(&was), "{m} keeps partitions it had");
        }
        assert_eq!(count(&after["m3"]), 2);
    }

    #[test]
    fn share_covers_every_partition_and_shares_them_when_members_outnumber_them() {
        let topics: BTreeMap<String, TopicShape> = [
            ("t".to_string(), topic(1, 2)),
            ("u".to_string(), topic(2, 5)),
        ]
        .into();
        // Four members of `t` (two partitions): each partition twice.
        let out = share(&subs(&["a", "b", "c", "d"], &["t"]), &topics);
        let o = owners(&out);
        assert_eq!(o.len(), 2);
        assert!(o.values().all(|m| m.len() == 2), "{o:?}");
        assert!(out.values().all(|a| count(a) == 1));
        // Two members of `u` (five partitions): each partition once, 3 and 2.
        let out = share(&subs(&["a", "b"], &["u"]), &topics);
        let o = owners(&out);
        assert_eq!(o.len(), 5);
        assert!(o.values().all(|m| m.len() == 1));
        assert_eq!((count(&out["a"]), count(&out["b"])), (3, 2));
        // No subscriber: nothing assigned; unknown topics are skipped.
        let out = share(&subs(&["a"], &["nope"]), &topics);
        assert_eq!(count(&out["a"]), 0);
    }

    #[test]
    fn members_get_only_topics_they_subscribe_to() {
        let topics = BTreeMap::from([
            ("a".to_string(), topic(1, 2)),
            ("b".to_string(), topic(2, 2)),
        ]);
        let mut members = subs(&["m1"], &["a"]);
        members.extend(subs(&["m2"], &["b"]));
        for assignor in [UNIFORM, RANGE] {
            let out = assign(assignor, &members, &topics, &BTreeMap::new());
            assert_eq!(
                out["m1"].keys().copied().collect::<Vec<_>>(),
                vec![Uuid::from_u128(1)]
            );
            assert_eq!(
                out["m2"].keys().copied().collect::<Vec<_>>(),
                vec![Uuid::from_u128(2)]
            );
        }
    }
}
