//! Lag over time for the group pages: a bounded in-memory ring of samples
//! per consumer group, taken when a group page polls its lag (nothing runs
//! in the background, so a broker nobody watches keeps nothing).
//!
//! Bounds: at most [`GROUPS_MAX`] groups are kept (the one sampled longest
//! ago is forgotten to make room), each with at most [`POINTS_MAX`]
//! samples (the oldest dropped), and samples closer than
//! [`SAMPLE_SPACING_MS`] replace the last one rather than add, so many
//! open pages do not shorten the history. The ring lives as long as the
//! process (one broker a process), and is lost on restart.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{LazyLock, Mutex};

use serde::Serialize;

/// Most groups whose history is kept.
pub(crate) const GROUPS_MAX: usize = 64;
/// Most samples kept per group: at one a second, two minutes.
pub(crate) const POINTS_MAX: usize = 120;
/// Samples closer than this replace the group's last one.
pub(crate) const SAMPLE_SPACING_MS: i64 = 1_000;

/// One sample of a group's lag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Sample {
    /// When it was taken, ms since the Unix epoch.
    pub time_ms: i64,
    /// Records between the committed offsets and the high watermarks,
    /// summed over the group's partitions held here.
    pub lag: i64,
}

/// The rings of every group sampled.
#[derive(Debug, Default)]
pub(crate) struct LagHistory {
    groups: BTreeMap<String, VecDeque<Sample>>,
}

impl LagHistory {
    /// Record `sample` for `group` and hand back its history, oldest first.
    pub(crate) fn record(&mut self, group: &str, sample: Sample) -> Vec<Sample> {
        if !self.groups.contains_key(group) && self.groups.len() >= GROUPS_MAX {
            let stalest = self
                .groups
                .iter()
                .min_by_key(|(_, ring)| ring.back().map_or(i64::MIN, |s| s.time_ms))
                .map(|(name, _)| name.clone());
            if let Some(name) = stalest {
                self.groups.remove(&name);
            }
        }
        let ring = self.groups.entry(group.to_owned()).or_default();
        match ring.back_mut() {
            Some(last) if sample.time_ms - last.time_ms < SAMPLE_SPACING_MS => {
                // Keep the first time of the interval so the spacing holds.
                last.lag = sample.lag;
            }
            _ => ring.push_back(sample),
        }
        while ring.len() > POINTS_MAX {
            ring.pop_front();
        }
        ring.iter().copied().collect()
    }

    /// How many groups are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.groups.len()
    }
}

/// The process's history.
static HISTORY: LazyLock<Mutex<LagHistory>> = LazyLock::new(Mutex::default);

/// Record `sample` for `group` in the process's history and hand back the
/// group's samples, oldest first.
pub(crate) fn record(group: &str, sample: Sample) -> Vec<Sample> {
    // A panic while holding the lock leaves plain data behind: keep using it.
    let mut history = HISTORY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    history.record(group, sample)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(time_ms: i64, lag: i64) -> Sample {
        Sample { time_ms, lag }
    }

    #[test]
    fn samples_closer_than_the_spacing_replace_the_last() {
        let mut h = LagHistory::default();
        h.record("g", at(0, 10));
        h.record("g", at(500, 8));
        let got = h.record("g", at(1_000, 5));
        assert_eq!(got, vec![at(0, 8), at(1_000, 5)]);
    }

    #[test]
    fn a_groups_ring_keeps_the_newest_points() {
        let mut h = LagHistory::default();
        let mut got = Vec::new();
        for i in 0..(POINTS_MAX as i64 + 10) {
            got = h.record("g", at(i * SAMPLE_SPACING_MS, i));
        }
        assert_eq!(got.len(), POINTS_MAX);
        assert_eq!(got.first().map(|s| s.lag), Some(10));
    }

    #[test]
    fn the_group_sampled_longest_ago_makes_room() {
        let mut h = LagHistory::default();
        for i in 0..GROUPS_MAX as i64 {
            h.record(&format!("g{i}"), at(1_000 + i, 0));
        }
        h.record("g0", at(100_000, 1));
        h.record("new", at(100_001, 1));
        assert_eq!(h.len(), GROUPS_MAX);
        assert!(h.groups.contains_key("g0"), "g0 was sampled last");
        assert!(!h.groups.contains_key("g1"), "g1 was the stalest");
    }
}
