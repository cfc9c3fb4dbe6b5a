//! Telling systemd the process' state (`Type=notify` units, docs/deploy.md): `READY=1` once
//! it serves, `STOPPING=1` when a graceful stop begins. Nothing happens outside systemd
//! (`NOTIFY_SOCKET` unset).

/// Tells systemd the process serves.
pub fn ready() {
    send(&[sd_notify::NotifyState::Ready]);
}

/// Tells systemd a graceful stop began.
pub fn stopping() {
    send(&[sd_notify::NotifyState::Stopping]);
}

fn send(state: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(error) = sd_notify::notify(state) {
        tracing::warn!("cannot notify systemd: {error}");
    }
}
