//! `#[cached]` on methods (inherent and trait impls), generic fns, lifetimes and where clauses,
//! `impl Trait` and pattern parameters, counting how often each body ran.

use std::fmt::Display;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cache_core::{cached, registry, KeyPart, MemoryBackend};

fn mem() -> Arc<MemoryBackend> {
    Arc::new(MemoryBackend::new())
}

fn runs(c: &AtomicUsize) -> usize {
    c.load(Ordering::SeqCst)
}

// ---------- inherent methods ----------

struct Repo {
    prefix: String,
    runs: AtomicUsize,
}

#[derive(KeyPart)]
struct Tenant {
    id: u32,
}

impl Tenant {
    /// Cached per tenant: the receiver is part of the key.
    #[cached(include_self)]
    fn label(&self, n: u32) -> String {
        format!("t{}-{n}", self.id)
    }

    /// Method-call syntax reaches the companion through the receiver (`self.label_entry(n)`).
    #[cache_core::invalidates(self.label(n))]
    fn relabel(&self, n: u32) {}
}

impl Repo {
    #[cached]
    fn name(&self, id: u64) -> String {
        self.runs.fetch_add(1, Ordering::SeqCst);
        format!("{}{id}", self.prefix)
    }

    #[cached(ttl = "1m", depends_on = ["user:{id}"])]
    pub async fn load(&self, id: u64) -> Result<String, String> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        Ok(format!("{}{id}", self.prefix))
    }

    /// An associated fn without receiver, but with `Self` in its signature.
    #[cached]
    fn make(n: u8) -> Option<Self> {
        let _ = n;
        None
    }
}

// `Repo` is not Clone/Serialize: `make` caches `Option<Self>`... so give it a cacheable value
impl Clone for Repo {
    fn clone(&self) -> Self {
        Repo {
            prefix: self.prefix.clone(),
            runs: AtomicUsize::new(0),
        }
    }
}
impl serde::Serialize for Repo {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.prefix)
    }
}
impl<'de> serde::Deserialize<'de> for Repo {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Repo {
            prefix: String::deserialize(d)?,
            runs: AtomicUsize::new(0),
        })
    }
}

#[test]
fn inherent_methods_key_on_the_type_not_the_receiver() {
    registry::with_backend_blocking(mem(), || {
        let a = Repo {
            prefix: "a".into(),
            runs: AtomicUsize::new(0),
        };
        let b = Repo {
            prefix: "b".into(),
            runs: AtomicUsize::new(0),
        };
        assert_eq!(a.name(1), "a1");
        assert_eq!(b.name(1), "a1", "the receiver is not in the key");
        assert_eq!(runs(&a.runs) + runs(&b.runs), 1);
        assert_eq!(
            Repo::name_entry(1).key().text(),
            "macros_methods::Repo::name(1)"
        );
        Repo::name_invalidate(1).unwrap();
        assert_eq!(b.name(1), "b1");
        assert!(Repo::make(1).is_none());
    });
}

#[test]
fn include_self_puts_the_receiver_in_the_key() {
    registry::with_backend_blocking(mem(), || {
        let (t1, t2) = (Tenant { id: 1 }, Tenant { id: 2 });
        assert_eq!(t1.label(5), "t1-5");
        assert_eq!(t2.label(5), "t2-5");
        assert_eq!(
            t1.label_entry(5).key().text(),
            "macros_methods::Tenant::label(Tenant{id:1},5)"
        );
        t1.label_invalidate(5).unwrap();
        assert_eq!(t1.label_entry(5).get_blocking(), None);
        assert_eq!(t2.label_entry(5).get_blocking().as_deref(), Some("t2-5"));
        t2.relabel(5);
        assert_eq!(t2.label_entry(5).get_blocking(), None);
    });
}

#[tokio::test]
async fn async_methods_and_their_companions() {
    registry::with_backend(mem(), async {
        let r = Repo {
            prefix: "u".into(),
            runs: AtomicUsize::new(0),
        };
        assert_eq!(r.load(7).await.unwrap(), "u7");
        assert_eq!(r.load(7).await.unwrap(), "u7");
        assert_eq!(runs(&r.runs), 1);
        cache_core::invalidate_dependency("user:7").await.unwrap();
        assert_eq!(r.load(7).await.unwrap(), "u7");
        assert_eq!(runs(&r.runs), 2);
        assert_eq!(r.load_refresh(7).await.unwrap(), "u7");
        assert_eq!(runs(&r.runs), 3);
        assert_eq!(r.load_uncached(7).await.unwrap(), "u7");
        assert_eq!(runs(&r.runs), 4);
        Repo::load_invalidate_all().await.unwrap();
        assert_eq!(r.load(7).await.unwrap(), "u7");
        assert_eq!(runs(&r.runs), 5);
    })
    .await;
}

// ---------- trait impls ----------

trait Source {
    fn fetch(&self, id: u32) -> Vec<u32>;
    fn fetch_async(&self, id: u32)
        -> impl std::future::Future<Output = Result<u32, String>> + Send;
}

struct Remote {
    runs: AtomicUsize,
}

impl Source for Remote {
    #[cached(companions = false, depends_on = ["remote:{id}"])]
    fn fetch(&self, id: u32) -> Vec<u32> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        vec![id; 3]
    }

    #[cached(companions = false)]
    async fn fetch_async(&self, id: u32) -> Result<u32, String> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        Ok(id + 1)
    }
}

#[tokio::test]
async fn trait_impl_methods_cache_without_companions() {
    registry::with_backend(mem(), async {
        let r = Remote {
            runs: AtomicUsize::new(0),
        };
        assert_eq!(r.fetch(2), vec![2, 2, 2]);
        assert_eq!(r.fetch(2), vec![2, 2, 2]);
        assert_eq!(runs(&r.runs), 1);
        cache_core::invalidate_dependency("remote:2").await.unwrap();
        r.fetch(2);
        assert_eq!(runs(&r.runs), 2);
        assert_eq!(r.fetch_async(1).await, Ok(2));
        assert_eq!(r.fetch_async(1).await, Ok(2));
        assert_eq!(runs(&r.runs), 3);
    })
    .await;
}

// ---------- generics, lifetimes, where clauses ----------

static GENERIC_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached]
#[allow(clippy::needless_lifetimes)]
fn describe<'a, T>(value: &'a T, times: usize) -> String
where
    T: Display + KeyPart + ?Sized,
{
    GENERIC_RUNS.fetch_add(1, Ordering::SeqCst);
    value.to_string().repeat(times)
}

static DEFAULT_RUNS: AtomicUsize = AtomicUsize::new(0);

/// The type argument appears only in the return type: it is still part of the key.
#[cached]
fn default_of<
    T: Default + Clone + serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
>() -> T {
    DEFAULT_RUNS.fetch_add(1, Ordering::SeqCst);
    T::default()
}

#[test]
fn generic_fns_have_type_names_in_the_key() {
    registry::with_backend_blocking(mem(), || {
        assert_eq!(describe(&7u32, 2), "77");
        assert_eq!(describe(&7u64, 2), "77");
        assert_eq!(describe(&7u32, 2), "77");
        assert_eq!(runs(&GENERIC_RUNS), 2, "u32 and u64 are two keys");
        assert_eq!(
            describe_entry::<u32>(&7, 2).key().text(),
            "macros_methods::describe::<u32>(7,2)"
        );
        assert_eq!(describe("ab", 2), "abab");
        assert_eq!(default_of::<u8>(), 0);
        assert_eq!(default_of::<String>(), "");
        assert_eq!(default_of::<u8>(), 0);
        assert_eq!(runs(&DEFAULT_RUNS), 2);
        default_of_invalidate::<u8>().unwrap();
        assert_eq!(default_of::<u8>(), 0);
        assert_eq!(runs(&DEFAULT_RUNS), 3);
    });
}

// ---------- impl Trait and pattern parameters ----------

static IMPL_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(skip(log))]
fn with_impl(log: impl Fn(&str), (w, h): (u32, u32), _: &str, mut extra: u32) -> u32 {
    IMPL_RUNS.fetch_add(1, Ordering::SeqCst);
    log("computing");
    extra += 1;
    w * h + extra
}

#[cached(skip(first))]
async fn skipped_pattern((first, _second): (String, u8), n: u8) -> String {
    format!("{first}{n}")
}

#[tokio::test]
async fn impl_trait_and_pattern_parameters() {
    registry::with_backend(mem(), async {
        assert_eq!(with_impl(|_| {}, (2, 3), "x", 0), 7);
        assert_eq!(
            with_impl(|_| {}, (2, 3), "y", 0),
            7,
            "`_` is never in the key"
        );
        assert_eq!(with_impl(|_| {}, (3, 2), "x", 0), 7);
        assert_eq!(runs(&IMPL_RUNS), 2, "the pattern argument is in the key");
        assert_eq!(
            with_impl_entry((2, 3), 0).key().text(),
            "macros_methods::with_impl((2,3),0)"
        );
        assert_eq!(skipped_pattern(("a".into(), 1), 1).await, "a1");
        assert_eq!(skipped_pattern(("b".into(), 2), 1).await, "a1");
        assert_eq!(
            skipped_pattern_entry(1).key().text(),
            "macros_methods::skipped_pattern(1)"
        );
    })
    .await;
}

// ---------- const generics, unsafe fns ----------

static CONST_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached]
fn repeat<const N: usize>(c: char) -> String {
    CONST_RUNS.fetch_add(1, Ordering::SeqCst);
    c.to_string().repeat(N)
}

/// # Safety
/// None needed; shows that `unsafe fn` keeps its contract.
#[cached]
unsafe fn trusted(id: u32) -> u32 {
    id * 2
}

#[test]
fn const_generic_values_are_in_the_key() {
    registry::with_backend_blocking(mem(), || {
        assert_eq!(repeat::<2>('a'), "aa");
        assert_eq!(repeat::<3>('a'), "aaa");
        assert_eq!(repeat::<2>('a'), "aa");
        assert_eq!(runs(&CONST_RUNS), 2);
        assert_eq!(
            repeat_entry::<3>('a').key().text(),
            "macros_methods::repeat(3,'a')"
        );
        // SAFETY: `trusted` has no precondition
        assert_eq!(unsafe { trusted(4) }, 8);
        assert_eq!(trusted_entry(4).get_blocking(), Some(8));
    });
}
