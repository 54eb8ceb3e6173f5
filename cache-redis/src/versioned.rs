//! Protocol version 2: entries carry the versions of what they depend on, and a read validates
//! them.
//!
//! # Layout (prefix `P`, entry key text `T`, dependency name `N`)
//!
//! | key | holds |
//! |---|---|
//! | `P:{T}` | the entry: envelope version 2 ([`crate::envelope`]) listing every dependency `N` with the version token it was filled under, then the value |
//! | `P:{T}:lock` | the distributed single-flight lock (as in version 1) |
//! | `P:v:{N}` | the version token of `N`: a dependency name, a function's `fn:...` name (what `invalidate_all` bumps), or an entry's key text `T` (then in the slot of `P:{T}`) |
//!
//! No reverse index, no per-entry index, no global key: every script gets its keys in
//! `KEYS[]`, and each touches one hash slot (`{T}` or `{N}`).
//!
//! # Tokens
//!
//! A token is `2 * stamp + kind`, the stamp the server time in microseconds when the token was
//! made: odd tokens were *created* by a fill that found no version key (`v2_version.lua`), even
//! ones *bumped* by an invalidation (`v2_bump.lua`), always with a stamp newer than the token
//! they replace. Tokens are never reused: a version key that is deleted, expires or is evicted
//! comes back with a new one.
//!
//! # Operations and why they are safe
//!
//! * **Read**: the entry is valid only if every `(N, token)` it lists is the current token of
//!   `N`. A missing version key is no token, so an evicted or expired version key makes its
//!   entries misses, never stale hits: *an invalidation holds under every eviction policy*.
//!   The lookup reads the entry and the version keys of the call's declared dependencies (its
//!   `depends_on` names and its function's `fn:` name, known before the body runs) in one
//!   pipelined round trip; names the entry lists beyond those (added by nested cached calls or
//!   `add_dependency`) take a second round trip, after which the backend remembers them for
//!   that key ([`Hints`], bounded) and reads them in the first one next time.
//! * **Invalidate `N`**: bump `P:v:{N}`: one `O(1)` script, whatever the fan-out; an entry's
//!   own key text is bumped and its entry deleted in one script (one slot). Once it returns,
//!   every entry filled under an older token of `N` reads as a miss. Transitivity: a nested
//!   cached call hands its entry's dependencies to the enclosing fill, which lists them too
//!   (with the inner entry's own key text), so bumping what the inner entry depends on also
//!   invalidates the outer one.
//! * **Fill (lease)**: a miss's lease is a server time no later than the lookup (the newest
//!   server time seen in a reply sent at most [`crate::backend::GEN_FRESH_MS`] earlier, or the
//!   lookup's own `TIME`), plus the tokens the lookup read. The fill lists, for each name, the
//!   token read *before the body ran* when there is one (a later bump makes the entry invalid);
//!   for the other names it reads (or creates) the token after the body and rejects the fill
//!   when the token is a bump stamped after the lease: the name was invalidated while the body
//!   ran. The entry's own key is checked the same way inside the set script, atomically with
//!   the store. *No stale set survives an invalidation that raced it.*
//!
//!   The one gap: a version key bumped during a fill *and then evicted or expired* before that
//!   fill reads it, for a name the fill had no token of from before its body (a nested or
//!   `add_dependency` name). The re-created token is accepted. Bumped keys keep at least
//!   [`BUMPED_MIN_TTL_MS`] (longer than [`LEASE_HORIZON`], past which a fill is rejected), so
//!   only eviction of a key written during the fill can open it: LRU and LFU pick such a key
//!   last; `allkeys-random`, `volatile-random` and `volatile-ttl` can pick it.
//! * **Clear**: `SCAN` + `UNLINK` of the prefix (entries and version keys; write-behind queues
//!   stay). Entries a racing fill stores after the scan passed list tokens of deleted version
//!   keys when their function's `fn:` token came from the lookup, and read as misses.
//!
//! # Cost in round trips
//!
//! * hit: 1 (entry + declared versions, pipelined); 2 the first time this process reads an entry
//!   that lists names its call did not declare;
//! * miss + fill: 2 (lookup; the listed versions checked and the set script, pipelined) when
//!   every dependency was declared and its version key existed; 3 otherwise (one more to read
//!   or create the other versions before the envelope can list them). A fill whose check finds
//!   a version bumped since it was read reports a rejection; the entry it stored lists the old
//!   token and is never served (the next fill overwrites it);
//! * invalidation: 1, `O(1)` on the server per name;
//! * memory: the entry alone (its dependency list inside it), plus one small key per dependency
//!   name, not per entry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_core::value::Hit;
use cache_core::{CacheError, EntryOptions, Lease, Lookup, SetOutcome};
use redis::Value;

use crate::backend::{parse_gen, unix_ms, Expiry, Inner};
use crate::envelope;
use crate::error::RedisCacheError;
use crate::scripts;

/// A fill whose lease is older than this is rejected (its lease has been forgotten).
pub(crate) const LEASE_HORIZON: Duration = Duration::from_secs(600);
/// The least ttl a bumped version key keeps (ms): longer than [`LEASE_HORIZON`], so a bump is
/// seen by every fill that could have raced it (eviction aside).
pub(crate) const BUMPED_MIN_TTL_MS: u64 = 660_000;
const _: () = assert!(BUMPED_MIN_TTL_MS > LEASE_HORIZON.as_secs() * 1000);

/// The clock skew between a cluster's masters a fill's lease allows for (µs): a lease's time
/// comes from one master's clock, a bump's stamp from another's.
pub(crate) const CLOCK_SKEW_US: u64 = 1_000_000;

/// Leases kept before old ones are dropped.
const LEASES_KEPT: usize = 100_000;

/// Whether `token` was made by an invalidation (even) rather than created by a fill (odd).
fn is_bump(token: u64) -> bool {
    token % 2 == 0
}

/// The server time (µs) at which `token` was made.
fn stamp(token: u64) -> u64 {
    token / 2
}

/// What a miss leased: the server time and the tokens read with the lookup.
struct Leased {
    time_us: u64,
    tokens: Vec<(String, u64)>,
    at: Instant,
}

/// The leases of this backend's misses, until their fill stores or is abandoned.
#[derive(Default)]
pub(crate) struct Leases {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Leased>>,
}

impl Leases {
    fn grant(&self, time_us: u64, tokens: Vec<(String, u64)>) -> Lease {
        // 0 and u64::MAX (unconditional) are never granted
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.len() >= LEASES_KEPT {
            // fills that never ended (their future was dropped): forget the oldest
            let now = Instant::now();
            open.retain(|_, l| now.duration_since(l.at) < LEASE_HORIZON / 10);
        }
        open.insert(
            id,
            Leased {
                time_us,
                tokens,
                at: Instant::now(),
            },
        );
        Lease(id)
    }

    fn take(&self, lease: Lease) -> Option<Leased> {
        let leased = self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&lease.0)?;
        (leased.at.elapsed() < LEASE_HORIZON).then_some(leased)
    }

    pub(crate) fn forget(&self, lease: Lease) {
        self.take(lease);
    }
}

/// Names each entry listed beyond what its call declared (nested calls, `add_dependency`),
/// remembered per key so the next lookup reads their versions in its first round trip.
#[derive(Default)]
pub(crate) struct Hints {
    known: Mutex<HashMap<Arc<str>, Arc<[String]>>>,
    /// Whether `known` has ever held a key: lookups of a process whose entries list only
    /// declared names never take the lock.
    any: std::sync::atomic::AtomicBool,
}

/// Keys whose extra names are remembered before the map starts over.
const HINTS_KEPT: usize = 10_000;

impl Hints {
    fn get(&self, text: &str) -> Option<Arc<[String]>> {
        if !self.any.load(Ordering::Relaxed) {
            return None;
        }
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(text)
            .cloned()
    }

    fn remember(&self, text: &str, names: Vec<String>) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= HINTS_KEPT {
            known.clear();
        }
        known.insert(Arc::from(text), Arc::from(names));
        self.any.store(true, Ordering::Relaxed);
    }
}

/// A reply's element as bytes (`None` for nil).
fn bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

/// `names` without `own` and without repeats, in their order.
fn dedup(names: Vec<String>, own: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for n in names {
        if n != own && !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

/// What a version-2 lookup answers, with what a hit's entry lists: each name it depends on and
/// the version token it was filled under (for the enclosing fill, and for an L1 copy's
/// coherence).
pub(crate) struct Answer {
    pub(crate) lookup: Lookup,
    pub(crate) deps: Vec<(String, u64)>,
}

impl Inner {
    /// Reads entry `text` of a call that declared `declared`, validating it against the
    /// current versions of everything it lists.
    pub(crate) async fn v2_get(
        self: Arc<Self>,
        text: Arc<str>,
        declared: Vec<String>,
    ) -> Result<Answer, CacheError> {
        self.v2_lookup(&text, declared).await.map_err(|e| {
            self.counters.errors.incr();
            e.into()
        })
    }

    /// The names whose versions a lookup of entry `text` reads with it: what its call declared,
    /// and what the entry listed beyond that when this process last read it.
    pub(crate) fn v2_names(&self, text: &str, declared: Vec<String>) -> Vec<String> {
        if !self.dependencies {
            return Vec::new();
        }
        let mut names = dedup(declared, text);
        if let Some(extra) = self.hints.get(text) {
            let new: Vec<String> = extra
                .iter()
                .filter(|n| !names.contains(n))
                .cloned()
                .collect();
            names.extend(new);
        }
        names
    }

    async fn v2_lookup(
        self: &Arc<Self>,
        text: &str,
        declared: Vec<String>,
    ) -> Result<Answer, RedisCacheError> {
        let names = self.v2_names(text, declared);
        let item = self.layout.item(text);
        let lock_px = self.lock_ttl.map(|t| t.as_millis().max(1) as u64);
        let lock = match lock_px {
            Some(_) => self.layout.lock(text),
            None => String::new(),
        };
        let deadline = self
            .lock_ttl
            .map(|t| Instant::now() + t + self.client.op_timeout());
        let mut delay = Duration::from_millis(2);
        let mut waited = false;
        loop {
            let fresh = self.fresh_gen();
            let sent = crate::backend::mono_ms();
            let trust = self.trust();
            // one MGET of the versions (and the entry) costs one server about what one GET
            // does; on a cluster the keys live on several masters: one GET each, sent
            // concurrently (redis-rs's multi-slot MGET costs a third more throughput, measured),
            // and a one-node cluster answers CROSSSLOT once, after which the backend does the same
            let mget = !self.client.is_cluster()
                && !self.split_reads.load(Ordering::Relaxed)
                && !names.is_empty();
            let replies = self
                .run("get", |mut con| {
                    let mut pipe = redis::pipe();
                    let mut reads = redis::cmd("MGET");
                    for n in &names {
                        let v = self.layout.version(n);
                        if mget {
                            reads.arg(v);
                        } else {
                            pipe.cmd("GET").arg(v);
                        }
                    }
                    match lock_px {
                        Some(px) => {
                            if mget {
                                pipe.add_command(reads);
                            }
                            let mut inv = scripts::v2_get().key(&item);
                            inv.key(&lock).arg(&self.instance).arg(px).arg("v");
                            pipe.invoke_script(&inv);
                        }
                        None => {
                            if mget {
                                reads.arg(&item);
                                pipe.add_command(reads);
                            } else {
                                pipe.cmd("GET").arg(&item);
                            }
                            if fresh.is_none() {
                                pipe.cmd("TIME");
                            }
                        }
                    }
                    async move {
                        match scripts::query_pipeline::<Vec<Value>>(
                            &mut con,
                            &pipe,
                            &[scripts::v2_get()],
                        )
                        .await
                        {
                            Err(e)
                                if e.kind()
                                    == redis::ErrorKind::Server(
                                        redis::ServerErrorKind::CrossSlot,
                                    ) =>
                            {
                                Ok(None)
                            }
                            r => r.map(Some),
                        }
                    }
                })
                .await?;
            let Some(replies) = replies else {
                self.split_reads.store(true, Ordering::Relaxed);
                continue;
            };
            let replies = if mget {
                // the MGET's values in the places the GETs' would have
                let mut it = replies.into_iter();
                let Some(Value::Array(values)) = it.next() else {
                    return Err(malformed());
                };
                values.into_iter().chain(it).collect()
            } else {
                replies
            };
            let mut replies = replies.into_iter();
            let tokens: Vec<Option<u64>> = names
                .iter()
                .map(|_| replies.next().as_ref().and_then(parse_gen))
                .collect();
            // the entry's bytes, the server time, and (locking) who holds the lock
            let (value, time, status) = match lock_px {
                Some(_) => {
                    let Some(Value::Array(r)) = replies.next() else {
                        return Err(malformed());
                    };
                    let mut r = r.into_iter();
                    let status = r.next().as_ref().and_then(parse_gen).unwrap_or(0);
                    let time = r
                        .next()
                        .as_ref()
                        .and_then(parse_gen)
                        .ok_or_else(malformed)?;
                    (r.next().and_then(bytes), time, status)
                }
                None => {
                    let value = replies.next().and_then(bytes);
                    let time = match fresh {
                        Some(t) => t,
                        None => match replies.next() {
                            Some(Value::Array(t)) if t.len() == 2 => {
                                let s = parse_gen(&t[0]).ok_or_else(malformed)?;
                                let us = parse_gen(&t[1]).ok_or_else(malformed)?;
                                s * 1_000_000 + us
                            }
                            _ => return Err(malformed()),
                        },
                    };
                    (value, time, 1)
                }
            };
            if fresh.is_none() || lock_px.is_some() {
                self.learn_time(time, sent);
            }
            let read = Read {
                names: &names,
                tokens: &tokens,
            };
            let mut known = Vec::new();
            if let Some(bytes) = value {
                match self.v2_valid(text, bytes, read, time, trust).await? {
                    Validity::Valid(answer) => return Ok(answer),
                    Validity::Invalid(more) => known = more,
                }
                // not valid: a miss; with the lock, take it now
                if let Some(px) = lock_px {
                    let r: Vec<Value> = self
                        .run("get", |mut con| {
                            let mut inv = scripts::v2_get().key(&item);
                            inv.key(&lock).arg(&self.instance).arg(px).arg("l");
                            async move { inv.invoke_async(&mut con).await }
                        })
                        .await?;
                    let status = r.first().and_then(parse_gen).unwrap_or(0);
                    if status == 1 || !self.v2_wait(&mut delay, &mut waited, deadline).await {
                        return Ok(self.v2_miss(time, read.known(known)));
                    }
                    continue;
                }
            } else if status == 0 && self.v2_wait(&mut delay, &mut waited, deadline).await {
                continue;
            }
            return Ok(self.v2_miss(time, read.known(known)));
        }
    }

    /// Waits before looking again for a value another node is computing; `false` when the
    /// lock's time is up (the caller computes).
    async fn v2_wait(
        &self,
        delay: &mut Duration,
        waited: &mut bool,
        deadline: Option<Instant>,
    ) -> bool {
        if !*waited {
            *waited = true;
            self.counters.lock_waits.incr();
        }
        match deadline {
            Some(d) if Instant::now() + *delay <= d => {
                tokio::time::sleep(*delay).await;
                *delay = (*delay * 2).min(Duration::from_millis(50));
                true
            }
            _ => false,
        }
    }

    fn v2_miss(&self, time_us: u64, tokens: Vec<(String, u64)>) -> Answer {
        self.counters.misses.incr();
        // a token's stamp is a server time before the lookup: as good a lease as any
        let time_us = tokens
            .iter()
            .map(|(_, t)| stamp(*t))
            .fold(time_us, u64::max);
        Answer {
            lookup: Lookup::Miss(self.leases.grant(time_us, tokens)),
            deps: Vec::new(),
        }
    }

    /// Whether stored `bytes` are a valid entry (every version it lists is current; `read`
    /// are the versions read with it).
    async fn v2_valid(
        self: &Arc<Self>,
        text: &str,
        bytes: Vec<u8>,
        read: Read<'_>,
        time: u64,
        trust: Option<u64>,
    ) -> Result<Validity, RedisCacheError> {
        let opened = match envelope::open(bytes, self.max_payload) {
            Ok(envelope::Stored::Value(o)) if o.version == envelope::VERSION_2 => o,
            // another protocol's entry: a miss the fill overwrites
            Ok(_) => return Ok(Validity::Invalid(Vec::new())),
            Err(e) => {
                self.counters.corrupt.incr();
                tracing::warn!(key = text, error = %e,
                    "value in Redis is not a valid cache envelope; treating it as a miss (the fill overwrites it)");
                return Ok(Validity::Invalid(Vec::new()));
            }
        };
        if !self.still_trusted(trust) {
            return Ok(Validity::Invalid(Vec::new()));
        }
        let mut unknown: Vec<&(String, u64)> = Vec::new();
        for dep in &opened.deps {
            match read.token(&dep.0) {
                Some(Some(t)) if t == dep.1 => {}
                Some(_) => return Ok(Validity::Invalid(Vec::new())),
                None => unknown.push(dep),
            }
        }
        if !unknown.is_empty() {
            // read them with the entry next time
            let mut extra: Vec<String> = read
                .names
                .iter()
                .filter(|n| opened.deps.iter().any(|(d, _)| d == *n))
                .cloned()
                .collect();
            extra.extend(unknown.iter().map(|(n, _)| n.clone()));
            self.hints.remember(text, extra);
            self.counters.second_reads.incr();
            let replies: Vec<Value> = self
                .run("get", |mut con| {
                    let mut pipe = redis::pipe();
                    for (n, _) in &unknown {
                        pipe.cmd("GET").arg(self.layout.version(n));
                    }
                    async move { pipe.query_async(&mut con).await }
                })
                .await?;
            if replies.len() != unknown.len() {
                return Err(malformed());
            }
            if unknown
                .iter()
                .zip(&replies)
                .any(|((_, t), r)| parse_gen(r) != Some(*t))
            {
                // read before any body of this miss runs: the fill may list them
                let read = unknown
                    .iter()
                    .zip(&replies)
                    .filter_map(|((n, _), r)| parse_gen(r).map(|t| (n.clone(), t)))
                    .collect();
                return Ok(Validity::Invalid(read));
            }
        }
        if let Some(fresh_until) = opened.fresh_until_ms {
            if unix_ms() >= fresh_until {
                self.counters.misses.incr();
                let age = Duration::from_millis(unix_ms().saturating_sub(fresh_until));
                return Ok(Validity::Valid(Answer {
                    lookup: Lookup::Stale {
                        hit: Hit::Bytes(opened.payload),
                        lease: self.leases.grant(time, read.known(Vec::new())),
                        age,
                    },
                    deps: Vec::new(),
                }));
            }
        }
        self.counters.hits.incr();
        if let Some(sliding) = opened.sliding_ms {
            self.refresh_sliding(text, sliding, opened.deadline_ms);
        }
        Ok(Validity::Valid(Answer {
            lookup: Lookup::Hit(Hit::Bytes(opened.payload)),
            deps: opened.deps,
        }))
    }

    /// Stores entry `text` under `lease` (protocol version 2).
    pub(crate) async fn v2_set(
        self: Arc<Self>,
        text: Arc<str>,
        payload: Vec<u8>,
        options: EntryOptions,
        lease: Lease,
    ) -> Result<SetOutcome, CacheError> {
        match self.v2_fill(&text, &payload, &options, lease).await {
            Ok(Filled::Stored) => {
                self.counters.inserts.incr();
                Ok(SetOutcome::Stored)
            }
            Ok(Filled::Rejected) => {
                self.abandon(&text);
                self.counters.rejected_sets.incr();
                tracing::debug!(key = &*text, "fill rejected: an invalidation raced it");
                Ok(SetOutcome::Rejected)
            }
            Ok(Filled::Oversize(size)) => self.oversize(&text, size).await,
            Err(e) => {
                self.counters.errors.incr();
                Err(e.into())
            }
        }
    }

    async fn v2_fill(
        &self,
        text: &str,
        payload: &[u8],
        options: &EntryOptions,
        lease: Lease,
    ) -> Result<Filled, RedisCacheError> {
        let leased = if lease == Lease::UNCONDITIONAL {
            None
        } else {
            match self.leases.take(lease) {
                Some(l) => Some(l),
                // forgotten (older than the horizon): it may predate any invalidation
                None => return Ok(Filled::Rejected),
            }
        };
        let expiry = Expiry::of(options);
        let names = if self.dependencies {
            dedup(options.dependencies.clone(), text)
        } else {
            Vec::new()
        };
        let mut deps: Vec<(String, u64)> = Vec::with_capacity(names.len());
        let mut need: Vec<String> = Vec::new();
        for n in names {
            let read = leased
                .as_ref()
                .and_then(|l| l.tokens.iter().find(|(k, _)| *k == n));
            match read {
                Some((_, t)) => deps.push((n, *t)),
                None => need.push(n),
            }
        }
        // the names read now come last in `deps`
        let fresh = need.len();
        if !need.is_empty() {
            let sent = crate::backend::mono_ms();
            let replies: Vec<Value> = self
                .run("set", |mut con| {
                    let mut pipe = redis::pipe();
                    for n in &need {
                        let mut inv = scripts::v2_version().key(self.layout.version(n));
                        inv.arg(expiry.px).arg(self.version_ttl_ms);
                        pipe.invoke_script(&inv);
                    }
                    async move {
                        scripts::query_pipeline(&mut con, &pipe, &[scripts::v2_version()]).await
                    }
                })
                .await?;
            if replies.len() != need.len() {
                return Err(malformed());
            }
            for (n, r) in need.into_iter().zip(replies) {
                let Value::Array(r) = r else {
                    return Err(malformed());
                };
                let tok = r.first().and_then(parse_gen).ok_or_else(malformed)?;
                if let Some(now) = r.get(1).and_then(parse_gen) {
                    self.learn_time(now, sent);
                }
                if leased
                    .as_ref()
                    .is_some_and(|l| is_bump(tok) && stamp(tok) > self.lease_bound(l))
                {
                    return Ok(Filled::Rejected);
                }
                deps.push((n, tok));
            }
        }
        let sealed = envelope::seal_as(
            envelope::VERSION_2,
            payload,
            self.compress_over,
            expiry.sliding_ms,
            expiry.deadline_ms,
            expiry.fresh_until_ms,
            &deps,
        );
        if sealed.len() > self.max_payload {
            return Ok(Filled::Oversize(sealed.len()));
        }
        self.note_ttl(&expiry);
        let lease_arg = match &leased {
            Some(l) => self.lease_bound(l).to_string(),
            None => "u".to_string(),
        };
        let lock_token = if self.lock_ttl.is_some() {
            self.instance.as_str()
        } else {
            ""
        };
        // one round trip: the versions read before the body (still current? and kept at least
        // as long as the entry), then the store in the entry's own slot. A version bumped since
        // it was read makes the stored entry invalid (never served) and the fill reports a
        // rejection. (Versions read above were just read and kept alive.)
        let checked = deps.len() - fresh;
        let sent = crate::backend::mono_ms();
        let replies: Vec<Value> = self
            .run("set", |mut con| {
                let mut pipe = redis::pipe();
                for (n, _) in &deps[..checked] {
                    let mut inv = scripts::v2_version().key(self.layout.version(n));
                    inv.arg(expiry.px).arg(self.version_ttl_ms);
                    pipe.invoke_script(&inv);
                }
                let mut inv = scripts::v2_set().key(self.layout.item(text));
                inv.key(self.layout.lock(text))
                    .key(self.layout.version(text))
                    .arg(lease_arg)
                    .arg(sealed)
                    .arg(expiry.px)
                    .arg(lock_token);
                pipe.invoke_script(&inv);
                async move {
                    scripts::query_pipeline(
                        &mut con,
                        &pipe,
                        &[scripts::v2_version(), scripts::v2_set()],
                    )
                    .await
                }
            })
            .await?;
        if replies.len() != checked + 1 {
            return Err(malformed());
        }
        let mut changed = false;
        for ((_, t), r) in deps[..checked].iter().zip(&replies) {
            let Value::Array(r) = r else {
                return Err(malformed());
            };
            changed |= r.first().and_then(parse_gen) != Some(*t);
        }
        let Some(Value::Array(set)) = replies.last() else {
            return Err(malformed());
        };
        if let Some(now) = set.get(1).and_then(parse_gen) {
            self.learn_time(now, sent);
        }
        let stored = set.first().and_then(parse_gen) == Some(1);
        Ok(if stored && !changed {
            Filled::Stored
        } else {
            Filled::Rejected
        })
    }

    /// Waits until `invalidation_replicas` replicas (of every master, on a cluster) have this
    /// connection's writes, at most half the op timeout; fewer is an error (the invalidation
    /// is then not acknowledged: queued and retried).
    async fn wait_replicas(&self) -> Result<(), RedisCacheError> {
        let n = self.invalidation_replicas;
        let wait_ms = (self.client.op_timeout().as_millis() / 2).max(1) as u64;
        let acked: i64 = self
            .run("invalidate", |mut con| async move {
                redis::cmd("WAIT")
                    .arg(n)
                    .arg(wait_ms)
                    .query_async(&mut con)
                    .await
            })
            .await?;
        if acked < i64::from(n) {
            return Err(RedisCacheError::Redis {
                op: "invalidate",
                reason: format!(
                    "only {acked} of the {n} replicas required (invalidation_replicas) acknowledged it within {wait_ms} ms"
                ),
            });
        }
        Ok(())
    }

    /// The newest bump stamp a fill under `leased` accepts: the lease's server time; on a
    /// cluster, [`CLOCK_SKEW_US`] earlier, since the lease and a bump may be stamped by two
    /// masters' clocks (a bump within that margin before the lease rejects the fill needlessly,
    /// never the reverse).
    fn lease_bound(&self, leased: &Leased) -> u64 {
        if self.client.is_cluster() {
            leased.time_us.saturating_sub(CLOCK_SKEW_US)
        } else {
            leased.time_us
        }
    }

    /// Invalidates `names` (dependencies, or entries' key texts with `entries`): one pipelined
    /// round trip of `O(1)` scripts.
    pub(crate) async fn v2_invalidate(
        &self,
        names: &[String],
        entries: bool,
    ) -> Result<(), RedisCacheError> {
        let sent = crate::backend::mono_ms();
        let replies: Vec<(i64, Value)> = self
            .run("invalidate", |mut con| {
                let mut pipe = redis::pipe();
                for n in names {
                    let mut inv = scripts::v2_bump().key(self.layout.version(n));
                    if entries {
                        inv.key(self.layout.item(n));
                    }
                    inv.arg(self.version_ttl_ms).arg(BUMPED_MIN_TTL_MS);
                    pipe.invoke_script(&inv);
                }
                async move { scripts::query_pipeline(&mut con, &pipe, &[scripts::v2_bump()]).await }
            })
            .await?;
        if let Some(now) = replies.iter().filter_map(|(_, t)| parse_gen(t)).max() {
            self.learn_time(now, sent);
        }
        if self.invalidation_replicas > 0 {
            self.wait_replicas().await?;
        }
        // entries removed by key; a dependency counts once (its dependents are not counted:
        // they are not visited)
        self.counters.invalidated.add(if entries {
            replies.iter().map(|(n, _)| *n as u64).sum()
        } else {
            names.len() as u64
        });
        Ok(())
    }
}

/// The versions a lookup read with the entry: `tokens[i]` of `names[i]` (`None`: no version
/// key).
#[derive(Clone, Copy)]
struct Read<'a> {
    names: &'a [String],
    tokens: &'a [Option<u64>],
}

impl Read<'_> {
    /// The token read for `name`: `None` if it was not read, `Some(None)` if it has none.
    fn token(&self, name: &str) -> Option<Option<u64>> {
        let i = self.names.iter().position(|n| n == name)?;
        self.tokens.get(i).copied()
    }

    /// The tokens read (each name that has one), then `more`: what a miss's lease keeps.
    fn known(&self, more: Vec<(String, u64)>) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .names
            .iter()
            .zip(self.tokens)
            .filter_map(|(n, t)| t.map(|t| (n.clone(), t)))
            .collect();
        out.extend(more);
        out
    }
}

/// What stored bytes are to a lookup.
enum Validity {
    Valid(Answer),
    /// A miss; the versions read to find out (current tokens of names the entry listed).
    Invalid(Vec<(String, u64)>),
}

/// How a version-2 fill ended.
enum Filled {
    Stored,
    /// A name it lists was invalidated after its lease (or the lease was forgotten).
    Rejected,
    /// The sealed entry is this many bytes, over `max_payload`.
    Oversize(usize),
}

fn malformed() -> RedisCacheError {
    RedisCacheError::Redis {
        op: "get",
        reason: "unexpected reply shape".into(),
    }
}
