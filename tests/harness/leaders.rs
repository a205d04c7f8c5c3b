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
