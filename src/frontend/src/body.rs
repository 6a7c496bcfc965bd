//! Request bodies: a cap while reading, a bounded drain so that an uploader of a too-large
//! body sees the 413 rather than a reset connection, a refusal before reading of lengths
//! beyond that drain, and a deadline (408).

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::CONTENT_LENGTH;
use hyper::{Request, StatusCode};

use crate::est::MAX_BODY;
use crate::http::{text, AppState, HttpResponse};

/// Bytes of an oversized body read and discarded before the 413 (see `collect_capped`).
const MAX_DRAIN: usize = 2 * 1024 * 1024;

/// Reads a request body: a body over the cap is 413 after at most `MAX_DRAIN` more bytes
/// were read and thrown away (answering while the client is still sending makes the kernel
/// reset the connection, and curl reports a broken pipe instead of the 413); an announced
/// length beyond the cap plus that drain is refused before any of it is read (C1); a body
/// that does not arrive in time is 408.
pub(crate) async fn read_body(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<(hyper::http::request::Parts, Bytes), HttpResponse> {
    let announced = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let http1 = req.version() < hyper::Version::HTTP_2;
    let too_large = || {
        let mut r = text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "The request body is too large.",
        );
        // HTTP/1.1: the rest of the body is not read, so the connection cannot carry
        // another request; say so, and hyper closes it after the answer. (HTTP/2 ends just
        // the stream, with RST_STREAM NO_ERROR once the answer is sent.)
        if http1 {
            r.headers_mut().insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("close"),
            );
        }
        r
    };
    if announced.is_some_and(|n| n > (MAX_BODY + MAX_DRAIN) as u64) {
        return Err(too_large());
    }
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(state.config.body_timeout, collect_capped(body)).await {
        Err(_) => Err(text(
            StatusCode::REQUEST_TIMEOUT,
            "The request body did not arrive in time.",
        )),
        Ok(Err(BodyReadError::TooLarge)) => Err(too_large()),
        Ok(Err(BodyReadError::Broken)) => Err(text(
            StatusCode::BAD_REQUEST,
            "The request body could not be read.",
        )),
        Ok(Ok(b)) => Ok((parts, b)),
    }
}

enum BodyReadError {
    TooLarge,
    Broken,
}

/// Collects at most `MAX_BODY` bytes. Past that, up to `MAX_DRAIN` more are read and thrown
/// away before answering 413, so that a client still sending (a chunked upload) sees the
/// 413 rather than a reset connection; a longer body is cut off.
async fn collect_capped(mut body: Incoming) -> Result<Bytes, BodyReadError> {
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyReadError::Broken)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen <= MAX_BODY {
            kept.extend_from_slice(&data);
        } else if seen > MAX_BODY + MAX_DRAIN {
            return Err(BodyReadError::TooLarge);
        }
    }
    if seen > MAX_BODY {
        return Err(BodyReadError::TooLarge);
    }
    Ok(Bytes::from(kept))
}
