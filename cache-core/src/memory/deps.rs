//! The dependency reverse index: dependency string -> the entries that depend on it.
//!
//! Every entry is indexed under its own key text (the implicit dependency that lets
//! `invalidate(text)` find it) and under each of its declared dependencies, except *groups*:
//! names starting with `fn:`, which every entry of a cached fn carries (what `invalidate_all`
//! invalidates). A group would be one set holding every entry of its fn, so groups are not
//! indexed: invalidating one scans the shards ([`is_group`]), and the memory a fn's
//! "invalidate all" costs is one shared name, not a set member per entry. The index lives
//! under the backend's fill lock; it is kept exact: an index entry never refers to an absent
//! entry, and no set is left empty.

use std::sync::Arc;

use hashbrown::{HashMap, HashSet};
use smallvec::SmallVec;

type Hasher = foldhash::fast::RandomState;

/// Where an entry lives: its shard, its slot in the shard, and its unique id (a slot is reused
/// by later entries; the id tells them apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct EntryRef {
    pub(crate) id: u64,
    pub(crate) shard: u32,
    pub(crate) slot: u32,
}

/// Whether `dependency` is a group (a fn's `fn:` name): not indexed, found by a scan.
pub(crate) fn is_group(dependency: &str) -> bool {
    dependency.starts_with("fn:")
}

/// Above this many dependents, a set switches from a small vector to a hash set.
const SMALL_LIMIT: usize = 16;

/// The entries depending on one dependency.
pub(crate) enum DepSet {
    Small(SmallVec<[EntryRef; 2]>),
    Large(HashSet<EntryRef, Hasher>),
}

impl DepSet {
    fn insert(&mut self, r: EntryRef) {
        match self {
            DepSet::Small(v) => {
                if v.contains(&r) {
                    return;
                }
                if v.len() < SMALL_LIMIT {
                    v.push(r);
                } else {
                    let mut set: HashSet<EntryRef, Hasher> = v.drain(..).collect();
                    set.insert(r);
                    *self = DepSet::Large(set);
                }
            }
            DepSet::Large(s) => {
                s.insert(r);
            }
        }
    }

    fn remove(&mut self, r: &EntryRef) {
        match self {
            DepSet::Small(v) => v.retain(|x| x != r),
            DepSet::Large(s) => {
                s.remove(r);
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            DepSet::Small(v) => v.len(),
            DepSet::Large(s) => s.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries, in no particular order.
    pub(crate) fn to_vec(&self) -> Vec<EntryRef> {
        match self {
            DepSet::Small(v) => v.to_vec(),
            DepSet::Large(s) => s.iter().copied().collect(),
        }
    }
}

/// dependency string -> dependents.
#[derive(Default)]
pub(crate) struct DepIndex {
    map: HashMap<Arc<str>, DepSet, Hasher>,
}

impl DepIndex {
    fn add(&mut self, dependency: &Arc<str>, r: EntryRef) {
        if let Some(set) = self.map.get_mut(&**dependency) {
            set.insert(r);
        } else {
            let mut v = SmallVec::new();
            v.push(r);
            self.map.insert(dependency.clone(), DepSet::Small(v));
        }
    }

    fn remove(&mut self, dependency: &str, r: &EntryRef) {
        if let Some(set) = self.map.get_mut(dependency) {
            set.remove(r);
            if set.is_empty() {
                self.map.remove(dependency);
            }
        }
    }

    /// The index's own copy of `dependency`, if some entry depends on it: entries share it
    /// instead of holding a copy each (every entry of a fn depends on the fn's `fn:` name).
    pub(crate) fn shared(&self, dependency: &str) -> Option<&Arc<str>> {
        self.map.get_key_value(dependency).map(|(k, _)| k)
    }

    /// Indexes an entry under its key text and its dependencies.
    pub(crate) fn add_entry(&mut self, r: EntryRef, text: &Arc<str>, dependencies: &[Arc<str>]) {
        self.add(text, r);
        for d in dependencies.iter().filter(|d| !is_group(d)) {
            self.add(d, r);
        }
    }

    /// Removes an entry from the sets of its key text and its dependencies.
    pub(crate) fn remove_entry(&mut self, r: EntryRef, text: &str, dependencies: &[Arc<str>]) {
        self.remove(text, &r);
        for d in dependencies.iter().filter(|d| !is_group(d)) {
            self.remove(d, &r);
        }
    }

    /// Removes and returns the dependents of `dependency`.
    pub(crate) fn take(&mut self, dependency: &str) -> Option<DepSet> {
        self.map.remove(dependency)
    }

    /// The dependents of `dependency`.
    pub(crate) fn get(&self, dependency: &str) -> Option<&DepSet> {
        self.map.get(dependency)
    }

    pub(crate) fn clear(&mut self) {
        self.map = HashMap::default();
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &DepSet)> {
        self.map.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(id: u64) -> EntryRef {
        EntryRef {
            id,
            shard: 0,
            slot: id as u32,
        }
    }

    #[test]
    fn sets_grow_shrink_and_vanish() {
        let mut idx = DepIndex::default();
        let d: Arc<str> = Arc::from("d");
        let t: Arc<str> = Arc::from("t");
        for i in 0..40 {
            idx.add_entry(r(i), &t, std::slice::from_ref(&d));
        }
        assert_eq!(idx.get("d").map(DepSet::len), Some(40));
        for i in 0..40 {
            idx.remove_entry(r(i), "t", std::slice::from_ref(&d));
        }
        assert_eq!(idx.len(), 0);
    }
}
