//! A blocking client for the signer socket, used by `estctl` and the tests (and, behind its own
//! deadline and reconnection logic, by the frontend).

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::codec::{read_answer_frame, write_frame, FrameError};
use super::messages::{Request, Response};

/// How long one request may take before the client gives up on the connection.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

pub struct SignerClient {
    stream: UnixStream,
    next_id: u64,
}

#[derive(Debug)]
pub enum ClientError {
    Connect(std::io::Error),
    Frame(FrameError),
    /// The answer did not carry the id of the request (a late reply to an earlier request).
    WrongRequestId {
        expected: u64,
        got: u64,
    },
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Connect(e) => write!(f, "cannot connect to the signer socket: {e}"),
            ClientError::Frame(FrameError::Closed) => {
                write!(f, "the signer closed the connection (is this uid allowed?)")
            }
            ClientError::Frame(e) => write!(f, "signer protocol error: {e}"),
            ClientError::WrongRequestId { expected, got } => {
                write!(f, "answer for request {got} while waiting for {expected}")
            }
        }
    }
}

impl std::error::Error for ClientError {}

impl From<FrameError> for ClientError {
    fn from(e: FrameError) -> Self {
        ClientError::Frame(e)
    }
}

impl SignerClient {
    pub fn connect(path: &Path) -> Result<Self, ClientError> {
        Self::connect_with_deadline(path, DEFAULT_DEADLINE)
    }

    pub fn connect_with_deadline(path: &Path, deadline: Duration) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path).map_err(ClientError::Connect)?;
        stream
            .set_read_timeout(Some(deadline))
            .map_err(ClientError::Connect)?;
        stream
            .set_write_timeout(Some(deadline))
            .map_err(ClientError::Connect)?;
        Ok(SignerClient { stream, next_id: 1 })
    }

    /// Sends one request and waits for its answer.
    pub fn call(&mut self, request: &Request) -> Result<Response, ClientError> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let body = request.encode()?;
        write_frame(&mut self.stream, request.msg_type(), id, &body)?;
        let (header, body) = read_answer_frame(&mut self.stream)?;
        if header.request_id != id {
            return Err(ClientError::WrongRequestId {
                expected: id,
                got: header.request_id,
            });
        }
        Ok(Response::decode(header.msg_type, &body)?)
    }
}
