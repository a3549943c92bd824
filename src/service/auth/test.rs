use std::sync::Arc;

use serde_json::json;

use super::*;

fn user(name: &str, groups: &[&str]) -> Principal {
    Principal::User {
        name: Arc::from(name),
        groups: groups
            .iter()
            .map(|g| g.to_string())
            .collect::<Vec<_>>()
            .into(),
    }
}

fn custom(acl: Value) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert(ACL_KEY.into(), acl);
    m
}

#[test]
fn default_acls_open_user_streams_to_users_and_system_streams_to_admins() {
    let ada = user("ada", &[]);
    let admin = user("root", &[ADMINS_GROUP]);
    assert!(allowed(&ada, Access::Write, "order-1", None));
    assert!(!allowed(&ada, Access::Read, "$users", None));
    assert!(allowed(&admin, Access::Read, "$users", None));
    assert!(!allowed(
        &Principal::Anonymous,
        Access::Read,
        "order-1",
        None
    ));
    assert!(allowed(&Principal::Open, Access::Delete, "$users", None));
}

#[test]
fn an_acl_names_users_groups_or_everyone_per_verb() {
    let acl = custom(json!({"$r": ["ada", "readers"], "$w": "ada", "$d": [], "$mr": "$all"}));
    let ada = user("ada", &[]);
    let bob = user("bob", &["readers"]);
    let eve = user("eve", &[]);
    assert!(allowed(&ada, Access::Read, "s", Some(&acl)));
    assert!(allowed(&bob, Access::Read, "s", Some(&acl)));
    assert!(!allowed(&eve, Access::Read, "s", Some(&acl)));
    assert!(allowed(&ada, Access::Write, "s", Some(&acl)));
    assert!(!allowed(&bob, Access::Write, "s", Some(&acl)));
    assert!(
        !allowed(&ada, Access::Delete, "s", Some(&acl)),
        "an empty list grants no one"
    );
    assert!(allowed(&eve, Access::MetadataRead, "s", Some(&acl)));
    // $mw is not named: the default for a user stream.
    assert!(allowed(&eve, Access::MetadataWrite, "s", Some(&acl)));
    assert!(allowed(
        &user("root", &[ADMINS_GROUP]),
        Access::Delete,
        "s",
        Some(&acl)
    ));
}

#[test]
fn the_named_default_acls_stand_for_the_defaults() {
    let ada = user("ada", &[]);
    let user_default = custom(json!(USER_STREAM_ACL));
    let system_default = custom(json!(SYSTEM_STREAM_ACL));
    assert!(check_acl(&user_default).is_ok() && check_acl(&system_default).is_ok());
    assert!(allowed(&ada, Access::Write, "s", Some(&user_default)));
    assert!(!allowed(&ada, Access::Read, "s", Some(&system_default)));
}

#[test]
fn malformed_acls_are_refused() {
    assert!(check_acl(&custom(json!({"$r": "ada"}))).is_ok());
    for bad in [
        json!("ada"),
        json!({"$x": "ada"}),
        json!({"$r": 3}),
        json!({"$r": [1]}),
    ] {
        assert!(check_acl(&custom(bad.clone())).is_err(), "{bad}");
    }
}

#[test]
fn basic_credentials_parse_and_bad_ones_are_unauthenticated() {
    // "admin:changeit"
    let (u, p) = parse_basic("Basic YWRtaW46Y2hhbmdlaXQ=").expect("parse");
    assert_eq!((u.as_str(), p.as_str()), ("admin", "changeit"));
    for bad in ["Bearer x", "Basic !!!", "Basic YWRtaW4=", "Basic"] {
        assert!(
            matches!(parse_basic(bad), Err(Error::Unauthenticated(_))),
            "{bad}"
        );
    }
}
