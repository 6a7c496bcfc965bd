//! A raw HTTPS client for requests curl will not send (no Host, a body that never comes,
//! odd transfer codings): rustls over a TCP socket, bytes in, bytes out.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// A TCP connection to 127.0.0.1:`port` from the loopback address `from` (any address of
/// 127.0.0.0/8 is local on Linux), so that a test can be several clients.
pub fn tcp_from(from: std::net::Ipv4Addr, port: u16) -> Option<TcpStream> {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    let o = from.octets();
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::new(o[0], o[1], o[2], o[3], 0),
    )
    .unwrap();
    connect(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::new(127, 0, 0, 1, port),
    )
    .ok()?;
    Some(TcpStream::from(fd))
}

/// A TLS client connection (handshake done) from `from` that offers `alpn`; `None` when
/// the server closed it before the handshake ended.
pub fn tls_from(
    from: std::net::Ipv4Addr,
    port: u16,
    ca: &Path,
    alpn: &[u8],
) -> Option<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let mut config = client_config(ca);
    config.alpn_protocols = vec![alpn.to_vec()];
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("127.0.0.1").unwrap())
            .unwrap();
    let tcp = tcp_from(from, port)?;
    tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).ok()?;
    }
    Some(tls)
}

fn client_config(ca: &Path) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Sends one request on a TLS connection and reads one response (or until the server
/// closes or `wait` passes).
pub fn request_on(
    tls: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    request: &[u8],
    wait: Duration,
) -> String {
    tls.sock.set_read_timeout(Some(wait)).unwrap();
    if tls.write_all(request).and_then(|()| tls.flush()).is_err() {
        return String::new();
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if complete(&out) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends `request` as is, then reads until the server closes or `wait` passes. Returns the
/// response text and how long it took to arrive.
pub fn exchange(port: u16, ca: &Path, request: &[u8], wait: Duration) -> (String, Duration) {
    let mut config = client_config(ca);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("127.0.0.1").unwrap())
            .unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let start = Instant::now();
    let answer = request_on(&mut tls, request, wait);
    (answer, start.elapsed())
}

fn complete(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    let Some(end) = text.find("\r\n\r\n") else {
        return false;
    };
    let len = text[..end]
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    data.len() >= end + 4 + len
}

/// The status code of a raw response.
pub fn status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}
