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
use std::io::{BufRead, BufReader, Read};
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

/// A private three-master Redis Cluster (no replicas), killed when dropped: three
/// `redis-server --cluster-enabled yes` in temporary directories, joined by
/// `redis-cli --cluster create`, answered once every node says `cluster_state:ok`.
pub struct RedisCluster {
    children: Vec<Child>,
    pub ports: Vec<u16>,
    dir: PathBuf,
}

impl RedisCluster {
    /// Starts one, or answers `None` (the test skips) when `redis-server` or `redis-cli`
    /// is missing and `CONVENE_REQUIRE_REDIS` is not `1`.
    pub fn start() -> Option<Self> {
        let have_cli = Command::new("redis-cli")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !have_redis_server() || !have_cli {
            assert!(
                !redis_required(),
                "redis-server or redis-cli is not installed and CONVENE_REQUIRE_REDIS=1"
            );
            eprintln!("skipped: redis-server or redis-cli is not installed");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("convene-cluster-{}", uuid::Uuid::new_v4()));
        let mut cluster = Self {
            children: Vec::new(),
            ports: Vec::new(),
            dir,
        };
        // A port found free may be taken by another test before redis-server binds it (its
        // cluster bus port too): a server that exits is started again on other ports.
        let mut attempts = 0;
        while !cluster.launch() {
            attempts += 1;
            assert!(attempts < 5, "the cluster's redis-servers did not come up");
        }
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cluster.ports.iter().all(|&p| cluster_ok(p)) {
            assert!(
                Instant::now() < deadline,
                "the cluster never reached cluster_state:ok"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(cluster)
    }

    /// Starts three cluster-enabled redis-servers on free ports and waits until each
    /// answers; `false` (and none left running) when one of them exited.
    fn launch(&mut self) -> bool {
        self.stop();
        for _ in 0..3 {
            let port = cluster_port();
            let dir = self.dir.join(port.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", "5000"])
                .args(["--save", "", "--appendonly", "no", "--dir"])
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server");
            self.children.push(child);
            self.ports.push(port);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for i in 0..self.ports.len() {
            while !ping(self.ports[i]) {
                if self.children[i].try_wait().unwrap().is_some() {
                    eprintln!(
                        "redis-server on port {} exited; again on other ports",
                        self.ports[i]
                    );
                    self.stop();
                    return false;
                }
                assert!(
                    Instant::now() < deadline,
                    "cluster node on port {} did not come up",
                    self.ports[i]
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        true
    }

    fn stop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
        self.ports.clear();
    }

    /// The nodes' URLs.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect()
    }

    /// `CONVENE_REDIS_URL` for it: every node, comma-separated.
    pub fn url_setting(&self) -> String {
        self.urls().join(",")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the nodes of a cluster test share: one private `redis-server`, or a private
/// three-master Redis Cluster. The same test runs on either.
pub enum SharedRedis {
    Single(RedisServer),
    Cluster(RedisCluster),
}

impl SharedRedis {
    /// One `redis-server` (`None`: skipped, see [`RedisServer::start`]).
    pub fn single() -> Option<Self> {
        RedisServer::start().map(Self::Single)
    }

    /// A Redis Cluster (`None`: skipped, see [`RedisCluster::start`]).
    pub fn cluster() -> Option<Self> {
        RedisCluster::start().map(Self::Cluster)
    }

    /// Which one, for a test's report.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Single(_) => "one Redis",
            Self::Cluster(_) => "a Redis Cluster",
        }
    }

    /// `CONVENE_REDIS_URL` for the nodes.
    pub fn url(&self) -> String {
        match self {
            Self::Single(redis) => redis.url(),
            Self::Cluster(cluster) => cluster.url_setting(),
        }
    }

    /// What a node needs besides the URL (`CONVENE_REDIS_CLUSTER=1` on a cluster).
    pub fn options(&self) -> Options {
        match self {
            Self::Single(_) => Options::default(),
            Self::Cluster(_) => Options::default().env("CONVENE_REDIS_CLUSTER", 1),
        }
    }

    /// A connection for the test's own reads (a cluster connection routes each key to its
    /// slot's master).
    pub fn conn(&self) -> Box<dyn redis::ConnectionLike> {
        match self {
            Self::Single(redis) => Box::new(redis.conn()),
            Self::Cluster(cluster) => Box::new(
                redis::cluster::ClusterClient::new(cluster.urls())
                    .unwrap()
                    .get_connection()
                    .unwrap(),
            ),
        }
    }

    /// A string key's value.
    pub fn get(&self, key: &str) -> Option<String> {
        redis::cmd("GET").arg(key).query(&mut *self.conn()).unwrap()
    }

    /// Whether `member` is in the set at `key`.
    pub fn is_member(&self, key: &str, member: &str) -> bool {
        redis::cmd("SISMEMBER")
            .arg(key)
            .arg(member)
            .query(&mut *self.conn())
            .unwrap()
    }
}

/// A free port whose cluster bus port (the port + 10000) exists and is free too.
fn cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port < 55000 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

fn ping(port: u16) -> bool {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        .is_ok()
}

fn cluster_ok(port: u16) -> bool {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
        .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
        .is_ok_and(|info| info.contains("cluster_state:ok"))
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
    /// The lines the service wrote on stdout only (`logs` has both streams).
    pub stdout: Arc<Mutex<Vec<String>>>,
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

    /// Starts the service on a Redis (or Redis Cluster) that the test started itself and
    /// owns: `redis_url` as `CONVENE_REDIS_URL` takes it.
    pub fn spawn_on(redis_url: &str, options: Options) -> Self {
        Self::launch(Some(redis_url.to_string()), None, options)
    }

    /// Starts the service on a private Redis that the test can kill and restart.
    pub async fn spawn_with_own_redis(options: Options) -> Option<Self> {
        let redis = RedisServer::start()?;
        Some(Self::launch(Some(redis.url()), Some(redis), options))
    }

    fn launch(redis_url: Option<String>, redis: Option<RedisServer>, options: Options) -> Self {
        let mut child = command(redis_url.as_deref(), &options)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start convene");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        for (is_stdout, stream) in [
            (
                true,
                Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            ),
            (false, Box::new(child.stderr.take().unwrap())),
        ] {
            let (logs, stdout, tx) = (logs.clone(), stdout.clone(), tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if is_stdout {
                        stdout.lock().unwrap().push(line.clone());
                    }
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
            stdout,
            redis,
            redis_url,
            options,
        }
    }

    /// Kills the service (SIGKILL): it has no chance to clean anything up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
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

    /// Sends the service SIGTERM and returns at once (see [`TestApp::wait_for_exit`]).
    pub fn terminate(&self) {
        if let Some(child) = &self.child {
            signal(child.id(), "TERM");
        }
    }

    /// Waits for the service to exit (after [`TestApp::terminate`]); answers its exit status,
    /// `None` when it still runs after `timeout` (it is killed then).
    pub async fn wait_for_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Stops the service and starts it again on the same store and configuration.
    pub fn restart(&mut self) {
        self.restart_with(self.options.clone());
    }

    /// Stops the service and starts it again on the same store with other options.
    pub fn restart_with(&mut self, options: Options) {
        self.stop();
        let redis = self.redis.take();
        let fresh = Self::launch(self.redis_url.clone(), redis, options);
        *self = fresh;
    }

    /// The options the service was started with.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The process id of the running service.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The service's resident memory (`VmRSS`), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid().unwrap()))
            .expect("/proc/<pid>/status");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status");
        kb * 1024
    }

    /// `host:port` of the service, for raw TCP requests.
    pub fn host_port(&self) -> &str {
        self.address.trim_start_matches("http://")
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

    /// The text of the service's `/metrics`.
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of one series on `/metrics` (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        self.metrics_text()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    /// Active rooms (rooms with an actor): the sum of the `convene_rooms` gauges.
    pub async fn active_rooms(&self) -> u64 {
        self.metrics_text()
            .await
            .lines()
            .filter(|l| l.starts_with("convene_rooms{"))
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
            .sum()
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

    pub async fn participants(&self, id: &str) -> Response {
        self.request(
            Method::GET,
            &format!("/api/realtime/room/{id}/participants"),
        )
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

/// The command that starts the service: the harness's own `CONVENE_*` settings (and none of
/// the caller's environment), then the options' overrides.
fn command(redis_url: Option<&str>, options: &Options) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_convene"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("CONVENE_")) {
        cmd.env_remove(key);
    }
    cmd.env("CONVENE_BIND", "127.0.0.1:0")
        .env("CONVENE_API_KEYS", format!("{API_KEY},{SECOND_API_KEY}"))
        .env("CONVENE_TOKEN_SECRET", TOKEN_SECRET)
        .env("CONVENE_WORKERS", "2")
        .env("CONVENE_RTC_UDP_PORT", "0")
        .env("CONVENE_LOG_LEVEL", "info")
        .env("CONVENE_REDIS_URL", redis_url.unwrap_or_default());
    for (key, value) in &options.env {
        cmd.env(key, value);
    }
    cmd
}

/// How a service process that was expected to stop by itself ended.
#[derive(Debug)]
pub struct Exited {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the service (memory store unless the options name a Redis URL) and waits for it to
/// exit by itself, as it must on invalid configuration; kills it and panics after `timeout`.
pub fn run_to_exit(options: Options, timeout: Duration) -> Exited {
    run_args_to_exit(&[], options, timeout)
}

/// Runs `convene ARGS` with the harness's settings and the options' (memory store unless
/// they name a Redis URL), and waits for it to exit; kills it and panics after `timeout`.
pub fn run_args_to_exit(args: &[&str], options: Options, timeout: Duration) -> Exited {
    let mut child = command(None, &options)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start convene");
    let read = |stream: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(stream).read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "convene did not exit within {timeout:?}:\n{}\n{}",
                stdout.join().unwrap(),
                stderr.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Exited {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Asserts a successful JSON answer (status and `Content-Type: application/json`) and
/// answers its body.
pub async fn json_ok(res: Response) -> Value {
    assert_eq!(res.status(), 200, "status");
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(
        content_type.as_deref(),
        Some("application/json"),
        "content type"
    );
    res.json().await.unwrap()
}

/// Milliseconds since the epoch, as the service counts them.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The claims of a JWT, read without verifying it (base64url of the middle part).
pub fn jwt_claims(token: &str) -> Value {
    use base64::Engine;
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three parts: {token}");
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[1])
        .expect("base64url payload");
    serde_json::from_slice(&payload).expect("JSON claims")
}

/// Whether `token` is a valid room token signed with `secret` (HS256, issuer and audience
/// as configured by default, not expired).
pub fn jwt_verifies(token: &str, secret: &str) -> bool {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&["convene"]);
    validation.set_audience(&["convene-room"]);
    validation.leeway = 0;
    decode::<Value>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .is_ok()
}

/// `RO-` and a lowercase UUID v4: `^RO-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`.
pub fn is_room_id(id: &str) -> bool {
    let Some(uuid) = id.strip_prefix("RO-") else {
        return false;
    };
    let groups: Vec<&str> = uuid.split('-').collect();
    let hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && hex(g))
        && groups[2].starts_with('4')
        && groups[3].starts_with(['8', '9', 'a', 'b'])
}

/// An HTTP answer read off a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not a JSON body ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Sends `request` (bytes as they go on the wire, which should ask for
/// `Connection: close`) and reads the answer until the server closes the connection.
/// Understands `Content-Length` and chunked bodies.
pub async fn raw_http(host_port: &str, request: &[u8]) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(host_port).await.unwrap();
    // The server may answer (and stop reading) before the whole request is written.
    let _ = stream.write_all(request).await;
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
            }
            if parse_raw(&bytes, false).is_some() {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no complete answer within 10 s");
    parse_raw(&bytes, true).unwrap_or_else(|| {
        panic!(
            "incomplete HTTP answer: {:?}",
            String::from_utf8_lossy(&bytes)
        )
    })
}

/// A complete answer in `bytes`, or `None` while more is needed. At `eof`, a body without
/// a length is whatever came.
pub fn parse_raw(bytes: &[u8], eof: bool) -> Option<RawResponse> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &bytes[end + 4..];
    let find = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let body = if let Some(len) = find("content-length") {
        let len: usize = len.parse().ok()?;
        if rest.len() < len {
            return None;
        }
        rest[..len].to_vec()
    } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        let mut at = rest;
        loop {
            let line_end = at.windows(2).position(|w| w == b"\r\n")?;
            let size = usize::from_str_radix(std::str::from_utf8(&at[..line_end]).ok()?.trim(), 16)
                .ok()?;
            at = &at[line_end + 2..];
            if size == 0 {
                break;
            }
            if at.len() < size + 2 {
                return None;
            }
            body.extend_from_slice(&at[..size]);
            at = &at[size + 2..];
        }
        body
    } else if eof {
        rest.to_vec()
    } else {
        // No length: the body ends when the connection does.
        return None;
    };
    Some(RawResponse {
        status,
        headers,
        body,
    })
}

/// Reads from `stream` until the server closes the connection (panics after 30 s) and
/// parses the first answer in what came.
pub async fn read_until_closed(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> RawResponse {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the server did not close the connection within 30 s: {:?}",
        String::from_utf8_lossy(&bytes)
    );
    parse_raw(&bytes, true)
        .unwrap_or_else(|| panic!("no HTTP answer: {:?}", String::from_utf8_lossy(&bytes)))
}

/// Asserts the published error body of a raw answer, with `Content-Type: application/json`.
pub fn assert_raw_error(res: &RawResponse, status: u16, code: &str, id: &str, description: &str) {
    assert_eq!(res.status, status, "{res:?}");
    assert_eq!(
        res.header("content-type"),
        Some("application/json"),
        "{res:?}"
    );
    assert_eq!(
        res.json(),
        serde_json::json!({"httpCode": status, "code": code, "id": id, "description": [description]}),
    );
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

/// Runs `async fn name(redis: SharedRedis)` of the calling module on one private
/// `redis-server` (`name::one_redis`) and on a private three-master Redis Cluster
/// (`name::redis_cluster`).
#[macro_export]
macro_rules! one_redis_and_cluster {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn one_redis() {
                if let Some(redis) = $crate::support::SharedRedis::single() {
                    super::$name(redis).await;
                }
            }

            #[tokio::test]
            async fn redis_cluster() {
                if let Some(redis) = $crate::support::SharedRedis::cluster() {
                    super::$name(redis).await;
                }
            }
        }
    };
}

/// Declares a test body once and runs it against both stores:
/// `both_stores!(name, |app| async move { ... });` makes `name::memory` and `name::redis`.
/// Attributes before the name (`#[ignore = "BUG: ..."]`) go on both tests.
#[macro_export]
macro_rules! both_stores {
    ($(#[$attr:meta])* $name:ident, $body:expr) => {
        mod $name {
            use super::*;

            #[tokio::test]
            $(#[$attr])*
            async fn memory() {
                let app = $crate::support::TestApp::spawn($crate::support::Backend::Memory)
                    .await
                    .unwrap();
                ($body)(app).await;
            }

            #[tokio::test]
            $(#[$attr])*
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
    ($(#[$attr:meta])* $name:ident, $options:expr, $body:expr) => {
        mod $name {
            use super::*;

            #[tokio::test]
            $(#[$attr])*
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
            $(#[$attr])*
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
