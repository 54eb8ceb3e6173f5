//! The multi-node example's flow (`examples/multi_node.rs`) as a test: three node processes
//! (this test binary started again with `--node NAME`) with layered caches over one
//! `redis-server` started by test-support; user 1 is read on every node, renamed through node
//! A, and nodes B and C must return the new name within the example's deadline (5 s). Once with
//! RESP3 tracking, once with pub/sub coherence, then with pub/sub on a 3-master Redis Cluster.
//!
//! `harness = false` (see the root `Cargo.toml`): the binary is its own node program. Without
//! `redis-server` the test is skipped with a loud message, and fails when `CI=true`.

#[path = "../examples/multi_node.rs"]
#[allow(dead_code)]
mod multi_node;

use std::process::ExitCode;

use test_support::{require_redis_server, RedisServer};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--node") {
        return multi_node::node_main(&args);
    }
    if args.iter().any(|a| a == "--list") {
        println!("multi_node: test");
        return ExitCode::SUCCESS;
    }
    // `cargo test FILTER`: run only when the filter matches this test's name
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| "multi_node".contains(f.as_str())) {
        return ExitCode::SUCCESS;
    }
    let Some(bin) = require_redis_server() else {
        return ExitCode::SUCCESS;
    };
    let server = RedisServer::start(&bin).expect("redis-server starts");
    let exe = std::env::current_exe().expect("the test binary's path");
    for mode in ["tracking", "pubsub"] {
        let target = multi_node::Target::Server(server.url());
        run_and_check(&target, &exe, mode, mode);
    }
    drop(server);
    // the same on a Redis Cluster (3 masters), with pub/sub coherence (tracking is refused there)
    let cluster =
        test_support::cluster::RedisCluster::start(&bin, 3, 0).expect("the cluster forms");
    let target = multi_node::Target::Cluster(cluster.urls().join(","));
    run_and_check(&target, &exe, "pubsub", "cluster, pubsub");
    println!("test multi_node ... ok");
    ExitCode::SUCCESS
}

/// Runs the flow on `target` and checks that nodes B and C saw the rename in time.
fn run_and_check(target: &multi_node::Target, exe: &std::path::Path, mode: &str, label: &str) {
    let outcome = multi_node::run_demo(target, exe, mode)
        .unwrap_or_else(|e| panic!("multi-node flow ({label}): {e}"));
    let mut nodes: Vec<&str> = outcome
        .propagation
        .iter()
        .map(|(node, took, _)| {
            assert!(*took < multi_node::DEADLINE, "{node}: {took:?}");
            node.as_str()
        })
        .collect();
    nodes.sort_unstable();
    assert_eq!(
        nodes,
        ["B", "C"],
        "{label}: both other nodes saw the rename"
    );
}
