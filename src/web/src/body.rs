//! Request bodies: a cap while reading, a bounded drain so that an uploader of a too-large
//! body sees the 413 rather than a reset connection, a refusal before reading of lengths
//! beyond that drain, and a deadline. Each process turns [`BodyError`] into its answer.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::CONTENT_LENGTH;
use hyper::Request;

/// Bytes of an oversized body read and discarded before the 413 (see `collect_capped`).
pub const MAX_DRAIN: usize = 2 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Over the cap (413). `close`: HTTP/1.1, where the rest of the body is not read and
    /// the connection cannot carry another request, so the answer must say
    /// `Connection: close` (HTTP/2 ends just the stream).
    TooLarge { close: bool },
    /// The body did not arrive within the deadline (408).
    Timeout,
    /// The body could not be read (400).
    Broken,
}

/// Reads a request body of at most `max` bytes: a body over the cap is `TooLarge` after at
/// most [`MAX_DRAIN`] more bytes were read and thrown away (answering while the client is
/// still sending makes the kernel reset the connection, and curl reports a broken pipe
/// instead of the 413); an announced length beyond the cap plus that drain is refused
/// before any of it is read; a body that does not arrive in `deadline` is `Timeout`.
pub async fn read_body(
    req: Request<Incoming>,
    max: usize,
    deadline: Duration,
) -> Result<(hyper::http::request::Parts, Bytes), BodyError> {
    let announced = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = BodyError::TooLarge {
        close: req.version() < hyper::Version::HTTP_2,
    };
    if announced.is_some_and(|n| n > (max + MAX_DRAIN) as u64) {
        return Err(too_large);
    }
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(deadline, collect_capped(body, max)).await {
        Err(_) => Err(BodyError::Timeout),
        Ok(Err(Capped::TooLarge)) => Err(too_large),
        Ok(Err(Capped::Broken)) => Err(BodyError::Broken),
        Ok(Ok(b)) => Ok((parts, b)),
    }
}

enum Capped {
    TooLarge,
    Broken,
}

/// Collects at most `max` bytes. Past that, up to `MAX_DRAIN` more are read and thrown
/// away before answering 413; a longer body is cut off.
async fn collect_capped(mut body: Incoming, max: usize) -> Result<Bytes, Capped> {
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Capped::Broken)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen <= max {
            kept.extend_from_slice(&data);
        } else if seen > max + MAX_DRAIN {
            return Err(Capped::TooLarge);
        }
    }
    if seen > max {
        return Err(Capped::TooLarge);
    }
    Ok(Bytes::from(kept))
}
