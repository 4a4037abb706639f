//! What a bench run reports: the summary (text or one JSON object on
//! stdout), the latency histogram behind its percentiles, the progress bar on
//! stderr, and the clock every worker of a run shares.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::{CommonArgs, ProducerArgs};

/// Highest latency the histogram tells apart, in microseconds (one hour);
/// slower records are counted at this value.
const LATENCY_US_MAX: u64 = 3_600_000_000;
/// Significant decimal digits the histogram keeps (0.1% error).
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;
/// How often the progress bar is redrawn.
const PROGRESS_REFRESH_MS: u64 = 100;

/// A monotonic clock shared by all the threads of a run, read in whole
/// microseconds since the run started, so it fits in an atomic and in a
/// record.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    start: Instant,
}

impl Clock {
    pub(super) fn start() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }

    pub(super) fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// A latency histogram in microseconds.
pub(super) fn latency_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGNIFICANT_DIGITS)
        .context("cannot create the latency histogram")
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct LatencyMs {
    pub(super) p50: f64,
    pub(super) p99: f64,
    pub(super) p999: f64,
    pub(super) max: f64,
}

impl LatencyMs {
    /// `None` when nothing was recorded.
    pub(super) fn from_histogram(histogram: &Histogram<u64>) -> Option<LatencyMs> {
        if histogram.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(LatencyMs {
            p50: ms(histogram.value_at_quantile(0.50)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        })
    }
}

/// The settings a run used, echoed in its report so that a figure can be
/// reproduced. Fields a mode does not use are null.
#[derive(Debug, Clone, Serialize)]
pub(super) struct ConfigReport {
    brokers: String,
    topic: String,
    /// Partitions the topic has (which may differ from `--partitions` for a
    /// topic that already existed).
    partitions: i32,
    count: u64,
    duration_s: Option<f64>,
    size: Option<usize>,
    acks: Option<&'static str>,
    compression: Option<&'static str>,
    linger_ms: Option<u32>,
    batch_size: Option<u32>,
    rate: Option<u64>,
    max_in_flight: Option<u32>,
    producers: Option<u32>,
    consumers: Option<u32>,
    /// The `-X` librdkafka properties.
    properties: BTreeMap<String, String>,
    /// Whether the report is printed as JSON (`--json`).
    #[serde(skip)]
    json: bool,
}

impl ConfigReport {
    pub(super) fn new(common: &CommonArgs, partitions: i32) -> ConfigReport {
        ConfigReport {
            brokers: common.brokers.clone(),
            topic: common.topic.clone(),
            partitions,
            count: common.count,
            duration_s: common.duration.map(|d| d.as_secs_f64()),
            size: None,
            acks: None,
            compression: None,
            linger_ms: None,
            batch_size: None,
            rate: None,
            max_in_flight: None,
            producers: None,
            consumers: None,
            properties: common.property.iter().cloned().collect(),
            json: common.json,
        }
    }

    pub(super) fn with_producers(mut self, args: &ProducerArgs, producers: u32) -> ConfigReport {
        self.size = Some(args.size);
        self.acks = Some(args.acks.as_config());
        self.compression = Some(args.compression.as_config());
        self.linger_ms = Some(args.linger_ms);
        self.batch_size = Some(args.batch_size);
        self.rate = Some(args.rate);
        self.max_in_flight = Some(args.max_in_flight);
        self.producers = Some(producers);
        self
    }

    pub(super) fn with_consumers(mut self, consumers: u32) -> ConfigReport {
        self.consumers = Some(consumers);
        self
    }
}

/// The outcome of a run. Its JSON field names are a stable interface:
/// scripts and docs/benchmarks.md read them.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Report {
    pub(super) mode: &'static str,
    /// Records delivered (produce) or received (consume, e2e).
    pub(super) records: u64,
    /// Key and value bytes of those records.
    pub(super) bytes: u64,
    pub(super) elapsed_s: f64,
    pub(super) msgs_per_sec: f64,
    /// Megabytes (10^6 bytes) per second.
    pub(super) mb_per_sec: f64,
    pub(super) latency_ms: Option<LatencyMs>,
    pub(super) errors: u64,
    pub(super) config: ConfigReport,
    /// The latest error a client saw, for the exit message.
    #[serde(skip)]
    pub(super) last_error: Option<String>,
}

impl Report {
    pub(super) fn new(
        mode: &'static str,
        records: u64,
        bytes: u64,
        elapsed: Duration,
        config: ConfigReport,
    ) -> Report {
        let elapsed_s = elapsed.as_secs_f64();
        let per_sec = |n: u64| {
            if elapsed_s > 0.0 {
                n as f64 / elapsed_s
            } else {
                0.0
            }
        };
        Report {
            mode,
            records,
            bytes,
            elapsed_s,
            msgs_per_sec: per_sec(records),
            mb_per_sec: per_sec(bytes) / 1e6,
            latency_ms: None,
            errors: 0,
            config,
            last_error: None,
        }
    }

    /// Prints the report on stdout: one JSON line with `--json`, else text.
    pub(super) fn print(&self) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        if self.config.json {
            serde_json::to_writer(&mut out, self).context("cannot write the JSON report")?;
            writeln!(out)?;
        } else {
            write!(out, "{}", self.text())?;
        }
        out.flush()?;
        Ok(())
    }

    fn text(&self) -> String {
        let c = &self.config;
        let plural = if c.partitions == 1 { "" } else { "s" };
        let mut text = format!(
            "weir bench {}: topic {} ({} partition{plural}) at {}\n",
            self.mode, c.topic, c.partitions, c.brokers
        );
        text.push_str(&format!("  records     {}\n", self.records));
        text.push_str(&format!("  bytes       {}\n", self.bytes));
        text.push_str(&format!("  elapsed     {:.3} s\n", self.elapsed_s));
        text.push_str(&format!(
            "  throughput  {:.0} msgs/s, {:.2} MB/s (MB = 10^6 bytes)\n",
            self.msgs_per_sec, self.mb_per_sec
        ));
        if let Some(l) = self.latency_ms {
            let what = if self.mode == "e2e" {
                "send to receipt"
            } else {
                "send to acknowledgement"
            };
            text.push_str(&format!(
                "  latency     p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms ({what})\n",
                l.p50, l.p99, l.p999, l.max
            ));
        }
        text.push_str(&format!("  errors      {}\n", self.errors));
        text
    }
}

/// A progress bar on stderr, drawn only for a person watching a terminal.
pub(super) struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub(super) fn new(common: &CommonArgs, verb: &str) -> Progress {
        if common.json || !std::io::stderr().is_terminal() {
            return Progress {
                bar: ProgressBar::hidden(),
            };
        }
        let bar = ProgressBar::with_draw_target(Some(common.count), ProgressDrawTarget::stderr());
        let template = format!(
            "{verb} {{bar:40}} {{human_pos}}/{{human_len}} records, {{msg}} msgs/s, {{elapsed}}"
        );
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style);
        }
        Progress { bar }
    }

    /// Redraws the bar from `done` until `finished` says the run is over.
    pub(super) fn follow(&self, done: &AtomicU64, finished: impl Fn() -> bool) {
        let started = Instant::now();
        while !finished() {
            let records = done.load(Ordering::Relaxed);
            self.bar.set_position(records);
            let elapsed_s = started.elapsed().as_secs_f64();
            if elapsed_s > 0.0 {
                self.bar
                    .set_message(format!("{:.0}", records as f64 / elapsed_s));
            }
            // The bar is redrawn on a timer; workers keep their own clock.
            std::thread::sleep(Duration::from_millis(PROGRESS_REFRESH_MS));
        }
        self.bar.finish_and_clear();
    }
}
