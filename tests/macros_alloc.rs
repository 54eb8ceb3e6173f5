//! A memory hit through the code `#[cached]` generates allocates nothing: free fns, methods
//! (type name in the key), generic fns, sync and async. Counted by a global allocator, per thread.

use std::sync::Arc;

use cache_core::{cached, registry, MemoryBackend};
use test_support::alloc::{allocations, allocations_in, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[cached]
fn lookup(id: u64, name: &str, tags: &[u32]) -> u64 {
    id + name.len() as u64 + tags.len() as u64
}

struct Repo;

impl Repo {
    #[cached(ttl = "1h")]
    fn find(&self, id: u32) -> Option<u32> {
        Some(id)
    }
}

#[cached]
fn typed<
    T: Default + Clone + serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
>(
    n: u8,
) -> Option<T> {
    (n > 0).then(T::default)
}

#[cached]
async fn fetch(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[test]
fn sync_hits_do_not_allocate() {
    registry::with_backend_blocking(Arc::new(MemoryBackend::new()), || {
        let tags = [1, 2, 3];
        assert_eq!(lookup(1, "ab", &tags), 6); // miss: fills
        assert_eq!(Repo.find(7), Some(7));
        assert_eq!(typed::<u64>(1), Some(0));
        let n = allocations_in(|| {
            for _ in 0..1000 {
                assert_eq!(lookup(1, "ab", &tags), 6);
                assert_eq!(Repo.find(7), Some(7));
                assert_eq!(typed::<u64>(1), Some(0));
            }
        });
        assert_eq!(n, 0, "allocations on 3000 memory hits");
    });
}

#[test]
fn async_hits_do_not_allocate() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(registry::with_backend(
        Arc::new(MemoryBackend::new()),
        async {
            assert_eq!(fetch(3).await, Ok(3));
            let before = allocations();
            for _ in 0..1000 {
                assert_eq!(fetch(3).await, Ok(3));
            }
            let n = allocations() - before;
            assert_eq!(n, 0, "allocations on 1000 memory hits");
        },
    ));
}
