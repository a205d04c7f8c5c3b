//! Which resource ids an app may lock: a list of glob patterns set by the operator.

use globset::{GlobSet, GlobSetBuilder};

/// The resource ids an app may lock. Checked before the store is touched: a refused call is
/// `access-denied` and changes nothing.
#[derive(Clone, Debug, Default)]
pub struct ResourcePolicy {
    allowed: Option<(Vec<String>, GlobSet)>,
}

impl ResourcePolicy {
    /// Every resource id is allowed.
    pub fn any() -> Self {
        Self::default()
    }

    /// Only ids matching one of `patterns`: globs where `*` matches any run of characters
    /// (separators included), `?` one character, `[abc]` a class, and `\` escapes. A
    /// pattern without wildcards allows exactly that id; `orders/*` is a prefix.
    pub fn only<I, S>(patterns: I) -> Result<Self, PatternError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let patterns: Vec<String> = patterns.into_iter().map(Into::into).collect();
        let mut set = GlobSetBuilder::new();
        for pattern in &patterns {
            let glob = globset::GlobBuilder::new(pattern)
                .literal_separator(false)
                .backslash_escape(true)
                .build()
                .map_err(|e| PatternError {
                    pattern: pattern.clone(),
                    reason: e.kind().to_string(),
                })?;
            set.add(glob);
        }
        let set = set.build().map_err(|e| PatternError {
            pattern: patterns.join(" "),
            reason: e.to_string(),
        })?;
        Ok(ResourcePolicy {
            allowed: Some((patterns, set)),
        })
    }

    /// Whether `id` may be locked.
    pub fn allows(&self, id: &str) -> bool {
        match &self.allowed {
            None => true,
            Some((_, set)) => set.is_match(id),
        }
    }

    /// The patterns, or `None` if every id is allowed.
    pub fn patterns(&self) -> Option<&[String]> {
        self.allowed
            .as_ref()
            .map(|(patterns, _)| patterns.as_slice())
    }
}

/// A resource pattern that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad resource pattern {pattern:?}: {reason}")]
pub struct PatternError {
    pattern: String,
    reason: String,
}

impl PatternError {
    /// The pattern that does not parse.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact names, prefixes and classes match what they say and nothing more.
    #[test]
    fn patterns_match_what_they_say() {
        let policy = ResourcePolicy::only(["ledger", "orders/*", "job-[0-9]"]).unwrap();
        for id in ["ledger", "orders/1", "orders/a/b", "job-7"] {
            assert!(policy.allows(id), "{id} refused");
        }
        for id in [
            "ledger2", "xledger", "orders", "order/1", "job-x", "job-77", "",
        ] {
            assert!(!policy.allows(id), "{id} allowed");
        }
        assert!(ResourcePolicy::any().allows("anything at all"));
    }

    /// A pattern that does not parse is refused with the pattern named.
    #[test]
    fn bad_patterns_are_refused() {
        let err = ResourcePolicy::only(["ok", "job-[0-9"]).unwrap_err();
        assert_eq!(err.pattern(), "job-[0-9");
        assert!(err.to_string().contains("job-[0-9"), "{err}");
    }
}
