//! How a per-episode read model is kept: a pure function of the episode's chart (its facts
//! in clinical order, corrections applied; [`spineledger_domain::chart`]).
//!
//! [`derive`] folds the whole chart from an empty view. [`extend`] is the fast path the
//! projector takes for the common case — the next event is not a correction, sorts after
//! every fact folded so far, and no correction of the episode is waiting for an event not
//! yet seen — and gives exactly what [`derive`] would give, because the fold then sees the
//! same facts in the same order, and no correction can name the new event (a correction
//! is only accepted for an event already in the stream). Anything else (a late entry, a
//! correction) must be derived again from the whole chart; [`extend`] says so by
//! returning false.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use spineledger_domain::{Chart, ChartCorrection, ChartEntry, EpisodeEvent};
use uuid::Uuid;

/// How far a view's fold has got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoldMark {
    /// The clinical sort key (occurred at, stream version) of the last fact folded.
    pub horizon: Option<(DateTime<Utc>, u64)>,
    /// Corrections that name an event not (yet) folded, or that do not fit it.
    #[serde(default)]
    pub unapplied: u32,
}

impl FoldMark {
    /// The mark of a view stored before marks existed: nothing is known of how it was
    /// folded, so it is never extended, only derived again (on the episode's next event,
    /// or by a rebuild).
    #[must_use]
    pub const fn unknown() -> Self {
        Self {
            horizon: None,
            unapplied: u32::MAX,
        }
    }
}

/// A read model of one episode, folded from its chart.
pub trait EpisodeView: Sized {
    /// The view before any fact.
    fn empty(clinic_id: Uuid, episode_id: Uuid) -> Self;
    /// Folds one fact; facts come in clinical order. Total: never panics.
    fn fold_fact(&mut self, entry: &ChartEntry);
    /// Takes note of the episode's corrections once every fact is folded.
    fn note_corrections(&mut self, corrections: &[ChartCorrection]);
    /// Brings what is computed from the folded facts up to date, after a derivation or an
    /// extension (for views whose derived values are cheaper computed once than per fact).
    fn settle(&mut self) {}
    /// Where the fold stands.
    fn mark(&self) -> FoldMark;
    /// Sets where the fold stands.
    fn set_mark(&mut self, mark: FoldMark);
}

/// The view of a whole chart.
pub fn derive<V: EpisodeView>(clinic_id: Uuid, episode_id: Uuid, chart: &Chart) -> V {
    let mut view = V::empty(clinic_id, episode_id);
    for entry in chart.entries() {
        view.fold_fact(entry);
    }
    view.note_corrections(chart.corrections());
    view.settle();
    view.set_mark(FoldMark {
        horizon: chart.entries().last().map(ChartEntry::sort_key),
        unapplied: u32::try_from(chart.corrections().iter().filter(|c| !c.applied).count())
            .unwrap_or(u32::MAX),
    });
    view
}

/// The view of events given in log order (stream versions from 1): for tests and tools.
pub fn derive_from_log<'a, V: EpisodeView>(
    clinic_id: Uuid,
    episode_id: Uuid,
    events: impl IntoIterator<Item = (Uuid, &'a EpisodeEvent)>,
) -> V {
    let chart = Chart::new(
        events
            .into_iter()
            .zip(1_u64..)
            .map(|((id, event), version)| (id, version, event.clone())),
    );
    derive(clinic_id, episode_id, &chart)
}

/// Folds the next event into `view` when that is exactly what [`derive`] would do: the
/// event is not a correction, every correction of the episode has been applied, and it
/// sorts after every fact folded.
/// False (and the view unchanged) otherwise: derive the view again from the whole chart.
pub fn extend<V: EpisodeView>(
    view: &mut V,
    event_id: Uuid,
    version: u64,
    event: &EpisodeEvent,
) -> bool {
    let mark = view.mark();
    let key = (event.occurred_at(), version);
    let in_order = mark.horizon.is_none_or(|horizon| key > horizon);
    if matches!(event, EpisodeEvent::RecordCorrected(_)) || mark.unapplied > 0 || !in_order {
        return false;
    }
    let entry = ChartEntry {
        event_id,
        version,
        event: event.clone(),
        corrected_fields: std::collections::BTreeSet::new(),
    };
    view.fold_fact(&entry);
    view.settle();
    view.set_mark(FoldMark {
        horizon: Some(key),
        ..mark
    });
    true
}
