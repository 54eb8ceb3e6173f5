//! The connection every cache operation runs on: one server's multiplexed connection, or a
//! Redis Cluster connection.
//!
//! On a cluster, redis-rs routes each command by the hash slot of its keys, follows `MOVED` and
//! `ASK` redirections, refreshes the slot map and reconnects to nodes by itself; a multi-key
//! `MGET` is split by slot and answered in order. A pipeline, which redis-rs sends to one node
//! only, is sent here as its commands, concurrently (each to its node, in order per node), and
//! answered in order: one round trip per node involved, in parallel, so a lookup's entry and
//! its version keys cost one round trip on a cluster too. A transaction (`MULTI`) goes to one
//! node as a whole, as on one server (its keys must share a slot).

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, ServerError, Value};

/// A connection to the cache's Redis (see the [module docs](self)). Cheap to clone: clones
/// share the underlying connection(s).
#[derive(Clone)]
pub(crate) enum Connection {
    /// One server (or one node of a cluster, addressed directly).
    Single(MultiplexedConnection),
    /// A Redis Cluster, through its seed nodes.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => {
                if pipeline.is_transaction() {
                    return c.req_packed_commands(pipeline, offset, count);
                }
                let con = c.clone();
                Box::pin(async move {
                    let replies = futures_util::future::join_all(pipeline.cmd_iter().map(|cmd| {
                        let mut con = con.clone();
                        async move { con.req_packed_command(cmd).await }
                    }))
                    .await;
                    // a command's server error is its reply, as one server answers a pipeline
                    replies
                        .into_iter()
                        .map(|r| r.or_else(|e| ServerError::try_from(e).map(Value::ServerError)))
                        .collect()
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(_) => 0,
        }
    }
}

/// A node a keyspace scan visits: `None` is the one server; `Some((host, port))` a cluster's
/// master.
pub(crate) type ScanTarget = Option<(String, u16)>;

impl Connection {
    /// The nodes a keyspace scan (`SCAN`) must visit to see every key: the server, or each
    /// master of a cluster (from `CLUSTER SLOTS`).
    pub(crate) async fn scan_targets(&mut self) -> redis::RedisResult<Vec<ScanTarget>> {
        let Connection::Cluster(c) = self else {
            return Ok(vec![None]);
        };
        let slots: Vec<Value> = redis::cmd("CLUSTER").arg("SLOTS").query_async(c).await?;
        let mut masters: Vec<ScanTarget> = Vec::new();
        for range in slots {
            let Value::Array(parts) = range else { continue };
            let Some(Value::Array(master)) = parts.get(2) else {
                continue;
            };
            let host = match master.first() {
                Some(Value::BulkString(h)) => String::from_utf8_lossy(h).into_owned(),
                Some(Value::SimpleString(h)) => h.clone(),
                _ => continue,
            };
            let Some(Value::Int(port)) = master.get(1) else {
                continue;
            };
            let node = Some((host, u16::try_from(*port).unwrap_or(0)));
            if !masters.contains(&node) {
                masters.push(node);
            }
        }
        Ok(masters)
    }

    /// The `run_id` of every master of a cluster (`INFO server` of each, routed by address).
    pub(crate) async fn master_run_ids(&mut self) -> redis::RedisResult<Vec<String>> {
        let mut ids = Vec::new();
        for target in self.scan_targets().await? {
            let info: String = self
                .query_on(&target, redis::cmd("INFO").arg("server"))
                .await?;
            if let Some(id) = info.lines().find_map(|l| l.strip_prefix("run_id:")) {
                ids.push(id.trim().to_string());
            }
        }
        Ok(ids)
    }

    /// Runs `cmd` on `target` (from [`Self::scan_targets`]).
    pub(crate) async fn query_on<T: redis::FromRedisValue>(
        &mut self,
        target: &ScanTarget,
        cmd: &Cmd,
    ) -> redis::RedisResult<T> {
        match (self, target) {
            (Connection::Cluster(c), Some((host, port))) => {
                use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                let v = c.route_command(cmd.clone(), routing).await?;
                Ok(T::from_redis_value(v)?)
            }
            (con, _) => cmd.query_async(con).await,
        }
    }
}
