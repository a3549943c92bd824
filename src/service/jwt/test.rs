use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;

/// A P-256 signing key and its public JWK.
struct Signer {
    key: EncodingKey,
    jwk: Value,
}

fn signer(kid: &str) -> Signer {
    let pair = rcgen::KeyPair::generate().expect("key pair");
    let raw = pair.public_key_raw();
    // Uncompressed point: 0x04 | x (32) | y (32).
    assert_eq!(raw.len(), 65);
    Signer {
        key: EncodingKey::from_ec_der(&pair.serialize_der()),
        jwk: json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
            "x": B64.encode(&raw[1..33]), "y": B64.encode(&raw[33..]),
        }),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

impl Signer {
    fn token(&self, kid: Option<&str>, claims: Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, &claims, &self.key).expect("sign")
    }
}

fn verifier(keys: &[&Signer], issuer: Option<&str>, audience: Option<&str>) -> JwtVerifier {
    let jwks = json!({ "keys": keys.iter().map(|s| s.jwk.clone()).collect::<Vec<_>>() });
    JwtVerifier::new(JwtConfig {
        jwks: jwks.to_string(),
        issuer: issuer.map(str::to_string),
        audience: audience.map(str::to_string),
        roles_claim: "roles".into(),
    })
    .expect("verifier")
}

#[track_caller]
fn refused(v: &JwtVerifier, token: &str, why: &str) {
    match v.verify(token) {
        Err(Error::Unauthenticated(m)) => assert!(m.contains(why), "{m}"),
        other => panic!("expected Unauthenticated ({why}), got {other:?}"),
    }
}

#[test]
fn a_valid_token_gives_its_subject_and_roles() {
    let a = signer("a");
    let v = verifier(&[&a], Some("https://id.example"), Some("statestore"));
    let token = a.token(
        Some("a"),
        json!({"sub": "svc-billing", "exp": now() + 600, "iss": "https://id.example",
               "aud": "statestore", "roles": ["$ops", "billing"]}),
    );
    let p = v.verify(&token).expect("verifies");
    assert_eq!(p.name(), "svc-billing");
    assert!(p.is_operator() && !p.is_admin());
    let Principal::User { groups, .. } = p else {
        panic!("a user")
    };
    assert_eq!(&*groups, ["$ops".to_string(), "billing".to_string()]);

    // Roles as one space-separated string (the OAuth `scope` style) work too.
    let token = a.token(
        None,
        json!({"sub": "x", "exp": now() + 600, "iss": "https://id.example",
               "aud": ["other", "statestore"], "roles": "$admins reader"}),
    );
    assert!(v.verify(&token).expect("verifies").is_admin());
}

#[test]
fn bad_tokens_are_refused_with_the_reason() {
    let a = signer("a");
    let b = signer("b");
    let v = verifier(&[&a], Some("iss-1"), Some("aud-1"));
    let good = json!({"sub": "s", "exp": now() + 600, "iss": "iss-1", "aud": "aud-1"});
    assert!(v.verify(&a.token(Some("a"), good.clone())).is_ok());

    // Signed by a key the JWKS does not hold (with its own kid, or claiming ours).
    refused(&v, &b.token(Some("b"), good.clone()), "no key");
    refused(&v, &b.token(Some("a"), good.clone()), "InvalidSignature");
    // Expired, wrong issuer, wrong audience, no subject, no expiry.
    let with = |k: &str, val: Value| {
        let mut c = good.clone();
        c[k] = val;
        c
    };
    refused(
        &v,
        &a.token(None, with("exp", json!(now() - 3600))),
        "ExpiredSignature",
    );
    refused(
        &v,
        &a.token(None, with("iss", json!("iss-2"))),
        "InvalidIssuer",
    );
    refused(
        &v,
        &a.token(None, with("aud", json!("aud-2"))),
        "InvalidAudience",
    );
    let mut no_sub = good.clone();
    no_sub.as_object_mut().expect("object").remove("sub");
    refused(&v, &a.token(None, no_sub), "sub");
    let mut no_exp = good.clone();
    no_exp.as_object_mut().expect("object").remove("exp");
    refused(&v, &a.token(None, no_exp), "exp");
    refused(&v, &a.token(None, with("roles", json!(7))), "'roles' claim");
    // Tampered payload: the signature no longer matches.
    let token = a.token(None, good.clone());
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    parts[1] = B64.encode(with("sub", json!("root")).to_string());
    refused(&v, &parts.join("."), "InvalidSignature");
    // The unsigned algorithm, garbage and oversized tokens.
    let none = format!(
        "{}.{}.",
        B64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        B64.encode(good.to_string())
    );
    refused(&v, &none, "bearer token refused");
    refused(&v, "not-a-token", "bearer token refused");
    refused(&v, &"a".repeat(TOKEN_BYTES_MAX + 1), "over");
}

#[test]
fn a_token_may_be_signed_by_any_key_of_the_set() {
    let a = signer("a");
    let b = signer("b");
    let v = verifier(&[&a, &b], None, None);
    let claims = json!({"sub": "s", "exp": now() + 60, "aud": "anything"});
    assert!(v.verify(&a.token(Some("a"), claims.clone())).is_ok());
    assert!(v.verify(&b.token(Some("b"), claims.clone())).is_ok());
    // Without a kid, each key is tried.
    assert!(v.verify(&b.token(None, claims)).is_ok());
}

#[test]
fn a_bad_key_set_is_refused_at_start() {
    let config = |jwks: &str| JwtConfig {
        jwks: jwks.into(),
        issuer: None,
        audience: None,
        roles_claim: "roles".into(),
    };
    for (jwks, why) in [
        ("not json", "does not parse"),
        (r#"{"keys": []}"#, "holds no key"),
        (
            r#"{"keys": [{"kty": "EC", "crv": "P-256", "alg": "RSA-OAEP", "x": "AA", "y": "AA"}]}"#,
            "not for signatures",
        ),
        (
            r#"{"keys": [{"kty": "EC", "crv": "P-256", "x": "!", "y": "!"}]}"#,
            "cannot verify",
        ),
    ] {
        match JwtVerifier::new(config(jwks)) {
            Err(Error::InvalidArgument(m)) => assert!(m.contains(why), "{jwks}: {m}"),
            Err(e) => panic!("{jwks}: {e:?}"),
            Ok(_) => panic!("{jwks}: accepted"),
        }
    }
}
