//! An in-process gRPC server on 127.0.0.1:0 for the API tests, with a connected client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use statestore::server::proto::event_store_client::EventStoreClient;
use statestore::server::{self, ServerConfig};
use statestore::{Config, Store};
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

pub struct TestServer {
    pub addr: SocketAddr,
    pub store: Arc<Store>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Opens a store in `dir` and serves it. Call from inside a multi-threaded tokio runtime.
    pub async fn start(dir: &Path, config: Config, server_config: ServerConfig) -> TestServer {
        let store = Arc::new(Store::open(dir, config).expect("open store"));
        TestServer::serve(store, server_config).await
    }

    pub async fn serve(store: Arc<Store>, server_config: ServerConfig) -> TestServer {
        let listener = server::bind("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn({
            let store = Arc::clone(&store);
            async move {
                server::serve(
                    store,
                    server_config,
                    listener,
                    async {
                        let _ = stopped.await;
                    },
                    Duration::from_secs(2),
                )
                .await
                .expect("server runs");
            }
        });
        TestServer {
            addr,
            store,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A new client on its own connection.
    pub async fn client(&self) -> EventStoreClient<Channel> {
        EventStoreClient::connect(self.url())
            .await
            .expect("connect to the test server")
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    /// Shuts the server down gracefully and waits for it to return; the store stays open.
    pub async fn stop(mut self) -> Arc<Store> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
        Arc::clone(&self.store)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Asserts the status code, and the `ErrorInfo` detail: reason, domain `statestore` and exactly
/// this metadata.
#[track_caller]
pub fn assert_status(status: &Status, code: Code, reason: &str, metadata: &[(&str, &str)]) {
    assert_eq!(status.code(), code, "code of {status:?}");
    let details = status.get_error_details();
    let Some(info) = details.error_info() else {
        panic!("no ErrorInfo detail in {status:?}");
    };
    assert_eq!(info.reason, reason, "reason of {status:?}");
    assert_eq!(info.domain, "statestore", "domain of {status:?}");
    let expected: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(info.metadata, expected, "metadata of {status:?}");
}

#[track_caller]
pub fn expect_err<T: std::fmt::Debug>(r: Result<T, Status>) -> Status {
    match r {
        Ok(v) => panic!("expected an error status, got {v:?}"),
        Err(s) => s,
    }
}
