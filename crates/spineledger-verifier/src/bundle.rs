//! An audit bundle: everything needed to check one clinic's record without its database
//! (its events and stream heads, its access log, the dense index of its signed log, the
//! signed checkpoints and the public key), and the audit that checks it.
//!
//! The audit checks, in this order, and reports every finding (the first broken link of
//! each damaged stream, and each fault of the index and the checkpoints):
//!
//! 1. every stream's hash chain and head ([`crate::stream`]);
//! 2. the index: leaves numbered 0, 1, 2… with no gap; each naming a record that exists,
//!    once, with that record's hash; events in global order; and every record the
//!    integrator has passed (at or before its cursor) indexed;
//! 3. every checkpoint: signed by the trusted key, for this clinic's origin, no larger than
//!    the log, and its root equal to the root of that many leaves; two checkpoints of one
//!    size with different roots are a fork;
//! 4. a checkpoint the auditor kept from earlier, when given: a log now smaller than it is
//!    a rollback, one of its size or larger with another root at that size a fork.
//!
//! What a bundle cannot show: records appended after the last checkpoint and then removed
//! with their index entries (the tail after the last checkpoint is only as safe as the
//! database until the next checkpoint is signed); nor, without a checkpoint the auditor
//! kept, a history rewritten after its checkpoints were deleted. A bundle's checkpoints
//! come from the database it checks: the kept checkpoint is the outside anchor.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::access::AccessEntry;
use crate::chain::EventHash;
use crate::checkpoint::{Checkpoint, VerifierKey, clinic_origin};
use crate::merkle::{LogTree, TreeHead};
use crate::stream::{self, Break, Head, StoredEvent};

/// The format tag of bundles this verifier reads.
pub const BUNDLE_FORMAT: &str = "spineledger-audit-bundle/v1";

/// One clinic's record, self-contained.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bundle {
    /// [`BUNDLE_FORMAT`].
    pub format: String,
    /// The clinic.
    pub clinic_id: Uuid,
    /// When it was exported.
    pub exported_at: DateTime<Utc>,
    /// The key the service signs checkpoints with, as a signed-note verifier key. An
    /// auditor should check it against one obtained independently.
    pub verifier_key: String,
    /// The last global position recorded before hash chains existed.
    pub unhashed_until: i64,
    /// Every stream's head as its row records it.
    pub streams: Vec<StreamHead>,
    /// Every event, in stream and version order.
    pub events: Vec<BundledEvent>,
    /// Every access-log entry, by position.
    pub access_log: Vec<BundledAccess>,
    /// The dense index, by leaf index.
    pub leaves: Vec<IndexedLeaf>,
    /// How far the integrator had read each log when the bundle was made.
    pub integrated: Integrated,
    /// The signed checkpoints, as notes.
    pub checkpoints: Vec<String>,
}

/// A stream's row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamHead {
    /// The stream.
    pub stream_id: String,
    /// Its version.
    pub version: u64,
    /// Its head hash.
    pub head_hash: Option<EventHash>,
}

/// An event with its transaction id (its place in the global order is (xid, position)).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundledEvent {
    /// The appending transaction's id.
    pub xid: u64,
    /// The event.
    #[serde(flatten)]
    pub event: StoredEvent,
}

/// An access-log entry with its transaction id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundledAccess {
    /// The logging transaction's id.
    pub xid: u64,
    /// The entry.
    #[serde(flatten)]
    pub entry: AccessEntry,
}

/// What a leaf stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeafKind {
    /// An event, by global position.
    Event,
    /// An access-log entry, by access-log position.
    Access,
}

impl LeafKind {
    /// The name stored in the index.
    pub fn name(self) -> &'static str {
        match self {
            Self::Event => "event",
            Self::Access => "access",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Event, Self::Access]
            .into_iter()
            .find(|kind| kind.name() == name)
    }
}

/// One entry of the dense index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedLeaf {
    /// Its index in the clinic's log.
    pub index: u64,
    /// What it stands for.
    pub kind: LeafKind,
    /// The record's position in its own log.
    pub position: i64,
    /// The leaf (the record's hash when it was indexed).
    pub hash: EventHash,
}

/// A place in a log's commit order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cursor {
    /// Transaction id.
    pub xid: u64,
    /// Position.
    pub position: i64,
}

/// The integrator's cursors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Integrated {
    /// In the event log.
    pub events: Cursor,
    /// In the access log.
    pub access: Cursor,
}

/// The leaf of an event: its chain hash, or for an event recorded before chains existed
/// (it has none) the hash of its fields onto the genesis hash.
pub fn event_leaf(event: &StoredEvent) -> EventHash {
    event
        .hash
        .unwrap_or_else(|| event.recomputed(EventHash::GENESIS))
}

/// What kind of fault a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindingKind {
    /// A stream's chain or head is broken.
    Chain(stream::Fault),
    /// The index skips or repeats a number.
    IndexGap,
    /// A leaf names a record that is not there (removed).
    LeafOrphan,
    /// A leaf's hash is not its record's (the record or the leaf was altered).
    LeafMismatch,
    /// A record is indexed twice.
    LeafDuplicate,
    /// Events indexed out of global order.
    LeafOrder,
    /// A record of another clinic in this clinic's bundle.
    ForeignRecord,
    /// A record the integrator passed has no leaf (inserted behind it).
    Unindexed,
    /// A checkpoint whose signature or origin does not hold.
    CheckpointSignature,
    /// A checkpoint's root is not the root of that many leaves (history rewritten).
    CheckpointRoot,
    /// A checkpoint larger than the log (the log was cut back).
    CheckpointBeyondLog,
    /// Two checkpoints of one size with different roots.
    Fork,
    /// The log is smaller than a checkpoint the auditor kept (restored from an older copy).
    Rollback,
    /// The log's root at the size of the auditor's kept checkpoint is another.
    KeptFork,
}

impl FindingKind {
    /// A name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Chain(fault) => fault.name(),
            Self::IndexGap => "index gap",
            Self::LeafOrphan => "leaf without its record",
            Self::LeafMismatch => "leaf hash mismatch",
            Self::LeafDuplicate => "record indexed twice",
            Self::LeafOrder => "events indexed out of order",
            Self::ForeignRecord => "record of another clinic",
            Self::Unindexed => "record missing from the index",
            Self::CheckpointSignature => "checkpoint signature invalid",
            Self::CheckpointRoot => "checkpoint root mismatch",
            Self::CheckpointBeyondLog => "checkpoint beyond the log",
            Self::Fork => "fork",
            Self::Rollback => "rollback",
            Self::KeptFork => "fork from the kept checkpoint",
        }
    }
}

/// One fault, located as precisely as the evidence allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What is wrong.
    pub kind: FindingKind,
    /// The clinic.
    pub clinic_id: Uuid,
    /// The stream, for chain faults.
    pub stream_id: Option<String>,
    /// The version, for chain faults.
    pub version: Option<u64>,
    /// The record's position (global for events, in the access log for entries).
    pub position: Option<i64>,
    /// The leaf index, or the tree size for checkpoint faults.
    pub leaf: Option<u64>,
    /// What should be there.
    pub expected: String,
    /// What is there.
    pub found: String,
}

impl Finding {
    /// A fault of the index or the checkpoints of `clinic_id` (no stream or version).
    fn in_log(
        kind: FindingKind,
        clinic_id: Uuid,
        position: Option<i64>,
        leaf: Option<u64>,
        expected: String,
        found: String,
    ) -> Self {
        Self {
            kind,
            clinic_id,
            stream_id: None,
            version: None,
            position,
            leaf,
            expected,
            found,
        }
    }
}

impl From<Break> for Finding {
    fn from(broken: Break) -> Self {
        Self {
            kind: FindingKind::Chain(broken.fault),
            clinic_id: broken.clinic_id,
            stream_id: Some(broken.stream_id),
            version: Some(broken.version),
            position: broken.position,
            leaf: None,
            expected: broken.expected,
            found: broken.found,
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: clinic {}", self.kind.name(), self.clinic_id)?;
        if let Some(stream) = &self.stream_id {
            write!(f, " stream {stream}")?;
        }
        if let Some(version) = self.version {
            write!(f, " version {version}")?;
        }
        if let Some(position) = self.position {
            write!(f, " position {position}")?;
        }
        if let Some(leaf) = self.leaf {
            match self.kind {
                FindingKind::CheckpointSignature
                | FindingKind::CheckpointRoot
                | FindingKind::CheckpointBeyondLog
                | FindingKind::Fork
                | FindingKind::Rollback
                | FindingKind::KeptFork => write!(f, " tree size {leaf}")?,
                _ => write!(f, " leaf {leaf}")?,
            }
        }
        write!(f, ": expected {}, found {}", self.expected, self.found)
    }
}

/// What an audit found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audit {
    /// Streams checked.
    pub streams: u64,
    /// Events checked.
    pub events: u64,
    /// Of which recorded before chains existed.
    pub unhashed: u64,
    /// Access-log entries checked.
    pub access_entries: u64,
    /// Leaves in the index.
    pub leaves: u64,
    /// Records not yet indexed (after the integrator's cursor).
    pub pending: u64,
    /// Checkpoints whose signature and root held.
    pub checkpoints: u64,
    /// The largest sound checkpoint.
    pub latest: Option<TreeHead>,
    /// Every fault.
    pub findings: Vec<Finding>,
}

impl Audit {
    /// Whether nothing was found.
    pub fn is_sound(&self) -> bool {
        self.findings.is_empty()
    }
}

impl Bundle {
    /// The tree over the bundle's leaves, in index order.
    pub fn tree(&self) -> LogTree {
        LogTree::from_leaves(self.leaves.iter().map(|leaf| leaf.hash.0))
    }

    /// Checks everything (see the module documentation), trusting checkpoints signed by
    /// `key` and, when given, comparing against the note `kept` the auditor kept earlier.
    pub fn audit(&self, key: &VerifierKey, kept: Option<&str>) -> Audit {
        let mut audit = Audit::default();
        let clinic_id = self.clinic_id;
        let finding = |kind, position, leaf, expected, found| {
            Finding::in_log(kind, clinic_id, position, leaf, expected, found)
        };
        if self.format != BUNDLE_FORMAT {
            audit.findings.push(finding(
                FindingKind::CheckpointSignature,
                None,
                None,
                BUNDLE_FORMAT.to_owned(),
                format!("bundle format {}", self.format),
            ));
            return audit;
        }
        self.check_chains(&mut audit);
        let tree = self.check_index(&mut audit);
        self.check_checkpoints(&tree, key, kept, &mut audit);
        audit
    }

    fn check_chains(&self, audit: &mut Audit) {
        let heads: HashMap<&str, Head> = self
            .streams
            .iter()
            .map(|stream| {
                (
                    stream.stream_id.as_str(),
                    Head {
                        version: stream.version,
                        hash: stream.head_hash,
                    },
                )
            })
            .collect();
        let mut by_stream: BTreeMap<&str, Vec<StoredEvent>> =
            heads.keys().map(|stream| (*stream, Vec::new())).collect();
        for bundled in &self.events {
            // Judged as this clinic's record whatever it says: an event moved here from
            // another clinic then fails its hash, which covers the clinic.
            let mut event = bundled.event.clone();
            if event.clinic_id != self.clinic_id {
                audit.findings.push(Finding::in_log(
                    FindingKind::ForeignRecord,
                    self.clinic_id,
                    Some(event.position),
                    None,
                    format!("clinic {}", self.clinic_id),
                    format!("clinic {}", event.clinic_id),
                ));
                event.clinic_id = self.clinic_id;
            }
            by_stream
                .entry(bundled.event.stream_id.as_str())
                .or_default()
                .push(event);
        }
        for bundled in &self.access_log {
            if bundled.entry.clinic_id != self.clinic_id {
                audit.findings.push(Finding::in_log(
                    FindingKind::ForeignRecord,
                    self.clinic_id,
                    Some(bundled.entry.position),
                    None,
                    format!("clinic {}", self.clinic_id),
                    format!("clinic {}", bundled.entry.clinic_id),
                ));
            }
        }
        for (stream_id, events) in &mut by_stream {
            events.sort_by_key(|event| event.version);
            audit.streams += 1;
            audit.events += events.len() as u64;
            match stream::check(
                self.clinic_id,
                stream_id,
                heads.get(stream_id).copied(),
                self.unhashed_until,
                events,
            ) {
                Ok(sound) => audit.unhashed += sound.unhashed,
                Err(broken) => audit.findings.push(broken.into()),
            }
        }
    }

    fn check_index(&self, audit: &mut Audit) -> LogTree {
        let clinic_id = self.clinic_id;
        let finding = |kind, position, leaf, expected, found| {
            Finding::in_log(kind, clinic_id, position, leaf, expected, found)
        };
        let events: HashMap<i64, &BundledEvent> = self
            .events
            .iter()
            .map(|bundled| (bundled.event.position, bundled))
            .collect();
        let entries: HashMap<i64, &BundledAccess> = self
            .access_log
            .iter()
            .map(|bundled| (bundled.entry.position, bundled))
            .collect();
        audit.access_entries = self.access_log.len() as u64;
        audit.leaves = self.leaves.len() as u64;
        let mut seen: HashMap<(LeafKind, i64), u64> = HashMap::new();
        let mut last_event: Option<(Cursor, u64)> = None;
        let mut expected_index = 0_u64;
        for leaf in &self.leaves {
            // A gap (or a repeat) is reported once; the leaves after it are numbered on
            // from where they are.
            let expected = std::mem::replace(&mut expected_index, leaf.index.saturating_add(1));
            if leaf.index != expected {
                audit.findings.push(finding(
                    FindingKind::IndexGap,
                    Some(leaf.position),
                    Some(expected),
                    format!("leaf {expected}"),
                    format!("leaf {}", leaf.index),
                ));
            }
            if let Some(first) = seen.insert((leaf.kind, leaf.position), leaf.index) {
                audit.findings.push(finding(
                    FindingKind::LeafDuplicate,
                    Some(leaf.position),
                    Some(leaf.index),
                    format!("one leaf (leaf {first})"),
                    format!("leaf {} as well", leaf.index),
                ));
            }
            let (record, cursor) = match leaf.kind {
                LeafKind::Event => {
                    let event = events.get(&leaf.position);
                    (
                        event.map(|bundled| event_leaf(&bundled.event)),
                        event.map(|bundled| Cursor {
                            xid: bundled.xid,
                            position: bundled.event.position,
                        }),
                    )
                }
                LeafKind::Access => (
                    entries
                        .get(&leaf.position)
                        .map(|bundled| bundled.entry.hash()),
                    None,
                ),
            };
            match record {
                None => audit.findings.push(finding(
                    FindingKind::LeafOrphan,
                    Some(leaf.position),
                    Some(leaf.index),
                    format!(
                        "{} {} ({})",
                        leaf.kind.name(),
                        leaf.position,
                        leaf.hash.to_hex()
                    ),
                    "none".to_owned(),
                )),
                Some(hash) if hash != leaf.hash => audit.findings.push(finding(
                    FindingKind::LeafMismatch,
                    Some(leaf.position),
                    Some(leaf.index),
                    leaf.hash.to_hex(),
                    hash.to_hex(),
                )),
                Some(_) => {}
            }
            if let Some(cursor) = cursor {
                if let Some((previous, previous_leaf)) = last_event
                    && cursor <= previous
                {
                    audit.findings.push(finding(
                        FindingKind::LeafOrder,
                        Some(cursor.position),
                        Some(leaf.index),
                        format!(
                            "an event after position {} (leaf {previous_leaf})",
                            previous.position
                        ),
                        format!("position {}", cursor.position),
                    ));
                }
                last_event = Some((cursor, leaf.index));
            }
        }
        let mut unindexed = |kind: LeafKind, cursor: Cursor, horizon: Cursor| {
            if seen.contains_key(&(kind, cursor.position)) {
                return;
            }
            if cursor <= horizon {
                audit.findings.push(finding(
                    FindingKind::Unindexed,
                    Some(cursor.position),
                    None,
                    format!("a leaf for {} {}", kind.name(), cursor.position),
                    "none".to_owned(),
                ));
            } else {
                audit.pending += 1;
            }
        };
        for bundled in &self.events {
            let cursor = Cursor {
                xid: bundled.xid,
                position: bundled.event.position,
            };
            unindexed(LeafKind::Event, cursor, self.integrated.events);
        }
        for bundled in &self.access_log {
            let cursor = Cursor {
                xid: bundled.xid,
                position: bundled.entry.position,
            };
            unindexed(LeafKind::Access, cursor, self.integrated.access);
        }
        self.tree()
    }

    fn check_checkpoints(
        &self,
        tree: &LogTree,
        key: &VerifierKey,
        kept: Option<&str>,
        audit: &mut Audit,
    ) {
        let clinic_id = self.clinic_id;
        let finding = |kind, leaf, expected, found| {
            Finding::in_log(kind, clinic_id, None, leaf, expected, found)
        };
        let origin = clinic_origin(self.clinic_id);
        let size = tree.size();
        let opened: Vec<Result<Checkpoint, _>> =
            self.checkpoints.iter().map(|note| key.open(note)).collect();
        let kept = kept.map(|note| key.open(note));
        let heads = tree.heads_at(
            opened
                .iter()
                .chain(kept.iter())
                .filter_map(|checkpoint| checkpoint.as_ref().ok())
                .map(|checkpoint| checkpoint.head.size),
        );
        let mut signed: BTreeMap<u64, [u8; 32]> = BTreeMap::new();
        for opened in opened {
            let checkpoint = match opened {
                Ok(checkpoint) if checkpoint.origin == origin => checkpoint,
                Ok(checkpoint) => {
                    audit.findings.push(finding(
                        FindingKind::CheckpointSignature,
                        Some(checkpoint.head.size),
                        format!("origin {origin}"),
                        format!("origin {}", checkpoint.origin),
                    ));
                    continue;
                }
                Err(error) => {
                    audit.findings.push(finding(
                        FindingKind::CheckpointSignature,
                        None,
                        format!("a checkpoint signed by {}", key.name()),
                        error.to_string(),
                    ));
                    continue;
                }
            };
            let head = checkpoint.head;
            if let Some(root) = signed.insert(head.size, head.root)
                && root != head.root
            {
                audit.findings.push(finding(
                    FindingKind::Fork,
                    Some(head.size),
                    format!("root {}", hex::encode(root)),
                    format!("root {}", hex::encode(head.root)),
                ));
            }
            self.check_head(
                &heads,
                size,
                &checkpoint,
                FindingKind::CheckpointRoot,
                audit,
            );
            if heads.get(&head.size) == Some(&head) {
                audit.checkpoints += 1;
                if audit.latest.is_none_or(|latest| latest.size < head.size) {
                    audit.latest = Some(head);
                }
            }
        }
        let Some(kept) = kept else {
            return;
        };
        match kept {
            Ok(checkpoint) if checkpoint.origin != origin => audit.findings.push(finding(
                FindingKind::CheckpointSignature,
                Some(checkpoint.head.size),
                format!("kept checkpoint of origin {origin}"),
                format!("origin {}", checkpoint.origin),
            )),
            Ok(checkpoint) if checkpoint.head.size > size => audit.findings.push(finding(
                FindingKind::Rollback,
                Some(checkpoint.head.size),
                format!(
                    "a log of at least {} leaves (kept checkpoint)",
                    checkpoint.head.size
                ),
                format!("{size} leaves"),
            )),
            Ok(checkpoint) => {
                self.check_head(&heads, size, &checkpoint, FindingKind::KeptFork, audit);
            }
            Err(error) => audit.findings.push(finding(
                FindingKind::CheckpointSignature,
                None,
                format!("a kept checkpoint signed by {}", key.name()),
                error.to_string(),
            )),
        }
    }

    /// Compares a signed head with the bundle's tree at its size (`heads`: the tree's heads
    /// at the sizes checkpoints state, `size`: the tree's).
    fn check_head(
        &self,
        heads: &BTreeMap<u64, TreeHead>,
        size: u64,
        checkpoint: &Checkpoint,
        kind: FindingKind,
        audit: &mut Audit,
    ) {
        let head = checkpoint.head;
        let finding = |kind, expected, found| {
            Finding::in_log(kind, self.clinic_id, None, Some(head.size), expected, found)
        };
        match heads.get(&head.size) {
            None => audit.findings.push(finding(
                if kind == FindingKind::KeptFork {
                    FindingKind::Rollback
                } else {
                    FindingKind::CheckpointBeyondLog
                },
                format!("a log of at least {} leaves", head.size),
                format!("{size} leaves"),
            )),
            Some(ours) if ours.root != head.root => audit.findings.push(finding(
                kind,
                format!("root {} (signed)", hex::encode(head.root)),
                format!("root {}", hex::encode(ours.root)),
            )),
            Some(_) => {}
        }
    }
}
