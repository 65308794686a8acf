//! The spineledger service: gRPC handlers, the server, and the subcommands of the
//! `spineledger` binary. Handlers are thin: validate at the edge (`spineledger-api`),
//! decide in the domain (`spineledger-domain`), append in the store (`spineledger-store`).

pub mod clinical;
pub mod clock;
pub mod database;
pub mod reads;
pub mod server;
pub mod telemetry;

use std::sync::Arc;

use spineledger_domain::Policy;
use spineledger_store::EventStore;

pub use clock::{Clock, FixedClock, SystemClock};
pub use reads::ReadSettings;

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct App {
    pub store: EventStore,
    pub policy: Policy,
    pub clock: Arc<dyn Clock>,
    pub reads: ReadSettings,
}

impl App {
    /// The production wiring: default clinical policy, the system clock.
    pub fn new(store: EventStore) -> Self {
        Self {
            store,
            policy: Policy::default(),
            clock: Arc::new(SystemClock),
            reads: ReadSettings::default(),
        }
    }
}
