//! Stable hashing and seeding helpers.
//!
//! `std`'s `DefaultHasher` is not guaranteed to give the same value across
//! Rust releases, and the warm-start placement must map (app, component) to
//! the same node for as long as the cluster is unchanged, so the hash here is
//! spelled out: FNV-1a (64 bit) over the two names with a separator, then a
//! SplitMix64 finalizer to spread the bits for `% n`.

/// The stable hash of an (application, component) pair.
pub(crate) fn component_hash(app: &str, component: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for &b in app.as_bytes().iter().chain(&[0xff]).chain(component.as_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    mix(h)
}

/// SplitMix64's finalizer: a bijective bit mixer.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `hash` reduced to `0..n` (Lemire's multiply-shift; `n > 0`).
pub(crate) fn reduce(hash: u64, n: usize) -> usize {
    ((u128::from(hash) * n as u128) >> 64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `component_hash("app", "c")`, computed independently (Python).
    const PINNED: u64 = 0xf03f_4c0c_590d_8ada;

    #[test]
    fn stable_and_separating() {
        // Pinned: a change here moves every application's warm node.
        assert_eq!(component_hash("app", "c"), component_hash("app", "c"));
        assert_ne!(component_hash("ab", "c"), component_hash("a", "bc"));
        assert_eq!(component_hash("app", "c"), PINNED);
        for n in [1, 2, 3, 32, 1000] {
            assert!(reduce(component_hash("x", "y"), n) < n);
        }
    }
}
