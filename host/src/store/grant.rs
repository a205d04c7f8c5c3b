//! [`Grant`]: a lock the host holds for a guest, and what the host knows of its lease — how
//! long it was asked for, when it ends by the host's own clock, and whether it is gone.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use crate::backend::Token;
use crate::key::LockKey;

/// A lock this host holds on a guest's behalf.
#[derive(Debug)]
pub struct Grant {
    /// Where the lock lives.
    pub key: LockKey,
    /// The owner token that proves it is ours.
    pub token: Token,
    /// The fencing token of the grant.
    pub fence: u64,
    lease: watch::Sender<Lease>,
}

/// What the host knows of a grant's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The length last asked for, by the grant or the last `extend`: what keep-alive
    /// renews to.
    pub length: Duration,
    /// When the lease ends at the latest, by this host's clock. It is counted from when the
    /// call that set it was sent, so it is never later than the store's own end.
    pub ends: Instant,
    /// Whether the host has learnt that the grant no longer holds the lock: a renewal or
    /// `held` found it free or taken, or it was released.
    pub gone: bool,
}

impl Lease {
    /// Whether the grant is lost: gone, or past its end by the host's clock.
    pub fn is_lost(&self) -> bool {
        self.gone || Instant::now() >= self.ends
    }
}

impl Grant {
    /// A grant of `key` to `token`, whose lease of `length` was asked for at `asked`.
    pub(crate) fn new(
        key: LockKey,
        token: Token,
        fence: u64,
        asked: Instant,
        length: Duration,
    ) -> Self {
        let lease = Lease {
            length,
            ends: asked + length,
            gone: false,
        };
        Grant {
            key,
            token,
            fence,
            lease: watch::Sender::new(lease),
        }
    }

    /// The lease as the host knows it now.
    pub fn lease(&self) -> Lease {
        *self.lease.borrow()
    }

    /// Whether the grant is lost: see [`Lease::is_lost`].
    pub fn is_lost(&self) -> bool {
        self.lease().is_lost()
    }

    /// Something to wait on until the grant is lost.
    pub fn lost(&self) -> LostSignal {
        LostSignal {
            lease: self.lease.subscribe(),
        }
    }

    /// The store restarted the lease at `length` from `asked`.
    pub(crate) fn renewed(&self, asked: Instant, length: Duration) {
        self.lease.send_modify(|lease| {
            lease.length = length;
            lease.ends = asked + length;
        });
    }

    /// A keep-alive renewal to `length`, sent at `asked`, was confirmed; the lease as it
    /// is now. If the guest set a new length meanwhile (an `extend` crossed the renewal),
    /// the store may have run either write last: the lease ends at the earlier of the two
    /// ends, and keeps the length the guest asked for.
    pub(crate) fn renewed_in_turn(&self, asked: Instant, length: Duration) -> Lease {
        self.lease.send_modify(|lease| {
            let ends = asked + length;
            lease.ends = if lease.length == length {
                ends
            } else {
                lease.ends.min(ends)
            };
        });
        self.lease()
    }

    /// The grant no longer holds the lock: it is gone.
    pub(crate) fn mark_gone(&self) {
        self.lease
            .send_if_modified(|lease| !std::mem::replace(&mut lease.gone, true));
    }
}

/// Resolves once a grant is lost: gone, or past its lease's end without a renewal.
pub struct LostSignal {
    lease: watch::Receiver<Lease>,
}

impl LostSignal {
    /// Whether the grant is lost now.
    pub fn is_lost(&self) -> bool {
        self.lease.borrow().is_lost()
    }

    /// Waits until the grant is lost. If the grant itself was dropped (its handle unlocked
    /// or dropped), it is lost too.
    pub async fn wait(&mut self) {
        loop {
            let lease = *self.lease.borrow_and_update();
            if lease.is_lost() {
                return;
            }
            tokio::select! {
                changed = self.lease.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = sleep_until(lease.ends) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(length_ms: u64) -> Grant {
        let key = LockKey::new(None, "app", "id");
        Grant::new(
            key,
            Token::random(),
            1,
            Instant::now(),
            Duration::from_millis(length_ms),
        )
    }

    /// Without a renewal a grant is lost when its lease ends by the host's clock; a renewal
    /// moves the end, and so the signal.
    #[tokio::test(start_paused = true)]
    async fn a_lease_ends_unless_renewed() {
        let grant = grant(1000);
        let mut lost = grant.lost();
        tokio::time::advance(Duration::from_millis(600)).await;
        grant.renewed(Instant::now(), Duration::from_millis(1000));
        let waited = Instant::now();
        lost.wait().await;
        assert_eq!(waited.elapsed(), Duration::from_millis(1000));
        assert!(grant.is_lost() && !grant.lease().gone);
    }

    /// A renewal that crossed an `extend` to another length leaves the earlier of the two
    /// ends (the store may have run either last) and the length the guest asked for; one
    /// that did not moves the end as usual.
    #[tokio::test(start_paused = true)]
    async fn a_renewal_crossing_an_extend_keeps_the_earlier_end() {
        let grant = grant(1000);
        let sent = Instant::now();
        tokio::time::advance(Duration::from_millis(100)).await;
        grant.renewed(Instant::now(), Duration::from_millis(3000));
        let lease = grant.renewed_in_turn(sent, Duration::from_millis(1000));
        assert_eq!(lease.length, Duration::from_millis(3000));
        assert_eq!(lease.ends, sent + Duration::from_millis(1000));
        tokio::time::advance(Duration::from_millis(100)).await;
        let later = Instant::now();
        let lease = grant.renewed_in_turn(later, Duration::from_millis(3000));
        assert_eq!(lease.ends, later + Duration::from_millis(3000));
    }

    /// Learning of a loss wakes a waiter at once, long before the lease's end.
    #[tokio::test(start_paused = true)]
    async fn a_loss_wakes_waiters_at_once() {
        let grant = grant(60_000);
        let mut lost = grant.lost();
        assert!(!lost.is_lost());
        let waiter = tokio::spawn(async move {
            let started = Instant::now();
            lost.wait().await;
            started.elapsed()
        });
        tokio::time::advance(Duration::from_millis(10)).await;
        grant.mark_gone();
        assert!(waiter.await.unwrap() < Duration::from_millis(100));
    }
}
