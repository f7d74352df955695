//! Maglev consistent hashing (Eisenbud et al., NSDI '16): a lookup table
//! in which every backend owns close to an equal share of entries, and
//! which changes little when a backend comes or goes, so established flows
//! hashed to the table mostly keep their backend across updates, and every
//! node computes the same table for the same backends.
//!
//! The hashes are written here rather than taken from std: std's hashers
//! may change between Rust releases, and a table that changed with an
//! agent upgrade would move connections.

/// Table sizes Cilium allows (`--bpf-lb-maglev-table-size`): primes, so
/// that every skip visits every entry.
pub const SUPPORTED_SIZES: &[u32] = &[251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071];

pub fn check_size(n: u32) -> Result<(), String> {
    if SUPPORTED_SIZES.contains(&n) {
        Ok(())
    } else {
        let sizes: Vec<String> = SUPPORTED_SIZES.iter().map(u32::to_string).collect();
        Err(format!("{n} is not a supported Maglev table size; use one of {}", sizes.join(", ")))
    }
}

const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
// Any other basis gives an unrelated FNV stream; this one is arbitrary.
const SECOND_OFFSET: u64 = 0x9e37_79b9_7f4a_7c15;

fn fnv1a(basis: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(basis, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

/// The splitmix64 finalizer: FNV's high bits mix poorly for short,
/// similar inputs such as addresses that differ in one digit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The Maglev table of `size` entries for `backends` (a stable name such as
/// `10.0.0.5:8080/TCP`, and the backend id the entries hold).
///
/// The result depends only on the set of backends, not their order. With
/// no backends every entry is 0, which is never a backend id. `size`
/// should be prime (see [`SUPPORTED_SIZES`]); a size of 0 gives an empty
/// table.
pub fn table(backends: &[(String, u32)], size: u32) -> Vec<u32> {
    let m = size as usize;
    if backends.is_empty() || m == 0 {
        return vec![0; m];
    }
    let mut sorted: Vec<&(String, u32)> = backends.iter().collect();
    sorted.sort();
    sorted.dedup();
    let size = u64::from(size);
    // Each backend's preference list is offset, offset+skip, ... (mod size).
    let mut cursor: Vec<(u64, u64)> = sorted
        .iter()
        .map(|(name, _)| {
            let offset = mix(fnv1a(FNV_OFFSET, name.as_bytes())) % size;
            let mut skip =
                if size > 1 { mix(fnv1a(SECOND_OFFSET, name.as_bytes())) % (size - 1) + 1 } else { 1 };
            // Only a skip coprime with the size visits every entry; with a
            // prime size every skip is, and this never changes one.
            while gcd(skip, size) != 1 {
                skip = skip % (size - 1) + 1;
            }
            (offset, skip)
        })
        .collect();
    let mut entries = vec![0u32; m];
    let mut taken = vec![false; m];
    let mut filled = 0;
    // Backends take turns claiming their next preferred free entry, which
    // is what evens out the shares.
    'fill: loop {
        for (i, (next, skip)) in cursor.iter_mut().enumerate() {
            while taken[*next as usize] {
                *next = (*next + *skip) % size;
            }
            taken[*next as usize] = true;
            entries[*next as usize] = sorted[i].1;
            *next = (*next + *skip) % size;
            filled += 1;
            if filled == m {
                break 'fill;
            }
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const M: u32 = 16381;

    fn named(ids: &[u32]) -> Vec<(String, u32)> {
        ids.iter()
            .map(|&id| (format!("10.{}.{}.{}:8080/TCP", id >> 16, (id >> 8) & 255, id & 255), id))
            .collect()
    }

    fn changed(a: &[u32], b: &[u32]) -> f64 {
        a.iter().zip(b).filter(|(x, y)| x != y).count() as f64 / a.len() as f64
    }

    #[test]
    fn sizes() {
        assert!(check_size(16381).is_ok());
        assert!(check_size(16384).unwrap_err().contains("251, 509"));
        assert_eq!(table(&[], 251), vec![0; 251]);
        assert_eq!(table(&named(&[7]), 251), vec![7; 251]);
        // Not a supported size, but still a complete table rather than a hang.
        let t = table(&named(&[1, 2, 3]), 16384);
        assert!(t.iter().all(|&id| (1..=3).contains(&id)));
    }

    #[test]
    fn fnv1a_is_the_published_function() {
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn tables_are_stable_across_builds() {
        // Pinned values: a change here moves live connections on upgrade.
        let t = table(&named(&[1, 2, 3]), 251);
        let head: Vec<u32> = t[..12].to_vec();
        assert_eq!(head, PINNED);
    }

    const PINNED: [u32; 12] = [2, 2, 2, 1, 2, 1, 2, 3, 1, 3, 1, 3];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn shares_are_even(n in 1usize..=50, order in any::<u64>()) {
            let mut backends = named(&(1..=n as u32).collect::<Vec<_>>());
            let t = table(&backends, M);
            prop_assert_eq!(t.len(), M as usize);
            for id in 1..=n as u32 {
                let share = t.iter().filter(|&&e| e == id).count() as f64 / f64::from(M);
                prop_assert!((share - 1.0 / n as f64).abs() <= 0.01, "backend {} has {}", id, share);
            }
            // Order of the input does not matter.
            backends.rotate_left(order as usize % n);
            backends.reverse();
            prop_assert_eq!(table(&backends, M), t);
        }

        #[test]
        fn removing_a_backend_moves_about_its_share(n in 2usize..=50, gone in any::<prop::sample::Index>()) {
            let ids: Vec<u32> = (1..=n as u32).collect();
            let before = table(&named(&ids), M);
            let gone = ids[gone.index(n)];
            let rest: Vec<u32> = ids.iter().copied().filter(|&i| i != gone).collect();
            let after = table(&named(&rest), M);
            prop_assert!(!after.contains(&gone));
            prop_assert!(changed(&before, &after) <= 1.0 / n as f64 + 0.02, "{}", changed(&before, &after));
        }

        #[test]
        fn adding_a_backend_moves_about_its_share(n in 1usize..=50) {
            let ids: Vec<u32> = (1..=n as u32).collect();
            let before = table(&named(&ids), M);
            let more: Vec<u32> = (1..=n as u32 + 1).collect();
            let after = table(&named(&more), M);
            let moved = changed(&before, &after);
            let share = 1.0 / (n + 1) as f64;
            // Every entry that changed went to the new backend, give or take.
            prop_assert!(moved >= share - 0.01 && moved <= share + 0.02, "{} vs {}", moved, share);
        }
    }
}
