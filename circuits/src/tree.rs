//! The note commitment tree: an append-only binary Merkle tree hashed with
//! Poseidon(left, right), of depth [`TREE_DEPTH`]. An empty leaf is 0 (no
//! note commitment is 0: that would be a Poseidon preimage of 0), and an empty
//! subtree of height `h` is `zeros[h]`, `zeros[h + 1] = Poseidon(zeros[h],
//! zeros[h])`. `NoxPool` keeps the same tree on chain (its frontier only) and
//! the tests check that both give the same roots for the same leaves.

use ark_bn254::Fr;
use ark_ff::Zero;

use crate::poseidon::hash2;

/// Depth of the pool's tree: 2^20 = 1,048,576 notes. Each level costs the
/// spend circuit one Poseidon (240 constraints) and an on-chain insertion one
/// Poseidon (see `docs/protocol.md` for why 20).
pub const TREE_DEPTH: usize = 20;

/// Tree errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    /// Every leaf is taken.
    #[error("the tree is full ({0} leaves)")]
    Full(u64),
    /// No leaf at this index yet.
    #[error("no leaf at index {index} (the tree holds {len})")]
    NoSuchLeaf {
        /// Index asked for.
        index: u64,
        /// Leaves held.
        len: u64,
    },
}

/// Roots of empty subtrees: `zeros(d)[h]` for heights 0 to `d`.
pub fn zeros(depth: usize) -> Vec<Fr> {
    let mut z = vec![Fr::zero()];
    for h in 0..depth {
        z.push(hash2(z[h], z[h]));
    }
    z
}

/// The root reached from `leaf` at `index` with `path` (siblings, leaf level
/// first).
pub fn root_from_path(leaf: Fr, index: u64, path: &[Fr]) -> Fr {
    let mut node = leaf;
    for (h, sibling) in path.iter().enumerate() {
        node = if (index >> h) & 1 == 0 { hash2(node, *sibling) } else { hash2(*sibling, node) };
    }
    node
}

/// A whole tree in memory (every node of its filled part), for the prover
/// side: clients and tests. The contract keeps only the frontier.
#[derive(Debug, Clone)]
pub struct MerkleTree {
    depth: usize,
    zeros: Vec<Fr>,
    /// `levels[h]`: the nodes at height `h` that cover at least one leaf.
    levels: Vec<Vec<Fr>>,
}

impl MerkleTree {
    /// An empty tree of `depth` levels (at most 63).
    pub fn new(depth: usize) -> Self {
        let depth = depth.min(63);
        MerkleTree { depth, zeros: zeros(depth), levels: vec![Vec::new(); depth + 1] }
    }

    /// Depth.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Leaves held.
    pub fn len(&self) -> u64 {
        self.levels[0].len() as u64
    }

    /// Whether no leaf is held.
    pub fn is_empty(&self) -> bool {
        self.levels[0].is_empty()
    }

    fn node(&self, h: usize, i: u64) -> Fr {
        self.levels[h].get(i as usize).copied().unwrap_or(self.zeros[h])
    }

    /// The current root.
    pub fn root(&self) -> Fr {
        self.node(self.depth, 0)
    }

    /// Appends `leaf`; returns its index.
    pub fn insert(&mut self, leaf: Fr) -> Result<u64, TreeError> {
        let index = self.len();
        if index >= 1u64 << self.depth {
            return Err(TreeError::Full(index));
        }
        self.levels[0].push(leaf);
        let mut i = index;
        for h in 0..self.depth {
            let parent = hash2(self.node(h, i & !1), self.node(h, i | 1));
            i >>= 1;
            let level = &mut self.levels[h + 1];
            if (i as usize) < level.len() {
                level[i as usize] = parent;
            } else {
                level.push(parent);
            }
        }
        Ok(index)
    }

    /// The siblings of leaf `index`, leaf level first.
    pub fn path(&self, index: u64) -> Result<Vec<Fr>, TreeError> {
        if index >= self.len() {
            return Err(TreeError::NoSuchLeaf { index, len: self.len() });
        }
        Ok((0..self.depth).map(|h| self.node(h, (index >> h) ^ 1)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fr(n: u64) -> Fr {
        Fr::from(n)
    }

    #[test]
    fn empty_root_is_the_zero_chain() {
        let t = MerkleTree::new(TREE_DEPTH);
        assert_eq!(t.root(), zeros(TREE_DEPTH)[TREE_DEPTH]);
        assert!(t.is_empty());
    }

    #[test]
    fn roots_follow_the_definition() {
        // Depth 2, by hand: leaves a, b, c and an empty fourth.
        let (a, b, c) = (fr(11), fr(22), fr(33));
        let mut t = MerkleTree::new(2);
        t.insert(a).unwrap();
        assert_eq!(t.root(), hash2(hash2(a, Fr::zero()), zeros(2)[1]));
        t.insert(b).unwrap();
        t.insert(c).unwrap();
        assert_eq!(t.root(), hash2(hash2(a, b), hash2(c, Fr::zero())));
        assert_eq!(t.insert(fr(44)), Ok(3));
        assert_eq!(t.insert(fr(55)), Err(TreeError::Full(4)));
    }

    #[test]
    fn every_path_leads_to_the_root() {
        let mut t = MerkleTree::new(6);
        for n in 0..41 {
            t.insert(fr(1000 + n)).unwrap();
        }
        for i in 0..41 {
            let path = t.path(i).unwrap();
            assert_eq!(root_from_path(fr(1000 + i), i, &path), t.root(), "leaf {i}");
            assert_ne!(root_from_path(fr(999), i, &path), t.root());
        }
        assert_eq!(t.path(41), Err(TreeError::NoSuchLeaf { index: 41, len: 41 }));
    }
}
