//! A cluster node's part of `weir serve`, beyond what a one-node cluster
//! does: its place in the metadata quorum (the controller listener and the
//! Raft node under `<data dir>/raft`, which a voter with an empty folder
//! enters only once admitted, and an observer by joining as a learner),
//! the broker's registration and
//! heartbeats, the change feed the broker follows, and the controlled
//! shutdown that hands its leaderships over before it stops.
//!
//! The order matters. A node first waits until it has applied every
//! metadata change the quorum committed (Raft does not store the commit
//! index, so a restarted node's own copy may trail), and only then lets
//! the broker open its partitions: a broker following stale metadata would
//! remove the storage of replicas it was assigned since. It registers
//! (fenced), follows the metadata once, and says in its heartbeats that it
//! has caught up, which unfences it.

use std::sync::Arc;
use std::time::Duration;

use weir_broker::Broker;
use weir_cluster::{Command, Controller, Heartbeat, HeartbeatAnswer};

/// How often a node waiting for the quorum says so in the log.
const WAITING_LOG_EVERY: Duration = Duration::from_secs(5);
/// Longest a controlled shutdown waits for the quorum to fence this broker.
const CONTROLLED_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Wait until this node has applied everything the quorum committed,
/// however long the quorum takes to form (its other voters may start
/// later), logging every few seconds what it waits for.
pub(crate) async fn wait_for_quorum(controller: &Controller) {
    let mut last_said = tokio::time::Instant::now();
    loop {
        match controller.catch_up().await {
            Ok(()) => return,
            Err(err) => {
                if last_said.elapsed() >= WAITING_LOG_EVERY {
                    tracing::warn!(error = %err,
                        "waiting for the metadata quorum: a majority of --voters must be running \
                         and reach each other on their controller listeners");
                    last_said = tokio::time::Instant::now();
                }
            }
        }
    }
}

/// A node first enters the quorum ([`Controller::join`]: a voter with an
/// empty Raft folder is admitted or refused, an observer asks the quorum's
/// leader to add it as a learner), retrying while no voter answers; a
/// refusal ends the start. Then it waits until it has applied everything
/// the quorum committed (which a learner gets only once it is added).
pub(crate) async fn join_and_catch_up(
    controller: &Controller,
) -> Result<(), weir_cluster::ClusterError> {
    enter(controller).await?;
    wait_for_quorum(controller).await;
    Ok(())
}

/// Enter the quorum ([`Controller::join`]), retrying while no voter
/// answers and logging every few seconds what it waits for.
pub(crate) async fn enter(controller: &Controller) -> Result<(), weir_cluster::ClusterError> {
    let mut last_said = tokio::time::Instant::now();
    loop {
        match controller.join().await {
            Ok(()) => return Ok(()),
            Err(err @ weir_cluster::ClusterError::Refused(_)) => return Err(err),
            Err(err) => {
                if last_said.elapsed() >= WAITING_LOG_EVERY {
                    tracing::warn!(error = %err,
                        "waiting to enter the metadata quorum: a majority of --voters must be \
                         running and reach this node's controller listener");
                    last_said = tokio::time::Instant::now();
                }
            }
        }
    }
}

/// What a broker registers with.
#[derive(Debug, Clone)]
pub(crate) struct Registration {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// Every advertised listener.
    pub endpoints: Vec<weir_metadata::Endpoint>,
}

/// Register the broker (fenced until its heartbeat says it has caught
/// up), retrying while the quorum has no leader; returns the broker epoch.
pub(crate) async fn register(controller: &Controller, who: &Registration) -> i64 {
    loop {
        match controller
            .register_broker(
                who.id,
                who.host.clone(),
                who.port,
                who.rack.clone(),
                who.endpoints.clone(),
            )
            .await
        {
            Ok(epoch) => {
                tracing::info!(
                    broker = who.id,
                    epoch,
                    "registered with the metadata quorum"
                );
                return epoch;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot register with the metadata quorum; retrying");
                wait_for_quorum(controller).await;
            }
        }
    }
}

/// The broker's epoch, shared by the heartbeat task (which renews it when
/// the quorum asks it to register again) and the controlled shutdown.
pub(crate) type Epoch = Arc<std::sync::atomic::AtomicI64>;

/// Heartbeat every `interval` for as long as the task runs. Every
/// heartbeat says the broker has caught up: it is sent only once the
/// broker has followed the metadata it registered into. A heartbeat the
/// quorum answers with "register again" (this broker was fenced as
/// another life of it, or its registration was lost) registers again and
/// follows the metadata before the next one.
///
/// Each heartbeat waits at most half a session: one sent to a quorum
/// leader that has gone silent must not hold back the next, which goes to
/// whichever leader the quorum has elected meanwhile.
///
/// `active` says whether the last answer was "unfenced".
pub(crate) fn spawn_heartbeats(
    controller: Arc<Controller>,
    broker: Arc<Broker>,
    who: Registration,
    epoch: Epoch,
    intervals: (Duration, Duration),
    active: tokio::sync::watch::Sender<bool>,
) -> tokio::task::JoinHandle<()> {
    let (interval, session_timeout) = intervals;
    tokio::spawn(async move {
        use std::sync::atomic::Ordering;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was = None;
        // When the quorum last answered; a node it has not answered for a
        // session timeout counts itself fenced, as the quorum then counts
        // it, until it answers again.
        let mut answered = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            let beat = Heartbeat {
                broker: who.id,
                epoch: epoch.load(Ordering::SeqCst),
                caught_up: true,
            };
            let answer = tokio::time::timeout(session_timeout / 2, controller.heartbeat(beat))
                .await
                .unwrap_or_else(|_| Err(weir_cluster::ClusterError::NoLeader(session_timeout / 2)));
            match answer {
                Ok(HeartbeatAnswer::StaleRegistration) => {
                    tracing::warn!(
                        broker = who.id,
                        "the quorum no longer knows this broker's registration; registering again"
                    );
                    let fresh = register(&controller, &who).await;
                    epoch.store(fresh, Ordering::SeqCst);
                    follow_once(&broker).await;
                }
                Ok(answer) => {
                    answered = tokio::time::Instant::now();
                    active.send_replace(answer == HeartbeatAnswer::Active);
                    if was != Some(answer) {
                        tracing::info!(broker = who.id, state = ?answer, "heartbeat answered");
                        was = Some(answer);
                    }
                }
                Err(err) => {
                    tracing::warn!(broker = who.id, error = %err, "heartbeat not answered; the quorum fences this broker if this goes on for broker.session.timeout.ms");
                    was = None;
                    if answered.elapsed() >= session_timeout && *active.borrow() {
                        tracing::warn!(
                            broker = who.id,
                            "no heartbeat answered for broker.session.timeout.ms: this broker counts itself fenced (GET /ready answers 503) until the quorum answers"
                        );
                        active.send_replace(false);
                    }
                }
            }
        }
    })
}

/// Follow the metadata once, off the async workers (it opens and removes
/// storage).
async fn follow_once(broker: &Arc<Broker>) {
    let broker = broker.clone();
    match tokio::task::spawn_blocking(move || broker.follow_metadata()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            tracing::error!(error = %err, "cannot follow the metadata; retrying at the next change")
        }
        Err(err) => tracing::error!(error = %err, "following the metadata failed"),
    }
}

/// Follow every metadata change the quorum applies here. Changes that
/// arrive while one is being followed are taken together.
/// `changes` is taken before the broker first followed the metadata, so
/// nothing applied since is missed.
pub(crate) fn spawn_follower(
    mut changes: tokio::sync::watch::Receiver<u64>,
    broker: Arc<Broker>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            changes.borrow_and_update();
            follow_once(&broker).await;
        }
    })
}

/// Kafka's controlled shutdown: ask the quorum to fence this broker, so
/// each partition it leads moves to an in-sync follower now rather than
/// after its session expires. Gives up after a few seconds (a quorum out
/// of reach cannot be waited for: the session expiry then does it).
pub(crate) async fn controlled_shutdown(controller: &Controller, id: i32, epoch: i64) {
    let fence = controller.write(Command::FenceBroker { id, epoch });
    match tokio::time::timeout(CONTROLLED_SHUTDOWN_TIMEOUT, fence).await {
        Ok(Ok(_)) => tracing::info!(
            broker = id,
            "fenced: leaderships moved to in-sync followers"
        ),
        Ok(Err(err)) => {
            tracing::warn!(broker = id, error = %err, "controlled shutdown failed; leaderships move when the session expires")
        }
        Err(_) => tracing::warn!(
            broker = id,
            "the quorum did not fence this broker within {CONTROLLED_SHUTDOWN_TIMEOUT:?}; \
             leaderships move when the session expires"
        ),
    }
}
