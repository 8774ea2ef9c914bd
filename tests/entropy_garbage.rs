//! `decode` on garbage, truncated and corrupted input: errors or wrong symbols, never a panic.

#[path = "entropy_ylike.rs"]
mod ylike;

use ocular_entropy::{decode, encode, gaussian_tables, scale_table, CdfTable, CodingTables};
use ylike::SplitMix64;

/// Gaussian tables followed by a few odd ones (one-symbol tables at the ends of `i32`, a
/// table with a heavy escape bin, a wide flat table).
fn tables() -> CodingTables {
    let mut tables = gaussian_tables(&scale_table()).unwrap();
    tables.push(CdfTable::from_fixed_point(i32::MAX, vec![(1 << 24) - 1, 1]).unwrap());
    tables.push(CdfTable::from_fixed_point(i32::MIN, vec![1, (1 << 24) - 1]).unwrap());
    tables.push(CdfTable::from_probabilities(-3, &[1.0, 1.0, 1.0], 3.0).unwrap());
    tables.push(CdfTable::from_probabilities(-30_000, &vec![1.0; 60_000], 0.0).unwrap());
    CodingTables::new(&tables).unwrap()
}

fn random_indices(rng: &mut SplitMix64, n: usize, num_tables: usize) -> Vec<u16> {
    (0..n)
        .map(|_| (rng.next_u64() % num_tables as u64) as u16)
        .collect()
}

/// Decodes and checks the contract: an error, or exactly `indices.len()` symbols.
fn decode_checked(bytes: &[u8], indices: &[u16], tables: &CodingTables) -> bool {
    match decode(bytes, indices, tables) {
        Ok(symbols) => {
            assert_eq!(symbols.len(), indices.len());
            true
        }
        Err(err) => {
            assert!(!err.to_string().is_empty());
            false
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let tables = tables();
    let mut rng = SplitMix64(1);
    let mut errors = 0;
    for round in 0..3000 {
        let len = (rng.next_u64() % 64) as usize * 4 + if round % 10 == 0 { 1 } else { 0 };
        let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        let n = (rng.next_u64() % 300) as usize;
        let indices = random_indices(&mut rng, n, tables.len());
        if !decode_checked(&bytes, &indices, &tables) {
            errors += 1;
        }
    }
    // Some inputs (the odd lengths at least) must have been rejected.
    assert!(errors >= 300, "{errors}");
}

#[test]
fn all_ones_and_all_zeros_never_panic() {
    let tables = tables();
    let mut rng = SplitMix64(2);
    for fill in [0x00u8, 0xff, 0x80, 0x7f] {
        for words in [0usize, 1, 2, 3, 100] {
            let bytes = vec![fill; 4 * words];
            let indices = random_indices(&mut rng, 2000, tables.len());
            decode_checked(&bytes, &indices, &tables);
            // Every table on its own, including the escape-heavy and one-symbol ones.
            for t in 0..tables.len() as u16 {
                decode_checked(&bytes, &[t; 50], &tables);
            }
        }
    }
}

#[test]
fn truncated_and_bit_flipped_streams_never_panic() {
    let tables = tables();
    let mut rng = SplitMix64(3);
    let (mut symbols, mut indices) = ylike::y_like(4000, 11);
    // Mix in escapes and the odd tables.
    for k in 0..200 {
        let at = (rng.next_u64() % symbols.len() as u64) as usize;
        indices[at] = (rng.next_u64() % tables.len() as u64) as u16;
        symbols[at] = match k % 4 {
            0 => i32::MIN,
            1 => i32::MAX,
            2 => rng.next_u64() as i32,
            _ => (rng.next_u64() % 100) as i32 - 50,
        };
    }
    let bytes = encode(&symbols, &indices, &tables).unwrap();
    assert_eq!(decode(&bytes, &indices, &tables).unwrap(), symbols);

    // Truncations to every word count, from the front and the back.
    for words in 0..bytes.len() / 4 {
        decode_checked(&bytes[..4 * words], &indices, &tables);
        decode_checked(&bytes[bytes.len() - 4 * words..], &indices, &tables);
    }
    // Random single and multiple bit flips.
    let mut wrong = 0;
    for round in 0..300 {
        let mut corrupt = bytes.clone();
        for _ in 0..1 + round % 3 {
            let bit = (rng.next_u64() % (8 * corrupt.len() as u64)) as usize;
            corrupt[bit / 8] ^= 1 << (bit % 8);
        }
        match decode(&corrupt, &indices, &tables) {
            Ok(decoded) => {
                assert_eq!(decoded.len(), symbols.len());
                wrong += usize::from(decoded != symbols);
            }
            Err(_) => wrong += 1,
        }
    }
    // Corruption is noticed in the symbols (the coder has no checksum; the container does).
    assert!(wrong > 250, "{wrong}");
    // Extra trailing words are ignored.
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0xAB; 16]);
    assert_eq!(decode(&longer, &indices, &tables).unwrap(), symbols);
}

#[test]
fn long_message_from_tiny_input_stays_linear() {
    // A million symbols out of 8 bytes: terminates quickly with exactly that many outputs
    // (or an error), reading zeros past the end.
    let tables = tables();
    let indices = vec![40u16; 1 << 20];
    decode_checked(
        &[0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0],
        &indices,
        &tables,
    );
}
