//! The OAuth stores on sled, in the web stores' database: trees `oauth_clients`,
//! `oauth_resources`, `oauth_flows`, `oauth_codes`, `oauth_grants`, `oauth_tokens` and
//! `oauth_profiles`, each key → JSON.

use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use super::StoreError;
use super::oauth::{CodeRecord, Flow, Grant, OAuthClient, OAuthStore, Redeemed, Resource, RiskProfile, TokenRecord};

/// The OAuth trees of one sled database.
#[derive(Clone)]
pub struct SledOAuth {
    db: sled::Db,
    clients: sled::Tree,
    resources: sled::Tree,
    flows: sled::Tree,
    codes: sled::Tree,
    grants: sled::Tree,
    tokens: sled::Tree,
    profiles: sled::Tree,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::from_display(e)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(err)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(err)
}

impl SledOAuth {
    /// Opens (or creates) the trees in `db`.
    pub fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(Self {
            db: db.clone(),
            clients: db.open_tree("oauth_clients").map_err(err)?,
            resources: db.open_tree("oauth_resources").map_err(err)?,
            flows: db.open_tree("oauth_flows").map_err(err)?,
            codes: db.open_tree("oauth_codes").map_err(err)?,
            grants: db.open_tree("oauth_grants").map_err(err)?,
            tokens: db.open_tree("oauth_tokens").map_err(err)?,
            profiles: db.open_tree("oauth_profiles").map_err(err)?,
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(drop).map_err(err)
    }

    fn get<T: DeserializeOwned>(tree: &sled::Tree, key: &[u8]) -> Result<Option<T>, StoreError> {
        tree.get(key).map_err(err)?.map(|v| decode(&v)).transpose()
    }

    fn all<T: DeserializeOwned>(tree: &sled::Tree) -> Result<Vec<T>, StoreError> {
        tree.iter().map(|item| decode(&item.map_err(err)?.1)).collect()
    }

    fn insert_new<T: Serialize>(&self, tree: &sled::Tree, key: &[u8], value: &T) -> Result<bool, StoreError> {
        let swapped = tree.compare_and_swap(key, None::<&[u8]>, Some(encode(value)?)).map_err(err)?;
        if swapped.is_err() {
            return Ok(false);
        }
        self.flush()?;
        Ok(true)
    }

    fn put<T: Serialize>(&self, tree: &sled::Tree, key: &[u8], value: &T) -> Result<(), StoreError> {
        tree.insert(key, encode(value)?).map_err(err)?;
        self.flush()
    }

    fn remove(&self, tree: &sled::Tree, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        let old = tree.remove(key).map_err(err)?;
        if old.is_some() {
            self.flush()?;
        }
        Ok(old)
    }

    /// Read, change, compare-and-swap until no other writer got in between.
    fn update<T: Serialize + DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        key: &[u8],
        default: Option<&dyn Fn() -> T>,
        change: &mut dyn FnMut(&mut T),
    ) -> Result<Option<T>, StoreError> {
        loop {
            let old = tree.get(key).map_err(err)?;
            let mut value: T = match (&old, default) {
                (Some(bytes), _) => decode(bytes)?,
                (None, Some(make)) => make(),
                (None, None) => return Ok(None),
            };
            change(&mut value);
            let new = encode(&value)?;
            if old.as_deref() == Some(new.as_slice()) {
                return Ok(Some(value));
            }
            if tree.compare_and_swap(key, old, Some(new)).map_err(err)?.is_ok() {
                self.flush()?;
                return Ok(Some(value));
            }
        }
    }
}

impl OAuthStore for SledOAuth {
    fn insert_client(&self, client: &OAuthClient) -> Result<bool, StoreError> {
        self.insert_new(&self.clients, client.client_id.as_bytes(), client)
    }

    fn client(&self, client_id: &str) -> Result<Option<OAuthClient>, StoreError> {
        Self::get(&self.clients, client_id.as_bytes())
    }

    fn clients(&self) -> Result<Vec<OAuthClient>, StoreError> {
        Self::all(&self.clients)
    }

    fn remove_client(&self, client_id: &str) -> Result<bool, StoreError> {
        Ok(self.remove(&self.clients, client_id.as_bytes())?.is_some())
    }

    fn insert_resource(&self, resource: &Resource) -> Result<bool, StoreError> {
        self.insert_new(&self.resources, resource.id.as_bytes(), resource)
    }

    fn resources(&self) -> Result<Vec<Resource>, StoreError> {
        Self::all(&self.resources)
    }

    fn update_resource(&self, id: &str, change: &mut dyn FnMut(&mut Resource)) -> Result<Option<Resource>, StoreError> {
        self.update(&self.resources, id.as_bytes(), None, change)
    }

    fn remove_resource(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.remove(&self.resources, id.as_bytes())?.is_some())
    }

    fn put_flow(&self, key: &str, flow: &Flow) -> Result<(), StoreError> {
        self.put(&self.flows, key.as_bytes(), flow)
    }

    fn flow(&self, key: &str) -> Result<Option<Flow>, StoreError> {
        Self::get(&self.flows, key.as_bytes())
    }

    fn take_flow(&self, key: &str) -> Result<Option<Flow>, StoreError> {
        self.remove(&self.flows, key.as_bytes())?.map(|v| decode(&v)).transpose()
    }

    fn put_code(&self, hash: &[u8; 32], code: &CodeRecord) -> Result<(), StoreError> {
        self.put(&self.codes, hash, code)
    }

    fn redeem_code(&self, hash: &[u8; 32]) -> Result<Option<Redeemed>, StoreError> {
        let mut first = false;
        let code = self.update(&self.codes, hash, None, &mut |c: &mut CodeRecord| {
            first = !c.used;
            c.used = true;
        })?;
        Ok(code.map(|c| if first { Redeemed::First(c) } else { Redeemed::Again(c) }))
    }

    fn put_grant(&self, grant: &Grant) -> Result<(), StoreError> {
        self.put(&self.grants, grant.id.as_bytes(), grant)
    }

    fn grant(&self, id: &str) -> Result<Option<Grant>, StoreError> {
        Self::get(&self.grants, id.as_bytes())
    }

    fn grants(&self) -> Result<Vec<Grant>, StoreError> {
        Self::all(&self.grants)
    }

    fn update_grant(&self, id: &str, change: &mut dyn FnMut(&mut Grant)) -> Result<Option<Grant>, StoreError> {
        self.update(&self.grants, id.as_bytes(), None, change)
    }

    fn put_token(&self, hash: &[u8; 32], token: &TokenRecord) -> Result<(), StoreError> {
        self.put(&self.tokens, hash, token)
    }

    fn token(&self, hash: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError> {
        Self::get(&self.tokens, hash)
    }

    fn revoke_token(&self, hash: &[u8; 32]) -> Result<bool, StoreError> {
        Ok(self.update(&self.tokens, hash, None, &mut |t: &mut TokenRecord| t.revoked = true)?.is_some())
    }

    fn revoke_grant_tokens(&self, grant_id: &str) -> Result<usize, StoreError> {
        let mut revoked = 0;
        for item in self.tokens.iter() {
            let (key, value) = item.map_err(err)?;
            let token: TokenRecord = decode(&value)?;
            if token.grant_id != grant_id || token.revoked {
                continue;
            }
            self.update(&self.tokens, &key, None, &mut |t: &mut TokenRecord| t.revoked = true)?;
            revoked += 1;
        }
        Ok(revoked)
    }

    fn profile(&self, login_id: &str) -> Result<Option<RiskProfile>, StoreError> {
        Self::get(&self.profiles, login_id.as_bytes())
    }

    fn update_profile(
        &self,
        login_id: &str,
        change: &mut dyn FnMut(&mut RiskProfile),
    ) -> Result<RiskProfile, StoreError> {
        Ok(self.update(&self.profiles, login_id.as_bytes(), Some(&RiskProfile::default), change)?.unwrap_or_default())
    }

    fn purge(&self, now: OffsetDateTime) -> Result<usize, StoreError> {
        let mut gone = 0;
        let mut ended_grants = std::collections::HashSet::new();
        for item in self.grants.iter() {
            let (key, value) = item.map_err(err)?;
            let grant: Grant = decode(&value)?;
            if !grant.active(now) {
                ended_grants.insert(grant.id);
                self.grants.remove(key).map_err(err)?;
                gone += 1;
            }
        }
        for item in self.tokens.iter() {
            let (key, value) = item.map_err(err)?;
            let token: TokenRecord = decode(&value)?;
            if token.expires_at <= now || ended_grants.contains(&token.grant_id) {
                self.tokens.remove(key).map_err(err)?;
                gone += 1;
            }
        }
        for item in self.codes.iter() {
            let (key, value) = item.map_err(err)?;
            let code: CodeRecord = decode(&value)?;
            // A used code is kept until it lapses: a second use must still find it.
            if code.expires_at <= now {
                self.codes.remove(key).map_err(err)?;
                gone += 1;
            }
        }
        for item in self.flows.iter() {
            let (key, value) = item.map_err(err)?;
            let flow: Flow = decode(&value)?;
            if flow.expires_at <= now {
                self.flows.remove(key).map_err(err)?;
                gone += 1;
            }
        }
        if gone > 0 {
            self.flush()?;
        }
        Ok(gone)
    }
}
