//! A throwaway PostgreSQL cluster for tests: `initdb` and `pg_ctl` from Debian's
//! `postgresql` package (or `SHOAL_PG_BIN`), run as the `postgres` user when this is
//! root (PostgreSQL refuses to run as root), in a private directory with its own
//! socket directory and port. One per test process (`Cluster::shared`), stopped and
//! removed when the process exits; each test takes a fresh database of it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// A running cluster.
#[derive(Debug)]
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// `listen_addresses`: 127.0.0.1, and others a test gave.
    listen: String,
}

static SHARED: OnceLock<Cluster> = OnceLock::new();
static DATABASES: AtomicU32 = AtomicU32::new(0);

/// Where the server's programs are: `SHOAL_PG_BIN`, else the newest Debian version.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SHOAL_PG_BIN") {
        return dir.into();
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dir| dir.filter_map(|e| Some(e.ok()?.path().join("bin"))).collect())
        .unwrap_or_default();
    versions.sort();
    versions.pop().filter(|b| b.join("initdb").exists()).expect(
        "no PostgreSQL server programs in /usr/lib/postgresql/*/bin: install Debian's \
         `postgresql` package (scripts/test.sh does) or set SHOAL_PG_BIN",
    )
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Stops and removes the clusters of test processes that were killed before they
/// could (their directory names their pid).
fn stop_orphans(bin: &Path) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("shoal-pg-").and_then(|r| r.split('-').next()) else {
            continue;
        };
        let Ok(pid) = pid.parse::<i32>() else { continue };
        // SAFETY: signal 0 only asks whether the process exists.
        if unsafe { libc::kill(pid, 0) } == 0 {
            continue;
        }
        let orphan =
            Cluster { bin: bin.to_owned(), dir: entry.path(), port: 0, listen: String::new() };
        orphan.stop();
    }
}

extern "C" fn stop_shared() {
    if let Some(cluster) = SHARED.get() {
        cluster.stop();
    }
}

impl Cluster {
    /// The cluster of this test process, started on first use.
    pub fn shared() -> &'static Cluster {
        SHARED.get_or_init(|| {
            let cluster = Cluster::start();
            // SAFETY: registers a plain function to run at exit.
            unsafe { libc::atexit(stop_shared) };
            cluster
        })
    }

    /// Starts a new cluster (`fsync` off: tests do not survive power cuts).
    pub fn start() -> Cluster {
        Cluster::start_listening(None)
    }

    /// Starts a new cluster that also listens on `address` (one of this machine's),
    /// and trusts connections from its /24.
    pub fn start_listening(address: Option<&str>) -> Cluster {
        let bin = bin_dir();
        stop_orphans(&bin);
        let dir = std::env::temp_dir().join(format!(
            "shoal-pg-{}-{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("socket")).expect("create the cluster's directory");
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("run chown");
            assert!(status.success(), "chown the cluster's directory to postgres");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("find a free port")
            .port();
        let listen = match address {
            Some(address) => format!("127.0.0.1,{address}"),
            None => "127.0.0.1".to_owned(),
        };
        let cluster = Cluster { bin, dir, port, listen };
        cluster.pg(
            "initdb",
            &["-D", &cluster.data(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
        );
        if let Some(address) = address {
            let hba = Path::new(&cluster.data()).join("pg_hba.conf");
            let mut text = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
            let net = address.rsplit_once('.').map_or(address, |(net, _)| net);
            text.push_str(&format!("host all all {net}.0/24 trust\n"));
            std::fs::write(&hba, text).expect("write pg_hba.conf");
        }
        cluster.start_server();
        cluster
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// Runs one of the server's programs, as `postgres` when root; panics on failure.
    fn pg(&self, program: &str, args: &[&str]) {
        let path = self.bin.join(program);
        let mut cmd = if is_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(&path);
            cmd
        } else {
            Command::new(&path)
        };
        let out = cmd.args(args).current_dir(&self.dir).output().expect("run a PostgreSQL program");
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn options(&self) -> String {
        format!(
            "-p {} -k {} -c listen_addresses={} -c fsync=off -c max_connections=200",
            self.port,
            self.dir.join("socket").display(),
            self.listen
        )
    }

    fn start_server(&self) {
        let log = self.dir.join("log").display().to_string();
        self.pg("pg_ctl", &["-D", &self.data(), "-o", &self.options(), "-l", &log, "-w", "start"]);
    }

    /// Stops the server at once (no shutdown checkpoint), and starts it again.
    pub fn restart_immediate(&self) {
        // With a log file: otherwise the server keeps pg_ctl's output open.
        let log = self.dir.join("log").display().to_string();
        let data = self.data();
        let options = self.options();
        let args = ["-D", &data, "-o", &options, "-l", &log, "-m", "immediate", "-w", "restart"];
        self.pg("pg_ctl", &args);
    }

    /// Stops the server and removes its directory.
    pub fn stop(&self) {
        let path = self.bin.join("pg_ctl");
        let data = self.data();
        let args = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
        let _ = if is_root() {
            Command::new("runuser").args(["-u", "postgres", "--"]).arg(&path).args(args).output()
        } else {
            Command::new(&path).args(args).output()
        };
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// The URL of database `name` as the superuser.
    pub fn url(&self, name: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs SQL as the superuser in database `name`.
    pub fn sql(&self, name: &str, sql: &str) {
        let mut client =
            postgres::Client::connect(&self.url(name), postgres::NoTls).expect("connect");
        client.batch_execute(sql).expect("run SQL");
    }

    /// The rows of a query as the superuser in database `name`, each value as text.
    pub fn rows(&self, name: &str, sql: &str) -> Vec<Vec<Option<String>>> {
        let mut client =
            postgres::Client::connect(&self.url(name), postgres::NoTls).expect("connect");
        let messages = client.simple_query(sql).expect("run a query");
        messages
            .iter()
            .filter_map(|m| match m {
                postgres::SimpleQueryMessage::Row(row) => {
                    Some((0..row.len()).map(|i| row.get(i).map(str::to_owned)).collect())
                }
                _ => None,
            })
            .collect()
    }

    /// A new, empty database, and its URL.
    pub fn database(&self) -> String {
        let name = format!("t{}", DATABASES.fetch_add(1, Ordering::Relaxed));
        self.sql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }
}
