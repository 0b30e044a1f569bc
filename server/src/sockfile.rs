//! Unix socket files that a successor process may replace: binding one over a live one
//! without a moment in which the path leads nowhere, and removing only a file that is still
//! ours. Used for `unix:` endpoints and by `peerd serve`'s handoff socket.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

/// A file's identity (device, inode), to tell our socket file from one put in its place.
pub fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Bind a listening Unix socket at `path`, replacing whatever is there, live or not: bind
/// beside it, set `mode` (if any) before anyone can connect, and rename over the path, so
/// that the path always leads to a listening socket.
pub fn bind_over(path: &Path, mode: Option<u32>) -> std::io::Result<UnixListener> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)?;
    if let Some(mode) = mode {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(listener)
}

/// Remove the socket file at `path` if it is still the one whose identity was `id`.
pub fn remove_if_ours(path: &Path, id: (u64, u64)) {
    if file_id(path) == Some(id) {
        let _ = std::fs::remove_file(path);
    }
}
