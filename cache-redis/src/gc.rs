//! The dependency garbage collector.
//!
//! Entries expire (or are evicted) inside Redis, which leaves their names in the reverse-index
//! sets of their dependencies and leaves their dependency lists behind. Two mechanisms remove
//! them, both idempotent scripts that re-check existence atomically (an entry stored again in
//! the meantime is left alone), so any number of backend instances can run them at once:
//!
//! * **Notifications**: a task subscribes to `__keyevent@DB__:expired` and `...:evicted`
//!   (turning them on with `CONFIG SET notify-keyspace-events` when allowed, else logging how
//!   to) and cleans each entry as it goes.
//! * **Sweep**: every `sweep_interval`, the instance holding the `P:gc:lock` lease scans one
//!   bounded batch (`SCAN COUNT batch`) from the shared cursor `P:gc:cursor` and repairs what
//!   notifications missed (they are not delivered while disconnected). Instances take turns by
//!   the lock; the shared cursor means a new leader continues where the last one stopped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};

use redis::RedisResult;

use crate::client::RedisClient;
use crate::error::RedisCacheError;
use crate::keys::Layout;
use crate::scripts;
use crate::stats::Counters;

/// What the collector works with: the client, the key layout, the counters it adds to.
pub(crate) struct Gc {
    client: Arc<RedisClient>,
    layout: Layout,
    counters: Arc<Counters>,
    /// This instance's id (the sweep lease's token).
    instance: String,
    subscribed: AtomicBool,
    warned: AtomicBool,
}

impl Gc {
    pub(crate) fn new(
        client: Arc<RedisClient>,
        layout: Layout,
        counters: Arc<Counters>,
        instance: String,
    ) -> Arc<Self> {
        Arc::new(Gc {
            client,
            layout,
            counters,
            instance,
            subscribed: AtomicBool::new(false),
            warned: AtomicBool::new(false),
        })
    }

    /// Whether the keyspace-notification subscription is up.
    pub(crate) fn subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed)
    }

    async fn run<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, RedisCacheError>
    where
        F: FnOnce(crate::client::Connection) -> Fut,
        Fut: std::future::Future<Output = RedisResult<T>>,
    {
        self.client.run(op, f).await
    }
}

/// Starts the notification listener and the periodic sweep (they end with the client).
pub(crate) fn start(gc: &Arc<Gc>, notifications: bool, interval: Duration, batch: usize) {
    let weak = Arc::downgrade(gc);
    gc.client.spawn(listen(weak.clone(), notifications));
    gc.client.spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            let Some(inner) = weak.upgrade() else { return };
            if let Err(e) = sweep_tick(&inner, interval, batch).await {
                tracing::debug!(error = %e, "dependency sweep skipped");
            }
        }
    });
}

/// Makes sure the server publishes expired and evicted key events.
async fn enable_notifications(inner: &Gc) {
    let current: Result<Vec<String>, _> = inner
        .run("config", |mut con| async move {
            redis::cmd("CONFIG")
                .arg("GET")
                .arg("notify-keyspace-events")
                .query_async(&mut con)
                .await
        })
        .await;
    let flags = match current {
        Ok(v) => v.get(1).cloned().unwrap_or_default(),
        Err(e) => return warn_how(inner, &e.to_string()),
    };
    let all = flags.contains('A');
    let mut wanted = flags.clone();
    for f in ['E', 'x', 'e'] {
        let covered = wanted.contains(f) || (all && f != 'E');
        if !covered {
            wanted.push(f);
        }
    }
    if wanted == flags {
        return;
    }
    let set: Result<(), _> = inner
        .run("config", |mut con| {
            let wanted = wanted.clone();
            async move {
                redis::cmd("CONFIG")
                    .arg("SET")
                    .arg("notify-keyspace-events")
                    .arg(wanted)
                    .query_async(&mut con)
                    .await
            }
        })
        .await;
    match set {
        Ok(()) => {
            tracing::info!(flags = %wanted, "enabled Redis keyspace notifications for the dependency GC")
        }
        Err(e) => warn_how(inner, &e.to_string()),
    }
}

fn warn_how(inner: &Gc, why: &str) {
    if !inner.warned.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            error = why,
            "cannot turn on Redis keyspace notifications; run `CONFIG SET notify-keyspace-events Exe` \
             (or set `notify-keyspace-events Exe` in redis.conf / your provider's parameter group). \
             Until then only the periodic sweep cleans dependency sets of expired entries"
        );
    }
}

async fn listen(weak: Weak<Gc>, notifications: bool) {
    let mut delay = Duration::from_millis(50);
    loop {
        let (client, db) = {
            let Some(inner) = weak.upgrade() else { return };
            if !inner.client.connected_within(Duration::from_secs(1)).await {
                continue;
            }
            if notifications {
                enable_notifications(&inner).await;
            }
            (inner.client.redis().clone(), inner.client.db())
        };
        let channels = [
            format!("__keyevent@{db}__:expired"),
            format!("__keyevent@{db}__:evicted"),
        ];
        let pubsub = async {
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(&channels[..]).await?;
            Ok::<_, redis::RedisError>(ps)
        };
        let ps = match pubsub.await {
            Ok(ps) => ps,
            Err(e) => {
                tracing::debug!(error = %e, "GC subscription failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        delay = Duration::from_millis(50);
        if let Some(inner) = weak.upgrade() {
            inner.subscribed.store(true, Ordering::Relaxed);
        }
        let mut stream = ps.into_on_message();
        while let Some(first) = stream.next().await {
            let Some(inner) = weak.upgrade() else { return };
            let take = |msg: redis::Msg| -> Option<String> {
                let key = msg.get_payload::<String>().ok()?;
                inner.layout.entry_text(&key).map(str::to_string)
            };
            let mut texts: Vec<String> = take(first).into_iter().collect();
            while texts.len() < 256 {
                match stream.next().now_or_never() {
                    Some(Some(msg)) => texts.extend(take(msg)),
                    _ => break,
                }
            }
            if !texts.is_empty() {
                inner.counters.expirations.add(texts.len() as u64);
                match collect(&inner, &texts).await {
                    Ok(n) => inner.counters.gc_removed.add(n),
                    Err(e) => {
                        tracing::debug!(error = %e, "GC of expired entries failed; the sweep will repair")
                    }
                }
            }
        }
        if let Some(inner) = weak.upgrade() {
            inner.subscribed.store(false, Ordering::Relaxed);
        }
        tracing::debug!("GC subscription lost; resubscribing");
    }
}

async fn collect(inner: &Gc, texts: &[String]) -> Result<u64, RedisCacheError> {
    inner
        .run("gc", |mut con| {
            let mut inv = scripts::gc().prepare_invoke();
            inv.arg(&inner.layout.prefix);
            for t in texts {
                inv.arg(t);
            }
            async move { inv.invoke_async(&mut con).await }
        })
        .await
}

/// One sweep step if this instance holds (or takes) the sweep lease.
async fn sweep_tick(inner: &Gc, interval: Duration, batch: usize) -> Result<u64, RedisCacheError> {
    let lock = inner.layout.gc_lock();
    let px = (interval.as_millis() as u64).saturating_mul(3).max(1000);
    let me = inner.instance.clone();
    let leader: bool = inner
        .run("sweep", |mut con| async move {
            let took: Option<String> = redis::cmd("SET")
                .arg(&lock)
                .arg(&me)
                .arg("NX")
                .arg("PX")
                .arg(px)
                .query_async(&mut con)
                .await?;
            if took.is_some() {
                return Ok(true);
            }
            let holder: Option<String> = redis::cmd("GET").arg(&lock).query_async(&mut con).await?;
            if holder.as_deref() == Some(me.as_str()) {
                redis::cmd("PEXPIRE")
                    .arg(&lock)
                    .arg(px)
                    .query_async::<()>(&mut con)
                    .await?;
                return Ok(true);
            }
            Ok(false)
        })
        .await?;
    if !leader {
        return Ok(0);
    }
    let cursor_key = inner.layout.gc_cursor();
    let cursor: Option<u64> = inner
        .run("sweep", |mut con| {
            let k = cursor_key.clone();
            async move { redis::cmd("GET").arg(k).query_async(&mut con).await }
        })
        .await?;
    let (next, removed) = sweep_batch(inner, cursor.unwrap_or(0), batch).await?;
    inner
        .run("sweep", |mut con| async move {
            redis::cmd("SET")
                .arg(&cursor_key)
                .arg(next)
                .query_async::<()>(&mut con)
                .await
        })
        .await?;
    Ok(removed)
}

/// Scans one batch from `cursor`; returns the next cursor and the references removed.
async fn sweep_batch(inner: &Gc, cursor: u64, batch: usize) -> Result<(u64, u64), RedisCacheError> {
    let pattern = format!("{}:*", inner.layout.prefix);
    let (next, keys): (u64, Vec<String>) = inner
        .run("sweep", |mut con| async move {
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(batch)
                .query_async(&mut con)
                .await
        })
        .await?;
    let mut sets = Vec::new();
    let mut lists = Vec::new();
    for k in &keys {
        if let Some(d) = inner.layout.dep_set_name(k) {
            sets.push(d);
        } else if let Some(t) = inner.layout.deps_list_text(k) {
            lists.push(t);
        }
    }
    inner.counters.sweeps.incr();
    if sets.is_empty() && lists.is_empty() {
        return Ok((next, 0));
    }
    let removed: u64 = inner
        .run("sweep", |mut con| {
            let mut inv = scripts::sweep().prepare_invoke();
            inv.arg(&inner.layout.prefix).arg(sets.len());
            for d in &sets {
                inv.arg(*d);
            }
            for t in &lists {
                inv.arg(*t);
            }
            async move { inv.invoke_async(&mut con).await }
        })
        .await?;
    inner.counters.gc_removed.add(removed);
    Ok((next, removed))
}

/// A whole pass over the keyspace (own cursor, no lease): for `sweep_now`.
pub(crate) async fn full_sweep(inner: &Gc, batch: usize) -> Result<u64, RedisCacheError> {
    let mut cursor = 0;
    let mut total = 0;
    loop {
        let (next, removed) = sweep_batch(inner, cursor, batch).await?;
        total += removed;
        if next == 0 {
            return Ok(total);
        }
        cursor = next;
    }
}
