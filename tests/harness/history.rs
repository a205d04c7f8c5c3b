//! Workers and their history: `latchkey` host processes whose `bench history` guests do
//! locked read-modify-writes on one counter file while a test injects a fault, every grant
//! they made (fence, acquired, released, host), and the checker that reads the history for
//! double grants and falling fences.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::netns::Node;
use crate::{PATIENCE, guest, latchkey, warm};

/// The lease of every grant the history guests take (`bench history`'s 500 ms).
pub const LEASE_NS: u128 = 500_000_000;

/// How long the workers work.
pub const RUN_MS: u64 = 7000;

/// One grant, as a guest reported it.
#[derive(Debug, Clone, Copy)]
pub struct Grant {
    /// Its fence.
    pub fence: u64,
    /// When the guest had it, in ns since the Unix epoch.
    pub acquired: u128,
    /// When the guest let it go.
    pub released: u128,
    /// Which worker host took it.
    pub host: usize,
    /// Whether its lease had ended, by its host's clock, when the guest let it go: a holder
    /// that ran past its lease, which no lease can cover (a fence can). Such a grant can
    /// overlap the next one and lose one update without the store being at fault.
    pub outlived: bool,
}

/// What the checker found.
#[derive(Debug)]
pub struct Verdict {
    /// Grants in the history.
    pub grants: usize,
    /// Pairs of grants that overlapped while the earlier one's lease still ran.
    pub double_grants: usize,
    /// Grants whose fence was not above every earlier grant's.
    pub fence_regressions: usize,
    /// Grants whose holder ran past their lease ([`Grant::outlived`]).
    pub outlived: usize,
}

/// Reads `history` for double grants and falling fences.
pub fn check(mut history: Vec<Grant>) -> Verdict {
    history.sort_by_key(|g| g.acquired);
    let fence_regressions = history
        .windows(2)
        .filter(|w| w[1].fence <= w[0].fence)
        .count();
    Verdict {
        grants: history.len(),
        double_grants: double_grants(&history).len(),
        fence_regressions,
        outlived: history.iter().filter(|g| g.outlived).count(),
    }
}

/// The pairs `(earlier, later)` of grants that overlapped while the earlier one's lease
/// still ran, by the workers' clock — unless the earlier one's own host saw its lease end
/// before it let go ([`Grant::outlived`]).
pub fn double_grants(history: &[Grant]) -> Vec<(Grant, Grant)> {
    let mut history = history.to_vec();
    history.sort_by_key(|g| g.acquired);
    let mut pairs = Vec::new();
    for (j, later) in history.iter().enumerate() {
        for earlier in &history[..j] {
            let overlaps = later.acquired < earlier.released;
            let lease_running = later.acquired < earlier.acquired + LEASE_NS;
            if overlaps && lease_running && !earlier.outlived {
                pairs.push((*earlier, *later));
            }
        }
    }
    pairs
}

/// Worker hosts of app `faults`, each a `latchkey run` process of three history guests,
/// sharing one counter file.
pub struct Workers {
    hosts: Vec<Child>,
    data: tempfile::TempDir,
    url: String,
    store_flags: Vec<String>,
    /// When every worker stops working.
    ends: Instant,
    /// What the killed workers had printed.
    ended: Vec<Grant>,
}

impl Workers {
    /// One worker per entry of `places`: in that node, or in the test's own namespace for
    /// `None`; each on the store at `url`, with `store_flags` added to its command line,
    /// working for [`RUN_MS`].
    pub fn start(url: &str, store_flags: &[&str], places: &[Option<&Node>]) -> Self {
        Self::start_for(RUN_MS, url, store_flags, places)
    }

    /// [`Workers::start`], working for `run_ms`.
    pub fn start_for(
        run_ms: u64,
        url: &str,
        store_flags: &[&str],
        places: &[Option<&Node>],
    ) -> Self {
        warm(&guest("bench"));
        let mut workers = Workers {
            hosts: Vec::new(),
            data: tempfile::tempdir().unwrap(),
            url: url.to_owned(),
            store_flags: store_flags.iter().map(|f| f.to_string()).collect(),
            ends: Instant::now() + Duration::from_millis(run_ms),
            ended: Vec::new(),
        };
        for place in places {
            let child = workers.spawn(*place);
            workers.hosts.push(child);
        }
        workers
    }

    /// A worker host in `place`, working until the others stop.
    fn spawn(&self, place: Option<&Node>) -> Child {
        let mut command = match place {
            Some(node) => node.command(crate::processes::latchkey_path()),
            None => latchkey(),
        };
        let run_ms = self
            .ends
            .saturating_duration_since(Instant::now())
            .as_millis();
        command
            .args(["run", "--app-id", "faults", "--instances", "3"])
            .arg("--store")
            .arg(format!("lockstore={}", self.url))
            .args(&self.store_flags)
            .args(["--store-timeout-ms", "3000", "--dir"])
            .arg(format!("{}::/data", self.data.path().display()))
            .arg(guest("bench"))
            .args(["history", &run_ms.max(1).to_string(), "counter"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("latchkey starts")
    }

    /// Waits until the counter has counted some grants — the workers are at work — however
    /// long they took to start.
    pub fn wait_for_progress(&self) {
        let path = self.data.path().join("counter");
        let started = Instant::now();
        while count(&path) < 20 {
            assert!(started.elapsed() < PATIENCE, "the workers made no progress");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// How many workers there are.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Stops worker `n`'s host (SIGSTOP) where it is, perhaps holding the lock.
    pub fn pause(&self, n: usize) {
        crate::signal(&self.hosts[n], "-STOP");
    }

    /// Lets worker `n`'s host go on (SIGCONT).
    pub fn resume(&self, n: usize) {
        crate::signal(&self.hosts[n], "-CONT");
    }

    /// Kills worker `n`'s host (SIGKILL) where it is — a grant it was in the middle of is
    /// in no history, though its guest may have counted it — and starts another in
    /// `place` in its stead.
    pub fn kill_and_replace(&mut self, n: usize, place: Option<&Node>) {
        let _ = self.hosts[n].kill();
        let next = self.spawn(place);
        let killed = std::mem::replace(&mut self.hosts[n], next);
        let out = killed.wait_with_output().unwrap();
        self.ended.extend(grants_in(&out.stdout, n));
    }

    /// Waits for every worker to end: the history of their grants, and the counter.
    pub fn finish(self) -> (Vec<Grant>, u64) {
        let mut history = self.ended;
        for (n, child) in self.hosts.into_iter().enumerate() {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "worker {n}: {out:?}");
            history.extend(grants_in(&out.stdout, n));
        }
        (history, count(&self.data.path().join("counter")))
    }
}

/// The grants a worker printed ("[i] grant FENCE ACQUIRED RELEASED [outlived]"); a line cut short by
/// a kill is not one.
fn grants_in(stdout: &[u8], host: usize) -> Vec<Grant> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            Some(Grant {
                fence: fields.get(2)?.parse().ok()?,
                acquired: fields.get(3)?.parse().ok()?,
                released: fields.get(4)?.parse().ok()?,
                host,
                outlived: fields.get(5) == Some(&"outlived"),
            })
        })
        .collect()
}

fn count(path: &Path) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.trim().parse().unwrap_or(0)
}

/// The grants made after `at_ns` (a wall-clock instant), to show the workers recovered.
pub fn after(history: &[Grant], at_ns: u128) -> usize {
    history.iter().filter(|g| g.acquired > at_ns).count()
}

/// Now, in ns since the Unix epoch: the clock of the history.
pub fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Through a fault the store survives: no double grant, fences rose, the counter is exact,
/// and work resumed after `recovered_at`.
pub fn assert_stayed_safe(fault: &str, history: &[Grant], counter: u64, recovered_at: u128) {
    let verdict = check(history.to_vec());
    println!("{fault}: {verdict:?}");
    let pairs = double_grants(history);
    assert_eq!(
        verdict.double_grants, 0,
        "{verdict:?}: (earlier, later) {pairs:?}"
    );
    assert_eq!(verdict.fence_regressions, 0, "{verdict:?}");
    // Each holder that ran past its lease can have lost one update; nothing else may.
    let grants = verdict.grants as u64;
    assert!(
        counter <= grants && counter + verdict.outlived as u64 >= grants,
        "updates lost under the lock: counter {counter}, {verdict:?}"
    );
    assert!(
        after(history, recovered_at) > 0,
        "no grant after the store came back"
    );
}

/// After a fault the store does not survive unharmed (it lost data, or a grant not every
/// replica had): fences still rose, work resumed, and the double grants — possible here,
/// counted and reported, not hidden — explain every lost update.
pub fn assert_survived_data_loss(fault: &str, history: &[Grant], counter: u64, recovered_at: u128) {
    let verdict = check(history.to_vec());
    println!(
        "{fault}: {verdict:?}; counter {counter} for {} grants",
        verdict.grants
    );
    assert_eq!(verdict.fence_regressions, 0, "{verdict:?}");
    assert!(
        after(history, recovered_at) > 0,
        "no grant after the store came back"
    );
    // Each double grant can lose at most one update.
    assert!(
        counter + verdict.double_grants as u64 >= verdict.grants as u64,
        "{verdict:?}"
    );
}
