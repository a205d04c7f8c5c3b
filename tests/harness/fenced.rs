//! [`FencedStore`]: a resource that refuses stale holders — Jepsen's fenced set, as small as
//! it gets. A guest writes to it over TCP with its grant's fence; it keeps the highest fence
//! it has accepted and refuses any write with a lower one. So a holder that lost its lock
//! without knowing it (its process paused past its lease, the store's clock jumped) cannot
//! overwrite what a later holder wrote.
//!
//! The protocol is one line each way: `FENCE VALUE\n`, answered `accepted\n` or
//! `refused\n`. A store that does not check ([`FencedStore::unchecked`]) accepts every
//! write: the control that shows a scenario did produce a late write.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// One write, as the store saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The writer's fence.
    pub fence: u64,
    /// What it wrote.
    pub value: String,
    /// Whether the store took it.
    pub accepted: bool,
}

/// A fenced resource on a free loopback port, served by a thread of its own.
pub struct FencedStore {
    address: String,
    writes: Arc<Mutex<Vec<Write>>>,
}

impl FencedStore {
    /// A store that refuses writes with a fence below the highest it accepted.
    pub fn start() -> Self {
        Self::serve(true)
    }

    /// A store that accepts every write: the control.
    pub fn unchecked() -> Self {
        Self::serve(false)
    }

    fn serve(checking: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let address = listener.local_addr().unwrap().to_string();
        let writes: Arc<Mutex<Vec<Write>>> = Arc::default();
        let log = writes.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut line = String::new();
                let mut reader = BufReader::new(&stream);
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let (fence, value) = line.trim_end().split_once(' ').unwrap_or(("0", ""));
                let fence: u64 = fence.parse().unwrap_or(0);
                let mut log = log.lock().unwrap();
                let highest = log.iter().filter(|w| w.accepted).map(|w| w.fence).max();
                let accepted = !checking || highest.is_none_or(|highest| fence >= highest);
                log.push(Write {
                    fence,
                    value: value.to_owned(),
                    accepted,
                });
                drop(log);
                let answer: &[u8] = if accepted {
                    b"accepted\n"
                } else {
                    b"refused\n"
                };
                let _ = (&stream).write_all(answer);
            }
        });
        FencedStore { address, writes }
    }

    /// `HOST:PORT`, for the guests' `fenced-write` step.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Writes `value` with `fence`, as a guest's `fenced-write` does: whether it was taken.
    pub fn write(&self, fence: u64, value: &str) -> bool {
        let mut stream = std::net::TcpStream::connect(&self.address).expect("the store answers");
        stream
            .write_all(format!("{fence} {value}\n").as_bytes())
            .unwrap();
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).unwrap();
        answer.trim_end() == "accepted"
    }

    /// Every write so far, in the order it arrived.
    pub fn writes(&self) -> Vec<Write> {
        self.writes.lock().unwrap().clone()
    }

    /// Waits until a write of `value` has arrived.
    pub fn wait_for(&self, value: &str) -> Write {
        let started = std::time::Instant::now();
        loop {
            if let Some(write) = self.writes().into_iter().find(|w| w.value == value) {
                return write;
            }
            assert!(
                started.elapsed() < crate::PATIENCE,
                "{value} was never written"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
