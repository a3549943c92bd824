use super::*;
use crate::Config;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), Config::default()).expect("open");
    (dir, store)
}

#[test]
fn users_added_changed_and_removed_fold_back_from_the_log() {
    let (dir, store) = store();
    add_user(&store, "ada", "first", &["ops".into()]).expect("add ada");
    add_user(&store, "bob", "secret", &[]).expect("add bob");
    set_password(&store, "ada", "second").expect("change ada's password");
    remove_user(&store, "bob").expect("remove bob");
    store.close().expect("close");

    let store = Store::open(dir.path(), Config::default()).expect("reopen");
    let users = Users::load(&store).expect("load");
    assert_eq!(users.len(), 1);
    let ada = users.get("ada").expect("ada survives a reopen");
    assert_eq!(ada.groups, vec!["ops".to_string()]);
    assert!(ada.verify("second"));
    assert!(!ada.verify("first"), "the old password no longer works");
    assert!(users.get("bob").is_none());
}

#[test]
fn a_taken_or_malformed_name_and_an_empty_password_are_refused() {
    let (_dir, store) = store();
    add_user(&store, "ada", "pw", &[]).expect("add");
    for (name, password) in [
        ("ada", "pw"),
        ("", "pw"),
        ("a:b", "pw"),
        ("$x", "pw"),
        ("eve", ""),
    ] {
        assert!(
            matches!(
                add_user(&store, name, password, &[]),
                Err(Error::InvalidArgument(_))
            ),
            "{name:?}/{password:?} refused"
        );
    }
    assert!(matches!(
        set_password(&store, "nobody", "x"),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        remove_user(&store, "nobody"),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn bootstrap_creates_the_admin_once() {
    let (_dir, store) = store();
    assert!(bootstrap_admin(&store, "changeit").expect("first"));
    assert!(!bootstrap_admin(&store, "other").expect("second"));
    let users = Users::load(&store).expect("load");
    let admin = users.get(ADMIN_USER).expect("admin");
    assert!(admin.is_admin());
    assert!(admin.verify("changeit"));
}

#[test]
fn hashes_are_salted_argon2id() {
    let a = hash_password("pw").expect("hash");
    let b = hash_password("pw").expect("hash");
    assert!(a.starts_with("$argon2id$"), "{a}");
    assert_ne!(a, b, "each hash has its own salt");
}
