//! Bearer tokens: JWTs signed by an identity provider whose public keys are a JWKS file. A
//! token that verifies (signature, expiry, issuer and audience when configured) makes its
//! subject (`sub`) the principal, in the groups its roles claim lists.

use std::sync::Arc;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::auth::Principal;
use crate::error::{Error, Result};

/// Longest token accepted, in bytes; longer ones are refused before any parsing.
pub const TOKEN_BYTES_MAX: usize = 16 << 10;
/// Most roles taken from one token.
const ROLES_MAX: usize = 64;

/// Where bearer tokens come from, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// The JWKS document (`{"keys": [...]}`), as text.
    pub jwks: String,
    /// When set, a token's `iss` must equal it.
    pub issuer: Option<String>,
    /// When set, a token's `aud` must hold it.
    pub audience: Option<String>,
    /// The claim listing the caller's groups (an array of strings, or one string of names
    /// separated by spaces). Default `roles`.
    pub roles_claim: String,
}

/// The keys of a JWKS and the checks every token passes.
pub struct JwtVerifier {
    keys: Vec<Key>,
    config: JwtConfig,
}

struct Key {
    id: Option<String>,
    algorithm: Option<Algorithm>,
    key: DecodingKey,
}

impl JwtVerifier {
    /// Reads the key set. `InvalidArgument` when it is not a JWKS, holds no key, or holds a
    /// key that cannot verify anything.
    pub fn new(config: JwtConfig) -> Result<JwtVerifier> {
        let bad = |why: String| Error::InvalidArgument(format!("the JWKS {why}"));
        let set: JwkSet =
            serde_json::from_str(&config.jwks).map_err(|e| bad(format!("does not parse: {e}")))?;
        if set.keys.is_empty() {
            return Err(bad("holds no key".into()));
        }
        let mut keys = Vec::with_capacity(set.keys.len());
        for jwk in &set.keys {
            let key = DecodingKey::from_jwk(jwk).map_err(|e| {
                bad(format!(
                    "key {:?} cannot verify tokens: {e}",
                    jwk.common.key_id
                ))
            })?;
            let algorithm = match jwk.common.key_algorithm {
                None => None,
                Some(a) => Some(a.to_string().parse::<Algorithm>().map_err(|_| {
                    bad(format!(
                        "key {:?} is for {a}, not for signatures",
                        jwk.common.key_id
                    ))
                })?),
            };
            keys.push(Key {
                id: jwk.common.key_id.clone(),
                algorithm,
                key,
            });
        }
        Ok(JwtVerifier { keys, config })
    }

    /// The principal of a token (the text after `Bearer `). `Unauthenticated`, with the
    /// reason, for any token that does not verify.
    pub fn verify(&self, token: &str) -> Result<Principal> {
        let refused = |why: String| Error::Unauthenticated(format!("bearer token refused: {why}"));
        if token.len() > TOKEN_BYTES_MAX {
            return Err(refused(format!("over {TOKEN_BYTES_MAX} bytes")));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| refused(e.to_string()))?;
        // The key the token names, or, without a `kid`, each key that fits its algorithm.
        let candidates: Vec<&Key> = self
            .keys
            .iter()
            .filter(|k| match (&header.kid, &k.id) {
                (Some(want), Some(id)) => want == id,
                (Some(_), None) => false,
                (None, _) => true,
            })
            .filter(|k| k.algorithm.is_none_or(|a| a == header.alg))
            .collect();
        if candidates.is_empty() {
            return Err(refused(format!(
                "no key of the JWKS matches its kid {:?} and algorithm {:?}",
                header.kid, header.alg
            )));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &self.config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.config.issuer {
            validation.set_issuer(&[iss]);
        }
        let mut last_error = None;
        for k in candidates {
            match jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &k.key, &validation)
            {
                Ok(data) => return self.principal(&data.claims).map_err(refused),
                Err(e) => last_error = Some(e),
            }
        }
        Err(refused(last_error.map_or_else(
            || "it does not verify".into(),
            |e| e.to_string(),
        )))
    }

    fn principal(
        &self,
        claims: &serde_json::Map<String, Value>,
    ) -> std::result::Result<Principal, String> {
        let name = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 1024 => s.as_str(),
            _ => return Err("its sub is not a string of 1 to 1024 bytes".into()),
        };
        let roles: Vec<String> = match claims.get(&self.config.roles_claim) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            Some(_) => {
                return Err(format!(
                    "its '{}' claim is not a string or a list of strings",
                    self.config.roles_claim
                ));
            }
        };
        if roles.len() > ROLES_MAX {
            return Err(format!("it lists more than {ROLES_MAX} roles"));
        }
        Ok(Principal::User {
            name: Arc::from(name),
            groups: Arc::from(roles),
        })
    }
}

#[cfg(test)]
mod test;
