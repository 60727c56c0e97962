//! The pure scheduler's rate at two queue depths: how many dispatch-and-complete
//! cycles per second it sustains with 100 and with 100,000 tasks waiting.
//!
//!   cargo run --release -p shoal-core --example scheduler_rate
//!
//! The queue does O(1) amortized work per step; what still differs between the two
//! depths is the memory cache: a task popped from 100,000 waiting ones is cold.

use std::time::{Duration, Instant};

use shoal_core::scheduler::{Backoff, Decision, Scheduler, SchedulerConfig};
use shoal_core::{AttemptOutcome, TaskMeta};

const CYCLES: u64 = 200_000;
const SLOTS: usize = 2;

/// Cycles per second with `depth` tasks waiting; the queue is topped up as it goes.
fn rate(depth: u64) -> f64 {
    let config = SchedulerConfig {
        slots: SLOTS,
        aging: Some(Duration::from_secs(30)),
        backoff: Backoff { base: Duration::from_secs(1), max: Duration::from_secs(60) },
        retry_timeouts: true,
        start_interval: Duration::ZERO,
        start_gate: None,
        median_timeout: None,
    };
    let mut s = Scheduler::new(config);
    let meta = |i: u64| TaskMeta {
        priority: (i % 3) as i32,
        key: Some(format!("k{}", i % 16)),
        ..TaskMeta::default()
    };
    let mut next = 0;
    for _ in 0..depth {
        s.submit(next, meta(next), 0, Duration::ZERO);
        next += 1;
    }
    let mut out = Vec::new();
    let start = Instant::now();
    let mut done = 0;
    let mut now = Duration::ZERO;
    while done < CYCLES {
        out.clear();
        s.poll(now, &mut out);
        for d in &out {
            if let Decision::Start { slot, .. } = *d {
                s.attempt_ended(slot, AttemptOutcome::Succeeded, now);
                done += 1;
                // Keep the queue at its depth.
                s.submit(next, meta(next), 0, now);
                next += 1;
            }
        }
        now += Duration::from_micros(100);
    }
    CYCLES as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let shallow = rate(100);
    let deep = rate(100_000);
    println!("queue depth     100: {shallow:>12.0} tasks/s");
    println!("queue depth 100,000: {deep:>12.0} tasks/s");
    println!("deep / shallow: {:.3}", deep / shallow);
}
