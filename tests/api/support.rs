//! Test support: the real `convene` binary on a random port, and private `redis-server`s.
//!
//! Each test starts its own service process (and, for the Redis store, its own
//! `redis-server` on a free port), so tests run in parallel and can stop, kill and restart
//! either. With `REDIS_URL` set, tests that do not need to stop Redis use that server with a
//! key prefix of their own instead. Without `redis-server`, Redis tests are skipped, unless
//! `CONVENE_REQUIRE_REDIS=1`, when they fail.

#![allow(dead_code)]

use reqwest::{Client, Method, Response};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

pub const API_KEY: &str = "test-api-key";
pub const SECOND_API_KEY: &str = "rotated-api-key";
pub const TOKEN_SECRET: &str = "test-token-secret-of-at-least-32-bytes";

/// Which store the service under test uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Redis,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn redis_required() -> bool {
    std::env::var("CONVENE_REQUIRE_REDIS").is_ok_and(|v| v == "1")
}

fn have_redis_server() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A private `redis-server`, killed when dropped. Appends to an AOF in its own directory,
/// so a restart keeps the data.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts one, or answers `None` (the test skips) when `redis-server` is missing and
    /// `CONVENE_REQUIRE_REDIS` is not `1`.
    pub fn start() -> Option<Self> {
        if !have_redis_server() {
            assert!(
                !redis_required(),
                "redis-server is not installed and CONVENE_REQUIRE_REDIS=1"
            );
            eprintln!("skipped: redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("convene-redis-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self {
            child: None,
            port: free_port(),
            dir,
        };
        server.launch();
        Some(server)
    }

    fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not come up", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn ping(&self) -> bool {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    /// A synchronous connection, for looking at what the service wrote.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// Kills the server (SIGKILL): requests in flight see a dead connection.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing answers.
    pub fn freeze(&self) {
        signal(self.child.as_ref().unwrap().id(), "STOP");
    }

    pub fn thaw(&self) {
        signal(self.child.as_ref().unwrap().id(), "CONT");
    }

    /// Starts it again on the same port, with the data it had.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            signal(child.id(), "CONT");
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// How to start the service under test.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Extra `CONVENE_*` variables (or overrides of the harness's own).
    pub env: Vec<(String, String)>,
}

impl Options {
    pub fn env(mut self, key: &str, value: impl ToString) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }
}

/// The service under test: a `convene` process on a random port.
pub struct TestApp {
    child: Option<Child>,
    pub address: String,
    pub client: Client,
    pub api_key: String,
    pub logs: Arc<Mutex<Vec<String>>>,
    pub redis: Option<RedisServer>,
    /// The Redis URL and key prefix the service uses, when it uses Redis.
    pub redis_url: Option<String>,
    options: Options,
}

impl TestApp {
    /// Starts the service with the given store; `None` (skip) for Redis without redis-server.
    pub async fn spawn(backend: Backend) -> Option<Self> {
        Self::spawn_with(backend, Options::default()).await
    }

    pub async fn spawn_with(backend: Backend, options: Options) -> Option<Self> {
        match backend {
            Backend::Memory => Some(Self::launch(None, None, options)),
            Backend::Redis => {
                if let Ok(url) = std::env::var("REDIS_URL") {
                    let prefix = format!("convene-test-{}", uuid::Uuid::new_v4());
                    let options = options.env("CONVENE_REDIS_KEY_PREFIX", &prefix);
                    return Some(Self::launch(Some(url), None, options));
                }
                let redis = RedisServer::start()?;
                Some(Self::launch(Some(redis.url()), Some(redis), options))
            }
        }
    }

    /// Starts the service on a private Redis that the test can kill and restart.
    pub async fn spawn_with_own_redis(options: Options) -> Option<Self> {
        let redis = RedisServer::start()?;
        Some(Self::launch(Some(redis.url()), Some(redis), options))
    }

    fn launch(redis_url: Option<String>, redis: Option<RedisServer>, options: Options) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_convene"));
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("CONVENE_")) {
            cmd.env_remove(key);
        }
        cmd.env("CONVENE_BIND", "127.0.0.1:0")
            .env("CONVENE_API_KEYS", format!("{API_KEY},{SECOND_API_KEY}"))
            .env("CONVENE_TOKEN_SECRET", TOKEN_SECRET)
            .env("CONVENE_WORKERS", "2")
            .env("CONVENE_LOG_LEVEL", "info")
            .env("CONVENE_REDIS_URL", redis_url.clone().unwrap_or_default());
        for (key, value) in &options.env {
            cmd.env(key, value);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start convene");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let (logs, tx) = (logs.clone(), tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        let addr: String = rest
                            .chars()
                            .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                            .collect();
                        let _ = tx.send(Some(addr));
                    }
                    logs.lock().unwrap().push(line);
                }
                let _ = tx.send(None);
            });
        }
        let address = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Some(addr)) => format!("http://{addr}"),
            _ => {
                let _ = child.kill();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "convene did not start:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        Self {
            child: Some(child),
            address,
            client: Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            api_key: API_KEY.to_string(),
            logs,
            redis,
            redis_url,
            options,
        }
    }

    /// Stops the service with SIGTERM and waits for it to exit; answers its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        signal(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(35);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        panic!("convene did not stop within 35 s of SIGTERM");
    }

    /// Stops the service and starts it again on the same store and configuration.
    pub fn restart(&mut self) {
        self.stop();
        let redis = self.redis.take();
        let fresh = Self::launch(self.redis_url.clone(), redis, self.options.clone());
        *self = fresh;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A request with the API key.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("x-vcs-token", &self.api_key)
    }

    /// `POST /api/realtime/room` with a JSON body.
    pub async fn create_room(&self, body: Value) -> Response {
        self.request(Method::POST, "/api/realtime/room")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    /// Creates a room and answers its JSON, asserting the 200.
    pub async fn new_room(&self, body: Value) -> Value {
        let res = self.create_room(body).await;
        assert_eq!(res.status(), 200, "create failed");
        res.json::<Value>().await.unwrap()["room"].clone()
    }

    pub async fn get_room(&self, id: &str) -> Response {
        self.request(Method::GET, &format!("/api/realtime/room/{id}"))
            .send()
            .await
            .unwrap()
    }

    pub async fn list(&self, query: &str) -> Response {
        self.request(Method::GET, &format!("/api/realtime/room{query}"))
            .send()
            .await
            .unwrap()
    }

    pub async fn delete_room(&self, id: &str) -> Response {
        self.request(Method::DELETE, &format!("/api/realtime/room?id={id}"))
            .send()
            .await
            .unwrap()
    }

    pub fn redis_conn(&self) -> redis::Connection {
        redis::Client::open(self.redis_url.clone().expect("a Redis-backed app"))
            .unwrap()
            .get_connection()
            .unwrap()
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Asserts an error answer: status, and the published body with this code, id and text.
pub async fn assert_error(
    res: Response,
    status: u16,
    code: &str,
    id: Option<&str>,
    description: &str,
) {
    assert_eq!(res.status(), status, "status");
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(
        content_type.as_deref(),
        Some("application/json"),
        "content type"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"httpCode": status, "code": code, "id": id, "description": [description]}),
    );
}

/// Polls `check` until it holds or `timeout` passes; answers whether it held.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Declares a test body once and runs it against both stores:
/// `both_stores!(name, |app| async move { ... });` makes `name::memory` and `name::redis`.
#[macro_export]
macro_rules! both_stores {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn memory() {
                let app = $crate::support::TestApp::spawn($crate::support::Backend::Memory)
                    .await
                    .unwrap();
                ($body)(app).await;
            }

            #[tokio::test]
            async fn redis() {
                let Some(app) =
                    $crate::support::TestApp::spawn($crate::support::Backend::Redis).await
                else {
                    return;
                };
                ($body)(app).await;
            }
        }
    };
    ($name:ident, $options:expr, $body:expr) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn memory() {
                let app = $crate::support::TestApp::spawn_with(
                    $crate::support::Backend::Memory,
                    $options,
                )
                .await
                .unwrap();
                ($body)(app).await;
            }

            #[tokio::test]
            async fn redis() {
                let Some(app) =
                    $crate::support::TestApp::spawn_with($crate::support::Backend::Redis, $options)
                        .await
                else {
                    return;
                };
                ($body)(app).await;
            }
        }
    };
}
