//! The Redis key layout (the same names the Lua scripts build; see `scripts/`).
//!
//! With prefix `P`, an entry whose key text is `T`, and a dependency `D`:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:{T}` | string | the entry: envelope + MessagePack ([`crate::envelope`]); or a tombstone (60 s after an invalidation removed it) |
//! | `P:{T}:deps` | set | the entry's dependencies (forward list) |
//! | `P:{T}:lock` | string | distributed single-flight lock (token) |
//! | `P:dep:{D}` | set | key texts of the entries depending on `D` (reverse index) |
//! | `P:gen` | string | the invalidation generation (microseconds, monotonic) |
//! | `P:epochs` | hash | slot of a name → generation of its last invalidation; `clear` |
//! | `P:gc:lock`, `P:gc:cursor` | string | the sweep's leader lock and shared SCAN cursor |
//!
//! The `{T}` hash tag puts an entry's three keys in one Cluster slot, and `P:dep:{T}` (the
//! entries depending on entry `T`) in that slot too.

/// Key names of one backend (one prefix).
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) prefix: String,
    pub(crate) gen: String,
    item_start: String,
}

impl Layout {
    pub(crate) fn new(prefix: &str) -> Self {
        Layout {
            prefix: prefix.to_string(),
            gen: format!("{prefix}:gen"),
            item_start: format!("{prefix}:{{"),
        }
    }

    /// `P:{T}`.
    pub(crate) fn item(&self, text: &str) -> String {
        let mut s = String::with_capacity(self.item_start.len() + text.len() + 1);
        s.push_str(&self.item_start);
        s.push_str(text);
        s.push('}');
        s
    }

    /// `P:{`: what every entry key starts with (the tracking `BCAST PREFIX`).
    pub(crate) fn entry_prefix(&self) -> &str {
        &self.item_start
    }

    /// `P:{T}:lock`.
    pub(crate) fn lock(&self, text: &str) -> String {
        format!("{}{}}}:lock", self.item_start, text)
    }

    /// `P:gc:lock`.
    pub(crate) fn gc_lock(&self) -> String {
        format!("{}:gc:lock", self.prefix)
    }

    /// `P:gc:cursor`.
    pub(crate) fn gc_cursor(&self) -> String {
        format!("{}:gc:cursor", self.prefix)
    }

    /// The key text of an entry key `P:{T}`, if `key` is one.
    pub(crate) fn entry_text<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(self.item_start.as_str())?
            .strip_suffix('}')
    }

    /// The key text of a dependency list `P:{T}:deps`, if `key` is one.
    pub(crate) fn deps_list_text<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(self.item_start.as_str())?
            .strip_suffix("}:deps")
    }

    /// The dependency of a reverse-index set `P:dep:{D}`, if `key` is one.
    pub(crate) fn dep_set_name<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix(":dep:{")?
            .strip_suffix('}')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        let l = Layout::new("app");
        assert_eq!(l.item("f(1)"), "app:{f(1)}");
        assert_eq!(l.entry_text("app:{f(1)}"), Some("f(1)"));
        assert_eq!(l.entry_text("app:{f(1)}:deps"), None);
        assert_eq!(l.deps_list_text("app:{f(1)}:deps"), Some("f(1)"));
        assert_eq!(l.dep_set_name("app:dep:{user:7}"), Some("user:7"));
        assert_eq!(l.entry_text("app:dep:{user:7}"), None);
        assert_eq!(l.entry_text("apple:{x}"), None);
        assert_eq!(l.lock("x"), "app:{x}:lock");
    }
}
