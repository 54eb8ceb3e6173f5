//! `#[write_behind]` on Redis (the durable queue on Redis Streams), with separate processes and
//! a SQLite file as the data store: this test binary spawns itself as child processes (the
//! `child` test, driven by environment variables).
//!
//! * a process queues writes and is killed with SIGKILL before flushing any; another process
//!   flushes every one of them, while the data store fails for a while: the store ends with
//!   each key's last acknowledged value, nothing is dead-lettered;
//! * three processes write the same 100 keys 10,000 times in total while their flushers run:
//!   the store ends with each key's newest value.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cache_core::{cached, write_behind};
use cache_redis::RedisBackend;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use test_support::{require_redis_server, RedisServer};

const ROLE: &str = "WB_CHILD_ROLE";
const URL: &str = "WB_CHILD_URL";
const DB: &str = "WB_CHILD_DB";
const FAIL_FLAG: &str = "WB_CHILD_FAIL_FLAG";
const COUNT: &str = "WB_CHILD_COUNT";
const PROC: &str = "WB_CHILD_PROC";
const GO: &str = "WB_CHILD_GO";
const DEADLINE: Duration = Duration::from_secs(60);

static POOL: OnceLock<SqlitePool> = OnceLock::new();
static REDIS: OnceLock<redis::Client> = OnceLock::new();

async fn open_store(path: &Path) -> SqlitePool {
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
        .unwrap()
        .create_if_missing(true)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(opts)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE IF NOT EXISTS kv (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    pool
}

async fn read_store(pool: &SqlitePool) -> std::collections::BTreeMap<u64, u64> {
    let rows: Vec<(i64, i64)> = sqlx::query_as("SELECT id, v FROM kv")
        .fetch_all(pool)
        .await
        .unwrap();
    rows.into_iter()
        .map(|(k, v)| (k as u64, v as u64))
        .collect()
}

#[cached(ttl = "10m")]
async fn get_value(id: u64) -> Result<u64, String> {
    let pool = POOL.get().ok_or("no store")?;
    let v: Option<(i64,)> = sqlx::query_as("SELECT v FROM kv WHERE id = ?")
        .bind(id as i64)
        .fetch_optional(pool)
        .await
        .map_err(|e| e.to_string())?;
    Ok(v.map_or(0, |(v,)| v as u64))
}

/// The data store's write; fails while the parent's flag file exists (counted in Redis).
async fn write_store(id: u64, v: u64) -> Result<(), String> {
    if let Ok(flag) = std::env::var(FAIL_FLAG) {
        if Path::new(&flag).exists() {
            if let Some(c) = REDIS.get() {
                if let Ok(mut con) = c.get_multiplexed_async_connection().await {
                    let _: Result<i64, _> = redis::cmd("INCR")
                        .arg("wbt:failures")
                        .query_async(&mut con)
                        .await;
                }
            }
            return Err("the data store is down".into());
        }
    }
    let pool = POOL.get().ok_or("no store")?;
    sqlx::query(
        "INSERT INTO kv (id, v) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET v = excluded.v",
    )
    .bind(id as i64)
    .bind(v as i64)
    .execute(pool)
    .await
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// Flushed only when asked (an hour's window): what the killed process queues.
#[write_behind(get_value(id), value = v, flush_after = "1h", max_attempts = 100)]
async fn save_later(id: u64, v: u64) -> Result<(), String> {
    write_store(id, v).await
}

/// Flushed by the background flushers of every process.
#[write_behind(get_value(id), value = v, flush_after = "20ms", max_attempts = 100)]
async fn save_soon(id: u64, v: u64) -> Result<(), String> {
    write_store(id, v).await
}

fn say(s: &str) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "@@ {s}");
    let _ = o.flush();
}

/// The child side.
#[test]
fn child() {
    let Ok(role) = std::env::var(ROLE) else {
        return; // run as a normal test: nothing to do
    };
    let url = std::env::var(URL).unwrap();
    let db = PathBuf::from(std::env::var(DB).unwrap());
    let count: u64 = std::env::var(COUNT).map_or(0, |c| c.parse().unwrap());
    let proc_no: u64 = std::env::var(PROC).map_or(0, |c| c.parse().unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        POOL.set(open_store(&db).await).unwrap();
        let client = redis::Client::open(url.as_str()).unwrap();
        REDIS.set(client.clone()).unwrap();
        let backend = RedisBackend::builder()
            .url(&url)
            .prefix("wbt")
            .write_queue(Duration::from_secs(1), 1_000_000)
            .connect()
            .await
            .unwrap();
        cache_core::registry::install(std::sync::Arc::new(backend));
        match role.as_str() {
            // queues `count` writes over 20 keys (value = write number), then waits to be killed
            "queue-and-hang" => {
                for i in 0..count {
                    save_later(i % 20, i).await.unwrap();
                }
                assert_eq!(cache_core::write_behind::stats().await.inline, 0);
                say("queued");
                tokio::time::sleep(DEADLINE).await;
            }
            // flushes what is queued (taking over writes of dead processes) and reports
            "flush" => {
                cache_core::flush_writes().await;
                let s = cache_core::write_behind::stats().await;
                say(&format!(
                    "flushed {} retried {} dead {} inline {}",
                    s.flushed, s.retried, s.dead_lettered, s.inline
                ));
            }
            // `count` writes to 100 keys; each write's value is the key's next counter value,
            // taken under a per-key lock together with the write (so the newest write of a
            // key holds its highest value)
            "write-same-keys" => {
                let mut con = client.get_multiplexed_async_connection().await.unwrap();
                for n in 0..count {
                    let id = (n * 7 + proc_no * 13) % 100;
                    let lock = format!("wbt:test-lock:{id}");
                    let end = Instant::now() + DEADLINE;
                    loop {
                        let got: Option<String> = redis::cmd("SET")
                            .arg(&lock)
                            .arg(proc_no)
                            .arg("NX")
                            .arg("PX")
                            .arg(10_000)
                            .query_async(&mut con)
                            .await
                            .unwrap();
                        if got.is_some() {
                            break;
                        }
                        assert!(Instant::now() < end, "key lock not taken");
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    let v: u64 = redis::cmd("INCR")
                        .arg(format!("wbt:test-counter:{id}"))
                        .query_async(&mut con)
                        .await
                        .unwrap();
                    save_soon(id, v).await.unwrap();
                    let _: i64 = redis::cmd("DEL")
                        .arg(&lock)
                        .query_async(&mut con)
                        .await
                        .unwrap();
                }
                cache_core::flush_writes().await;
                let s = cache_core::write_behind::stats().await;
                say(&format!(
                    "done inline {} dead {}",
                    s.inline, s.dead_lettered
                ));
            }
            // a synced node: queues one write (in process), then flushes it when the parent's
            // file (GO's path) appears
            "synced-write-then-flush" => {
                let node = tokio::task::spawn_blocking(move || synced_node(client))
                    .await
                    .unwrap();
                assert!(node.synchronizer().wait_subscribed(DEADLINE));
                cache_core::registry::install(std::sync::Arc::new(node));
                save_later(900, 9).await.unwrap();
                say("queued");
                let go = PathBuf::from(std::env::var(GO).unwrap());
                let end = Instant::now() + DEADLINE;
                while !go.exists() {
                    assert!(Instant::now() < end, "no signal to flush");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                cache_core::flush_writes().await;
                say("flushed");
                tokio::time::sleep(DEADLINE).await;
            }
            other => panic!("unknown role {other}"),
        }
    });
}

struct Proc {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(envs: &[(&str, String)]) -> Proc {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "child", "--nocapture", "--test-threads=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                // libtest may have written `test child ... ` before it on the line
                if let Some(at) = line.find("@@ ") {
                    let _ = tx.send(line[at + 3..].to_string());
                }
            }
        });
        Proc { child, lines: rx }
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(DEADLINE)
            .expect("the child answers within the deadline")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn setup() -> Option<(RedisServer, tempdir::Dir)> {
    let bin = require_redis_server()?;
    let server = RedisServer::start(&bin).expect("redis-server starts");
    Some((server, tempdir::Dir::new()))
}

mod tempdir {
    /// A directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "wb-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_s_writes_are_flushed_by_another_while_the_store_fails_for_a_while() {
    let Some((server, dir)) = setup() else { return };
    let db = dir.0.join("store.db");
    let flag = dir.0.join("store-down");
    let base = vec![
        (URL, server.url()),
        (DB, db.display().to_string()),
        (FAIL_FLAG, flag.display().to_string()),
    ];
    let store = open_store(&db).await;

    // process A queues 300 writes of 20 keys, and dies before flushing any
    let mut env = base.clone();
    env.push((ROLE, "queue-and-hang".into()));
    env.push((COUNT, "300".into()));
    let mut a = Proc::spawn(&env);
    assert_eq!(a.line(), "queued");
    a.child.kill().unwrap(); // SIGKILL
    a.child.wait().unwrap();
    assert!(
        read_store(&store).await.is_empty(),
        "nothing was flushed by A"
    );

    // read-your-writes from another process, also once the entry is gone: a miss of the
    // target returns the queued value (this process has no data store: the body would fail)
    let reader: std::sync::Arc<dyn cache_core::Backend> = std::sync::Arc::new(
        RedisBackend::builder()
            .url(server.url())
            .prefix("wbt")
            .connect()
            .await
            .unwrap(),
    );
    let read = cache_core::registry::with_backend(reader, async {
        get_value_invalidate(5).await.unwrap();
        get_value(5).await
    })
    .await;
    assert_eq!(read, Ok(285), "the last queued value of key 5");

    // the data store is down when process B starts flushing
    std::fs::write(&flag, b"down").unwrap();
    let mut env = base.clone();
    env.push((ROLE, "flush".into()));
    let b = Proc::spawn(&env);
    let mut con = server.connection().unwrap();
    let end = Instant::now() + DEADLINE;
    loop {
        let failures: Option<u64> = redis::cmd("GET")
            .arg("wbt:failures")
            .query(&mut con)
            .unwrap();
        if failures.unwrap_or(0) >= 3 {
            break;
        }
        assert!(Instant::now() < end, "B never tried to write");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    std::fs::remove_file(&flag).unwrap(); // the store is back
    let report = b.line();
    assert!(report.contains(" dead 0 "), "{report}");
    assert!(!report.contains("retried 0 "), "{report}");

    // every key holds its last acknowledged value (the last of A's writes to it)
    let expected: std::collections::BTreeMap<u64, u64> = (0..20).map(|k| (k, 280 + k)).collect();
    assert_eq!(read_store(&store).await, expected);
    let left: u64 = redis::cmd("XLEN")
        .arg("wbt:wb:{write_behind_redis::save_later}")
        .query(&mut con)
        .unwrap();
    assert_eq!(left, 0, "the stream is empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_writing_the_same_keys_leave_each_key_s_newest_value() {
    let Some((server, dir)) = setup() else { return };
    let db = dir.0.join("store.db");
    let store = open_store(&db).await;
    let mut procs = Vec::new();
    for (p, count) in [(0, 3334u64), (1, 3333), (2, 3333)] {
        let env = vec![
            (URL, server.url()),
            (DB, db.display().to_string()),
            (ROLE, "write-same-keys".to_string()),
            (COUNT, count.to_string()),
            (PROC, p.to_string()),
        ];
        procs.push(Proc::spawn(&env));
    }
    for p in &procs {
        let line = p.line();
        assert_eq!(line, "done inline 0 dead 0");
    }
    // the processes flushed everything before reporting; the newest value of each key is its
    // counter (taken with the write under the key's lock)
    let mut con = server.connection().unwrap();
    let mut expected = std::collections::BTreeMap::new();
    for id in 0..100u64 {
        let v: Option<u64> = redis::cmd("GET")
            .arg(format!("wbt:test-counter:{id}"))
            .query(&mut con)
            .unwrap();
        if let Some(v) = v {
            expected.insert(id, v);
        }
    }
    let total: u64 = expected.values().sum();
    assert_eq!(total, 10_000, "10,000 writes in total");
    assert_eq!(read_store(&store).await, expected);
}

fn shared_store_path() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("write-behind-{}.db", std::process::id()))
}

/// The data store of the tests that run cached fns in this process (the pool is one per
/// process): a file under cargo's temporary directory, made once.
async fn shared_store() -> SqlitePool {
    static INIT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    INIT.get_or_init(|| async {
        let path = shared_store_path();
        let _ = std::fs::remove_file(&path);
        let _ = POOL.set(open_store(&path).await);
    })
    .await;
    POOL.get().expect("made above").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layered_nodes_read_each_other_s_queued_writes_until_flushed() {
    let Some((server, _dir)) = setup() else {
        return;
    };
    let store = shared_store().await;
    let url = server.url();
    let node = move || -> std::sync::Arc<dyn cache_core::Backend> {
        let l2 = RedisBackend::builder()
            .url(&url)
            .prefix("wbl")
            .connect_blocking()
            .unwrap();
        std::sync::Arc::new(cache_redis::LayeredBackend::builder(l2).build().unwrap())
    };
    let (a, b) = tokio::task::spawn_blocking(move || (node(), node()))
        .await
        .unwrap();
    use cache_core::registry::with_backend;
    assert_eq!(with_backend(a.clone(), save_later(1, 42)).await, Ok(()));
    assert_eq!(with_backend(b.clone(), get_value(1)).await, Ok(42));
    // the entry is gone on every node: a miss reads the queued write, not the store
    with_backend(b.clone(), get_value_invalidate(1))
        .await
        .unwrap();
    assert_eq!(with_backend(a.clone(), get_value(1)).await, Ok(42));
    assert_eq!(with_backend(b.clone(), get_value(1)).await, Ok(42));
    assert_eq!(read_store(&store).await.get(&1), None, "not flushed yet");
    // flushed (through the queue of the layered node's Redis): the store has it, and a miss
    // reads the store again
    with_backend(a.clone(), cache_core::flush_writes()).await;
    assert_eq!(read_store(&store).await.get(&1), Some(&42));
    with_backend(b.clone(), get_value_invalidate(1))
        .await
        .unwrap();
    sqlx::query("UPDATE kv SET v = 43 WHERE id = 1")
        .execute(&store)
        .await
        .unwrap();
    assert_eq!(with_backend(b.clone(), get_value(1)).await, Ok(43));
}

/// Synchronized local caches (`SyncedBackend`) keep their write-behind queue in process: node B
/// (this process) caches the data store's older value while node A (a child process) has a
/// write of it queued; A's flush invalidates the entry through the synchronization, so B reads
/// the new value after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synced_node_drops_what_it_cached_before_another_node_s_flush() {
    let Some((server, dir)) = setup() else { return };
    shared_store().await;
    let client = server.client();
    let b = tokio::task::spawn_blocking(move || {
        let n = synced_node(client);
        assert!(n.synchronizer().wait_subscribed(DEADLINE));
        std::sync::Arc::new(n)
    })
    .await
    .unwrap();
    use cache_core::registry::with_backend;
    let read = || with_backend(b.clone(), get_value(900));
    assert_eq!(read().await, Ok(0), "no row 900 yet");
    let go = dir.0.join("flush-now");
    let a = Proc::spawn(&[
        (URL, server.url()),
        (DB, shared_store_path().display().to_string()),
        (ROLE, "synced-write-then-flush".into()),
        (GO, go.display().to_string()),
    ]);
    assert_eq!(a.line(), "queued");
    // A's write-through invalidated the entry on B too; B cannot see A's in-process queue, so
    // it reads and caches what the store says
    let cached = || with_backend(b.clone(), async { get_value_entry(900).get().await });
    let end = Instant::now() + DEADLINE;
    while cached().await.is_some() {
        assert!(Instant::now() < end, "A's invalidation never reached B");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(read().await, Ok(0));
    assert_eq!(cached().await, Some(0), "B cached the store's older value");
    std::fs::write(&go, b"go").unwrap();
    assert_eq!(a.line(), "flushed");
    let end = Instant::now() + DEADLINE;
    while read().await != Ok(9) {
        assert!(
            Instant::now() < end,
            "B still serves what it cached before the flush"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn synced_node(client: redis::Client) -> cache_redis::SyncedBackend {
    cache_redis::SyncedBackend::builder(cache_core::MemoryBackend::new())
        .client(client)
        .options(cache_redis::SyncOptions::new("wb:sync"))
        .build()
        .unwrap()
}

/// Clearing the cache (also what a backend does after it finds the server restarted or failed
/// over) drops entries, not queued writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearing_the_cache_keeps_queued_writes() {
    let Some((server, _dir)) = setup() else {
        return;
    };
    let store = shared_store().await;
    let backend = RedisBackend::builder()
        .url(server.url())
        .prefix("wbc")
        .connect()
        .await
        .unwrap();
    let shared: std::sync::Arc<dyn cache_core::Backend> = std::sync::Arc::new(backend.clone());
    use cache_core::registry::with_backend;
    with_backend(shared.clone(), save_later(3000, 30))
        .await
        .unwrap();
    cache_core::Backend::clear(&backend).await.unwrap();
    let mut con = server.connection().unwrap();
    let left: u64 = redis::cmd("XLEN")
        .arg("wbc:wb:{write_behind_redis::save_later}")
        .query(&mut con)
        .unwrap();
    assert_eq!(left, 1, "the queued write survived the clear");
    with_backend(shared, cache_core::flush_writes()).await;
    assert_eq!(read_store(&store).await.get(&3000), Some(&30));
}

static SLOW_RUNNING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static SLOW_MAX: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static SLOW_DONE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A body slower than the key lock lasts (1 s here): every write of the key runs.
#[write_behind(get_value(id), value = v, flush_after = "10ms", coalesce = false)]
async fn save_slowly(id: u64, v: u64) -> Result<(), String> {
    use std::sync::atomic::Ordering::SeqCst;
    let now = SLOW_RUNNING.fetch_add(1, SeqCst) + 1;
    SLOW_MAX.fetch_max(now, SeqCst);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    SLOW_RUNNING.fetch_sub(1, SeqCst);
    SLOW_DONE.fetch_add(1, SeqCst);
    let _ = (id, v);
    Ok(())
}

/// A body running longer than the key lock lasts keeps the lock (renewed), so a second write of
/// the same key, taken by the other flusher loop of the process, waits instead of running at the
/// same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_body_per_key_even_when_it_outlasts_the_lock() {
    use std::sync::atomic::Ordering::SeqCst;
    let Some((server, _dir)) = setup() else {
        return;
    };
    shared_store().await;
    let backend: std::sync::Arc<dyn cache_core::Backend> = std::sync::Arc::new(
        RedisBackend::builder()
            .url(server.url())
            .prefix("wbs")
            .write_queue(Duration::from_secs(1), 1000)
            .connect()
            .await
            .unwrap(),
    );
    use cache_core::registry::with_backend;
    with_backend(backend.clone(), save_slowly(1, 1))
        .await
        .unwrap();
    let flush = tokio::spawn(with_backend(backend.clone(), cache_core::flush_writes()));
    let end = Instant::now() + DEADLINE;
    while SLOW_RUNNING.load(SeqCst) == 0 {
        assert!(Instant::now() < end, "the first body never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // the second write of the key, while the first body runs (a second flush loop takes it)
    with_backend(backend.clone(), save_slowly(1, 2))
        .await
        .unwrap();
    let second = tokio::spawn(with_backend(backend.clone(), cache_core::flush_writes()));
    flush.await.unwrap();
    second.await.unwrap();
    assert_eq!(SLOW_DONE.load(SeqCst), 2, "both writes ran");
    assert_eq!(
        SLOW_MAX.load(SeqCst),
        1,
        "never two bodies of the key at once"
    );
}
