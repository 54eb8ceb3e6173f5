//! `#[invalidates]` and `#[cache_put]`: entries, all entries, dependencies, paths to other
//! modules, `before = true`, only on `Ok`; and dependencies through nested cached calls.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cache_core::{cache_put, cached, invalidates, registry, MemoryBackend};

fn mem() -> Arc<MemoryBackend> {
    Arc::new(MemoryBackend::new())
}

fn runs(c: &AtomicUsize) -> usize {
    c.load(Ordering::SeqCst)
}

/// The tests of `users::*` share their run counters: they take turns.
static USERS_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub mod users {
    use super::*;

    pub static USER_RUNS: AtomicUsize = AtomicUsize::new(0);
    pub static TEAM_RUNS: AtomicUsize = AtomicUsize::new(0);

    pub struct Db;

    #[cached(ttl = "5m", depends_on = ["user:{id}"], skip(db))]
    pub async fn get_user(db: &Db, id: u64) -> Result<String, String> {
        let _ = db;
        USER_RUNS.fetch_add(1, Ordering::SeqCst);
        Ok(format!("user{id}"))
    }

    #[cached(ttl = "1m", skip(db))]
    pub async fn team_page(db: &Db, team: u32) -> Result<Vec<String>, String> {
        TEAM_RUNS.fetch_add(1, Ordering::SeqCst);
        // every cached fn called in here becomes a dependency of this entry
        let a = get_user(db, u64::from(team) * 10).await?;
        let b = get_user(db, u64::from(team) * 10 + 1).await?;
        Ok(vec![a, b])
    }
}

pub mod admin {
    use super::users::Db;
    use super::*;

    pub static RENAME_RUNS: AtomicUsize = AtomicUsize::new(0);

    /// Paths to fns in other modules; invalidation only on `Ok`.
    #[invalidates(crate::users::get_user(id), crate::users::team_page(..), dependencies = ["team:{team}"])]
    pub async fn rename_user(db: &Db, id: u64, team: u32, fail: bool) -> Result<(), String> {
        let _ = db;
        RENAME_RUNS.fetch_add(1, Ordering::SeqCst);
        if fail {
            return Err("rejected".into());
        }
        Ok(())
    }

    #[cache_put(crate::users::get_user(id))]
    pub async fn save_user(db: &Db, id: u64, name: String) -> Result<String, String> {
        let _ = db;
        if name.is_empty() {
            return Err("empty".into());
        }
        Ok(name)
    }
}

#[tokio::test]
async fn invalidates_entries_all_entries_and_dependencies() {
    use users::{get_user, team_page, Db, TEAM_RUNS, USER_RUNS};
    let _turn = USERS_TESTS.lock().await;
    registry::with_backend(mem(), async {
        let db = Db;
        get_user(&db, 1).await.unwrap();
        get_user(&db, 2).await.unwrap();
        team_page(&db, 3).await.unwrap();
        let (u0, t0) = (runs(&USER_RUNS), runs(&TEAM_RUNS));
        // an Err return invalidates nothing
        assert!(admin::rename_user(&db, 1, 3, true).await.is_err());
        get_user(&db, 1).await.unwrap();
        team_page(&db, 3).await.unwrap();
        assert_eq!((runs(&USER_RUNS), runs(&TEAM_RUNS)), (u0, t0));
        // Ok: get_user(1) and every team_page entry go; get_user(2) stays
        admin::rename_user(&db, 1, 3, false).await.unwrap();
        get_user(&db, 1).await.unwrap();
        get_user(&db, 2).await.unwrap();
        team_page(&db, 3).await.unwrap();
        assert_eq!(runs(&USER_RUNS), u0 + 1);
        assert_eq!(runs(&TEAM_RUNS), t0 + 1);
        assert_eq!(runs(&admin::RENAME_RUNS), 2);
    })
    .await;
}

#[tokio::test]
async fn nested_cached_calls_are_dependencies() {
    use users::{get_user_invalidate, team_page, Db, TEAM_RUNS};
    let _turn = USERS_TESTS.lock().await;
    registry::with_backend(mem(), async {
        let db = Db;
        team_page(&db, 5).await.unwrap();
        team_page(&db, 5).await.unwrap();
        let t0 = runs(&TEAM_RUNS);
        // invalidating get_user(51) drops team_page(5), which called it
        get_user_invalidate(51).await.unwrap();
        team_page(&db, 5).await.unwrap();
        assert_eq!(runs(&TEAM_RUNS), t0 + 1);
    })
    .await;
}

#[tokio::test]
async fn cache_put_writes_the_ok_value_through() {
    use users::{get_user, get_user_entry, Db, USER_RUNS};
    let _turn = USERS_TESTS.lock().await;
    registry::with_backend(mem(), async {
        let db = Db;
        get_user(&db, 9).await.unwrap();
        let u0 = runs(&USER_RUNS);
        admin::save_user(&db, 9, "Ada".into()).await.unwrap();
        assert_eq!(get_user(&db, 9).await.unwrap(), "Ada");
        assert_eq!(runs(&USER_RUNS), u0, "served from the written entry");
        assert!(admin::save_user(&db, 9, String::new()).await.is_err());
        assert_eq!(get_user_entry(9).get().await.as_deref(), Some("Ada"));
        // and a put on a key never read
        admin::save_user(&db, 10, "Bob".into()).await.unwrap();
        assert_eq!(get_user(&db, 10).await.unwrap(), "Bob");
        assert_eq!(runs(&USER_RUNS), u0);
    })
    .await;
}

// ---------- sync fns, methods, before = true, plain return types ----------

struct Store {
    value: AtomicUsize,
    reads: AtomicUsize,
}

impl Store {
    #[cached]
    fn read(&self, slot: u8) -> usize {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.value.load(Ordering::SeqCst) + usize::from(slot)
    }

    /// `Self::` paths and a plain (non-`Result`) return: always invalidates.
    #[invalidates(Self::read(slot))]
    fn write(&self, slot: u8, v: usize) {
        self.value.store(v, Ordering::SeqCst);
    }

    /// `before = true`: the entry is gone while the body runs.
    #[invalidates(Self::read(slot), before = true)]
    fn peek_after_drop(&self, slot: u8) -> Option<usize> {
        Self::read_entry(slot).get_blocking()
    }

    #[cache_put(Self::read(slot))]
    fn put(&self, slot: u8, v: usize) -> usize {
        v
    }

    /// Several targets, `g(..)` from a sync fn.
    #[invalidates(Self::read(0), Self::read(1), user_count(..))]
    fn reset(&self) -> Result<(), ()> {
        self.value.store(0, Ordering::SeqCst);
        Ok(())
    }
}

static COUNT_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached]
fn user_count(group: u8) -> usize {
    COUNT_RUNS.fetch_add(1, Ordering::SeqCst);
    usize::from(group)
}

#[test]
fn sync_methods_invalidate_and_put() {
    registry::with_backend_blocking(mem(), || {
        let s = Store {
            value: AtomicUsize::new(10),
            reads: AtomicUsize::new(0),
        };
        assert_eq!(s.read(1), 11);
        s.write(1, 20);
        assert_eq!(s.read(1), 21);
        assert_eq!(runs(&s.reads), 2);
        assert_eq!(s.peek_after_drop(1), None);
        s.put(1, 99);
        assert_eq!(s.read(1), 99);
        assert_eq!(runs(&s.reads), 2);
        user_count(1);
        user_count(2);
        s.reset().unwrap();
        assert_eq!(s.read(1), 1);
        assert_eq!(runs(&s.reads), 3);
        user_count(1);
        user_count(2);
        assert_eq!(runs(&COUNT_RUNS), 4, "user_count(..) dropped every entry");
    });
}
