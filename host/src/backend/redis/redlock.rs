//! Redlock: one lock over N independent Redis masters, held only while a majority grants it.
//!
//! Each master runs the same scripts as a single server ([`RedisBackend`]). A grant is kept
//! only if a majority said yes within the lease minus the time the attempt took minus an
//! allowance for clock drift; otherwise every master is told to release it, and a split vote
//! (nobody has a majority) is retried after a short random delay, so that rivals drift apart.
//!
//! Fences: each master keeps its own counter, so no single master's fence is enough. The
//! grant takes the largest fence its majority reported and writes it back to that majority
//! (only where it still holds the lock) before it is handed out. Any later grant's majority
//! shares at least one master with this one, and on that master the later grant's acquire
//! runs after the write-back (the write-back needs the lock, the later acquire needs it
//! free), so it reads at least this fence and grants a larger one. The book's Redis page has the
//! argument and its assumptions.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use tokio::time::{Instant, timeout};

use super::RedisBackend;
use super::connection::Target;
use super::operator::{Sighting, Survey};
use super::setup::HostList;
use crate::backend::{
    Attempt, Backend, BackendError, BackendErrorKind, BackendResult, Holder, Listing, ReleaseWatch,
    Renewal, Token, UnlockStatus, within_lease,
};
use crate::error::OpenError;
use crate::key::{KeySpace, LockKey};
use crate::store::settings::{StoreKind, StoreSettings, StoreUrl};

/// How many times who holds a lock is read again while its grant's fence is being written
/// back (1 + 2 + 4 + 8 + 16 ms at most).
const WRITE_BACK_READS: u32 = 5;

/// How many times a split vote is tried again within one attempt.
const SPLIT_RETRIES: u32 = 3;

/// The longest random pause before trying a split vote again.
const MAX_RETRY_DELAY: Duration = Duration::from_millis(20);

/// A lock store on several independent Redis masters.
pub(crate) struct RedlockBackend {
    masters: Arc<[RedisBackend]>,
    /// Each master's share of a call: a master slower than this counts as a "no".
    master_timeout: Duration,
    /// Grants whose acquires still run on the masters that had not answered when the grant
    /// was decided, and whether their holder has let go since.
    late: Arc<Mutex<HashMap<(LockKey, Token), LateGrant>>>,
}

/// One master of the set, owned, so that a call on it can run on after its caller returns.
#[derive(Clone)]
struct Master {
    all: Arc<[RedisBackend]>,
    index: usize,
}

impl std::ops::Deref for Master {
    type Target = RedisBackend;

    fn deref(&self) -> &RedisBackend {
        &self.all[self.index]
    }
}

/// Calls still running on the masters that had not answered when their call was decided:
/// each gives its master's number and its answer (`None` if it failed or was late).
type Running<T> = FuturesUnordered<BoxFuture<'static, (usize, Option<T>)>>;

/// A grant some of whose acquires are still running.
#[derive(Default)]
struct LateGrant {
    /// How many rounds granted it (one, but for an owner who takes a lock it holds) with
    /// acquires still running.
    rounds: usize,
    /// The holder let go (or the operator evicted the lock) while they ran: a late one that
    /// grants is released again on its master.
    released: bool,
}

impl RedlockBackend {
    /// `redis+redlock://[user[:password]@]host:port,host:port,host:port`: three or more
    /// masters that do not replicate each other. Each master gets a tenth of the call
    /// timeout, so that one slow master cannot use up a lease.
    pub(crate) fn new(url: &StoreUrl<'_>, settings: &StoreSettings) -> Result<Self, OpenError> {
        let shown = || url.shown.clone();
        let bad = |reason: String| OpenError::BadUrl {
            url: shown(),
            reason,
        };
        let after_scheme = url.full.split_once("://").map_or("", |(_, rest)| rest);
        let list = HostList::parse(after_scheme);
        let urls = list.urls().map_err(bad)?;
        if urls.len() < 3 {
            return Err(OpenError::TooFewRedlockMasters {
                url: shown(),
                masters: urls.len(),
            });
        }
        if settings.wait_replicas > 0 {
            return Err(OpenError::WaitReplicasWithRedlock { url: shown() });
        }
        let master_timeout = (settings.timeout / 10).max(Duration::from_millis(5));
        let password = settings.password.as_deref().or(list.password);
        let masters = urls
            .into_iter()
            .map(|url| {
                let url = match list.username {
                    Some(user) => url.replacen("redis://", &format!("redis://{user}@"), 1),
                    None => url,
                };
                // A master's URL is the store's: a bad one is shown as the store's.
                let master = StoreUrl {
                    full: &url,
                    shown: shown(),
                };
                let target = Target::parse(StoreKind::Server, &master, password)?;
                Ok(RedisBackend::new(target, master_timeout, 0).without_connect_retries())
            })
            .collect::<Result<Arc<[RedisBackend]>, OpenError>>()?;
        Ok(RedlockBackend {
            masters,
            master_timeout,
            late: Arc::default(),
        })
    }

    fn quorum(&self) -> usize {
        self.masters.len() / 2 + 1
    }

    /// Runs `call` on every master at once, each bounded by the master timeout, until the
    /// answers so far are `enough` to decide; a master that fails, is late, or is not waited
    /// for gives `None`.
    ///
    /// Not waiting for the rest once the outcome is decided keeps a master that went silent
    /// (a partition, not a refused connection) from costing a call its timeout. For reads:
    /// a change runs on every master to its end ([`RedlockBackend::change_each`]).
    async fn on_each<'a, T, F>(
        &'a self,
        call: impl Fn(&'a RedisBackend) -> F,
        enough: impl Fn(&[Option<T>]) -> bool,
    ) -> Vec<Option<T>>
    where
        F: Future<Output = BackendResult<T>>,
    {
        self.on_these(0..self.masters.len(), call, enough).await
    }

    /// [`RedlockBackend::on_each`], on the masters numbered `which` (answers in the order of
    /// all masters).
    async fn on_these<'a, T, F>(
        &'a self,
        which: impl IntoIterator<Item = usize>,
        call: impl Fn(&'a RedisBackend) -> F,
        enough: impl Fn(&[Option<T>]) -> bool,
    ) -> Vec<Option<T>>
    where
        F: Future<Output = BackendResult<T>>,
    {
        let wait = self.master_timeout;
        let mut pending: FuturesUnordered<_> = which
            .into_iter()
            .map(|i| {
                let call = call(&self.masters[i]);
                async move { (i, within(wait, call).await) }
            })
            .collect();
        self.answers(&mut pending, enough).await
    }

    /// Answers from `pending`, in the order of all masters, until they are `enough` to
    /// decide or none is left; the rest stay in `pending`.
    async fn answers<T, F>(
        &self,
        pending: &mut FuturesUnordered<F>,
        enough: impl Fn(&[Option<T>]) -> bool,
    ) -> Vec<Option<T>>
    where
        F: Future<Output = (usize, Option<T>)>,
    {
        let mut answers: Vec<Option<T>> = self.masters.iter().map(|_| None).collect();
        while let Some((i, answer)) = pending.next().await {
            answers[i] = answer;
            if enough(&answers) {
                break;
            }
        }
        answers
    }

    /// A change made on every master at once, as [`RedlockBackend::on_each`] makes it, whose
    /// calls not waited for keep running (to their master timeout), returned.
    ///
    /// A change decided by its first majority still reaches every master that answers in
    /// time, as it would if all were waited for: a grant that stood on a bare majority would
    /// be lost to one master's fault (its clock jumping, its restart) where the Redlock
    /// description's, on every master that answered, survives it.
    async fn change_each<T, F>(
        &self,
        call: impl Fn(Master) -> F,
        enough: impl Fn(&[Option<T>]) -> bool,
    ) -> (Vec<Option<T>>, Running<T>)
    where
        T: Send + 'static,
        F: Future<Output = BackendResult<T>> + Send + 'static,
    {
        let wait = self.master_timeout;
        let mut running: Running<T> = (0..self.masters.len())
            .map(|index| {
                let call = call(Master {
                    all: self.masters.clone(),
                    index,
                });
                let answer: BoxFuture<'static, _> =
                    Box::pin(async move { (index, within(wait, call).await) });
                answer
            })
            .collect();
        let answers = self.answers(&mut running, enough).await;
        (answers, running)
    }

    /// [`RedlockBackend::change_each`], with the calls not waited for left to finish in
    /// the background.
    async fn change_everywhere<T, F>(
        &self,
        call: impl Fn(Master) -> F,
        enough: impl Fn(&[Option<T>]) -> bool,
    ) -> Vec<Option<T>>
    where
        T: Send + 'static,
        F: Future<Output = BackendResult<T>> + Send + 'static,
    {
        let (answers, running) = self.change_each(call, enough).await;
        run_on(running);
        answers
    }

    /// Lets a grant's acquires that were not waited for finish in the background, each
    /// released again on its master if it granted after the grant's holder let go.
    fn finish_late_acquires(&self, mut running: Running<Attempt>, key: &LockKey, token: &Token) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if running.is_empty() {
            return;
        }
        let grant = (key.clone(), token.clone());
        let mut late = self
            .late
            .lock()
            .expect("never poisoned: nothing panics under it");
        let entry = late.entry(grant.clone()).or_default();
        entry.rounds += 1;
        // A new grant of the same owner's: what lands late is this grant's.
        entry.released = false;
        drop(late);
        let (late, masters, wait) = (self.late.clone(), self.masters.clone(), self.master_timeout);
        runtime.spawn(async move {
            while let Some((index, attempt)) = running.next().await {
                let granted = matches!(attempt, Some(Attempt::Granted { .. }));
                let let_go = || {
                    late.lock()
                        .expect("never poisoned")
                        .get(&grant)
                        .is_some_and(|g| g.released)
                };
                if granted && let_go() {
                    let _ = timeout(wait, masters[index].release(&grant.0, &grant.1)).await;
                }
            }
            let mut late = late.lock().expect("never poisoned");
            if let Some(entry) = late.get_mut(&grant) {
                entry.rounds -= 1;
                if entry.rounds == 0 {
                    late.remove(&grant);
                }
            }
        });
    }

    /// Marks the grants of `key` (of `token`'s only, if given) whose acquires still run as
    /// let go: before the release is sent, so that an acquire that lands after the release
    /// is seen, when it answers, to have landed too late.
    fn let_go(&self, key: &LockKey, token: Option<&Token>) {
        let mut late = self.late.lock().expect("never poisoned");
        for ((k, t), grant) in late.iter_mut() {
            if k == key && token.is_none_or(|token| token == t) {
                grant.released = true;
            }
        }
    }

    /// How many of `answers` are `wanted`.
    fn count<T: PartialEq>(answers: &[Option<T>], wanted: &T) -> usize {
        answers
            .iter()
            .filter(|a| a.as_ref() == Some(wanted))
            .count()
    }

    /// One grant as a majority of the masters report it (`on`, at least a quorum of
    /// sightings with one token): its fence is the one its majority holds — the grant wrote
    /// it back there; a master that granted too late to count keeps a counter of its own —
    /// or, while no majority shares one, the largest they report; its lease is what is left
    /// until fewer than a majority hold it.
    fn as_one(&self, mut on: Vec<Holder>) -> Holder {
        let quorum = self.quorum();
        let shared = Self::shared_fence(&on, quorum);
        let fence = shared.unwrap_or_else(|| on.iter().map(|h| h.fence).max().unwrap_or_default());
        // Longest lease first: the quorum-th is how long a majority still holds it.
        on.sort_by_key(|h| std::cmp::Reverse(h.lease_left));
        let mut holder = on.swap_remove(quorum - 1);
        holder.age = holder.age.and_then(|age| {
            let raised = Duration::from_micros(fence.saturating_sub(holder.fence));
            age.checked_sub(raised)
        });
        holder.fence = fence;
        holder
    }

    /// The fence `quorum` of the sightings `on` share, if they share one.
    fn shared_fence(on: &[Holder], quorum: usize) -> Option<u64> {
        on.iter()
            .map(|h| h.fence)
            .find(|&fence| on.iter().filter(|h| h.fence == fence).count() >= quorum)
    }

    /// Ok if `answered` masters are a majority; the failure to say so if not.
    fn majority_answered(&self, answered: usize) -> BackendResult<()> {
        match answered < self.quorum() {
            true => Err(self.too_few(answered)),
            false => Ok(()),
        }
    }

    fn too_few(&self, answered: usize) -> BackendError {
        BackendError::new(
            BackendErrorKind::TooFewConfirmations,
            format!(
                "had {answered} of {} Redlock masters answer in time; {} are needed",
                self.masters.len(),
                self.quorum()
            ),
        )
    }

    /// One round of Redlock: a grant from a majority within the lease's validity, its fence
    /// written back to that majority; or nothing, and every master told to let go.
    ///
    /// The round is decided as soon as the answers so far decide it — a majority granted, or
    /// a majority found the lock held — so a silent master costs it nothing while the
    /// others answer; the other acquires finish in the background. Only a majority's fences
    /// are needed: the grant writes the largest of them back to that majority, which every
    /// later majority shares a master with.
    async fn round(&self, key: &LockKey, token: &Token, lease: Duration) -> BackendResult<Round> {
        let started = Instant::now();
        let quorum = self.quorum();
        let decided = |replies: &[Option<Attempt>]| {
            let granted = replies
                .iter()
                .filter(|r| matches!(r, Some(Attempt::Granted { .. })))
                .count();
            let busy = replies
                .iter()
                .filter(|r| matches!(r, Some(Attempt::Busy { .. })))
                .count();
            granted >= quorum || busy >= quorum
        };
        let (replies, late) = self
            .change_each(
                |master| {
                    let (key, token) = (key.clone(), token.clone());
                    async move { master.try_acquire(&key, &token, lease).await }
                },
                decided,
            )
            .await;
        let answered = replies.iter().flatten().count();
        let (mut grantors, mut fences, mut held) = (Vec::new(), Vec::new(), Vec::new());
        for (i, attempt) in replies.into_iter().enumerate() {
            match attempt {
                Some(Attempt::Granted { fence }) => {
                    grantors.push(i);
                    fences.push(fence);
                }
                Some(Attempt::Busy { expires_in }) => held.push(expires_in),
                None => {}
            }
        }
        if fences.len() >= quorum && within_lease(started, lease) {
            // Written back where the grant is — a master that did not grant cannot take it,
            // and one that did has just answered.
            let fence = fences.iter().copied().max().expect("a majority granted");
            let raised = self
                .on_these(
                    grantors,
                    |master| master.raise_fence(key, token, fence),
                    |_| false,
                )
                .await;
            if Self::count(&raised, &true) >= quorum && within_lease(started, lease) {
                self.finish_late_acquires(late, key, token);
                return Ok(Round::Granted(fence));
            }
        }
        // Also on the masters that did not answer: their grant may have happened anyway.
        // In the background, so that a silent one does not hold up the next round.
        self.release_everywhere(key, token);
        self.majority_answered(answered)?;
        if held.len() >= quorum
            && let Some(left) = held.iter().flatten().min()
        {
            return Ok(Round::Busy(*left));
        }
        Ok(Round::Split)
    }

    /// Tells every master to release `token`'s hold on `key`, each within the master
    /// timeout, without waiting for them.
    fn release_everywhere(&self, key: &LockKey, token: &Token) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (masters, key, token) = (self.masters.clone(), key.clone(), token.clone());
        let wait = self.master_timeout;
        runtime.spawn(async move {
            let releases = masters
                .iter()
                .map(|master| timeout(wait, master.release(&key, &token)));
            futures_util::future::join_all(releases).await;
        });
    }
}

enum Round {
    Granted(u64),
    /// Another holder has a majority; its lease ends in this long on the first master to
    /// let it go.
    Busy(Duration),
    /// Nobody has a majority: rivals got in each other's way, or leases ran out mid-round.
    Split,
}

/// `call`'s answer if it gives one within `wait`; `None` if it fails or is late.
async fn within<T>(wait: Duration, call: impl Future<Output = BackendResult<T>>) -> Option<T> {
    match timeout(wait, call).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "a Redlock master failed");
            None
        }
        Err(_) => None,
    }
}

/// Lets `running` finish in the background, its answers unread.
fn run_on<T: Send + 'static>(mut running: Running<T>) {
    if running.is_empty() {
        return;
    }
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move { while running.next().await.is_some() {} });
    }
}

fn retry_delay() -> Duration {
    MAX_RETRY_DELAY.mul_f64(rand::random::<f64>())
}

#[async_trait::async_trait]
impl Backend for RedlockBackend {
    async fn try_acquire(
        &self,
        key: &LockKey,
        token: &Token,
        lease: Duration,
    ) -> BackendResult<Attempt> {
        for _ in 0..SPLIT_RETRIES {
            match self.round(key, token, lease).await? {
                Round::Granted(fence) => return Ok(Attempt::Granted { fence }),
                Round::Busy(left) => {
                    return Ok(Attempt::Busy {
                        expires_in: Some(left + retry_delay()),
                    });
                }
                Round::Split => tokio::time::sleep(retry_delay()).await,
            }
        }
        Ok(Attempt::Busy {
            expires_in: Some(retry_delay()),
        })
    }

    async fn release(&self, key: &LockKey, token: &Token) -> BackendResult<UnlockStatus> {
        let quorum = self.quorum();
        self.let_go(key, Some(token));
        let statuses = self
            .change_everywhere(
                |master| {
                    let (key, token) = (key.clone(), token.clone());
                    async move { master.release(&key, &token).await }
                },
                |statuses| Self::count(statuses, &UnlockStatus::Success) >= quorum,
            )
            .await;
        let answered = statuses.iter().flatten().count();
        let count = |wanted| Self::count(&statuses, &wanted);
        if count(UnlockStatus::Success) >= self.quorum() {
            Ok(UnlockStatus::Success)
        } else if answered < self.quorum() {
            Err(self.too_few(answered))
        } else if count(UnlockStatus::LockBelongsToOthers) >= self.quorum() {
            Ok(UnlockStatus::LockBelongsToOthers)
        } else {
            // Our grant had lost its majority: whatever is left on a minority is not a lock.
            Ok(UnlockStatus::LockDoesNotExist)
        }
    }

    async fn extend(&self, key: &LockKey, token: &Token, lease: Duration) -> BackendResult<bool> {
        let started = Instant::now();
        let quorum = self.quorum();
        let extended = self
            .change_everywhere(
                |master| {
                    let (key, token) = (key.clone(), token.clone());
                    async move { master.extend(&key, &token, lease).await }
                },
                |extended| Self::count(extended, &true) >= quorum,
            )
            .await;
        let answered = extended.iter().flatten().count();
        self.majority_answered(answered)?;
        Ok(Self::count(&extended, &true) >= quorum && within_lease(started, lease))
    }

    async fn holds(&self, key: &LockKey, token: &Token) -> BackendResult<bool> {
        let quorum = self.quorum();
        let answers = self
            .on_each(
                |master| master.holds(key, token),
                |answers| {
                    Self::count(answers, &true) >= quorum || Self::count(answers, &false) >= quorum
                },
            )
            .await;
        let answered = answers.iter().flatten().count();
        self.majority_answered(answered)?;
        Ok(Self::count(&answers, &true) >= quorum)
    }

    /// Each master renews the whole batch in one request. A lease is renewed where a
    /// majority renewed it within its validity, exactly as a grant is granted; it is gone
    /// where too many masters found it gone for a majority to hold it; and otherwise (too
    /// few answers, or too late) there is no answer, and it is tried again.
    async fn renew(&self, renewals: &[Renewal<'_>]) -> BackendResult<Vec<Option<bool>>> {
        let started = Instant::now();
        let quorum = self.quorum();
        let renewed_by = |answers: &[Option<Vec<Option<bool>>>], i: usize| {
            answers
                .iter()
                .filter(|a| a.as_ref().and_then(|a| a.get(i).copied().flatten()) == Some(true))
                .count()
        };
        let owned: Arc<[(LockKey, Token, Duration)]> = renewals
            .iter()
            .map(|r| (r.key.clone(), r.token.clone(), r.lease))
            .collect();
        let answers = self
            .change_everywhere(
                |master| {
                    let owned = owned.clone();
                    async move {
                        let renewals: Vec<Renewal<'_>> = owned
                            .iter()
                            .map(|(key, token, lease)| Renewal {
                                key,
                                token,
                                lease: *lease,
                            })
                            .collect();
                        master.renew(&renewals).await
                    }
                },
                |answers| (0..renewals.len()).all(|i| renewed_by(answers, i) >= quorum),
            )
            .await;
        let answered = answers.iter().flatten().count();
        self.majority_answered(answered)?;
        Ok(renewals
            .iter()
            .enumerate()
            .map(|(i, renewal)| {
                let said = |wanted| {
                    answers
                        .iter()
                        .filter(|a| {
                            a.as_ref().and_then(|a| a.get(i).copied().flatten()) == Some(wanted)
                        })
                        .count()
                };
                let gone = said(false);
                if renewed_by(&answers, i) >= quorum && within_lease(started, renewal.lease) {
                    Some(true)
                } else if self.masters.len() - gone < self.quorum() {
                    Some(false)
                } else {
                    None
                }
            })
            .collect())
    }

    async fn watch(&self, key: &LockKey) -> BackendResult<ReleaseWatch> {
        let quorum = self.quorum();
        let watches: Vec<ReleaseWatch> = self
            .on_each(
                |master| master.watch(key),
                |watches| watches.iter().flatten().count() >= quorum,
            )
            .await
            .into_iter()
            .flatten()
            .collect();
        self.majority_answered(watches.len())?;
        Ok(ReleaseWatch::any(watches))
    }

    async fn ping(&self) -> BackendResult<()> {
        let quorum = self.quorum();
        let answered = self
            .on_each(
                |master| master.ping(),
                |pongs| pongs.iter().flatten().count() >= quorum,
            )
            .await
            .into_iter()
            .flatten()
            .count();
        self.majority_answered(answered)
    }

    /// A lock is listed where a majority of the masters hold it with one token — what a
    /// minority holds is no lock. Its fence is the largest they report; its lease is what
    /// is left until fewer than a majority hold it. Every master must answer: a listing
    /// that silently missed one could miss a lock.
    async fn holders(&self, space: &KeySpace, app: Option<&str>) -> BackendResult<Listing> {
        // Not bounded by the master timeout, which is for one step: a listing takes many,
        // each bounded by its connection's own timeout.
        let listings = self.masters.iter().map(|m| m.survey(space, app));
        let answers: Vec<Option<Survey>> = futures_util::future::join_all(listings)
            .await
            .into_iter()
            .map(Result::ok)
            .collect();
        let answered = answers.iter().flatten().count();
        if answered < self.masters.len() {
            return Err(BackendError::new(
                BackendErrorKind::TooFewConfirmations,
                format!(
                    "had {answered} of {} Redlock masters answer in time; a listing needs all",
                    self.masters.len()
                ),
            ));
        }
        let mut listing = Listing::default();
        let mut seen: BTreeMap<(String, String, String), Vec<Holder>> = BTreeMap::new();
        for survey in answers.into_iter().flatten() {
            // Each master keeps its own copy: what one of them counts, the listing counts.
            listing.skipped = listing.skipped.max(survey.skipped);
            for (namespace, count) in survey.elsewhere {
                let most = listing.elsewhere.entry(namespace).or_default();
                *most = (*most).max(count);
            }
            for Sighting { holder, token } in survey.sightings {
                let lock = (holder.app.clone(), holder.resource_id.clone(), token);
                seen.entry(lock).or_default().push(holder);
            }
        }
        let quorum = self.quorum();
        listing.holders = seen
            .into_values()
            .filter(|on| on.len() >= quorum)
            .map(|on| self.as_one(on))
            .collect();
        Ok(listing)
    }

    /// Every new leader is announced on every master that answers; a majority must, so
    /// that it reaches at least one master of every observer's (each watches a majority).
    async fn announce(&self, key: &LockKey) -> BackendResult<()> {
        let quorum = self.quorum();
        let answered = self
            .on_each(
                |master| master.announce(key),
                |answers| answers.iter().flatten().count() >= quorum,
            )
            .await
            .into_iter()
            .flatten()
            .count();
        self.majority_answered(answered)
    }

    /// The holder is the owner token a majority of the masters hold: what a minority holds
    /// is no grant. A majority must answer.
    async fn holder(&self, key: &LockKey) -> BackendResult<Option<Holder>> {
        let quorum = self.quorum();
        for attempt in 0.. {
            let answers = self
                .on_each(|master| master.holder_sighting(key), |_| false)
                .await;
            let answered = answers.iter().flatten().count();
            self.majority_answered(answered)?;
            let mut seen: BTreeMap<String, Vec<Holder>> = BTreeMap::new();
            for Sighting { holder, token } in answers.into_iter().flatten().flatten() {
                seen.entry(token).or_default().push(holder);
            }
            let Some(on) = seen.into_values().find(|on| on.len() >= quorum) else {
                return Ok(None);
            };
            // A grant writing its fence back to its majority is read once it has: until
            // then no majority shares one, and the largest seen may be a late master's.
            if Self::shared_fence(&on, quorum).is_some() || attempt == WRITE_BACK_READS {
                return Ok(Some(self.as_one(on)));
            }
            tokio::time::sleep(Duration::from_millis(1 << attempt)).await;
        }
        unreachable!("the last attempt returns")
    }

    /// Evicted from every master that answers; it is gone once a majority no longer holds
    /// it.
    async fn evict(&self, key: &LockKey) -> BackendResult<bool> {
        self.let_go(key, None);
        let answers = self
            .on_each(|master| master.evict_key(key), |_| false)
            .await;
        let answered = answers.iter().flatten().count();
        self.majority_answered(answered)?;
        Ok(answers.into_iter().flatten().any(|held| held))
    }
}
