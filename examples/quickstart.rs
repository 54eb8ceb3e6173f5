//! The quickstart: caching on the embedded default (the in-process memory backend), no
//! configuration, no Redis.
//!
//! Run: `cargo run --example quickstart`
//!
//! It shows a slow function becoming fast, an `#[invalidates]` call taking effect, a dependency
//! invalidation cascading through a nested cached call, and the stats at the end.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use cache_core::{cached, invalidates};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
    team: u32,
}

/// A stand-in for a database: every read takes 50 ms.
static DB: Mutex<Vec<(u64, &str, u32)>> = Mutex::new(Vec::new());

async fn query_user(id: u64) -> Option<User> {
    tokio::time::sleep(Duration::from_millis(50)).await;
    let db = DB.lock().expect("db lock");
    db.iter()
        .find(|(uid, _, _)| *uid == id)
        .map(|&(id, name, team)| User {
            id,
            name: name.to_string(),
            team,
        })
}

/// Cached for 5 minutes; every entry depends on `user:{id}`.
#[cached(ttl = "5m", depends_on = ["user:{id}"])]
async fn get_user(id: u64) -> Option<User> {
    query_user(id).await
}

/// A page built from other cached calls: each `get_user` it calls becomes a dependency of the
/// page's entry, so changing one user drops the page too.
#[cached(ttl = "1m")]
async fn team_roster(team: u32) -> Vec<String> {
    tokio::time::sleep(Duration::from_millis(20)).await;
    let ids: Vec<u64> = {
        let db = DB.lock().expect("db lock");
        db.iter().filter(|u| u.2 == team).map(|u| u.0).collect()
    };
    let mut names = Vec::new();
    for id in ids {
        if let Some(u) = get_user(id).await {
            names.push(u.name);
        }
    }
    names
}

/// Renames a user; on `Ok` the entry `get_user(id)` is dropped (and, transitively, every entry
/// that depends on it).
#[invalidates(get_user(id))]
async fn rename_user(id: u64, name: &'static str) -> Result<(), String> {
    let mut db = DB.lock().map_err(|e| e.to_string())?;
    let row = db.iter_mut().find(|u| u.0 == id).ok_or("no such user")?;
    row.1 = name;
    Ok(())
}

async fn timed<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    let start = Instant::now();
    let r = f.await;
    println!("  {what:<32} {:>10.3?}", start.elapsed());
    r
}

#[tokio::main]
async fn main() {
    DB.lock()
        .expect("db lock")
        .extend([(1, "Ada", 10), (2, "Grace", 10), (3, "Linus", 20)]);

    println!("1. a slow function becomes fast");
    let u = timed("get_user(1)  miss", get_user(1)).await;
    timed("get_user(1)  first hit", get_user(1)).await;
    let start = Instant::now();
    for _ in 0..100_000 {
        std::hint::black_box(get_user(std::hint::black_box(1)).await);
    }
    println!(
        "  {:<32} {:>10.3?}",
        "get_user(1)  hit, mean of 100k",
        start.elapsed() / 100_000
    );
    println!("  -> {u:?}");

    println!("\n2. #[invalidates] takes effect");
    rename_user(1, "Ada Lovelace").await.expect("renamed");
    let u = timed("get_user(1)  after rename", get_user(1)).await;
    println!("  -> {:?}", u.map(|u| u.name));

    println!("\n3. invalidation cascades through a nested cached call");
    let r = timed("team_roster(10) miss", team_roster(10)).await;
    println!("  -> {r:?}");
    timed("team_roster(10) hit", team_roster(10)).await;
    rename_user(2, "Grace Hopper").await.expect("renamed");
    let r = timed("team_roster(10) after rename", team_roster(10)).await;
    println!("  -> {r:?}  (get_user(2) was invalidated, the roster that used it too)");
    cache_core::invalidate_dependency("user:1")
        .await
        .expect("memory backend");
    let r = timed("team_roster(10) after user:1", team_roster(10)).await;
    println!("  -> {r:?}  (dependency `user:1` dropped get_user(1) and the roster)");

    println!("\n4. stats");
    for s in cache_core::runtime::all_stats() {
        println!(
            "  {:<12} hits {:>2}  misses {:>2}  fills {:>2}  mean fill {:>9.3?}  time saved {:>9.3?}",
            s.function, s.hits, s.misses, s.fills, s.mean_fill_time, s.time_saved
        );
    }
    let b = cache_core::registry::default_backend().stats();
    println!(
        "  backend {}: {} entries, {} hits, {} misses, {} invalidated",
        cache_core::registry::default_backend().name(),
        b.entries,
        b.hits,
        b.misses,
        b.invalidations
    );
}
