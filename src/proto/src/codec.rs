//! Hand-written, bounded framing. Every length is checked against a cap before anything is
//! allocated, reserved fields must be zero and trailing bytes are an error: the signer treats
//! every byte from the socket as hostile (a compromised frontend is in scope).

use std::fmt;
use std::io::{self, Read, Write};

/// `HEST`: the first four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"HEST";
/// The only version this build speaks.
pub const PROTOCOL_VERSION: u8 = 1;
/// magic(4) version(1) type(1) flags(2) reserved(4) request id(8) body length(4).
pub const HEADER_LEN: usize = 24;
/// The largest body either side accepts; checked before the body buffer is allocated.
pub const MAX_FRAME_BODY: u32 = 256 * 1024;
/// A CRL answer's body: the CRL and its length prefix.
pub const MAX_CRL_FRAME_BODY: u32 = crate::messages::MAX_CRL_LEN as u32 + 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub msg_type: u8,
    pub request_id: u64,
    pub body_len: u32,
}

/// Why a frame or a body was refused. Each variant is a reason to close the connection.
#[derive(Debug)]
pub enum FrameError {
    Io(io::Error),
    /// The peer closed the connection cleanly between frames.
    Closed,
    BadMagic,
    BadVersion(u8),
    NonZeroFlags,
    NonZeroReserved,
    BodyTooLarge(u32),
    Truncated,
    TrailingData(usize),
    FieldTooLong {
        field: &'static str,
        max: usize,
    },
    BadUtf8(&'static str),
    BadValue(&'static str),
    UnknownType(u8),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Io(e) => write!(f, "i/o error: {e}"),
            FrameError::Closed => write!(f, "connection closed"),
            FrameError::BadMagic => write!(f, "bad magic"),
            FrameError::BadVersion(v) => write!(f, "unsupported protocol version {v}"),
            FrameError::NonZeroFlags => write!(f, "non-zero flags"),
            FrameError::NonZeroReserved => write!(f, "non-zero reserved field"),
            FrameError::BodyTooLarge(n) => write!(f, "body length {n} over the cap"),
            FrameError::Truncated => write!(f, "truncated body"),
            FrameError::TrailingData(n) => write!(f, "{n} bytes of trailing data"),
            FrameError::FieldTooLong { field, max } => {
                write!(f, "field {field} longer than {max} bytes")
            }
            FrameError::BadUtf8(field) => write!(f, "field {field} is not utf-8"),
            FrameError::BadValue(field) => write!(f, "field {field} has an invalid value"),
            FrameError::UnknownType(t) => write!(f, "unknown message type {t:#04x}"),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(e)
    }
}

impl FrameHeader {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(&MAGIC);
        h[4] = PROTOCOL_VERSION;
        h[5] = self.msg_type;
        // h[6..8] flags and h[8..12] reserved stay zero.
        h[12..20].copy_from_slice(&self.request_id.to_be_bytes());
        h[20..24].copy_from_slice(&self.body_len.to_be_bytes());
        h
    }

    /// Decodes a request header (what the signer reads): every body at most
    /// [`MAX_FRAME_BODY`].
    pub fn decode(h: &[u8; HEADER_LEN]) -> Result<Self, FrameError> {
        Self::decode_within(h, |_| MAX_FRAME_BODY)
    }

    /// Decodes an answer header (what the signer's clients read): a CRL may be up to
    /// [`MAX_CRL_FRAME_BODY`], anything else [`MAX_FRAME_BODY`].
    pub fn decode_answer(h: &[u8; HEADER_LEN]) -> Result<Self, FrameError> {
        Self::decode_within(h, max_body)
    }

    fn decode_within(h: &[u8; HEADER_LEN], max: impl Fn(u8) -> u32) -> Result<Self, FrameError> {
        if h[0..4] != MAGIC {
            return Err(FrameError::BadMagic);
        }
        if h[4] != PROTOCOL_VERSION {
            return Err(FrameError::BadVersion(h[4]));
        }
        if h[6..8] != [0, 0] {
            return Err(FrameError::NonZeroFlags);
        }
        if h[8..12] != [0, 0, 0, 0] {
            return Err(FrameError::NonZeroReserved);
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&h[12..20]);
        let mut len = [0u8; 4];
        len.copy_from_slice(&h[20..24]);
        let body_len = u32::from_be_bytes(len);
        if body_len > max(h[5]) {
            return Err(FrameError::BodyTooLarge(body_len));
        }
        Ok(FrameHeader {
            msg_type: h[5],
            request_id: u64::from_be_bytes(id),
            body_len,
        })
    }
}

/// The largest body of a frame of `msg_type`: CRL answers may be large (a hospital group's
/// CRL with 100,000 revoked certificates is about 4 MiB); every other message, and every
/// request (the only frames the signer reads), is small.
pub fn max_body(msg_type: u8) -> u32 {
    if msg_type == crate::messages::msg_type::CRL {
        MAX_CRL_FRAME_BODY
    } else {
        MAX_FRAME_BODY
    }
}

/// Reads one request frame (the signer's side). A clean EOF before the first header byte is `Closed`; EOF anywhere after
/// it is `Truncated`. The body buffer is allocated only after the header passed its checks.
pub fn read_frame(r: &mut impl Read) -> Result<(FrameHeader, Vec<u8>), FrameError> {
    read(r, false)
}

/// Reads one answer frame (a client's side): CRLs may be larger than requests.
pub fn read_answer_frame(r: &mut impl Read) -> Result<(FrameHeader, Vec<u8>), FrameError> {
    read(r, true)
}

fn read(r: &mut impl Read, answer: bool) -> Result<(FrameHeader, Vec<u8>), FrameError> {
    let mut h = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut h[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    let header = if answer {
        FrameHeader::decode_answer(&h)?
    } else {
        FrameHeader::decode(&h)?
    };
    let mut body = vec![0u8; header.body_len as usize];
    r.read_exact(&mut body).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            FrameError::Truncated
        } else {
            FrameError::Io(e)
        }
    })?;
    Ok((header, body))
}

/// Writes one frame in a single `write_all` so that frames never interleave.
pub fn write_frame(
    w: &mut impl Write,
    msg_type: u8,
    request_id: u64,
    body: &[u8],
) -> Result<(), FrameError> {
    let body_len = u32::try_from(body.len())
        .ok()
        .filter(|n| *n <= max_body(msg_type))
        .ok_or(FrameError::BodyTooLarge(u32::MAX))?;
    let header = FrameHeader {
        msg_type,
        request_id,
        body_len,
    };
    let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
    frame.extend_from_slice(&header.encode());
    frame.extend_from_slice(body);
    w.write_all(&frame)?;
    w.flush()?;
    Ok(())
}

/// A cursor over a body: every read is bounded by what is left and by the field's maximum.
pub struct BodyReader<'a> {
    buf: &'a [u8],
}

impl<'a> BodyReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        BodyReader { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if n > self.buf.len() {
            return Err(FrameError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, FrameError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Result<u32, FrameError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Result<u64, FrameError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    pub fn i64(&mut self) -> Result<i64, FrameError> {
        Ok(self.u64()? as i64)
    }

    /// A length-prefixed (u32) byte string of at most `max` bytes.
    pub fn bytes(&mut self, field: &'static str, max: usize) -> Result<Vec<u8>, FrameError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(FrameError::FieldTooLong { field, max });
        }
        Ok(self.take(len)?.to_vec())
    }

    /// A length-prefixed UTF-8 string of at most `max` bytes.
    pub fn string(&mut self, field: &'static str, max: usize) -> Result<String, FrameError> {
        let raw = self.bytes(field, max)?;
        String::from_utf8(raw).map_err(|_| FrameError::BadUtf8(field))
    }

    /// Every message ends exactly where its last field ends.
    pub fn finish(self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::TrailingData(self.buf.len()))
        }
    }
}

/// The writing side of [`BodyReader`]. Encoding enforces the same maxima as decoding, so a
/// message this side cannot decode is never sent.
#[derive(Default)]
pub struct BodyWriter {
    buf: Vec<u8>,
}

impl BodyWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.u64(v as u64)
    }

    pub fn bytes(
        &mut self,
        field: &'static str,
        max: usize,
        v: &[u8],
    ) -> Result<&mut Self, FrameError> {
        if v.len() > max {
            return Err(FrameError::FieldTooLong { field, max });
        }
        self.buf.extend_from_slice(&(v.len() as u32).to_be_bytes());
        self.buf.extend_from_slice(v);
        Ok(self)
    }

    pub fn string(
        &mut self,
        field: &'static str,
        max: usize,
        v: &str,
    ) -> Result<&mut Self, FrameError> {
        self.bytes(field, max, v.as_bytes())
    }

    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_bytes() -> [u8; HEADER_LEN] {
        FrameHeader {
            msg_type: 1,
            request_id: 7,
            body_len: 0,
        }
        .encode()
    }

    #[test]
    fn only_a_crl_answer_may_exceed_the_request_bound() {
        let big = |msg_type| FrameHeader {
            msg_type,
            request_id: 1,
            body_len: MAX_FRAME_BODY + 1,
        };
        let crl = crate::messages::msg_type::CRL;
        // What the signer reads: never past the bound, whatever the type says.
        assert!(matches!(
            FrameHeader::decode(&big(crl).encode()),
            Err(FrameError::BodyTooLarge(_))
        ));
        // What clients read: a CRL may, nothing else may, and not past its own bound.
        assert!(FrameHeader::decode_answer(&big(crl).encode()).is_ok());
        assert!(
            FrameHeader::decode_answer(&big(crate::messages::msg_type::OCSP).encode()).is_err()
        );
        let huge = FrameHeader {
            body_len: MAX_CRL_FRAME_BODY + 1,
            ..big(crl)
        };
        assert!(FrameHeader::decode_answer(&huge.encode()).is_err());
    }

    #[test]
    fn header_round_trip() {
        let h = FrameHeader {
            msg_type: 3,
            request_id: 0xdead_beef,
            body_len: 42,
        };
        assert_eq!(FrameHeader::decode(&h.encode()).unwrap(), h);
    }

    #[test]
    fn header_rejects_each_bad_field() {
        let mut h = header_bytes();
        h[0] = b'X';
        assert!(matches!(FrameHeader::decode(&h), Err(FrameError::BadMagic)));
        let mut h = header_bytes();
        h[4] = 2;
        assert!(matches!(
            FrameHeader::decode(&h),
            Err(FrameError::BadVersion(2))
        ));
        let mut h = header_bytes();
        h[7] = 1;
        assert!(matches!(
            FrameHeader::decode(&h),
            Err(FrameError::NonZeroFlags)
        ));
        let mut h = header_bytes();
        h[9] = 1;
        assert!(matches!(
            FrameHeader::decode(&h),
            Err(FrameError::NonZeroReserved)
        ));
        let mut h = header_bytes();
        h[20..24].copy_from_slice(&(MAX_FRAME_BODY + 1).to_be_bytes());
        assert!(matches!(
            FrameHeader::decode(&h),
            Err(FrameError::BodyTooLarge(_))
        ));
    }

    #[test]
    fn read_frame_distinguishes_close_and_truncation() {
        let empty: &[u8] = &[];
        assert!(matches!(
            read_frame(&mut &empty[..]),
            Err(FrameError::Closed)
        ));
        let partial = &header_bytes()[..10];
        assert!(matches!(
            read_frame(&mut &partial[..]),
            Err(FrameError::Truncated)
        ));
        let mut h = FrameHeader {
            msg_type: 1,
            request_id: 1,
            body_len: 5,
        }
        .encode()
        .to_vec();
        h.extend_from_slice(b"abc");
        assert!(matches!(
            read_frame(&mut &h[..]),
            Err(FrameError::Truncated)
        ));
    }

    #[test]
    fn body_reader_enforces_maxima_and_trailing_data() {
        let mut w = BodyWriter::new();
        w.string("name", 10, "hello").unwrap();
        let body = w.into_inner();
        let mut r = BodyReader::new(&body);
        assert!(matches!(
            r.string("name", 4),
            Err(FrameError::FieldTooLong { .. })
        ));
        let mut r = BodyReader::new(&body);
        assert_eq!(r.string("name", 10).unwrap(), "hello");
        r.finish().unwrap();
        let mut longer = body.clone();
        longer.push(0);
        let mut r = BodyReader::new(&longer);
        r.string("name", 10).unwrap();
        assert!(matches!(r.finish(), Err(FrameError::TrailingData(1))));
        let bad = [0, 0, 0, 2, 0xff, 0xfe];
        assert!(matches!(
            BodyReader::new(&bad).string("name", 10),
            Err(FrameError::BadUtf8(_))
        ));
        let short = [0, 0, 0, 9, 1];
        assert!(matches!(
            BodyReader::new(&short).bytes("csr", 100),
            Err(FrameError::Truncated)
        ));
        assert!(BodyWriter::new().bytes("csr", 2, b"abc").is_err());
    }
}
