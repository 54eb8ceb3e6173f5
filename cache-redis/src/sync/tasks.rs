//! The publisher and subscriber tasks of a [`Synchronizer`](super::Synchronizer).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::{mpsc, Notify};

use super::{Shared, SyncMessage, SyncOp};
use crate::watch::{next_backoff, until_lost, MIN_BACKOFF};

/// A message carries at most this many bytes of operations (more wait for the next message).
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// The same server, spoken to in RESP3 (push messages).
pub(crate) fn resp3_client(client: &Client) -> redis::RedisResult<Client> {
    crate::client::connect::derive_client(client, |settings| {
        settings.set_protocol(ProtocolVersion::RESP3)
    })
}

fn config(shared: &Shared) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(shared.options.timeout))
        .set_response_timeout(Some(shared.options.timeout))
}

/// Publishes queued operations, batching what is queued together, retrying after failures.
pub(crate) async fn publisher(
    client: Client,
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<SyncOp>,
) {
    let mut con: Option<MultiplexedConnection> = None;
    let mut pending: Vec<SyncOp> = Vec::new();
    let mut backoff = MIN_BACKOFF;
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(op) => push(&shared, &mut pending, op),
                None => return,
            }
        }
        while let Ok(op) = rx.try_recv() {
            push(&shared, &mut pending, op);
        }
        let mut bytes = 0;
        let n = pending
            .iter()
            .take_while(|op| {
                bytes += op.encoded_len();
                bytes <= MAX_MESSAGE_BYTES
            })
            .count()
            .max(1);
        let payload = SyncMessage {
            node: shared.node,
            ops: pending[..n].to_vec(),
        }
        .encode();
        if con.is_none() {
            match client
                .get_multiplexed_async_connection_with_config(&config(&shared))
                .await
            {
                Ok(mut c) => {
                    set_name(&mut c, "pub", &shared).await;
                    con = Some(c)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cache sync: publisher cannot connect; retrying");
                    shared.counters.publish_errors.fetch_add(1, Relaxed);
                    tokio::time::sleep(backoff).await;
                    backoff = next_backoff(backoff);
                    continue;
                }
            }
        }
        let Some(c) = con.as_mut() else { continue };
        let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(&shared.channel)
            .arg(payload)
            .query_async(c)
            .await;
        match sent {
            Ok(_) => {
                pending.drain(..n);
                shared.counters.published_ops.fetch_add(n as u64, Relaxed);
                shared.counters.published_messages.fetch_add(1, Relaxed);
                backoff = MIN_BACKOFF;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cache sync: publish failed; reconnecting");
                shared.counters.publish_errors.fetch_add(1, Relaxed);
                con = None;
                tokio::time::sleep(backoff).await;
                backoff = next_backoff(backoff);
            }
        }
    }
}

/// Names the connection `cache-sync-<role>-<node id>` (visible in `CLIENT LIST`).
async fn set_name(con: &mut MultiplexedConnection, role: &str, shared: &Shared) {
    let name = format!("cache-sync-{role}-{}", shared.node);
    let _: redis::RedisResult<Value> = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(name)
        .query_async(con)
        .await;
}

/// Queues `op`; a clear makes everything queued before it redundant; an overflow collapses the
/// queue into one clear.
fn push(shared: &Shared, pending: &mut Vec<SyncOp>, op: SyncOp) {
    if op == SyncOp::Clear {
        pending.clear();
    } else if pending.len() >= shared.options.max_pending {
        pending.clear();
        shared.counters.overflows.fetch_add(1, Relaxed);
        tracing::warn!("cache sync: publish queue overflowed; publishing a clear instead");
        pending.push(SyncOp::Clear);
        return;
    }
    pending.push(op);
}

/// Applies one received push (runs on the connection's task: no I/O, no await).
fn on_push(shared: &Shared, lost: &Notify, info: PushInfo) {
    match info.kind {
        PushKind::Message => {
            let Some(Value::BulkString(payload)) = info.data.get(1) else {
                return;
            };
            let c = &shared.counters;
            match SyncMessage::decode(payload) {
                Ok(msg) if msg.node == shared.node => {
                    c.own_messages.fetch_add(1, Relaxed);
                }
                Ok(msg) => {
                    c.received_messages.fetch_add(1, Relaxed);
                    for op in &msg.ops {
                        match op {
                            SyncOp::Remove(k) => shared.target.remove_key(k),
                            SyncOp::Invalidate(d) => shared.target.invalidate_dependency(d),
                            SyncOp::Clear => shared.target.flush(),
                        }
                    }
                    c.applied_ops.fetch_add(msg.ops.len() as u64, Relaxed);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cache sync: flushing the local cache");
                    c.unreadable_messages.fetch_add(1, Relaxed);
                    shared.flush();
                }
            }
        }
        PushKind::Disconnection => {
            // Flush at once: until resubscribed, invalidations of the other nodes are lost.
            shared.subscribed.store(false, Relaxed);
            shared.flush();
            lost.notify_one();
        }
        _ => {}
    }
}

/// Subscribes, watches the subscription (disconnection pushes, periodic pings), and after a
/// loss flushes, reconnects and resubscribes, forever.
pub(crate) async fn subscriber(client: Client, shared: Arc<Shared>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let lost = Arc::new(Notify::new());
        let sender = {
            let shared = shared.clone();
            let lost = lost.clone();
            move |info: PushInfo| -> Result<(), ()> {
                on_push(&shared, &lost, info);
                Ok(())
            }
        };
        let cfg = config(&shared).set_push_sender(sender);
        let connected = async {
            let mut con = client
                .get_multiplexed_async_connection_with_config(&cfg)
                .await?;
            set_name(&mut con, "sub", &shared).await;
            con.subscribe(&shared.channel).await?;
            Ok::<_, redis::RedisError>(con)
        }
        .await;
        match connected {
            Ok(mut con) => {
                // Messages published while we were not subscribed are lost: flush after the
                // subscription is confirmed, so nothing falls in between.
                shared.flush();
                shared.subscribed.store(true, Relaxed);
                shared.counters.subscriptions.fetch_add(1, Relaxed);
                backoff = MIN_BACKOFF;
                until_lost(&mut con, &lost, shared.options.ping_interval, "sync").await;
                shared.subscribed.store(false, Relaxed);
                shared.counters.subscription_losses.fetch_add(1, Relaxed);
                shared.flush();
                tracing::warn!(channel = %shared.channel, "cache sync: subscription lost; resubscribing");
            }
            Err(e) => {
                shared.counters.subscribe_errors.fetch_add(1, Relaxed);
                tracing::warn!(error = %e, "cache sync: cannot subscribe; retrying");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = next_backoff(backoff);
    }
}
