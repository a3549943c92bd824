//! The users of a server: names, groups and argon2id password hashes, kept as events in the
//! system stream `$users` and folded into a directory when read. Synchronous: the offline
//! `statestore user` commands write it on a closed data directory, and the service layer
//! writes it for the admin API of a running server.
//!
//! Every change is one append guarded by the stream's revision as read, so two concurrent
//! changes cannot both pass their checks.

use std::collections::BTreeMap;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::{Deserialize, Serialize};

use crate::Store;
use crate::error::{Error, Result};
use crate::types::{Direction, EventData, ExpectedRevision, Revision};

/// The system stream that holds the users.
pub const USERS_STREAM: &str = "$users";
/// Members may do everything, on every stream.
pub const ADMINS_GROUP: &str = "$admins";
/// Members may read the whole log (`$all`) and server information, as operators need.
pub const OPS_GROUP: &str = "$ops";
/// The user created at first start from `STATESTORE_ADMIN_PASSWORD`.
pub const ADMIN_USER: &str = "admin";

/// Longest user name, in bytes.
pub const USER_NAME_BYTES_MAX: usize = 128;
/// Longest password, in bytes (argon2 hashes any length; this bounds the work per login).
pub const PASSWORD_BYTES_MAX: usize = 1024;
/// Most groups one user may belong to.
pub const USER_GROUPS_MAX: usize = 64;

const USER_ADDED: &str = "UserAdded";
const PASSWORD_CHANGED: &str = "PasswordChanged";
const USER_REMOVED: &str = "UserRemoved";

/// One user as the directory holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
    /// The PHC string of the argon2id hash.
    hash: String,
}

impl User {
    /// True when `password` is this user's. Costs one argon2id verification (tens of ms).
    pub fn verify(&self, password: &str) -> bool {
        if password.len() > PASSWORD_BYTES_MAX {
            return false;
        }
        PasswordHash::new(&self.hash).is_ok_and(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
    }

    pub fn is_admin(&self) -> bool {
        self.groups.iter().any(|g| g == ADMINS_GROUP)
    }
}

/// The stored form of one change.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hash: Option<String>,
}

/// Every user, by name, as of one revision of `$users`.
#[derive(Debug, Clone, Default)]
pub struct Users {
    by_name: BTreeMap<String, User>,
    /// The revision of `$users` folded, `None` when it does not exist.
    revision: Option<Revision>,
}

impl Users {
    /// Reads and folds `$users`. A record that does not parse is `Corruption`-free: it is
    /// skipped with a warning, since only this module writes the stream.
    pub fn load(store: &Store) -> Result<Users> {
        let mut users = Users::default();
        let page = store.config().read_count_max.min(1000);
        let mut next = Revision(0);
        loop {
            let events = match store.read_stream(USERS_STREAM, next, Direction::Forwards, page) {
                Ok(events) => events,
                Err(Error::StreamNotFound { .. }) => return Ok(users),
                Err(e) => return Err(e),
            };
            for e in &events {
                users.apply(e.event_type(), e.data());
                users.revision = Some(e.revision);
            }
            match events.last() {
                Some(last) if events.len() as u64 == page => next = Revision(last.revision.0 + 1),
                _ => return Ok(users),
            }
        }
    }

    fn apply(&mut self, event_type: &str, data: &[u8]) {
        let Ok(r) = serde_json::from_slice::<Record>(data) else {
            tracing::warn!(
                event_type,
                "skipping a record of {USERS_STREAM} that does not parse"
            );
            return;
        };
        match event_type {
            USER_ADDED => {
                let user = User {
                    name: r.name.clone(),
                    groups: r.groups,
                    hash: r.hash.unwrap_or_default(),
                };
                self.by_name.insert(r.name, user);
            }
            PASSWORD_CHANGED => {
                if let (Some(user), Some(hash)) = (self.by_name.get_mut(&r.name), r.hash) {
                    user.hash = hash;
                }
            }
            USER_REMOVED => {
                self.by_name.remove(&r.name);
            }
            other => tracing::warn!(event_type = other, "unknown record type in {USERS_STREAM}"),
        }
    }

    pub fn get(&self, name: &str) -> Option<&User> {
        self.by_name.get(name)
    }

    /// Every user, in name order.
    pub fn iter(&self) -> impl Iterator<Item = &User> {
        self.by_name.values()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    fn expected(&self) -> ExpectedRevision {
        match self.revision {
            Some(r) => ExpectedRevision::Exact(r),
            None => ExpectedRevision::NoStream,
        }
    }
}

/// Adds a user. `InvalidArgument` when the name is taken or malformed, or the password or a
/// group is not acceptable.
pub fn add_user(store: &Store, name: &str, password: &str, groups: &[String]) -> Result<()> {
    check_user_name(name)?;
    check_groups(groups)?;
    let users = Users::load(store)?;
    if users.get(name).is_some() {
        return Err(Error::InvalidArgument(format!(
            "user '{name}' already exists"
        )));
    }
    let record = Record {
        name: name.to_string(),
        groups: groups.to_vec(),
        hash: Some(hash_password(password)?),
    };
    write(store, &users, USER_ADDED, &record)
}

/// Sets a user's password. `InvalidArgument` when there is no such user.
pub fn set_password(store: &Store, name: &str, password: &str) -> Result<()> {
    let users = Users::load(store)?;
    if users.get(name).is_none() {
        return Err(Error::InvalidArgument(format!("no user '{name}'")));
    }
    let record = Record {
        name: name.to_string(),
        groups: Vec::new(),
        hash: Some(hash_password(password)?),
    };
    write(store, &users, PASSWORD_CHANGED, &record)
}

/// Removes a user. `InvalidArgument` when there is no such user.
pub fn remove_user(store: &Store, name: &str) -> Result<()> {
    let users = Users::load(store)?;
    if users.get(name).is_none() {
        return Err(Error::InvalidArgument(format!("no user '{name}'")));
    }
    let record = Record {
        name: name.to_string(),
        groups: Vec::new(),
        hash: None,
    };
    write(store, &users, USER_REMOVED, &record)
}

/// Creates `admin` in `$admins` with `password` when the store has no users yet. Returns
/// whether it did.
pub fn bootstrap_admin(store: &Store, password: &str) -> Result<bool> {
    if !Users::load(store)?.is_empty() {
        return Ok(false);
    }
    add_user(store, ADMIN_USER, password, &[ADMINS_GROUP.to_string()])?;
    Ok(true)
}

fn write(store: &Store, users: &Users, event_type: &str, record: &Record) -> Result<()> {
    let data = serde_json::to_vec(record)
        .map_err(|e| Error::InvalidArgument(format!("user record: {e}")))?;
    store.append(
        USERS_STREAM,
        users.expected(),
        vec![EventData::json(event_type, data)],
    )?;
    Ok(())
}

/// An argon2id PHC string for `password`, with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String> {
    check_password(password)?;
    let salt = SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes())
        .map_err(|e| Error::InvalidArgument(format!("password salt: {e}")))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::InvalidArgument(format!("password hash: {e}")))
}

/// User names: 1 to 128 bytes, no `:` (it ends the name in HTTP Basic credentials), no
/// control characters, not starting with `$` (kept for groups such as `$admins`).
pub fn check_user_name(name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::InvalidArgument(format!(
            "user name '{}' {why}",
            name.escape_debug()
        )))
    };
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > USER_NAME_BYTES_MAX {
        return bad("is over 128 bytes");
    }
    if name.contains(':') || name.chars().any(char::is_control) {
        return bad("contains ':' or a control character");
    }
    if name.starts_with('$') {
        return bad("starts with '$', which is kept for groups");
    }
    Ok(())
}

fn check_password(password: &str) -> Result<()> {
    if password.is_empty() {
        return Err(Error::InvalidArgument("the password is empty".into()));
    }
    if password.len() > PASSWORD_BYTES_MAX {
        return Err(Error::InvalidArgument(format!(
            "the password is over {PASSWORD_BYTES_MAX} bytes"
        )));
    }
    Ok(())
}

fn check_groups(groups: &[String]) -> Result<()> {
    if groups.len() > USER_GROUPS_MAX {
        return Err(Error::InvalidArgument(format!(
            "a user may belong to at most {USER_GROUPS_MAX} groups"
        )));
    }
    for g in groups {
        if g.is_empty() || g.len() > USER_NAME_BYTES_MAX || g.chars().any(char::is_control) {
            return Err(Error::InvalidArgument(format!(
                "group name '{}' is empty, over 128 bytes or holds a control character",
                g.escape_debug()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod test;
