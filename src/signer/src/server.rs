//! The Unix sockets, one per role: each with its own mode and group, every connection
//! checked with SO_PEERCRED against that socket's uids, a connection cap per socket, and
//! one thread per connection that reads a frame, answers it, and closes the connection on
//! any framing error or any request type the socket's role is not permitted to send.

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use crate::config::SocketConfig;
use hsm_est_policy::Caller;
use hsm_est_proto::codec::{read_frame, write_frame, FrameError};
use hsm_est_proto::{Request, Response};

use crate::dispatch::{permitted, CallContext};
use crate::service::SignerService;

/// Binds a socket: removes a stale socket file (never anything else), sets the configured
/// mode and group.
pub fn bind(config: &SocketConfig) -> Result<UnixListener, String> {
    let path = &config.path;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
        } else {
            return Err(format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            ));
        }
    }
    let listener = UnixListener::bind(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(gid) = config.gid {
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))
            .map_err(|e| format!("{}: chown: {e}", path.display()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(config.mode))
        .map_err(|e| format!("{}: chmod: {e}", path.display()))?;
    Ok(listener)
}

/// Accepts connections forever.
pub fn serve(listener: UnixListener, config: SocketConfig, service: Arc<SignerService>) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                continue;
            }
        };
        let creds = match getsockopt(&stream, PeerCredentials) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("SO_PEERCRED failed: {e}; connection closed");
                continue;
            }
        };
        let uid = creds.uid();
        let caller = config.role;
        if !config.uids.contains(&uid) {
            tracing::warn!(
                "refused connection from uid {uid} pid {} on the {} socket: not an allowed user",
                creds.pid(),
                caller.as_str()
            );
            continue;
        }
        if active.fetch_add(1, Ordering::SeqCst) >= config.max_connections {
            active.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(
                "refused connection from uid {uid}: {} connections already open on the {} socket",
                config.max_connections,
                caller.as_str()
            );
            continue;
        }
        let service = Arc::clone(&service);
        let active_for_thread = Arc::clone(&active);
        let timeout = config.request_timeout;
        let idle = config.idle_timeout;
        let spawned = std::thread::Builder::new()
            .name(format!("conn-uid{uid}"))
            .spawn(move || {
                let _ = stream.set_write_timeout(Some(timeout));
                // A silent peer (idle between requests, or stalled inside a frame) loses
                // its connection, and its slot, after `idle`.
                let _ = stream.set_read_timeout(Some(idle));
                serve_connection(stream, caller, uid, &service);
                active_for_thread.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            active.fetch_sub(1, Ordering::SeqCst);
            tracing::error!("cannot start a connection thread: {e}");
        }
    }
}

fn serve_connection(mut stream: UnixStream, caller: Caller, uid: u32, service: &SignerService) {
    loop {
        let (header, body) = match read_frame(&mut stream) {
            Ok(f) => f,
            Err(FrameError::Closed) => return,
            Err(FrameError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                tracing::info!("uid {uid}: connection idle too long; closed");
                return;
            }
            Err(e) => {
                tracing::warn!("uid {uid}: bad frame ({e}); connection closed");
                return;
            }
        };
        // Every line about this request carries its id: the frontend's id for the HTTP
        // request it serves, so that one search finds both processes' lines.
        let _span = hsm_est_common::logging::request_span(header.request_id).entered();
        if !permitted(caller, header.msg_type) {
            tracing::warn!(
                "uid {uid} ({}): message type {:#04x} not permitted; connection closed",
                caller.as_str(),
                header.msg_type
            );
            return;
        }
        let request = match Request::decode(header.msg_type, &body) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(
                    "uid {uid}: bad {:#04x} body ({e}); connection closed",
                    header.msg_type
                );
                return;
            }
        };
        let ctx = CallContext {
            caller,
            uid,
            request_id: header.request_id,
        };
        let response = service.handle(ctx, request);
        let (msg_type, body) = match response.encode() {
            Ok(b) => (response.msg_type(), b),
            Err(e) => {
                tracing::error!("cannot encode the answer: {e}");
                let fallback = Response::Error(hsm_est_proto::WireError::new(
                    hsm_est_proto::ErrorCode::Unavailable,
                    "signer.internal",
                    "internal error",
                ));
                match fallback.encode() {
                    Ok(b) => (fallback.msg_type(), b),
                    Err(_) => return,
                }
            }
        };
        if write_frame(&mut stream, msg_type, header.request_id, &body).is_err() {
            return;
        }
        let _ = stream.flush();
    }
}

/// Removes the socket file at shutdown.
pub fn unlink(path: &Path) {
    let _ = std::fs::remove_file(path);
}
