//! The frontend's side of the signer socket: a small pool of connections, a deadline on
//! every call, and reconnection by simply opening a new connection after any failure. The
//! signer being down, slow or saturated all become `Unavailable` (HTTP 503).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::Semaphore;

use hsm_est_proto::codec::{FrameHeader, HEADER_LEN};
use hsm_est_proto::{Request, Response};

#[derive(Debug)]
pub enum SignerError {
    /// Could not reach the signer in time, or the connection broke.
    Unavailable(String),
}

impl std::fmt::Display for SignerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignerError::Unavailable(m) => write!(f, "signer unavailable: {m}"),
        }
    }
}

/// A pooled connection idle longer than this is closed rather than reused: the signer
/// closes connections idle for its `idle_timeout_seconds` (at least 30 s).
const POOL_IDLE_MAX: Duration = Duration::from_secs(20);

pub struct SignerPool {
    path: PathBuf,
    deadline: Duration,
    idle: Mutex<Vec<(UnixStream, Instant)>>,
    slots: Semaphore,
    max_idle: usize,
}

impl SignerPool {
    pub fn new(path: PathBuf, deadline: Duration, max_connections: usize) -> Self {
        SignerPool {
            path,
            deadline,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(max_connections),
            max_idle: max_connections,
        }
    }

    /// One request, one answer, within the deadline (waiting for a free connection included).
    /// `request_id` is the HTTP request's id: it goes into the frame, so that the signer logs
    /// and audits under the same id as this process.
    pub async fn call(&self, request_id: u64, request: &Request) -> Result<Response, SignerError> {
        match tokio::time::timeout(self.deadline, self.call_inner(request_id, request)).await {
            Ok(r) => r,
            Err(_) => Err(SignerError::Unavailable(format!(
                "no answer within {} s",
                self.deadline.as_secs()
            ))),
        }
    }

    async fn call_inner(&self, id: u64, request: &Request) -> Result<Response, SignerError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| SignerError::Unavailable("pool closed".into()))?;
        let pooled = self.idle.lock().ok().and_then(|mut v| {
            v.retain(|(_, since)| since.elapsed() < POOL_IDLE_MAX);
            v.pop().map(|(s, _)| s)
        });
        let mut stream = match pooled {
            Some(s) => s,
            None => UnixStream::connect(&self.path)
                .await
                .map_err(|e| SignerError::Unavailable(format!("connect: {e}")))?,
        };
        let body = request
            .encode()
            .map_err(|e| SignerError::Unavailable(format!("encode: {e}")))?;
        let header = FrameHeader {
            msg_type: request.msg_type(),
            request_id: id,
            body_len: body.len() as u32,
        };
        let mut frame = header.encode().to_vec();
        frame.extend_from_slice(&body);
        let broken = |e: std::io::Error| SignerError::Unavailable(format!("connection: {e}"));
        stream.write_all(&frame).await.map_err(broken)?;
        let mut h = [0u8; HEADER_LEN];
        stream.read_exact(&mut h).await.map_err(broken)?;
        let answer =
            FrameHeader::decode_answer(&h).map_err(|e| SignerError::Unavailable(e.to_string()))?;
        if answer.request_id != id {
            return Err(SignerError::Unavailable(format!(
                "answer for request {} while waiting for {id}",
                answer.request_id
            )));
        }
        let mut buf = vec![0u8; answer.body_len as usize];
        stream.read_exact(&mut buf).await.map_err(broken)?;
        let response = Response::decode(answer.msg_type, &buf)
            .map_err(|e| SignerError::Unavailable(e.to_string()))?;
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.max_idle {
                idle.push((stream, Instant::now()));
            }
        }
        Ok(response)
    }
}
