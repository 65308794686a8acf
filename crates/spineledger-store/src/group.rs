//! Group commit: concurrent decided appends share one transaction.
//!
//! Each [`crate::EventStore::append_decided`] call becomes a [`Command`] on a queue. A
//! few writer tasks take commands off it: an idle writer takes the first command at once
//! (no fixed wait, so a lone append is not delayed), then drains whatever else is already
//! queued, up to [`GroupCommit::max_batch`] commands, into one transaction:
//!
//! 1. one round trip, pipelined: BEGIN, the clinic context (every clinic of the batch), the
//!    existing streams locked `FOR UPDATE` in (clinic, stream) order — every batch locks
//!    in that order, so two batches cannot deadlock on streams (two batches inserting
//!    the same new event ids in opposite orders can; PostgreSQL detects it and the
//!    batch that loses is retried) — the stored events under
//!    the batch's event ids (retries), the histories of the streams this process does
//!    not hold ([`crate::history`]; none for a command that expects a new stream, which
//!    its expected version refuses if the stream exists) and the transaction's start
//!    time (every event's `recorded_at`); a held history whose last event is not the
//!    locked head is stale, and that stream is read in a second round trip;
//! 2. in memory, command by command: a retry gets its original outcome, a stale
//!    expected version its conflict, a refusal its refusal; the others' events are
//!    hashed onto their stream's head;
//! 3. one round trip, pipelined: the new streams inserted (in the same order), every
//!    event in one multi-row insert whose positions follow the batch order (returning
//!    the events as stored), the versions and heads of the existing streams moved on
//!    (found by the locked rows' `ctid`), and COMMIT, sent only once every write has
//!    been (a failed write aborts the transaction, and PostgreSQL answers the COMMIT
//!    with a rollback);
//! 4. only after the COMMIT's answer does any command get its own, and the streams'
//!    histories, with what was appended, go back to the cache.
//!
//! So a lone command costs two round trips. The transaction is a plain BEGIN and COMMIT
//! on the pooled connection (`tokio_postgres`'s `Transaction` waits for each); a failed
//! batch sends ROLLBACK before its connection goes back to the pool, or closes it.
//!
//! Each command keeps its own outcome: a conflict, a refusal or a retry answers only that
//! command, and its neighbours commit. Within one writer a command never overtakes an
//! earlier one of its stream; commands of one stream taken by different writers are
//! concurrent calls, ordered by the stream's lock as they arrive at it. No savepoints (PostgreSQL slows down past 64
//! subtransactions in one transaction). A batch never holds two commands of one stream or
//! two commands sharing an event id: such a command waits for the writer's next batch,
//! where it sees the first one's outcome. When the transaction fails as a whole, a
//! unique violation, deadlock or serialization failure (a concurrent writer in another
//! batch or process) is retried, and any other failure runs each command alone, so that
//! a command the database refuses fails by itself. A command whose caller has gone (a
//! deadline passed, a client cancelled) is dropped before its batch starts.

use std::any::Any;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use deadpool_postgres::{GenericClient, Pool};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::Row;
use tracing::Instrument;
use uuid::Uuid;

use crate::chain::EventHash;
use crate::history::{self, Histories};
use crate::scope::{ClinicScope, SET_SCOPE};
use crate::store::{
    EVENT_COLUMNS, EventRows, FIND_RETRY_IN_CLINICS, StreamHead, UNIQUE_VIOLATION_RETRIES,
    classify_retry, decode_event, request_keys, to_sql_count, validate_batch,
};
use crate::wake::Appended;
use crate::{
    AppendOutcome, AppendedEvent, ExpectedVersion, Fingerprint, NewEvent, RecordedEvent,
    StoreError, StreamKey,
};

/// How concurrent decided appends are grouped into transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommit {
    /// The most commands one transaction takes. Bounded so that a batch's statements stay
    /// small and one slow batch does not hold back many callers.
    pub max_batch: usize,
    /// How many batches may be in flight at once (each holds one pooled connection while
    /// it runs). More than one lets the next batch gather and decide while the previous
    /// one waits for its commit to reach the disk.
    pub writers: usize,
}

impl Default for GroupCommit {
    /// 64 commands a batch, 4 writers: at 32 concurrent clients a batch gathers what
    /// arrived while the previous one committed, and 4 connections are a small part of
    /// the default pool of 32.
    fn default() -> Self {
        Self {
            max_batch: 64,
            writers: 4,
        }
    }
}

/// A decision's refusal, type-erased on the queue (the caller gets its own type back).
pub(crate) type Refusal = Box<dyn Any + Send>;

/// Turns a stream's history into the events to append, or refuses.
pub(crate) type Decide = Box<dyn FnMut(&[RecordedEvent]) -> Result<Vec<NewEvent>, Refusal> + Send>;

/// What a command is answered with.
pub(crate) type Answer = Result<Result<AppendOutcome, Refusal>, StoreError>;

/// One decided append waiting for its batch.
pub(crate) struct Command {
    pub(crate) stream: StreamKey,
    pub(crate) expected: ExpectedVersion,
    pub(crate) request: Vec<(Uuid, Fingerprint)>,
    /// In a mutex only so that a `&Command` may be held across an await (the batch is
    /// read while its transaction runs); it is only ever reached through `&mut`.
    pub(crate) decide: std::sync::Mutex<Decide>,
    /// Set when `decide` panicked: it is not called again (a re-run after a lost race,
    /// or alone after a failed batch, answers with the failure).
    pub(crate) panicked: bool,
    pub(crate) reply: oneshot::Sender<Answer>,
}

/// Queue capacity: callers wait (backpressure) beyond this many queued commands.
const QUEUE: usize = 1024;

/// The queue's sending side; the writers stop once every sender is gone.
#[derive(Debug, Clone)]
pub(crate) struct Committer {
    queue: mpsc::Sender<Command>,
}

impl Committer {
    /// Starts `settings.writers` writer tasks on the current runtime.
    pub(crate) fn start(pool: Pool, settings: GroupCommit, appended: Arc<Appended>) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        let max_batch = settings.max_batch.max(1);
        // One cache for every writer: a stream's next command may reach any of them.
        let histories = Arc::new(Histories::default());
        for _ in 0..settings.writers.max(1) {
            tokio::spawn(writer(
                pool.clone(),
                Arc::clone(&receiver),
                max_batch,
                Arc::clone(&appended),
                Arc::clone(&histories),
            ));
        }
        Self { queue }
    }

    /// Queues `command`; its answer arrives once its batch has committed (or failed).
    pub(crate) async fn submit(&self, command: Command) -> Result<(), StoreError> {
        self.queue
            .send(command)
            .await
            .map_err(|_| StoreError::Configuration("the group commit writers have stopped".into()))
    }
}

/// One writer: take a batch, run it, answer it; again until the queue closes.
async fn writer(
    pool: Pool,
    queue: Arc<Mutex<mpsc::Receiver<Command>>>,
    max_batch: usize,
    appended: Arc<Appended>,
    histories: Arc<Histories>,
) {
    // Commands this writer deferred from its last batch (same stream or event id as one
    // in it); they start its next batch, ahead of anything newer.
    let mut carried = VecDeque::new();
    loop {
        let batch = if carried.is_empty() {
            let mut queue = queue.lock().await;
            match queue.recv().await {
                Some(command) => carried.push_back(command),
                None => return,
            }
            gather(&mut carried, Some(&mut queue), max_batch)
        } else {
            // Never wait for the queue with commands in hand: another writer may hold it
            // while it waits for a command that is not coming.
            match queue.try_lock() {
                Ok(mut queue) => gather(&mut carried, Some(&mut queue), max_batch),
                Err(_) => gather(&mut carried, None, max_batch),
            }
        };
        if batch.is_empty() {
            continue;
        }
        let span = tracing::info_span!("store.group_commit", commands = batch.len());
        run(&pool, batch, &appended, &histories)
            .instrument(span)
            .await;
    }
}

/// The next batch: `carried` first, then what is queued (if this writer holds the queue), at most `max_batch` commands,
/// none of whose callers has gone, no two of one stream or sharing an event id. What
/// must wait is left in `carried`, in arrival order.
fn gather(
    carried: &mut VecDeque<Command>,
    mut queue: Option<&mut mpsc::Receiver<Command>>,
    max_batch: usize,
) -> Vec<Command> {
    let mut batch = Vec::new();
    let mut deferred = VecDeque::new();
    let mut streams = HashSet::new();
    let mut ids = HashSet::new();
    while batch.len() < max_batch {
        let queued = || {
            if deferred.len() >= max_batch {
                return None;
            }
            queue.as_mut().and_then(|queue| queue.try_recv().ok())
        };
        let Some(command) = carried.pop_front().or_else(queued) else {
            break;
        };
        if command.reply.is_closed() {
            continue;
        }
        let clashes = streams.contains(&command.stream)
            || command.request.iter().any(|(id, _)| ids.contains(id));
        streams.insert(command.stream.clone());
        ids.extend(command.request.iter().map(|(id, _)| *id));
        if clashes {
            deferred.push_back(command);
        } else {
            batch.push(command);
        }
    }
    deferred.extend(carried.drain(..));
    *carried = deferred;
    batch
}

/// Runs `batch` (retrying whole-transaction races), then answers every command. If the
/// transaction fails for another reason, each command runs alone, so only a command
/// the database itself refuses gets the failure.
async fn run(pool: &Pool, mut batch: Vec<Command>, appended: &Appended, histories: &Histories) {
    match attempt(pool, &mut batch, appended, histories).await {
        Ok(answers) => answer(batch, answers, appended),
        Err(error) if batch.len() == 1 => {
            let answers = vec![Err(error)];
            answer(batch, answers, appended);
        }
        Err(error) => {
            tracing::debug!(%error, commands = batch.len(), "batch failed; running its commands one by one");
            for command in batch {
                if command.reply.is_closed() {
                    continue;
                }
                let mut alone = vec![command];
                let answers = match attempt(pool, &mut alone, appended, histories).await {
                    Ok(answers) => answers,
                    Err(error) => vec![Err(error)],
                };
                answer(alone, answers, appended);
            }
        }
    }
}

/// [`commit_batch`], retried while it loses a race to a concurrent transaction.
async fn attempt(
    pool: &Pool,
    batch: &mut [Command],
    appended: &Appended,
    histories: &Histories,
) -> Result<Vec<Answer>, StoreError> {
    let mut retries = 0;
    loop {
        match commit_batch(pool, batch, appended, histories).await {
            Err(error) if error.is_lost_race() && retries < UNIQUE_VIOLATION_RETRIES => {
                retries += 1;
                tracing::debug!(
                    retries,
                    "batch lost a race to a concurrent writer; retrying"
                );
            }
            other => return other,
        }
    }
}

fn answer(batch: Vec<Command>, answers: Vec<Answer>, appended: &Appended) {
    let wrote = batch
        .iter()
        .zip(&answers)
        .filter(|(_, answer)| matches!(answer, Ok(Ok(outcome)) if !outcome.replayed))
        .map(|(command, _)| command.stream.clinic_id)
        .collect::<Vec<_>>();
    if !wrote.is_empty() {
        appended.record(wrote);
    }
    for (command, answer) in batch.into_iter().zip(answers) {
        // The caller may have gone meanwhile; what committed stays committed, and a retry
        // with the same event id gets it.
        let _ = command.reply.send(answer);
    }
}

/// One batch in one transaction (see the module docs); the answers in batch order, or
/// the error that failed the transaction as a whole: nothing committed then, except when
/// the COMMIT's own outcome is unknown (the commands are then run again one by one, and
/// each finds its events if they were stored).
///
/// A command whose stream's history this process holds ([`Histories`]) is decided on it,
/// without reading the stream, when the locked version and head hash are those of the
/// history's last event; otherwise the stream is read in a second round trip of the same
/// transaction. Every command's retry lookup runs as before, so a held history changes
/// what a decision reads, never how a retry, conflict or refusal is answered.
async fn commit_batch(
    pool: &Pool,
    batch: &mut [Command],
    appended: &Appended,
    histories: &Histories,
) -> Result<Vec<Answer>, StoreError> {
    let mut open = Open {
        connection: Some(pool.get().await?),
        settled: false,
    };
    let settled = AtomicBool::new(false);
    let result = commit_open(open.connection(), batch, appended, histories, &settled).await;
    if result.is_ok() || settled.load(Ordering::Relaxed) {
        open.settled = true;
    } else {
        open.abandon().await;
    }
    result
}

/// The pooled connection of a batch. Its transaction is opened and ended by a plain BEGIN
/// and COMMIT that travel with the batch's other statements (`tokio_postgres`'s
/// `Transaction` waits a round trip for each), so a lone command takes two round trips.
/// Dropped with its transaction possibly still open (a failure whose ROLLBACK failed too,
/// a panic), the connection is closed instead of going back to the pool: that ends the
/// transaction, and no later user of the pool finds itself inside it.
struct Open {
    connection: Option<Connection>,
    /// The transaction is over (committed or rolled back).
    settled: bool,
}

impl Open {
    fn connection(&self) -> &Connection {
        match &self.connection {
            Some(connection) => connection,
            None => unreachable!("the connection is taken only when the batch is dropped"),
        }
    }

    /// After a failure the transaction may be open, aborted or over: ROLLBACK ends it in
    /// every case (outside a transaction PostgreSQL only warns).
    async fn abandon(&mut self) {
        if let Some(connection) = &self.connection
            && connection.batch_execute("ROLLBACK").await.is_ok()
        {
            self.settled = true;
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if !self.settled
            && let Some(connection) = self.connection.take()
        {
            drop(deadpool_postgres::Object::take(connection));
        }
    }
}

/// The pool's connection type.
type Connection = deadpool_postgres::Client;

/// [`commit_batch`] on its connection. `Ok` only once the transaction is over: committed,
/// or rolled back when nothing was to be written. `settled` is set once PostgreSQL has
/// answered the COMMIT, whatever the outcome: no ROLLBACK is needed after that.
async fn commit_open(
    connection: &Connection,
    batch: &mut [Command],
    appended: &Appended,
    histories: &Histories,
    settled: &AtomicBool,
) -> Result<Vec<Answer>, StoreError> {
    // Taken out of the cache: they come back only after a commit (or a read under lock).
    let mut known: Vec<Option<Vec<RecordedEvent>>> = batch
        .iter()
        .map(|command| histories.take(&command.stream))
        .collect();
    // A command for a new stream decides on no history: if its stream turns out to exist,
    // its expected version refuses it (after the retry lookup), so its history is never
    // read. Registering a patient, the commonest new stream, skips the read.
    let unknown: Vec<usize> = (0..batch.len())
        .filter(|&i| known[i].is_none() && !batch[i].expected.requires_new_stream())
        .collect();
    let mut found = read_batch(connection, batch, &unknown).await?;
    let stale: Vec<usize> = (0..batch.len())
        .filter(|&index| {
            known[index].as_deref().is_some_and(|history| {
                let head = found.head(&batch[index].stream);
                !history::ends_at(history, head.version, head.hash)
            })
        })
        .collect();
    if !stale.is_empty() {
        for &index in &stale {
            known[index] = None;
        }
        found.add(read_histories(connection, batch, &stale).await?);
    }

    let mut answers: Vec<Option<Answer>> = Vec::with_capacity(batch.len());
    let mut rows = EventRows::default();
    let mut written: Vec<Written> = Vec::new();
    for (command, held) in batch.iter_mut().zip(&known) {
        let head = found.head(&command.stream);
        let history = held
            .as_deref()
            .unwrap_or_else(|| found.history(&command.stream));
        let events = match decide_after_read(command, &found.retries, head.version, history) {
            Ok(events) => events,
            Err(answer) => {
                answers.push(Some(answer));
                continue;
            }
        };
        match rows.push(&command.stream, &head, &events) {
            Ok((version, hash)) => {
                written.push(Written {
                    stream: command.stream.clone(),
                    row: found.rows.get(&command.stream).cloned(),
                    version,
                    hash,
                });
                answers.push(None);
            }
            Err(invalid) => answers.push(Some(Err(invalid))),
        }
    }

    if rows.is_empty() {
        // Nothing to write: no commit to wait for (the locks go with the rollback). What
        // was read under the locks is still each stream's history.
        connection.batch_execute("ROLLBACK").await?;
        found.keep(histories);
        return Ok(answers
            .into_iter()
            .map(|answer| answer.unwrap_or_else(unreachable_empty))
            .collect());
    }
    let stored = match write_batch(connection, &rows, &written, settled).await {
        Ok(stored) => stored,
        Err(Unsettled::RolledBack(error)) => return Err(error),
        Err(Unsettled::Unknown(error)) => {
            // Whether it committed is unknown. A batch of several is run again command by
            // command (each then finds its events if they were stored); a lone command
            // gets the error, and its retry with the same command id gets the outcome.
            // The projectors are woken either way.
            appended.record(written.iter().map(|stream| stream.stream.clinic_id));
            return Err(error);
        }
    };
    // What was stored, by clinic and event id (an event id is unique within a clinic).
    let mut stored: HashMap<(Uuid, Uuid), RecordedEvent> = stored
        .into_iter()
        .map(|event| ((event.clinic_id, event.event_id), event))
        .collect();
    let mut result = Vec::with_capacity(batch.len());
    for ((command, answer), known) in batch.iter().zip(answers).zip(known) {
        let history = known.or_else(|| found.histories.remove(&command.stream));
        if let Some(answer) = answer {
            if let Some(history) = history {
                histories.put(command.stream.clone(), history);
            }
            result.push(answer);
            continue;
        }
        let mut events: Vec<RecordedEvent> = command
            .request
            .iter()
            .filter_map(|(id, _)| stored.remove(&(command.stream.clinic_id, *id)))
            .collect();
        // Committed: a mismatch here answers this command only (its retry gets the
        // stored outcome), never the batch.
        if events.len() == command.request.len() {
            events.sort_by_key(|event| event.version);
            let outcome = AppendOutcome {
                events: events.iter().map(AppendedEvent::from).collect(),
                replayed: false,
            };
            let mut history = history.unwrap_or_default();
            history.extend(events);
            histories.put(command.stream.clone(), history);
            result.push(Ok(Ok(outcome)));
        } else {
            result.push(Err(StoreError::Malformed(
                "the batch insert returned other rows than it was given".into(),
            )));
        }
    }
    Ok(result)
}

/// Decides `command` on `history`, catching a panic: a decision runs on a writer shared
/// by every caller, so a panic answers its own command and must not end the writer.
fn decide_guarded(
    command: &mut Command,
    history: &[RecordedEvent],
) -> Result<Result<Vec<NewEvent>, Refusal>, StoreError> {
    let decide = command
        .decide
        .get_mut()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decide(history))) {
        Ok(decided) => Ok(decided),
        Err(payload) => {
            // The payload is dropped without being read: it may quote clinical data.
            drop(payload);
            command.panicked = true;
            tracing::error!(
                clinic = %command.stream.clinic_id,
                stream = %command.stream.stream_id,
                "a decision panicked; its command is refused"
            );
            Err(decision_failed())
        }
    }
}

/// A command decided under the locks, on its stream's current `history`: a retry gets its
/// original outcome (recognised before the version check, which the original moved on),
/// a stale expected version its conflict, a refusal its refusal; otherwise the events to
/// append.
fn decide_after_read(
    command: &mut Command,
    retries: &[Row],
    version: u64,
    history: &[RecordedEvent],
) -> Result<Vec<NewEvent>, Answer> {
    // The stored rows under this command's ids (FIND_RETRY_IN_CLINICS: the event id
    // first, the clinic last).
    let stored: Vec<&Row> = retries
        .iter()
        .filter(|row| {
            row.try_get::<_, Uuid>(7)
                .is_ok_and(|clinic| clinic == command.stream.clinic_id)
                && row
                    .try_get::<_, Uuid>(0)
                    .is_ok_and(|id| command.request.iter().any(|(asked, _)| *asked == id))
        })
        .collect();
    match classify_retry(&command.stream, &command.request, &stored) {
        Ok(Some(replayed)) => return Err(Ok(Ok(replayed))),
        Ok(None) => {}
        Err(error) => return Err(Err(error)),
    }
    command.expected.check(version).map_err(Err)?;
    if command.panicked {
        return Err(Err(decision_failed()));
    }
    let events = match decide_guarded(command, history).map_err(Err)? {
        Ok(events) => events,
        Err(refusal) => return Err(Ok(Err(refusal))),
    };
    validate_batch(&events)
        .and_then(|()| {
            if request_keys(&events) == command.request {
                Ok(())
            } else {
                Err(StoreError::InvalidBatch(
                    "decided events differ from the request's ids and fingerprints",
                ))
            }
        })
        .map_err(Err)?;
    Ok(events)
}

/// The answer to a command whose decision panicked.
fn decision_failed() -> StoreError {
    StoreError::Malformed("the decision of this command failed".into())
}

fn unreachable_empty() -> Answer {
    Err(StoreError::Malformed(
        "a command was decided without a row to write".into(),
    ))
}

/// What the batch read under its locks.
struct Found {
    heads: HashMap<StreamKey, StreamHead>,
    /// Where each locked stream's row is (its `ctid`, as text): the version bump finds
    /// it there, a lookup no planner estimate can turn into a scan.
    rows: HashMap<StreamKey, String>,
    recorded_at: chrono::DateTime<chrono::Utc>,
    retries: Vec<Row>,
    /// The histories read (of the commands not decided from a held history).
    histories: HashMap<StreamKey, Vec<RecordedEvent>>,
}

impl Found {
    /// The locked head of `stream`, or version 0 at the genesis hash if it is new.
    fn head(&self, stream: &StreamKey) -> StreamHead {
        // The locked heads carry this transaction's start already (`of_locked`).
        self.heads.get(stream).copied().unwrap_or(StreamHead {
            version: 0,
            hash: EventHash::GENESIS,
            recorded_at: self.recorded_at,
        })
    }

    fn history(&self, stream: &StreamKey) -> &[RecordedEvent] {
        self.histories.get(stream).map_or(&[], Vec::as_slice)
    }

    /// Adds a later read (in the same transaction) of more commands' retries and histories.
    fn add(&mut self, (retries, histories): Read) {
        self.retries.extend(retries);
        self.histories.extend(histories);
    }

    /// Gives the histories read back to the cache.
    fn keep(self, cache: &Histories) {
        for (stream, history) in self.histories {
            cache.put(stream, history);
        }
    }
}

/// The retry lookup's rows and the streams' histories.
type Read = (Vec<Row>, HashMap<StreamKey, Vec<RecordedEvent>>);

/// The statements that read the commands' retries and histories, prepared.
struct ReadStatements {
    retries: tokio_postgres::Statement,
    histories: tokio_postgres::Statement,
}

impl ReadStatements {
    async fn prepare(connection: &Connection) -> Result<Self, StoreError> {
        Ok(Self {
            retries: connection.prepare_cached(FIND_RETRY_IN_CLINICS).await?,
            histories: connection
                .prepare_cached(&format!(
                    "SELECT h.* FROM unnest($1::uuid[], $2::text[]) AS k(clinic_id, stream_id) \
                     CROSS JOIN LATERAL (SELECT {EVENT_COLUMNS} FROM events e \
                                         WHERE e.clinic_id = k.clinic_id \
                                           AND e.stream_id = k.stream_id \
                                         OFFSET 0) h \
                     ORDER BY h.clinic_id, h.stream_id, h.version"
                ))
                .await?,
        })
    }

    /// The stored events under the ids of the commands `retries_of`, and the histories
    /// of the streams of `histories_of` (indices into `batch`): pipelined.
    async fn read(
        &self,
        connection: &Connection,
        batch: &[Command],
        retries_of: &[usize],
        histories_of: &[usize],
    ) -> Result<Read, StoreError> {
        let (id_clinics, ids): (Vec<Uuid>, Vec<Uuid>) = retries_of
            .iter()
            .flat_map(|&index| {
                let command = &batch[index];
                command
                    .request
                    .iter()
                    .map(|(id, _)| (command.stream.clinic_id, *id))
            })
            .unzip();
        let clinics: Vec<Uuid> = histories_of
            .iter()
            .map(|&index| batch[index].stream.clinic_id)
            .collect();
        let streams: Vec<&str> = histories_of
            .iter()
            .map(|&index| batch[index].stream.stream_id.as_str())
            .collect();
        let retry_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&id_clinics, &ids];
        let stream_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&clinics, &streams];
        let (retried, read) = futures::try_join!(
            async {
                if retries_of.is_empty() {
                    Ok(Vec::new())
                } else {
                    connection.query(&self.retries, &retry_params).await
                }
            },
            async {
                if histories_of.is_empty() {
                    Ok(Vec::new())
                } else {
                    connection.query(&self.histories, &stream_params).await
                }
            },
        )?;
        let mut histories: HashMap<StreamKey, Vec<RecordedEvent>> = HashMap::new();
        for row in &read {
            let event = decode_event(row)?;
            let stream = StreamKey::new(event.clinic_id, event.stream_id.clone());
            histories.entry(stream).or_default().push(event);
        }
        Ok((retried, histories))
    }
}

/// A second read in the batch's transaction (the locks are held already): the histories
/// of the streams of `commands`, whose held histories turned out stale.
async fn read_histories(
    connection: &Connection,
    batch: &[Command],
    commands: &[usize],
) -> Result<Read, StoreError> {
    ReadStatements::prepare(connection)
        .await?
        .read(connection, batch, &[], commands)
        .await
}

/// Step 1: the clinic context, the locks (of every stream), every command's retry lookup,
/// the histories of the streams of `unknown` (no history held, an existing stream
/// expected), the start time.
async fn read_batch(
    connection: &Connection,
    batch: &[Command],
    unknown: &[usize],
) -> Result<Found, StoreError> {
    let lock = connection
        .prepare_cached(
            "SELECT s.clinic_id, s.stream_id, s.version, s.head_hash, s.ctid::text \
             FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS k(clinic_id, stream_id, n) \
             CROSS JOIN LATERAL (SELECT t.clinic_id, t.stream_id, t.version, t.head_hash, t.ctid \
                                 FROM streams t \
                                 WHERE t.clinic_id = k.clinic_id AND t.stream_id = k.stream_id \
                                 FOR UPDATE) s \
             ORDER BY k.n",
        )
        .await?;
    let reads = ReadStatements::prepare(connection).await?;
    let started = connection
        .prepare_cached("SELECT transaction_timestamp()")
        .await?;

    let mut streams: Vec<&StreamKey> = batch.iter().map(|command| &command.stream).collect();
    streams.sort_by(|a, b| (a.clinic_id, &a.stream_id).cmp(&(b.clinic_id, &b.stream_id)));
    let stream_clinics: Vec<Uuid> = streams.iter().map(|stream| stream.clinic_id).collect();
    let stream_ids: Vec<&str> = streams
        .iter()
        .map(|stream| stream.stream_id.as_str())
        .collect();
    let mut clinics = stream_clinics.clone();
    clinics.dedup();
    let every: Vec<usize> = (0..batch.len()).collect();

    let set_scope = connection.prepare_cached(SET_SCOPE).await?;
    let scope = ClinicScope::of(&clinics);

    let stream_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] =
        [&stream_clinics, &stream_ids];
    // One round trip: every statement is prepared above, so each goes out as it is first
    // polled, in this order, the transaction's BEGIN and clinic context first.
    let (_, _, locked, (retries, histories), started) = futures::try_join!(
        async { Ok::<_, StoreError>(connection.batch_execute("BEGIN").await?) },
        async { Ok(connection.execute(&set_scope, &[&scope.setting()]).await?) },
        async { Ok(connection.query(&lock, &stream_params).await?) },
        reads.read(connection, batch, &every, unknown),
        async { Ok(connection.query_one(&started, &[]).await?) },
    )?;

    let recorded_at = started.try_get(0)?;
    let mut heads = HashMap::with_capacity(locked.len());
    let mut rows = HashMap::with_capacity(locked.len());
    for row in &locked {
        let stream = StreamKey::new(row.try_get(0)?, row.try_get::<_, String>(1)?);
        let head = StreamHead::of_locked(row, recorded_at)?;
        rows.insert(stream.clone(), row.try_get::<_, String>(4)?);
        heads.insert(stream, head);
    }
    Ok(Found {
        heads,
        rows,
        recorded_at,
        retries,
        histories,
    })
}

/// Step 3: new streams, the events, the existing streams' heads and the COMMIT — one round
/// trip. The events as stored once committed.
async fn write_batch(
    connection: &Connection,
    rows: &EventRows,
    written: &[Written],
    settled: &AtomicBool,
) -> Result<Vec<RecordedEvent>, Unsettled> {
    let insert = EventRows::prepare(connection).await?;
    let create = connection
        .prepare_cached(
            "INSERT INTO streams (clinic_id, stream_id, version, head_hash) \
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::bytea[]) \
             ORDER BY 1, 2",
        )
        .await?;
    let bump = connection
        .prepare_cached(
            // Each row was locked where the bump looks for it; should one not be there,
            // the statement fails in PostgreSQL (a bigint cast of a sentence), so the
            // COMMIT sent after it rolls back: a stream left behind would keep a version
            // its new events have passed. Not a constant, so it is never folded early.
            "WITH bumped AS ( \
                 UPDATE streams s SET version = k.version, head_hash = k.head_hash \
                 FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::bytea[], \
                             $5::text[]::tid[]) \
                     AS k(clinic_id, stream_id, version, head_hash, row) \
                 WHERE s.ctid = ANY($5::text[]::tid[]) AND s.ctid = k.row \
                   AND s.clinic_id = k.clinic_id AND s.stream_id = k.stream_id \
                 RETURNING 1) \
             SELECT CASE WHEN count(*) = cardinality($5::text[]) THEN count(*) \
                         ELSE ('a locked stream was not where its lock found it: ' \
                               || count(*))::bigint END \
             FROM bumped",
        )
        .await?;
    let columns = |new: bool| -> Result<StreamColumns, StoreError> {
        let mut columns = StreamColumns::default();
        for stream in written.iter().filter(|stream| stream.row.is_none() == new) {
            columns.rows.extend(stream.row.clone());
            columns.clinics.push(stream.stream.clinic_id);
            columns.ids.push(stream.stream.stream_id.clone());
            columns.versions.push(to_sql_count(stream.version)?);
            columns.heads.push(stream.hash.0.to_vec());
        }
        Ok(columns)
    };
    let (created, existing) = (columns(true)?, columns(false)?);
    // Pipelined, in order: the new streams first (the events' foreign key needs them); a
    // concurrent creator of the same stream makes this a unique violation, retried. Then
    // the COMMIT, in the same round trip; if a write fails, the transaction is aborted
    // and PostgreSQL answers the COMMIT with a rollback.
    let mut writes = std::pin::pin!(async {
        futures::try_join!(
            async {
                if created.clinics.is_empty() {
                    Ok(0)
                } else {
                    connection
                        .execute(&create, &created.params())
                        .await
                        .map_err(StoreError::from)
                }
            },
            rows.insert(connection, &insert),
            async {
                if existing.clinics.is_empty() {
                    Ok(0)
                } else {
                    let bumped: i64 = connection
                        .query_one(&bump, &existing.bump_params())
                        .await?
                        .try_get(0)?;
                    Ok(u64::try_from(bumped).unwrap_or_default())
                }
            },
        )
    });
    // The COMMIT may leave only once every write has: a write that fails before it is
    // sent (its parameters) ends the batch here, with the transaction left to roll back.
    if let std::task::Poll::Ready(done) = futures::poll!(writes.as_mut()) {
        return Err(Unsettled::RolledBack(done.err().unwrap_or_else(|| {
            StoreError::Malformed("the writes finished before they were sent".into())
        })));
    }
    let (written, committed) =
        futures::join!(writes, async { connection.batch_execute("COMMIT").await });
    if committed.is_ok() {
        // Its answer came: the transaction is over, committed or rolled back.
        settled.store(true, Ordering::Relaxed);
    }
    match (written, committed) {
        // PostgreSQL refused a write: the transaction was aborted and the COMMIT rolled
        // it back.
        (Err(error), _) if is_from_the_server(&error) => Err(Unsettled::RolledBack(error)),
        // Anything else (the connection failed, a row did not decode) came after the
        // COMMIT was sent, which may have committed.
        (Err(error), _) => Err(Unsettled::Unknown(error)),
        (Ok(_), Err(error)) => Err(Unsettled::Unknown(error.into())),
        (Ok((_, stored, _)), Ok(())) => Ok(stored),
    }
}

/// Whether PostgreSQL itself raised `error` (which aborts the transaction it ran in).
fn is_from_the_server(error: &StoreError) -> bool {
    matches!(error, StoreError::Database(error) if error.as_db_error().is_some())
}

/// Why a batch's writes did not end in a known commit.
enum Unsettled {
    /// Nothing was committed (a write failed; the transaction is aborted or rolled back).
    RolledBack(StoreError),
    /// The COMMIT was sent, and what followed failed outside PostgreSQL (or the COMMIT
    /// itself failed): whether it took effect is unknown.
    Unknown(StoreError),
}

impl From<StoreError> for Unsettled {
    /// A failure before the COMMIT was sent.
    fn from(error: StoreError) -> Self {
        Self::RolledBack(error)
    }
}

impl From<tokio_postgres::Error> for Unsettled {
    /// A failure before the COMMIT was sent.
    fn from(error: tokio_postgres::Error) -> Self {
        Self::RolledBack(error.into())
    }
}

/// A stream the batch writes to, as it will be after the commit.
struct Written {
    stream: StreamKey,
    /// Where its locked row is (`ctid`); `None` for a new stream (inserted, not updated).
    row: Option<String>,
    version: u64,
    hash: EventHash,
}

#[derive(Default)]
struct StreamColumns {
    clinics: Vec<Uuid>,
    ids: Vec<String>,
    versions: Vec<i64>,
    heads: Vec<Vec<u8>>,
    rows: Vec<String>,
}

impl StreamColumns {
    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 4] {
        [&self.clinics, &self.ids, &self.versions, &self.heads]
    }

    fn bump_params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 5] {
        [
            &self.clinics,
            &self.ids,
            &self.versions,
            &self.heads,
            &self.rows,
        ]
    }
}
