//! The cluster harness the Redis Cluster work builds on: six real nodes formed by `redis-cli
//! --cluster create` (three masters own all slots, each with a replica), and a one-node cluster
//! that rejects cross-slot commands.

use test_support::cluster::RedisCluster;
use test_support::require_redis_server;

fn cluster_nodes(url: &str) -> String {
    let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
    redis::cmd("CLUSTER").arg("NODES").query(&mut con).unwrap()
}

#[test]
fn three_masters_with_replicas_form_a_cluster() {
    let Some(bin) = require_redis_server() else {
        return;
    };
    let cluster = RedisCluster::start(&bin, 3, 1).expect("the cluster forms");
    let urls = cluster.urls();
    assert_eq!(urls.len(), 6);
    let nodes = cluster_nodes(&urls[0]);
    let masters = nodes.lines().filter(|l| l.contains("master")).count();
    let replicas = nodes.lines().filter(|l| l.contains("slave")).count();
    assert_eq!((masters, replicas), (3, 3), "{nodes}");
}

#[test]
fn a_single_node_cluster_rejects_cross_slot_commands() {
    let Some(bin) = require_redis_server() else {
        return;
    };
    let cluster = RedisCluster::start_single(&bin).expect("the node owns every slot");
    let mut con = redis::Client::open(cluster.urls()[0].as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let same: redis::RedisResult<()> = redis::cmd("MSET")
        .arg("{t}:a")
        .arg(1)
        .arg("{t}:b")
        .arg(2)
        .query(&mut con);
    assert!(same.is_ok(), "one hash tag: one slot");
    let cross: redis::RedisResult<()> = redis::cmd("MSET")
        .arg("a")
        .arg(1)
        .arg("b")
        .arg(2)
        .query(&mut con);
    let err = cross.expect_err("two slots");
    assert!(
        err.to_string().to_uppercase().contains("CROSSSLOT"),
        "{err}"
    );
}
