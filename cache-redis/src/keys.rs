//! The Redis key layout (the same names the Lua scripts build; see `scripts/`).
//!
//! With prefix `P`, an entry whose key text is `T`, and a dependency `D`:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:{T}` | string | the entry: envelope + MessagePack ([`crate::envelope`]); or a tombstone (60 s after an invalidation removed it) |
//! | `P:{T}:d` | string | the entry's dependencies (forward list): `<length>:<name>` items |
//! | `P:{T}:deps` | set | the forward list as an older layout wrote it (read and deleted, never written) |
//! | `P:{T}:lock` | string | distributed single-flight lock (token) |
//! | `P:dep:{D}` | set | key texts of the entries depending on `D` (reverse index) |
//! | `P:gen` | string | the invalidation generation (microseconds, monotonic) |
//! | `P:epochs` | hash | slot of a name → generation of its last invalidation; `clear` |
//! | `P:gc:lock`, `P:gc:cursor` | string | the sweep's leader lock and shared SCAN cursor |
//!
//! The `{T}` hash tag puts an entry's three keys in one Cluster slot, and `P:dep:{T}` (the
//! entries depending on entry `T`) in that slot too.
//!
//! The write-behind queue of writer `W` ([`WriteKeys`], described in `crate::write_queue`) lives
//! under `P:wb:{W}`: one slot per writer.

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

    /// `P:v:{N}`: the version key of name `N` (protocol version 2): a dependency, or an
    /// entry's key text (then in the entry's hash slot).
    pub(crate) fn version(&self, name: &str) -> String {
        let mut s = String::with_capacity(self.prefix.len() + name.len() + 5);
        s.push_str(&self.prefix);
        s.push_str(":v:{");
        s.push_str(name);
        s.push('}');
        s
    }

    /// `P:v:{`: what every version key starts with (protocol version 2).
    pub(crate) fn version_prefix(&self) -> String {
        format!("{}:v:{{", self.prefix)
    }

    /// The name `N` of a version key `P:v:{N}` (protocol version 2), if `key` is one.
    pub(crate) fn version_name<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix(":v:{")?
            .strip_suffix('}')
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

    /// The key text of a forward list `P:{T}:d` (or an older layout's `P:{T}:deps`), if `key`
    /// is one.
    pub(crate) fn deps_list_text<'k>(&self, key: &'k str) -> Option<&'k str> {
        let rest = key.strip_prefix(self.item_start.as_str())?;
        rest.strip_suffix("}:d")
            .or_else(|| rest.strip_suffix("}:deps"))
    }

    /// The dependency of a reverse-index set `P:dep:{D}`, if `key` is one.
    pub(crate) fn dep_set_name<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix(":dep:{")?
            .strip_suffix('}')
    }
}

/// The keys of one write-behind writer (`#[write_behind]` fn `W`), all under the hash tag `{W}`.
#[derive(Debug, Clone)]
pub(crate) struct WriteKeys {
    /// `P:wb:{W}`: the stream of queued writes.
    pub(crate) stream: String,
    /// `P:wb:{W}:latest`: target key → newest sequence queued.
    pub(crate) latest: String,
    /// `P:wb:{W}:done`: target key → newest sequence written.
    pub(crate) done: String,
    /// `P:wb:{W}:pending`: target key → `<seq>:<value>`.
    pub(crate) pending: String,
    /// `P:wb:{W}:dead`: the dead letters (a stream).
    pub(crate) dead: String,
    /// `P:wb:{W}:deadkeys`: target key → its dead letters.
    pub(crate) deadkeys: String,
    /// `P:wb:{W}:queued`: target key → its writes in the stream.
    pub(crate) queued: String,
}

impl Layout {
    /// The keys of write-behind writer `writer`.
    pub(crate) fn write_keys(&self, writer: &str) -> WriteKeys {
        let stream = format!("{}:wb:{{{}}}", self.prefix, writer);
        WriteKeys {
            latest: format!("{stream}:latest"),
            done: format!("{stream}:done"),
            pending: format!("{stream}:pending"),
            dead: format!("{stream}:dead"),
            deadkeys: format!("{stream}:deadkeys"),
            queued: format!("{stream}:queued"),
            stream,
        }
    }

    /// Whether `key` belongs to a write-behind queue (`P:wb:{W}...`): queued writes, which a
    /// `clear` of the cache must not drop.
    pub(crate) fn is_write_queue_key(&self, key: &str) -> bool {
        key.strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest.starts_with(":wb:{"))
    }

    /// `P:wb:{W}:lock:<K>`: the lock of target key `key` while a body of writer `writer` runs.
    pub(crate) fn write_lock(&self, writer: &str, key: &str) -> String {
        format!("{}:wb:{{{}}}:lock:{}", self.prefix, writer, key)
    }
}

/// The forward list of the entry whose key is `entry_key` (`P:{T}` → `P:{T}:d`).
pub(crate) fn forward_list_key(entry_key: &str) -> String {
    format!("{entry_key}:d")
}

/// The forward list as an older layout kept it (`P:{T}:deps`, a set).
pub(crate) fn old_forward_list_key(entry_key: &str) -> String {
    format!("{entry_key}:deps")
}

/// The names of a forward list (`<length>:<name>` items, as `common.lua` writes them); stops at
/// the first malformed item.
pub(crate) fn decode_forward_list(bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some(colon) = rest.iter().position(|b| *b == b':') else {
            break;
        };
        let Some(n) = std::str::from_utf8(&rest[..colon])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        else {
            break;
        };
        let Some(name) = rest.get(colon + 1..colon + 1 + n) else {
            break;
        };
        out.push(String::from_utf8_lossy(name).into_owned());
        rest = &rest[colon + 1 + n..];
    }
    out
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
        assert_eq!(l.version_name(&l.version("user:7")), Some("user:7"));
        assert_eq!(l.version_name(&l.item("v:{x}")), None);
        assert!(l.version("n").starts_with(&l.version_prefix()));
        assert_eq!(l.deps_list_text("app:{f(1)}:d"), Some("f(1)"));
        assert_eq!(forward_list_key("app:{f(1)}"), "app:{f(1)}:d");
        assert_eq!(l.dep_set_name("app:dep:{user:7}"), Some("user:7"));
        assert_eq!(l.entry_text("app:dep:{user:7}"), None);
        assert_eq!(l.entry_text("apple:{x}"), None);
        assert_eq!(l.lock("x"), "app:{x}:lock");
        assert_eq!(l.version("user:7"), "app:v:{user:7}");
        assert_eq!(l.entry_text("app:v:{user:7}"), None);
        assert!(l.is_write_queue_key("app:wb:{m::save}:pending"));
        assert!(!l.is_write_queue_key("app:{m::get(1)}"));
        assert!(!l.is_write_queue_key("apple:wb:{x}"));
        let w = l.write_keys("m::save");
        assert_eq!(w.stream, "app:wb:{m::save}");
        assert_eq!(w.pending, "app:wb:{m::save}:pending");
        assert_eq!(
            l.write_lock("m::save", "m::get(1)"),
            "app:wb:{m::save}:lock:m::get(1)"
        );
    }

    #[test]
    fn forward_lists_decode() {
        assert_eq!(
            decode_forward_list(b"6:user:78:a:b{c}:d0:"),
            vec!["user:7".to_string(), "a:b{c}:d".to_string(), String::new()]
        );
        assert_eq!(decode_forward_list(b""), Vec::<String>::new());
        assert_eq!(decode_forward_list(b"5:abc"), Vec::<String>::new());
        assert_eq!(decode_forward_list(b"x:abc"), Vec::<String>::new());
    }
}
