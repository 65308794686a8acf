//! A clinic's verifiable log: an RFC 9162 (Certificate Transparency 2.0) Merkle tree over
//! the clinic's records in the order the integrator indexed them.
//!
//! A leaf is a record's 32-byte hash: an event's chain hash ([`crate::chain`]) or an
//! access-log entry's hash ([`crate::access`]). The tree hashes a leaf as
//! SHA-256(0x00 ‖ leaf) and an interior node as SHA-256(0x01 ‖ left ‖ right), and the empty
//! tree's root is SHA-256 of nothing; the tree itself is the `ct-merkle` crate's (a
//! maintained implementation of exactly these rules), this module only fixes its types and
//! adds the checks a caller should not have to remember (sizes, the equal-size case).

use std::collections::BTreeMap;

use ct_merkle::mem_backed_tree::MemoryBackedTree;
use ct_merkle::{ConsistencyProof, InclusionProof, RootHash};
use sha2::Sha256;

/// A leaf: the hash of one record.
pub type Leaf = [u8; 32];

/// A node hash in a proof.
pub type NodeHash = [u8; 32];

/// A tree's size and root: what a checkpoint commits to.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TreeHead {
    /// Leaves in the tree.
    pub size: u64,
    /// Its root hash.
    pub root: [u8; 32],
}

impl std::fmt::Debug for TreeHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TreeHead({}, {})", self.size, hex::encode(self.root))
    }
}

/// Why a proof was not produced or not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not below the tree size.
    #[error("leaf {index} is not in a tree of {size}")]
    IndexOutOfRange {
        /// The leaf asked for.
        index: u64,
        /// The tree's size.
        size: u64,
    },
    /// Nothing can be proved in (or from) an empty tree.
    #[error("the tree is empty")]
    EmptyTree,
    /// A consistency proof from a larger tree to a smaller one.
    #[error("the old size {old} is larger than the new size {new}")]
    OldLarger {
        /// The old size.
        old: u64,
        /// The new size.
        new: u64,
    },
    /// A tree size larger than the tree at hand.
    #[error("a tree of {asked} was asked of a log of {size}")]
    BeyondLog {
        /// The size asked for.
        asked: u64,
        /// The log's size.
        size: u64,
    },
    /// A proof of the wrong length, or whose hashes are not 32 bytes each.
    #[error("the proof has the wrong shape for these sizes")]
    Malformed,
    /// The proof does not lead to the root (a wrong leaf, index, size, root or hash).
    #[error("the proof does not lead to the root")]
    Mismatch,
}

/// The tree over a prefix of a clinic's log, held in memory.
#[derive(Debug, Clone, Default)]
pub struct LogTree(MemoryBackedTree<Sha256, Leaf>);

impl LogTree {
    /// The tree over `leaves`, in order.
    pub fn from_leaves(leaves: impl IntoIterator<Item = Leaf>) -> Self {
        let mut tree = MemoryBackedTree::new();
        for leaf in leaves {
            tree.push(leaf);
        }
        Self(tree)
    }

    /// Appends a leaf.
    pub fn push(&mut self, leaf: Leaf) {
        self.0.push(leaf);
    }

    /// Leaves in the tree.
    pub fn size(&self) -> u64 {
        self.0.len()
    }

    /// The leaves, in order.
    pub fn leaves(&self) -> &[Leaf] {
        self.0.items()
    }

    /// The tree's head (the empty tree's root is SHA-256 of nothing).
    pub fn head(&self) -> TreeHead {
        TreeHead {
            size: self.size(),
            root: self
                .0
                .root()
                .as_bytes()
                .as_slice()
                .try_into()
                .unwrap_or([0; 32]),
        }
    }

    /// The head of the tree over the first `size` leaves.
    ///
    /// # Errors
    /// [`ProofError::BeyondLog`] when `size` exceeds this tree.
    pub fn head_at(&self, size: u64) -> Result<TreeHead, ProofError> {
        Ok(self.prefix(size)?.head())
    }

    /// The heads at each of `sizes` that this tree reaches (larger ones are left out), in
    /// one pass over the leaves: checking many checkpoints costs one tree, not one each.
    pub fn heads_at(&self, sizes: impl IntoIterator<Item = u64>) -> BTreeMap<u64, TreeHead> {
        let mut wanted: Vec<u64> = sizes
            .into_iter()
            .filter(|size| *size <= self.size())
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut heads = BTreeMap::new();
        let mut prefix = Self::default();
        let mut leaves = self.leaves().iter();
        for size in wanted {
            while prefix.size() < size {
                match leaves.next() {
                    Some(leaf) => prefix.push(*leaf),
                    None => break,
                }
            }
            heads.insert(size, prefix.head());
        }
        heads
    }

    /// The audit path of leaf `index` in the tree of the first `size` leaves.
    ///
    /// # Errors
    /// An empty tree, `index` not below `size`, or `size` beyond this tree.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<NodeHash>, ProofError> {
        if size == 0 {
            return Err(ProofError::EmptyTree);
        }
        if index >= size {
            return Err(ProofError::IndexOutOfRange { index, size });
        }
        let tree = self.prefix(size)?;
        let index =
            usize::try_from(index).map_err(|_| ProofError::IndexOutOfRange { index, size })?;
        Ok(split(tree.0.prove_inclusion(index).as_bytes()))
    }

    /// The proof that the tree of the first `old` leaves is a prefix of the tree of the
    /// first `new` (empty when the sizes are equal).
    ///
    /// # Errors
    /// `old` zero or larger than `new`, or `new` beyond this tree.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<NodeHash>, ProofError> {
        if old == 0 {
            return Err(ProofError::EmptyTree);
        }
        if old > new {
            return Err(ProofError::OldLarger { old, new });
        }
        let tree = self.prefix(new)?;
        if old == new {
            return Ok(Vec::new());
        }
        let additions = usize::try_from(new - old).map_err(|_| ProofError::Malformed)?;
        Ok(split(tree.0.prove_consistency(additions).as_bytes()))
    }

    /// This tree, or a new one over its first `size` leaves.
    fn prefix(&self, size: u64) -> Result<std::borrow::Cow<'_, Self>, ProofError> {
        let have = self.size();
        if size > have {
            return Err(ProofError::BeyondLog {
                asked: size,
                size: have,
            });
        }
        if size == have {
            return Ok(std::borrow::Cow::Borrowed(self));
        }
        let size = usize::try_from(size).map_err(|_| ProofError::Malformed)?;
        Ok(std::borrow::Cow::Owned(Self::from_leaves(
            self.leaves()[..size].iter().copied(),
        )))
    }
}

fn split(bytes: &[u8]) -> Vec<NodeHash> {
    bytes
        .chunks_exact(32)
        .filter_map(|chunk| NodeHash::try_from(chunk).ok())
        .collect()
}

/// Joins proof hashes as given on the wire, refusing any that is not 32 bytes.
fn joined(proof: &[impl AsRef<[u8]>]) -> Result<Vec<u8>, ProofError> {
    let mut bytes = Vec::with_capacity(proof.len() * 32);
    for hash in proof {
        let hash = hash.as_ref();
        if hash.len() != 32 {
            return Err(ProofError::Malformed);
        }
        bytes.extend_from_slice(hash);
    }
    Ok(bytes)
}

/// The largest tree size the proof arithmetic handles (ct-merkle panics beyond it); a
/// claimed size above it is refused, never computed with.
const MAX_TREE_SIZE: u64 = u64::MAX / 2;

fn root_hash(head: &TreeHead) -> RootHash<Sha256> {
    RootHash::new(head.root.into(), head.size)
}

/// Checks that `leaf` is leaf `index` of the tree `head` describes, by its audit path.
///
/// # Errors
/// The proof is malformed for these sizes or does not lead to the root.
pub fn verify_inclusion(
    head: &TreeHead,
    leaf: &Leaf,
    index: u64,
    proof: &[impl AsRef<[u8]>],
) -> Result<(), ProofError> {
    if head.size == 0 {
        return Err(ProofError::EmptyTree);
    }
    if head.size > MAX_TREE_SIZE {
        return Err(ProofError::Malformed);
    }
    if index >= head.size {
        return Err(ProofError::IndexOutOfRange {
            index,
            size: head.size,
        });
    }
    let proof = InclusionProof::<Sha256>::from_bytes(joined(proof)?);
    root_hash(head)
        .verify_inclusion(leaf, index, &proof)
        .map_err(|error| match error {
            ct_merkle::InclusionVerifError::MalformedProof => ProofError::Malformed,
            ct_merkle::InclusionVerifError::IndexOutOfRange => ProofError::IndexOutOfRange {
                index,
                size: head.size,
            },
            ct_merkle::InclusionVerifError::TreeEmpty => ProofError::EmptyTree,
            ct_merkle::InclusionVerifError::IncorrectHash => ProofError::Mismatch,
        })
}

/// Checks that the tree `old` describes is a prefix of the tree `new` describes: the log
/// only grew between them.
///
/// # Errors
/// An empty old tree, an old tree larger than the new, a malformed proof, or one that
/// does not lead to both roots.
pub fn verify_consistency(
    old: &TreeHead,
    new: &TreeHead,
    proof: &[impl AsRef<[u8]>],
) -> Result<(), ProofError> {
    if old.size == 0 {
        return Err(ProofError::EmptyTree);
    }
    if old.size > new.size {
        return Err(ProofError::OldLarger {
            old: old.size,
            new: new.size,
        });
    }
    if new.size > MAX_TREE_SIZE {
        return Err(ProofError::Malformed);
    }
    let bytes = joined(proof)?;
    if old.size == new.size {
        // RFC 9162 2.1.4.2: the proof is empty and the roots are the same.
        if !bytes.is_empty() {
            return Err(ProofError::Malformed);
        }
        return if old.root == new.root {
            Ok(())
        } else {
            Err(ProofError::Mismatch)
        };
    }
    let proof =
        ConsistencyProof::<Sha256>::try_from_bytes(bytes).map_err(|_| ProofError::Malformed)?;
    root_hash(new)
        .verify_consistency(&root_hash(old), &proof)
        .map_err(|error| match error {
            ct_merkle::ConsistencyVerifError::MalformedProof => ProofError::Malformed,
            ct_merkle::ConsistencyVerifError::OldTreeLarger => ProofError::OldLarger {
                old: old.size,
                new: new.size,
            },
            ct_merkle::ConsistencyVerifError::OldTreeEmpty => ProofError::EmptyTree,
            ct_merkle::ConsistencyVerifError::NewTreeTooBig
            | ct_merkle::ConsistencyVerifError::VerificationFailure => ProofError::Mismatch,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    fn leaves(n: u8) -> Vec<Leaf> {
        (0..n).map(|i| [i; 32]).collect()
    }

    fn h(bytes: &[u8]) -> [u8; 32] {
        Sha256::digest(bytes).into()
    }

    /// The RFC's definition, written out for two and three leaves: the crate computes what
    /// the RFC says, with its domain separation bytes.
    #[test]
    fn roots_follow_rfc_9162() {
        assert_eq!(LogTree::default().head().root, h(b""));
        let l = leaves(3);
        let leaf = |x: &Leaf| h(&[&[0_u8][..], x].concat());
        let node = |a: [u8; 32], b: [u8; 32]| h(&[&[1_u8][..], &a, &b].concat());
        let two = node(leaf(&l[0]), leaf(&l[1]));
        assert_eq!(
            LogTree::from_leaves(l[..1].to_vec()).head().root,
            leaf(&l[0])
        );
        assert_eq!(LogTree::from_leaves(l[..2].to_vec()).head().root, two);
        assert_eq!(
            LogTree::from_leaves(l.clone()).head().root,
            node(two, leaf(&l[2]))
        );
    }

    #[test]
    fn heads_at_many_sizes_are_the_heads_of_those_prefixes() {
        let tree = LogTree::from_leaves(leaves(20));
        let heads = tree.heads_at([0, 7, 3, 7, 20, 21, 1]);
        assert_eq!(heads.keys().copied().collect::<Vec<_>>(), [0, 1, 3, 7, 20]);
        for (size, head) in heads {
            assert_eq!(Ok(head), tree.head_at(size));
        }
    }

    #[test]
    fn every_inclusion_and_consistency_proof_verifies() {
        let tree = LogTree::from_leaves(leaves(13));
        for size in 1..=13 {
            let head = tree.head_at(size).expect("head");
            for index in 0..size {
                let proof = tree.inclusion_proof(index, size).expect("proof");
                let leaf = tree.leaves()[usize::try_from(index).expect("index")];
                verify_inclusion(&head, &leaf, index, &proof).expect("inclusion");
            }
            for old in 1..=size {
                let proof = tree.consistency_proof(old, size).expect("proof");
                let old_head = tree.head_at(old).expect("head");
                verify_consistency(&old_head, &head, &proof).expect("consistency");
            }
        }
    }

    #[test]
    fn bad_inclusion_proofs_are_refused() {
        let tree = LogTree::from_leaves(leaves(12));
        let head = tree.head_at(11).expect("head");
        let leaf = tree.leaves()[5];
        let proof = tree.inclusion_proof(5, 11).expect("proof");
        verify_inclusion(&head, &leaf, 5, &proof).expect("sound");
        // Every single bit flip in the path.
        for i in 0..proof.len() {
            for byte in 0..32 {
                for bit in 0..8 {
                    let mut bad = proof.clone();
                    bad[i][byte] ^= 1 << bit;
                    assert_eq!(
                        verify_inclusion(&head, &leaf, 5, &bad),
                        Err(ProofError::Mismatch)
                    );
                }
            }
        }
        // A flipped leaf, the wrong index, the wrong size, the wrong root.
        let mut other = leaf;
        other[0] ^= 1;
        assert_eq!(
            verify_inclusion(&head, &other, 5, &proof),
            Err(ProofError::Mismatch)
        );
        assert!(verify_inclusion(&head, &leaf, 4, &proof).is_err());
        // The real heads of other sizes (a head is a size and its root, signed together).
        for size in [6, 10, 12] {
            let other = tree.head_at(size).expect("head");
            assert!(
                verify_inclusion(&other, &leaf, 5, &proof).is_err(),
                "size {size}"
            );
        }
        let mut root = head;
        root.root[31] ^= 0x80;
        assert_eq!(
            verify_inclusion(&root, &leaf, 5, &proof),
            Err(ProofError::Mismatch)
        );
        // Truncated and overlong paths, a hash cut short, an index past the end, no tree.
        assert_eq!(
            verify_inclusion(&head, &leaf, 5, &proof[1..]),
            Err(ProofError::Malformed)
        );
        let mut long = proof.clone();
        long.push([0; 32]);
        assert_eq!(
            verify_inclusion(&head, &leaf, 5, &long),
            Err(ProofError::Malformed)
        );
        let short: Vec<Vec<u8>> = proof.iter().map(|hash| hash[..31].to_vec()).collect();
        assert_eq!(
            verify_inclusion(&head, &leaf, 5, &short),
            Err(ProofError::Malformed)
        );
        assert!(matches!(
            verify_inclusion(&head, &leaf, 11, &proof),
            Err(ProofError::IndexOutOfRange { .. })
        ));
        let empty = LogTree::default().head();
        assert_eq!(
            verify_inclusion(&empty, &leaf, 0, &proof),
            Err(ProofError::EmptyTree)
        );
        assert_eq!(tree.inclusion_proof(0, 0), Err(ProofError::EmptyTree));
        assert!(matches!(
            tree.inclusion_proof(3, 13),
            Err(ProofError::BeyondLog { .. })
        ));
    }

    #[test]
    fn bad_consistency_proofs_are_refused() {
        let tree = LogTree::from_leaves(leaves(15));
        let (old, new) = (
            tree.head_at(6).expect("head"),
            tree.head_at(14).expect("head"),
        );
        let proof = tree.consistency_proof(6, 14).expect("proof");
        verify_consistency(&old, &new, &proof).expect("sound");
        for i in 0..proof.len() {
            for byte in [0, 17, 31] {
                let mut bad = proof.clone();
                bad[i][byte] ^= 0x01;
                assert_eq!(
                    verify_consistency(&old, &new, &bad),
                    Err(ProofError::Mismatch)
                );
            }
        }
        assert_eq!(
            verify_consistency(&old, &new, &proof[1..]),
            Err(ProofError::Malformed)
        );
        let mut long = proof.clone();
        long.push([7; 32]);
        assert_eq!(
            verify_consistency(&old, &new, &long),
            Err(ProofError::Malformed)
        );
        // Wrong sizes, old larger than new, an empty old tree, a forked root.
        for (from, to) in [(5, 14), (7, 14), (6, 13), (6, 15)] {
            let (from, to) = (
                tree.head_at(from).expect("head"),
                tree.head_at(to).expect("head"),
            );
            assert!(
                verify_consistency(&from, &to, &proof).is_err(),
                "{from:?} {to:?}"
            );
        }
        assert!(matches!(
            verify_consistency(&new, &old, &proof),
            Err(ProofError::OldLarger { .. })
        ));
        assert!(matches!(
            tree.consistency_proof(9, 6),
            Err(ProofError::OldLarger { .. })
        ));
        let empty = LogTree::default().head();
        assert_eq!(
            verify_consistency(&empty, &new, &proof),
            Err(ProofError::EmptyTree)
        );
        assert_eq!(tree.consistency_proof(0, 14), Err(ProofError::EmptyTree));
        let mut forked = new;
        forked.root[0] ^= 1;
        assert_eq!(
            verify_consistency(&old, &forked, &proof),
            Err(ProofError::Mismatch)
        );
        // Equal sizes: an empty proof and equal roots, nothing else.
        let none: [NodeHash; 0] = [];
        verify_consistency(&new, &new, &none).expect("same tree");
        assert_eq!(
            verify_consistency(&new, &forked, &none),
            Err(ProofError::Mismatch)
        );
        assert_eq!(
            verify_consistency(&new, &new, &proof),
            Err(ProofError::Malformed)
        );
    }
}
