//! A webhook receiver for the tests: a small HTTP/1.1 server on a random port that
//! records every request, checks its signature as `docs/webhooks.md` tells receivers to,
//! and answers as the test says: 200, 500, or nothing at all (it holds the request until
//! the sender gives up). With [`Receiver::start_tls`] it speaks HTTPS with a certificate
//! issued by a [`TestCa`] made for the test.

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

pub const SECRET: &str = "whsec-a-test-secret-0123456789";

/// How the receiver answers a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Ok,
    Fail,
    /// No answer: the request is held until the sender closes the connection.
    Hang,
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HashMap<String, String>,
    pub body: String,
    pub json: Value,
    /// Whether `Convene-Signature` verified with `SECRET`, within 5 minutes of now.
    pub verified: bool,
    pub answer: Answer,
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    /// Answers for the next requests, then `then` for all others.
    planned: VecDeque<Answer>,
    then: Option<Answer>,
    /// How long the receiver takes to answer (after it recorded the request).
    delay: Duration,
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl Receiver {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, shared.clone()));
            }
        });
        Self { url, state }
    }

    /// An HTTPS receiver at `https://127.0.0.1:<port>/hooks`, whose certificate (for the
    /// IP address 127.0.0.1) `ca` issued. A connection whose handshake fails is dropped
    /// before any request is recorded.
    pub async fn start_tls(ca: &TestCa) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}/hooks", listener.local_addr().unwrap());
        let (chain, key) = ca.issue("127.0.0.1");
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (acceptor, shared) = (acceptor.clone(), shared.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(socket).await {
                        serve(tls, shared).await;
                    }
                });
            }
        });
        Self { url, state }
    }

    /// Answers the next requests with `planned`, then every other one with `then`.
    pub fn plan(&self, planned: &[Answer], then: Answer) {
        let mut state = self.state.lock().unwrap();
        state.planned = planned.iter().copied().collect();
        state.then = Some(then);
    }

    /// Makes every answer come `delay` after the request was recorded (a slow receiver,
    /// which has the event before the sender knows).
    pub fn slow(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// The bodies of requests answered 200, in the order they came.
    pub fn delivered(&self) -> Vec<Value> {
        self.received()
            .into_iter()
            .filter(|r| r.answer == Answer::Ok)
            .map(|r| r.json)
            .collect()
    }
}

async fn serve(socket: impl AsyncRead + AsyncWrite + Unpin, state: Arc<Mutex<State>>) {
    let mut reader = BufReader::new(socket);
    loop {
        let mut headers = HashMap::new();
        let mut line = String::new();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            if let Some((name, value)) = trimmed.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let body = String::from_utf8(body).unwrap();
        let verified = headers
            .get("convene-signature")
            .is_some_and(|header| verify(header, &body));
        let (answer, delay) = {
            let mut state = state.lock().unwrap();
            let answer = match state.planned.pop_front() {
                Some(answer) => answer,
                None => state.then.unwrap_or(Answer::Ok),
            };
            state.received.push(Received {
                json: serde_json::from_str(&body).unwrap_or(Value::Null),
                headers,
                body,
                verified,
                answer,
            });
            (answer, state.delay)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let response: &[u8] = match answer {
            Answer::Ok => b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            Answer::Fail => b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n",
            Answer::Hang => {
                // Held until the sender gives up and closes the connection.
                let mut rest = Vec::new();
                let _ = reader.read_to_end(&mut rest).await;
                return;
            }
        };
        if reader.get_mut().write_all(response).await.is_err()
            || reader.get_mut().flush().await.is_err()
        {
            return;
        }
    }
}

/// The check `docs/webhooks.md` describes: `t=<seconds>,v1=<hex>`, the HMAC-SHA256 of
/// `<t>.<body>` with the secret, and `t` within 5 minutes of now.
pub fn verify(header: &str, body: &str) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<u64>().ok(),
            Some(("v1", value)) => v1 = Some(value.to_string()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if now.abs_diff(t) > 300 {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    expected == v1
}

/// A certificate authority made for one test (rcgen): its certificate as PEM for
/// `CONVENE_WEBHOOK_CA_FILE`, and server certificates it issues.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let pem = params.self_signed(&key).unwrap().pem();
        Self {
            issuer: rcgen::Issuer::new(params, key),
            pem,
        }
    }

    /// Writes the CA certificate to a new file in the temporary directory and answers its
    /// path.
    pub fn write(&self) -> String {
        let path =
            std::env::temp_dir().join(format!("convene-webhook-ca-{}.pem", uuid::Uuid::new_v4()));
        std::fs::write(&path, &self.pem).unwrap();
        path.to_str().unwrap().to_string()
    }

    /// A server certificate for `host` (a name or an IP address) and its key.
    fn issue(
        &self,
        host: &str,
    ) -> (
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![host.to_string()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let der = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
        (vec![cert.der().clone()], der.into())
    }
}
