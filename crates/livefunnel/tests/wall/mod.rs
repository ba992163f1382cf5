//! Helpers of the wall's browser test: `livefunnel demo` as a process, headless
//! Chromium driven through chromedriver (WebDriver), and plain HTTP on loopback.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder};
use livefunnel_testkit::free_port;
use serde_json::{json, Value};

/// A child process killed when the test ends, however it ends.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let t = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = t.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `livefunnel demo` on a free loopback port, its stdout and stderr in `dir`.
pub struct Demo {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    _child: Killed,
}

impl Demo {
    pub fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Demo {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_livefunnel"))
            .arg("demo")
            .args(args)
            .args(["--http", &addr.to_string()])
            .arg("--data-dir")
            .arg(dir.join("data"))
            // Rows are not what these tests look at; never write into a server that
            // happens to answer on 127.0.0.1:8123.
            .args(["--sink", "jsonl"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("demo.out")).unwrap())
            .stderr(std::fs::File::create(dir.join("demo.log")).unwrap())
            .spawn()
            .expect("starting livefunnel demo");
        let demo = Demo { addr, dir: dir.to_owned(), _child: Killed(child) };
        let start = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(start.elapsed() < Duration::from_secs(60), "the demo never listened\n{}", demo.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
        demo
    }

    pub fn logs(&self) -> String {
        format!(
            "demo stdout:\n{}\ndemo log:\n{}",
            tail(&self.dir.join("demo.out"), 10),
            tail(&self.dir.join("demo.log"), 30)
        )
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// GET with an optional bearer token: (status, body).
    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        get(self.addr, path, token).unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.logs()))
    }

    /// GET of a JSON API answering 200.
    pub fn api(&self, path: &str, token: Option<&str>) -> Value {
        let (code, body) = self.get(path, token);
        assert_eq!(code, 200, "GET {path}: {body}\n{}", self.logs());
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }
}

/// GET over HTTP/1.0 (no chunked encoding): (status, body).
pub fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}\r\n").as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|x| x.1.to_owned()).unwrap_or_default();
    Ok((code, body))
}

/// Reads an event stream for `secs` seconds: (events, bytes of the whole stream).
pub fn sse_bytes(addr: SocketAddr, path: &str, token: Option<&str>, secs: u64) -> (usize, usize) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}\r\n").as_bytes()).unwrap();
    let mut all = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("reading {path}: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&all);
    let body = text.split_once("\r\n\r\n").map_or("", |x| x.1);
    (body.matches("\nevent: ").count() + usize::from(body.starts_with("event: ")), body.len())
}

/// chromedriver and one headless Chromium session.
pub struct Browser {
    pub client: Client,
    _driver: KilledGroup,
}

/// chromedriver in a process group of its own, killed with the group when the test
/// ends: Chromium is chromedriver's child in the same group, and killing chromedriver
/// alone would leave Chromium running.
struct KilledGroup(Child);

impl Drop for KilledGroup {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.0.id())]).status();
        let _ = self.0.wait();
    }
}

/// `POST /session/{id}/se/log`: the performance log (DevTools events) since the last call.
#[derive(Debug)]
struct GetLog;

impl WebDriverCompatibleCommand for GetLog {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(json!({ "type": "performance" }).to_string()))
    }
}

fn binary(env: &str, default: &str, package: &str) -> PathBuf {
    let p = std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        p.exists(),
        "this test needs {} (Debian's {package}): apt-get install -y chromium chromium-driver, or set {env}",
        p.display()
    );
    p
}

impl Browser {
    /// A fresh profile in `dir`, 1920×1080, and a proxy on a closed loopback port: a
    /// request for anything but loopback (which Chromium never proxies) fails
    /// instead of leaving the machine. Every request is in the performance log.
    pub async fn start(dir: &Path) -> Browser {
        let chromium = binary("TESTKIT_CHROMIUM", "/usr/bin/chromium", "chromium");
        let chromedriver = binary("TESTKIT_CHROMEDRIVER", "/usr/bin/chromedriver", "chromium-driver");
        let port = free_port();
        let driver = KilledGroup(
            Command::new(chromedriver)
                .arg(format!("--port={port}"))
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(dir.join("chromedriver.log")).unwrap())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting chromedriver"),
        );
        let profile = dir.join("chromium-profile");
        std::fs::create_dir_all(&profile).unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--no-first-run",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--disable-extensions",
            "--window-size=1920,1080",
            "--proxy-server=http://127.0.0.1:9",
            &format!("--user-data-dir={}", profile.display()),
        ];
        let caps: Capabilities = serde_json::from_value(json!({
            "goog:chromeOptions": { "binary": chromium, "args": args },
            "goog:loggingPrefs": { "performance": "ALL" },
        }))
        .unwrap();
        let start = Instant::now();
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(c) => break c,
                Err(e) if start.elapsed() < Duration::from_secs(60) => {
                    tracing::debug!(error = %e, "chromedriver not ready yet");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => panic!(
                    "no WebDriver session from chromedriver: {e}\n{}",
                    tail(&dir.join("chromedriver.log"), 30)
                ),
            }
        };
        // The page's viewport, not the window, is 1920×1080: the TV's screen.
        let outer = client
            .execute(
                "return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight]",
                vec![],
            )
            .await
            .unwrap();
        let (dw, dh) = (outer[0].as_u64().unwrap_or(0) as u32, outer[1].as_u64().unwrap_or(0) as u32);
        client.set_window_size(1920 + dw, 1080 + dh).await.expect("resizing the window");
        Browser { client, _driver: driver }
    }

    /// The URL of every request the browser sent since the last call.
    pub async fn requests(&self) -> Vec<String> {
        let log = self.client.issue_cmd(GetLog).await.expect("reading the performance log");
        let mut urls = Vec::new();
        for entry in log.as_array().into_iter().flatten() {
            let Some(msg) = entry["message"].as_str().and_then(|m| serde_json::from_str::<Value>(m).ok())
            else {
                continue;
            };
            if msg["message"]["method"] == "Network.requestWillBeSent" {
                if let Some(u) = msg["message"]["params"]["request"]["url"].as_str() {
                    urls.push(u.to_owned());
                }
            }
        }
        urls
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    pub async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("{e}: {script}"))
    }

    /// Polls `script` until it returns something other than `null`/`false`, or panics
    /// after `limit` with `what`.
    pub async fn wait_js(
        &self,
        what: &str,
        limit: Duration,
        script: &str,
        logs: impl Fn() -> String,
    ) -> Value {
        let start = Instant::now();
        loop {
            let v = self.js(script).await;
            if !v.is_null() && v != Value::Bool(false) {
                return v;
            }
            assert!(start.elapsed() < limit, "{what}: not within {limit:?}\n{}", logs());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn screenshot(&self, path: &Path) {
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::write(path, png).unwrap();
        println!("screenshot: {}", path.display());
    }
}

/// Panics if a process still runs with the browser profile under `dir` on its command
/// line (Chromium, or one of its helpers), after a bounded wait for them to exit.
pub fn assert_no_browser_left(dir: &Path) {
    let profile = dir.join("chromium-profile");
    let profile = profile.to_string_lossy();
    let start = Instant::now();
    loop {
        let left: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok().map(|c| (e.file_name(), c)))
            .filter(|(_, c)| String::from_utf8_lossy(c).contains(profile.as_ref()))
            .map(|(pid, c)| {
                format!("{}: {}", pid.to_string_lossy(), String::from_utf8_lossy(&c).replace('\0', " "))
            })
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "browser processes left running:\n{}",
            left.join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
