//! The benchmark's HTTP/1.1 client: one request, one answer, on a kept-alive stream (plain
//! TCP or rustls). Bodies are framed by Content-Length, as both listeners send them.

use std::io::{BufRead, BufReader, Read, Write};

/// Where the benchmark sends requests: `scheme://HOST:PORT/PATH`, the port explicit.
#[derive(Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// The path without a trailing slash ("" for the root).
    pub path: String,
}

impl Target {
    pub fn parse(url: &str, scheme: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix(scheme)
            .and_then(|r| r.strip_prefix("://"))
            .ok_or_else(|| format!("--url must be {scheme}://HOST:PORT/PATH"))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or("--url needs an explicit port")?;
        Ok(Target {
            host: host.to_string(),
            port: port.parse().map_err(|_| "bad port in --url")?,
            path: format!("/{}", path.trim_end_matches('/')),
        })
    }
}

/// One answer.
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
    /// The server said `Connection: close`: the stream cannot carry another request.
    pub close: bool,
}

/// Sends `request` and reads one answer. Errors name what broke (`connect`, `write`,
/// `read`, `closed`), never the request data.
pub fn exchange<S: Read + Write>(
    stream: &mut BufReader<S>,
    request: &[u8],
) -> Result<Answer, String> {
    stream
        .get_mut()
        .write_all(request)
        .and_then(|()| stream.get_mut().flush())
        .map_err(|e| format!("write: {}", e.kind()))?;
    let mut line = String::new();
    stream
        .read_line(&mut line)
        .map_err(|e| format!("read: {}", e.kind()))?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("closed")?;
    let (mut len, mut content_type, mut close) = (0usize, String::new(), false);
    loop {
        line.clear();
        stream
            .read_line(&mut line)
            .map_err(|e| format!("read: {}", e.kind()))?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let v = v.trim();
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.parse().map_err(|_| "bad content-length")?,
                "content-type" => content_type = v.to_string(),
                "connection" => close = v.eq_ignore_ascii_case("close"),
                "transfer-encoding" => return Err("chunked answer".into()),
                _ => {}
            }
        }
    }
    if len > 1 << 20 {
        return Err("answer over 1 MiB".into());
    }
    let mut body = vec![0u8; len];
    stream
        .read_exact(&mut body)
        .map_err(|e| format!("read: {}", e.kind()))?;
    Ok(Answer {
        status,
        content_type,
        body,
        close,
    })
}
