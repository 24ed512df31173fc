//! [`WaitReport`]: a line on stderr while a request waits longer than 2 s.
//!
//! A mixnet request takes a route's delays twice and may be retried; a user
//! watching `cast` or a terminal should see that it is alive. The line names
//! the request by a number local to this process, its attempt and the
//! fragments of the answer received so far — never the method, the
//! parameters or the route.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::client::Progress;

/// How long a request waits before its first line.
pub const FIRST_LINE_AFTER: Duration = Duration::from_secs(2);
/// How often the line repeats afterwards.
pub const REPEAT_EVERY: Duration = Duration::from_secs(5);

/// Numbers requests in the order this process sends them.
static NEXT_REQUEST: AtomicU64 = AtomicU64::new(1);

/// What the lines say.
#[derive(Debug, Default, Clone, Copy)]
struct WaitState {
    attempt: u32,
    surbs_topped_up: usize,
    fragments: usize,
    printed: bool,
}

/// Prints progress lines for one request until dropped (a tokio task; needs
/// a runtime).
#[derive(Debug)]
pub struct WaitReport {
    number: u64,
    started: Instant,
    state: Arc<Mutex<WaitState>>,
    ticker: JoinHandle<()>,
}

impl WaitReport {
    /// Starts the clock for a new request.
    pub fn start() -> Self {
        let number = NEXT_REQUEST.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let state: Arc<Mutex<WaitState>> = Arc::default();
        let ticker = tokio::spawn({
            let state = state.clone();
            async move {
                tokio::time::sleep(FIRST_LINE_AFTER).await;
                loop {
                    let s = {
                        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                        s.printed = true;
                        *s
                    };
                    let mut line = format!(
                        "nox-client: request #{number} waiting {:.0} s (attempt {}, {} answer fragment(s) received",
                        started.elapsed().as_secs_f64(),
                        s.attempt.max(1),
                        s.fragments
                    );
                    if s.surbs_topped_up > 0 {
                        line.push_str(&format!(", {} more SURBs sent for a large answer", s.surbs_topped_up));
                    }
                    eprintln!("{line})");
                    tokio::time::sleep(REPEAT_EVERY).await;
                }
            }
        });
        WaitReport { number, started, state, ticker }
    }

    /// The callback to hand [`crate::Client::call_with_progress`].
    pub fn sink(&self) -> impl FnMut(Progress) + Send + 'static {
        let state = self.state.clone();
        move |p| {
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            match p {
                Progress::Sent { attempt, .. } => s.attempt = attempt,
                Progress::ToppedUp { surbs } => s.surbs_topped_up += surbs,
                Progress::Fragment { received } => s.fragments = received,
                Progress::Answered { .. } => {}
            }
        }
    }
}

impl Drop for WaitReport {
    fn drop(&mut self) {
        self.ticker.abort();
        if self.state.lock().unwrap_or_else(|e| e.into_inner()).printed {
            eprintln!("nox-client: request #{} done after {:.1} s", self.number, self.started.elapsed().as_secs_f64());
        }
    }
}
