//! Who is calling, and what they may do. Authentication turns the credentials a front-end
//! found (HTTP Basic, as gRPC metadata or an HTTP header) into a [`Principal`]; authorization
//! checks a principal against a stream's access control list. Both are called only from the
//! service layer, so every front-end gets the same answers.
//!
//! Authentication is on once the store has a user (the first start with
//! `STATESTORE_ADMIN_PASSWORD` creates `admin`). Until then every caller is
//! [`Principal::Open`] and may do everything, as a store on loopback always could.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use parking_lot::{Mutex, RwLock};
use serde_json::Value;

use crate::error::Error;
use crate::users::{ADMINS_GROUP, OPS_GROUP, Users};

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Authentication is off (the store has no users): every caller may do everything.
    Open,
    /// No credentials, on a store where authentication is on.
    Anonymous,
    /// The server itself, for its own bookkeeping (persistent-subscription checkpoints and
    /// parked events): may do everything, recorded as `$system`.
    System,
    /// An authenticated user and the groups it belongs to.
    User {
        name: Arc<str>,
        groups: Arc<[String]>,
    },
}

impl Principal {
    /// The name recorded and logged for this caller.
    pub fn name(&self) -> &str {
        match self {
            Principal::Open | Principal::Anonymous => "$anonymous",
            Principal::System => "$system",
            Principal::User { name, .. } => name,
        }
    }

    /// The name recorded with the events this caller appends: the user, `$anonymous`, or
    /// nothing while authentication is off.
    pub fn recorded(&self) -> &str {
        match self {
            Principal::Open => "",
            p => p.name(),
        }
    }

    fn in_group(&self, group: &str) -> bool {
        matches!(self, Principal::User { groups, .. } if groups.iter().any(|g| g == group))
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::Open | Principal::System) || self.in_group(ADMINS_GROUP)
    }

    /// Admins and operators: may read the whole log and see server details.
    pub fn is_operator(&self) -> bool {
        self.is_admin() || self.in_group(OPS_GROUP)
    }
}

/// What a caller wants to do to a stream: KurrentDB's ACL verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `$r`: read and subscribe.
    Read,
    /// `$w`: append.
    Write,
    /// `$d`: delete and tombstone.
    Delete,
    /// `$mr`: read the stream's metadata.
    MetadataRead,
    /// `$mw`: write the stream's metadata.
    MetadataWrite,
}

impl Access {
    pub fn key(self) -> &'static str {
        match self {
            Access::Read => "$r",
            Access::Write => "$w",
            Access::Delete => "$d",
            Access::MetadataRead => "$mr",
            Access::MetadataWrite => "$mw",
        }
    }
}

/// The key of stream metadata that holds a stream's ACL.
pub const ACL_KEY: &str = "$acl";
/// In an ACL, every authenticated user.
pub const EVERYONE: &str = "$all";
/// As the whole ACL: the default of user streams (every authenticated user may do everything).
pub const USER_STREAM_ACL: &str = "$userStreamAcl";
/// As the whole ACL: the default of system streams (only `$admins`).
pub const SYSTEM_STREAM_ACL: &str = "$systemStreamAcl";

/// Whether `who` may do `access` on `stream`, whose metadata's custom keys are `custom`
/// (`None`: no metadata). An ACL entry is a user or group name or a list of them; a verb the
/// ACL does not name falls back to the default: every authenticated user for streams, only
/// `$admins` for system streams (names starting with `$`).
pub fn allowed(
    who: &Principal,
    access: Access,
    stream: &str,
    custom: Option<&serde_json::Map<String, Value>>,
) -> bool {
    if who.is_admin() {
        return true;
    }
    let Principal::User { name, groups } = who else {
        return false;
    };
    let acl = custom.and_then(|c| c.get(ACL_KEY));
    // KurrentDB's named defaults, which its clients write as the whole ACL.
    let system_default = match acl {
        Some(Value::String(name)) if name == USER_STREAM_ACL => Some(false),
        Some(Value::String(name)) if name == SYSTEM_STREAM_ACL => Some(true),
        _ => None,
    };
    if let Some(system) = system_default {
        return !system;
    }
    let entry = acl.and_then(|acl| acl.get(access.key()));
    let listed =
        |role: &str| role == EVERYONE || role == &**name || groups.iter().any(|g| g == role);
    match entry {
        Some(Value::String(role)) => listed(role),
        Some(Value::Array(roles)) => roles.iter().filter_map(Value::as_str).any(listed),
        // Anything else in the ACL (null, a number) grants nothing beyond admins.
        Some(_) => false,
        None => !stream.starts_with('$'),
    }
}

/// Checks an ACL given in stream metadata: an object of verbs, each a name or a list of names.
pub fn check_acl(custom: &serde_json::Map<String, Value>) -> crate::Result<()> {
    let Some(acl) = custom.get(ACL_KEY) else {
        return Ok(());
    };
    let bad = |why: &str| {
        Err(Error::InvalidArgument(format!(
            "stream metadata '$acl': {why}"
        )))
    };
    let verbs = match acl {
        Value::Object(verbs) => verbs,
        Value::String(name) if name == USER_STREAM_ACL || name == SYSTEM_STREAM_ACL => {
            return Ok(());
        }
        _ => {
            return bad(
                "must be an object of verbs ($r, $w, $d, $mr, $mw), '$userStreamAcl' or \
                 '$systemStreamAcl'",
            );
        }
    };
    for (verb, roles) in verbs {
        if !["$r", "$w", "$d", "$mr", "$mw"].contains(&verb.as_str()) {
            return bad(&format!("unknown verb '{verb}'"));
        }
        let ok = match roles {
            Value::String(_) => true,
            Value::Array(list) => list.iter().all(Value::is_string),
            _ => false,
        };
        if !ok {
            return bad(&format!("'{verb}' must be a name or a list of names"));
        }
    }
    Ok(())
}

/// Failed logins allowed per address in one window before further attempts are refused
/// without checking.
pub const FAILED_LOGINS_MAX: u32 = 10;
/// The window of [`FAILED_LOGINS_MAX`].
pub const FAILED_LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Credentials remembered after a successful check, so a client's every call does not cost an
/// argon2 verification. Cleared whenever the users change.
const VERIFIED_MAX: usize = 4096;
/// Addresses tracked for failed logins at once.
const FAILURE_ADDRESSES_MAX: usize = 65_536;

/// The users and what was verified recently.
pub struct Authenticator {
    users: RwLock<Arc<Users>>,
    /// The exact credential text of recent successful logins, and who they were.
    verified: Mutex<HashMap<String, Principal>>,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    /// Bearer tokens, when a JWKS is configured.
    jwt: Option<super::jwt::JwtVerifier>,
}

impl Authenticator {
    pub fn new(users: Users, jwt: Option<super::jwt::JwtVerifier>) -> Authenticator {
        Authenticator {
            users: RwLock::new(Arc::new(users)),
            verified: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            jwt,
        }
    }

    /// Whether calls need credentials: once the store has a user or tokens are configured.
    pub fn enabled(&self) -> bool {
        self.jwt.is_some() || !self.users.read().is_empty()
    }

    pub fn users(&self) -> Arc<Users> {
        Arc::clone(&self.users.read())
    }

    /// Replaces the directory (after a change) and forgets every verified credential.
    pub fn set_users(&self, users: Users) {
        *self.users.write() = Arc::new(users);
        self.verified.lock().clear();
    }

    /// The principal for an `authorization` value (`Basic base64(user:password)` or
    /// `Bearer JWT`), or for none. Blocking: a first login costs an argon2id verification;
    /// call it off the async workers.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        peer: Option<IpAddr>,
    ) -> crate::Result<Principal> {
        if !self.enabled() {
            return Ok(Principal::Open);
        }
        let Some(header) = authorization else {
            return Ok(Principal::Anonymous);
        };
        if let Some(p) = self.verified.lock().get(header) {
            return Ok(p.clone());
        }
        if let Some(ip) = peer
            && self.throttled(ip)
        {
            return Err(Error::Unauthenticated(
                "too many failed logins from this address; try again later".into(),
            ));
        }
        if let Some(token) = bearer(header) {
            let Some(jwt) = &self.jwt else {
                return Err(Error::Unauthenticated(
                    "bearer tokens are not accepted: the server has no --jwks-file".into(),
                ));
            };
            // Not cached: a token's expiry is checked at every call.
            return jwt.verify(token).inspect_err(|e| {
                tracing::warn!(peer = ?peer, error = %e, "failed login with a bearer token");
                if let Some(ip) = peer {
                    self.failed(ip);
                }
            });
        }
        let (user, password) = parse_basic(header)?;
        let users = self.users();
        let principal = match users.get(&user) {
            Some(u) if u.verify(&password) => Principal::User {
                name: Arc::from(u.name.as_str()),
                groups: Arc::from(u.groups.clone()),
            },
            _ => {
                // The user name is logged, the password never.
                tracing::warn!(user = %user.escape_debug(), peer = ?peer, "failed login");
                if let Some(ip) = peer {
                    self.failed(ip);
                }
                return Err(Error::Unauthenticated("bad user name or password".into()));
            }
        };
        let mut verified = self.verified.lock();
        if verified.len() >= VERIFIED_MAX {
            verified.clear();
        }
        verified.insert(header.to_string(), principal.clone());
        Ok(principal)
    }

    fn throttled(&self, ip: IpAddr) -> bool {
        let failures = self.failures.lock();
        failures.get(&ip).is_some_and(|(since, n)| {
            since.elapsed() < FAILED_LOGIN_WINDOW && *n >= FAILED_LOGINS_MAX
        })
    }

    fn failed(&self, ip: IpAddr) {
        let mut failures = self.failures.lock();
        if failures.len() >= FAILURE_ADDRESSES_MAX {
            failures.retain(|_, (since, _)| since.elapsed() < FAILED_LOGIN_WINDOW);
        }
        let entry = failures.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= FAILED_LOGIN_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

/// The token of a `Bearer TOKEN` value.
fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// `Basic base64(user:password)` to its parts.
pub fn parse_basic(header: &str) -> crate::Result<(String, String)> {
    let bad = || Error::Unauthenticated("the authorization is not HTTP Basic credentials".into());
    let (scheme, encoded) = header.trim().split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(Error::Unauthenticated(format!(
            "the authorization scheme '{}' is not supported; use Basic or Bearer",
            scheme.escape_debug()
        )));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (user, password) = text.split_once(':').ok_or_else(bad)?;
    Ok((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod test;
