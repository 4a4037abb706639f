//! One client connection: a reader that decodes requests and begins each in
//! request order, and a writer that sends the responses back in that order.
//!
//! The reader awaits [`Broker::begin`] for each request before reading the
//! next, as Kafka processes a connection's requests in order; what a request
//! leaves to finish later (a produce's wait for its fsync, a fetch's long
//! poll) runs as its own task. The two loops meet in a bounded queue of
//! in-flight requests, so a client that pipelines has at most
//! `max_in_flight_requests` outstanding, and a produce waiting for its fsync
//! does not stop the next request from being read. Anything Kafka answers by closing the connection (a bad frame, an
//! unknown API or version, a handler refusing the request) ends the reader;
//! the writer still sends the responses of the requests read before it.
//!
//! Before a request is begun, its response's bytes are reserved from the
//! [`Budget`]; the reservation travels with the response and is given back
//! once it is written. A connection on which nothing moves for
//! `connections.max.idle.ms` is closed ([`Activity`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use weir_broker::{Broker, Caller, HandlerError, QuotaSession, Reply, Usage, WorkClock};
use weir_protocol::{
    Decoded, api_versions_unsupported_response, decode_request, encode_response_within, read_frame,
};

use crate::ServerLimits;
use crate::budget::{Budget, RESERVATION_BYTES_MIN, Reserved, reservation};
use crate::idle::{Activity, Tracked};
use crate::sasl::{Authenticator, Verdict};

/// Socket buffer on each side; many small pipelined requests or responses
/// then cost one system call instead of one each.
const SOCKET_BUFFER_BYTES: usize = 64 * 1024;

/// Why a response cannot be sent; the connection is closed.
#[derive(Debug)]
enum Close {
    /// The broker refused the request in a way Kafka answers by closing.
    Refused(weir_broker::HandlerError),
    /// The response could not be encoded: a broker bug, logged as an error.
    Encode(weir_protocol::EncodeError),
}

/// A response frame with the budget it holds until written, or nothing (a
/// produce with acks=0), or a reason to close.
type Outcome = Result<Option<(Bytes, Reserved)>, Close>;

/// A handler task that is aborted if its response will never be written, so
/// no task outlives the connection that started it.
struct InFlight(JoinHandle<Outcome>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The two halves of a connection's byte stream: a TCP socket's, or a TLS
/// session's over one.
pub(crate) struct Halves<R, W> {
    pub read: R,
    pub write: W,
}

/// Serve one connection until the peer closes it, it breaks the protocol, it
/// stays idle too long, or `stop` turns true; then write what is still owed and close.
/// `sasl` is the connection's SASL state on a SASL listener: until it has
/// authenticated, only ApiVersions and the SASL requests are served.
pub(crate) async fn serve_connection<R, W>(
    halves: Halves<R, W>,
    (caller, sasl): (Caller, Option<Authenticator>),
    broker: Arc<Broker>,
    limits: &ServerLimits,
    response_bytes: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let peer = caller.peer;
    tracing::trace!(%peer, listener = %caller.listener, "connection opened");
    let _open = crate::metrics::Open::start(caller.listener.clone());
    let Halves {
        read: read_half,
        write: write_half,
    } = halves;
    let activity = Activity::new();
    let budget = Arc::new(Budget::new(
        response_bytes,
        limits.queued_max_response_bytes,
        limits.connection_response_bytes_max,
    ));
    let (queue, in_flight) = mpsc::channel(limits.max_in_flight_requests);
    let reader = read_requests(
        Tracked::new(read_half, activity.clone()),
        caller,
        Peer {
            broker,
            budget,
            activity: activity.clone(),
            sasl,
        },
        limits.max_request_bytes,
        queue,
        stop,
    );
    let writer = write_responses(
        Tracked::new(write_half, activity.clone()),
        peer,
        in_flight,
        &activity,
    );
    let served = async {
        tokio::pin!(reader, writer);
        tokio::select! {
            // The reader is done: its end of the queue is gone, so the writer
            // sends what is owed and then returns.
            () = &mut reader => writer.await,
            // The writer gave up (peer gone or a request refused); reading on
            // would only start work whose answer cannot be sent.
            () = &mut writer => {}
        }
    };
    let max_idle = Duration::from_millis(limits.connections_max_idle_ms);
    tokio::select! {
        () = served => {}
        () = activity.idle_for(max_idle) => {
            tracing::debug!(%peer, idle_ms = limits.connections_max_idle_ms,
                "closing connection: idle for connections.max.idle.ms");
        }
    }
    tracing::trace!(%peer, "connection closed");
}

/// A connection's client quota state: the sensors its requests are
/// measured on, and until when it is muted for having gone over a quota.
#[derive(Default)]
struct Throttled {
    session: Mutex<QuotaSession>,
    muted_until: Mutex<Option<tokio::time::Instant>>,
}

impl Throttled {
    /// Mute the connection for `wait` from now (or longer, if it already is).
    fn mute(&self, wait: Duration) {
        let until = tokio::time::Instant::now() + wait;
        let mut muted = self.muted_until.lock().unwrap_or_else(|p| p.into_inner());
        *muted = Some(muted.map_or(until, |at| at.max(until)));
    }

    /// When the connection may be read again, if it is muted.
    fn muted_until(&self) -> Option<tokio::time::Instant> {
        let muted = *self.muted_until.lock().unwrap_or_else(|p| p.into_inner());
        muted.filter(|until| *until > tokio::time::Instant::now())
    }
}

/// What the reader needs besides the socket.
struct Peer {
    broker: Arc<Broker>,
    budget: Arc<Budget>,
    activity: Arc<Activity>,
    sasl: Option<Authenticator>,
}

async fn read_requests<R: AsyncRead + Unpin>(
    read_half: Tracked<R>,
    mut caller: Caller,
    ctx: Peer,
    max_request_bytes: usize,
    queue: mpsc::Sender<InFlight>,
    mut stop: watch::Receiver<bool>,
) {
    let Peer {
        broker,
        budget,
        activity,
        mut sasl,
    } = ctx;
    let peer = caller.peer;
    let fetch_max_bytes = broker.config().fetch_max_bytes;
    let mut socket = BufReader::with_capacity(SOCKET_BUFFER_BYTES, read_half);
    let throttled = Arc::new(Throttled::default());
    loop {
        // A connection over its quota is not read until its throttle time
        // has passed (KIP-219), so it waits whether or not its client
        // honours the `throttle_time_ms` it was sent.
        while let Some(until) = throttled.muted_until() {
            tokio::select! {
                biased;
                _ = stop.wait_for(|stopping| *stopping) => return,
                () = tokio::time::sleep_until(until) => {}
            }
        }
        let frame = tokio::select! {
            biased;
            _ = stop.wait_for(|stopping| *stopping) => return,
            frame = read_frame(&mut socket, max_request_bytes) => frame,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(err) => {
                tracing::debug!(%peer, reason = %err, "closing connection: bad frame");
                return;
            }
        };
        let frame_len = frame.len();
        let task = match decode_request(frame, Broker::served_versions) {
            Ok(Decoded::Request(mut request)) => {
                if let Some(auth) = sasl.as_mut() {
                    let api = request.api_key;
                    match auth
                        .on_request(api, request.version, &mut request.body)
                        .await
                    {
                        Verdict::Serve => {}
                        Verdict::Close(reason) => {
                            tracing::debug!(%peer, %reason, "closing connection");
                            return;
                        }
                        Verdict::Answer {
                            response,
                            close,
                            delay,
                        } => {
                            let reserved = budget.reserve(RESERVATION_BYTES_MIN).await;
                            let (version, correlation_id) =
                                (request.version, request.header.correlation_id);
                            crate::metrics::answered(api, version);
                            let answer = tokio::spawn(async move {
                                if let Some(delay) = delay {
                                    tokio::time::sleep(delay).await;
                                }
                                encode_response_within(
                                    api,
                                    version,
                                    correlation_id,
                                    &response,
                                    weir_protocol::RESPONSE_BYTES_MAX,
                                )
                                .map(|frame| Some((frame, reserved)))
                                .map_err(Close::Encode)
                            });
                            if queue.send(InFlight(answer)).await.is_err() || close {
                                return;
                            }
                            if let Some(principal) = auth.principal() {
                                caller.principal = principal.clone();
                            }
                            continue;
                        }
                    }
                }
                // Reserved before the request is begun: a connection whose
                // responses are not being read stops being read itself. The
                // wait does not count as work for the peer, so a connection
                // stuck on its own unread responses still becomes idle.
                let wanted = reservation(&request.body, fetch_max_bytes);
                let reserved = tokio::select! {
                    biased;
                    _ = stop.wait_for(|stopping| *stopping) => return,
                    reserved = budget.reserve(wanted) => reserved,
                };
                let busy = activity.busy();
                let api = request.api_key;
                let version = request.version;
                let correlation_id = request.header.correlation_id;
                let metered = crate::metrics::Measured::start(api, version);
                // Nothing is measured while no user or client-id quota is
                // set, so that clients of a broker without quotas pay nothing.
                let measured = broker.client_quotas_in_force() && !Broker::quota_exempt(&request);
                let quota = measured.then(|| {
                    let mut quota = Quota {
                        broker: broker.clone(),
                        caller: caller.clone(),
                        client_id: request
                            .header
                            .client_id
                            .as_ref()
                            .map(|id| id.to_string())
                            .unwrap_or_default(),
                        throttled: throttled.clone(),
                        earned: Duration::ZERO,
                    };
                    // A produce's bytes count as it is read, and a
                    // connection they take over its quota is muted before
                    // its next request is read, however many it pipelines.
                    quota.earned = quota.record(
                        Usage {
                            produce_bytes: request_bytes(api, frame_len),
                            ..Usage::default()
                        },
                        None,
                    );
                    quota
                });
                // Awaited here, one request at a time: what must happen in
                // request order (a produce's appends) is done before the next
                // frame is read. Only the rest runs beside later requests.
                let begin = broker.begin(request, &caller);
                let (begun, quota) = match quota {
                    Some(quota) => {
                        let work = WorkClock::default();
                        (work.time(begin).await, Some((quota, work)))
                    }
                    None => (begin.await, None),
                };
                drop(busy);
                let respond = Respond {
                    api,
                    version,
                    correlation_id,
                    budget: budget.clone(),
                    reserved,
                    quota,
                    metered,
                };
                tokio::spawn(finish(begun, respond))
            }
            Ok(Decoded::UnsupportedApiVersions { correlation_id }) => {
                let reserved = budget.reserve(RESERVATION_BYTES_MIN).await;
                let advertised = broker.advertised_apis();
                tokio::spawn(async move {
                    api_versions_unsupported_response(correlation_id, &advertised)
                        .map(|frame| Some((frame, reserved)))
                        .map_err(Close::Encode)
                })
            }
            Err(err) => {
                tracing::debug!(%peer, reason = %err, "closing connection: undecodable request");
                return;
            }
        };
        if queue.send(InFlight(task)).await.is_err() {
            return;
        }
    }
}

/// How to answer a begun request, and the bytes reserved for the answer.
struct Respond {
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    budget: Arc<Budget>,
    reserved: Reserved,
    /// What the request is measured against its client quotas with, and the
    /// time the broker has spent on it; `None` for an exempt request.
    quota: Option<(Quota, WorkClock)>,
    /// The request's metrics, while they are on.
    metered: Option<crate::metrics::Measured>,
}

/// Who a request is measured for, and the throttle time it earned when it
/// was read.
struct Quota {
    broker: Arc<Broker>,
    caller: Caller,
    client_id: String,
    throttled: Arc<Throttled>,
    earned: Duration,
}

impl Quota {
    /// Record `usage`, and mute the connection if that took it over a
    /// quota (or the request already had); the throttle time. `response`,
    /// when given, then carries it (and must be encoded again).
    fn record(
        &self,
        usage: Usage,
        response: Option<&mut kafka_protocol::messages::ResponseKind>,
    ) -> Duration {
        let wait = {
            let mut session = self
                .throttled
                .session
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            self.broker.throttle(
                &mut session,
                (&self.caller, &self.client_id),
                (usage, self.earned),
                response,
            )
        };
        if !wait.is_zero() {
            self.throttled.mute(wait);
        }
        wait
    }

    /// Record what the request cost by the time its response is ready.
    fn record_answered(
        &self,
        work: &WorkClock,
        fetch_bytes: usize,
        response: Option<&mut kafka_protocol::messages::ResponseKind>,
    ) -> Duration {
        let usage = Usage {
            fetch_bytes,
            work: work.spent(),
            ..Usage::default()
        };
        self.record(usage, response)
    }
}

/// What a request's own bytes count for: a Produce's toward
/// `producer_byte_rate`; no other request's.
fn request_bytes(api: ApiKey, frame_len: usize) -> usize {
    if api == ApiKey::Produce { frame_len } else { 0 }
}

/// Complete a begun request and encode its response, off the writer's path
/// so large responses are encoded in parallel.
async fn finish(begun: Result<Reply, HandlerError>, respond: Respond) -> Outcome {
    let Respond {
        api,
        version,
        correlation_id,
        budget,
        mut reserved,
        quota,
        metered,
    } = respond;
    let body = match begun {
        Ok(Reply::Ready(body)) => Ok(body.map(|body| *body)),
        Ok(Reply::Later(pending)) => match &quota {
            Some((_, work)) => work.time(pending).await,
            None => pending.await,
        },
        Err(err) => Err(err),
    };
    match body {
        Ok(Some(mut body)) => {
            let encode = |body: &kafka_protocol::messages::ResponseKind| {
                encode_response_within(
                    api,
                    version,
                    correlation_id,
                    body,
                    weir_protocol::RESPONSE_BYTES_MAX,
                )
                .map_err(Close::Encode)
            };
            let mut frame = encode(&body)?;
            if let Some((quota, work)) = quota {
                // A share fetch's records count as a fetch's do; it is not
                // sent back empty when throttled, as its records are
                // acquired for this consumer.
                let fetch_bytes = if matches!(api, ApiKey::Fetch | ApiKey::ShareFetch) {
                    frame.len()
                } else {
                    0
                };
                if !quota
                    .record_answered(&work, fetch_bytes, Some(&mut body))
                    .is_zero()
                {
                    frame = encode(&body)?;
                }
            }
            if let Some(metered) = metered {
                metered.done(Some(&body));
            }
            drop(body);
            budget.settle(&mut reserved, frame.len());
            Ok(Some((frame, reserved)))
        }
        Ok(None) => {
            // A produce with acks=0 is answered by nothing, but is measured
            // and muted all the same.
            if let Some((quota, work)) = quota {
                quota.record_answered(&work, 0, None);
            }
            if let Some(metered) = metered {
                metered.done(None);
            }
            Ok(None)
        }
        Err(err) => {
            if let Some(metered) = metered {
                metered.done(None);
            }
            Err(Close::Refused(err))
        }
    }
}

async fn write_responses<W: AsyncWrite + Unpin>(
    write_half: Tracked<W>,
    peer: SocketAddr,
    mut in_flight: mpsc::Receiver<InFlight>,
    activity: &Arc<Activity>,
) {
    let mut socket = BufWriter::with_capacity(SOCKET_BUFFER_BYTES, write_half);
    loop {
        let mut next = match in_flight.try_recv() {
            Ok(next) => next,
            Err(mpsc::error::TryRecvError::Empty) => {
                // Nothing else is ready: send what is buffered before waiting.
                if let Err(err) = socket.flush().await {
                    tracing::debug!(%peer, error = %err, "closing connection: write failed");
                    return;
                }
                match in_flight.recv().await {
                    Some(next) => next,
                    None => break,
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
        };
        if !next.0.is_finished()
            && let Err(err) = socket.flush().await
        {
            tracing::debug!(%peer, error = %err, "closing connection: write failed");
            return;
        }
        // A handler still running (a long poll) is work owed to the peer,
        // not idleness.
        let busy = activity.busy();
        let joined = (&mut next.0).await;
        drop(busy);
        // The reservation is held until the frame is written.
        let (frame, _reserved) = match joined {
            Ok(Ok(Some(answer))) => answer,
            Ok(Ok(None)) => continue,
            Ok(Err(Close::Refused(err))) => {
                tracing::debug!(%peer, reason = %err, "closing connection: request refused");
                break;
            }
            Ok(Err(Close::Encode(err))) => {
                tracing::error!(%peer, error = %err, "closing connection: response cannot be encoded");
                break;
            }
            Err(err) => {
                tracing::error!(%peer, error = %err, "closing connection: request handler failed");
                break;
            }
        };
        if let Err(err) = socket.write_all(&frame).await {
            tracing::debug!(%peer, error = %err, "closing connection: write failed");
            return;
        }
    }
    if let Err(err) = socket.shutdown().await {
        tracing::debug!(%peer, error = %err, "connection did not close cleanly");
    }
}
