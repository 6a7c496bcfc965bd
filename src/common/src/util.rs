//! Small helpers shared by every process: time stamps and log-safe strings. Hex and RFC 3339
//! formatting come from the `hex` and `humantime` crates.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Seconds since the Unix epoch of a `SystemTime` (negative before 1970).
pub fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// `SystemTime` from seconds since the epoch.
pub fn system_time_from_unix(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// RFC 3339 UTC time stamp with milliseconds, e.g. `2026-11-29T12:00:00.123Z`. Times before
/// 1970 (which no record of ours carries) print as the epoch.
pub fn rfc3339_millis(millis: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(millis.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Escapes a value taken from a request before it goes into a log line, so that a CSR subject
/// with CR/LF or other control characters can never forge a second log line.
pub fn log_safe(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c.is_control() || c == '\\' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Creates `path` for writing, mode 0600 from the first byte, refusing one that exists:
/// what the ledger, its snapshots and backups are written into.
pub fn create_private(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// The temporary file [`write_atomically`] uses for `path`: `.NAME.tmp` beside it.
pub fn temporary_beside(path: &std::path::Path) -> Result<std::path::PathBuf, String> {
    let name = path
        .file_name()
        .ok_or_else(|| format!("{}: not a file name", path.display()))?;
    Ok(parent_dir(path).join(format!(".{}.tmp", name.to_string_lossy())))
}

fn parent_dir(path: &std::path::Path) -> &std::path::Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    }
}

/// Replaces `path` with `data` so that a reader sees the old file or the new one, never
/// half of one: a temporary file beside it (see [`temporary_beside`]), created with
/// O_CREAT|O_EXCL|O_NOFOLLOW and `mode`, written and fsynced, renamed over `path`, and the
/// directory fsynced. A temporary file or symlink someone left at that name is never
/// followed or reused: the write fails and says so, so two concurrent writers cannot both
/// hold it.
pub fn write_atomically(path: &std::path::Path, data: &[u8], mode: u32) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = temporary_beside(path)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => format!(
                "{}: exists (another writer is saving, or one was interrupted: remove it if \
                 no other is running)",
                tmp.display()
            ),
            _ => format!("{}: {e}", tmp.display()),
        })?;
    // The umask may have narrowed `mode`.
    let written = f
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|_| f.write_all(data))
        .and_then(|_| f.sync_all())
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("{}: {e}", path.display()));
    }
    // The rename is durable only once the directory is.
    let dir = parent_dir(path);
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("{}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_values() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(
            rfc3339_millis(4_102_444_800_000),
            "2100-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn log_safe_escapes_line_breaks() {
        assert_eq!(log_safe("a\r\nb\0c"), "a\\r\\nb\\u{0}c");
        assert!(!log_safe("x\ny").contains('\n'));
    }
}
