//! Pub/sub synchronization between separate processes: this test binary spawns itself three
//! times as child nodes (the `child_node` test, driven through stdin/stdout) against one
//! redis-server, and checks that an invalidation made in one process reaches the others.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use cache_core::{value, Backend, EntryOptions, Key, MemoryBackend};
use cache_redis::{SyncOptions, SyncedBackend};
use test_support::{require_redis_server, RedisServer};

const URL_VAR: &str = "CACHE_SYNC_CHILD_URL";
const DEADLINE: Duration = Duration::from_secs(10);

/// The child side: a node answering commands, one per line (`set K D`, `has K`, `inv D`,
/// `quit`); answers are lines starting with `@@ ` (libtest writes its own lines too).
#[test]
fn child_node() {
    let Ok(url) = std::env::var(URL_VAR) else {
        return; // run as a normal test: nothing to do
    };
    let node = SyncedBackend::builder(MemoryBackend::new())
        .url(&url)
        .options(SyncOptions::new("t:procs").ping_interval(Duration::from_millis(100)))
        .build()
        .unwrap();
    let ready = node.synchronizer().wait_subscribed(DEADLINE);
    let out = std::io::stdout();
    let say = |s: &str| {
        let mut o = out.lock();
        let _ = writeln!(o, "@@ {s}");
        let _ = o.flush();
    };
    say(if ready { "ready" } else { "not-subscribed" });
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["set", k, d] => {
                let opts = EntryOptions::new().depends_on(*d);
                let lease = node.local().current_lease();
                node.set_blocking(&Key::from_text(*k), value::share(1u8), &opts, lease)
                    .unwrap();
                say("ok");
            }
            ["has", k] => say(if node.local().contains(k) {
                "yes"
            } else {
                "no"
            }),
            ["inv", d] => {
                node.invalidate_blocking(d).unwrap();
                say("ok");
            }
            ["quit"] => break,
            _ => say("?"),
        }
    }
}

struct Proc {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Proc {
    fn spawn(url: &str) -> Proc {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_node", "--nocapture", "--test-threads=1"])
            .env(URL_VAR, url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut p = Proc {
            child,
            stdin,
            stdout,
        };
        assert_eq!(p.answer(), "ready");
        p
    }

    fn answer(&mut self) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                self.stdout.read_line(&mut line).unwrap() > 0,
                "child exited"
            );
            // libtest may print "test child_node ... " on the same line first.
            if let Some(at) = line.find("@@ ") {
                return line[at + 3..].trim_end().to_string();
            }
        }
    }

    fn ask(&mut self, cmd: &str) -> String {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        self.answer()
    }

    fn wait_gone(&mut self, key: &str) -> bool {
        let end = Instant::now() + DEADLINE;
        loop {
            if self.ask(&format!("has {key}")) == "no" {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn invalidation_in_one_process_reaches_the_others() {
    let Some(bin) = require_redis_server() else {
        return;
    };
    let server = RedisServer::start(&bin).unwrap();
    let url = server.url();
    let mut nodes: Vec<Proc> = (0..3).map(|_| Proc::spawn(&url)).collect();
    for n in nodes.iter_mut() {
        assert_eq!(n.ask("set app::get_user(7) user:7"), "ok");
        assert_eq!(n.ask("set app::get_user(8) user:8"), "ok");
        assert_eq!(n.ask("has app::get_user(7)"), "yes");
    }
    assert_eq!(nodes[0].ask("inv user:7"), "ok");
    assert_eq!(nodes[0].ask("has app::get_user(7)"), "no");
    for n in nodes[1..].iter_mut() {
        assert!(
            n.wait_gone("app::get_user(7)"),
            "invalidation reached the process"
        );
        assert_eq!(n.ask("has app::get_user(8)"), "yes");
    }
    // And from another process back to the first.
    assert_eq!(nodes[2].ask("inv user:8"), "ok");
    assert!(nodes[0].wait_gone("app::get_user(8)"));
}
