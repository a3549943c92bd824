//! TLS with users, through the official KurrentDB Rust client
//! (`esdb://admin:changeit@localhost:PORT?tls=true&tlsCAFile=...`, the server's self-signed
//! certificate as the root), and the KurrentDB adapter's answers to refused calls: the
//! `exception` trailers its clients read.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::server::TestServer;
use kurrentdb::{Client, ClientSettings, EventData, ReadStreamOptions, StreamPosition};
use statestore::server::kurrent::proto::event_store::client::streams as wire;
use statestore::server::{ServerConfig, TlsConfig};
use statestore::{Store, users};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic_prost::ProstCodec;

const STEP: Duration = Duration::from_secs(20);

struct Fixture {
    server: TestServer,
    ca_file: std::path::PathBuf,
    ca_pem: String,
    _dir: tempfile::TempDir,
}

/// A TLS server with a self-signed certificate for `localhost`, `admin` (password
/// `changeit`) and `ada`.
async fn start() -> Fixture {
    let dir = common::tempdir();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("self-signed certificate");
    let cert_pem = certified.cert.pem();
    let key_pem = certified.signing_key.serialize_pem();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &cert_pem).expect("write the CA file");
    let data = dir.path().join("data");
    let store = Store::open(&data, common::config()).expect("open");
    users::bootstrap_admin(&store, "changeit").expect("admin");
    users::add_user(&store, "ada", "ada-pw", &[]).expect("ada");
    let config = ServerConfig {
        tls: Some(TlsConfig {
            cert_pem: cert_pem.clone().into_bytes(),
            key_pem: key_pem.into_bytes(),
            client_ca_pem: None,
        }),
        ..ServerConfig::default()
    };
    let server = TestServer::serve(Arc::new(store), config).await;
    Fixture {
        server,
        ca_file,
        ca_pem: cert_pem,
        _dir: dir,
    }
}

impl Fixture {
    fn kurrent(&self, user: &str, password: &str) -> Client {
        let url = format!(
            "esdb://{user}:{password}@localhost:{}?tls=true&tlsVerifyCert=true&tlsCAFile={}",
            self.server.addr.port(),
            self.ca_file.display()
        );
        let settings: ClientSettings = url.parse().expect("connection string");
        Client::new(settings).expect("client")
    }

    /// A raw gRPC channel over TLS, for calls whose trailers the test reads.
    async fn channel(&self) -> Channel {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .domain_name("localhost");
        Channel::from_shared(format!("https://localhost:{}", self.server.addr.port()))
            .expect("url")
            .tls_config(tls)
            .expect("tls config")
            .connect()
            .await
            .expect("connect over TLS")
    }
}

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kurrentdb_client_appends_and_reads_over_tls_with_credentials() {
    let f = start().await;
    let client = f.kurrent("admin", "changeit");
    let events: Vec<EventData> = (0..3)
        .map(|n| {
            EventData::json("Happened", &serde_json::json!({ "n": n }))
                .expect("json")
                .id(common::id(n))
        })
        .collect();
    tokio::time::timeout(
        STEP,
        client.append_to_stream("order-1", &Default::default(), events),
    )
    .await
    .expect("in time")
    .expect("append over TLS");
    let mut read = tokio::time::timeout(
        STEP,
        client.read_stream(
            "order-1",
            &ReadStreamOptions::default().position(StreamPosition::Start),
        ),
    )
    .await
    .expect("in time")
    .expect("read");
    let mut ids = Vec::new();
    while let Some(e) = read.next().await.expect("next") {
        let e = e.get_original_event();
        // Who appended it comes back in the system metadata, beside type and content-type.
        assert_eq!(
            e.metadata.get("$principal").map(String::as_str),
            Some("admin")
        );
        ids.push(e.id);
    }
    assert_eq!(ids, (0..3).map(common::id).collect::<Vec<_>>());

    // Bad credentials: refused, nothing written.
    let wrong = f.kurrent("admin", "wrong");
    let refused = tokio::time::timeout(
        STEP,
        wrong.append_to_stream(
            "order-1",
            &Default::default(),
            vec![EventData::json("Nope", &serde_json::json!({})).expect("json")],
        ),
    )
    .await
    .expect("in time");
    assert!(
        matches!(refused, Err(kurrentdb::Error::AccessDenied)),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_clients_cannot_talk_to_a_tls_server() {
    let f = start().await;
    let plain = Channel::from_shared(f.server.url())
        .expect("url")
        .connect()
        .await;
    // The connection may open (TCP) but no gRPC call succeeds over it.
    if let Ok(channel) = plain {
        let mut grpc = tonic::client::Grpc::new(channel);
        let ready = tokio::time::timeout(STEP, grpc.ready()).await;
        if let Ok(Ok(())) = ready {
            let path = http::uri::PathAndQuery::from_static("/statestore.v1.EventStore/ServerInfo");
            let call = grpc
                .unary::<statestore::server::proto::ServerInfoRequest, statestore::server::proto::ServerInfoResponse, _>(
                    tonic::Request::new(statestore::server::proto::ServerInfoRequest {}),
                    path,
                    ProstCodec::default(),
                );
            let answer = tokio::time::timeout(STEP, call)
                .await
                .expect("answered or failed in time");
            assert!(answer.is_err(), "a plaintext call was served: {answer:?}");
        }
    }
}

/// A KurrentDB `Delete` as the clients send it, with `authorization` when given.
async fn kurrent_delete(
    channel: Channel,
    stream: &str,
    authorization: Option<String>,
) -> Result<wire::DeleteResp, tonic::Status> {
    use statestore::server::kurrent::proto::event_store::client::StreamIdentifier;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let mut request = tonic::Request::new(wire::DeleteReq {
        options: Some(wire::delete_req::Options {
            stream_identifier: Some(StreamIdentifier {
                stream_name: stream.as_bytes().to_vec().into(),
            }),
            expected_stream_revision: Some(wire::delete_req::options::ExpectedStreamRevision::Any(
                Default::default(),
            )),
        }),
    });
    if let Some(a) = authorization {
        request
            .metadata_mut()
            .insert("authorization", a.parse().expect("header"));
    }
    let path = http::uri::PathAndQuery::from_static("/event_store.client.streams.Streams/Delete");
    grpc.unary(request, path, ProstCodec::default())
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kurrentdb_adapter_answers_access_denied_and_not_authenticated() {
    let f = start().await;
    let admin = f.kurrent("admin", "changeit");
    admin
        .append_to_stream(
            "$secret",
            &Default::default(),
            vec![EventData::json("Happened", &serde_json::json!({})).expect("json")],
        )
        .await
        .expect("admins write system streams");

    let s = kurrent_delete(f.channel().await, "$secret", Some(basic("ada", "ada-pw")))
        .await
        .expect_err("ada may not delete a system stream");
    assert_eq!(s.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        s.metadata().get("exception").and_then(|v| v.to_str().ok()),
        Some("access-denied")
    );
    let s = kurrent_delete(f.channel().await, "$secret", None)
        .await
        .expect_err("no credentials");
    assert_eq!(s.code(), tonic::Code::Unauthenticated);
    assert_eq!(
        s.metadata().get("exception").and_then(|v| v.to_str().ok()),
        Some("not-authenticated")
    );
    let s = kurrent_delete(f.channel().await, "$secret", Some(basic("ada", "wrong")))
        .await
        .expect_err("bad credentials");
    assert_eq!(s.code(), tonic::Code::Unauthenticated);

    // The stream is still there.
    let mut read = admin
        .read_stream("$secret", &ReadStreamOptions::default())
        .await
        .expect("read");
    assert!(read.next().await.expect("next").is_some());
}
