//! The durable write-behind queue ([`cache_core::write_behind::WriteQueue`]) on Redis Streams.
//!
//! Per writer `W` (a `#[write_behind]` fn's path) and prefix `P`, every key has the hash tag
//! `{W}` (one Cluster slot per writer):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:wb:{W}` | stream | queued writes: `k` target key, `s` sequence, `n` failures, `b` not-before (unix ms), `a` arguments, `q` first queued (unix ms) |
//! | `P:wb:{W}:latest` | hash | target key → newest sequence queued |
//! | `P:wb:{W}:done` | hash | target key → newest sequence written |
//! | `P:wb:{W}:pending` | hash | target key → `<seq>:<value>` (read-your-writes) |
//! | `P:wb:{W}:lock:<K>` | string | the write running a body of key `K` (token; PX `claim_after`, at least 1 s, renewed every third of it while the body runs) |
//! | `P:wb:{W}:dead` | stream | dead letters (as the stream, plus `e` the last error) |
//! | `P:wb:{W}:deadkeys` | hash | target key → dead letters of it |
//! | `P:wb:{W}:queued` | hash | target key → its writes in the stream (its sequence fields are dropped only when none is left) |
//!
//! Flushers of every process read the stream in one consumer group (`flushers`), each as its own
//! consumer: `XREADGROUP` for new writes, `XAUTOCLAIM` for writes another consumer took and did
//! not acknowledge within `claim_after` (it crashed). A write is acknowledged and deleted
//! (`XACK` + `XDEL`) only after its body returned `Ok`, was superseded, was dead-lettered or
//! was appended again for a retry, so a write acknowledged to its caller survives any process.
//! The stream keys have no TTL: under a `volatile-*` or `noeviction` policy Redis never evicts
//! them (an `allkeys-*` policy can, and loses queued writes).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cache_core::backend::BoxFuture;
use cache_core::write_behind::{DeadLetter, Depth, Finish, QueuedWrite, Start, WriteQueue};
use cache_core::CacheError;
use parking_lot::Mutex;
use redis::Value;

use crate::client::RedisClient;
use crate::error::RedisCacheError;
use crate::keys::{Layout, WriteKeys};
use crate::scripts;

const GROUP: &str = "flushers";
/// The shortest key lock (the lock lasts `claim_after`, at least this; a running body renews it
/// every third of that).
const MIN_LOCK_PX: u64 = 1_000;

/// Settings of the Redis write queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueOptions {
    /// Writes another flusher claimed and did not finish within this long are taken over.
    pub(crate) claim_after: Duration,
    /// Writes waiting per writer before new ones run inline.
    pub(crate) capacity: u64,
}

/// The Redis Streams write queue of one backend.
pub(crate) struct RedisWriteQueue {
    client: Arc<RedisClient>,
    layout: Layout,
    consumer: String,
    options: QueueOptions,
    /// Writes claimed but not yet due (their `flush_after` or backoff has not passed), per
    /// writer, by stream id, with their not-before time.
    held: Mutex<HashMap<String, Held>>,
    /// The server's time at the last claim (unix ms): where a busy write's pause starts.
    server_ms: std::sync::atomic::AtomicU64,
    /// Writers whose consumer group exists.
    groups: Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for RedisWriteQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisWriteQueue")
            .field("prefix", &self.layout.prefix)
            .field("consumer", &self.consumer)
            .finish()
    }
}

/// Claimed writes of one writer not yet due: stream id → (write, not-before unix ms).
type Held = HashMap<String, (QueuedWrite, u64)>;

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.as_bytes().to_vec()),
        _ => None,
    }
}

/// The unix ms a stream id was made at.
fn id_ms(id: &str) -> u64 {
    id.split('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// One stream entry (`[id, [field, value, ...]]`) as a write of `writer`, with its not-before
/// time and its last error (dead letters).
fn parse_entry(writer: &str, v: &Value) -> Option<(QueuedWrite, u64, String)> {
    let Value::Array(parts) = v else { return None };
    let id = text(parts.first()?)?;
    let Value::Array(fields) = parts.get(1)? else {
        return None;
    };
    let mut w = QueuedWrite {
        id: id.clone(),
        writer: writer.to_string(),
        key: String::new(),
        seq: 0,
        attempts: 0,
        args: Vec::new(),
        queued_at_ms: id_ms(&id),
    };
    let mut not_before = 0;
    let mut error = String::new();
    for pair in fields.chunks(2) {
        let [name, value] = pair else { continue };
        match text(name)?.as_str() {
            "k" => w.key = text(value)?,
            "s" => w.seq = text(value)?.parse().ok()?,
            "n" => w.attempts = text(value)?.parse().ok()?,
            "b" => not_before = text(value)?.parse().ok()?,
            "a" => w.args = bytes(value)?,
            "q" => {
                let q: u64 = text(value)?.parse().ok()?;
                if q > 0 {
                    w.queued_at_ms = q;
                }
            }
            "e" => error = text(value)?,
            _ => {}
        }
    }
    Some((w, not_before, error))
}

impl RedisWriteQueue {
    pub(crate) fn new(
        client: Arc<RedisClient>,
        layout: Layout,
        consumer: String,
        options: QueueOptions,
    ) -> Self {
        RedisWriteQueue {
            client,
            layout,
            consumer,
            options,
            held: Mutex::new(HashMap::new()),
            server_ms: std::sync::atomic::AtomicU64::new(0),
            groups: Mutex::new(Default::default()),
        }
    }

    fn keys(&self, writer: &str) -> WriteKeys {
        self.layout.write_keys(writer)
    }

    /// The token a run of `write` holds its key's lock with: one per write, so that a write
    /// told `busy` (another task of this process runs the key) cannot release that lock.
    fn lock_token(&self, write: &QueuedWrite) -> String {
        format!("{}:{}", self.consumer, write.id)
    }

    /// How long a key lock lasts (ms).
    fn lock_px(&self) -> u64 {
        (self.options.claim_after.as_millis() as u64).max(MIN_LOCK_PX)
    }

    fn lock_key(&self, writer: &str, key: &str) -> String {
        self.layout.write_lock(writer, key)
    }

    fn block<T: Send + 'static>(
        &self,
        op: &'static str,
        fut: impl std::future::Future<Output = Result<T, CacheError>> + Send + 'static,
    ) -> Result<T, CacheError> {
        let limit = self.client.op_timeout() * 2 + Duration::from_millis(100);
        crate::client::exec::block(fut, limit).unwrap_or_else(|| {
            Err(RedisCacheError::Timeout {
                op,
                timeout: self.client.op_timeout(),
            }
            .into())
        })
    }

    fn push_fut(
        &self,
        writer: &str,
        key: &str,
        args: Vec<u8>,
        value: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<(), CacheError>> + Send + 'static {
        let client = self.client.clone();
        let k = self.keys(writer);
        let key = key.to_string();
        let capacity = self.options.capacity;
        async move {
            let id: Option<String> = client
                .run("write_queue_push", |mut con| async move {
                    scripts::wb_push()
                        .key(&k.stream)
                        .key(&k.latest)
                        .key(&k.pending)
                        .key(&k.queued)
                        .arg(&key)
                        .arg(&args)
                        .arg(&value)
                        .arg(capacity)
                        .invoke_async(&mut con)
                        .await
                })
                .await?;
            match id {
                Some(_) => Ok(()),
                None => Err(CacheError::backend(
                    "redis",
                    format!("the write-behind queue is full ({capacity} writes wait)"),
                )),
            }
        }
    }

    fn pending_fut(
        &self,
        writer: &str,
        key: &str,
    ) -> impl std::future::Future<Output = Result<Option<Vec<u8>>, CacheError>> + Send + 'static
    {
        let client = self.client.clone();
        let hash = self.keys(writer).pending;
        let key = key.to_string();
        async move {
            let v: Option<Vec<u8>> = client
                .run("write_queue_pending", |mut con| async move {
                    redis::cmd("HGET")
                        .arg(&hash)
                        .arg(&key)
                        .query_async(&mut con)
                        .await
                })
                .await?;
            Ok(v.and_then(|v| {
                let colon = v.iter().position(|b| *b == b':')?;
                Some(v[colon + 1..].to_vec())
            }))
        }
    }

    /// Creates the consumer group of `writer` (once per process and writer).
    async fn ensure_group(&self, k: &WriteKeys, writer: &str) -> Result<(), CacheError> {
        if self.groups.lock().contains(writer) {
            return Ok(());
        }
        let stream = k.stream.clone();
        let made: Result<Value, RedisCacheError> = self
            .client
            .run("write_queue_group", |mut con| async move {
                redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&stream)
                    .arg(GROUP)
                    .arg("0")
                    .arg("MKSTREAM")
                    .query_async(&mut con)
                    .await
            })
            .await;
        match made {
            Ok(_) => {}
            Err(e) if e.to_string().contains("BUSYGROUP") => {}
            Err(e) => return Err(e.into()),
        }
        self.groups.lock().insert(writer.to_string());
        Ok(())
    }

    async fn claim_now(
        &self,
        writer: &str,
        delay: Duration,
        max: usize,
    ) -> Result<Vec<QueuedWrite>, CacheError> {
        let k = self.keys(writer);
        self.ensure_group(&k, writer).await?;
        let stream = k.stream.clone();
        let consumer = self.consumer.clone();
        let idle = self.options.claim_after.as_millis() as u64;
        let count = max.max(1);
        let reply: (Value, Value, Value) = self
            .client
            .run("write_queue_claim", |mut con| async move {
                redis::pipe()
                    .cmd("TIME")
                    .cmd("XAUTOCLAIM")
                    .arg(&stream)
                    .arg(GROUP)
                    .arg(&consumer)
                    .arg(idle)
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(count)
                    .cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(GROUP)
                    .arg(&consumer)
                    .arg("COUNT")
                    .arg(count)
                    .arg("STREAMS")
                    .arg(&stream)
                    .arg(">")
                    .query_async(&mut con)
                    .await
            })
            .await
            .inspect_err(|e| {
                // the stream (and its group) is gone (FLUSHALL, eviction): make it again
                if e.to_string().contains("NOGROUP") {
                    self.groups.lock().remove(writer);
                }
            })?;
        let (time, claimed, read) = reply;
        let now_ms = match &time {
            Value::Array(t) if t.len() == 2 => {
                let s: u64 = text(&t[0]).and_then(|s| s.parse().ok()).unwrap_or(0);
                let us: u64 = text(&t[1]).and_then(|s| s.parse().ok()).unwrap_or(0);
                s * 1000 + us / 1000
            }
            _ => 0,
        };
        let mut entries: Vec<&Value> = Vec::new();
        if let Value::Array(parts) = &claimed {
            if let Some(Value::Array(list)) = parts.get(1) {
                entries.extend(list.iter());
            }
        }
        // XREADGROUP: [[stream, [entries]]] (RESP2) or a map (RESP3)
        match &read {
            Value::Array(streams) => {
                for s in streams {
                    if let Value::Array(pair) = s {
                        if let Some(Value::Array(list)) = pair.get(1) {
                            entries.extend(list.iter());
                        }
                    }
                }
            }
            Value::Map(m) => {
                for (_, v) in m {
                    if let Value::Array(list) = v {
                        entries.extend(list.iter());
                    }
                }
            }
            _ => {}
        }
        self.server_ms
            .store(now_ms, std::sync::atomic::Ordering::Relaxed);
        let mut held = self.held.lock();
        let held = held.entry(writer.to_string()).or_default();
        for e in entries {
            if let Some((w, not_before, _)) = parse_entry(writer, e) {
                held.insert(w.id.clone(), (w, not_before));
            }
        }
        let ready: Vec<String> = held
            .iter()
            .filter(|(_, (w, not_before))| {
                // a first attempt waits `delay` (flush_after) after it was queued; any write
                // waits until its not-before time (a retry's backoff, a busy key's pause)
                (w.attempts > 0 || w.queued_at_ms + delay.as_millis() as u64 <= now_ms)
                    && *not_before <= now_ms
            })
            .map(|(id, _)| id.clone())
            .take(max)
            .collect();
        Ok(ready
            .into_iter()
            .filter_map(|id| held.remove(&id).map(|(w, _)| w))
            .collect())
    }

    async fn start_now(&self, write: &QueuedWrite, coalesce: bool) -> Result<Start, CacheError> {
        let k = self.keys(&write.writer);
        let lock = self.lock_key(&write.writer, &write.key);
        let token = self.lock_token(write);
        let (key, seq, id) = (write.key.clone(), write.seq, write.id.clone());
        let stream = k.stream.clone();
        let lock_px = self.lock_px();
        let answer: String = self
            .client
            .run("write_queue_start", |mut con| async move {
                scripts::wb_start()
                    .key(&k.latest)
                    .key(&k.done)
                    .key(&lock)
                    .key(&stream)
                    .arg(&key)
                    .arg(seq)
                    .arg(if coalesce { "1" } else { "0" })
                    .arg(&token)
                    .arg(lock_px)
                    .arg(&id)
                    .invoke_async(&mut con)
                    .await
            })
            .await?;
        Ok(match answer.as_str() {
            "run" => Start::Run,
            "busy" => Start::Busy,
            _ => Start::Superseded,
        })
    }

    /// Keeps `write`'s key lock from expiring while its body runs.
    async fn renew_now(&self, write: &QueuedWrite) -> Result<(), CacheError> {
        let lock = self.lock_key(&write.writer, &write.key);
        let token = self.lock_token(write);
        let px = self.lock_px();
        let _: i64 = self
            .client
            .run("write_queue_renew", |mut con| async move {
                scripts::wb_renew()
                    .key(&lock)
                    .arg(&token)
                    .arg(px)
                    .invoke_async(&mut con)
                    .await
            })
            .await?;
        Ok(())
    }

    async fn finish_now(&self, write: &QueuedWrite, how: Finish) -> Result<(), CacheError> {
        if let Finish::Busy { after } = how {
            // another write of the key runs: keep this one (still ours in the group) and look
            // again after the pause; nothing to tell Redis
            let now = self.server_ms.load(std::sync::atomic::Ordering::Relaxed);
            self.held
                .lock()
                .entry(write.writer.clone())
                .or_default()
                .insert(
                    write.id.clone(),
                    (write.clone(), now + after.as_millis() as u64),
                );
            return Ok(());
        }
        let k = self.keys(&write.writer);
        let lock = self.lock_key(&write.writer, &write.key);
        let token = self.lock_token(write);
        let (mode, attempts, after_ms, error) = match how {
            Finish::Done => ("done", write.attempts, 0, String::new()),
            Finish::Superseded => ("superseded", write.attempts, 0, String::new()),
            Finish::Retry { after, attempts } => {
                ("retry", attempts, after.as_millis() as u64, String::new())
            }
            Finish::Dead { error, attempts } => ("dead", attempts, 0, error),
            Finish::Busy { .. } => return Ok(()), // handled above
        };
        let w = write.clone();
        let _: i64 = self
            .client
            .run("write_queue_finish", |mut con| async move {
                scripts::wb_finish()
                    .key(&k.stream)
                    .key(&k.latest)
                    .key(&k.done)
                    .key(&k.pending)
                    .key(&lock)
                    .key(&k.dead)
                    .key(&k.deadkeys)
                    .key(&k.queued)
                    .arg(mode)
                    .arg(&w.key)
                    .arg(w.seq)
                    .arg(&w.id)
                    .arg(GROUP)
                    .arg(&token)
                    .arg(attempts)
                    .arg(after_ms)
                    .arg(&error)
                    .arg(&w.args)
                    .arg(w.queued_at_ms)
                    .invoke_async(&mut con)
                    .await
            })
            .await?;
        Ok(())
    }

    async fn dead_now(&self, writer: &str) -> Result<Vec<DeadLetter>, CacheError> {
        let dead = self.keys(writer).dead;
        let v: Value = self
            .client
            .run("write_queue_dead", |mut con| async move {
                redis::cmd("XRANGE")
                    .arg(&dead)
                    .arg("-")
                    .arg("+")
                    .query_async(&mut con)
                    .await
            })
            .await?;
        let Value::Array(list) = v else {
            return Ok(Vec::new());
        };
        Ok(list
            .iter()
            .filter_map(|e| parse_entry(writer, e))
            .map(|(write, _, error)| DeadLetter { write, error })
            .collect())
    }

    async fn replay_now(&self, writer: &str, id: &str) -> Result<bool, CacheError> {
        let k = self.keys(writer);
        let id = id.to_string();
        let n: i64 = self
            .client
            .run("write_queue_replay", |mut con| async move {
                scripts::wb_replay()
                    .key(&k.dead)
                    .key(&k.stream)
                    .key(&k.deadkeys)
                    .key(&k.queued)
                    .arg(&id)
                    .invoke_async(&mut con)
                    .await
            })
            .await?;
        Ok(n == 1)
    }

    async fn depth_now(&self, writer: &str) -> Result<Depth, CacheError> {
        let stream = self.keys(writer).stream;
        let (time, len, first): (Vec<String>, u64, Value) = self
            .client
            .run("write_queue_depth", |mut con| async move {
                redis::pipe()
                    .cmd("TIME")
                    .cmd("XLEN")
                    .arg(&stream)
                    .cmd("XRANGE")
                    .arg(&stream)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut con)
                    .await
            })
            .await?;
        let now_ms = time
            .first()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
            * 1000
            + time.get(1).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0) / 1000;
        let oldest = match &first {
            Value::Array(l) => l
                .first()
                .and_then(|e| parse_entry("", e))
                .map(|(w, _, _)| Duration::from_millis(now_ms.saturating_sub(w.queued_at_ms))),
            _ => None,
        };
        Ok(Depth {
            pending: len,
            oldest,
        })
    }
}

/// Runs one of the queue's async methods on a runtime, from an `Arc` clone.
macro_rules! on_runtime {
    ($self:ident, |$q:ident| $body:expr) => {{
        let $q = $self.clone();
        Box::pin(async move { crate::client::exec::on_runtime(async move { $body }).await })
    }};
}

/// The queue as handed to cache-core: an `Arc` so futures can own it.
#[derive(Debug, Clone)]
pub(crate) struct SharedQueue(pub(crate) Arc<RedisWriteQueue>);

impl WriteQueue for SharedQueue {
    fn name(&self) -> &str {
        "redis"
    }

    fn push<'a>(
        &'a self,
        writer: &'a str,
        key: &'a str,
        args: Vec<u8>,
        value: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        let fut = self.0.push_fut(writer, key, args, value);
        Box::pin(crate::client::exec::on_runtime(fut))
    }

    fn push_blocking(
        &self,
        writer: &str,
        key: &str,
        args: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<(), CacheError> {
        self.0.block(
            "write_queue_push",
            self.0.push_fut(writer, key, args, value),
        )
    }

    fn pending<'a>(
        &'a self,
        writer: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, CacheError>> {
        Box::pin(crate::client::exec::on_runtime(
            self.0.pending_fut(writer, key),
        ))
    }

    fn pending_blocking(&self, writer: &str, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        self.0
            .block("write_queue_pending", self.0.pending_fut(writer, key))
    }

    fn claim<'a>(
        &'a self,
        writer: &'a str,
        delay: Duration,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<QueuedWrite>, CacheError>> {
        let w = writer.to_string();
        let q = &self.0;
        on_runtime!(q, |q| q.claim_now(&w, delay, max).await)
    }

    fn start<'a>(
        &'a self,
        write: &'a QueuedWrite,
        coalesce: bool,
    ) -> BoxFuture<'a, Result<Start, CacheError>> {
        let w = write.clone();
        let q = &self.0;
        on_runtime!(q, |q| q.start_now(&w, coalesce).await)
    }

    fn finish<'a>(
        &'a self,
        write: &'a QueuedWrite,
        how: Finish,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        let w = write.clone();
        let q = &self.0;
        on_runtime!(q, |q| q.finish_now(&w, how).await)
    }

    fn lock_renewal(&self) -> Option<Duration> {
        Some(Duration::from_millis(self.0.lock_px() / 3))
    }

    fn renew<'a>(&'a self, write: &'a QueuedWrite) -> BoxFuture<'a, Result<(), CacheError>> {
        let w = write.clone();
        let q = &self.0;
        on_runtime!(q, |q| q.renew_now(&w).await)
    }

    fn dead_letters<'a>(
        &'a self,
        writer: &'a str,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>, CacheError>> {
        let w = writer.to_string();
        let q = &self.0;
        on_runtime!(q, |q| q.dead_now(&w).await)
    }

    fn replay<'a>(
        &'a self,
        writer: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, CacheError>> {
        let (w, id) = (writer.to_string(), id.to_string());
        let q = &self.0;
        on_runtime!(q, |q| q.replay_now(&w, &id).await)
    }

    fn depth<'a>(&'a self, writer: &'a str) -> BoxFuture<'a, Result<Depth, CacheError>> {
        let w = writer.to_string();
        let q = &self.0;
        on_runtime!(q, |q| q.depth_now(&w).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse() {
        let e = Value::Array(vec![
            Value::BulkString(b"1700000000000-3".to_vec()),
            Value::Array(vec![
                Value::BulkString(b"k".to_vec()),
                Value::BulkString(b"app::get(1)".to_vec()),
                Value::BulkString(b"s".to_vec()),
                Value::BulkString(b"4".to_vec()),
                Value::BulkString(b"n".to_vec()),
                Value::BulkString(b"2".to_vec()),
                Value::BulkString(b"b".to_vec()),
                Value::BulkString(b"1700000000500".to_vec()),
                Value::BulkString(b"a".to_vec()),
                Value::BulkString(vec![0x92, 1, 2]),
            ]),
        ]);
        let (w, nb, err) = parse_entry("app::save", &e).unwrap();
        assert_eq!(w.key, "app::get(1)");
        assert_eq!((w.seq, w.attempts, nb), (4, 2, 1_700_000_000_500));
        assert_eq!(w.args, vec![0x92, 1, 2]);
        assert_eq!(w.queued_at_ms, 1_700_000_000_000);
        assert!(err.is_empty());
        assert_eq!(id_ms("12-0"), 12);
    }
}
