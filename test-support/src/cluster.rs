//! A Redis Cluster of `redis-server` processes on free loopback ports, made with `redis-cli
//! --cluster create` (or, for one node, by assigning it every slot), stopped on drop. Ports stay
//! below 55535: a node's cluster bus listens on its port + 10000.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_until, RedisServer};

/// How long a cluster may take to form.
pub const FORM_DEADLINE: Duration = Duration::from_secs(60);

/// The nodes of a test cluster (killed, and their directory removed, on drop).
///
/// ```no_run
/// let Some(bin) = test_support::require_redis_server() else { return };
/// let cluster = test_support::cluster::RedisCluster::start(&bin, 3, 1).unwrap();
/// assert_eq!(cluster.urls().len(), 6);
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    dir: PathBuf,
}

/// A free loopback port whose bus port (+10000) is a valid port too.
fn cluster_port() -> io::Result<u16> {
    for _ in 0..256 {
        let p = free_port()?;
        if p < 55535 {
            return Ok(p);
        }
    }
    Err(io::Error::other("no free port below 55535"))
}

impl RedisCluster {
    /// `masters` masters with `replicas` replicas each, formed by `redis-cli --cluster create`
    /// (found next to `bin`); returns once every node reports `cluster_state:ok` (bounded).
    pub fn start(bin: &Path, masters: usize, replicas: usize) -> io::Result<Self> {
        let cluster = Self::nodes(bin, masters * (1 + replicas))?;
        let cli = bin.with_file_name("redis-cli");
        let mut cmd = Command::new(&cli);
        cmd.arg("--cluster").arg("create");
        for n in &cluster.nodes {
            cmd.arg(format!("127.0.0.1:{}", n.port()));
        }
        cmd.arg("--cluster-replicas")
            .arg(replicas.to_string())
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd
            .spawn()
            .map_err(|e| io::Error::other(format!("{}: {e}", cli.display())))?;
        let mut status = None;
        wait_until(FORM_DEADLINE, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        match status {
            Some(s) if s.success() => {}
            other => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::other(format!(
                    "redis-cli --cluster create: {other:?}"
                )));
            }
        }
        cluster.wait_ok()?;
        cluster.wait_replicas(masters * replicas)?;
        Ok(cluster)
    }

    /// Waits (bounded) until every node sees `n` replicas (they join through gossip after the
    /// cluster is formed).
    fn wait_replicas(&self, n: usize) -> io::Result<()> {
        let seen = wait_until(FORM_DEADLINE, || {
            self.nodes.iter().all(|node| {
                node.connection()
                    .and_then(|mut c| redis::cmd("CLUSTER").arg("NODES").query::<String>(&mut c))
                    .is_ok_and(|nodes| nodes.lines().filter(|l| l.contains("slave")).count() == n)
            })
        });
        if seen {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "the replicas did not join within {FORM_DEADLINE:?}"
            )))
        }
    }

    /// One node that owns all 16,384 slots: a cluster in which any command touching keys of two
    /// slots fails (`CROSSSLOT`), as it would on a real one.
    pub fn start_single(bin: &Path) -> io::Result<Self> {
        let cluster = Self::nodes(bin, 1)?;
        cluster.nodes[0].own_all_slots()?;
        cluster.wait_ok()?;
        Ok(cluster)
    }

    fn nodes(bin: &Path, n: usize) -> io::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "test-support-cluster-{}-{}",
            std::process::id(),
            cluster_port()?
        ));
        std::fs::create_dir_all(&dir)?;
        let mut cluster = RedisCluster {
            nodes: Vec::with_capacity(n),
            dir,
        };
        for _ in 0..n {
            let port = cluster_port()?;
            let conf = cluster.dir.join(format!("nodes-{port}.conf"));
            let dir = cluster.dir.to_string_lossy().into_owned();
            let conf = conf.to_string_lossy().into_owned();
            let node = RedisServer::start_on(
                bin,
                port,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &conf,
                    "--cluster-node-timeout",
                    "2000",
                    "--dir",
                    &dir,
                ],
            )?;
            cluster.nodes.push(node);
        }
        Ok(cluster)
    }

    /// Waits (bounded) until every node reports `cluster_state:ok`.
    fn wait_ok(&self) -> io::Result<()> {
        let ok = wait_until(FORM_DEADLINE, || {
            self.nodes.iter().all(|n| {
                n.connection()
                    .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            })
        });
        if ok {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "the cluster did not reach cluster_state:ok within {FORM_DEADLINE:?}"
            )))
        }
    }

    /// `redis://127.0.0.1:PORT/` of every node (seed URLs for a cluster client).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes (to kill one, or talk to one directly).
    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
