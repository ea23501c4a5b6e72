//! The operator's commands for API consent: registering clients and the contracts' resources
//! (`inkan oauth client …`, `inkan resource …`), run by the admin socket or the CLI alike.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{OAuth, check_redirect_uri, short_id};
use crate::accounts::{Accounts, Password, Role};
use crate::ports::Audit;
use crate::stores::oauth::{OAuthClient, Resource};

/// A client as the operator describes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientSpec {
    /// `client_id`; `None`: made up.
    pub client_id: Option<String>,
    /// The name users see.
    pub name: String,
    /// The company users see.
    pub company: String,
    /// Redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Scopes it may ask for.
    pub scopes: Vec<String>,
    /// Grant period in days; `None`: `[oauth] grant_days`.
    pub grant_days: Option<u32>,
    /// Login ID + password allowed instead of a certificate.
    pub allow_password_login: bool,
    /// The subject of its certificate.
    pub tls_subject: String,
}

fn check_id(id: &str, what: &str) -> Result<(), String> {
    let ok = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok { Ok(()) } else { Err(format!("{what} {id:?}: use 1 to 64 letters, digits, '-', '_' or '.'")) }
}

fn check_text(text: &str, what: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > 100 || text.chars().any(char::is_control) {
        return Err(format!("{what} must be 1 to 100 characters, on one line"));
    }
    Ok(text.to_owned())
}

/// Registers a client.
pub fn add_client(
    oauth: &OAuth,
    audit: &dyn Audit,
    spec: ClientSpec,
    now: OffsetDateTime,
) -> Result<OAuthClient, String> {
    let client_id = spec.client_id.unwrap_or_else(|| short_id("c-"));
    check_id(&client_id, "client ID")?;
    if spec.redirect_uris.is_empty() {
        return Err("give at least one --redirect-uri".into());
    }
    for uri in &spec.redirect_uris {
        check_redirect_uri(uri)?;
    }
    if spec.scopes.is_empty() {
        return Err("give at least one --scope".into());
    }
    for scope in &spec.scopes {
        if oauth.settings.scope(scope).is_none() {
            let known: Vec<&str> = oauth.settings.scopes.iter().map(|s| s.name.as_str()).collect();
            return Err(format!("scope {scope:?} is not configured ([oauth.scopes] has {})", known.join(", ")));
        }
    }
    let grant_days = spec.grant_days.unwrap_or(oauth.settings.grant_days);
    if !(1..=365).contains(&grant_days) {
        return Err("--grant-days must be between 1 and 365".into());
    }
    let tls_subject = spec.tls_subject.trim().to_owned();
    if !super::dn_parts_have_cn(&tls_subject) {
        return Err(format!(
            "--tls-subject {tls_subject:?} has no CN= (give the subject of the client's certificate, e.g. \"O=Bank, CN=app\")"
        ));
    }
    let client = OAuthClient {
        client_id: client_id.clone(),
        name: check_text(&spec.name, "--name")?,
        company: check_text(&spec.company, "--company")?,
        redirect_uris: spec.redirect_uris,
        scopes: spec.scopes,
        grant_days,
        allow_password_login: spec.allow_password_login,
        tls_subject,
        created_at: now,
    };
    if !oauth.store.insert_client(&client).map_err(|e| e.to_string())? {
        return Err(format!("client ID {client_id} is taken"));
    }
    audit.record(
        "oauth.client_added",
        serde_json::json!({ "client_id": client.client_id, "name": client.name, "redirect_uris": client.redirect_uris,
            "scopes": client.scopes, "tls_subject": client.tls_subject, "allow_password_login": client.allow_password_login }),
    );
    Ok(client)
}

/// Removes a client and ends its grants.
pub fn remove_client(oauth: &OAuth, audit: &dyn Audit, client_id: &str, now: OffsetDateTime) -> Result<usize, String> {
    if !oauth.store.remove_client(client_id).map_err(|e| e.to_string())? {
        return Err(format!("no client {client_id}"));
    }
    let mut ended = 0;
    for grant in oauth.store.grants().map_err(|e| e.to_string())? {
        if grant.client_id == client_id && grant.active(now) {
            oauth.end_grant(&grant.id, "operator", now).map_err(|e| e.to_string())?;
            ended += 1;
        }
    }
    audit.record("oauth.client_removed", serde_json::json!({ "client_id": client_id, "grants_ended": ended }));
    Ok(ended)
}

/// A resource as shown to the operator (no PIN).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResourceView {
    /// Its ID.
    pub id: String,
    /// The contract.
    pub contract: String,
    /// Its label.
    pub label: String,
    /// Who registered its PIN.
    pub registered: Vec<String>,
}

impl From<Resource> for ResourceView {
    fn from(r: Resource) -> Self {
        Self { id: r.id, contract: r.contract, label: r.label, registered: r.registered }
    }
}

/// A resource as the operator describes it.
#[derive(Debug, Clone)]
pub struct ResourceSpec {
    /// Its ID; `None`: made up.
    pub id: Option<String>,
    /// The contract (master login ID).
    pub contract: String,
    /// What users see.
    pub label: String,
}

/// Adds a resource to a contract, with its inquiry PIN (4 to 8 digits).
pub fn add_resource(
    oauth: &OAuth,
    accounts: &Accounts,
    audit: &dyn Audit,
    spec: ResourceSpec,
    pin: &Password,
    now: OffsetDateTime,
) -> Result<ResourceView, String> {
    let ResourceSpec { id, contract, label } = spec;
    let (contract, label) = (contract.as_str(), label.as_str());
    let id = id.unwrap_or_else(|| short_id("r-"));
    check_id(&id, "resource ID")?;
    let master = accounts.get(contract).map_err(|e| e.to_string())?;
    if !master.is_some_and(|m| m.role == Role::Master) {
        return Err(format!("--contract {contract:?} is not a master user's login ID"));
    }
    let digits = pin.reveal();
    if !(4..=8).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the inquiry PIN must be 4 to 8 digits".into());
    }
    let resource = Resource {
        id: id.clone(),
        contract: contract.to_owned(),
        label: check_text(label, "--label")?,
        pin_hash: crate::accounts::hash_secret(pin).map_err(|e| e.to_string())?,
        registered: Vec::new(),
        created_at: now,
    };
    if !oauth.store.insert_resource(&resource).map_err(|e| e.to_string())? {
        return Err(format!("resource ID {id} is taken"));
    }
    audit.record("resource.added", serde_json::json!({ "id": id, "contract": contract, "label": resource.label }));
    Ok(resource.into())
}

/// Removes a resource.
pub fn remove_resource(oauth: &OAuth, audit: &dyn Audit, id: &str) -> Result<(), String> {
    if !oauth.store.remove_resource(id).map_err(|e| e.to_string())? {
        return Err(format!("no resource {id}"));
    }
    audit.record("resource.removed", serde_json::json!({ "id": id }));
    Ok(())
}
