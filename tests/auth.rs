//! Authentication and stream ACLs through the native API: who may call at all, and which ACL
//! verb each call needs. Every refusal is checked for its code and its ErrorInfo.

mod common;

use std::sync::Arc;

use base64::Engine as _;
use common::server::{TestServer, assert_status, expect_err};
use statestore::server::ServerConfig;
use statestore::server::proto::event_store_client::EventStoreClient;
use statestore::server::proto::users_client::UsersClient;
use statestore::server::proto::{self, expected_revision};
use statestore::{Store, users};
use tokio_stream::StreamExt;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

#[derive(Clone)]
struct Credentials(Option<String>);

impl Interceptor for Credentials {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.parse().expect("header value"));
        }
        Ok(request)
    }
}

type Client = EventStoreClient<InterceptedService<Channel, Credentials>>;

struct Fixture {
    server: TestServer,
    _dir: tempfile::TempDir,
}

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

impl Fixture {
    /// A server whose store has `admin` ($admins), `ops` ($ops), `ada` and `bob` (no groups).
    async fn start() -> Fixture {
        let dir = common::tempdir();
        let store = Store::open(dir.path(), common::config()).expect("open");
        users::bootstrap_admin(&store, "changeit").expect("admin");
        users::add_user(&store, "ops", "ops-pw", &["$ops".into()]).expect("ops");
        users::add_user(&store, "ada", "ada-pw", &[]).expect("ada");
        users::add_user(&store, "bob", "bob-pw", &[]).expect("bob");
        let server = TestServer::serve(Arc::new(store), ServerConfig::default()).await;
        Fixture { server, _dir: dir }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(self.server.url())
            .expect("url")
            .connect()
            .await
            .expect("connect")
    }

    async fn client(&self, credentials: Option<String>) -> Client {
        EventStoreClient::with_interceptor(self.channel().await, Credentials(credentials))
    }

    async fn as_user(&self, user: &str, password: &str) -> Client {
        self.client(Some(basic(user, password))).await
    }
}

fn event(n: u64) -> proto::EventData {
    proto::EventData {
        id: common::id(n).as_bytes().to_vec().into(),
        event_type: "Happened".into(),
        content_type: proto::ContentType::Json as i32,
        data: format!("{{\"n\":{n}}}").into_bytes().into(),
        metadata: Default::default(),
    }
}

fn append_request(stream: &str, n: u64) -> proto::AppendRequest {
    proto::AppendRequest {
        stream: stream.into(),
        expected: Some(proto::ExpectedRevision {
            kind: Some(expected_revision::Kind::Any(proto::Empty {})),
        }),
        events: vec![event(n)],
        tracking: None,
    }
}

fn read_request(stream: &str) -> proto::ReadStreamRequest {
    proto::ReadStreamRequest {
        stream: stream.into(),
        max_count: 100,
        ..Default::default()
    }
}

async fn read(c: &mut Client, stream: &str) -> Result<Vec<proto::RecordedEvent>, Status> {
    let mut pages = c.read_stream(read_request(stream)).await?.into_inner();
    let mut events = Vec::new();
    while let Some(page) = pages.next().await {
        events.extend(page?.events);
    }
    Ok(events)
}

fn set_acl(stream: &str, acl: serde_json::Value) -> proto::SetStreamMetadataRequest {
    proto::SetStreamMetadataRequest {
        stream: stream.into(),
        expected: None,
        metadata: Some(proto::StreamMetadata {
            custom_json: serde_json::to_vec(&serde_json::json!({ "$acl": acl }))
                .expect("json")
                .into(),
            ..Default::default()
        }),
    }
}

#[track_caller]
fn assert_denied(status: &Status, principal: &str, access: &str, stream: &str) {
    assert_status(
        status,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
        &[
            ("principal", principal),
            ("access", access),
            ("stream", stream),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_or_with_bad_credentials_are_unauthenticated() {
    let f = Fixture::start().await;
    let mut anonymous = f.client(None).await;
    let s = expect_err(anonymous.append(append_request("order-1", 1)).await);
    assert_status(&s, Code::Unauthenticated, "UNAUTHENTICATED", &[]);
    let s = expect_err(read(&mut anonymous, "order-1").await);
    assert_status(&s, Code::Unauthenticated, "UNAUTHENTICATED", &[]);

    let mut wrong = f.as_user("ada", "not-her-password").await;
    let s = expect_err(wrong.append(append_request("order-1", 1)).await);
    assert_status(&s, Code::Unauthenticated, "UNAUTHENTICATED", &[]);
    let mut unknown = f.as_user("nobody", "x").await;
    let s = expect_err(unknown.append(append_request("order-1", 1)).await);
    assert_status(&s, Code::Unauthenticated, "UNAUTHENTICATED", &[]);
    let mut garbage = f.client(Some("Bearer not-a-token".into())).await;
    let s = expect_err(garbage.append(append_request("order-1", 1)).await);
    assert_status(&s, Code::Unauthenticated, "UNAUTHENTICATED", &[]);

    // Nothing was written by any of them.
    let mut admin = f.as_user("admin", "changeit").await;
    let s = expect_err(read(&mut admin, "order-1").await);
    assert_eq!(s.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_read_and_write_user_streams_by_default_but_not_system_streams() {
    let f = Fixture::start().await;
    let mut ada = f.as_user("ada", "ada-pw").await;
    let mut bob = f.as_user("bob", "bob-pw").await;
    ada.append(append_request("order-1", 1))
        .await
        .expect("ada appends");
    let events = read(&mut bob, "order-1").await.expect("bob reads");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].id, common::id(1).as_bytes().to_vec());

    // System streams are for admins.
    let s = expect_err(read(&mut ada, "$users").await);
    assert_denied(&s, "ada", "read", "$users");
    let s = expect_err(ada.append(append_request("$settings", 2)).await);
    assert_denied(&s, "ada", "write", "$settings");
    let mut admin = f.as_user("admin", "changeit").await;
    let users = read(&mut admin, "$users")
        .await
        .expect("admins read system streams");
    assert_eq!(users.len(), 4, "the four users added");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acl_verb_is_enforced() {
    let f = Fixture::start().await;
    let mut admin = f.as_user("admin", "changeit").await;
    let mut ada = f.as_user("ada", "ada-pw").await;
    let mut bob = f.as_user("bob", "bob-pw").await;
    admin
        .append(append_request("vault-1", 1))
        .await
        .expect("admin");
    // Only ada may read and write; only admins may delete and touch the metadata.
    admin
        .set_stream_metadata(set_acl(
            "vault-1",
            serde_json::json!({"$r": "ada", "$w": ["ada"], "$d": "$admins", "$mr": "$admins", "$mw": "$admins"}),
        ))
        .await
        .expect("admin sets the ACL");

    ada.append(append_request("vault-1", 2))
        .await
        .expect("ada writes");
    assert_eq!(read(&mut ada, "vault-1").await.expect("ada reads").len(), 2);

    let s = expect_err(read(&mut bob, "vault-1").await);
    assert_denied(&s, "bob", "read", "vault-1");
    let s = expect_err(
        bob.subscribe(proto::SubscribeRequest {
            target: Some(proto::subscribe_request::Target::Stream(
                proto::SubscribeStream {
                    stream: "vault-1".into(),
                    after_revision: None,
                },
            )),
        })
        .await,
    );
    assert_denied(&s, "bob", "read", "vault-1");
    let s = expect_err(
        bob.get_stream(proto::GetStreamRequest {
            stream: "vault-1".into(),
        })
        .await,
    );
    assert_denied(&s, "bob", "read", "vault-1");
    let s = expect_err(bob.append(append_request("vault-1", 3)).await);
    assert_denied(&s, "bob", "write", "vault-1");
    let s = expect_err(
        ada.delete_stream(proto::DeleteStreamRequest {
            stream: "vault-1".into(),
            expected: None,
        })
        .await,
    );
    assert_denied(&s, "ada", "delete", "vault-1");
    let s = expect_err(
        ada.tombstone_stream(proto::TombstoneStreamRequest {
            stream: "vault-1".into(),
            expected: None,
        })
        .await,
    );
    assert_denied(&s, "ada", "delete", "vault-1");
    let s = expect_err(
        ada.get_stream_metadata(proto::GetStreamMetadataRequest {
            stream: "vault-1".into(),
            ..Default::default()
        })
        .await,
    );
    assert_denied(&s, "ada", "metadata read", "vault-1");
    let s = expect_err(
        ada.set_stream_metadata(set_acl("vault-1", serde_json::json!({"$r": "$all"})))
            .await,
    );
    assert_denied(&s, "ada", "metadata write", "vault-1");

    // Nothing a refused call asked for happened: two events, the ACL as set.
    assert_eq!(read(&mut admin, "vault-1").await.expect("admin").len(), 2);
    let meta = admin
        .get_stream_metadata(proto::GetStreamMetadataRequest {
            stream: "vault-1".into(),
            ..Default::default()
        })
        .await
        .expect("admin reads metadata")
        .into_inner();
    let custom = meta
        .current
        .expect("metadata")
        .metadata
        .expect("body")
        .custom_json;
    let acl: serde_json::Value = serde_json::from_slice(&custom).expect("json");
    assert_eq!(acl["$acl"]["$r"], "ada");

    // Admins delete.
    admin
        .delete_stream(proto::DeleteStreamRequest {
            stream: "vault-1".into(),
            expected: None,
        })
        .await
        .expect("admin deletes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_acl_is_refused() {
    let f = Fixture::start().await;
    let mut admin = f.as_user("admin", "changeit").await;
    admin
        .append(append_request("s-1", 1))
        .await
        .expect("append");
    let s = expect_err(
        admin
            .set_stream_metadata(set_acl("s-1", serde_json::json!({"$r": 7})))
            .await,
    );
    assert_status(&s, Code::InvalidArgument, "INVALID_ARGUMENT", &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_the_whole_log_needs_admins_or_ops() {
    let f = Fixture::start().await;
    let mut ada = f.as_user("ada", "ada-pw").await;
    ada.append(append_request("order-1", 1))
        .await
        .expect("append");
    let all = || proto::ReadAllRequest {
        max_count: 10,
        ..Default::default()
    };
    let s = expect_err(ada.read_all(all()).await);
    assert_denied(&s, "ada", "read", "$all");
    let s = expect_err(
        ada.subscribe(proto::SubscribeRequest {
            target: Some(proto::subscribe_request::Target::All(
                proto::SubscribeAll::default(),
            )),
        })
        .await,
    );
    assert_denied(&s, "ada", "read", "$all");

    for (user, password) in [("ops", "ops-pw"), ("admin", "changeit")] {
        let mut c = f.as_user(user, password).await;
        let mut pages = c.read_all(all()).await.expect("read all").into_inner();
        let mut n = 0;
        while let Some(page) = pages.next().await {
            n += page
                .expect("page")
                .events
                .iter()
                .filter(|e| e.stream == "order-1")
                .count();
        }
        assert_eq!(n, 1, "{user} reads the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_info_shows_the_data_directory_to_admins_only() {
    let f = Fixture::start().await;
    let mut ada = f.as_user("ada", "ada-pw").await;
    let mut admin = f.as_user("admin", "changeit").await;
    let info = ada
        .server_info(proto::ServerInfoRequest {})
        .await
        .expect("users see server info")
        .into_inner();
    assert!(
        info.data_dir.is_empty(),
        "hidden from users: {}",
        info.data_dir
    );
    assert!(info.authentication);
    let info = admin
        .server_info(proto::ServerInfoRequest {})
        .await
        .expect("admin")
        .into_inner();
    assert!(!info.data_dir.is_empty());
    let s = expect_err(
        f.client(None)
            .await
            .server_info(proto::ServerInfoRequest {})
            .await,
    );
    assert_status(&s, Code::Unauthenticated, "UNAUTHENTICATED", &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_manage_users_and_changes_apply_at_once() {
    let f = Fixture::start().await;
    let users_client = |credentials: String| {
        let f = &f;
        async move { UsersClient::with_interceptor(f.channel().await, Credentials(Some(credentials))) }
    };
    let mut ada_users = users_client(basic("ada", "ada-pw")).await;
    let s = expect_err(ada_users.list_users(proto::ListUsersRequest {}).await);
    assert_denied(&s, "ada", "administer", "$users");
    let s = expect_err(
        ada_users
            .add_user(proto::AddUserRequest {
                name: "mallory".into(),
                password: "x".into(),
                groups: vec!["$admins".into()],
            })
            .await,
    );
    assert_denied(&s, "ada", "administer", "$users");

    let mut admin = users_client(basic("admin", "changeit")).await;
    admin
        .add_user(proto::AddUserRequest {
            name: "cy".into(),
            password: "cy-pw".into(),
            groups: vec![],
        })
        .await
        .expect("add cy");
    let mut cy = f.as_user("cy", "cy-pw").await;
    cy.append(append_request("order-9", 1))
        .await
        .expect("cy can log in at once");
    admin
        .change_password(proto::ChangePasswordRequest {
            name: "cy".into(),
            password: "new-pw".into(),
        })
        .await
        .expect("change");
    let s = expect_err(cy.append(append_request("order-9", 2)).await);
    assert_status(&s, Code::Unauthenticated, "UNAUTHENTICATED", &[]);
    let mut cy = f.as_user("cy", "new-pw").await;
    cy.append(append_request("order-9", 2))
        .await
        .expect("new password");
    admin
        .remove_user(proto::RemoveUserRequest { name: "cy".into() })
        .await
        .expect("remove");
    let s = expect_err(cy.append(append_request("order-9", 3)).await);
    assert_status(&s, Code::Unauthenticated, "UNAUTHENTICATED", &[]);
    let names: Vec<String> = admin
        .list_users(proto::ListUsersRequest {})
        .await
        .expect("list")
        .into_inner()
        .users
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["ada", "admin", "bob", "ops"]);
    let s = expect_err(
        admin
            .add_user(proto::AddUserRequest {
                name: "ada".into(),
                password: "again".into(),
                groups: vec![],
            })
            .await,
    );
    assert_eq!(s.code(), Code::InvalidArgument, "a taken name: {s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_logins_from_one_address_are_throttled() {
    let f = Fixture::start().await;
    for _ in 0..statestore::service::auth::FAILED_LOGINS_MAX {
        let mut c = f.as_user("ada", "wrong").await;
        let s = expect_err(c.append(append_request("order-1", 1)).await);
        assert_eq!(s.code(), Code::Unauthenticated);
    }
    // Now even the right password is refused from this address for the rest of the window.
    let mut c = f.as_user("ada", "ada-pw").await;
    let s = expect_err(c.append(append_request("order-1", 1)).await);
    assert_status(&s, Code::Unauthenticated, "UNAUTHENTICATED", &[]);
    assert!(
        s.message().contains("too many failed logins"),
        "{}",
        s.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_without_users_stays_open() {
    let dir = common::tempdir();
    let server = TestServer::start(dir.path(), common::config(), ServerConfig::default()).await;
    let channel = Channel::from_shared(server.url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut c = EventStoreClient::with_interceptor(channel, Credentials(None));
    c.append(append_request("order-1", 1))
        .await
        .expect("open store");
    // Without authentication, nobody is recorded.
    let events = read(&mut c, "order-1").await.expect("read");
    assert_eq!(events[0].principal, "");
    assert_eq!(
        read(&mut c, "$users").await.map(|e| e.len()).unwrap_or(0),
        0
    );
    let info = c
        .server_info(proto::ServerInfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert!(!info.authentication);
    assert!(!info.data_dir.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_commit_records_who_made_it() {
    let f = Fixture::start().await;
    let mut ada = f.as_user("ada", "ada-pw").await;
    let mut bob = f.as_user("bob", "bob-pw").await;
    ada.append(append_request("order-1", 1)).await.expect("ada");
    bob.append(append_request("order-1", 2)).await.expect("bob");
    let events = read(&mut ada, "order-1").await.expect("read");
    let who: Vec<&str> = events.iter().map(|e| e.principal.as_str()).collect();
    assert_eq!(who, ["ada", "bob"]);

    // Lifecycle changes record their principal too.
    let mut admin = f.as_user("admin", "changeit").await;
    admin
        .delete_stream(proto::DeleteStreamRequest {
            stream: "order-1".into(),
            expected: None,
        })
        .await
        .expect("delete");
    let store = &f.server.store;
    let records = store
        .read_stream(
            "$$order-1",
            statestore::Revision(0),
            statestore::Direction::Forwards,
            10,
        )
        .expect("metadata stream");
    assert_eq!(records.last().and_then(|e| e.principal()), Some("admin"));

    // The engine's own view matches, and a revival by append is the appender's.
    bob.append(append_request("order-1", 3))
        .await
        .expect("revive");
    let records = store
        .read_stream(
            "$$order-1",
            statestore::Revision(0),
            statestore::Direction::Forwards,
            10,
        )
        .expect("metadata stream");
    assert_eq!(records.last().and_then(|e| e.principal()), Some("bob"));
    let events = read(&mut ada, "order-1").await.expect("read");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].principal, "bob");
}

/// A JWKS with one P-256 key, and a function signing claims with it.
fn token_issuer() -> (String, impl Fn(serde_json::Value) -> String) {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    let pair = rcgen::KeyPair::generate().expect("key pair");
    let raw = pair.public_key_raw();
    let jwks = serde_json::json!({"keys": [{
        "kty": "EC", "crv": "P-256", "alg": "ES256", "kid": "k1",
        "x": B64.encode(&raw[1..33]), "y": B64.encode(&raw[33..]),
    }]});
    let key = jsonwebtoken::EncodingKey::from_ec_der(&pair.serialize_der());
    let sign = move |claims: serde_json::Value| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(&header, &claims, &key).expect("sign")
    };
    (jwks.to_string(), sign)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_from_the_jwks_authenticate_beside_users() {
    let (jwks, sign) = token_issuer();
    let dir = common::tempdir();
    let store = Store::open(dir.path(), common::config()).expect("open");
    users::add_user(&store, "ada", "ada-pw", &[]).expect("ada");
    let config = ServerConfig {
        service: statestore::service::ServiceConfig {
            jwt: Some(statestore::service::jwt::JwtConfig {
                jwks,
                issuer: Some("https://id.example".into()),
                audience: Some("statestore".into()),
                roles_claim: "roles".into(),
            }),
            ..Default::default()
        },
        ..ServerConfig::default()
    };
    let server = TestServer::serve(Arc::new(store), config).await;
    let f = Fixture { server, _dir: dir };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = |sub: &str, exp: u64, roles: &[&str]| {
        serde_json::json!({"sub": sub, "exp": exp, "iss": "https://id.example",
                           "aud": "statestore", "roles": roles})
    };
    let bearer = |claims| Some(format!("Bearer {}", sign(claims)));

    let mut svc = f
        .client(bearer(claims("svc-billing", now + 600, &[])))
        .await;
    svc.append(append_request("order-1", 1))
        .await
        .expect("append");
    let events = read(&mut svc, "order-1").await.expect("read");
    assert_eq!(events[0].principal, "svc-billing");
    let s = expect_err(read(&mut svc, "$users").await);
    assert_denied(&s, "svc-billing", "read", "$users");

    // Roles are groups: $ops reads the whole log.
    let mut ops = f
        .client(bearer(claims("svc-audit", now + 600, &["$ops"])))
        .await;
    let mut all = ops
        .read_all(proto::ReadAllRequest {
            max_count: 10,
            ..Default::default()
        })
        .await
        .expect("ops reads $all")
        .into_inner();
    while let Some(page) = all.next().await {
        page.expect("page");
    }

    // Expired or foreign tokens are UNAUTHENTICATED; Basic credentials still work.
    let mut expired = f
        .client(bearer(claims("svc-billing", now - 3600, &[])))
        .await;
    let s = expect_err(read(&mut expired, "order-1").await);
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    assert!(s.message().contains("ExpiredSignature"), "{}", s.message());
    let (_, other) = token_issuer();
    let mut foreign = f
        .client(Some(format!(
            "Bearer {}",
            other(claims("x", now + 600, &[]))
        )))
        .await;
    let s = expect_err(read(&mut foreign, "order-1").await);
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    let mut ada = f.as_user("ada", "ada-pw").await;
    assert_eq!(read(&mut ada, "order-1").await.expect("ada reads").len(), 1);
}
