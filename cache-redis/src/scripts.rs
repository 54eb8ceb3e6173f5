//! The Lua scripts (in `src/scripts/*.lua`), each prefixed with the shared header
//! `common.lua`. Every multi-key change is one script: one round trip, atomic.

use std::sync::OnceLock;

use redis::Script;

macro_rules! script {
    ($name:ident, $file:literal) => {
        pub(crate) fn $name() -> &'static Script {
            static S: OnceLock<Script> = OnceLock::new();
            S.get_or_init(|| {
                Script::new(concat!(
                    include_str!("scripts/common.lua"),
                    include_str!(concat!("scripts/", $file))
                ))
            })
        }
    };
}

script!(set, "set.lua");
script!(invalidate, "invalidate.lua");
script!(clear, "clear.lua");
script!(get_lock, "get_lock.lua");
script!(gc, "gc.lua");
script!(sweep, "sweep.lua");
script!(unlock, "unlock.lua");

/// Scripts that stand alone (no shared header): the write-behind queue's and protocol
/// version 2's, whose keys all come in `KEYS[]` under one hash tag.
macro_rules! script_alone {
    ($name:ident, $file:literal) => {
        pub(crate) fn $name() -> &'static Script {
            static S: OnceLock<Script> = OnceLock::new();
            S.get_or_init(|| Script::new(include_str!(concat!("scripts/", $file))))
        }
    };
}

script_alone!(wb_push, "wb_push.lua");
script_alone!(wb_start, "wb_start.lua");
script_alone!(wb_finish, "wb_finish.lua");
script_alone!(wb_replay, "wb_replay.lua");
script_alone!(wb_renew, "wb_renew.lua");
script_alone!(v2_version, "v2_version.lua");
script_alone!(v2_bump, "v2_bump.lua");
script_alone!(v2_set, "v2_set.lua");
script_alone!(v2_get, "v2_get.lua");

/// Runs `pipe`; if the server does not know one of its scripts (`NOSCRIPT`: a restart, a
/// failover, `SCRIPT FLUSH`), loads `scripts` and runs it again.
pub(crate) async fn query_pipeline<T: redis::FromRedisValue>(
    con: &mut crate::client::Connection,
    pipe: &redis::Pipeline,
    scripts: &[&Script],
) -> redis::RedisResult<T> {
    match pipe.query_async::<T>(con).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            for s in scripts {
                s.load_async(con).await?;
            }
            pipe.query_async(con).await
        }
        r => r,
    }
}
