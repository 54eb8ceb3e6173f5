//! The Redis backend under cache-core's runtime (`__private::FnCache`, what `#[cached]`
//! expands to): async and sync cached fns, value kinds, two nodes, invalidation, fail-open.

#[path = "redis_common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cache_core::__private::{Begin, CallInfo, FnCache, FnMeta, Mode};
use cache_core::{registry, Backend, Cacheable};
use serde::{Deserialize, Serialize};

const fn meta(name: &'static str) -> FnMeta {
    FnMeta {
        module: "redis_runtime",
        name,
        version: 0,
        ttl: None,
        sliding: None,
        jitter: None,
        profile: None,
        cache_none: true,
        lock: true,
        custom_key: false,
        resilience: cache_core::runtime::Resilience::NONE,
        weight: None,
        local: false,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Row {
    id: u64,
    name: String,
    scores: Vec<f32>,
}

static GENERIC: FnCache = FnCache::new(meta("generic"));
static RUNS: AtomicUsize = AtomicUsize::new(0);
static DEAD_RUNS: AtomicUsize = AtomicUsize::new(0);

/// An async cached fn returning `value` for `id`, depending on `dep:{id}`.
async fn cached<T: Cacheable>(runs: &'static AtomicUsize, id: u64, value: T) -> T {
    let dep = format!("dep:{id}");
    let type_name = std::any::type_name::<T>();
    match GENERIC
        .begin_async::<_, T>(
            &(&id, &type_name),
            CallInfo::default(),
            &mut |d| d.push(dep.clone()),
            Mode::Normal,
        )
        .await
    {
        Begin::Hit(v) => v,
        Begin::Fill(f) => {
            f.fill_async(
                async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    value
                },
                |r| Some(r.clone()),
            )
            .await
        }
    }
}

static SYNC_FN: FnCache = FnCache::new(meta("sync_fn"));
static SYNC_RUNS: AtomicUsize = AtomicUsize::new(0);

fn sync_fn(x: u64) -> u64 {
    match SYNC_FN.begin_blocking::<_, u64>(&(&x,), CallInfo::default(), &mut |_| {}, Mode::Normal) {
        Begin::Hit(v) => v,
        Begin::Fill(f) => f.fill_blocking(
            || {
                SYNC_RUNS.fetch_add(1, Ordering::SeqCst);
                x + 1
            },
            |r| Some(*r),
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_fns_on_two_nodes() {
    let Some(server) = common::server() else {
        return;
    };
    let a: Arc<dyn Backend> = Arc::new(common::connect(&server));
    let b: Arc<dyn Backend> = Arc::new(common::connect(&server));
    let row = Row {
        id: 1,
        name: "Ann".into(),
        scores: vec![1.5, 2.0],
    };
    macro_rules! both {
        ($id:expr, $v:expr) => {{
            let runs = RUNS.load(Ordering::SeqCst);
            let v = $v;
            assert_eq!(
                registry::with_backend(a.clone(), cached(&RUNS, $id, v.clone())).await,
                v
            );
            assert_eq!(RUNS.load(Ordering::SeqCst), runs + 1, "first call computes");
            // node B: a hit (same Redis), no computation
            assert_eq!(
                registry::with_backend(b.clone(), cached(&RUNS, $id, v.clone())).await,
                v
            );
            assert_eq!(
                RUNS.load(Ordering::SeqCst),
                runs + 1,
                "second call is a hit"
            );
        }};
    }
    both!(1, row.clone());
    both!(2, "text".to_string());
    both!(3, Some(5u8));
    both!(4, None::<u8>);
    both!(5, vec![(1u8, 'x')]);
    both!(6, ());
    both!(7, 3.25f64);
    both!(8, Ok::<i32, String>(-1));

    // an invalidation on B is seen by A
    b.invalidate("dep:1").await.unwrap();
    let runs = RUNS.load(Ordering::SeqCst);
    let other = Row {
        name: "Ann2".into(),
        ..row
    };
    assert_eq!(
        registry::with_backend(a.clone(), cached(&RUNS, 1, other.clone())).await,
        other
    );
    assert_eq!(RUNS.load(Ordering::SeqCst), runs + 1);
}

#[test]
fn sync_cached_fn_inside_and_outside_a_runtime() {
    let Some(server) = common::server() else {
        return;
    };
    let backend: Arc<dyn Backend> = Arc::new(common::connect(&server));
    registry::with_backend_blocking(backend.clone(), || {
        assert_eq!(sync_fn(1), 2);
        assert_eq!(sync_fn(1), 2);
    });
    assert_eq!(SYNC_RUNS.load(Ordering::SeqCst), 1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // a sync fn called from async code on a current-thread runtime: no deadlock
        registry::with_backend(backend.clone(), async {
            assert_eq!(sync_fn(1), 2);
            assert_eq!(sync_fn(2), 3);
        })
        .await;
    });
    assert_eq!(SYNC_RUNS.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_means_the_fn_runs() {
    let Some(mut server) = common::server() else {
        return;
    };
    let backend: Arc<dyn Backend> = Arc::new(common::connect(&server));
    server.kill();
    for _ in 0..3 {
        let v = registry::with_backend(backend.clone(), cached(&DEAD_RUNS, 100, 7u32)).await;
        assert_eq!(v, 7);
    }
    assert_eq!(
        DEAD_RUNS.load(Ordering::SeqCst),
        3,
        "computed each time, never failed"
    );
}
