//! The benchmark's HTTP/2 client (hyper over tokio-rustls, ALPN h2): the prepared HTTP/1.1
//! requests are sent as HTTP/2 requests, `streams` at a time, multiplexed over
//! `connections` connections (or a new connection for every request).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;

use super::http::{Answer, Target};

/// One request to send: its HTTP/1.1 bytes and the TLS configuration to connect with.
pub struct Work {
    pub raw: Vec<u8>,
    pub tls: Arc<rustls::ClientConfig>,
}

/// The answer to each work item, in the order given.
pub type Outcomes = Vec<Result<(Answer, Duration), String>>;

/// How the requests travel.
pub struct Shape {
    pub streams: usize,
    pub connections: usize,
    pub new_connection: bool,
}

/// Sends every item; answers come back in the order of `work`.
pub fn drive(
    target: &Target,
    server_name: &ServerName<'static>,
    work: Vec<Work>,
    shape: Shape,
) -> Outcomes {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return work.iter().map(|_| Err(format!("tokio: {e}"))).collect(),
    };
    let n = work.len();
    let streams = shape.streams.clamp(1, n.max(1));
    let connections = shape.connections.clamp(1, streams);
    runtime.block_on(async move {
        // Stream s takes items s, s + streams, …; connection c carries streams c,
        // c + connections, ….
        let mut shares: Vec<Vec<(usize, Work)>> = (0..streams).map(|_| Vec::new()).collect();
        for (i, w) in work.into_iter().enumerate() {
            shares[i % streams].push((i, w));
        }
        let mut senders: Vec<Option<SendRequest<Full<Bytes>>>> = vec![None; connections];
        if !shape.new_connection {
            for (c, sender) in senders.iter_mut().enumerate() {
                let tls = shares
                    .get(c)
                    .and_then(|s| s.first())
                    .map(|(_, w)| Arc::clone(&w.tls));
                if let Some(tls) = tls {
                    *sender = connect(target, server_name, tls).await.ok();
                }
            }
        }
        let mut tasks = Vec::with_capacity(streams);
        for (s, share) in shares.into_iter().enumerate() {
            let shared = senders[s % connections].clone();
            let (target, server_name) = (target.clone(), server_name.clone());
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::with_capacity(share.len());
                for (i, w) in share {
                    let start = Instant::now();
                    let result = match &shared {
                        // A stream the server refused before it learnt our settings
                        // (REFUSED_STREAM: never processed) is sent once more.
                        Some(sender) => match send(sender.clone(), &target, &w.raw).await {
                            Err(e) if e.starts_with("h2 request") => {
                                send(sender.clone(), &target, &w.raw).await
                            }
                            other => other,
                        },
                        None => match connect(&target, &server_name, Arc::clone(&w.tls)).await {
                            Ok(sender) => send(sender, &target, &w.raw).await,
                            Err(e) => Err(e),
                        },
                    };
                    out.push((i, result.map(|a| (a, start.elapsed()))));
                }
                out
            }));
        }
        let mut all: Vec<Option<Result<(Answer, Duration), String>>> =
            (0..n).map(|_| None).collect();
        for t in tasks {
            if let Ok(results) = t.await {
                for (i, r) in results {
                    all[i] = Some(r);
                }
            }
        }
        all.into_iter()
            .map(|r| r.unwrap_or_else(|| Err("task failed".into())))
            .collect()
    })
}

/// A TLS connection offering only h2, and its HTTP/2 handshake.
async fn connect(
    target: &Target,
    server_name: &ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
) -> Result<SendRequest<Full<Bytes>>, String> {
    let mut config = (*tls).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("connect: {}", e.kind()))?;
    let _ = tcp.set_nodelay(true);
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name.clone(), tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err("the server did not agree to h2".into());
    }
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Sends one prepared HTTP/1.1 request as HTTP/2 and reads the whole answer.
async fn send(
    mut sender: SendRequest<Full<Bytes>>,
    target: &Target,
    raw: &[u8],
) -> Result<Answer, String> {
    let request = to_h2(raw, target)?;
    sender
        .ready()
        .await
        .map_err(|e| format!("h2 not ready: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("h2 request: {e}"))?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("h2 body: {e}"))?
        .to_bytes()
        .to_vec();
    Ok(Answer {
        status,
        content_type,
        body,
        close: false,
    })
}

/// The HTTP/2 form of a prepared HTTP/1.1 request: method and path from the request line,
/// the headers but Host (the authority), Connection and Content-Length, and the body.
fn to_h2(raw: &[u8], target: &Target) -> Result<hyper::Request<Full<Bytes>>, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("prepared request without a head")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "prepared head not UTF-8")?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (method, path) = (first.next().unwrap_or("GET"), first.next().unwrap_or("/"));
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(format!("https://{}:{}{path}", target.host, target.port));
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            if !["host", "connection", "content-length"]
                .contains(&k.trim().to_ascii_lowercase().as_str())
            {
                builder = builder.header(k.trim(), v.trim());
            }
        }
    }
    builder
        .body(Full::new(Bytes::copy_from_slice(&raw[end + 4..])))
        .map_err(|e| e.to_string())
}
