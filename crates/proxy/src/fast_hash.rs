//! A small, fast, non-cryptographic hasher (the Fx hash of rustc) for the metrics maps on the
//! data path, whose keys are a few machine words or short strings from the mesh's own
//! configuration and verified identities — never arbitrary peer input, so SipHash's
//! flooding resistance buys nothing there and costs ~10x the instructions.

use std::hash::{BuildHasherDefault, Hasher};

/// `BuildHasher` for [`FxHasher`].
pub type FxBuild = BuildHasherDefault<FxHasher>;

/// rustc's multiply-rotate word hasher.
#[derive(Debug, Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
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
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn equal_input_equal_hash_and_the_tail_counts() {
        let build = FxBuild::default();
        assert_eq!(
            build.hash_one("/charges/{id}"),
            build.hash_one("/charges/{id}")
        );
        assert_ne!(
            build.hash_one("/charges/{id}"),
            build.hash_one("/charges/{ie}")
        );
        assert_ne!(build.hash_one(1u16), build.hash_one(2u16));
    }
}
