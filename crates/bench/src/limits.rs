//! `weir bench limits`: the machine's own limits, to set beside any broker
//! figure measured in the same period (docs/benchmarks.md).
//!
//! It measures what bounds a durable broker here: sequential write bandwidth
//! with one fdatasync at the end, the latency of a 4 KiB write followed by
//! fdatasync, the bandwidth of 256 KiB writes each followed by fdatasync (the
//! group-commit ceiling: a linger window's batches, then one sync), and
//! loopback TCP bandwidth over one stream. Plain std file and socket calls,
//! so nothing needs installing; the test file is removed at the end.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;

/// Block size of the sequential write.
const SEQUENTIAL_BLOCK_BYTES: usize = 1024 * 1024;
/// Block size of the small synced writes whose latency is measured.
const SYNC_BLOCK_BYTES: usize = 4 * 1024;
/// Block size of the group-commit writes.
const GROUP_COMMIT_BLOCK_BYTES: usize = 256 * 1024;
/// Buffer each loopback write and read moves.
const LOOPBACK_BUFFER_BYTES: usize = 1024 * 1024;
/// The most MiB `--size-mb` may ask to write.
const SIZE_MB_MAX: u64 = 64 * 1024;
/// The most synced 4 KiB writes `--syncs` may ask for.
const SYNCS_MAX: u64 = 1_000_000;
/// The longest `--seconds` of loopback traffic.
const LOOPBACK_SECONDS_MAX: u64 = 600;
/// Bytes per MB in the figures (10^6, as the other benches print).
const BYTES_PER_MB: f64 = 1_000_000.0;

pub const LIMITS_EXAMPLES: &str = "\
Examples:
  weir bench limits --dir /var/lib/weir
  weir bench limits --dir target/benchdata --json
  weir bench limits --dir . --size-mb 256 --syncs 1000 --seconds 1

--dir must be on the disk the broker's data folder uses (a tmpfs /tmp measures
memory, not the disk). Every write appends to a new file, as the commit log
does. The test file, .weir-limits-PID, is removed at the end. No broker is
needed (--brokers is ignored).

Figures:
  disk sequential write      --size-mb MiB in 1 MiB writes, one fdatasync at the end
  disk 4 KiB fdatasync       p50 and p99 of --syncs writes of 4 KiB, each followed by fdatasync
  disk group-commit ceiling  --size-mb MiB in 256 KiB writes, each followed by fdatasync
  loopback TCP               one stream over 127.0.0.1 for --seconds

MB is 10^6 bytes.";

/// `weir bench limits`.
#[derive(Debug, Clone, Args)]
pub struct LimitsArgs {
    /// Folder on the disk to measure; the broker's data disk.
    #[arg(long, value_name = "DIR", default_value = ".")]
    dir: PathBuf,
    /// MiB written by the sequential and the group-commit measurements.
    #[arg(long, value_name = "MIB", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=SIZE_MB_MAX))]
    size_mb: u64,
    /// Number of 4 KiB write + fdatasync pairs timed.
    #[arg(long, default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(1..=SYNCS_MAX))]
    syncs: u64,
    /// Seconds of loopback TCP traffic.
    #[arg(long, default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(1..=LOOPBACK_SECONDS_MAX))]
    seconds: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// The measured limits.
#[derive(Debug, serde::Serialize)]
struct Limits {
    dir: String,
    sequential_write_mb_s: f64,
    sync_4k_p50_ms: f64,
    sync_4k_p99_ms: f64,
    group_commit_mb_s: f64,
    loopback_tcp_mb_s: f64,
}

/// Runs `weir bench limits`.
pub fn run(args: &LimitsArgs) -> anyhow::Result<()> {
    if !args.dir.is_dir() {
        bail!("--dir {} is not a folder", args.dir.display());
    }
    let file = TestFile::new(&args.dir);
    let bytes = args.size_mb * 1024 * 1024;
    let sequential_write_mb_s = file.write_and_sync(bytes, SEQUENTIAL_BLOCK_BYTES, false)?;
    let (sync_4k_p50_ms, sync_4k_p99_ms) = file.sync_latency_ms(args.syncs)?;
    let group_commit_mb_s = file.write_and_sync(bytes, GROUP_COMMIT_BLOCK_BYTES, true)?;
    drop(file);
    let loopback_tcp_mb_s = loopback_mb_s(Duration::from_secs(args.seconds))?;
    let limits = Limits {
        dir: args.dir.display().to_string(),
        sequential_write_mb_s,
        sync_4k_p50_ms,
        sync_4k_p99_ms,
        group_commit_mb_s,
        loopback_tcp_mb_s,
    };
    if args.json {
        println!("{}", serde_json::to_string(&limits)?);
    } else {
        println!(
            "disk sequential write (1 MiB blocks, fdatasync at end): {:.0} MB/s",
            limits.sequential_write_mb_s
        );
        println!(
            "disk 4 KiB write + fdatasync latency: p50 {:.2} ms, p99 {:.2} ms",
            limits.sync_4k_p50_ms, limits.sync_4k_p99_ms
        );
        println!(
            "disk 256 KiB writes, fdatasync after each (group-commit ceiling): {:.0} MB/s",
            limits.group_commit_mb_s
        );
        println!(
            "loopback TCP, one stream: {:.0} MB/s",
            limits.loopback_tcp_mb_s
        );
    }
    Ok(())
}

/// The test file; removed when dropped, whatever happened.
struct TestFile {
    path: PathBuf,
}

impl TestFile {
    fn new(dir: &Path) -> TestFile {
        TestFile {
            path: dir.join(format!(".weir-limits-{}", std::process::id())),
        }
    }

    /// A new, empty file, replacing the previous measurement's.
    fn create(&self) -> anyhow::Result<File> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.path)
            .with_context(|| format!("cannot create {}", self.path.display()))
    }

    /// Writes `bytes` in blocks of `block_bytes`, with an fdatasync after
    /// each block (`sync_each`) or once at the end; MB/s including the syncs.
    fn write_and_sync(
        &self,
        bytes: u64,
        block_bytes: usize,
        sync_each: bool,
    ) -> anyhow::Result<f64> {
        let mut file = self.create()?;
        // Not zeros: a filesystem or disk that compresses must not flatter the figure.
        let block: Vec<u8> = (0..block_bytes).map(|i| (i % 251) as u8).collect();
        let block_len = u64::try_from(block_bytes)?;
        let started = Instant::now();
        let mut written = 0u64;
        while written < bytes {
            file.write_all(&block).context("write failed")?;
            written += block_len;
            if sync_each {
                file.sync_data().context("fdatasync failed")?;
            }
        }
        if !sync_each {
            file.sync_data().context("fdatasync failed")?;
        }
        Ok(mb_per_s(written, started.elapsed()))
    }

    /// p50 and p99, in ms, of `count` 4 KiB writes each followed by fdatasync.
    fn sync_latency_ms(&self, count: u64) -> anyhow::Result<(f64, f64)> {
        let mut file = self.create()?;
        let block = [0x5au8; SYNC_BLOCK_BYTES];
        // 1 µs to 60 s, 3 significant digits.
        let mut histogram = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
            .context("cannot build the latency histogram")?;
        for _ in 0..count {
            let started = Instant::now();
            file.write_all(&block).context("write failed")?;
            file.sync_data().context("fdatasync failed")?;
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            histogram.saturating_record(micros.max(1));
        }
        let ms = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
        Ok((ms(0.50), ms(0.99)))
    }
}

impl Drop for TestFile {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_file(&self.path)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("warning: cannot remove {}: {err}", self.path.display());
        }
    }
}

/// MB/s of one TCP stream over 127.0.0.1 for `duration`: a writer thread
/// sends 1 MiB buffers, this thread reads and counts them.
fn loopback_mb_s(duration: Duration) -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut stream = TcpStream::connect(address)?;
        let buffer = vec![0xa5u8; LOOPBACK_BUFFER_BYTES];
        let deadline = Instant::now() + duration;
        while Instant::now() < deadline {
            stream.write_all(&buffer)?;
        }
        Ok(())
    });
    let (mut stream, _) = listener.accept().context("no loopback connection")?;
    let mut buffer = vec![0u8; LOOPBACK_BUFFER_BYTES];
    let started = Instant::now();
    let mut received = 0u64;
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => received += u64::try_from(n)?,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err).context("loopback read failed"),
        }
    }
    let elapsed = started.elapsed();
    match writer.join() {
        Ok(result) => result.context("loopback write failed")?,
        Err(_) => bail!("the loopback writer panicked"),
    }
    Ok(mb_per_s(received, elapsed))
}

fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / BYTES_PER_MB / elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
}
