//! The harness of the end-to-end tests (in `tests/tests/`): a fresh database, the real
//! server in-process on an ephemeral port, a gRPC channel to it.

pub mod oracle;
pub mod raw;
pub mod requests;
pub mod tampering;

pub use raw::RawCodec;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use spineledger::{App, FixedClock};
use spineledger_projections::{Projector, ProjectorConfig};
use spineledger_testkit::TestDatabase;
use spineledger_verifier::checkpoint::CheckpointSigner;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use uuid::Uuid;

use spineledger_auth::{DevKey, Role, TokenRequest, Verifier};

/// How long the harness's tokens are valid.
const TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// A channel whose calls carry the harness's integration token (see [`Harness::channel`]).
pub type AuthChannel = InterceptedService<Channel, HarnessToken>;

/// Signs, for every call, an integration token granting the clinics granted so far in
/// this harness ([`Harness::script`], [`Harness::clinic`], [`Harness::grant`]); with none
/// granted the call goes without a token.
#[derive(Clone, Debug)]
pub struct HarnessToken {
    key: Arc<DevKey>,
    granted: Arc<Mutex<BTreeSet<Uuid>>>,
}

impl Interceptor for HarnessToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let clinics: Vec<Uuid> = self
            .granted
            .lock()
            .expect("grants")
            .iter()
            .copied()
            .collect();
        if !clinics.is_empty() {
            let token = self
                .key
                .issue(&TokenRequest::for_clinics(
                    Role::Integration,
                    &clinics,
                    "e2e-frontdesk",
                    TOKEN_TTL,
                ))
                .expect("sign");
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("header"),
            );
        }
        Ok(request)
    }
}

/// A running server on its own database. Dropping it stops the server and drops the
/// database.
#[derive(Debug)]
pub struct Harness {
    checkpoints: Arc<CheckpointSigner>,
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), String>>>,
    projector: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
    clock: Arc<FixedClock>,
    key: Arc<DevKey>,
    granted: Arc<Mutex<BTreeSet<Uuid>>>,
    database: TestDatabase,
}

impl Harness {
    /// Starts a server and a projector; the clock reads the real time at start.
    pub async fn start() -> Self {
        let mut harness = Self::start_at(Utc::now()).await;
        harness.start_projector();
        harness
    }

    /// Starts a server without projectors whose clock reads `now`.
    pub async fn start_at(now: DateTime<Utc>) -> Self {
        // Generous: other tests' open transactions (xids are cluster-wide) can hold every
        // reader back for a while on a loaded machine.
        Self::start_with(now, std::time::Duration::from_secs(30)).await
    }

    /// Starts a server without projectors whose read-your-writes wait is `catch_up`.
    pub async fn start_with(now: DateTime<Utc>, catch_up: std::time::Duration) -> Self {
        Self::start_with_settings(now, catch_up, spineledger::server::ServeSettings::default())
            .await
    }

    /// Starts a server without projectors with the given serve settings (their projector
    /// setting is ignored: tests start the projector themselves).
    pub async fn start_with_settings(
        now: DateTime<Utc>,
        catch_up: std::time::Duration,
        settings: spineledger::server::ServeSettings,
    ) -> Self {
        let database = TestDatabase::create().await;
        let clock = Arc::new(FixedClock::new(now));
        let mut app = App::new(database.store().clone());
        app.clock = clock.clone();
        app.reads.catch_up_timeout = catch_up;
        let checkpoints = Arc::new(
            CheckpointSigner::new(
                "e2e-checkpoints",
                ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>()),
            )
            .expect("a checkpoint signer"),
        );
        app.checkpoints = Some(Arc::clone(&checkpoints));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an ephemeral port");
        let address = listener.local_addr().expect("local address");
        let (stop, stopped) = oneshot::channel::<()>();
        // The service as `spineledger serve` runs it, except that tests start the
        // projector themselves (when, and with which faults, is what they test).
        // The server trusts the harness's development key (and nothing else).
        let key = Arc::new(DevKey::generate().expect("a key"));
        let verifier = Verifier::new(spineledger_auth::dev::DEFAULT_AUDIENCE)
            .trust(key.trusted_issuer().expect("issuer"))
            .expect("one issuer");
        let settings = spineledger::server::ServeSettings {
            projector: None,
            verifier: Arc::new(verifier),
            ..settings
        };
        let config = database.projector_config();
        let server = tokio::spawn(async move {
            spineledger::server::serve(listener, app, &config, settings, async {
                let _ = stopped.await;
            })
            .await
            .map_err(|error| format!("{error:#}"))
        });
        Self {
            address,
            stop: Some(stop),
            server: Some(server),
            projector: None,
            clock,
            key,
            granted: Arc::default(),
            checkpoints,
            database,
        }
    }

    /// The key the server signs checkpoints with.
    pub fn checkpoint_signer(&self) -> &CheckpointSigner {
        &self.checkpoints
    }

    /// The development key the server trusts, to sign tokens of every kind.
    pub fn key(&self) -> &DevKey {
        &self.key
    }

    /// A bearer token of `role` for `clinics`, signed with the key the server trusts.
    pub fn bearer(&self, role: Role, clinics: &[Uuid]) -> spineledger_api::client::BearerToken {
        let token = self
            .key
            .issue(&TokenRequest::for_clinics(
                role,
                clinics,
                format!("e2e-{role}"),
                TOKEN_TTL,
            ))
            .expect("sign");
        spineledger_api::client::BearerToken::new(&token).expect("a header")
    }

    /// A new episode at a new clinic, which the harness's token grants from now on.
    pub fn script(&self) -> requests::EpisodeScript {
        let script = requests::EpisodeScript::new();
        self.grant(script.clinic_id);
        script
    }

    /// A new clinic, granted by the harness's token from now on.
    pub fn clinic(&self) -> Uuid {
        let clinic = Uuid::new_v4();
        self.grant(clinic);
        clinic
    }

    /// Grants `clinic` to the harness's token.
    pub fn grant(&self, clinic: Uuid) {
        self.granted.lock().expect("grants").insert(clinic);
    }

    /// Projector settings for tests: quick polls and a short lease.
    pub fn projector_config() -> ProjectorConfig {
        ProjectorConfig {
            poll_interval: std::time::Duration::from_millis(50),
            lease_ttl: std::time::Duration::from_secs(2),
            ..ProjectorConfig::default()
        }
    }

    /// A projector on this harness's database (not started), logging in as the projector
    /// role as `spineledger projector` does.
    pub fn projector(&self) -> Projector {
        Projector::new(
            self.database.projector_pool().clone(),
            self.database.projector_config(),
            Self::projector_config(),
        )
    }

    /// Starts the in-process projector (as `serve` does).
    pub fn start_projector(&mut self) {
        let (stop, stopped) = oneshot::channel::<()>();
        let projector = self.projector();
        let task = tokio::spawn(async move {
            let result = projector
                .run(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(error) = result {
                panic!("projector failed: {error:?}");
            }
        });
        self.projector = Some((stop, task));
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

    /// Every stored event of `script`'s episode, in stream order.
    pub async fn episode_events(
        &self,
        script: &requests::EpisodeScript,
    ) -> Vec<spineledger_store::RecordedEvent> {
        self.database
            .store()
            .read_whole_stream(&spineledger_store::StreamKey::new(
                script.clinic_id,
                format!("episode-{}", script.episode_id),
            ))
            .await
            .expect("read the episode stream")
    }

    /// The outcome facts of `script`'s episode, as an analyst's SQL (here with the
    /// owner's view of every clinic) reads them, once the outcome projection has
    /// projected the episode's last event (waited for as a client would: a statistics
    /// read with `min_position`).
    pub async fn outcome_facts(&self, script: &requests::EpisodeScript) -> serde_json::Value {
        use spineledger_api::v1::outcome_statistics_service_client::OutcomeStatisticsServiceClient;
        let last = self
            .episode_events(script)
            .await
            .last()
            .map(|event| event.cursor.position);
        OutcomeStatisticsServiceClient::new(self.channel().await)
            .get_outcome_statistics(spineledger_api::v1::GetOutcomeStatisticsRequest {
                clinic_ids: vec![script.clinic_id.to_string()],
                min_position: last,
                ..Default::default()
            })
            .await
            .expect("the outcome projection reaches the episode's last event");
        let client = self.database.owner_client().await;
        client
            .query_one(
                "SELECT facts FROM outcome_episodes WHERE clinic_id = $1 AND episode_id = $2",
                &[&script.clinic_id, &script.episode_id],
            )
            .await
            .expect("facts")
            .try_get(0)
            .expect("facts column")
    }

    /// A channel to the server whose calls carry the harness's integration token.
    pub async fn channel(&self) -> AuthChannel {
        InterceptedService::new(
            self.plain_channel().await,
            HarnessToken {
                key: Arc::clone(&self.key),
                granted: Arc::clone(&self.granted),
            },
        )
    }

    /// A channel to the server without credentials, retrying briefly while it starts.
    pub async fn plain_channel(&self) -> Channel {
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

    /// Stops the server (and projector) gracefully and waits for them.
    pub async fn stop(mut self) {
        if let Some((stop, task)) = self.projector.take() {
            let _ = stop.send(());
            task.await.expect("projector task");
        }
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
