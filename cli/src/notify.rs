//! Readiness notification for systemd (`Type=notify`): `READY=1` once every listener is
//! up, `STOPPING=1` when draining starts. See sd_notify(3).
//!
//! The protocol is one datagram of `KEY=VALUE` lines to the Unix socket named by
//! `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace); without the variable
//! (not started by systemd) there is nothing to do. It is these few lines rather than a
//! crate (`sd-notify`, `libsystemd`) because that is all of it that peerd uses.
//! Notification never stops the server: a failure is logged and ignored, as systemd's own
//! `sd_notify` does (systemd then reports the unit as failing to start, which says enough).

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Tell systemd the server is ready, with a status line (`systemctl status` shows it).
pub fn ready(status: &str) {
    notify(&format!("READY=1\nSTATUS={status}\n"));
}

/// Tell systemd the server is stopping (draining, then exit).
pub fn stopping() {
    notify("STOPPING=1\nSTATUS=draining\n");
}

fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&path, state) {
        tracing::warn!(
            socket = %path.to_string_lossy(),
            error = %e,
            "cannot notify systemd (NOTIFY_SOCKET)"
        );
    }
}

fn send(path: &OsStr, state: &str) -> io::Result<()> {
    let bytes = path.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(path)?,
    };
    let sock = UnixDatagram::unbound()?;
    let sent = sock.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(io::Error::other("short write"));
    }
    Ok(())
}
