//! Where a lock lives in a store: the key layout shared by every backend.
//!
//! A lock on resource id `id`, in store `store`, for app `app` uses three names:
//!
//! ```text
//! latchkey:{<app>:<store>:<id>}:lock       the holder's owner token, with the lease as its TTL
//! latchkey:{<app>:<store>:<id>}:fence      the last fencing token granted
//! latchkey:{<app>:<store>:<id>}:released   the pub/sub channel that announces unlocks
//! ```
//!
//! Each part is escaped so that it holds no `%`, `:`, `{` or `}` (they become `%25`, `%3A`,
//! `%7B`, `%7D`). Escaping is reversible and the separators never occur inside a part, so two
//! different (app, store, id) triples always give different names, and the braces always
//! enclose the whole triple: Redis Cluster hashes only what is inside `{...}`, so the keys of
//! one lock share a hash slot whatever bytes the id holds.

use std::fmt::Write as _;

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
    /// The names of the lock on `id` in `store` for `app`.
    pub fn new(app: &str, store: &str, id: &str) -> Self {
        const PREFIX: &str = "latchkey:{";
        const SUFFIXES: usize = "lock".len() + "fence".len() + "released".len();
        // Exact unless a part needs escaping.
        let prefix_len = PREFIX.len() + app.len() + store.len() + id.len() + 4;
        let mut names = String::with_capacity(3 * prefix_len + SUFFIXES);
        names.push_str(PREFIX);
        escape_into(&mut names, app);
        names.push(':');
        escape_into(&mut names, store);
        names.push(':');
        escape_into(&mut names, id);
        names.push_str("}:");
        let prefix = ..names.len();
        names.push_str("lock");
        let fence_at = names.len();
        names.extend_from_within(prefix);
        names.push_str("fence");
        let released_at = names.len();
        names.extend_from_within(prefix);
        names.push_str("released");
        LockKey {
            names,
            fence_at,
            released_at,
        }
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

impl std::fmt::Debug for LockKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockKey")
            .field("lock", &self.lock())
            .field("fence", &self.fence())
            .field("released", &self.released())
            .finish()
    }
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
        let key = LockKey::new("app", "lockstore", "a:{b}%c");
        assert_eq!(key.lock(), "latchkey:{app:lockstore:a%3A%7Bb%7D%25c}:lock");
        assert_eq!(
            key.fence(),
            "latchkey:{app:lockstore:a%3A%7Bb%7D%25c}:fence"
        );
        assert_eq!(
            key.released(),
            "latchkey:{app:lockstore:a%3A%7Bb%7D%25c}:released"
        );
    }

    /// Moving a separator from one part to the next must give a different key.
    #[test]
    fn parts_cannot_bleed_into_each_other() {
        let pairs = [
            (("a:b", "s", "id"), ("a", "b:s", "id")),
            (("a", "s:x", "id"), ("a", "s", "x:id")),
            (("a", "s", "%3A"), ("a", "s", ":")),
            (("a", "s", "x}"), ("a", "s", "x%7D")),
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

    /// Reverses `escape_into` for one part; `None` if it is not a valid escaped part.
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        /// The hash tag holds the whole triple and can be read back: so two different
        /// triples never share a key, and a lock's keys share one Redis Cluster slot.
        #[test]
        fn keys_decode_to_their_triple(app in part(), store in part(), id in part()) {
            let key = LockKey::new(&app, &store, &id);
            let lock = key.lock().to_owned();
            let tag = lock.strip_prefix("latchkey:{").unwrap().strip_suffix("}:lock").unwrap();
            // Cluster hashes from the first `{` to the first `}` after it: the whole tag.
            prop_assert!(!tag.contains(['{', '}']), "brace inside the tag {tag:?}");
            let parts: Vec<&str> = tag.split(':').collect();
            prop_assert_eq!(parts.len(), 3);
            prop_assert_eq!(unescape(parts[0]), Some(app));
            prop_assert_eq!(unescape(parts[1]), Some(store));
            prop_assert_eq!(unescape(parts[2]), Some(id));
            prop_assert_eq!(key.fence().replace(":fence", ":lock"), lock.clone());
            prop_assert_eq!(key.released().replace(":released", ":lock"), lock);
        }

        /// Equal keys only for equal triples, checked directly on near-identical triples.
        #[test]
        fn keys_are_injective(a in (part(), part(), part()), b in (part(), part(), part())) {
            let key_a = LockKey::new(&a.0, &a.1, &a.2);
            let key_b = LockKey::new(&b.0, &b.1, &b.2);
            prop_assert_eq!(a == b, key_a == key_b);
        }
    }
}
