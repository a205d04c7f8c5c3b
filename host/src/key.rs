//! Where a lock lives in a store: the key layout shared by every backend.
//!
//! A lock is the lock of one app on one resource id in one physical store. What a host calls
//! the store is not part of it, so hosts that name one Redis differently still exclude each
//! other. A lock on resource id `id` for app `app` uses three names:
//!
//! ```text
//! latchkey:{<app>:<id>}:lock       the holder's owner token, with the lease as its TTL
//! latchkey:{<app>:<id>}:fence      the last fencing token granted
//! latchkey:{<app>:<id>}:released   the pub/sub channel that announces unlocks
//! ```
//!
//! A semaphore and an election are made of locks of their own [`GrantKind`], named by the same
//! rule with a word between the hash tag and the suffix. Permit `n` of semaphore `id` is
//! the lock `latchkey:{<app>:<id>}:permit:<n>:lock` (with its own `…:permit:<n>:fence`);
//! the permits of one semaphore share one channel, `…:permit:released`, so that a waiter
//! hears the release of any of them. The leadership of election `id` is the lock
//! `latchkey:{<app>:<id>}:leader:lock`, whose channel `…:leader:released` also announces
//! each new leader. The word keeps a semaphore, an election and a lock of the same id apart;
//! the hash tag keeps all of one semaphore's keys in one Redis Cluster slot.
//!
//! A store configured with a namespace `ns` (for two lock spaces in one Redis) puts it
//! before the braces: `latchkey:<ns>:{<app>:<id>}:lock`. A namespace is made of letters,
//! digits, `.`, `_` and `-` ([`crate::LockStore::with_namespace`] checks), so it never holds
//! a brace.
//!
//! The app and the id are escaped so that they hold no `%`, `:`, `{` or `}` (they become
//! `%25`, `%3A`, `%7B`, `%7D`). Escaping is reversible and the separators never occur inside
//! a part, so two different (namespace, app, id, kind) always give different names, and
//! the braces always enclose the whole pair: Redis Cluster hashes only what is inside
//! `{...}`, so the keys of one lock share a hash slot whatever bytes the id holds.
//!
//! # daprd's layout
//!
//! A store opened with `key-layout=dapr` ([`KeySpace::Dapr`]) names its locks as daprd's
//! Redis lock store does, so that latchkey hosts and daprd sidecars on one Redis exclude
//! each other:
//!
//! ```text
//! lock||<app>||<id>                  the holder's owner token (a Dapr client's: its owner), TTL the lease
//! lock||<app>||<id>||fence           the last fencing token granted
//! lock||<app>||<id>||released        the channel that announces unlocks
//! lock||<app>||<id>||permit||<n>     permit n of semaphore id (its fence and channel as above)
//! lock||<app>||<id>||leader          the leadership of election id
//! ```
//!
//! Nothing is escaped, as daprd escapes nothing; instead no app or id may hold `||`
//! ([`KeySpace::check`]), which daprd refuses in ids too. So every side key has more `||`
//! than any daprd key can: none collides with a lock of daprd's, and none with another.
//! Without hash tags the keys of one lock are in different Cluster slots: the layout is
//! for one server only, the one deployment daprd's lock store runs on.

use std::fmt::Write as _;
use std::sync::Arc;

/// Where a store's locks live among its keys: latchkey's layout, in a namespace or not, or
/// daprd's.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySpace {
    /// latchkey's own layout (see the [module](self) docs), in `namespace` if given.
    Latchkey {
        /// The store's namespace: 1 to 64 letters, digits, `.`, `_` or `-`.
        namespace: Option<Arc<str>>,
    },
    /// daprd's layout ([`key-layout=dapr`](self#daprds-layout)).
    Dapr,
}

impl Default for KeySpace {
    fn default() -> Self {
        KeySpace::Latchkey { namespace: None }
    }
}

/// What a key found in a store is, to a [`KeySpace`].
#[derive(Debug, PartialEq, Eq)]
pub enum Found<'a> {
    /// The owner-token key of a lock of this space.
    Here(Decoded),
    /// The owner-token key of a lock of latchkey's layout in another namespace (`None`:
    /// none).
    Elsewhere(Option<&'a str>, Decoded),
    /// A side key of this space's (a fence), not a lock.
    Side,
    /// Not a key of a lock.
    Foreign,
}

impl KeySpace {
    /// The store's namespace, if it has one.
    pub fn namespace(&self) -> Option<&str> {
        match self {
            KeySpace::Latchkey { namespace } => namespace.as_deref(),
            KeySpace::Dapr => None,
        }
    }

    /// The names of the lock of `kind` of `app` on `id` in this space.
    pub fn key(&self, app: &str, id: &str, kind: GrantKind) -> LockKey {
        match self {
            KeySpace::Latchkey { namespace } => {
                LockKey::of_kind(namespace.as_deref(), app, id, kind)
            }
            KeySpace::Dapr => LockKey::in_daprs_layout(app, id, kind),
        }
    }

    /// Refuses an app or an id this space cannot name apart from others: in daprd's layout,
    /// one that holds `||`. Every name latchkey's layout takes.
    pub fn check(&self, what: &str, name: &str) -> Result<(), String> {
        match self {
            KeySpace::Dapr if name.contains("||") => Err(format!(
                "{what} holds \"||\", which a store in daprd's key layout cannot tell apart"
            )),
            _ => Ok(()),
        }
    }

    /// What the store's key `key` is to this space.
    pub fn find<'k>(&self, key: &'k str) -> Found<'k> {
        match self {
            KeySpace::Latchkey { namespace } => match LockKey::decode_any(key) {
                Some((found, lock)) if found == namespace.as_deref() => Found::Here(lock),
                Some((found, lock)) => Found::Elsewhere(found, lock),
                None => Found::Foreign,
            },
            KeySpace::Dapr => LockKey::decode_daprs(key),
        }
    }

    /// A Redis `SCAN MATCH` pattern for the owner-token keys of every lock that
    /// [`KeySpace::find`] can place. It matches other keys as well.
    pub fn pattern(&self) -> &'static str {
        match self {
            KeySpace::Latchkey { .. } => LockKey::EVERY_LOCK,
            KeySpace::Dapr => "lock||*",
        }
    }
}

/// What a lock is for: a plain lock, one permit of a semaphore, or an election's leadership.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GrantKind {
    /// A lock on a resource id (`try-lock`, `lock`).
    Lock,
    /// Permit number `slot` (from 0) of a semaphore: a semaphore of limit `n` is the
    /// locks of permits `0..n`, and a permit is the first of them that is free.
    Permit {
        /// Which of the semaphore's permits.
        slot: u32,
    },
    /// The leadership of an election: the lock its leader holds.
    Leadership,
}

impl GrantKind {
    /// What an operator's listing calls it: `lock`, `permit` or `leadership`.
    pub fn name(self) -> &'static str {
        match self {
            GrantKind::Lock => "lock",
            GrantKind::Permit { .. } => "permit",
            GrantKind::Leadership => "leadership",
        }
    }
}

/// The store names of one lock, computed once when the lock is first named.
///
/// The three names live back to back in one string: naming a lock is on every lock call's
/// path, and one allocation costs less than three.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LockKey {
    /// `<lock><fence><released>`.
    names: String,
    fence_at: usize,
    released_at: usize,
}

impl LockKey {
    /// The names of the lock of `app` on `id`, in `namespace` if the store has one. The
    /// namespace must hold only letters, digits, `.`, `_` and `-`.
    pub fn new(namespace: Option<&str>, app: &str, id: &str) -> Self {
        Self::of_kind(namespace, app, id, GrantKind::Lock)
    }

    /// The names of the lock of `kind` of `app` on `id`: see the [module](self) docs.
    pub fn of_kind(namespace: Option<&str>, app: &str, id: &str, kind: GrantKind) -> Self {
        const SUFFIXES: usize = "lock".len() + "fence".len() + "released".len();
        let namespace_len = namespace.map_or(0, |ns| ns.len() + 1);
        // Exact for a lock unless a part needs escaping.
        let prefix_len = "latchkey:{".len() + namespace_len + app.len() + id.len() + 3;
        let mut names = String::with_capacity(3 * prefix_len + SUFFIXES);
        names.push_str("latchkey:");
        if let Some(namespace) = namespace {
            debug_assert!(!namespace.contains(['{', '}', ':', '%']));
            names.push_str(namespace);
            names.push(':');
        }
        names.push('{');
        escape_into(&mut names, app);
        names.push(':');
        escape_into(&mut names, id);
        names.push_str("}:");
        match kind {
            GrantKind::Lock => {}
            GrantKind::Permit { .. } => names.push_str("permit:"),
            GrantKind::Leadership => names.push_str("leader:"),
        }
        // The channel is the kind's; the lock and its fence are the permit's own.
        let channel = ..names.len();
        if let GrantKind::Permit { slot } = kind {
            let _ = write!(names, "{slot}:");
        }
        let prefix = ..names.len();
        names.push_str("lock");
        let fence_at = names.len();
        names.extend_from_within(prefix);
        names.push_str("fence");
        let released_at = names.len();
        names.extend_from_within(channel);
        names.push_str("released");
        LockKey {
            names,
            fence_at,
            released_at,
        }
    }

    /// The names of the lock of `kind` of `app` on `id` in daprd's layout (see the
    /// [module](self#daprds-layout) docs); neither may hold `||`.
    fn in_daprs_layout(app: &str, id: &str, kind: GrantKind) -> Self {
        let mut names = format!("lock||{app}||{id}");
        match kind {
            GrantKind::Lock => {}
            GrantKind::Permit { .. } => names.push_str("||permit"),
            GrantKind::Leadership => names.push_str("||leader"),
        }
        let channel = ..names.len();
        if let GrantKind::Permit { slot } = kind {
            let _ = write!(names, "||{slot}");
        }
        let lock = ..names.len();
        let fence_at = names.len();
        names.extend_from_within(lock);
        names.push_str("||fence");
        let released_at = names.len();
        names.extend_from_within(channel);
        names.push_str("||released");
        LockKey {
            names,
            fence_at,
            released_at,
        }
    }

    /// What the key `key` is in daprd's layout.
    fn decode_daprs(key: &str) -> Found<'_> {
        let Some(rest) = key.strip_prefix("lock||") else {
            return Found::Foreign;
        };
        let parts: Vec<&str> = rest.split("||").collect();
        let (app, id, kind) = match parts[..] {
            [app, id] => (app, id, GrantKind::Lock),
            [app, id, "leader"] => (app, id, GrantKind::Leadership),
            [app, id, "permit", slot] => match slot_number(slot) {
                Some(slot) => (app, id, GrantKind::Permit { slot }),
                None => return Found::Foreign,
            },
            [.., "fence"] => return Found::Side,
            _ => return Found::Foreign,
        };
        if app.is_empty() || id.is_empty() {
            return Found::Foreign;
        }
        Found::Here(Decoded {
            app: app.to_owned(),
            id: id.to_owned(),
            kind,
        })
    }

    /// The key that holds the owner token.
    pub fn lock(&self) -> &str {
        &self.names[..self.fence_at]
    }

    /// The key that holds the last fencing token.
    pub fn fence(&self) -> &str {
        &self.names[self.fence_at..self.released_at]
    }

    /// The channel on which unlocks are announced.
    pub fn released(&self) -> &str {
        &self.names[self.released_at..]
    }
}

/// A lock as an operator's listing reads it back from a store's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The app it belongs to.
    pub app: String,
    /// The resource id, semaphore id or election id.
    pub id: String,
    /// What it is.
    pub kind: GrantKind,
}

impl LockKey {
    /// The lock whose owner-token key ([`LockKey::lock`]) is `lock` in `namespace`; `None`
    /// for a key of another layout or namespace. What an operator's listing reads back
    /// from a store's keys.
    pub fn decode(namespace: Option<&str>, lock: &str) -> Option<Decoded> {
        match Self::decode_any(lock)? {
            (found, decoded) if found == namespace => Some(decoded),
            _ => None,
        }
    }

    /// The lock whose owner-token key is `lock`, in whichever namespace it is (`None`: no
    /// namespace); `None` for a key of another layout. How a listing of one namespace learns
    /// of locks held under others.
    pub fn decode_any(lock: &str) -> Option<(Option<&str>, Decoded)> {
        let rest = lock.strip_prefix("latchkey:")?;
        let (namespace, rest) = match rest.strip_prefix('{') {
            Some(_) => (None, rest),
            None => {
                let (namespace, rest) = rest.split_once(':')?;
                let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
                if namespace.is_empty() || !namespace.chars().all(allowed) {
                    return None;
                }
                (Some(namespace), rest)
            }
        };
        let (tag, rest) = rest.strip_prefix('{')?.split_once('}')?;
        let kind = match rest.strip_prefix(':')?.strip_suffix("lock")? {
            "" => GrantKind::Lock,
            "leader:" => GrantKind::Leadership,
            permit => {
                let slot = permit.strip_prefix("permit:")?.strip_suffix(':')?;
                GrantKind::Permit {
                    slot: slot_number(slot)?,
                }
            }
        };
        let (app, id) = tag.split_once(':')?;
        let decoded = Decoded {
            app: unescape(app)?,
            id: unescape(id)?,
            kind,
        };
        Some((namespace, decoded))
    }

    /// What this key names: its app, id and kind.
    pub fn decoded(&self) -> Decoded {
        match Self::decode_any(self.lock()) {
            Some((_, decoded)) => decoded,
            None => match Self::decode_daprs(self.lock()) {
                Found::Here(decoded) => decoded,
                _ => unreachable!("a key made by `KeySpace::key` reads back"),
            },
        }
    }

    /// A Redis `SCAN MATCH` pattern for the owner-token keys of every lock, in every
    /// namespace: what a listing reads, to tell the operator of locks held elsewhere too.
    /// It matches other keys as well: [`LockKey::decode_any`] tells which are locks.
    pub const EVERY_LOCK: &'static str = "latchkey:*lock";
}

impl std::fmt::Debug for LockKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockKey")
            .field("lock", &self.lock())
            .field("fence", &self.fence())
            .field("released", &self.released())
            .finish()
    }
}

/// A permit's number as the layouts write it: digits, no sign, no leading zero.
fn slot_number(slot: &str) -> Option<u32> {
    if slot.is_empty() || (slot.len() > 1 && slot.starts_with('0')) {
        return None;
    }
    if !slot.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    slot.parse().ok()
}

/// Reverses `escape_into` for one part; `None` if it is not a validly escaped part.
fn unescape(part: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = part.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => {
                let hex: String = chars.by_ref().take(2).collect();
                out.push(char::from(u8::from_str_radix(&hex, 16).ok()?));
            }
            ':' | '{' | '}' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

fn escape_into(out: &mut String, part: &str) {
    for c in part.chars() {
        match c {
            '%' | ':' | '{' | '}' => {
                let _ = write!(out, "%{:02X}", c as u32);
            }
            _ => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids that look like separators or hash tags stay inside their own braces.
    #[test]
    fn awkward_ids_are_escaped_inside_one_hash_tag() {
        let key = LockKey::new(None, "app", "a:{b}%c");
        assert_eq!(key.lock(), "latchkey:{app:a%3A%7Bb%7D%25c}:lock");
        assert_eq!(key.fence(), "latchkey:{app:a%3A%7Bb%7D%25c}:fence");
        assert_eq!(key.released(), "latchkey:{app:a%3A%7Bb%7D%25c}:released");
    }

    /// A permit and a leadership keep the hash tag of their id, with a word after it.
    #[test]
    fn permits_and_leaderships_are_named_after_their_kind() {
        let permit = LockKey::of_kind(None, "app", "pool", GrantKind::Permit { slot: 2 });
        assert_eq!(permit.lock(), "latchkey:{app:pool}:permit:2:lock");
        assert_eq!(permit.fence(), "latchkey:{app:pool}:permit:2:fence");
        assert_eq!(permit.released(), "latchkey:{app:pool}:permit:released");
        let leader = LockKey::of_kind(Some("ns"), "app", "db", GrantKind::Leadership);
        assert_eq!(leader.lock(), "latchkey:ns:{app:db}:leader:lock");
        assert_eq!(leader.released(), "latchkey:ns:{app:db}:leader:released");
        for odd in [
            "permit::lock",
            "permit:02:lock",
            "permit:-1:lock",
            "permit:x:lock",
            "other:lock",
        ] {
            assert_eq!(
                LockKey::decode(None, &format!("latchkey:{{app:pool}}:{odd}")),
                None,
                "{odd}"
            );
        }
    }

    /// daprd's layout: the lock key is daprd's own, and every side key has more `||`
    /// than a daprd key can have, so none reads back as a lock.
    #[test]
    fn daprs_layout_is_daprds_and_its_side_keys_are_not_locks() {
        let space = KeySpace::Dapr;
        let key = space.key("app", "order-1", GrantKind::Lock);
        assert_eq!(key.lock(), "lock||app||order-1");
        assert_eq!(key.fence(), "lock||app||order-1||fence");
        assert_eq!(key.released(), "lock||app||order-1||released");
        let permit = space.key("app", "pool", GrantKind::Permit { slot: 3 });
        assert_eq!(permit.lock(), "lock||app||pool||permit||3");
        assert_eq!(permit.fence(), "lock||app||pool||permit||3||fence");
        assert_eq!(permit.released(), "lock||app||pool||permit||released");
        let leader = space.key("app", "db", GrantKind::Leadership);
        assert_eq!(leader.lock(), "lock||app||db||leader");
        for key in [&key, &permit, &leader] {
            let Found::Here(decoded) = space.find(key.lock()) else {
                panic!("{key:?} does not read back");
            };
            assert_eq!(space.key(&decoded.app, &decoded.id, decoded.kind), *key);
            assert_eq!(space.find(key.fence()), Found::Side);
        }
        assert_eq!(space.find("lock||app||x||permit||01"), Found::Foreign);
        assert_eq!(space.find("latchkey:{app:x}:lock"), Found::Foreign);
        assert!(space.check("resource-id", "a||b").is_err());
        assert!(space.check("resource-id", "a|b").is_ok());
        assert!(KeySpace::default().check("resource-id", "a||b").is_ok());
    }

    /// A namespace comes before the hash tag.
    #[test]
    fn namespaces_precede_the_hash_tag() {
        let key = LockKey::new(Some("blue-2"), "app", "job");
        assert_eq!(key.lock(), "latchkey:blue-2:{app:job}:lock");
        assert_eq!(key.released(), "latchkey:blue-2:{app:job}:released");
    }

    /// Moving a separator from one part to the next must give a different key.
    #[test]
    fn parts_cannot_bleed_into_each_other() {
        let pairs = [
            ((None, "a:b", "id"), (None, "a", "b:id")),
            ((None, "a", "%3A"), (None, "a", ":")),
            ((None, "a", "x}"), (None, "a", "x%7D")),
            ((Some("ns"), "a", "id"), (None, "ns:a", "id")),
        ];
        for (one, other) in pairs {
            assert_ne!(
                LockKey::new(one.0, one.1, one.2),
                LockKey::new(other.0, other.1, other.2),
                "{one:?} and {other:?} collide"
            );
        }
    }
}

/// Property tests of the encoding: run `PROPTEST_CASES=N cargo test` for more cases.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// How many cases each property runs by default.
    const CASES: u32 = 10_000;

    /// Parts drawn from the characters that could confuse the layout, so that near
    /// collisions are common; and arbitrary Unicode.
    fn part() -> impl Strategy<Value = String> {
        prop_oneof!["[%:{}a3A7BD]{0,6}", any::<String>(),]
    }

    /// No namespace, or one of the characters a namespace may hold.
    fn namespace() -> impl Strategy<Value = Option<String>> {
        prop::option::of("[a-c.3_-]{1,4}")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        /// The key reads back as its namespace, and a hash tag holding the app and the id:
        /// so two different triples never share a key, and a lock's keys share one Redis
        /// Cluster slot.
        #[test]
        fn keys_decode_to_their_triple(ns in namespace(), app in part(), id in part()) {
            let key = LockKey::new(ns.as_deref(), &app, &id);
            let lock = key.lock().to_owned();
            let rest = lock.strip_prefix("latchkey:").unwrap().strip_suffix("}:lock").unwrap();
            let (prefix, tag) = rest.split_once('{').unwrap();
            prop_assert_eq!(prefix.strip_suffix(':'), ns.as_deref());
            // Cluster hashes from the first `{` to the first `}` after it: the whole tag.
            prop_assert!(!tag.contains(['{', '}']), "brace inside the tag {tag:?}");
            let parts: Vec<&str> = tag.split(':').collect();
            prop_assert_eq!(parts.len(), 2);
            prop_assert_eq!(unescape(parts[0]), Some(app.clone()));
            prop_assert_eq!(unescape(parts[1]), Some(id.clone()));
            prop_assert_eq!(
                LockKey::decode(ns.as_deref(), &lock),
                Some(Decoded { app: app.clone(), id: id.clone(), kind: GrantKind::Lock })
            );
            prop_assert_eq!(key.fence().replace(":fence", ":lock"), lock.clone());
            prop_assert_eq!(key.released().replace(":released", ":lock"), lock);
        }

        /// Every kind of lock reads back as itself, and no two kinds share a name.
        #[test]
        fn kinds_decode_and_stay_apart(ns in namespace(), app in part(), id in part(), slot in 0u32..300) {
            let kinds = [GrantKind::Lock, GrantKind::Leadership, GrantKind::Permit { slot }, GrantKind::Permit { slot: slot + 1 }];
            let keys: Vec<LockKey> = kinds.iter().map(|&kind| LockKey::of_kind(ns.as_deref(), &app, &id, kind)).collect();
            for (kind, key) in kinds.iter().zip(&keys) {
                let decoded = LockKey::decode(ns.as_deref(), key.lock());
                prop_assert_eq!(decoded.clone().map(|d| d.kind), Some(*kind));
                prop_assert_eq!(Some(key.decoded()), decoded);
                prop_assert_eq!(LockKey::decode(ns.as_deref(), key.fence()), None);
                prop_assert_eq!(LockKey::decode(ns.as_deref(), key.released()), None);
            }
            for (i, a) in keys.iter().enumerate() {
                for b in &keys[i + 1..] {
                    prop_assert!(a.lock() != b.lock() && a.fence() != b.fence());
                }
            }
            // One channel for every permit of a semaphore: a waiter hears any release.
            prop_assert_eq!(keys[2].released(), keys[3].released());
            prop_assert!(keys[0].released() != keys[1].released() && keys[1].released() != keys[2].released());
        }

        /// Equal keys only for equal triples, checked directly on near-identical triples.
        #[test]
        fn keys_are_injective(
            a in (namespace(), part(), part()),
            b in (namespace(), part(), part()),
        ) {
            let key_a = LockKey::new(a.0.as_deref(), &a.1, &a.2);
            let key_b = LockKey::new(b.0.as_deref(), &b.1, &b.2);
            prop_assert_eq!(a == b, key_a == key_b);
        }
    }
}
