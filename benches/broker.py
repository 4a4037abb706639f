#!/usr/bin/env python3
"""Reproduce docs/benchmarks.md: drive `weir serve` with `weir bench` (librdkafka).

Each run gets a fresh broker on a free port with a fresh data directory under
--data-root (put it on the disk you measure). Every scenario runs --repeat
times, interleaved over the binaries given, and the median of each figure is
printed, so an old and a new binary are compared in the same noisy period:

  cargo build --release --bin weir
  python3 benches/broker.py --weir target/release/weir --repeat 3
  python3 benches/broker.py --weir /tmp/weir-before --weir target/release/weir

Scenarios (--only to pick some): produce-100 produce-1k produce-100-p1000
produce-1k-p1000 latency consume-1k rss restart. Results go to stdout as a
table and, with --json FILE, as raw JSON.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

# The same client settings as the peers' figures in PEERS.md.
CLIENT = ["--linger-ms", "5", "-X", "batch.num.messages=10000"]
PRODUCE_SECONDS = "10s"
PRODUCE_COUNT = "100000000"
STARTUP_WAIT_S = 120


class Broker:
    def __init__(self, weir, data_dir, extra=()):
        self.data_dir = data_dir
        self.proc = subprocess.Popen(
            [weir, "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
             "--data-dir", data_dir, *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        started = time.monotonic()
        line = self.proc.stdout.readline()
        self.startup_s = time.monotonic() - started
        if not line.startswith("listening on "):
            raise RuntimeError(f"broker did not start: {line!r}")
        self.addr = line.split()[-1]

    def rss_mib(self):
        out = subprocess.run(["ps", "-o", "rss=", "-p", str(self.proc.pid)],
                             capture_output=True, text=True).stdout.strip()
        return int(out) / 1024

    def cpu_s(self):
        """CPU seconds (user + system) per thread name, and in total."""
        tick = os.sysconf("SC_CLK_TCK")
        by_name = {}
        task_dir = f"/proc/{self.proc.pid}/task"
        for tid in os.listdir(task_dir):
            try:
                with open(f"{task_dir}/{tid}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            by_name[name] = by_name.get(name, 0) + (int(fields[11]) + int(fields[12])) / tick
        by_name["total"] = sum(by_name.values())
        return by_name

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        self.proc.wait(timeout=120)


def bench(weir, mode, addr, args):
    out = subprocess.run(
        [weir, "bench", mode, "--brokers", addr, "--json", *args],
        capture_output=True, text=True, timeout=900,
    )
    if out.returncode != 0:
        raise RuntimeError(f"bench {mode} {args} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def produce_args(size, partitions, extra=()):
    return ["--topic", "bench", "--size", str(size), "--partitions", str(partitions),
            "--count", PRODUCE_COUNT, "--duration", PRODUCE_SECONDS, *CLIENT, *extra]


def figures(report):
    """The numbers of a produce or consume report that the table shows."""
    keep = {"mb_per_sec": report["mb_per_sec"], "msgs_per_sec": report["msgs_per_sec"]}
    if report.get("errors"):
        keep["errors"] = report["errors"]
    lat = report.get("latency_ms") or {}
    for p in ("p50", "p99", "p999"):
        if p in lat:
            keep[f"{p}_ms"] = lat[p]
    return keep


def run_produce(weir, root, size, partitions):
    d = tempfile.mkdtemp(dir=root)
    b = Broker(weir, d)
    try:
        before, started = b.cpu_s(), time.monotonic()
        fig = figures(bench(weir, "produce", b.addr, produce_args(size, partitions)))
        after, wall = b.cpu_s(), time.monotonic() - started
        # Cores the broker kept busy over the run (setup included), in total
        # and in the flusher thread that issues the fdatasyncs.
        fig["broker_cores"] = (after["total"] - before["total"]) / wall
        fig["flusher_cores"] = (after.get("weir-flusher", 0) - before.get("weir-flusher", 0)) / wall
        return fig
    finally:
        b.stop()
        shutil.rmtree(d, ignore_errors=True)


def run_latency(weir, root):
    """Single 100 B records at 1,000 msg/s, acks=all: service latency, as PEERS.md measured."""
    d = tempfile.mkdtemp(dir=root)
    b = Broker(weir, d)
    try:
        args = ["--topic", "lat", "--size", "100", "--count", "10000", "--rate", "1000",
                "--linger-ms", "0", "-X", "batch.num.messages=1"]
        return figures(bench(weir, "produce", b.addr, args))
    finally:
        b.stop()
        shutil.rmtree(d, ignore_errors=True)


def run_consume(weir, root):
    d = tempfile.mkdtemp(dir=root)
    b = Broker(weir, d)
    try:
        bench(weir, "produce", b.addr, ["--topic", "c", "--size", "1024", "--count", "1000000",
                                         *CLIENT])
        return figures(bench(weir, "consume", b.addr, ["--topic", "c", "--count", "1000000"]))
    finally:
        b.stop()
        shutil.rmtree(d, ignore_errors=True)


def run_rss(weir, root):
    d = tempfile.mkdtemp(dir=root)
    b = Broker(weir, d)
    try:
        time.sleep(2)
        idle = b.rss_mib()
        bench(weir, "produce", b.addr, produce_args(1024, 1000))
        time.sleep(2)
        after = b.rss_mib()
        return {"rss_idle_mib": idle, "rss_after_load_mib": after}
    finally:
        b.stop()
        shutil.rmtree(d, ignore_errors=True)


def run_restart(weir, root):
    """Write 1 GiB of log, stop (SIGTERM, then SIGKILL), time the start to `listening on`."""
    d = tempfile.mkdtemp(dir=root)
    out = {}
    try:
        for sig, name in ((signal.SIGTERM, "restart_sigterm_s"), (signal.SIGKILL, "restart_sigkill_s")):
            b = Broker(weir, d)
            # 1 GiB of 1 KiB records per round.
            bench(weir, "produce", b.addr, ["--topic", f"r{name}", "--size", "1024",
                                             "--count", str(1 << 20), *CLIENT])
            b.stop(sig)
            # Drop the page cache is not possible without root everywhere; the
            # figure is the warm-cache restart an operator sees after a crash.
            b = Broker(weir, d)
            out[name] = b.startup_s
            b.stop()
        return out
    finally:
        shutil.rmtree(d, ignore_errors=True)


SCENARIOS = {
    "produce-100": lambda w, r: run_produce(w, r, 100, 1),
    "produce-1k": lambda w, r: run_produce(w, r, 1024, 1),
    "produce-100-p1000": lambda w, r: run_produce(w, r, 100, 1000),
    "produce-1k-p1000": lambda w, r: run_produce(w, r, 1024, 1000),
    "latency": run_latency,
    "consume-1k": run_consume,
    "rss": run_rss,
    "restart": run_restart,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weir", action="append", required=True, help="weir binary (repeatable: compared)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", nargs="*", default=list(SCENARIOS))
    ap.add_argument("--data-root", default=None, help="where brokers keep their data")
    ap.add_argument("--json", default=None, help="write every raw figure here")
    a = ap.parse_args()
    root = a.data_root or tempfile.mkdtemp(prefix="weir-bench-")
    os.makedirs(root, exist_ok=True)
    raw = {s: {w: [] for w in a.weir} for s in a.only}
    for s in a.only:
        for i in range(a.repeat):
            for w in a.weir:
                try:
                    fig = SCENARIOS[s](w, root)
                except Exception as e:  # a failed run is reported, not fatal
                    print(f"{s} run {i} with {w} failed: {e}", file=sys.stderr)
                    continue
                raw[s][w].append(fig)
                print(f"{s} [{i}] {w}: {fig}", file=sys.stderr, flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(raw, f, indent=1)
    print(f"{'scenario':<20} {'figure':<20} " + " ".join(f"{os.path.basename(os.path.dirname(w)) + '/' + os.path.basename(w):>24}" for w in a.weir) + "   ratio")
    for s in a.only:
        keys = sorted({k for w in a.weir for f in raw[s][w] for k in f})
        for k in keys:
            meds = []
            for w in a.weir:
                vals = [f[k] for f in raw[s][w] if k in f]
                meds.append(statistics.median(vals) if vals else float("nan"))
            ratio = meds[-1] / meds[0] if len(meds) > 1 and meds[0] else float("nan")
            print(f"{s:<20} {k:<20} " + " ".join(f"{m:>24.2f}" for m in meds) + f"   {ratio:.2f}")


if __name__ == "__main__":
    main()
