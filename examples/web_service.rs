//! A web service (axum) whose reads are cached with `#[cached]` and whose writes use
//! `#[invalidates]` and `#[cache_put]`. The service itself is in `examples/web/app.rs`.
//!
//! Run it on the embedded defaults (SQLite in memory, memory cache), no server needed:
//!
//! ```text
//! cargo run --example web_service
//! curl localhost:3000/users/1
//! curl localhost:3000/teams/1                     # calls the cached get_user for each member
//! curl -X PUT localhost:3000/users/1 -H 'content-type: application/json' -d '{"name":"Ada L."}'
//! curl localhost:3000/teams/1                     # the rename shows: the page was dropped too
//! curl -X POST localhost:3000/users -H 'content-type: application/json' \
//!      -d '{"name":"Alan","email":"alan@example.com","team_id":2}'
//! curl localhost:3000/stats                       # hits, misses, fills per function and backend
//! curl localhost:3000/metrics                     # the same in Prometheus text
//! ```
//!
//! Environment: `PORT` (default 3000, `0` picks a free one), `DATABASE_URL`
//! (`postgres://user@host/db` or `sqlite://file.db?mode=rwc`; default SQLite in memory),
//! `REDIS_URL` (local caches kept in sync over Redis pub/sub, the team directory stored in
//! Redis; default memory cache) or `REDIS_CLUSTER_URLS` (the same on a Redis Cluster:
//! comma-separated seed node URLs), `QUERY_DELAY_MS` (a simulated network delay per query).
//!
//! A bounded load run (starts the service on a free port, 2,000 GETs over one keep-alive
//! connection with the cache on and off, prints p50/p99):
//!
//! ```text
//! cargo run --release --example web_service -- --load 2000 --delay-ms 2
//! ```

#[path = "web/app.rs"]
mod app;

use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("--load") => load(&args).await,
        Some(other) => Err(format!(
            "unknown argument `{other}` (use no argument to serve, or --load N [--delay-ms MS])"
        )),
        None => serve().await,
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn serve() -> Result<(), String> {
    let config = app::Config::from_env().map_err(|e| e.to_string())?;
    let port: u16 = match std::env::var("PORT") {
        Ok(p) if !p.is_empty() => p
            .parse()
            .map_err(|_| format!("PORT: `{p}` is not a port number"))?,
        _ => 3000,
    };
    let app = app::build(config).await.map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!(
        "listening on http://{addr} (database: {}, cache: {})",
        app.state.db.kind(),
        app.state.caches.description
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    app::serve_until(listener, app, shutdown)
        .await
        .map_err(|e| e.to_string())
}

/// `--load N [--delay-ms MS]`: N GETs of `/users/{id}` and `/teams/{id}` with the cache on,
/// then with it off, over one keep-alive connection; prints latency percentiles.
async fn load(args: &[String]) -> Result<(), String> {
    let requests: usize = args
        .get(1)
        .and_then(|n| n.parse().ok())
        .ok_or("--load needs a number of requests")?;
    let delay_ms: u64 = match args.iter().position(|a| a == "--delay-ms") {
        Some(i) => args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .ok_or("--delay-ms needs a number")?,
        None => 2,
    };
    let mut config = app::Config::from_env().map_err(|e| e.to_string())?;
    config.query_delay = Duration::from_millis(delay_ms);
    let app = app::build(config).await.map_err(|e| e.to_string())?;
    println!(
        "load run: {requests} GETs per mode over one keep-alive connection; database {} with {delay_ms} ms per query; cache {}",
        app.state.db.kind(),
        app.state.caches.description
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let base = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let server = tokio::spawn(app::serve(listener, app));
    let client = reqwest::Client::new();
    for (label, enabled) in [("cache on ", true), ("cache off", false)] {
        cache_core::registry::set_enabled(enabled);
        let mut user = Vec::with_capacity(requests);
        let mut team = Vec::with_capacity(requests);
        for i in 0..requests {
            // 9 users and 3 teams: after the first round every read is a hit when the cache is on
            let (path, into) = if i % 4 == 3 {
                (format!("/teams/{}", 1 + i % 3), &mut team)
            } else {
                (format!("/users/{}", 1 + i % 9), &mut user)
            };
            let start = Instant::now();
            let resp = client
                .get(format!("{base}{path}"))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status();
            resp.bytes().await.map_err(|e| e.to_string())?;
            into.push(start.elapsed());
            if !status.is_success() {
                return Err(format!("GET {path}: {status}"));
            }
        }
        report(label, "GET /users/{id}", &mut user);
        report(label, "GET /teams/{id}", &mut team);
    }
    cache_core::registry::set_enabled(true);
    server.abort();
    Ok(())
}

fn report(label: &str, what: &str, samples: &mut [Duration]) {
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    println!(
        "{label}  {what:<16} n={:<5} p50 {:>9.3?}  p99 {:>9.3?}  max {:>9.3?}",
        samples.len(),
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
}
