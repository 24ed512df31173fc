//! What durability costs the replay cache on this machine.
//!
//! ```sh
//! cargo run --release -p nox-node --example replay_commit [DIR]
//! ```
//!
//! The files go in a fresh temporary directory under `DIR` (default: the
//! current directory — run it on the disk the node's data directory lives on;
//! `/tmp` may be a RAM disk where fsync is free). Four measurements:
//!
//! 1. `raw_commit` — one append of 18 tags to an epoch's log and its
//!    `fdatasync` (what the persister does per commit at saturation, about
//!    9,000 packets/s in 2 ms), with the CPU time the committing thread spent
//!    on it; `redb_commit` — the same tags as one row of a redb table in a
//!    write transaction committed with `Durability::Immediate`, the way the
//!    replay tags were kept before the log files.
//! 2. `serial` — one thread: `check_and_insert` then `wait_durable`, so every
//!    batch holds one tag: the latency a packet waits at low load.
//! 3. `concurrent` — 8 threads doing the same: group commit batches whatever
//!    arrives during one fsync; durable inserts per second and latency.
//! 4. `burst` — one thread inserting without waiting: the in-memory rate, and
//!    how long the persister takes to make the whole burst durable.
//!
//! The last line sums it up in one line to compare between machines.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use nox_node::replay::ReplayCache;
use nox_node::replay_log::{self, EpochLog};
use nox_node::store::open_database;
use rand::RngCore;

const WAIT: Duration = Duration::from_secs(30);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    let median = percentile(&samples, 0.5);
    println!(
        "{name:<11} n={:<6} median={:>8.1} µs  p90={:>8.1} µs  p99={:>8.1} µs",
        samples.len(),
        median.as_secs_f64() * 1e6,
        percentile(&samples, 0.9).as_secs_f64() * 1e6,
        percentile(&samples, 0.99).as_secs_f64() * 1e6,
    );
    median
}

/// CPU time of the calling thread so far (`/proc/thread-self/schedstat`).
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    Duration::from_nanos(stat.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Runs `commit` 300 times; reports wall time and returns the median and the
/// mean CPU time per commit.
fn measure(name: &str, mut commit: impl FnMut()) -> (Duration, Duration) {
    let mut wall = Vec::new();
    let cpu0 = thread_cpu();
    for _ in 0..300 {
        let start = Instant::now();
        commit();
        wall.push(start.elapsed());
    }
    let cpu = (thread_cpu() - cpu0) / 300;
    let median = report(name, wall);
    println!("{name:<11} cpu per commit {:.1} µs (committing thread)", cpu.as_secs_f64() * 1e6);
    (median, cpu)
}

fn random_tag() -> [u8; 16] {
    let mut t = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut t);
    t
}

fn main() {
    let base = std::env::args().nth(1).unwrap_or_else(|| ".".to_owned());
    let dir = tempfile::Builder::new().prefix("nox-replay-bench").tempdir_in(&base).expect("temporary directory");
    let db = open_database(&dir.path().join("node.redb")).expect("database");
    let logs = dir.path().join("replay");
    println!("files in {}", dir.path().display());

    // 1. Raw commits of 18 tags: the log, then a redb table.
    replay_log::list(&logs).unwrap();
    let mut log = EpochLog::create(&logs, 100).unwrap();
    let (raw_median, raw_cpu) = measure("raw_commit", || {
        let tags: Vec<[u8; 16]> = (0..18).map(|_| random_tag()).collect();
        log.append(&tags).unwrap();
        log.sync().unwrap();
    });
    log.remove().unwrap();
    let table: redb::TableDefinition<'_, u64, &[u8]> = redb::TableDefinition::new("bench_raw");
    let mut row = 0u64;
    let (redb_median, redb_cpu) = measure("redb_commit", || {
        let tags: Vec<u8> = (0..18).flat_map(|_| random_tag()).collect();
        let mut txn = db.begin_write().unwrap();
        txn.set_durability(redb::Durability::Immediate).unwrap();
        txn.open_table(table).unwrap().insert(row, tags.as_slice()).unwrap();
        txn.commit().unwrap();
        row += 1;
    });

    let cache = Arc::new(ReplayCache::open(&logs, None, 10_000_000, Duration::from_millis(2), &[1, 2, 3]).unwrap());

    // 2. One packet at a time.
    let mut serial = Vec::new();
    for _ in 0..300 {
        let start = Instant::now();
        let seq = cache.check_and_insert(1, &random_tag()).unwrap();
        assert!(cache.wait_durable(seq, WAIT));
        serial.push(start.elapsed());
    }
    let serial_median = report("serial", serial);

    // 3. Eight threads, each waiting for its own tag.
    let threads = 8;
    let run_for = Duration::from_secs(3);
    let start = Instant::now();
    let latencies: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let cache = cache.clone();
                s.spawn(move || {
                    let mut lat = Vec::new();
                    while start.elapsed() < run_for {
                        let t0 = Instant::now();
                        let seq = cache.check_and_insert(2, &random_tag()).unwrap();
                        assert!(cache.wait_durable(seq, WAIT));
                        lat.push(t0.elapsed());
                    }
                    lat
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let concurrent_rate = latencies.len() as f64 / elapsed;
    let concurrent_median = report("concurrent", latencies);
    println!("concurrent  {threads} threads: {concurrent_rate:.0} durable inserts/s");

    // 4. A burst without waiting.
    let burst = 200_000;
    let tags: Vec<[u8; 16]> = (0..burst).map(|_| random_tag()).collect();
    let start = Instant::now();
    let mut last = 0;
    for t in &tags {
        last = cache.check_and_insert(3, t).unwrap();
    }
    let inserted = start.elapsed();
    assert!(cache.wait_durable(last, WAIT));
    let durable = start.elapsed();
    let burst_rate = burst as f64 / inserted.as_secs_f64();
    println!(
        "burst       {burst} inserts: {burst_rate:.0} inserts/s in memory, all durable after {:.1} ms ({:.0} durable inserts/s)",
        durable.as_secs_f64() * 1e3,
        burst as f64 / durable.as_secs_f64(),
    );

    cache.shutdown().unwrap();
    println!(
        "replay_commit raw_commit_median_us={:.0} raw_commit_cpu_us={:.0} redb_commit_median_us={:.0} redb_commit_cpu_us={:.0} serial_median_us={:.0} concurrent_median_us={:.0} concurrent_inserts_per_s={:.0} burst_inserts_per_s={:.0}",
        raw_median.as_secs_f64() * 1e6,
        raw_cpu.as_secs_f64() * 1e6,
        redb_median.as_secs_f64() * 1e6,
        redb_cpu.as_secs_f64() * 1e6,
        serial_median.as_secs_f64() * 1e6,
        concurrent_median.as_secs_f64() * 1e6,
        concurrent_rate,
        burst_rate,
    );
}
