//! A private PostgreSQL cluster for the tests that need to own one: to
//! give it a TLS certificate, or to stop and restart it under a running
//! server. It needs root (to run the server as `postgres`) and PostgreSQL
//! 15's server binaries, which the PostgreSQL pass of `.ci/run` has.

use std::{path::Path, process::Command};

use crate::tls::pki;

const BIN: &str = "/usr/lib/postgresql/15/bin";

fn as_postgres(args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(args)
        .output()
        .unwrap()
}

fn chown_postgres(path: &Path) {
    assert!(
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .unwrap()
            .success()
    );
}

/// A cluster on a port of its own, stopped when dropped.
pub struct Cluster {
    dir: tempfile::TempDir,
    /// Where it listens (127.0.0.1).
    pub port: u16,
    options: String,
}

impl Cluster {
    /// Initialises and starts a cluster (trust authentication; with `tls`,
    /// the test PKI's server certificate); None where it cannot run.
    pub fn start(tls: bool) -> Option<Self> {
        let root = Command::new("id").arg("-u").output().ok()?;
        if String::from_utf8_lossy(&root.stdout).trim() != "0"
            || !Path::new(BIN).join("initdb").exists()
        {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("purple-pg")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        chown_postgres(dir.path());
        let init = as_postgres(&[
            &format!("{BIN}/initdb"),
            "-D",
            data.to_str().unwrap(),
            "-A",
            "trust",
            "-U",
            "postgres",
        ]);
        assert!(
            init.status.success(),
            "{}",
            String::from_utf8_lossy(&init.stderr)
        );
        let port = crate::helpers::free_port();
        let mut options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1",
            data.display()
        );
        if tls {
            for name in ["server.pem", "server.key", "ca.pem"] {
                std::fs::copy(pki(name), data.join(name)).unwrap();
            }
            chown_postgres(&data);
            Command::new("chmod")
                .arg("600")
                .arg(data.join("server.key"))
                .status()
                .unwrap();
            options.push_str(" -c ssl=on -c ssl_cert_file=server.pem -c ssl_key_file=server.key");
        }
        let cluster = Self { dir, port, options };
        cluster.resume();
        Some(cluster)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").to_str().unwrap().to_owned()
    }

    /// A URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops it at once, as a crash or a failover would.
    pub fn kill(&self) {
        as_postgres(&[
            &format!("{BIN}/pg_ctl"),
            "-D",
            &self.data(),
            "-m",
            "immediate",
            "stop",
        ]);
    }

    /// Starts it (again) and waits until it accepts connections.
    pub fn resume(&self) {
        let log = format!("{}/log", self.data());
        let started = as_postgres(&[
            &format!("{BIN}/pg_ctl"),
            "-D",
            &self.data(),
            "-o",
            &self.options,
            "-w",
            "-l",
            &log,
            "start",
        ]);
        assert!(
            started.status.success(),
            "{}",
            String::from_utf8_lossy(&started.stderr)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill();
    }
}
