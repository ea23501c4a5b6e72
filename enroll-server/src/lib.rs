//! inkan's enrollment service: the web worker of `inkan serve`.
//!
//! Four listeners share one [`state::AppState`] (see [`router`]):
//! - public HTTPS: the acquisition pipeline of manual 004 as pages (電子証明書取得 → 取得前処理
//!   → 取得開始 → 発行処理中 → install) and as the JSON API ([`enrollment`]);
//! - certificate-login HTTPS: asks for a client certificate in the handshake, then password
//!   login, the account's home, a master's user administration, revocation ([`login`],
//!   [`users`], [`revocation`]);
//! - plain HTTP: the CA certificates, CRLs, OCSP and metrics ([`publish`]);
//! - EST HTTPS (optional): enrollment for machines, RFC 7030 ([`est`]).
//!
//! The service holds no CA key: it reaches the CA through `pki::request::Issuer` and the
//! registry through `pki::registry::Registry`; OCSP answers are signed by the signer and cached
//! ([`ocsp`]). Operator commands arrive on the admin socket ([`admin`]).
//!
//! Modules are layered, and imports point down only: leaves (`settings`, `error`, `csrf`, `i18n`,
//! `metrics`, `ports`, `publications`, `stores`, `accounts`, `tokens`, `policy`, `ocsp`, `html`,
//! `pages`, `tls`)
//! → [`state`] (with `extract` and `forms` over it) → features (`enrollment`, `login`, `users`,
//! `revocation`, `publish`, `notify`, `admin`, `est`) → [`router`] → [`serve`]. The design overview
//! is `docs/ARCHITECTURE.md` in the repository.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod accounts;
pub mod admin;
pub mod card;
pub mod csrf;
pub mod duty;
pub mod enrollment;
pub mod error;
pub mod est;
pub mod extract;
pub mod forms;
pub mod html;
pub mod i18n;
mod listen;
pub mod login;
pub mod mail;
pub mod metrics;
pub mod notify;
pub mod oauth;
pub mod ocsp;
pub mod otp;
pub mod otp_web;
pub mod pages;
pub mod policy;
pub mod ports;
pub mod pskc;
pub mod publications;
pub mod publish;
pub mod revocation;
pub mod router;
pub mod serve;
pub mod settings;
pub mod state;
pub mod stores;
pub mod tls;
pub mod tokens;
pub mod users;
