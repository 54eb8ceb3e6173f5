//! The web service of the `web_service` example, as a module the example's `main`, the
//! `multi_node` example and the integration test (`tests/web_service.rs`) all include with
//! `#[path = "..."] mod app;`.
//!
//! * Data: users and teams in SQLite (embedded, in memory, created and seeded at start) or in
//!   PostgreSQL when [`Config::database_url`] is a `postgres://` URL (also `sqlite://file.db`).
//! * Cache: the memory backend by default; with [`Config::redis_url`], each node keeps a local
//!   memory cache whose invalidations travel to the other nodes over Redis pub/sub
//!   ([`cache_redis::with_redis_sync`]), and the `shared` profile (the team directory) lives in
//!   Redis itself ([`cache_redis::RedisBackend`]), computed once for all nodes.
//! * Endpoints: `GET /users/{id}`, `PUT /users/{id}` (rename), `POST /users` (create),
//!   `GET /teams` (directory), `GET /teams/{id}` (team page), `GET /stats` (JSON),
//!   `GET /metrics` (Prometheus text), `GET /health`.
#![allow(dead_code)] // each including crate uses a different part

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cache_core::{cache_put, cached, invalidates, registry, Backend, MemoryBackend, Profile};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::AnyPool;
use sqlx::Row;

// ------------------------------------------------------------------------------------------
// Configuration and errors
// ------------------------------------------------------------------------------------------

/// What the service needs to start.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `postgres://...` or `sqlite://file.db`; `None`: SQLite in memory, seeded at start.
    pub database_url: Option<String>,
    /// `redis://...`: local caches kept in sync over Redis, the `shared` profile in Redis.
    /// `None`: the memory backend.
    pub redis_url: Option<String>,
    /// Comma-separated seed node URLs of a Redis Cluster (in place of `redis_url`): the same
    /// setup on the cluster.
    pub redis_cluster_urls: Option<String>,
    /// Added to every database query, to stand for a database across a network.
    pub query_delay: Duration,
    /// A name for logs and `/stats` (e.g. `node-2`).
    pub node_name: String,
}

impl Config {
    /// `DATABASE_URL`, `REDIS_URL` or `REDIS_CLUSTER_URLS`, `QUERY_DELAY_MS` and `NODE_NAME`
    /// from the environment
    /// (empty values count as unset).
    pub fn from_env() -> Result<Config, AppError> {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.trim().is_empty());
        let query_delay = match var("QUERY_DELAY_MS") {
            None => Duration::ZERO,
            Some(v) => Duration::from_millis(v.trim().parse().map_err(|_| {
                AppError::Config(format!(
                    "QUERY_DELAY_MS: `{v}` is not a number of milliseconds"
                ))
            })?),
        };
        Ok(Config {
            database_url: var("DATABASE_URL"),
            redis_url: var("REDIS_URL"),
            redis_cluster_urls: var("REDIS_CLUSTER_URLS"),
            query_delay,
            node_name: var("NODE_NAME").unwrap_or_else(|| "web".into()),
        })
    }
}

/// Everything that can go wrong in a request or at start.
#[derive(Debug)]
pub enum AppError {
    /// No such row.
    NotFound(String),
    /// A request the service cannot act on.
    BadRequest(String),
    /// The database failed.
    Db(sqlx::Error),
    /// A cache backend could not be set up.
    Cache(String),
    /// A setting is wrong.
    Config(String),
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppError::NotFound(what) => write!(f, "{what} not found"),
            AppError::BadRequest(why) => write!(f, "bad request: {why}"),
            AppError::Db(e) => write!(f, "database error: {e}"),
            AppError::Cache(e) => write!(f, "cache setup failed: {e}"),
            AppError::Config(e) => write!(f, "configuration error: {e}"),
        }
    }
}

impl std::error::Error for AppError {}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        AppError::Db(e)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = match &self {
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

// ------------------------------------------------------------------------------------------
// The database
// ------------------------------------------------------------------------------------------

/// A user row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Primary key.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// E-mail address.
    pub email: String,
    /// The team the user belongs to.
    pub team_id: i64,
}

/// The body of `POST /users`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewUser {
    /// Display name.
    pub name: String,
    /// E-mail address.
    pub email: String,
    /// An existing team.
    pub team_id: i64,
}

/// The body of `PUT /users/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rename {
    /// The new display name.
    pub name: String,
}

/// `GET /teams/{id}`: a team and its members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamPage {
    /// Primary key.
    pub id: i64,
    /// Team name.
    pub name: String,
    /// Members, by id.
    pub members: Vec<User>,
}

/// One line of `GET /teams`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamSummary {
    /// Primary key.
    pub id: i64,
    /// Team name.
    pub name: String,
    /// Number of members.
    pub members: i64,
}

/// The database handle: a pool (SQLite or PostgreSQL through sqlx's `Any` driver) and the
/// simulated network delay added to each query.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    delay: Duration,
    kind: &'static str,
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS teams (id BIGINT PRIMARY KEY, name TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS users (id BIGINT PRIMARY KEY, name TEXT NOT NULL, \
     email TEXT NOT NULL, team_id BIGINT NOT NULL REFERENCES teams (id))",
    "CREATE INDEX IF NOT EXISTS users_team ON users (team_id)",
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
];

const TEAMS: &[(i64, &str)] = &[(1, "Platform"), (2, "Payments"), (3, "Growth")];
const USERS: &[(i64, &str, i64)] = &[
    (1, "Ada", 1),
    (2, "Grace", 1),
    (3, "Linus", 1),
    (4, "Barbara", 2),
    (5, "Edsger", 2),
    (6, "Margaret", 2),
    (7, "Ken", 3),
    (8, "Radia", 3),
    (9, "Donald", 3),
];

fn user_from(row: &AnyRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        email: row.try_get("email")?,
        team_id: row.try_get("team_id")?,
    })
}

impl Db {
    /// Connects, creates the tables and seeds them (idempotent: several nodes may start on one
    /// database at once).
    pub async fn connect(url: Option<&str>, delay: Duration) -> Result<Db, AppError> {
        sqlx::any::install_default_drivers();
        let url = url.unwrap_or("sqlite::memory:");
        let (kind, pool) = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool = AnyPoolOptions::new()
                .max_connections(8)
                .connect(url)
                .await?;
            ("postgres", pool)
        } else if url.starts_with("sqlite:") {
            // An in-memory SQLite database lives as long as its one connection: keep it open.
            let memory = url.contains(":memory:") || url.contains("mode=memory");
            let pool = AnyPoolOptions::new()
                .max_connections(if memory { 1 } else { 4 })
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect(url)
                .await?;
            ("sqlite", pool)
        } else {
            return Err(AppError::Config(format!(
                "DATABASE_URL must start with postgres:// or sqlite: (got `{}`)",
                url.split('@').next_back().unwrap_or(url)
            )));
        };
        let db = Db { pool, delay, kind };
        db.migrate_and_seed().await?;
        Ok(db)
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Creates and seeds the tables in one transaction. On PostgreSQL the transaction first
    /// takes an advisory lock, so nodes starting together on an empty database migrate one
    /// after the other (concurrent `CREATE TABLE IF NOT EXISTS` statements race in PostgreSQL:
    /// "type \"teams\" already exists").
    async fn migrate_and_seed(&self) -> Result<(), AppError> {
        let mut tx = self.pool.begin().await?;
        if self.kind == "postgres" {
            sqlx::query("SELECT pg_advisory_xact_lock(8161209)")
                .execute(&mut *tx)
                .await?;
        }
        for statement in SCHEMA {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        for (id, name) in TEAMS {
            sqlx::query("INSERT INTO teams (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
                .bind(id)
                .bind(*name)
                .execute(&mut *tx)
                .await?;
        }
        for (id, name, team) in USERS {
            sqlx::query(
                "INSERT INTO users (id, name, email, team_id) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(id)
            .bind(*name)
            .bind(format!("{}@example.com", name.to_lowercase()))
            .bind(team)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO counters (name, value) VALUES ('users', $1) ON CONFLICT (name) DO NOTHING",
        )
        .bind(USERS.len() as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn network(&self) {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
    }

    /// Reads a user row.
    pub async fn user(&self, id: i64) -> Result<Option<User>, AppError> {
        self.network().await;
        let row = sqlx::query("SELECT id, name, email, team_id FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(user_from).transpose()?)
    }

    /// Reads a team's name and its members' ids.
    pub async fn team(&self, id: i64) -> Result<Option<(String, Vec<i64>)>, AppError> {
        self.network().await;
        let Some(row) = sqlx::query("SELECT name FROM teams WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let name: String = row.try_get("name")?;
        let members = sqlx::query("SELECT id FROM users WHERE team_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.try_get::<i64, _>("id"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some((name, members)))
    }

    /// Every team with its member count.
    pub async fn teams(&self) -> Result<Vec<TeamSummary>, AppError> {
        self.network().await;
        let rows = sqlx::query(
            "SELECT t.id AS id, t.name AS name, COUNT(u.id) AS members FROM teams t \
             LEFT JOIN users u ON u.team_id = t.id GROUP BY t.id, t.name ORDER BY t.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TeamSummary {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    members: r.try_get("members")?,
                })
            })
            .collect()
    }

    /// Takes the next user id (atomic in both databases, so several nodes can create users).
    pub async fn next_user_id(&self) -> Result<i64, AppError> {
        self.network().await;
        let row = sqlx::query(
            "UPDATE counters SET value = value + 1 WHERE name = 'users' RETURNING value",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("value")?)
    }

    /// Inserts a user row.
    pub async fn insert_user(&self, id: i64, new: &NewUser) -> Result<User, AppError> {
        self.network().await;
        let row = sqlx::query(
            "INSERT INTO users (id, name, email, team_id) SELECT $1, $2, $3, id FROM teams \
             WHERE id = $4 RETURNING id, name, email, team_id",
        )
        .bind(id)
        .bind(&new.name)
        .bind(&new.email)
        .bind(new.team_id)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(user_from(&row)?),
            None => Err(AppError::BadRequest(format!(
                "team {} does not exist",
                new.team_id
            ))),
        }
    }

    /// Renames a user; returns the updated row.
    pub async fn rename_user(&self, id: i64, name: &str) -> Result<User, AppError> {
        self.network().await;
        let row = sqlx::query(
            "UPDATE users SET name = $1 WHERE id = $2 RETURNING id, name, email, team_id",
        )
        .bind(name)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(user_from(&row)?),
            None => Err(AppError::NotFound(format!("user {id}"))),
        }
    }
}

// ------------------------------------------------------------------------------------------
// The cached functions: this is all the caching code the service has
// ------------------------------------------------------------------------------------------

/// One user. Cache-aside: a miss reads the row, a hit never touches the database.
#[cached(ttl = "5m", depends_on = ["user:{id}"], skip(db))]
pub async fn get_user(db: &Db, id: i64) -> Result<User, AppError> {
    db.user(id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("user {id}")))
}

/// A team page. Each member comes from the cached `get_user`: those entries become
/// dependencies of this one, so renaming a member drops the page too.
#[cached(ttl = "1m", depends_on = ["team:{id}"], skip(db))]
pub async fn team_page(db: &Db, id: i64) -> Result<TeamPage, AppError> {
    let (name, ids) = db
        .team(id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("team {id}")))?;
    let mut members = Vec::with_capacity(ids.len());
    for user in ids {
        members.push(get_user(db, user).await?);
    }
    Ok(TeamPage { id, name, members })
}

/// The team directory, in the `shared` profile: with Redis it is stored in Redis itself and
/// computed once for every node.
#[cached(ttl = "30s", profile = "shared", depends_on = ["directory"], skip(db))]
pub async fn directory(db: &Db) -> Result<Vec<TeamSummary>, AppError> {
    db.teams().await
}

/// `PUT /users/{id}`: drops `get_user(id)` (and with it every team page that showed the user).
#[invalidates(get_user(id))]
pub async fn rename_user(db: &Db, id: i64, name: String) -> Result<User, AppError> {
    if name.trim().is_empty() {
        return Err(AppError::BadRequest("name must not be empty".into()));
    }
    db.rename_user(id, &name).await
}

/// `POST /users`: write-through. The new row becomes the entry of `get_user(id)`, and the
/// team's page and the directory, which now miss a member, are dropped.
#[cache_put(get_user(id))]
#[invalidates(dependencies = ["team:{team}", "directory"])]
pub async fn create_user(db: &Db, id: i64, team: i64, new: NewUser) -> Result<User, AppError> {
    let _ = team; // part of the dependency template
    db.insert_user(id, &new).await
}

// ------------------------------------------------------------------------------------------
// Cache setup
// ------------------------------------------------------------------------------------------

/// The backends the service installed.
pub struct Caches {
    /// What `/stats` calls it: `memory` or `memory+sync / redis`.
    pub description: String,
    /// The local caches' synchronizer, with Redis.
    pub synced: Option<Arc<cache_redis::SyncedBackend>>,
    /// The Redis backend of the `shared` profile, with Redis.
    pub redis: Option<Arc<cache_redis::RedisBackend>>,
}

/// Installs the cache backends globally (a process runs one service).
pub async fn install_caches(config: &Config) -> Result<Caches, AppError> {
    if config.redis_url.is_none() && config.redis_cluster_urls.is_none() {
        let memory: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        registry::configure()
            .default_backend(memory.clone())
            .profile("shared", Profile::new().backend(memory))
            .enabled(true)
            .apply()
            .map_err(|e| AppError::Cache(e.to_string()))?;
        return Ok(Caches {
            description: "memory".into(),
            synced: None,
            redis: None,
        });
    };
    let cache_err = |e: &dyn std::fmt::Display| AppError::Cache(e.to_string());
    // the L2: entries every node reads (the `shared` profile); CACHE_REDIS_* variables apply
    let mut builder = cache_redis::RedisBackendBuilder::from_vars(|name| match name {
        "REDIS_URL" => config.redis_url.clone(),
        "REDIS_CLUSTER_URLS" => config.redis_cluster_urls.clone(),
        other => std::env::var(other).ok(),
    })
    .map_err(|e| cache_err(&e))?;
    if std::env::var_os("CACHE_REDIS_PREFIX").is_none() {
        builder = builder.prefix("web-example");
    }
    let redis = Arc::new(builder.connect().await.map_err(|e| cache_err(&e))?);
    // the L1: this node's memory cache, its invalidations published to the other nodes (over
    // the L2's client: the same server, credentials and REDIS_TLS_* certificates)
    let client = redis.client().clone();
    let synced = Arc::new(
        cache_redis::with_redis_sync(MemoryBackend::new(), client, "web-example:sync")
            .map_err(|e| cache_err(&e))?,
    );
    if !synced
        .synchronizer()
        .wait_subscribed_async(Duration::from_secs(5))
        .await
    {
        return Err(AppError::Cache(
            "could not subscribe to the sync channel within 5 s".into(),
        ));
    }
    registry::configure()
        .default_backend(synced.clone())
        .profile("shared", Profile::new().backend(redis.clone()))
        .enabled(true)
        .apply()
        .map_err(|e| cache_err(&e))?;
    Ok(Caches {
        description: format!("{} / {}", synced.name(), redis.name()),
        synced: Some(synced),
        redis: Some(redis),
    })
}

// ------------------------------------------------------------------------------------------
// HTTP
// ------------------------------------------------------------------------------------------

/// The Prometheus recorder, installed once per process.
fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Suffix("_duration_seconds".into()),
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                ],
            )
            .expect("static bucket list is not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // another recorder already installed (e.g. by an embedding program): keep rendering ours
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub db: Db,
    /// The installed caches.
    pub caches: Arc<Caches>,
    /// Node name.
    pub node: Arc<str>,
}

/// A built service, ready to [`serve`].
pub struct App {
    /// The routes.
    pub router: Router,
    /// The state behind them (to call the cached functions directly).
    pub state: AppState,
}

/// Connects the database, installs the caches and builds the routes.
pub async fn build(config: Config) -> Result<App, AppError> {
    let _ = prometheus();
    let db = Db::connect(config.database_url.as_deref(), config.query_delay).await?;
    let caches = Arc::new(install_caches(&config).await?);
    let state = AppState {
        db,
        caches,
        node: config.node_name.as_str().into(),
    };
    let router = Router::new()
        .route("/users", axum::routing::post(post_user))
        .route("/users/{id}", get(get_user_handler).put(put_user))
        .route("/teams", get(get_directory))
        .route("/teams/{id}", get(get_team))
        .route("/stats", get(get_stats))
        .route("/metrics", get(get_metrics))
        .route("/health", get(|| async { "ok" }))
        .with_state(state.clone());
    Ok(App { router, state })
}

/// Serves `app` on `listener` until the task is dropped or fails.
pub async fn serve(listener: tokio::net::TcpListener, app: App) -> std::io::Result<()> {
    axum::serve(listener, app.router).await
}

/// Serves `app` on `listener` until `shutdown` completes, then finishes the open requests.
pub async fn serve_until(
    listener: tokio::net::TcpListener,
    app: App,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app.router)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn get_user_handler(
    State(s): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<User>, AppError> {
    Ok(Json(get_user(&s.db, id).await?))
}

async fn put_user(
    State(s): State<AppState>,
    Path(id): Path<i64>,
    Json(body): Json<Rename>,
) -> Result<Json<User>, AppError> {
    Ok(Json(rename_user(&s.db, id, body.name).await?))
}

async fn post_user(
    State(s): State<AppState>,
    Json(new): Json<NewUser>,
) -> Result<(StatusCode, Json<User>), AppError> {
    if new.name.trim().is_empty() {
        return Err(AppError::BadRequest("name must not be empty".into()));
    }
    let id = s.db.next_user_id().await?;
    let user = create_user(&s.db, id, new.team_id, new).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

async fn get_team(
    State(s): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<TeamPage>, AppError> {
    Ok(Json(team_page(&s.db, id).await?))
}

async fn get_directory(State(s): State<AppState>) -> Result<Json<Vec<TeamSummary>>, AppError> {
    Ok(Json(directory(&s.db).await?))
}

/// `GET /stats`: per-function and per-backend counters.
async fn get_stats(State(s): State<AppState>) -> Json<serde_json::Value> {
    let backends: Vec<_> = registry::all_backends()
        .iter()
        .map(|b| serde_json::json!({ "name": b.name(), "stats": b.stats() }))
        .collect();
    let sync = s.caches.synced.as_ref().map(|n| {
        let st = n.synchronizer().stats();
        serde_json::json!({
            "subscribed": n.synchronizer().is_subscribed(),
            "stats": format!("{st:?}"),
        })
    });
    Json(serde_json::json!({
        "node": &*s.node,
        "database": s.db.kind(),
        "cache": s.caches.description,
        "enabled": registry::is_enabled(),
        "functions": cache_core::runtime::all_stats(),
        "backends": backends,
        "sync": sync,
    }))
}

/// `GET /metrics`: Prometheus text.
async fn get_metrics() -> impl IntoResponse {
    cache_core::metrics::export();
    let handle = prometheus();
    handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
}
