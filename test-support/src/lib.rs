//! # test-support
//!
//! Internal test utilities for the workspace (not published): real `redis-server` processes on
//! free loopback ports, started and stopped by the tests themselves.
//!
//! Rules this crate implements for every test that needs Redis:
//!
//! * the tests never touch the machine's own Redis (port 6379): each [`RedisServer`] listens on a
//!   free port of `127.0.0.1` picked at start;
//! * no persistence (`--save "" --appendonly no`), so a restart starts empty unless you say
//!   otherwise with extra arguments;
//! * every wait is a condition polled with a deadline ([`wait_until`]), never a bare sleep;
//! * the process is killed when the [`RedisServer`] is dropped, even when the test panics;
//! * [`require_redis_server`] finds the binary; when it is missing, a test **fails** if the
//!   environment variable `CI` is `true`, and is skipped with a loud message otherwise.
//!
//! ```no_run
//! use test_support::{require_redis_server, RedisServer};
//!
//! let Some(bin) = require_redis_server() else { return }; // skipped on a laptop without Redis
//! let mut server = RedisServer::start_with(&bin, &["--maxmemory", "10mb"]).unwrap();
//! let mut con = server.client().get_connection().unwrap();
//! let pong: String = redis::cmd("PING").query(&mut con).unwrap();
//! assert_eq!(pong, "PONG");
//! server.kill();                 // the port stays reserved for this server
//! server.restart().unwrap();     // same port, fresh (empty) server
//! ```

pub mod alloc;
pub mod cluster;
pub mod tls;
pub mod zipf;

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long [`RedisServer::start`] and [`RedisServer::restart`] wait for the server to answer
/// `PING`.
pub const START_DEADLINE: Duration = Duration::from_secs(10);

/// Finds `redis-server` (the `REDIS_SERVER` environment variable, else `PATH`).
///
/// Returns `None` when it is missing and the environment is not CI: the caller should return
/// early (skip). Panics (fails the test) when it is missing and `CI=true`, because a CI that
/// silently skips the Redis tests proves nothing.
///
/// ```
/// // On a machine without redis-server and without CI=true this prints a warning and gives None.
/// let _maybe = test_support::require_redis_server();
/// ```
pub fn require_redis_server() -> Option<PathBuf> {
    if let Some(bin) = find_redis_server() {
        return Some(bin);
    }
    let ci = std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false);
    if ci {
        panic!(
            "redis-server was not found (PATH or REDIS_SERVER) and CI=true: \
             install it (e.g. `apt-get install redis-server`) so the Redis tests run"
        );
    }
    eprintln!(
        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         !! SKIPPED: redis-server not found (PATH or REDIS_SERVER). This test did    !!\n\
         !! not run. Install redis-server; with CI=true this would be a failure.     !!\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    );
    None
}

fn find_redis_server() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("REDIS_SERVER") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Some(p);
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-server"))
        .find(|p| p.is_file())
}

/// A free TCP port on `127.0.0.1` (never 6379).
///
/// ```
/// let port = test_support::free_port().unwrap();
/// assert_ne!(port, 6379);
/// ```
pub fn free_port() -> io::Result<u16> {
    for _ in 0..32 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if port != 6379 {
            return Ok(port);
        }
    }
    Err(io::Error::other("no free port other than 6379"))
}

/// Polls `condition` every few milliseconds until it is true or `deadline` has passed; returns
/// whether it became true. A bounded loop: use it instead of sleeping and hoping.
///
/// ```
/// let start = std::time::Instant::now();
/// assert!(test_support::wait_until(std::time::Duration::from_secs(1), || start.elapsed().as_millis() > 5));
/// ```
pub fn wait_until(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A `redis-server` child process on a free loopback port, killed on drop.
///
/// ```no_run
/// let Some(bin) = test_support::require_redis_server() else { return };
/// let server = test_support::RedisServer::start(&bin).unwrap();
/// println!("{}", server.url()); // redis://127.0.0.1:PORT/
/// ```
#[derive(Debug)]
pub struct RedisServer {
    bin: PathBuf,
    port: u16,
    args: Vec<String>,
    tls: bool,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server with no persistence on a free port and waits (bounded) for `PING`.
    pub fn start(bin: &Path) -> io::Result<Self> {
        Self::start_with(bin, &[])
    }

    /// Like [`RedisServer::start_with`], on a given port.
    pub fn start_on(bin: &Path, port: u16, extra_args: &[&str]) -> io::Result<Self> {
        let mut server = RedisServer {
            bin: bin.to_path_buf(),
            port,
            args: extra_args.iter().map(|s| s.to_string()).collect(),
            tls: false,
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    /// Like [`RedisServer::start`], with extra `redis-server` arguments (e.g.
    /// `["--requirepass", "s3cret"]` or `["--maxmemory", "1mb"]`).
    pub fn start_with(bin: &Path, extra_args: &[&str]) -> io::Result<Self> {
        let mut server = RedisServer {
            bin: bin.to_path_buf(),
            port: free_port()?,
            args: extra_args.iter().map(|s| s.to_string()).collect(),
            tls: false,
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    /// Starts a one-node Redis Cluster: `--cluster-enabled yes`, the node owning all 16384
    /// slots, waited for (bounded) until `cluster_state:ok`. A plain connection can use it like
    /// a single server, except that a script or transaction whose keys hash to different slots
    /// fails loudly (`CROSSSLOT`), which is what running a protocol on it checks. Its cluster
    /// config file lives next to the process's temp files and goes with it.
    ///
    /// ```no_run
    /// let Some(bin) = test_support::require_redis_server() else { return };
    /// let node = test_support::RedisServer::start_one_node_cluster(&bin).unwrap();
    /// ```
    pub fn start_one_node_cluster(bin: &Path) -> io::Result<Self> {
        let port = free_port()?;
        let conf = std::env::temp_dir().join(format!(
            "test-support-one-node-{}-{port}.conf",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&conf);
        let conf_arg = conf.to_string_lossy().into_owned();
        let server = Self::start_on(
            bin,
            port,
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &conf_arg,
            ],
        )?;
        let mut con = server.own_all_slots()?;
        let ok = wait_until(START_DEADLINE, || {
            redis::cmd("CLUSTER")
                .arg("INFO")
                .query::<String>(&mut con)
                .is_ok_and(|info| info.contains("cluster_state:ok"))
        });
        if !ok {
            return Err(io::Error::other(
                "the one-node cluster did not reach cluster_state:ok",
            ));
        }
        Ok(server)
    }

    /// Assigns every hash slot to this cluster node (`CLUSTER ADDSLOTSRANGE 0 16383`); returns
    /// the connection it used.
    pub(crate) fn own_all_slots(&self) -> io::Result<redis::Connection> {
        let mut con = self
            .connection()
            .map_err(|e| io::Error::other(e.to_string()))?;
        redis::cmd("CLUSTER")
            .arg("ADDSLOTSRANGE")
            .arg(0)
            .arg(16383)
            .query::<()>(&mut con)
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(con)
    }

    /// Starts a server that speaks TLS only (`--port 0 --tls-port P`) with the certificates of
    /// `certs`; `auth_clients` is `--tls-auth-clients yes|no` (whether a client certificate
    /// signed by the CA is required). [`url`](Self::url) is then `rediss://127.0.0.1:P/`.
    ///
    /// ```no_run
    /// let Some(bin) = test_support::require_redis_server() else { return };
    /// let certs = test_support::tls::Certs::generate().unwrap();
    /// let server = test_support::RedisServer::start_tls(&bin, &certs, true).unwrap();
    /// assert!(server.url().starts_with("rediss://"));
    /// ```
    pub fn start_tls(bin: &Path, certs: &tls::Certs, auth_clients: bool) -> io::Result<Self> {
        Self::start_tls_with(
            bin,
            certs,
            &certs.server_cert,
            &certs.server_key,
            auth_clients,
        )
    }

    /// Like [`start_tls`](Self::start_tls) with another server certificate and key (e.g.
    /// [`tls::Certs::expired_server_cert`]).
    pub fn start_tls_with(
        bin: &Path,
        certs: &tls::Certs,
        cert: &Path,
        key: &Path,
        auth_clients: bool,
    ) -> io::Result<Self> {
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let mut server = RedisServer {
            bin: bin.to_path_buf(),
            port: free_port()?,
            args: vec![
                "--tls-cert-file".into(),
                path(cert),
                "--tls-key-file".into(),
                path(key),
                "--tls-ca-cert-file".into(),
                path(&certs.ca_cert),
                "--tls-auth-clients".into(),
                if auth_clients { "yes" } else { "no" }.into(),
            ],
            tls: true,
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> io::Result<()> {
        let mut cmd = Command::new(&self.bin);
        if self.tls {
            cmd.arg("--port")
                .arg("0")
                .arg("--tls-port")
                .arg(self.port.to_string());
        } else {
            cmd.arg("--port").arg(self.port.to_string());
        }
        cmd.arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--protected-mode")
            .arg("no")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn()?;
        self.child = Some(child);
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let up = wait_until(START_DEADLINE, || {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    return true; // exited: reported below
                }
            }
            // A TLS port is checked by accepting TCP (a TLS ping would need TLS in this crate).
            TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
                && (self.tls || self.ping())
        });
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(io::Error::other(format!(
                    "redis-server on port {} exited at start: {status}",
                    self.port
                )));
            }
        }
        if !up {
            self.kill();
            return Err(io::Error::other(format!(
                "redis-server on port {} did not answer PING within {START_DEADLINE:?}",
                self.port
            )));
        }
        Ok(())
    }

    fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url_with_auth()) else {
            return false;
        };
        let Ok(mut con) = client.get_connection_with_timeout(Duration::from_millis(200)) else {
            return false;
        };
        redis::cmd("PING").query::<String>(&mut con).is_ok()
    }

    fn url_with_auth(&self) -> String {
        // When the server was started with --requirepass, ping with that password.
        let pass = self
            .args
            .iter()
            .position(|a| a == "--requirepass")
            .and_then(|i| self.args.get(i + 1));
        match pass {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/", self.port),
            None => self.url(),
        }
    }

    /// The process id, while it runs (to stop and continue it: `kill -STOP`, `kill -CONT`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/` (no credentials); `rediss://` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    /// A redis-rs client for this server (with the `--requirepass` password, if any).
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url_with_auth()).expect("a valid loopback URL")
    }

    /// A redis-rs client for this server speaking RESP3 (push messages: pub/sub and client
    /// tracking on multiplexed connections).
    pub fn resp3_client(&self) -> redis::Client {
        let info = self.client().get_connection_info().clone();
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        redis::Client::open(info.set_redis_settings(settings)).expect("a valid loopback URL")
    }

    /// A synchronous connection with 2 s read/write timeouts, for setup and assertions.
    pub fn connection(&self) -> redis::RedisResult<redis::Connection> {
        let con = self
            .client()
            .get_connection_with_timeout(Duration::from_secs(2))?;
        con.set_read_timeout(Some(Duration::from_secs(2)))?;
        con.set_write_timeout(Some(Duration::from_secs(2)))?;
        Ok(con)
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Kills the process (SIGKILL) and waits for it to exit. The port is kept for
    /// [`RedisServer::restart`]. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it runs, then starts a fresh one on the same port (same arguments)
    /// and waits (bounded) for `PING`.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        // The port may linger briefly in the kernel after a kill; retry binding with a deadline.
        let end = Instant::now() + START_DEADLINE;
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() < end => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
