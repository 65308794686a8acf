//! The harness of the end-to-end tests (in `tests/tests/`): a fresh database, the real
//! server in-process on an ephemeral port, a gRPC channel to it.

pub mod requests;

use std::net::SocketAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use spineledger::{App, FixedClock};
use spineledger_testkit::TestDatabase;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// A running server on its own database. Dropping it stops the server and drops the
/// database.
#[derive(Debug)]
pub struct Harness {
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), String>>>,
    clock: Arc<FixedClock>,
    database: TestDatabase,
}

impl Harness {
    /// Starts a server whose clock reads the real time at start (tests move it).
    pub async fn start() -> Self {
        Self::start_at(Utc::now()).await
    }

    /// Starts a server whose clock reads `now`.
    pub async fn start_at(now: DateTime<Utc>) -> Self {
        let database = TestDatabase::create().await;
        let clock = Arc::new(FixedClock::new(now));
        let mut app = App::new(database.store().clone());
        app.clock = clock.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an ephemeral port");
        let address = listener.local_addr().expect("local address");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            spineledger::server::run(listener, app, async {
                let _ = stopped.await;
            })
            .await
            .map_err(|error| format!("{error:#}"))
        });
        Self {
            address,
            stop: Some(stop),
            server: Some(server),
            clock,
            database,
        }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn database(&self) -> &TestDatabase {
        &self.database
    }

    pub fn clock(&self) -> &FixedClock {
        &self.clock
    }

    /// A channel to the server, retrying briefly while it starts.
    pub async fn channel(&self) -> Channel {
        let endpoint = Channel::from_shared(format!("http://{}", self.address)).expect("endpoint");
        let mut last_error = None;
        for _ in 0..100 {
            match endpoint.connect().await {
                Ok(channel) => return channel,
                Err(error) => last_error = Some(error),
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("cannot connect to the test server: {last_error:?}");
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server ran without error");
        }
    }
}
