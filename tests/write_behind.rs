//! `#[write_behind]` on the embedded default (in-process queue): the queued value is read at
//! once (also after the entry is evicted), writes of a key coalesce, failures are retried then
//! dead-lettered and replayed, `flush_writes` drains everything, sync fns too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;

use cache_core::write_behind::{dead_letters, replay};
use cache_core::{cached, write_behind};

/// The data store: id -> value, and how many writes reached it.
static STORE: Mutex<Option<HashMap<u64, u64>>> = Mutex::new(None);
static STORE_WRITES: AtomicU32 = AtomicU32::new(0);
/// Tests share the process's queue and flusher: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn stored(id: u64) -> Option<u64> {
    STORE
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|m| m.get(&id).copied())
}

fn store(id: u64, v: u64) {
    STORE_WRITES.fetch_add(1, Ordering::SeqCst);
    STORE
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert(id, v);
}

#[cached(ttl = "10m")]
async fn get_counter(id: u64) -> Result<u64, String> {
    Ok(stored(id).unwrap_or(0))
}

/// Flushed only by `flush_writes` (an hour's window).
#[write_behind(get_counter(id), value = count, flush_after = "1h")]
async fn save_counter(id: u64, count: u64) -> Result<(), String> {
    store(id, count);
    Ok(())
}

/// Every write runs (no coalescing).
#[write_behind(get_counter(id), value = count, flush_after = "1h", coalesce = false)]
async fn save_every(id: u64, count: u64) -> Result<(), String> {
    store(id, count);
    Ok(())
}

static FAILING: AtomicBool = AtomicBool::new(true);
static FAILING_RUNS: AtomicU32 = AtomicU32::new(0);

#[write_behind(get_counter(id), value = count, flush_after = "1h", max_attempts = 3)]
async fn save_flaky(id: u64, count: u64) -> Result<(), String> {
    FAILING_RUNS.fetch_add(1, Ordering::SeqCst);
    if FAILING.load(Ordering::SeqCst) {
        return Err("the data store is down".into());
    }
    store(id, count);
    Ok(())
}

/// Flushed by the background flusher within 50 ms.
#[write_behind(get_counter(id), value = count, flush_after = "50ms")]
async fn save_soon(id: u64, count: u64) -> Result<(), String> {
    store(id, count);
    Ok(())
}

#[cached(ttl = "10m")]
fn get_label(id: u64) -> String {
    format!("label-{}", stored(id).unwrap_or(0))
}

static LABELS: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());

#[write_behind(get_label(id), value = label, flush_after = "1h")]
fn save_label(id: u64, label: String) {
    LABELS.lock().unwrap().push((id, label));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queued_value_is_read_at_once_and_after_eviction() {
    let _g = SERIAL.lock().await;
    assert_eq!(save_counter(1, 5).await, Ok(()));
    // the write waits: the store has nothing, the cache has the value
    assert_eq!(stored(1), None);
    assert_eq!(get_counter(1).await, Ok(5));
    // the entry is gone (evicted, expired): a miss reads the queued value, not the store
    get_counter_invalidate(1).await.unwrap();
    assert_eq!(get_counter(1).await, Ok(5));
    assert_eq!(stored(1), None);
    cache_core::flush_writes().await;
    assert_eq!(stored(1), Some(5));
    // flushed: a miss runs the body again, which reads the store
    get_counter_invalidate(1).await.unwrap();
    assert_eq!(get_counter(1).await, Ok(5));
    assert_eq!(write_behind::stats().await.pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_of_one_key_coalesce_into_one_body_run() {
    let _g = SERIAL.lock().await;
    let before = STORE_WRITES.load(Ordering::SeqCst);
    for v in 1..=10 {
        save_counter(2, v).await.unwrap();
    }
    for v in 1..=10 {
        save_counter(3, 100 + v).await.unwrap();
    }
    assert_eq!(get_counter(2).await, Ok(10));
    cache_core::flush_writes().await;
    assert_eq!(
        STORE_WRITES.load(Ordering::SeqCst) - before,
        2,
        "one body run per key"
    );
    assert_eq!((stored(2), stored(3)), (Some(10), Some(110)));

    // without coalescing every write runs, in order
    let before = STORE_WRITES.load(Ordering::SeqCst);
    for v in 1..=5 {
        save_every(4, v).await.unwrap();
    }
    cache_core::flush_writes().await;
    assert_eq!(STORE_WRITES.load(Ordering::SeqCst) - before, 5);
    assert_eq!(stored(4), Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_body_is_retried_then_dead_lettered_and_replayed() {
    let _g = SERIAL.lock().await;
    FAILING.store(true, Ordering::SeqCst);
    FAILING_RUNS.store(0, Ordering::SeqCst);
    let dead_before = write_behind::stats().await.dead_lettered;
    save_flaky(7, 70).await.unwrap();
    assert_eq!(get_counter(7).await, Ok(70));
    cache_core::flush_writes().await;
    assert_eq!(FAILING_RUNS.load(Ordering::SeqCst), 3, "max_attempts runs");
    let stats = write_behind::stats().await;
    assert_eq!(stats.dead_lettered - dead_before, 1);
    assert_eq!(stats.pending, 0);
    let letters: Vec<_> = dead_letters()
        .await
        .into_iter()
        .filter(|d| d.write.writer.ends_with("::save_flaky"))
        .collect();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].error, "\"the data store is down\"");
    assert_eq!(letters[0].write.attempts, 3);
    // dead-lettered: the entry was invalidated, readers see the store again
    assert_eq!(get_counter(7).await, Ok(0));
    assert_eq!(stored(7), None);

    // the store is back: replay
    FAILING.store(false, Ordering::SeqCst);
    assert!(replay(&letters[0]).await.unwrap());
    cache_core::flush_writes().await;
    assert_eq!(stored(7), Some(70));
    assert!(dead_letters()
        .await
        .iter()
        .all(|d| !d.write.writer.ends_with("::save_flaky")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_writes_drains_everything_and_the_flusher_runs_by_itself() {
    let _g = SERIAL.lock().await;
    for id in 100..200 {
        save_counter(id, id * 2).await.unwrap();
    }
    assert!(write_behind::stats().await.pending >= 100);
    cache_core::flush_writes().await;
    for id in 100..200 {
        assert_eq!(stored(id), Some(id * 2));
    }
    assert_eq!(write_behind::stats().await.pending, 0);

    // flush_after = 50ms: the background flusher writes it without being asked
    save_soon(300, 3).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while stored(300).is_none() {
        assert!(std::time::Instant::now() < deadline, "not flushed in 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[test]
fn sync_fns_queue_and_flush_too() {
    let _g = SERIAL.blocking_lock();
    save_label(9, "nine".to_string());
    assert_eq!(get_label(9), "nine");
    assert!(LABELS.lock().unwrap().is_empty());
    cache_core::flush_writes_blocking();
    assert_eq!(*LABELS.lock().unwrap(), vec![(9, "nine".to_string())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_caching_switched_off_the_write_runs_inline() {
    let _g = SERIAL.lock().await;
    cache_core::registry::set_enabled(false);
    let before = STORE_WRITES.load(Ordering::SeqCst);
    save_counter(50, 5).await.unwrap();
    cache_core::registry::set_enabled(true);
    assert_eq!(STORE_WRITES.load(Ordering::SeqCst) - before, 1);
    assert_eq!(stored(50), Some(5));
}
