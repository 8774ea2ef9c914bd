//! Invariants of `CdfTable`, the Gaussian tables and `scale_index`.

use ocular_entropy::{
    gaussian_tables, scale_index, scale_table, CdfTable, CodingTables, TableError, MAX_TABLE_LEN,
    NUM_SCALES, PRECISION, SCALE_MAX, SCALE_MIN,
};
use proptest::prelude::*;

const TOTAL: u64 = 1 << PRECISION;

fn check_invariants(table: &CdfTable) {
    let pmf = table.pmf();
    assert!(pmf.len() >= 2 && pmf.len() <= MAX_TABLE_LEN);
    assert_eq!(pmf.iter().map(|&p| u64::from(p)).sum::<u64>(), TOTAL);
    assert!(pmf.iter().all(|&p| p >= 1));
    assert_eq!(table.validate(), Ok(()));
    let support = table.support();
    assert_eq!(*support.start(), table.offset());
    assert_eq!(
        i64::from(*support.end()) - i64::from(*support.start()) + 1,
        pmf.len() as i64 - 1
    );
}

/// Cross entropy minus entropy (bits) of the normalised masses `p` coded with `table`.
fn excess_bits(table: &CdfTable, masses: &[f64]) -> f64 {
    let total: f64 = masses.iter().sum();
    masses
        .iter()
        .zip(table.pmf())
        .filter(|(&m, _)| m > 0.0)
        .map(|(&m, &n)| {
            let p = m / total;
            p * (p.log2() - (f64::from(n) / TOTAL as f64).log2())
        })
        .sum()
}

fn json_round_trip(table: &CdfTable) {
    let json = serde_json::to_string(table).unwrap();
    let back: CdfTable = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, table);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn quantised_tables_keep_invariants(
        offset in prop_oneof![any::<i32>(), -50i32..50],
        masses in prop::collection::vec(
            prop_oneof![4 => 0.0f64..10.0, 1 => Just(0.0), 1 => 1e-300f64..1e-9],
            1..300,
        ),
        tail in prop_oneof![Just(0.0), 0.0f64..1.0],
    ) {
        let n = masses.len() as i64;
        let result = CdfTable::from_probabilities(offset, &masses, tail);
        let total: f64 = masses.iter().sum::<f64>() + tail;
        if i64::from(offset) + n - 1 > i64::from(i32::MAX) {
            prop_assert!(
                matches!(result, Err(TableError::OffsetOverflow { .. })),
                "expected an overflow error, got {:?}",
                result
            );
            return Ok(());
        }
        if total <= 0.0 {
            let rejected = matches!(result, Err(TableError::InvalidTotalMass { .. }));
            prop_assert!(rejected, "expected a total-mass error, got {:?}", result);
            return Ok(());
        }
        let table = result.unwrap();
        check_invariants(&table);
        prop_assert_eq!(table.offset(), offset);

        // Deterministic.
        prop_assert_eq!(&CdfTable::from_probabilities(offset, &masses, tail).unwrap(), &table);
        json_round_trip(&table);

        // Close to the ideal rate: the floor n >= 1 and integer rounding cost at most a few
        // units of 2^-24 per bin.
        let mut all = masses.clone();
        all.push(tail);
        let excess = excess_bits(&table, &all);
        prop_assert!(excess <= 4.0 * all.len() as f64 / TOTAL as f64 + 1e-12, "excess {}", excess);

        // Scaling all masses does not change the table (only ratios matter) when the
        // scaling is exact (a power of two).
        let scaled: Vec<f64> = masses.iter().map(|&m| m * 8.0).collect();
        prop_assert_eq!(
            &CdfTable::from_probabilities(offset, &scaled, tail * 8.0).unwrap(),
            &table
        );
    }
}

#[test]
fn deserialisation_and_validate_reject_every_broken_kind() {
    let total = 1u32 << PRECISION;
    let cases: Vec<(String, &str)> = vec![
        (r#"{"offset":0,"pmf":[]}"#.into(), "too short"),
        (format!(r#"{{"offset":0,"pmf":[{total}]}}"#), "too short"),
        (
            format!(
                r#"{{"offset":0,"pmf":[{}]}}"#,
                vec!["256"; MAX_TABLE_LEN + 1].join(",")
            ),
            "too long",
        ),
        (format!(r#"{{"offset":0,"pmf":[{total},0]}}"#), "zero"),
        (
            format!(r#"{{"offset":0,"pmf":[{},1]}}"#, total - 2),
            "sum low",
        ),
        (format!(r#"{{"offset":0,"pmf":[{total},1]}}"#), "sum high"),
        (
            r#"{"offset":0,"pmf":[4294967295,4294967295,2]}"#.into(),
            "sum wraps u32",
        ),
        (
            format!(r#"{{"offset":2147483647,"pmf":[{},1,1]}}"#, total - 2),
            "offset overflow",
        ),
        (
            format!(r#"{{"offset":0,"pmf":[{},1],"x":1}}"#, total - 1),
            "unknown field",
        ),
        (r#"{"pmf":[16777215,1]}"#.into(), "missing offset"),
        (r#"{"offset":0,"pmf":[-1,1]}"#.into(), "negative"),
        (
            r#"{"offset":2147483648,"pmf":[16777215,1]}"#.into(),
            "offset > i32",
        ),
    ];
    for (json, kind) in &cases {
        assert!(
            serde_json::from_str::<CdfTable>(json).is_err(),
            "{kind} was accepted: {json}"
        );
    }

    use TableError::*;
    let t = |offset, pmf: Vec<u32>| CdfTable::from_fixed_point(offset, pmf);
    assert!(matches!(t(0, vec![]), Err(TooShort { .. })));
    assert!(matches!(t(0, vec![total]), Err(TooShort { .. })));
    assert!(matches!(
        t(0, vec![1; MAX_TABLE_LEN + 1]),
        Err(TooLong { .. })
    ));
    assert!(matches!(
        t(0, vec![total, 0]),
        Err(ZeroProbability { index: 1 })
    ));
    assert!(matches!(t(0, vec![total - 2, 1]), Err(BadSum { .. })));
    assert!(matches!(
        t(0, vec![u32::MAX, u32::MAX, 2]),
        Err(BadSum { .. })
    ));
    assert!(matches!(
        t(i32::MAX, vec![total - 2, 1, 1]),
        Err(OffsetOverflow { .. })
    ));
    // The edge cases that are fine.
    let ok = t(i32::MAX, vec![total - 1, 1]).unwrap();
    assert_eq!(ok.support(), i32::MAX..=i32::MAX);
    check_invariants(&ok);
    check_invariants(&t(i32::MIN, vec![total - 1, 1]).unwrap());
    // The longest table: 2^16 entries of 2^8 each.
    check_invariants(&t(-5, vec![256u32; MAX_TABLE_LEN]).unwrap());

    let good = CdfTable::from_probabilities(0, &[1.0, 2.0], 0.1).unwrap();
    assert!(CodingTables::new(&[good.clone(), good]).is_ok());
}

#[test]
fn gaussian_tables_are_deterministic_valid_and_close_to_the_float_model() {
    let scales = scale_table();
    let tables = gaussian_tables(&scales).unwrap();
    assert_eq!(tables, gaussian_tables(&scales).unwrap());
    assert_eq!(tables.len(), NUM_SCALES);
    for (i, table) in tables.iter().enumerate() {
        check_invariants(table);
        json_round_trip(table);
        let support = table.support();
        assert_eq!(
            *support.start(),
            -*support.end(),
            "table {i} is not centred"
        );
        // Escape bin: about 1e-9 of the mass (at least one unit of 2^-24).
        let escape = f64::from(*table.pmf().last().unwrap()) / TOTAL as f64;
        assert!(escape <= 1e-7, "table {i}: escape {escape}");

        // Rate against the float model (recomputed naively here via the density integral
        // through the CDF of the normal distribution).
        let s = f64::from(scales[i]);
        let phi = |x: f64| 0.5 * libm::erfc(-x / (s * std::f64::consts::SQRT_2));
        let masses: Vec<f64> = support
            .clone()
            .map(|k| phi(f64::from(k) + 0.5) - phi(f64::from(k) - 0.5))
            .collect();
        let excess = excess_bits(table, &masses);
        assert!(
            excess < 1e-4,
            "table {i}: {excess} bits over the float model"
        );
        // Information content is symmetric (up to a tie-breaking unit) and grows away from 0.
        assert!((table.information_content(1) - table.information_content(-1)).abs() < 1e-5);
        let half = *support.end() / 2 + 1;
        assert!(table.information_content(0) < table.information_content(half));
        assert!(table.information_content(half) <= table.information_content(*support.end()));
    }
    // Wider scales give wider tables.
    assert!(tables
        .windows(2)
        .all(|w| w[0].pmf().len() <= w[1].pmf().len()));
}

/// Reference: linear search of the definition.
fn reference_index(scale: f32) -> u8 {
    if scale.is_nan() {
        return (NUM_SCALES - 1) as u8;
    }
    let table = scale_table();
    table
        .iter()
        .position(|&t| t >= scale)
        .unwrap_or(NUM_SCALES - 1) as u8
}

fn next_up(x: f32) -> f32 {
    // For finite positive x only.
    f32::from_bits(x.to_bits() + 1)
}

fn next_down(x: f32) -> f32 {
    f32::from_bits(x.to_bits() - 1)
}

#[test]
fn scale_index_boundaries_are_exact() {
    let table = scale_table();
    assert_eq!(table[0], SCALE_MIN);
    assert_eq!(table[NUM_SCALES - 1], SCALE_MAX);
    for (i, &t) in table.iter().enumerate() {
        assert_eq!(usize::from(scale_index(t)), i, "at table[{i}]");
        assert_eq!(
            usize::from(scale_index(next_up(t))),
            (i + 1).min(NUM_SCALES - 1),
            "just above table[{i}]"
        );
        assert_eq!(
            usize::from(scale_index(next_down(t))),
            i,
            "just below table[{i}]"
        );
    }
}

#[test]
fn scale_index_special_values() {
    let last = (NUM_SCALES - 1) as u8;
    assert_eq!(scale_index(f32::NAN), last);
    assert_eq!(scale_index(-f32::NAN), last);
    assert_eq!(scale_index(f32::INFINITY), last);
    assert_eq!(scale_index(f32::MAX), last);
    assert_eq!(scale_index(1000.0), last);
    assert_eq!(scale_index(f32::NEG_INFINITY), 0);
    assert_eq!(scale_index(f32::MIN), 0);
    assert_eq!(scale_index(-1.0), 0);
    assert_eq!(scale_index(0.0), 0);
    assert_eq!(scale_index(-0.0), 0);
    assert_eq!(scale_index(f32::from_bits(1)), 0); // smallest subnormal
    assert_eq!(scale_index(f32::MIN_POSITIVE), 0);
    assert_eq!(scale_index(0.1), 0);
    assert_eq!(scale_index(1.0), 18); // table[17] = 0.891, table[18] = 1.0077
}

#[test]
fn scale_index_is_monotone_and_matches_the_definition() {
    // A sweep over all finite f32 bit patterns (both signs) with a prime stride.
    let mut previous: Option<(f32, u8)> = None;
    let mut bits = 0u32;
    while bits < 0x7f80_0000 {
        let x = f32::from_bits(bits);
        let i = scale_index(x);
        assert_eq!(i, reference_index(x), "at {x:e}");
        if let Some((px, pi)) = previous {
            assert!(px <= x && pi <= i, "not monotone between {px:e} and {x:e}");
        }
        previous = Some((x, i));
        assert_eq!(scale_index(-x), 0);
        bits += 7919;
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn scale_index_matches_reference_on_random_floats(bits in any::<u32>()) {
        let x = f32::from_bits(bits);
        prop_assert_eq!(scale_index(x), reference_index(x));
    }

    #[test]
    fn scale_index_is_monotone_on_pairs(a in 0.0f32..300.0, b in 0.0f32..300.0) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        prop_assert!(scale_index(lo) <= scale_index(hi));
    }
}
