//! The plain-HTTP listener (CA certificates, CRLs, OCSP, metrics) and the background work that
//! keeps what it serves current: the CRL is signed again shortly after revocations (bursts
//! coalesced) and always well before its nextUpdate; cached OCSP responses are refreshed.

use std::sync::PoisonError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pki::registry::Status;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::metrics::{Census, OCSP_LABELS};
use crate::state::Shared;

fn der_response(content_type: &'static str, der: Vec<u8>) -> Response {
    let mut response = der.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
    response
}

async fn crl_file(state: &Shared, name: &str, counter: usize) -> Response {
    state.metrics.crl_requests[counter].fetch_add(1, Ordering::Relaxed);
    match tokio::fs::read(state.settings.crl_dir.join(name)).await {
        Ok(der) => der_response("application/pkix-crl", der),
        Err(_) => (StatusCode::NOT_FOUND, "no CRL published yet\n").into_response(),
    }
}

async fn ocsp_answer(state: Shared, request: Vec<u8>) -> Response {
    // Most answers come from the cache, on this thread; only a signature (and the registry
    // read before it) goes to a blocking thread.
    let answer = match state.ocsp.cached(&request, OffsetDateTime::now_utc()) {
        Some(answer) => answer,
        None => {
            let answering = state.clone();
            match tokio::task::spawn_blocking(move || {
                let state = answering;
                state.ocsp.respond(&request, state.registry.as_ref(), state.issuer.as_ref(), OffsetDateTime::now_utc())
            })
            .await
            {
                Ok(answer) => answer,
                Err(_) => return (StatusCode::INTERNAL_SERVER_ERROR, "").into_response(),
            }
        }
    };
    let index = OCSP_LABELS.iter().position(|l| *l == answer.label).unwrap_or(5);
    state.metrics.ocsp[index].fetch_add(1, Ordering::Relaxed);
    let mut response = answer.der.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/ocsp-response"));
    // RFC 5019 §6: caches may keep a response until its nextUpdate.
    if let (Some(next), Some((last_modified, expires))) = (answer.next_update, answer.http_dates) {
        let max_age = (next - OffsetDateTime::now_utc()).whole_seconds().max(0);
        if let Ok(v) = HeaderValue::from_str(&format!("max-age={max_age}, public, no-transform, must-revalidate")) {
            headers.insert(header::CACHE_CONTROL, v);
        }
        headers.insert(header::LAST_MODIFIED, last_modified);
        headers.insert(header::EXPIRES, expires);
    } else {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// `POST /ocsp` with an `application/ocsp-request` body.
pub async fn ocsp_post(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.starts_with("application/ocsp-request") {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "send an application/ocsp-request\n").into_response();
    }
    ocsp_answer(state, body.to_vec()).await
}

/// `GET /ocsp/{base64 of the DER request}` (RFC 5019 §5), the base64 URL-encoded. A slash
/// some clients append is dropped when it cannot be the last base64 digit (after padding, or
/// one character past whole groups of four).
pub async fn ocsp_get(State(state): State<Shared>, Path(encoded): Path<String>) -> Response {
    let digits = encoded.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').count();
    let encoded = match encoded.strip_suffix('/') {
        Some(rest) if rest.ends_with('=') || digits % 4 == 1 => rest,
        _ => encoded.as_str(),
    };
    match pki::encoding::base64_decode(encoded) {
        Some(der) => ocsp_answer(state, der).await,
        None => ocsp_answer(state, Vec::new()).await,
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<Shared>) -> Response {
    let census_state = state.clone();
    let census = tokio::task::spawn_blocking(move || census(&census_state)).await.ok().flatten();
    let m = &state.metrics;
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, rows: &[(String, u64)]| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in rows {
            out.push_str(&format!("{name}{labels} {value}\n"));
        }
    };
    if let Some((counts, within30, within7)) = census {
        let statuses = ["valid", "pending", "revoked", "superseded", "expired"];
        let rows: Vec<_> = statuses.iter().zip(counts).map(|(s, n)| (format!("{{status=\"{s}\"}}"), n)).collect();
        family("inkan_certificates", "gauge", "Certificates in the registry by status.", &rows);
        family(
            "inkan_certificates_expiring",
            "gauge",
            "Valid certificates expiring within the window.",
            &[("{within=\"30d\"}".into(), within30), ("{within=\"7d\"}".into(), within7)],
        );
    }
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    family(
        "inkan_issued_total",
        "counter",
        "Certificates issued through this service.",
        &[(String::new(), load(&m.issued))],
    );
    family(
        "inkan_revoked_total",
        "counter",
        "Certificates revoked or superseded through this service.",
        &[(String::new(), load(&m.revoked))],
    );
    family("inkan_crl_signed_total", "counter", "CRLs signed and published.", &[(String::new(), load(&m.crl_signed))]);
    family(
        "inkan_crl_requests_total",
        "counter",
        "CRL downloads.",
        &[("{crl=\"ca\"}".into(), load(&m.crl_requests[0])), ("{crl=\"root\"}".into(), load(&m.crl_requests[1]))],
    );
    let rows: Vec<_> =
        OCSP_LABELS.iter().zip(&m.ocsp).map(|(l, a)| (format!("{{response=\"{l}\"}}"), load(a))).collect();
    family("inkan_ocsp_requests_total", "counter", "OCSP answers by kind.", &rows);
    family(
        "inkan_ocsp_signed_total",
        "counter",
        "OCSP answers the signer signed for this service (the rest were served from the cache).",
        &[(String::new(), state.ocsp.signed_count())],
    );
    if let Ok(unknown) = state.accounts.unknown_logins() {
        family(
            "inkan_login_unknown_id_total",
            "counter",
            "Failed logins with an ID no account has (wrong passwords count on the accounts).",
            &[(String::new(), unknown)],
        );
    }
    let now = OffsetDateTime::now_utc();
    let left: Vec<(String, u64)> = crate::publications::read(&state.settings.crl_dir)
        .iter()
        .filter_map(|p| {
            let next = p.next_update.as_ref().ok()?;
            Some((format!("{{what=\"{}\"}}", p.key), u64::try_from((*next - now).whole_seconds()).unwrap_or(0)))
        })
        .collect();
    family(
        "inkan_publication_seconds_left",
        "gauge",
        "Seconds until a publication runs out (root_crl and ca_ocsp are signed offline: inkan root sign-crl).",
        &left,
    );
    if let Ok(ca) = pki::certificate::Summary::from_der(newest_ca(&state)) {
        let by = crate::publications::rollover_by(ca.not_after, state.settings.ca_max_days);
        family(
            "inkan_issuing_ca_rollover_seconds_left",
            "gauge",
            "Seconds until the issuing CA can no longer give a certificate [ca] max_days of validity (0: past).",
            &[(String::new(), u64::try_from((by - now).whole_seconds()).unwrap_or(0))],
        );
    }
    let limits = state.settings.connections;
    let listeners = crate::metrics::LISTENERS.iter().zip(&m.listeners);
    let rows = |f: &dyn Fn(&crate::metrics::ListenerStats) -> u64| -> Vec<(String, u64)> {
        crate::metrics::LISTENERS
            .iter()
            .zip(&m.listeners)
            .map(|(name, stats)| (format!("{{listener=\"{name}\"}}"), f(stats)))
            .collect()
    };
    family(
        "inkan_connections_open",
        "gauge",
        "Connections open now.",
        &rows(&|s| s.open.load(Ordering::Relaxed) as u64),
    );
    let caps: Vec<(String, u64)> = listeners
        .flat_map(|(name, _)| {
            [
                (format!("{{listener=\"{name}\",scope=\"total\"}}"), limits.total as u64),
                (format!("{{listener=\"{name}\",scope=\"per_address\"}}"), limits.per_address as u64),
            ]
        })
        .collect();
    family("inkan_connections_limit", "gauge", "Connections a listener holds at most, in all and per address.", &caps);
    let refused: Vec<(String, u64)> = crate::metrics::LISTENERS
        .iter()
        .zip(&m.listeners)
        .flat_map(|(name, s)| {
            [
                (format!("{{listener=\"{name}\",cap=\"total\"}}"), load(&s.refused_total)),
                (format!("{{listener=\"{name}\",cap=\"per_address\"}}"), load(&s.refused_address)),
            ]
        })
        .collect();
    family("inkan_connections_refused_total", "counter", "Connections closed at accept, over a cap.", &refused);
    family(
        "inkan_connections_timed_out_total",
        "counter",
        "Connections closed for moving no byte within their deadline (handshake, first request, idle).",
        &rows(&|s| load(&s.idle_closed)),
    );
    family(
        "inkan_connection_deadline_seconds",
        "gauge",
        "Deadlines: to the first request, and between requests.",
        &[
            ("{deadline=\"first_request\"}".into(), limits.first_request.as_secs()),
            ("{deadline=\"idle\"}".into(), limits.idle.as_secs()),
        ],
    );
    family(
        "inkan_notices_total",
        "counter",
        "Expiry notices: delivered, and failed webhook attempts.",
        &[("{result=\"sent\"}".into(), load(&m.notices_sent)), ("{result=\"failed\"}".into(), load(&m.notices_failed))],
    );
    family(
        "inkan_mail_total",
        "counter",
        "Mail notices: sent, and failed SMTP rounds.",
        &[("{result=\"sent\"}".into(), load(&m.mails_sent)), ("{result=\"failed\"}".into(), load(&m.mails_failed))],
    );
    let mut response = out.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}

/// Counts by status (valid, pending, revoked, superseded, expired) and valid certificates
/// expiring within 30 and 7 days; recomputed at most every 15 s (from the registry's counts,
/// not its records).
fn census(state: &Shared) -> Option<Census> {
    let mut cached = state.metrics.census.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((at, census)) = *cached
        && at.elapsed() < Duration::from_secs(15)
    {
        return Some(census);
    }
    let now = OffsetDateTime::now_utc();
    let by = state.registry.count_by_status(now).ok()?;
    let counts =
        [Status::Valid, Status::Pending, Status::Revoked, Status::Superseded, Status::Expired].map(|s| by.get(s));
    let expiring = |days| state.registry.count_valid_expiring(now, now + time::Duration::days(days)).ok();
    let (d30, d7) = (expiring(30)?, expiring(7)?);
    *cached = Some((Instant::now(), (counts, d30, d7)));
    Some((counts, d30, d7))
}

/// `GET /ca.crt`: the issuing CA certificate (DER).
pub async fn ca_certificate(State(state): State<Shared>) -> Response {
    der_response("application/pkix-cert", state.issuer.ca_certificate().to_vec())
}

/// `GET /ca/{n}/ca.crt`: generation `n` of the issuing CA (DER), where its certificates'
/// AIA points.
pub async fn ca_generation_certificate(State(state): State<Shared>, Path(n): Path<u16>) -> Response {
    match state.issuer.ca_generations().into_iter().find(|(g, _)| *g == n) {
        Some((_, der)) => der_response("application/pkix-cert", der.to_vec()),
        None => (StatusCode::NOT_FOUND, "no issuing CA of that generation\n").into_response(),
    }
}

/// `GET /ca-chain.pem`: every generation of the issuing CA, the one that issues now first,
/// then the root (PEM): what a relying party installs to accept certificates of all of them.
pub async fn ca_chain(State(state): State<Shared>) -> Response {
    let current = state.issuer.ca_certificate().to_vec();
    let mut chain = vec![current.clone()];
    chain
        .extend(state.issuer.ca_generations().into_iter().rev().map(|(_, der)| der.to_vec()).filter(|d| *d != current));
    chain.push(state.issuer.root_certificate().to_vec());
    let pem = pki::encoding::certificates_pem(chain.iter().map(Vec::as_slice));
    let mut response = pem.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/pem-certificate-chain"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
    response
}

/// `GET /crl/{n}/ca.crl`: the CRL of generation `n` of the issuing CA; `GET
/// /crl/{n}/ca-COUNT-INDEX.crl`: one of its shards.
pub async fn ca_generation_crl(State(state): State<Shared>, Path((n, file)): Path<(u16, String)>) -> Response {
    if n < 2 {
        return (StatusCode::NOT_FOUND, "generation 1's CRLs are /crl/ca.crl and /crl/ca-COUNT-INDEX.crl\n")
            .into_response();
    }
    if file == pki::published::CA_CRL {
        return crl_file(&state, &pki::published::ca_crl(n), 0).await;
    }
    match pki::published::parse_ca_crl_shard(&format!("ca-{n}-{}", file.strip_prefix("ca-").unwrap_or("!"))) {
        Some((generation, shard)) if generation == n => {
            crl_file(&state, &pki::published::ca_crl_shard(n, shard), 0).await
        }
        _ => not_a_crl(),
    }
}

/// `GET /crl/ca-COUNT-INDEX.crl`: a shard of the first generation's CRL (`crl_shards`).
pub async fn ca_crl_shard(State(state): State<Shared>, Path(file): Path<String>) -> Response {
    match pki::published::parse_ca_crl_shard(&file) {
        Some((1, shard)) => crl_file(&state, &pki::published::ca_crl_shard(1, shard), 0).await,
        _ => not_a_crl(),
    }
}

fn not_a_crl() -> Response {
    (
        StatusCode::NOT_FOUND,
        "no such CRL: /crl/ca.crl, /crl/root.crl, /crl/ca-COUNT-INDEX.crl (a shard), /crl/N/ca.crl and /crl/N/ca-COUNT-INDEX.crl (generation N)\n",
    )
        .into_response()
}

/// `GET /root.crt`: the root certificate (DER).
pub async fn root_certificate(State(state): State<Shared>) -> Response {
    der_response("application/pkix-cert", state.issuer.root_certificate().to_vec())
}

/// `GET /crl/ca.crl`: the issuing CA's CRL.
pub async fn ca_crl(State(state): State<Shared>) -> Response {
    crl_file(&state, pki::published::CA_CRL, 0).await
}

/// `GET /crl/root.crl`: the root's CRL.
pub async fn root_crl(State(state): State<Shared>) -> Response {
    crl_file(&state, pki::published::ROOT_CRL, 1).await
}

/// The newest generation of the issuing CA (a successor waiting for its moment counts: the
/// rollover is done).
fn newest_ca(state: &Shared) -> &[u8] {
    state.issuer.ca_generations().last().map_or(state.issuer.ca_certificate(), |(_, der)| der)
}

/// `GET /audit/checkpoint`: the latest signed checkpoint of the audit trail (JSON), for
/// whoever keeps a copy to check the trail against later (`inkan audit verify --checkpoint`).
pub async fn audit_checkpoint(State(state): State<Shared>) -> Response {
    match tokio::fs::read(state.settings.crl_dir.join(pki::published::AUDIT_CHECKPOINT)).await {
        Ok(json) => {
            let mut response = json.into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        Err(_) => (StatusCode::NOT_FOUND, "no audit checkpoint signed yet\n").into_response(),
    }
}

/// Anything else on the plain-HTTP listener.
pub async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// Signs and publishes the CRL: at start, shortly after revocations (a burst waits
/// `COALESCE` and is covered by one CRL), and every refresh period; retries every 30 s while
/// the signer is unreachable.
pub async fn crl_publisher(state: Shared, mut stop: watch::Receiver<bool>) {
    const COALESCE: Duration = Duration::from_millis(500);
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = state.crl_wake.notified() => tokio::time::sleep(COALESCE).await,
            _ = tokio::time::sleep_until(next) => {}
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
        }
        if !state.duty.held() {
            // Another instance signs; its CRLs reach this one through the database
            // (publication_follower). Look again soon: the lease may come here.
            next = tokio::time::Instant::now() + crate::duty::RENEW;
            continue;
        }
        let issuer = state.issuer.clone();
        match tokio::task::spawn_blocking(move || issuer.sign_crl()).await {
            Ok(Ok(der)) => {
                state.metrics.crl_signed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(bytes = der.len(), "CRL signed and published");
                share_crls(&state).await;
                next = tokio::time::Instant::now() + state.settings.crl_refresh;
                warn_of_root_publications(&state);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "signing the CRL failed; trying again in 30 s");
                next = tokio::time::Instant::now() + Duration::from_secs(30);
            }
            Err(e) => tracing::error!(error = %e, "CRL task"),
        }
    }
}

/// Hands the CRL files just published to the other instances (through the database; nothing
/// for an embedded service).
async fn share_crls(state: &Shared) {
    let s = state.clone();
    let shared = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let mut names: Vec<String> =
            s.issuer.ca_generations().iter().map(|(n, _)| pki::published::ca_crl(*n)).collect();
        // And the shards (`crl_shards`), of every count published.
        names.extend(
            std::fs::read_dir(&s.settings.crl_dir)
                .into_iter()
                .flatten()
                .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
                .filter(|name| pki::published::parse_ca_crl_shard(name).is_some()),
        );
        for name in names {
            let Ok(der) = std::fs::read(s.settings.crl_dir.join(&name)) else { continue };
            s.duty.store().publish(&name, &der).map_err(|e| e.to_string())?;
        }
        Ok(())
    })
    .await;
    if let Ok(Err(e)) = shared {
        tracing::warn!(error = %e, "sharing the CRL with the other instances");
    }
}

/// On an instance that does not sign CRLs, writes the ones the signing instance shared into
/// this instance's CRL directory (checked every second). Ends at once for an embedded service.
pub async fn publication_follower(state: Shared, mut stop: watch::Receiver<bool>) {
    let mut since = None;
    loop {
        let s = state.clone();
        let found = tokio::task::spawn_blocking(move || s.duty.store().publications_since(since)).await;
        match found {
            Ok(Ok(None)) => return,
            Ok(Ok(Some(files))) => {
                for (name, der, at) in files {
                    since = Some(since.map_or(at, |s: OffsetDateTime| s.max(at)));
                    if state.duty.held() || !is_ca_crl_name(&name) {
                        continue;
                    }
                    if let Err(e) = write_file(&state.settings.crl_dir, &name, &der) {
                        tracing::warn!(error = %e, %name, "writing a shared CRL");
                    } else {
                        tracing::debug!(%name, "CRL from the signing instance");
                    }
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "reading the shared CRLs"),
            Err(_) => {}
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Whether `name` is one [`pki::published::ca_crl`] makes (what comes from the database is
/// never a path).
fn is_ca_crl_name(name: &str) -> bool {
    let generation =
        name.strip_prefix("ca-").and_then(|rest| rest.strip_suffix(".crl")).map_or(Some(1), |n| n.parse().ok());
    generation.is_some_and(|n: u16| pki::published::ca_crl(n) == name)
        || pki::published::parse_ca_crl_shard(name).is_some()
}

/// Replaces `dir/name` with `contents` atomically (a temporary file renamed over it).
fn write_file(dir: &std::path::Path, name: &str, contents: &[u8]) -> std::io::Result<()> {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, &path)
}

/// Says in the log, at most once a day, which of the root's publications is missing or runs out
/// within 30 days (the operator signs them offline).
fn warn_of_root_publications(state: &Shared) {
    let mut last = state.metrics.publications_warned.lock().unwrap_or_else(PoisonError::into_inner);
    if last.is_some_and(|at| at.elapsed() < Duration::from_secs(24 * 3600)) {
        return;
    }
    let now = OffsetDateTime::now_utc();
    for publication in crate::publications::read(&state.settings.crl_dir).iter().filter(|p| p.offline) {
        if let Some(problem) = publication.problem(now) {
            tracing::warn!("{problem}");
        }
    }
    if let Ok(ca) = pki::certificate::Summary::from_der(newest_ca(state))
        && let Some(problem) = crate::publications::rollover_problem(ca.not_after, state.settings.ca_max_days, now)
    {
        tracing::warn!("{problem}");
    }
    *last = Some(Instant::now());
}

/// For a registry other instances write too: every 250 ms, the revocations they made are told
/// to this instance as if made here (its OCSP answers change at once, a new CRL is due). Ends
/// at once for a registry only this process writes.
pub async fn revocation_follower(state: Shared, mut stop: watch::Receiver<bool>) {
    use crate::ports::Events;
    // Writes that committed a little after their clock read are caught by looking back this far;
    // what was already told is not told again.
    const OVERLAP: time::Duration = time::Duration::seconds(5);
    let mut since = None;
    let mut told: std::collections::HashMap<pki::Serial, OffsetDateTime> = std::collections::HashMap::new();
    loop {
        let registry = state.registry.clone();
        let ask = since.map(|s: OffsetDateTime| s - OVERLAP);
        match tokio::task::spawn_blocking(move || registry.revoked_since(ask)).await {
            Ok(Ok(None)) => return,
            Ok(Ok(Some((now, found)))) => {
                let new: Vec<_> = found
                    .into_iter()
                    .filter(|(serial, at)| told.insert(*serial, *at).is_none())
                    .map(|(serial, _)| serial)
                    .collect();
                if !new.is_empty() && since.is_some() {
                    tracing::info!(count = new.len(), "revocations made by other instances");
                    state.revoked(&new);
                }
                told.retain(|_, at| *at > now - OVERLAP - OVERLAP);
                since = Some(now);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "following the shared registry's revocations"),
            Err(e) => tracing::error!(error = %e, "revocation follower task"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
        }
    }
}

/// Keeps the OCSP cache ahead of requests: signs fresh answers for certificates as soon as they
/// are issued or revoked (all that queued up meanwhile in one round), and every ten minutes
/// signs again the answers past half their life.
pub async fn ocsp_refresher(state: Shared, mut stop: watch::Receiver<bool>) {
    let mut next_refresh = tokio::time::Instant::now() + Duration::from_secs(600);
    loop {
        tokio::select! {
            _ = state.ocsp_wake.notified() => {}
            _ = tokio::time::sleep_until(next_refresh) => {}
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
        }
        let changed = state.take_presign();
        let refresh = tokio::time::Instant::now() >= next_refresh;
        if refresh {
            next_refresh = tokio::time::Instant::now() + Duration::from_secs(600);
        }
        let working = state.clone();
        let done = tokio::task::spawn_blocking(move || {
            let state = working;
            let (registry, issuer) = (state.registry.as_ref(), state.issuer.as_ref());
            let presigned = if changed.is_empty() { Ok(0) } else { state.ocsp.presign(&changed, registry, issuer) };
            let refreshed =
                if refresh { state.ocsp.refresh(registry, issuer, OffsetDateTime::now_utc()) } else { Ok(0) };
            (presigned, refreshed)
        })
        .await;
        match done {
            Ok((presigned, refreshed)) => {
                match presigned {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(answers = n, "OCSP answers for issued or revoked certificates signed"),
                    Err(e) => {
                        tracing::warn!(error = %e, "OCSP answers for issued or revoked certificates: not signed now")
                    }
                }
                match refreshed {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(refreshed = n, "OCSP answers refreshed"),
                    Err(e) => tracing::warn!(error = %e, "refreshing OCSP answers failed; trying again later"),
                }
            }
            Err(e) => tracing::error!(error = %e, "OCSP task"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_ca_crl_name;

    #[test]
    fn shared_crl_names_are_the_cas_crls_and_shards_only() {
        for name in ["ca.crl", "ca-2.crl", "ca-16-3.crl", "ca-2-16-3.crl"] {
            assert!(is_ca_crl_name(name), "{name}");
        }
        for name in ["root.crl", "ca-1.crl", "ca-16-16.crl", "../ca.crl", "ca-ocsp.der", "audit-checkpoint.json"] {
            assert!(!is_ca_crl_name(name), "{name}");
        }
    }
}
