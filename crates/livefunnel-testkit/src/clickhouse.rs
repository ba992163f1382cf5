//! A private ClickHouse server per test: its own ports, config and data directory.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::free_port;

/// A user that can read but never write or create anything (`readonly = 1`), for
/// permission-error tests.
pub const LIMITED_USER: &str = "limited";
/// [`LIMITED_USER`]'s password.
pub const LIMITED_PASSWORD: &str = "secret";
/// A user with the same rights as `default` but a password, for tests that run the
/// pipeline with credentials (and check they never show up in logs).
pub const WRITER_USER: &str = "writer";
/// [`WRITER_USER`]'s password: distinctive, so a test can search output for it.
pub const WRITER_PASSWORD: &str = "ch-writer-pw-5f1c9a";

/// Environment variable naming the server binary, when it is not on the usual paths.
const BINARY_ENV: &str = "TESTKIT_CLICKHOUSE_SERVER";
const START_TIMEOUT: Duration = Duration::from_secs(60);
const INSTALL_HINT: &str = "install it with `apt-get install -y clickhouse-server clickhouse-client` \
     (or point TESTKIT_CLICKHOUSE_SERVER at a `clickhouse-server` or `clickhouse` binary)";

/// A local ClickHouse server in a fresh temporary directory, listening on
/// 127.0.0.1 only. User `default` has no password; [`LIMITED_USER`] is read-only;
/// [`WRITER_USER`] can do anything `default` can, with [`WRITER_PASSWORD`].
///
/// [`ClickHouseServer::prepare`] fixes the ports and writes the configuration
/// without starting anything, so a test can know the URL of a server that is
/// still down; [`ClickHouseServer::start`] and [`ClickHouseServer::stop`] can then
/// be called any number of times, keeping the same ports and data. The process is
/// killed when the value is dropped, and the directory removed.
pub struct ClickHouseServer {
    binary: Binary,
    dir: TempDir,
    http_port: u16,
    tcp_port: u16,
    child: Option<Child>,
}

#[derive(Debug, Clone)]
struct Binary {
    path: PathBuf,
    /// The single `clickhouse` binary of newer releases needs `server` first.
    subcommand: bool,
}

impl ClickHouseServer {
    /// [`ClickHouseServer::prepare`] then [`ClickHouseServer::start`].
    pub fn spawn() -> ClickHouseServer {
        let mut server = ClickHouseServer::prepare();
        server.start();
        server
    }

    /// Finds the binary, picks free ports and writes the configuration; starts nothing.
    ///
    /// Panics, saying how to install ClickHouse, when no server binary is found.
    pub fn prepare() -> ClickHouseServer {
        let binary = find_binary().unwrap_or_else(|| {
            panic!("this test needs a local clickhouse server but none was found: {INSTALL_HINT}")
        });
        let dir = tempfile::Builder::new()
            .prefix("livefunnel-clickhouse-")
            .tempdir()
            .expect("creating a temporary directory for clickhouse");
        let server =
            ClickHouseServer { binary, dir, http_port: free_port(), tcp_port: free_port(), child: None };
        server.write_config(free_port());
        server
    }

    /// The HTTP interface's URL, e.g. `http://127.0.0.1:41234`, known before start.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The native protocol port (for `clickhouse-client --port`).
    pub fn tcp_port(&self) -> u16 {
        self.tcp_port
    }

    /// The server's directory: config, data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's process id while it runs (for CPU accounting by benchmarks).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Starts the server and waits until `GET /ping` answers.
    ///
    /// Panics, with the tail of the server's logs, when it does not come up in 60 s.
    pub fn start(&mut self) {
        assert!(!self.is_running(), "clickhouse server already running on port {}", self.http_port);
        let dir = self.dir.path();
        let stdout = File::create(dir.join("log/stdout.log")).expect("creating the server's stdout log");
        let stderr = File::create(dir.join("log/stderr.log")).expect("creating the server's stderr log");
        let mut cmd = Command::new(&self.binary.path);
        if self.binary.subcommand {
            cmd.arg("server");
        }
        cmd.arg(format!("--config-file={}", dir.join("config.xml").display()))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}; {INSTALL_HINT}", self.binary.path.display()));
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if ping(self.http_port) {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    panic!(
                        "clickhouse server exited during start-up ({status}); log tail:\n{}",
                        self.log_tail(40)
                    );
                }
            }
            if Instant::now() >= deadline {
                self.stop();
                panic!(
                    "clickhouse server did not answer /ping on port {} within {} s; log tail:\n{}",
                    self.http_port,
                    START_TIMEOUT.as_secs(),
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server and waits for it to exit. The data directory stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The server recovers from a kill on the next start; tests want speed.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last `lines` lines of each of the server's logs, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for name in ["stdout.log", "stderr.log", "server.err.log", "server.log"] {
            let path = self.dir.path().join("log").join(name);
            let Ok(text) = fs::read_to_string(&path) else { continue };
            let all: Vec<&str> = text.lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            out.push_str(&format!("--- {} ({} lines)\n", path.display(), all.len()));
            for line in tail {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    fn write_config(&self, interserver_port: u16) {
        let dir = self.dir.path();
        for sub in ["data", "tmp", "log", "user_files", "format_schemas"] {
            fs::create_dir_all(dir.join(sub)).expect("creating the server's directories");
        }
        let d = dir.display();
        let config = format!(
            r#"<?xml version="1.0"?>
<yandex>
    <logger>
        <level>information</level>
        <log>{d}/log/server.log</log>
        <errorlog>{d}/log/server.err.log</errorlog>
        <size>100M</size>
        <count>1</count>
        <console>0</console>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>{http}</http_port>
    <tcp_port>{tcp}</tcp_port>
    <interserver_http_port>{interserver}</interserver_http_port>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <path>{d}/data/</path>
    <tmp_path>{d}/tmp/</tmp_path>
    <user_files_path>{d}/user_files/</user_files_path>
    <format_schema_path>{d}/format_schemas/</format_schema_path>
    <users_config>{d}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <max_concurrent_queries>100</max_concurrent_queries>
    <mlock_executable>false</mlock_executable>
</yandex>
"#,
            http = self.http_port,
            tcp = self.tcp_port,
            interserver = interserver_port,
        );
        let users = format!(
            r#"<?xml version="1.0"?>
<yandex>
    <profiles>
        <default></default>
        <readonly><readonly>1</readonly></readonly>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
        <{LIMITED_USER}>
            <password>{LIMITED_PASSWORD}</password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>readonly</profile>
            <quota>default</quota>
        </{LIMITED_USER}>
        <{WRITER_USER}>
            <password>{WRITER_PASSWORD}</password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </{WRITER_USER}>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
"#
        );
        write_file(&dir.join("config.xml"), &config);
        write_file(&dir.join("users.xml"), &users);
    }
}

impl Drop for ClickHouseServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn write_file(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// `GET /ping` over a plain socket: true when the server answers `Ok.`.
fn ping(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"GET /ping HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut response = Vec::new();
    if stream.read_to_end(&mut response).is_err() {
        return false;
    }
    let response = String::from_utf8_lossy(&response);
    response.starts_with("HTTP/1.") && response.contains(" 200 ") && response.contains("Ok.")
}

fn find_binary() -> Option<Binary> {
    if let Some(path) = std::env::var_os(BINARY_ENV) {
        let path = PathBuf::from(path);
        let subcommand = path.file_name().is_some_and(|n| n == "clickhouse");
        return Some(Binary { path, subcommand });
    }
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    // Debian installs the server in sbin, which is not on every user's PATH.
    for extra in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        dirs.push(PathBuf::from(extra));
    }
    let find = |name: &str| dirs.iter().map(|d| d.join(name)).find(|p| p.is_file());
    if let Some(path) = find("clickhouse-server") {
        return Some(Binary { path, subcommand: false });
    }
    find("clickhouse").map(|path| Binary { path, subcommand: true })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A POST to the HTTP interface; returns the whole response, status line first.
    fn post(port: u16, user: &str, password: &str, sql: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connecting to the test server");
        let request = format!(
            "POST /?user={user}&password={password} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{sql}",
            sql.len()
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    fn body(response: &str) -> &str {
        response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }

    #[test]
    fn server_starts_answers_stops_and_restarts_on_the_same_port_and_data() {
        let mut server = ClickHouseServer::prepare();
        let url = server.http_url();
        let port = server.http_port();
        assert!(!server.is_running());
        assert!(!ping(port), "nothing listens before start");

        server.start();
        assert!(server.is_running());
        let created = post(port, "default", "", "CREATE TABLE default.t (a UInt8) ENGINE = TinyLog");
        assert!(created.contains(" 200 "), "{created}");
        let inserted = post(port, "default", "", "INSERT INTO default.t VALUES (7)");
        assert!(inserted.contains(" 200 "), "{inserted}");

        let refused = post(port, LIMITED_USER, LIMITED_PASSWORD, "INSERT INTO default.t VALUES (8)");
        assert!(!refused.contains(" 200 ") && refused.contains("readonly"), "{refused}");
        let read = post(port, LIMITED_USER, LIMITED_PASSWORD, "SELECT sum(a) FROM default.t");
        assert_eq!(body(&read).trim(), "7", "{read}");
        let wrong = post(port, LIMITED_USER, "nope", "SELECT 1");
        assert!(!wrong.contains(" 200 "), "{wrong}");
        let written = post(port, WRITER_USER, WRITER_PASSWORD, "INSERT INTO default.t VALUES (0)");
        assert!(written.contains(" 200 "), "{written}");
        let wrong = post(port, WRITER_USER, "", "SELECT 1");
        assert!(!wrong.contains(" 200 "), "the writer needs its password: {wrong}");

        server.stop();
        assert!(!server.is_running());
        assert!(!ping(port), "nothing listens after stop");

        server.start();
        assert_eq!(server.http_url(), url);
        let read = post(port, "default", "", "SELECT sum(a) FROM default.t");
        assert_eq!(body(&read).trim(), "7", "data survives a restart: {read}");
        assert!(server.log_tail(5).contains("server.log"));
    }
}
