//! What lapsed goes: flows, codes, tokens and grants, idle sessions and old tickets, every ten
//! minutes, on the instance that does the background duties.

use time::OffsetDateTime;

/// Removes lapsed flows, codes, tokens and grants every ten minutes until `stop`.
pub async fn purger(state: crate::state::Shared, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_secs(600)) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        if !state.duty.held() {
            continue;
        }
        let s = state.clone();
        match crate::state::blocking(move || s.sessions.purge(s.settings.session_idle_timeout)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(records = n, "purged idle sessions and old tickets"),
            Ok(Err(e)) => tracing::warn!(error = %e, "purging sessions"),
            Err(_) => {}
        }
        let s = state.clone();
        match crate::state::blocking(move || s.oauth.store.purge(OffsetDateTime::now_utc())).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(records = n, "purged lapsed OAuth records"),
            Ok(Err(e)) => tracing::warn!(error = %e, "purging OAuth records"),
            Err(_) => {}
        }
    }
}
