//! Wait lines: the waiters of one host for one lock or one semaphore, in the order they
//! began to wait. Only the first of a line asks the store again when a release or a
//! lease's end may have freed what they wait for; the others wait for their turn, which
//! comes when the first is granted or stops waiting. So the waiters of a host cost the
//! store one attempt per hand-off, however many they are — not one each at every release
//! and every renewal of the holder's lease.
//!
//! A line is the host's own: waiters on other hosts are in lines of their own, and the
//! store does not order hosts among themselves.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Every wait line of one lock store, by the channel its waiters listen on (a lock's, or
/// a semaphore's, which all its permits share).
#[derive(Default)]
pub(crate) struct WaitLines {
    lines: Mutex<Lines>,
}

#[derive(Default)]
struct Lines {
    by_channel: HashMap<String, VecDeque<(u64, Arc<Notify>)>>,
    next: u64,
}

/// A waiter's place in a line; leaving it (dropping it: granted, out of time, cancelled)
/// hands the turn to the next.
pub(crate) struct Place {
    lines: Arc<WaitLines>,
    channel: String,
    serial: u64,
    turn: Arc<Notify>,
}

impl WaitLines {
    fn lines(&self) -> std::sync::MutexGuard<'_, Lines> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins the line of `channel`, at its end.
    pub(crate) fn join(self: &Arc<Self>, channel: &str) -> Place {
        let mut lines = self.lines();
        lines.next += 1;
        let serial = lines.next;
        let turn = Arc::new(Notify::new());
        let line = lines.by_channel.entry(channel.to_owned()).or_default();
        line.push_back((serial, turn.clone()));
        Place {
            lines: self.clone(),
            channel: channel.to_owned(),
            serial,
            turn,
        }
    }
}

impl Place {
    /// Whether it is this waiter's turn: it is first in its line.
    pub(crate) fn is_first(&self) -> bool {
        let lines = self.lines.lines();
        let first = lines
            .by_channel
            .get(&self.channel)
            .and_then(VecDeque::front);
        first.is_some_and(|(serial, _)| *serial == self.serial)
    }

    /// Returns once it is this waiter's turn.
    pub(crate) async fn turn(&self) {
        loop {
            // Notified before it is checked, so that a turn given in between is not lost.
            let notified = self.turn.notified();
            if self.is_first() {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut lines = self.lines.lines();
        let Some(line) = lines.by_channel.get_mut(&self.channel) else {
            return;
        };
        let was_first = line
            .front()
            .is_some_and(|(serial, _)| *serial == self.serial);
        line.retain(|(serial, _)| *serial != self.serial);
        match line.front() {
            Some((_, next)) if was_first => next.notify_one(),
            Some(_) => {}
            None => {
                lines.by_channel.remove(&self.channel);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Turns come in the order the waiters joined; one that leaves out of turn hands none
    /// on, and an empty line is forgotten.
    #[tokio::test]
    async fn turns_go_in_order() {
        let lines = Arc::new(WaitLines::default());
        let (a, b, c) = (lines.join("x"), lines.join("x"), lines.join("x"));
        let other = lines.join("y");
        assert!(a.is_first() && !b.is_first() && other.is_first());
        drop(b);
        assert!(!c.is_first());
        let waiting = tokio::spawn(async move {
            c.turn().await;
            c
        });
        drop(a);
        let c = waiting.await.unwrap();
        assert!(c.is_first());
        drop((c, other));
        assert!(lines.lines().by_channel.is_empty());
    }
}
