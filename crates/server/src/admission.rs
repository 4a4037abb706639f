//! Which new connections are served: Kafka's limits on connections per
//! client address and on the rate connections are created.
//!
//! - `max.connections.per.ip` (with `max.connections.per.ip.overrides`):
//!   an address that already has that many connections open has the next
//!   one closed at once.
//! - `max.connection.creation.rate`: connections accepted per second, all
//!   listeners together. Past it the broker stops accepting for as long as
//!   brings the rate back, as Kafka's acceptor does; the backlog waits in
//!   the kernel.
//! - The `connection_creation_rate` quota of an `ip` entity
//!   (AlterClientQuotas): an address creating connections faster has each
//!   new one closed after the throttle time it earned, as Kafka does, so a
//!   client reconnecting in a loop is slowed and not answered at once.
//!
//! The counts live as long as the connections: each admitted connection
//! holds an [`IpSlot`] that gives its count back when dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weir_broker::{Broker, QuotaWindows, Sensor};

/// Most per-address creation-rate sensors kept; past it, those whose
/// samples have all left the window are dropped.
const IP_SENSORS_MAX: usize = 10_000;

/// Connections open per address.
type Counts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One connection's place in its address's count.
#[derive(Debug)]
pub(crate) struct IpSlot {
    counts: Counts,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = counts.get_mut(&self.ip) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// What happens to a new connection.
#[derive(Debug)]
pub(crate) enum Admit {
    /// Serve it.
    Serve(IpSlot),
    /// Close it after this long (its address is over its
    /// `connection_creation_rate`); it keeps its slot meanwhile.
    CloseAfter(Duration, IpSlot),
    /// Close it at once: its address has `max.connections.per.ip` open.
    Refuse { open: usize },
}

/// The limits and the state they are checked against.
pub(crate) struct Admission {
    per_ip: usize,
    overrides: HashMap<IpAddr, usize>,
    creation_rate: Option<f64>,
    windows: QuotaWindows,
    counts: Counts,
    accepted: Sensor,
    per_ip_rates: HashMap<IpAddr, Sensor>,
}

impl Admission {
    pub(crate) fn new(limits: &crate::ServerLimits, windows: QuotaWindows) -> Self {
        Self {
            per_ip: limits.max_connections_per_ip,
            overrides: limits.max_connections_per_ip_overrides.clone(),
            creation_rate: limits.max_connection_creation_rate,
            windows,
            counts: Counts::default(),
            accepted: Sensor::default(),
            per_ip_rates: HashMap::new(),
        }
    }

    /// How long to stop accepting after one more connection was accepted
    /// now, for `max.connection.creation.rate`.
    pub(crate) fn accepted(&mut self, now: Instant) -> Duration {
        match self.creation_rate {
            Some(rate) => self.accepted.record(1.0, now, rate, self.windows),
            None => Duration::ZERO,
        }
    }

    /// Decide on a connection from `ip`.
    pub(crate) fn admit(&mut self, ip: IpAddr, broker: &Broker, now: Instant) -> Admit {
        let limit = self.overrides.get(&ip).copied().unwrap_or(self.per_ip);
        {
            let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            let open = counts.entry(ip).or_insert(0);
            if *open >= limit {
                let open = *open;
                if open == 0 {
                    counts.remove(&ip);
                }
                return Admit::Refuse { open };
            }
            *open += 1;
        }
        let slot = IpSlot {
            counts: self.counts.clone(),
            ip,
        };
        let Some(rate) = broker.connection_creation_rate(ip) else {
            return Admit::Serve(slot);
        };
        if self.per_ip_rates.len() >= IP_SENSORS_MAX && !self.per_ip_rates.contains_key(&ip) {
            let windows = self.windows;
            self.per_ip_rates.retain(|_, s| !s.expired(now, windows));
            if self.per_ip_rates.len() >= IP_SENSORS_MAX {
                // Every address kept is still measured: start over rather
                // than grow without bound.
                self.per_ip_rates.clear();
            }
        }
        let wait = self
            .per_ip_rates
            .entry(ip)
            .or_default()
            .record(1.0, now, rate, self.windows);
        if wait.is_zero() {
            Admit::Serve(slot)
        } else {
            Admit::CloseAfter(wait, slot)
        }
    }
}
