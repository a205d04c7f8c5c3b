//! The history of an election, from what the `leader` demos print (in every language):
//! `lead FENCE T_US` when a leadership begins, `tick FENCE T_US` before each piece of its
//! work, `follow FENCE VALUE` when a follower sees a leader, all on one machine's wall clock.

use crate::Run;

/// What the leaders of an election did, from the lines of every instance.
pub struct History {
    /// Each `lead` and `tick`: (wall clock µs, fence).
    pub work: Vec<(u64, u64)>,
    /// The fence of each leadership.
    pub leaders: Vec<u64>,
}

impl History {
    /// The history the instances of `runs` printed.
    pub fn of(runs: &[Run]) -> Self {
        Self::of_lines(runs.iter().flat_map(Run::lines))
    }

    /// The history in `lines`, of any number of instances, in any order.
    pub fn of_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Self {
        let mut work = Vec::new();
        let mut leaders = Vec::new();
        for line in lines {
            let word = line.split(' ').next().unwrap();
            if word == "lead" {
                leaders.push(field(line, 1));
            }
            if word == "lead" || word == "tick" {
                work.push((field(line, 2), field(line, 1)));
            }
        }
        work.sort();
        History { work, leaders }
    }

    /// Merged by time, the fences of the work never go back: no leader worked once a
    /// later one had begun. (A resignation is printed after the next leader may have
    /// begun, so it is not work.)
    pub fn assert_one_leader_at_a_time(&self) {
        for pair in self.work.windows(2) {
            assert!(
                pair[0].1 <= pair[1].1,
                "leader {} worked at {} µs after leader {} began at or before {} µs",
                pair[1].1,
                pair[1].0,
                pair[0].1,
                pair[0].0
            );
        }
        let mut distinct = self.leaders.clone();
        distinct.dedup();
        assert_eq!(distinct.len(), self.leaders.len(), "a fence led twice");
    }
}

/// The `n`th space-separated field of `line`, as a number.
pub fn field(line: &str, n: usize) -> u64 {
    line.split(' ')
        .nth(n)
        .and_then(|f| f.parse().ok())
        .unwrap_or_else(|| panic!("no number at {n} in {line:?}"))
}

/// The fences of the leaders a follower saw, in the order it saw them (`follow none` is no
/// leader, and skipped).
pub fn followed<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<u64> {
    lines
        .into_iter()
        .filter_map(|line| {
            line.strip_prefix("follow ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// `latchkey run` processes of the `leader` demo, each a host of its own, campaigning for
/// one election until killed; what they print is heard line by line.
pub struct LeaderHosts {
    hosts: Vec<std::process::Child>,
    heard: std::sync::mpsc::Receiver<(usize, String)>,
    /// Every line heard so far, in the order it arrived: the hosts' pipes are read by
    /// threads of their own, so lines of two hosts may arrive in either order.
    said: std::cell::RefCell<Vec<(usize, String)>>,
}

impl LeaderHosts {
    /// `count` hosts of app `app` on `store` (`NAME=URL`), leading with a `lease_ms` lease
    /// kept alive; host `i` publishes the value `replica-i`.
    pub fn start(store: &str, count: usize, lease_ms: u32) -> Self {
        let leader = crate::guest("leader");
        crate::warm(&leader);
        let (said, heard) = std::sync::mpsc::channel();
        let hosts = (0..count)
            .map(|i| {
                let mut child = crate::latchkey()
                    .args(["run", "--app-id", "app", "--store", store])
                    .arg(&leader)
                    .args(["--lease-ms", &lease_ms.to_string()])
                    .args(["--value", &format!("replica-{i}")])
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .expect("latchkey starts");
                let out = std::io::BufReader::new(child.stdout.take().unwrap());
                let said = said.clone();
                std::thread::spawn(move || {
                    use std::io::BufRead as _;
                    for line in out.lines().map_while(Result::ok) {
                        let _ = said.send((i, line));
                    }
                });
                child
            })
            .collect();
        LeaderHosts {
            hosts,
            heard,
            said: Default::default(),
        }
    }

    /// The first line, of all heard so far or to come, that `wanted` (host, line) takes,
    /// waiting up to [`crate::PATIENCE`].
    pub fn hear(&self, wanted: impl Fn(usize, &str) -> bool) -> (usize, String) {
        let deadline = std::time::Instant::now() + crate::PATIENCE;
        let mut said = self.said.borrow_mut();
        let mut looked = 0;
        loop {
            if let Some(found) = said[looked..].iter().find(|(i, line)| wanted(*i, line)) {
                return found.clone();
            }
            looked = said.len();
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.heard.recv_timeout(left) {
                Ok(line) => said.push(line),
                Err(_) => {
                    let last: Vec<_> = said.iter().rev().take(20).collect();
                    panic!("no such line within PATIENCE; the last heard: {last:?}")
                }
            }
        }
    }

    /// Kills host `i` with SIGKILL: it releases nothing.
    pub fn kill(&self, i: usize) {
        crate::signal(&self.hosts[i], "-KILL");
    }
}

impl Drop for LeaderHosts {
    fn drop(&mut self) {
        for host in &mut self.hosts {
            let _ = host.kill();
            let _ = host.wait();
        }
    }
}

/// The wall clock in µs, as the `leader` demos print it.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}
