//! Certificates for TLS tests, made by the test itself with the `openssl` command line tool:
//! a CA, a server certificate for `127.0.0.1` / `localhost` signed by it, a client certificate
//! signed by it, and a second, unrelated CA (for "wrong CA" cases). EC P-256 keys, valid for a
//! week. The files live in a fresh directory under the system's temp dir, removed on drop.
//!
//! ```no_run
//! let certs = test_support::tls::Certs::generate().unwrap();
//! let ca_pem = std::fs::read(&certs.ca_cert).unwrap();
//! # drop(ca_pem);
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

/// The generated files (PEM).
#[derive(Debug)]
pub struct Certs {
    /// The directory holding them (removed on drop).
    pub dir: PathBuf,
    /// The CA certificate that signed the server and client certificates.
    pub ca_cert: PathBuf,
    /// The server certificate (SAN `IP:127.0.0.1`, `DNS:localhost`).
    pub server_cert: PathBuf,
    /// The server's private key.
    pub server_key: PathBuf,
    /// The client certificate (for mutual TLS).
    pub client_cert: PathBuf,
    /// The client's private key.
    pub client_key: PathBuf,
    /// A CA that signed nothing here: a client trusting only it must refuse the server.
    pub other_ca_cert: PathBuf,
    /// A server certificate signed by the CA whose validity ends the second it starts
    /// (`-days 0`): expired from one second after [`Certs::generate`] on.
    pub expired_server_cert: PathBuf,
    /// Its private key.
    pub expired_server_key: PathBuf,
    /// When the files were made (the expired certificate is expired one second later).
    pub made_at: std::time::SystemTime,
}

fn openssl(dir: &Path, args: &[&str]) -> io::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::other(format!("cannot run openssl (install it): {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

fn ca(dir: &Path, name: &str) -> io::Result<()> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "7",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    )
}

fn leaf(dir: &Path, name: &str, cn: &str, ext: &str) -> io::Result<()> {
    leaf_for_days(dir, name, cn, ext, "7")
}

fn leaf_for_days(dir: &Path, name: &str, cn: &str, ext: &str, days: &str) -> io::Result<()> {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={cn}"),
        ],
    )?;
    std::fs::write(dir.join(format!("{name}.ext")), ext)?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-days",
            days,
            "-extfile",
            &format!("{name}.ext"),
        ],
    )
}

impl Certs {
    /// Generates the files in a new temporary directory.
    pub fn generate() -> io::Result<Certs> {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cache-tls-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let made_at = std::time::SystemTime::now();
        ca(&dir, "ca")?;
        ca(&dir, "other-ca")?;
        leaf(
            &dir,
            "server",
            "localhost",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )?;
        leaf_for_days(
            &dir,
            "expired",
            "localhost",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
            "0",
        )?;
        leaf(
            &dir,
            "client",
            "cache-client",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
        )?;
        Ok(Certs {
            ca_cert: dir.join("ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
            other_ca_cert: dir.join("other-ca.crt"),
            expired_server_cert: dir.join("expired.crt"),
            expired_server_key: dir.join("expired.key"),
            made_at,
            dir,
        })
    }

    /// Reads one of the files.
    pub fn read(path: &Path) -> Vec<u8> {
        std::fs::read(path).expect("a generated certificate file")
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
