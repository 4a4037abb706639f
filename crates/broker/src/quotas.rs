//! Client quotas: what Kafka's `producer_byte_rate`, `consumer_byte_rate`,
//! `request_percentage` and `controller_mutation_rate` allow each user and
//! client id, the rates clients are measured at, and the throttle time a
//! request over its quota earns.
//!
//! The quota values live in the metadata (replicated on a cluster), set by
//! AlterClientQuotas. This module keeps a [`QuotaTable`] built from them,
//! built again when their version changes, as `acls.rs` does for ACLs.
//! Which value applies to a request is Kafka's order of precedence, most
//! specific first:
//!
//! 1. `user=U, client-id=C`
//! 2. `user=U, client-id=<default>`
//! 3. `user=U`
//! 4. `user=<default>, client-id=C`
//! 5. `user=<default>, client-id=<default>`
//! 6. `user=<default>`
//! 7. `client-id=C`
//! 8. `client-id=<default>`
//!
//! and, as in Kafka, the entity that matched is what is measured: a quota
//! set for `user=alice` is shared by all of alice's clients, one set for
//! `user=<default>` is each user's own.
//!
//! A [`Sensor`] measures one entity's rate the way Kafka's does: samples
//! of `quota.window.size.seconds`, the last `quota.window.num` of them
//! kept, the rate taken over at least `quota.window.num - 1` windows. A
//! request that takes the rate over the quota earns the throttle time that
//! brings it back: `(rate - quota) / quota * window`. The connection layer
//! sends the response at once with that `throttle_time_ms` and then reads
//! nothing more from the connection until it has passed (KIP-219), so a
//! client over its quota waits whether or not it honours the field, and
//! other clients are not slowed.
//!
//! Each connection resolves its quotas once ([`QuotaSession`]) and again
//! only when the table or its client id changes, so a request costs one
//! sensor lock per quota that applies, and nothing when none does.
//!
//! `controller_mutation_rate` (KIP-599) is measured differently, as Kafka
//! measures it: partitions created or deleted per second, against a
//! [`TokenBucket`] that holds at most `controller.quota.window.num *
//! controller.quota.window.size.seconds` seconds' worth. CreateTopics (v6
//! and later), CreatePartitions (v3+) and DeleteTopics (v5+) are strict: a
//! topic whose mutation finds the bucket in debt is refused with
//! THROTTLING_QUOTA_EXCEEDED, while one that finds tokens left is done in
//! full, even if it takes the bucket into debt. Older versions are done and
//! only throttled. Either way the response's `throttle_time_ms` is the
//! time the debt takes to repay, and the connection is muted that long.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::ResponseKind;
use weir_metadata::{ClientQuota, MetadataStore};

use crate::error::ApiError;

/// Kafka's entity type names.
pub(crate) const USER: &str = "user";
/// The client id entity type.
pub(crate) const CLIENT_ID: &str = "client-id";
/// The client address entity type (connection creation rate only).
pub(crate) const IP: &str = "ip";

/// The quotas measured per request, with Kafka's key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    /// `producer_byte_rate`: bytes of Produce requests per second.
    Produce,
    /// `consumer_byte_rate`: bytes of Fetch responses per second.
    Fetch,
    /// `request_percentage`: time the broker spends on the client's
    /// requests, as a percentage of one thread's time.
    Request,
    /// `controller_mutation_rate`: partitions created or deleted per
    /// second, by CreateTopics, CreatePartitions and DeleteTopics.
    ControllerMutation,
}

impl QuotaKind {
    const ALL: [QuotaKind; 4] = [
        QuotaKind::Produce,
        QuotaKind::Fetch,
        QuotaKind::Request,
        QuotaKind::ControllerMutation,
    ];

    /// The kinds every request is measured against by its connection.
    const MEASURED: [QuotaKind; 3] = [QuotaKind::Produce, QuotaKind::Fetch, QuotaKind::Request];

    /// Kafka's key for this quota.
    pub fn key(self) -> &'static str {
        match self {
            QuotaKind::Produce => "producer_byte_rate",
            QuotaKind::Fetch => "consumer_byte_rate",
            QuotaKind::Request => "request_percentage",
            QuotaKind::ControllerMutation => "controller_mutation_rate",
        }
    }

    fn index(self) -> usize {
        match self {
            QuotaKind::Produce => 0,
            QuotaKind::Fetch => 1,
            QuotaKind::Request => 2,
            QuotaKind::ControllerMutation => 3,
        }
    }
}

/// Every key AlterClientQuotas accepts for user and client-id entities,
/// and whether its value must be a whole number.
pub(crate) const CLIENT_KEYS: [(&str, bool); 4] = [
    ("producer_byte_rate", true),
    ("consumer_byte_rate", true),
    ("request_percentage", false),
    ("controller_mutation_rate", false),
];

/// The key AlterClientQuotas accepts for ip entities.
pub(crate) const CONNECTION_CREATION_RATE: &str = "connection_creation_rate";

/// One entity component as the table matches it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Part {
    /// The entity has no component of this type.
    Absent,
    /// `<default>`.
    Default,
    /// A named entity.
    Named(String),
}

/// The quota values of the metadata, indexed for lookup.
#[derive(Debug, Default)]
pub(crate) struct QuotaTable {
    /// By (user, client-id) component: the values of each kind.
    clients: HashMap<(Part, Part), [Option<f64>; 4]>,
    /// `connection_creation_rate` by ip (`None`: the default).
    ips: HashMap<Option<String>, f64>,
}

impl QuotaTable {
    fn build(values: &[ClientQuota]) -> Self {
        let mut table = Self::default();
        for quota in values {
            let mut user = Part::Absent;
            let mut client = Part::Absent;
            let mut ip = None;
            for part in &quota.entity {
                let named = match &part.name {
                    Some(name) => Part::Named(name.clone()),
                    None => Part::Default,
                };
                match part.entity_type.as_str() {
                    USER => user = named,
                    CLIENT_ID => client = named,
                    IP => ip = Some(part.name.clone()),
                    _ => {}
                }
            }
            if let Some(ip) = ip {
                if quota.key == CONNECTION_CREATION_RATE {
                    table.ips.insert(ip, quota.value);
                }
                continue;
            }
            let Some(kind) = QuotaKind::ALL.into_iter().find(|k| k.key() == quota.key) else {
                continue;
            };
            table.clients.entry((user, client)).or_default()[kind.index()] = Some(quota.value);
        }
        table
    }

    /// The quota of `kind` for `user` and `client_id`, and the entity
    /// measured against it (Kafka's order of precedence).
    fn resolve(&self, kind: QuotaKind, user: &str, client_id: &str) -> Option<(SensorKey, f64)> {
        if self.clients.is_empty() {
            return None;
        }
        let named_user = || Part::Named(user.to_owned());
        let named_client = || Part::Named(client_id.to_owned());
        let order = [
            (named_user(), named_client()),
            (named_user(), Part::Default),
            (named_user(), Part::Absent),
            (Part::Default, named_client()),
            (Part::Default, Part::Default),
            (Part::Default, Part::Absent),
            (Part::Absent, named_client()),
            (Part::Absent, Part::Default),
        ];
        order.into_iter().find_map(|entity| {
            let value = self.clients.get(&entity)?[kind.index()]?;
            let key = SensorKey {
                kind,
                user: (entity.0 != Part::Absent).then(|| user.to_owned()),
                client_id: (entity.1 != Part::Absent).then(|| client_id.to_owned()),
            };
            Some((key, value))
        })
    }

    /// Whether any ip quota is set.
    pub(crate) fn has_ip_quotas(&self) -> bool {
        !self.ips.is_empty()
    }

    /// `connection_creation_rate` for connections from `ip`.
    pub(crate) fn connection_rate(&self, ip: &str) -> Option<f64> {
        self.ips
            .get(&Some(ip.to_owned()))
            .or_else(|| self.ips.get(&None))
            .copied()
    }
}

/// What one sensor measures: a quota kind for one entity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SensorKey {
    kind: QuotaKind,
    user: Option<String>,
    client_id: Option<String>,
}

/// `quota.window.num` and `quota.window.size.seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaWindows {
    /// Samples kept.
    pub samples: u32,
    /// Each sample's length.
    pub size: Duration,
}

impl Default for QuotaWindows {
    fn default() -> Self {
        Self {
            samples: 11,
            size: Duration::from_secs(1),
        }
    }
}

impl QuotaWindows {
    /// The longest throttle time: the whole measured window.
    fn max_throttle(&self) -> Duration {
        self.size * self.samples.max(1)
    }
}

/// A rate over sampled windows, as Kafka's `Rate` over a `SampledStat`.
/// The connection layer measures connection creation rates with it too.
#[derive(Debug, Default)]
pub struct Sensor {
    /// (start, total) of each sample kept, oldest first.
    samples: VecDeque<(Instant, f64)>,
}

impl Sensor {
    /// Add `value` at `now` and answer how long the client must wait for
    /// the rate to come back to `quota` (zero when it is within it).
    pub fn record(
        &mut self,
        value: f64,
        now: Instant,
        quota: f64,
        windows: QuotaWindows,
    ) -> Duration {
        self.add(value, now, windows);
        self.throttle(now, quota, windows)
    }

    fn add(&mut self, value: f64, now: Instant, windows: QuotaWindows) {
        self.purge(now, windows);
        match self.samples.back_mut() {
            Some((start, total)) if now.saturating_duration_since(*start) < windows.size => {
                *total += value;
            }
            _ => {
                self.samples.push_back((now, value));
                while self.samples.len() > windows.samples.max(1) as usize {
                    self.samples.pop_front();
                }
            }
        }
    }

    /// Take back a value recorded, when what it counted was not sent.
    fn unrecord(&mut self, value: f64) {
        if let Some((_, total)) = self.samples.back_mut() {
            *total -= value;
        }
    }

    /// Drop samples that ended before the measured window.
    fn purge(&mut self, now: Instant, windows: QuotaWindows) {
        let kept = windows.max_throttle();
        while let Some((start, _)) = self.samples.front() {
            if now.saturating_duration_since(*start) >= kept {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    /// The rate per second at `now`, over at least `samples - 1` windows.
    fn rate(&self, now: Instant, windows: QuotaWindows) -> (f64, Duration) {
        let total: f64 = self.samples.iter().map(|(_, v)| v).sum();
        let oldest = self.samples.front().map_or(now, |(start, _)| *start);
        let elapsed = now.saturating_duration_since(oldest);
        let least = windows.size * windows.samples.saturating_sub(1);
        let elapsed = elapsed.max(least).max(Duration::from_millis(1));
        (total / elapsed.as_secs_f64(), elapsed)
    }

    fn throttle(&self, now: Instant, quota: f64, windows: QuotaWindows) -> Duration {
        let (rate, elapsed) = self.rate(now, windows);
        if quota <= 0.0 || rate <= quota {
            return Duration::ZERO;
        }
        let wait = elapsed.as_secs_f64() * (rate - quota) / quota;
        Duration::from_secs_f64(wait.min(windows.max_throttle().as_secs_f64()))
    }

    /// Whether nothing recorded is still inside the measured window.
    pub fn expired(&self, now: Instant, windows: QuotaWindows) -> bool {
        self.samples.back().is_none_or(|(start, _)| {
            now.saturating_duration_since(*start) >= windows.max_throttle()
        })
    }
}

/// Kafka's `TokenBucket`: tokens accrue at the quota's rate up to a burst
/// of the whole measured window's worth, and each mutation spends one.
#[derive(Debug)]
pub struct TokenBucket {
    tokens: f64,
    updated: Instant,
    /// When the bucket will be full again, if nothing is spent.
    full_at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    fn new(now: Instant, rate: f64, windows: QuotaWindows) -> Self {
        Self {
            tokens: Self::burst(rate, windows),
            updated: now,
            full_at: now,
        }
    }

    fn burst(rate: f64, windows: QuotaWindows) -> f64 {
        rate * windows.max_throttle().as_secs_f64()
    }

    /// Add what accrued since the last update.
    fn refill(&mut self, now: Instant, rate: f64, windows: QuotaWindows) {
        let accrued = now.saturating_duration_since(self.updated).as_secs_f64() * rate;
        self.tokens = (self.tokens + accrued).min(Self::burst(rate, windows));
        self.updated = now;
    }

    /// Spend `tokens`, which may take the bucket into debt.
    fn spend(&mut self, tokens: f64, rate: f64, windows: QuotaWindows) {
        self.tokens -= tokens;
        let missing = Self::burst(rate, windows) - self.tokens;
        self.full_at = self.updated + Self::seconds(missing / rate);
    }

    /// How long the debt takes to repay: zero while tokens are left.
    fn debt(&self, rate: f64) -> Duration {
        if self.tokens >= 0.0 {
            return Duration::ZERO;
        }
        Self::seconds(-self.tokens / rate)
    }

    /// `seconds` as a duration, at most what a `throttle_time_ms` holds
    /// (quota values are finite and above zero, so it is a number).
    fn seconds(seconds: f64) -> Duration {
        if seconds.is_nan() || seconds <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(seconds.min(i32::MAX as f64 / 1000.0))
    }
}

/// The `controller_mutation_rate` that applies to one request: its bucket,
/// shared by every request of the entity measured.
#[derive(Debug)]
pub struct MutationQuota {
    bucket: Arc<Mutex<TokenBucket>>,
    rate: f64,
    windows: QuotaWindows,
    /// Whether a mutation that finds the bucket in debt is refused (the
    /// request's version has THROTTLING_QUOTA_EXCEEDED), not just throttled.
    strict: bool,
}

impl MutationQuota {
    /// Whether a mutation may go ahead: not when the quota is strict and
    /// the bucket is in debt, when the answer is the time until it is
    /// repaid.
    fn admit(&self) -> Result<(), Duration> {
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        bucket.refill(Instant::now(), self.rate, self.windows);
        if self.strict && bucket.tokens < 0.0 {
            return Err(bucket.debt(self.rate));
        }
        Ok(())
    }

    /// Spend a token for each partition mutated.
    fn spend(&self, partitions: usize) {
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        bucket.refill(Instant::now(), self.rate, self.windows);
        bucket.spend(partitions as f64, self.rate, self.windows);
    }

    /// The `throttle_time_ms` the request earned: the time the bucket's
    /// debt takes to repay.
    pub(crate) fn throttle_time_ms(&self) -> i32 {
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        bucket.refill(Instant::now(), self.rate, self.windows);
        i32::try_from(bucket.debt(self.rate).as_millis()).unwrap_or(i32::MAX)
    }
}

/// Mutate one topic's partitions under `quota`. `run(validate_only)`
/// does the mutation, or only checks it, and answers what it made and how
/// many partitions it created or deleted. When the quota refuses the
/// mutation, the topic is still checked, so that a request that would fail
/// anyway gets its own error rather than THROTTLING_QUOTA_EXCEEDED.
pub(crate) fn within_mutation_quota<T>(
    quota: Option<&MutationQuota>,
    validate_only: bool,
    run: impl Fn(bool) -> Result<(T, usize), ApiError>,
) -> Result<T, ApiError> {
    let Some(quota) = quota.filter(|_| !validate_only) else {
        return run(validate_only).map(|(made, _)| made);
    };
    if let Err(wait) = quota.admit() {
        run(true)?;
        return Err(ApiError::new(
            ResponseError::ThrottlingQuotaExceeded,
            format!(
                "the throttling quota has been exceeded (controller_mutation_rate {}): \
                 retry in {} ms",
                quota.rate,
                wait.as_millis()
            ),
        ));
    }
    let (made, partitions) = run(false)?;
    quota.spend(partitions);
    Ok(made)
}

/// Most sensors (and, apart, token buckets) kept at once; past it, those
/// no connection holds are dropped, the oldest first.
const SENSORS_MAX: usize = 100_000;

/// The broker's quotas: the table built from the metadata and a sensor per
/// entity measured.
#[derive(Debug)]
pub struct Quotas {
    windows: QuotaWindows,
    /// `controller.quota.window.num` and `.size.seconds`.
    controller_windows: QuotaWindows,
    /// The values' version and the table built from them.
    current: RwLock<(u64, Arc<QuotaTable>)>,
    /// Held while building, so one build at a time reads the store.
    building: Mutex<()>,
    sensors: Mutex<HashMap<SensorKey, Arc<Mutex<Sensor>>>>,
    /// `controller_mutation_rate` buckets, by the entity measured.
    buckets: Mutex<HashMap<SensorKey, Arc<Mutex<TokenBucket>>>>,
    /// Whether the table has any user or client-id quota.
    in_force: AtomicBool,
}

impl Quotas {
    pub(crate) fn new(
        (windows, controller_windows): (QuotaWindows, QuotaWindows),
        metadata: &dyn MetadataStore,
    ) -> Self {
        let (version, values) = metadata.client_quotas();
        let table = QuotaTable::build(&values);
        Self {
            windows,
            controller_windows,
            buckets: Mutex::new(HashMap::new()),
            in_force: AtomicBool::new(!table.clients.is_empty()),
            current: RwLock::new((version, Arc::new(table))),
            building: Mutex::new(()),
            sensors: Mutex::new(HashMap::new()),
        }
    }

    /// Whether any user or client-id quota is set.
    pub(crate) fn in_force(&self) -> bool {
        self.in_force.load(Ordering::Relaxed)
    }

    /// The table and its version.
    pub(crate) fn table(&self) -> (u64, Arc<QuotaTable>) {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        (current.0, current.1.clone())
    }

    /// Build the table again if the metadata's values changed.
    pub(crate) fn refresh(&self, metadata: &dyn MetadataStore) {
        let _building = self.building.lock().unwrap_or_else(|p| p.into_inner());
        if metadata.client_quotas_version() == self.table().0 {
            return;
        }
        let (version, values) = metadata.client_quotas();
        let table = Arc::new(QuotaTable::build(&values));
        self.in_force
            .store(!table.clients.is_empty(), Ordering::Relaxed);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (version, table);
    }

    fn sensor(&self, key: SensorKey, now: Instant) -> Arc<Mutex<Sensor>> {
        let mut sensors = self.sensors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sensor) = sensors.get(&key) {
            return sensor.clone();
        }
        if sensors.len() >= SENSORS_MAX {
            let windows = self.windows;
            sensors.retain(|_, s| {
                Arc::strong_count(s) > 1
                    || !s
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .expired(now, windows)
            });
            if sensors.len() >= SENSORS_MAX {
                sensors.retain(|_, s| Arc::strong_count(s) > 1);
            }
        }
        sensors.entry(key).or_default().clone()
    }

    /// The `controller_mutation_rate` that applies to `user` and
    /// `client_id`, if one is set; `strict` as the request's version is.
    pub(crate) fn mutation_quota(
        &self,
        (user, client_id): (&str, &str),
        strict: bool,
    ) -> Option<MutationQuota> {
        if !self.in_force() {
            return None;
        }
        let (key, rate) = self
            .table()
            .1
            .resolve(QuotaKind::ControllerMutation, user, client_id)?;
        let now = Instant::now();
        let windows = self.controller_windows;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(&key) && buckets.len() >= SENSORS_MAX {
            // A full bucket is what a new one would be: drop those first.
            buckets.retain(|_, b| {
                Arc::strong_count(b) > 1
                    || b.lock().unwrap_or_else(|p| p.into_inner()).full_at > now
            });
            if buckets.len() >= SENSORS_MAX {
                buckets.retain(|_, b| Arc::strong_count(b) > 1);
            }
        }
        let bucket = buckets
            .entry(key)
            .or_insert_with(|| Arc::new(Mutex::new(TokenBucket::new(now, rate, windows))))
            .clone();
        Some(MutationQuota {
            bucket,
            rate,
            windows,
            strict,
        })
    }

    /// Sensors kept now (for tests of the bound).
    #[cfg(test)]
    fn sensors_kept(&self) -> usize {
        self.sensors.lock().map(|s| s.len()).unwrap_or(0)
    }
}

/// One connection's quotas: the sensors its requests are measured on,
/// resolved for its principal and client id.
#[derive(Debug, Default)]
pub struct QuotaSession {
    /// The table version and client id these were resolved for.
    resolved_for: Option<(u64, String, String)>,
    sensors: [Option<(Arc<Mutex<Sensor>>, f64)>; 3],
}

/// What a request costs against its quotas.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Bytes of a Produce request.
    pub produce_bytes: usize,
    /// Bytes of a Fetch response.
    pub fetch_bytes: usize,
    /// Time the broker spent on the request.
    pub work: Duration,
}

impl QuotaSession {
    fn resolve(&mut self, quotas: &Quotas, user: &str, client_id: &str, now: Instant) {
        let (version, table) = quotas.table();
        let current = self
            .resolved_for
            .as_ref()
            .is_some_and(|(v, u, c)| *v == version && u == user && c == client_id);
        if current {
            return;
        }
        for kind in QuotaKind::MEASURED {
            self.sensors[kind.index()] = table
                .resolve(kind, user, client_id)
                .map(|(key, quota)| (quotas.sensor(key, now), quota));
        }
        self.resolved_for = Some((version, user.to_owned(), client_id.to_owned()));
    }

    /// Record `usage` against the quotas that apply to `user` and
    /// `client_id`, and answer the throttle time each kind earned.
    pub(crate) fn record(
        &mut self,
        quotas: &Quotas,
        (user, client_id): (&str, &str),
        usage: Usage,
        now: Instant,
    ) -> [Duration; 3] {
        self.resolve(quotas, user, client_id, now);
        let mut throttles = [Duration::ZERO; 3];
        for kind in QuotaKind::MEASURED {
            let value = match kind {
                QuotaKind::Produce => usage.produce_bytes as f64,
                QuotaKind::Fetch => usage.fetch_bytes as f64,
                // Kafka measures request time in nanoseconds against a
                // quota in percent of a second.
                QuotaKind::Request => usage.work.as_secs_f64() * 100.0,
                QuotaKind::ControllerMutation => continue,
            };
            if let Some((sensor, quota)) = &self.sensors[kind.index()]
                && value > 0.0
            {
                let mut sensor = sensor.lock().unwrap_or_else(|p| p.into_inner());
                throttles[kind.index()] = sensor.record(value, now, *quota, quotas.windows);
            }
        }
        throttles
    }

    /// Take back fetch bytes recorded for a response that is not sent.
    pub(crate) fn unrecord_fetch(&self, bytes: usize) {
        if let Some((sensor, _)) = &self.sensors[QuotaKind::Fetch.index()] {
            let mut sensor = sensor.lock().unwrap_or_else(|p| p.into_inner());
            sensor.unrecord(bytes as f64);
        }
    }
}

tokio::task_local! {
    /// The work counter of the request whose handler is running, so that
    /// `blocking::run` adds the time its work took on a blocking thread.
    static WORK: Arc<AtomicU64>;
}

/// The time the broker spends on one request: while its handler is polled
/// on a runtime worker, and while its file I/O runs on a blocking thread;
/// not while it waits (for an fsync another thread does, for data to
/// fetch, for a rebalance). What `request_percentage` is measured in.
#[derive(Debug, Clone, Default)]
pub struct WorkClock(Arc<AtomicU64>);

impl WorkClock {
    /// The time counted so far.
    pub fn spent(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }

    /// Run `work`, counting the time it is polled and the blocking work it
    /// hands off.
    pub async fn time<F: Future>(&self, work: F) -> F::Output {
        WORK.scope(
            self.0.clone(),
            Timed {
                inner: Box::pin(work),
                spent: self.0.clone(),
            },
        )
        .await
    }
}

/// Add to the running request's work counter, if any (`blocking::run`).
pub(crate) fn add_work(counter: Option<&Arc<AtomicU64>>, took: Duration) {
    if let Some(counter) = counter {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        counter.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// The running request's work counter, if any.
pub(crate) fn work_counter() -> Option<Arc<AtomicU64>> {
    WORK.try_with(Arc::clone).ok()
}

/// A future whose poll time is counted.
struct Timed<F: Future> {
    inner: Pin<Box<F>>,
    spent: Arc<AtomicU64>,
}

impl<F: Future> Future for Timed<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let start = Instant::now();
        let polled = self.inner.as_mut().poll(cx);
        add_work(Some(&self.spent), start.elapsed());
        polled
    }
}

/// The throttle time a response's handler set for its
/// `controller_mutation_rate`: CreateTopics, CreatePartitions and
/// DeleteTopics only.
pub(crate) fn mutation_throttle(response: &ResponseKind) -> Duration {
    let ms = match response {
        ResponseKind::CreateTopics(r) => r.throttle_time_ms,
        ResponseKind::CreatePartitions(r) => r.throttle_time_ms,
        ResponseKind::DeleteTopics(r) => r.throttle_time_ms,
        _ => 0,
    };
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Set a response's `throttle_time_ms`, for the responses that have one.
pub(crate) fn set_throttle_time(response: &mut ResponseKind, ms: i32) {
    macro_rules! set {
        ($($kind:ident),* $(,)?) => {
            match response {
                $(ResponseKind::$kind(r) => r.throttle_time_ms = ms,)*
                _ => {}
            }
        };
    }
    set!(
        Produce,
        Fetch,
        ListOffsets,
        Metadata,
        OffsetCommit,
        OffsetFetch,
        FindCoordinator,
        JoinGroup,
        Heartbeat,
        LeaveGroup,
        SyncGroup,
        DescribeGroups,
        ListGroups,
        ApiVersions,
        CreateTopics,
        DeleteTopics,
        DeleteRecords,
        InitProducerId,
        OffsetForLeaderEpoch,
        AddPartitionsToTxn,
        AddOffsetsToTxn,
        EndTxn,
        TxnOffsetCommit,
        DescribeAcls,
        CreateAcls,
        DeleteAcls,
        DescribeConfigs,
        AlterConfigs,
        DescribeLogDirs,
        CreatePartitions,
        DeleteGroups,
        ElectLeaders,
        IncrementalAlterConfigs,
        AlterPartitionReassignments,
        ListPartitionReassignments,
        OffsetDelete,
        DescribeClientQuotas,
        AlterClientQuotas,
        DescribeUserScramCredentials,
        AlterUserScramCredentials,
        DescribeCluster,
        DescribeProducers,
        DescribeTransactions,
        ListTransactions,
        ConsumerGroupHeartbeat,
        ConsumerGroupDescribe,
        ShareGroupHeartbeat,
        ShareGroupDescribe,
        ShareFetch,
        ShareAcknowledge,
        UnregisterBroker,
        AddRaftVoter,
        RemoveRaftVoter,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_metadata::QuotaEntityPart;

    fn quota(parts: &[(&str, Option<&str>)], key: &str, value: f64) -> ClientQuota {
        ClientQuota {
            entity: parts
                .iter()
                .map(|(t, n)| QuotaEntityPart {
                    entity_type: (*t).into(),
                    name: n.map(str::to_owned),
                })
                .collect(),
            key: key.into(),
            value,
        }
    }

    #[test]
    fn the_most_specific_entity_wins_and_is_what_is_measured() {
        let table = QuotaTable::build(&[
            quota(&[(CLIENT_ID, None)], "producer_byte_rate", 8.0),
            quota(&[(CLIENT_ID, Some("app"))], "producer_byte_rate", 7.0),
            quota(&[(USER, None)], "producer_byte_rate", 6.0),
            quota(
                &[(USER, None), (CLIENT_ID, None)],
                "producer_byte_rate",
                5.0,
            ),
            quota(
                &[(USER, None), (CLIENT_ID, Some("app"))],
                "producer_byte_rate",
                4.0,
            ),
            quota(&[(USER, Some("alice"))], "producer_byte_rate", 3.0),
            quota(
                &[(USER, Some("alice")), (CLIENT_ID, None)],
                "producer_byte_rate",
                2.0,
            ),
            quota(
                &[(USER, Some("alice")), (CLIENT_ID, Some("app"))],
                "producer_byte_rate",
                1.0,
            ),
        ]);
        let got = |user: &str, client: &str| {
            table
                .resolve(QuotaKind::Produce, user, client)
                .map(|(k, v)| (v, k.user, k.client_id))
        };
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(got("alice", "app"), Some((1.0, s("alice"), s("app"))));
        assert_eq!(got("alice", "other"), Some((2.0, s("alice"), s("other"))));
        assert_eq!(got("bob", "app"), Some((4.0, s("bob"), s("app"))));
        assert_eq!(got("bob", "other"), Some((5.0, s("bob"), s("other"))));
        assert_eq!(table.resolve(QuotaKind::Fetch, "alice", "app"), None);

        let table = QuotaTable::build(&[
            quota(&[(USER, Some("alice"))], "consumer_byte_rate", 3.0),
            quota(&[(CLIENT_ID, Some("app"))], "consumer_byte_rate", 7.0),
            quota(&[(CLIENT_ID, None)], "consumer_byte_rate", 8.0),
        ]);
        let got = |user: &str, client: &str| {
            table
                .resolve(QuotaKind::Fetch, user, client)
                .map(|(k, v)| (v, k.user, k.client_id))
        };
        // alice's clients share one quota; client ids are measured apart.
        assert_eq!(got("alice", "x"), Some((3.0, s("alice"), None)));
        assert_eq!(got("bob", "app"), Some((7.0, None, s("app"))));
        assert_eq!(got("bob", "y"), Some((8.0, None, s("y"))));
    }

    #[test]
    fn a_client_at_twice_its_rate_is_throttled_back_to_it() {
        let windows = QuotaWindows {
            samples: 3,
            size: Duration::from_secs(1),
        };
        let mut sensor = Sensor::default();
        let start = Instant::now();
        let quota = 1000.0;
        // Sending 100 bytes at once, then waiting what it is told: the
        // client's long-run rate is the quota.
        let mut now = start;
        let mut sent = 0.0;
        while now < start + Duration::from_secs(60) {
            let wait = sensor.record(100.0, now, quota, windows);
            sent += 100.0;
            now += wait.max(Duration::from_millis(10));
        }
        let rate = sent / now.duration_since(start).as_secs_f64();
        assert!((rate - quota).abs() / quota < 0.05, "rate {rate}");
    }

    #[test]
    fn within_its_quota_a_client_is_never_throttled() {
        let windows = QuotaWindows::default();
        let mut sensor = Sensor::default();
        let start = Instant::now();
        for i in 0..100u32 {
            let now = start + Duration::from_millis(100) * i;
            assert_eq!(sensor.record(90.0, now, 1000.0, windows), Duration::ZERO);
        }
        // A burst far over it is told to wait, at most the whole window.
        let now = start + Duration::from_secs(10);
        let wait = sensor.record(1e9, now, 1000.0, windows);
        assert_eq!(wait, windows.max_throttle());
    }

    #[test]
    fn a_mutation_bucket_allows_its_burst_then_owes_until_repaid() {
        let windows = QuotaWindows {
            samples: 2,
            size: Duration::from_secs(1),
        };
        let start = Instant::now();
        let mut bucket = TokenBucket::new(start, 2.0, windows);
        assert_eq!(bucket.tokens, 4.0, "a burst of two windows at 2/s");
        // One mutation past the burst is done, and owes 3 s.
        bucket.spend(10.0, 2.0, windows);
        assert_eq!(bucket.debt(2.0), Duration::from_secs(3));
        assert_eq!(bucket.full_at, start + Duration::from_secs(5));
        bucket.refill(start + Duration::from_secs(2), 2.0, windows);
        assert_eq!(bucket.debt(2.0), Duration::from_secs(1));
        bucket.refill(start + Duration::from_secs(3), 2.0, windows);
        assert_eq!(bucket.debt(2.0), Duration::ZERO);
        // Tokens accrue no further than the burst.
        bucket.refill(start + Duration::from_secs(60), 2.0, windows);
        assert_eq!(bucket.tokens, 4.0);
    }

    #[test]
    fn sensors_no_connection_holds_are_dropped_past_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let store = weir_metadata::LocalMetadataStore::open(dir.path()).unwrap();
        let quotas = Quotas::new((QuotaWindows::default(), QuotaWindows::default()), &store);
        let now = Instant::now();
        let held = quotas.sensor(
            SensorKey {
                kind: QuotaKind::Produce,
                user: None,
                client_id: Some("held".into()),
            },
            now,
        );
        for i in 0..SENSORS_MAX + 10 {
            let key = SensorKey {
                kind: QuotaKind::Produce,
                user: None,
                client_id: Some(i.to_string()),
            };
            drop(quotas.sensor(key, now));
        }
        assert!(quotas.sensors_kept() <= SENSORS_MAX);
        let again = quotas.sensor(
            SensorKey {
                kind: QuotaKind::Produce,
                user: None,
                client_id: Some("held".into()),
            },
            now,
        );
        assert!(Arc::ptr_eq(&held, &again), "a sensor in use is kept");
    }
}
