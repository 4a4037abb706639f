//! The idempotent producer: when a connection drops after the broker stored a
//! batch but before its response reached the client, librdkafka sends the
//! batch again, and the broker must answer with the original offsets instead
//! of storing it twice.
//!
//! A small TCP proxy between client and broker forces that: it forwards
//! bytes both ways, and for some Produce requests it swallows the response
//! and closes both sides. The broker advertises the proxy's address, so the
//! client only ever talks to the proxy.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::Broker;
use rdkafka::Message;
use rdkafka::producer::BaseRecord;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

const PARTITIONS: i32 = 4;
const RECORDS: u64 = 20_000;
/// Every this many Produce requests, the proxy cuts the connection.
const CUT_EVERY_PRODUCE_REQUESTS: usize = 20;
/// Most connections the proxy cuts.
const CUTS_MAX: usize = 8;
/// Largest frame the proxy relays.
const FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;
const PRODUCE_API_KEY: i16 = 0;

#[derive(Default)]
struct ProxyStats {
    produce_requests: AtomicUsize,
    cuts: AtomicUsize,
    cutting: AtomicBool,
}

async fn read_frame<R: AsyncReadExt + Unpin>(reader: &mut R) -> Option<Vec<u8>> {
    let mut prefix = [0u8; 4];
    reader.read_exact(&mut prefix).await.ok()?;
    let len = usize::try_from(i32::from_be_bytes(prefix)).ok()?;
    if len > FRAME_BYTES_MAX {
        return None;
    }
    let mut frame = prefix.to_vec();
    frame.resize(4 + len, 0);
    reader.read_exact(frame.get_mut(4..)?).await.ok()?;
    Some(frame)
}

fn be_i16(frame: &[u8], at: usize) -> Option<i16> {
    Some(i16::from_be_bytes(frame.get(at..at + 2)?.try_into().ok()?))
}

fn be_i32(frame: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(frame.get(at..at + 4)?.try_into().ok()?))
}

/// Relay one client connection. Returns when either side closes or a cut happens.
async fn relay(client: TcpStream, upstream: String, stats: Arc<ProxyStats>) {
    let Ok(server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // Correlation id of the Produce request whose response is to be swallowed.
    let cut_at: Arc<Mutex<Option<i32>>> = Arc::default();

    let requests = {
        let stats = stats.clone();
        let cut_at = cut_at.clone();
        async move {
            while let Some(frame) = read_frame(&mut client_read).await {
                if be_i16(&frame, 4) == Some(PRODUCE_API_KEY) {
                    let n = stats.produce_requests.fetch_add(1, Ordering::SeqCst) + 1;
                    let mut cut = cut_at.lock().await;
                    if stats.cutting.load(Ordering::SeqCst)
                        && n.is_multiple_of(CUT_EVERY_PRODUCE_REQUESTS)
                        && cut.is_none()
                        && stats.cuts.load(Ordering::SeqCst) < CUTS_MAX
                    {
                        *cut = be_i32(&frame, 8);
                    }
                }
                if server_write.write_all(&frame).await.is_err() {
                    return;
                }
            }
        }
    };
    let responses = {
        let stats = stats.clone();
        async move {
            while let Some(frame) = read_frame(&mut server_read).await {
                let correlation_id = be_i32(&frame, 4);
                if correlation_id.is_some() && *cut_at.lock().await == correlation_id {
                    // The broker has answered, so the batch is stored; the
                    // client never learns it and must retry.
                    stats.cuts.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                if client_write.write_all(&frame).await.is_err() {
                    return;
                }
            }
        }
    };
    // Whichever side ends first drops all four halves: both connections close.
    tokio::select! {
        () = requests => {}
        () = responses => {}
    }
}

async fn run_proxy(listener: TcpListener, upstream: String, stats: Arc<ProxyStats>) {
    while let Ok((client, _)) = listener.accept().await {
        let _ = client.set_nodelay(true);
        tokio::spawn(relay(client, upstream.clone(), stats.clone()));
    }
}

#[test]
fn retried_batches_after_a_cut_connection_are_stored_exactly_once() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let proxy_addr = std_listener.local_addr()?.to_string();
    let broker = Broker::start(&["--advertised", &proxy_addr])?;
    let stats = Arc::new(ProxyStats::default());
    stats.cutting.store(true, Ordering::SeqCst);
    {
        let _guard = runtime.enter();
        let listener = TcpListener::from_std(std_listener)?;
        runtime.spawn(run_proxy(listener, broker.bootstrap(), stats.clone()));
    }

    let topic = "idempotent";
    common::create_topic_blocking(&proxy_addr, topic, PARTITIONS, &[])?;
    let mut config = common::producer_config(&proxy_addr);
    config
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .set("batch.num.messages", "50")
        .set("retry.backoff.ms", "50");
    let producer = common::tracked_producer(&config)?;
    for id in 0..RECORDS {
        let partition = i32::try_from(id % PARTITIONS as u64)?;
        let value = id.to_string();
        common::send_tracked(
            &producer,
            BaseRecord::with_opaque_to(topic, Box::new(id))
                .partition(partition)
                .payload(value.as_bytes()),
        )?;
    }
    common::flush_all_delivered(&producer, usize::try_from(RECORDS)?)?;
    stats.cutting.store(false, Ordering::SeqCst);
    let cuts = stats.cuts.load(Ordering::SeqCst);
    assert!(
        cuts >= 1,
        "the proxy cut no connection mid-request ({} produce requests seen)",
        stats.produce_requests.load(Ordering::SeqCst)
    );

    eprintln!(
        "proxy: {cuts} connections cut after {} produce requests",
        stats.produce_requests.load(Ordering::SeqCst)
    );
    let partitions: Vec<i32> = (0..PARTITIONS).collect();
    let read =
        common::read_to_high_watermark(&proxy_addr, topic, &partitions, Duration::from_secs(120))?;
    for p in partitions {
        let ids: Vec<u64> = read
            .get(&p)
            .map(|messages| {
                messages
                    .iter()
                    .map(|m| {
                        let text =
                            std::str::from_utf8(m.payload().unwrap_or_default()).unwrap_or("");
                        text.parse::<u64>().unwrap_or(u64::MAX)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let want: Vec<u64> = (0..RECORDS)
            .filter(|id| id % PARTITIONS as u64 == p as u64)
            .collect();
        if ids != want {
            let dups = ids.len() as i64 - want.len() as i64;
            let first_diff = ids.iter().zip(&want).position(|(a, b)| a != b);
            anyhow::bail!(
                "partition {p}: {} records read, {} produced (difference {dups}); first difference at index {first_diff:?}; {cuts} cuts",
                ids.len(),
                want.len()
            );
        }
    }
    drop(broker);
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}
