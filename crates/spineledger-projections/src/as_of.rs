//! Outcome statistics as they stood at an earlier point of the log, by replay: each
//! clinic's episode streams are read up to the cut, folded by the projector's own fold
//! ([`spineledger_readmodels::derive`] over the episode's chart), and released by the
//! same rules as the live answer. Nothing is estimated: a figure taken earlier, with the
//! positions it states, is given again exactly, whatever was written since (later
//! events, corrections of earlier ones).
//!
//! A replay reads every event of the clinics up to the cut, so it costs what a rebuild of
//! those clinics costs; the live answer reads the pre-aggregated cells.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use futures::TryStreamExt as _;
use spineledger_domain::EpisodeId;
use spineledger_readmodels::release::{Months, Parts};
use spineledger_readmodels::{Dimension, EpisodeOutcome, Tally, derive};
use spineledger_store::{ClinicScope, RecordedEvent, scoped};
use uuid::Uuid;

use crate::ProjectionError;
use crate::models::episode_chart;
use crate::queries::Answer;

/// Where in the log an as-of answer stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// Every clinic at this global position (inclusive, in the global order).
    Position(i64),
    /// Each clinic at its own position: what an earlier answer states it reflects.
    Positions(BTreeMap<Uuid, i64>),
    /// Each clinic at its last event, in the log's order, recorded at or before this
    /// instant (a transaction still open then may add events later: the positions the
    /// answer states are what reproduces it).
    RecordedAt(DateTime<Utc>),
}

/// The parts of the statistics of `clinics` as they stood at `cut`, with the position
/// each clinic's figures reflect (0: none of its events).
///
/// # Errors
/// [`ProjectionError::UnknownPosition`] for a position no event has;
/// [`ProjectionError::PositionNotFinal`] while a transaction that could still add events
/// before it is running; a clinic missing from [`Cut::Positions`] is
/// [`ProjectionError::UnknownPosition`] with position 0.
pub async fn outcome_parts_as_of(
    pool: &Pool,
    clinics: &[Uuid],
    cut: &Cut,
    window: Months,
    group_by: &[Dimension],
) -> Result<Answer, ProjectionError> {
    let mut client = pool.get().await?;
    let transaction = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    // A replay reads whole clinics' logs: bounded, so that it cannot hold a connection
    // (and an old snapshot, which holds back vacuum) without end.
    transaction
        .batch_execute("SET LOCAL statement_timeout = '300s'")
        .await?;
    let answer = scoped(
        &transaction,
        &ClinicScope::of(clinics),
        replay(&transaction, clinics, cut, window, group_by),
    )
    .await?;
    transaction.commit().await?;
    Ok(answer)
}

async fn replay(
    client: &impl GenericClient,
    clinics: &[Uuid],
    cut: &Cut,
    window: Months,
    group_by: &[Dimension],
) -> Result<Answer, ProjectionError> {
    let mut parts = Parts::new(group_by);
    let sibling = parts.sibling_dimension();
    let mut reflects = BTreeMap::new();
    for clinic in clinics {
        let position = match cut {
            Cut::Position(position) => Some(*position),
            Cut::Positions(positions) => Some(
                *positions
                    .get(clinic)
                    .ok_or(ProjectionError::UnknownPosition { position: 0 })?,
            ),
            Cut::RecordedAt(_) => None,
        };
        let upto = if let Cut::RecordedAt(at) = cut {
            // The time picks the cut: the clinic's last event recorded by then, in the
            // log's order; `reflects` states it, so positions give it back exactly.
            match spineledger_store::last_recorded_cursor(client, *clinic, *at).await? {
                Some(cursor) => cursor,
                None => {
                    reflects.insert(*clinic, 0);
                    continue;
                }
            }
        } else {
            let position = position.unwrap_or_default();
            if position == 0 {
                // Before the first event: nothing.
                reflects.insert(*clinic, 0);
                continue;
            }
            let (cursor, settled) = spineledger_store::event_cursor(client, position)
                .await?
                .ok_or(ProjectionError::UnknownPosition { position })?;
            if !settled {
                return Err(ProjectionError::PositionNotFinal { position });
            }
            cursor
        };
        let events =
            spineledger_store::read_clinic_log_upto(client, *clinic, "episode-", upto).await?;
        futures::pin_mut!(events);
        let mut stream: Vec<RecordedEvent> = Vec::new();
        let mut fold = |stream: &[RecordedEvent]| -> Result<(), ProjectionError> {
            let Some(first) = stream.first() else {
                return Ok(());
            };
            let Some(EpisodeId(episode_id)) = EpisodeId::from_stream_id(&first.stream_id) else {
                return Ok(());
            };
            let Some(chart) = episode_chart(stream)? else {
                return Ok(());
            };
            let outcome: EpisodeOutcome = derive(first.clinic_id, episode_id, &chart);
            let month = outcome.evaluated_month();
            if window.contains(month) {
                let key = group_by.iter().map(|d| d.key_of(&outcome)).collect();
                parts.add(outcome.clinic_id, month, key, &Tally::of(&outcome));
                if let Some((_, other)) = sibling {
                    parts.add_sibling(outcome.clinic_id, month, other.key_of(&outcome), 1);
                }
            }
            Ok(())
        };
        while let Some(event) = events.try_next().await? {
            if stream
                .last()
                .is_some_and(|previous| previous.stream_id != event.stream_id)
            {
                fold(&stream)?;
                stream.clear();
            }
            stream.push(event);
        }
        fold(&stream)?;
        reflects.insert(*clinic, upto.position);
    }
    Ok(Answer { parts, reflects })
}
