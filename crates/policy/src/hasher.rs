//! A fast, unkeyed hasher (the `FxHash` mixing function) for the engine's lookup tables, and
//! for the proxy's data-path tables (route classification, metrics series) — one copy.
//!
//! Why unkeyed is safe for them: the tables are built only from operator input (policies,
//! route templates, the mesh's own identities); request data (paths, SPIFFE IDs, host names)
//! is only *looked up*. Colliding lookups cannot lengthen a probe sequence the configured keys
//! did not already create, so there is no hash-flooding vector — and SipHash would cost a large
//! share of a decision. Don't use it for tables peers can insert into.

use std::hash::{BuildHasher, Hasher};

/// Builds [`FxHasher`]s.
#[derive(Debug, Default, Clone, Copy)]
pub struct FxBuildHasher;

impl BuildHasher for FxBuildHasher {
    type Hasher = FxHasher;
    fn build_hasher(&self) -> FxHasher {
        FxHasher(0)
    }
}

/// Word-at-a-time multiply/rotate hasher.
#[derive(Debug, Default, Clone, Copy)]
pub struct FxHasher(u64);

const SEED: u64 = 0x517c_c1b7_2722_0a95;

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            // Length in the top byte keeps "a" and "a\0" apart.
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 56));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_u128(&mut self, i: u128) {
        self.add(i as u64);
        self.add((i >> 64) as u64);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A hash map using [`FxBuildHasher`].
pub type FxHashMap<K, V> = std::collections::HashMap<K, V, FxBuildHasher>;

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(s: &str) -> u64 {
        FxBuildHasher.hash_one(s)
    }

    #[test]
    fn distinguishes_lengths_and_contents() {
        assert_ne!(hash("a"), hash("a\0"));
        assert_ne!(hash("spiffe://td/ns/a"), hash("spiffe://td/ns/b"));
        assert_eq!(hash("/charges"), hash("/charges"));
    }
}
