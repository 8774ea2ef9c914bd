//! Round trips of `ocular_entropy::{encode, decode}` and the coded size against the ideal.

#[path = "entropy_ylike.rs"]
mod ylike;

use ocular_entropy::{
    decode, encode, gaussian_tables, scale_table, CdfTable, CodingTables, DecodeError, EncodeError,
};
use proptest::prelude::*;
use std::sync::OnceLock;

/// Sum of `-log2 p` of every symbol under its integer table, escape payloads included.
fn ideal_bits(symbols: &[i32], indices: &[u16], tables: &[CdfTable]) -> f64 {
    symbols
        .iter()
        .zip(indices)
        .map(|(&s, &i)| tables[usize::from(i)].information_content(s))
        .sum()
}

/// The Gaussian tables, built once per test binary.
fn gaussian() -> &'static (Vec<CdfTable>, CodingTables) {
    static TABLES: OnceLock<(Vec<CdfTable>, CodingTables)> = OnceLock::new();
    TABLES.get_or_init(|| {
        let tables = gaussian_tables(&scale_table()).unwrap();
        let coding = CodingTables::new(&tables).unwrap();
        (tables, coding)
    })
}

/// A random table: offset anywhere (including next to the ends of `i32`), 1..40 float masses
/// with some zeros and wildly different magnitudes, and a tail mass that may be zero.
fn arb_table() -> impl Strategy<Value = CdfTable> {
    let masses = prop::collection::vec(
        prop_oneof![
            3 => 0.0f64..1.0,
            1 => Just(0.0),
            1 => 1e-12f64..1e-6,
        ],
        1..40,
    );
    let tail = prop_oneof![Just(0.0), 0.0f64..0.1, Just(1e-9)];
    let offset = prop_oneof![
        -100i32..100,
        any::<i32>(),
        Just(i32::MIN),
        Just(i32::MAX - 40),
    ];
    (offset, masses, tail).prop_filter_map("valid table", |(offset, mut masses, tail)| {
        masses[0] += 1e-3; // total mass > 0
        CdfTable::from_probabilities(offset, &masses, tail).ok()
    })
}

/// A symbol that is often in the table's support, sometimes just outside, sometimes anywhere.
fn arb_symbol() -> impl Strategy<Value = (u32, i32)> {
    // (selector, value): the selector picks a table-relative symbol in `message`.
    (any::<u32>(), any::<i32>())
}

fn pick_symbol(table: &CdfTable, selector: u32, value: i32) -> i32 {
    let support = table.support();
    let (lo, hi) = (i64::from(*support.start()), i64::from(*support.end()));
    let width = hi - lo + 1;
    let clamp = |v: i64| v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
    match selector % 8 {
        0..=3 => clamp(lo + i64::from(selector / 8) % width),
        4 => clamp(hi + 1 + i64::from(selector / 8 % 70_000)),
        5 => clamp(lo - 1 - i64::from(selector / 8 % 70_000)),
        6 => [i32::MIN, i32::MAX, i32::MIN + 1, i32::MAX - 1, 0, -1][(selector / 8 % 6) as usize],
        _ => value,
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_tables_round_trip(
        tables in prop::collection::vec(arb_table(), 1..5),
        message in prop::collection::vec((any::<u16>(), arb_symbol()), 0..300),
    ) {
        let coding = CodingTables::new(&tables).unwrap();
        prop_assert_eq!(coding.len(), tables.len());
        let indices: Vec<u16> = message
            .iter()
            .map(|&(i, _)| i % tables.len() as u16)
            .collect();
        let symbols: Vec<i32> = message
            .iter()
            .zip(&indices)
            .map(|(&(_, (sel, v)), &i)| pick_symbol(&tables[usize::from(i)], sel, v))
            .collect();

        let bytes = encode(&symbols, &indices, &coding).unwrap();
        prop_assert_eq!(bytes.len() % 4, 0);
        let decoded = decode(&bytes, &indices, &coding).unwrap();
        prop_assert_eq!(&decoded, &symbols);

        // Never far above the ideal: range-coder slack is < 2^-(32-24) relative per symbol plus
        // at most a few words at the end.
        let ideal = ideal_bits(&symbols, &indices, &tables);
        let bits = 8.0 * bytes.len() as f64;
        prop_assert!(bits <= ideal * 1.01 + symbols.len() as f64 * 0.01 + 96.0,
            "{} bits for ideal {}", bits, ideal);
    }

    #[test]
    fn any_i32_round_trips_under_gaussian_tables(
        message in prop::collection::vec((0u16..64, any::<i32>()), 1..200),
    ) {
        let (_, coding) = gaussian();
        let (indices, symbols): (Vec<u16>, Vec<i32>) = message.into_iter().unzip();
        let bytes = encode(&symbols, &indices, coding).unwrap();
        prop_assert_eq!(decode(&bytes, &indices, coding).unwrap(), symbols);
    }
}

#[test]
fn every_symbol_near_each_gaussian_support_round_trips() {
    let (tables, coding) = gaussian();
    let mut symbols = Vec::new();
    let mut indices = Vec::new();
    for (i, table) in tables.iter().enumerate() {
        let support = table.support();
        for s in support.start() - 3..=support.end() + 3 {
            symbols.push(s);
            indices.push(i as u16);
        }
    }
    let bytes = encode(&symbols, &indices, coding).unwrap();
    assert_eq!(decode(&bytes, &indices, coding).unwrap(), symbols);
}

#[test]
fn y_like_size_is_within_0_2_percent_of_ideal() {
    let (tables, coding) = gaussian();
    let (symbols, indices) = ylike::y_like(1 << 20, 7);
    let bytes = encode(&symbols, &indices, coding).unwrap();
    let decoded = decode(&bytes, &indices, coding).unwrap();
    assert!(decoded == symbols, "y-like round trip failed");

    let ideal = ideal_bits(&symbols, &indices, tables);
    let bits = 8.0 * bytes.len() as f64;
    let excess = bits / ideal - 1.0;
    println!(
        "y-like: {} symbols, {:.4} bits/symbol ideal, {} bytes coded, {:+.4}% over ideal",
        symbols.len(),
        ideal / symbols.len() as f64,
        bytes.len(),
        100.0 * excess
    );
    assert!(
        bits <= ideal * 1.002 + 64.0,
        "{bits} bits for ideal {ideal}"
    );
}

#[test]
fn empty_message() {
    let (_, coding) = gaussian();
    let bytes = encode(&[], &[], coding).unwrap();
    assert!(bytes.is_empty());
    assert_eq!(decode(&bytes, &[], coding).unwrap(), Vec::<i32>::new());
    let none = CodingTables::new(&[]).unwrap();
    assert!(none.is_empty());
    assert_eq!(encode(&[], &[], &none).unwrap(), Vec::<u8>::new());
}

#[test]
fn errors_are_reported() {
    let (_, coding) = gaussian();
    assert_eq!(
        encode(&[1, 2], &[0], coding),
        Err(EncodeError::LengthMismatch {
            symbols: 2,
            table_indices: 1
        })
    );
    assert_eq!(
        encode(&[1, 2], &[0, 64], coding),
        Err(EncodeError::TableIndexOutOfRange {
            position: 1,
            index: 64,
            num_tables: 64
        })
    );
    let bytes = encode(&[1, 2], &[0, 1], coding).unwrap();
    assert_eq!(
        decode(&bytes, &[0, 64], coding),
        Err(DecodeError::TableIndexOutOfRange {
            position: 1,
            index: 64,
            num_tables: 64
        })
    );
    assert_eq!(
        decode(&bytes[..bytes.len() - 1], &[0, 1], coding),
        Err(DecodeError::LengthNotMultipleOf4 {
            len: bytes.len() - 1
        })
    );
    // Errors display without panicking.
    assert!(!DecodeError::InvalidData { position: 3 }
        .to_string()
        .is_empty());
}

#[test]
fn coding_tables_are_shareable_between_threads() {
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    let (_, coding) = gaussian();
    assert_send_sync(coding);
    let (symbols, indices) = ylike::y_like(10_000, 3);
    let bytes = encode(&symbols, &indices, coding).unwrap();
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| assert_eq!(decode(&bytes, &indices, coding).unwrap(), symbols));
        }
    });
}
