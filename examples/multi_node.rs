//! Three node processes, each with its own local cache (the L1 of a [`LayeredBackend`] over
//! Redis), kept coherent through Redis: a write on one node is seen by the others within
//! milliseconds.
//!
//! ```text
//! cargo run --example multi_node                          # starts its own redis-server
//! REDIS_URL=redis://127.0.0.1:6379/ cargo run --example multi_node
//! cargo run --example multi_node -- --coherence pubsub    # or tracking; default: both, in turn
//! REDIS_CLUSTER_URLS=redis://127.0.0.1:7000,redis://127.0.0.1:7001 cargo run --example multi_node
//! ```
//!
//! Redis: `REDIS_URL` if set, or `REDIS_CLUSTER_URLS` (seed nodes of a Redis Cluster; pub/sub
//! coherence only: client tracking is refused on a cluster) (keys under a prefix unique to the
//! run, deleted at the end), else a `redis-server` (from `REDIS_SERVER` or `PATH`) started on a
//! free loopback port and stopped at the end. Without either the example says so and exits
//! with status 1.
//!
//! What it does, for each coherence mode (`tracking`: RESP3 client tracking, Redis pushes the
//! invalidation of the entry key; `pubsub`: the writing node publishes it on a channel):
//!
//! 1. starts nodes A, B and C: this same executable with `--node NAME`, each answering
//!    commands on stdin (`get ID`, `rename ID NAME`, `quit`) with one line on stdout. A node's
//!    `get_user(id)` is a `#[cached]` fn reading the source of truth, a Redis hash
//!    (`PREFIX:users`), counted as a "database" read; `rename_user` is an `#[invalidates]` fn
//!    that writes the hash;
//! 2. reads user 1 on every node twice (the first read on A fills Redis from the database; B
//!    and C fill their L1 from Redis; the second reads are L1 hits);
//! 3. renames user 1 through node A;
//! 4. polls B and C (bounded: 5 s) until both return the new name, and prints how long it took;
//! 5. tells the nodes to quit (killing any that does not exit within 5 s).
//!
//! `tests/multi_node.rs` runs the same flow.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cache_core::{cached, invalidates, registry, Backend};
use cache_redis::{Coherence, LayeredBackend, RedisBackend, SyncOptions, TrackingMode};

/// Where the nodes' Redis is.
#[derive(Debug, Clone)]
pub enum Target {
    /// One server's URL.
    Server(String),
    /// A Redis Cluster's comma-separated seed node URLs.
    Cluster(String),
}

impl Target {
    /// The seed URLs (one for a server).
    fn urls(&self) -> Vec<&str> {
        match self {
            Target::Server(url) => vec![url.as_str()],
            Target::Cluster(urls) => urls.split(',').map(str::trim).collect(),
        }
    }

    /// A plain connection for the example's own data (the "database").
    fn connection(&self) -> Result<Box<dyn redis::ConnectionLike + Send>, String> {
        match self {
            Target::Server(url) => {
                let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
                let con = client
                    .get_connection_with_timeout(DEADLINE)
                    .map_err(|e| format!("cannot connect to Redis: {e}"))?;
                Ok(Box::new(con))
            }
            Target::Cluster(_) => {
                let client = redis::cluster::ClusterClient::builder(self.urls())
                    .connection_timeout(DEADLINE)
                    .build()
                    .map_err(|e| e.to_string())?;
                let con = client
                    .get_connection()
                    .map_err(|e| format!("cannot connect to the cluster: {e}"))?;
                Ok(Box::new(con))
            }
        }
    }

    /// The cache's L2 builder.
    fn builder(&self) -> cache_redis::RedisBackendBuilder {
        match self {
            Target::Server(url) => RedisBackend::builder().url(url.as_str()),
            Target::Cluster(_) => RedisBackend::builder().cluster_urls(self.urls()),
        }
    }

    /// The node's command-line arguments naming it.
    fn args(&self) -> [&str; 2] {
        match self {
            Target::Server(url) => ["--redis", url],
            Target::Cluster(urls) => ["--cluster", urls],
        }
    }
}

/// Deadline of every wait: node start, one command's reply, propagation, exit.
pub const DEADLINE: Duration = Duration::from_secs(5);
/// The name user 1 gets.
pub const NEW_NAME: &str = "Ada Lovelace";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--node") {
        return node_main(&args);
    }
    let modes: Vec<&str> = match flag(&args, "--coherence") {
        Some(m @ ("tracking" | "pubsub")) => vec![m],
        Some(other) => {
            eprintln!("--coherence: `{other}` is not `tracking` or `pubsub`");
            return ExitCode::FAILURE;
        }
        None => vec!["tracking", "pubsub"],
    };
    let mut _server = None;
    let cluster = std::env::var("REDIS_CLUSTER_URLS")
        .ok()
        .filter(|u| !u.trim().is_empty());
    let target = match std::env::var("REDIS_URL") {
        _ if cluster.is_some() => Target::Cluster(cluster.unwrap_or_default()),
        Ok(url) if !url.is_empty() => Target::Server(url),
        _ => {
            let Some(bin) = find_redis_server() else {
                eprintln!(
                    "multi_node needs Redis: set REDIS_URL (e.g. REDIS_URL=redis://127.0.0.1:6379/) \
                     or install redis-server (on PATH, or its path in REDIS_SERVER) so the example \
                     can start its own"
                );
                return ExitCode::FAILURE;
            };
            match test_support::RedisServer::start(&bin) {
                Ok(s) => {
                    let url = s.url();
                    println!("started {} on {url}", bin.display());
                    _server = Some(s);
                    Target::Server(url)
                }
                Err(e) => {
                    eprintln!("could not start {}: {e}", bin.display());
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("cannot find this executable to start the nodes: {e}");
            return ExitCode::FAILURE;
        }
    };
    let modes = match target {
        // client tracking is refused on a cluster
        Target::Cluster(_) => modes.into_iter().filter(|m| *m == "pubsub").collect(),
        Target::Server(_) => modes,
    };
    for mode in modes {
        if let Err(e) = run_demo(&target, &exe, mode) {
            eprintln!("error ({mode}): {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).map(String::as_str)
}

/// `redis-server` from `REDIS_SERVER`, else from `PATH`.
fn find_redis_server() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("REDIS_SERVER").map(PathBuf::from) {
        if p.is_file() {
            return Some(p);
        }
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("redis-server"))
        .find(|p| p.is_file())
}

// ---------------------------------------------------------------------------------------------
// The parent: starts the nodes and drives them
// ---------------------------------------------------------------------------------------------

/// What a run measured.
#[derive(Debug)]
pub struct Outcome {
    /// Per node (B, C): time from A's rename reply to the node returning the new name, and the
    /// number of reads it took.
    pub propagation: Vec<(String, Duration, usize)>,
}

/// One node process; killed (if still running) when dropped.
struct Node {
    name: String,
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Node {
    fn start(
        exe: &Path,
        name: &str,
        target: &Target,
        prefix: &str,
        mode: &str,
    ) -> Result<Node, String> {
        let mut child = Command::new(exe)
            .args(["--node", name, "--prefix", prefix])
            .args(target.args())
            .args(["--coherence", mode])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start node {name}: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut node = Node {
            name: name.to_string(),
            child,
            stdin,
            lines,
        };
        let ready = node.reply()?;
        if ready != format!("ready {name}") {
            return Err(format!("node {name}: unexpected first line `{ready}`"));
        }
        Ok(node)
    }

    /// The next line the node prints, waiting at most `DEADLINE`.
    fn reply(&mut self) -> Result<String, String> {
        match self.lines.recv_timeout(DEADLINE) {
            Ok(line) => Ok(line),
            Err(RecvTimeoutError::Timeout) => {
                Err(format!("node {}: no reply within {DEADLINE:?}", self.name))
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.try_wait().ok().flatten();
                Err(format!("node {} exited ({status:?})", self.name))
            }
        }
    }

    fn send(&mut self, command: &str) -> Result<String, String> {
        writeln!(self.stdin, "{command}")
            .and_then(|_| self.stdin.flush())
            .map_err(|e| format!("node {}: {e}", self.name))?;
        let line = self.reply()?;
        match line.strip_prefix("ok ") {
            Some(rest) => Ok(rest.to_string()),
            None => Err(format!("node {}: `{command}` -> `{line}`", self.name)),
        }
    }

    /// `get_user(id)` on this node: (source, microseconds, name).
    fn get(&mut self, id: u64) -> Result<(String, u64, String), String> {
        let r = self.send(&format!("get {id}"))?;
        let mut parts = r.splitn(3, ' ');
        let (Some(source), Some(us), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("node {}: bad reply `{r}`", self.name));
        };
        let us = us.parse().map_err(|_| format!("bad reply `{r}`"))?;
        Ok((source.to_string(), us, name.to_string()))
    }

    /// Asks the node to quit; kills it if it has not exited within `DEADLINE`.
    fn quit(mut self) -> Result<(), String> {
        let _ = writeln!(self.stdin, "quit").and_then(|_| self.stdin.flush());
        let end = Instant::now() + DEADLINE;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(format!("node {} exited: {status}", self.name)),
                Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(5)),
                _ => return Err(format!("node {} did not exit; killed", self.name)),
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Runs the whole flow on `target` (one server or a cluster), with nodes started from `exe`;
/// prints as it goes.
pub fn run_demo(target: &Target, exe: &Path, mode: &str) -> Result<Outcome, String> {
    let prefix = format!("multi-node-{}-{mode}", std::process::id());
    let mut con = target.connection()?;
    let users = format!("{prefix}:users");
    redis::cmd("HSET")
        .arg(&users)
        .arg(1)
        .arg("Ada")
        .query::<()>(&mut *con)
        .map_err(|e| e.to_string())?;

    let result = drive(exe, target, &prefix, mode);

    // clean up: the source of truth and every key of this run's cache (on each node of a
    // cluster; a replica refuses the deletes, its master does them)
    let _ = redis::cmd("DEL").arg(&users).query::<()>(&mut *con);
    for url in target.urls() {
        let Ok(mut node) =
            redis::Client::open(url).and_then(|c| c.get_connection_with_timeout(DEADLINE))
        else {
            continue;
        };
        let mut keys: Vec<String> = Vec::new();
        if let Ok(iter) = redis::cmd("SCAN")
            .cursor_arg(0)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .clone()
            .iter::<String>(&mut node)
        {
            keys.extend(iter.filter_map(Result::ok).take(10_000));
        }
        for k in keys {
            let _ = redis::cmd("DEL").arg(k).query::<()>(&mut node);
        }
    }
    result
}

fn drive(exe: &Path, target: &Target, prefix: &str, mode: &str) -> Result<Outcome, String> {
    println!("\n== coherence: {mode} ==");
    let started = Instant::now();
    let mut nodes = Vec::new();
    for name in ["A", "B", "C"] {
        nodes.push(Node::start(exe, name, target, prefix, mode)?);
    }
    println!(
        "nodes A, B, C started and coherent in {:.0?}",
        started.elapsed()
    );

    for round in ["first read ", "second read"] {
        for node in nodes.iter_mut() {
            let (source, us, name) = node.get(1)?;
            println!(
                "  {round} of user 1 on {}: {name:<14} from {source:<8} {us:>6} us",
                node.name
            );
            if name != "Ada" {
                return Err(format!("node {} read `{name}`, expected `Ada`", node.name));
            }
        }
    }

    let t = Instant::now();
    nodes[0].send(&format!("rename 1 {NEW_NAME}"))?;
    let renamed = Instant::now();
    println!(
        "renamed user 1 to `{NEW_NAME}` through node A ({} us)",
        t.elapsed().as_micros()
    );

    let mut propagation = Vec::new();
    let mut pending: Vec<usize> = vec![1, 2];
    let mut reads = [0usize; 3];
    while !pending.is_empty() {
        if renamed.elapsed() > DEADLINE {
            let late: Vec<&str> = pending.iter().map(|&i| nodes[i].name.as_str()).collect();
            return Err(format!(
                "{late:?} still return the old name {DEADLINE:?} after the rename"
            ));
        }
        let mut still = Vec::new();
        for i in pending {
            let (source, _, name) = nodes[i].get(1)?;
            reads[i] += 1;
            if name == NEW_NAME {
                let took = renamed.elapsed();
                println!(
                    "  node {} returns `{name}` (from {source}) {:>6} us after the rename, read #{}",
                    nodes[i].name,
                    took.as_micros(),
                    reads[i]
                );
                propagation.push((nodes[i].name.clone(), took, reads[i]));
            } else {
                still.push(i);
            }
        }
        pending = still;
    }
    let (source, us, name) = nodes[0].get(1)?;
    println!("  node A returns `{name}` (from {source}, {us} us)");
    if name != NEW_NAME {
        return Err(format!("node A read `{name}` after its own rename"));
    }
    for node in nodes {
        node.quit()?;
    }
    println!("nodes stopped");
    Ok(Outcome { propagation })
}

// ---------------------------------------------------------------------------------------------
// A node: a process with a cached get_user and an invalidating rename_user
// ---------------------------------------------------------------------------------------------

/// Reads of the source of truth by this node.
static DB_READS: AtomicU64 = AtomicU64::new(0);
/// A connection the example's own data goes through.
type DbConnection = Box<dyn redis::ConnectionLike + Send>;

/// The source of truth: a connection to Redis and the hash holding the users.
static DB: OnceLock<(Mutex<DbConnection>, String)> = OnceLock::new();

fn db<T>(
    f: impl FnOnce(&mut dyn redis::ConnectionLike, &str) -> redis::RedisResult<T>,
) -> Result<T, String> {
    let (con, users) = DB.get().ok_or("database not set up")?;
    let mut con = con.lock().map_err(|e| e.to_string())?;
    f(&mut **con, users).map_err(|e| e.to_string())
}

/// A user's name, read from the source of truth on a miss; cached for 5 minutes.
#[cached(ttl = "5m")]
fn get_user(id: u64) -> Result<String, String> {
    DB_READS.fetch_add(1, Ordering::Relaxed);
    let name: Option<String> = db(|con, users| redis::cmd("HGET").arg(users).arg(id).query(con))?;
    name.ok_or_else(|| format!("no user {id}"))
}

/// Renames a user in the source of truth; on `Ok` the entry `get_user(id)` is dropped on every
/// node (Redis, this node's L1, and the other nodes' L1 through the coherence channel).
#[invalidates(get_user(id))]
fn rename_user(id: u64, name: &str) -> Result<(), String> {
    db(|con, users| redis::cmd("HSET").arg(users).arg(id).arg(name).query(con))
}

/// `--node NAME --redis URL|--cluster URLS --prefix PREFIX --coherence tracking|pubsub`:
/// serves commands on stdin until `quit` or end of input.
pub fn node_main(args: &[String]) -> ExitCode {
    match node(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("node error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn node(args: &[String]) -> Result<(), String> {
    let need = |name| flag(args, name).ok_or(format!("{name} is required"));
    let (name, prefix) = (need("--node")?, need("--prefix")?);
    let target = match (flag(args, "--redis"), flag(args, "--cluster")) {
        (Some(url), None) => Target::Server(url.to_string()),
        (None, Some(urls)) => Target::Cluster(urls.to_string()),
        _ => return Err("one of --redis and --cluster is required".into()),
    };
    let coherence = match flag(args, "--coherence").unwrap_or("tracking") {
        "pubsub" => Coherence::PubSub(SyncOptions::new(format!("{prefix}:sync"))),
        _ => Coherence::Tracking(TrackingMode::Default),
    };
    let con = target.connection()?;
    let _ = DB.set((Mutex::new(con), format!("{prefix}:users")));
    let l2 = target
        .builder()
        .prefix(prefix)
        .gc(false)
        .connect_blocking()
        .map_err(|e| e.to_string())?;
    let backend = LayeredBackend::builder(l2)
        .coherence(coherence)
        .build()
        .map_err(|e| e.to_string())?;
    if !backend.wait_coherent(DEADLINE) {
        return Err(format!("coherence channel not up within {DEADLINE:?}"));
    }
    let backend = Arc::new(backend);
    registry::install(backend.clone());
    println!("ready {name}");

    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        let mut words = line.splitn(3, ' ');
        let reply = match (words.next(), words.next(), words.next()) {
            (Some("get"), Some(id), None) => {
                let id: u64 = id.parse().map_err(|_| format!("bad id `{id}`"))?;
                let (l1_hits, reads) = (backend.stats().hits, DB_READS.load(Ordering::Relaxed));
                let t = Instant::now();
                let user = get_user(id);
                let us = t.elapsed().as_micros();
                let source = if DB_READS.load(Ordering::Relaxed) != reads {
                    "database"
                } else if backend.stats().hits != l1_hits {
                    "L1"
                } else {
                    "Redis"
                };
                match user {
                    Ok(name) => format!("ok {source} {us} {name}"),
                    Err(e) => format!("error {e}"),
                }
            }
            (Some("rename"), Some(id), Some(new_name)) => {
                let id: u64 = id.parse().map_err(|_| format!("bad id `{id}`"))?;
                match rename_user(id, new_name) {
                    Ok(()) => "ok renamed".to_string(),
                    Err(e) => format!("error {e}"),
                }
            }
            (Some("quit"), None, None) => break,
            _ => format!("error unknown command `{line}`"),
        };
        println!("{reply}");
    }
    Ok(())
}
