//! Keeping a push connection (the pub/sub subscriber, the tracking connection) alive: the
//! reconnect backoff and the watch loop both use.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::Value;
use tokio::sync::Notify;

/// The first wait before reconnecting.
pub(crate) const MIN_BACKOFF: Duration = Duration::from_millis(10);
/// The longest wait before reconnecting.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The wait after `b`: doubled, at most [`MAX_BACKOFF`].
pub(crate) fn next_backoff(b: Duration) -> Duration {
    (b * 2).min(MAX_BACKOFF)
}

/// Returns when `con` is lost: `lost` notified (a disconnection push) or a ping every
/// `ping_interval` failed (a connection that hangs delivers no push either). `what` names the
/// connection in the warning.
pub(crate) async fn until_lost(
    con: &mut MultiplexedConnection,
    lost: &Notify,
    ping_interval: Duration,
    what: &'static str,
) {
    loop {
        tokio::select! {
            _ = lost.notified() => return,
            _ = tokio::time::sleep(ping_interval) => {
                let pong: redis::RedisResult<Value> =
                    redis::cmd("PING").query_async(con).await;
                if let Err(e) = pong {
                    tracing::warn!(error = %e, connection = what, "cache: ping failed");
                    return;
                }
            }
        }
    }
}
