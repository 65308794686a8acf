//! The spineledger service: gRPC handlers and the server the `spineledger` binary runs. Handlers are thin: validate at the edge (`spineledger-api`),
//! decide in the domain (`spineledger-domain`), append in the store (`spineledger-store`).

#![warn(missing_docs)]

pub mod access;
pub mod audit;
pub mod auth;
pub mod clinical;
pub mod clock;
pub mod database;
pub mod pool_metrics;
pub mod reads;
pub mod rpc_metrics;
pub mod server;
pub mod shed;
pub mod telemetry;
pub mod verify;

use std::sync::Arc;

use spineledger_domain::Policy;
use spineledger_store::EventStore;
use spineledger_verifier::checkpoint::{CheckpointSigner, VerifierKey};

pub use clock::{Clock, FixedClock, SystemClock};
pub use reads::ReadSettings;

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct App {
    /// The event store.
    pub store: EventStore,
    /// The clinical policy the rules apply (force ceiling).
    pub policy: Policy,
    /// Where "now" comes from.
    pub clock: Arc<dyn Clock>,
    /// Settings of the query side.
    pub reads: ReadSettings,
    /// Signs checkpoints of the clinics' logs on demand (`None`: this server holds no
    /// key; the notary of another process signs).
    pub checkpoints: Option<Arc<CheckpointSigner>>,
    /// The key stored checkpoints are checked against before they are shown or relied on:
    /// the signer's, or, on a server that does not sign, the notary's public key.
    pub checkpoint_verifier: Option<VerifierKey>,
}

impl App {
    /// The production wiring: default clinical policy, the system clock.
    pub fn new(store: EventStore) -> Self {
        Self {
            store,
            policy: Policy::default(),
            clock: Arc::new(SystemClock),
            reads: ReadSettings::default(),
            checkpoints: None,
            checkpoint_verifier: None,
        }
    }
}
