//! Fixed-point probability tables ([`CdfTable`]) and their quantisation from floats.

use core::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use serde::{Deserialize, Serialize};

use crate::escape;

/// Number of fractional bits of every fixed-point probability.
///
/// The entries of every [`CdfTable::pmf`] sum to exactly `1 << PRECISION`, so an entry `n`
/// stands for the probability `n / 2^PRECISION`. This is the precision of constriction's
/// `DefaultContiguousCategoricalEntropyModel`, which [`encode`](crate::encode) and
/// [`decode`](crate::decode) use.
pub const PRECISION: u32 = 24;

/// The sum of the entries of every table, `2^PRECISION`.
const TOTAL: u32 = 1 << PRECISION;

/// Largest allowed number of pmf entries of one [`CdfTable`], escape bin included.
///
/// The bound keeps untrusted model files from asking for huge allocations, and keeps the
/// number of bins far below `2^PRECISION` so that every bin can hold a nonzero probability.
pub const MAX_TABLE_LEN: usize = 1 << 16;

/// Error building or validating a [`CdfTable`] or a set of tables.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    /// The pmf has fewer than two entries: at least one symbol besides the escape bin is needed.
    #[error("a table needs at least one symbol besides the escape bin, got {len} pmf entries")]
    TooShort {
        /// Number of pmf entries, escape bin included.
        len: usize,
    },
    /// The pmf has more than [`MAX_TABLE_LEN`] entries.
    #[error("a table has {len} pmf entries, more than the maximum of {max}")]
    TooLong {
        /// Number of pmf entries (that would be) needed, escape bin included.
        len: usize,
        /// The maximum, [`MAX_TABLE_LEN`].
        max: usize,
    },
    /// The last symbol of the support, `offset + len - 2`, does not fit in an `i32`.
    #[error("the support starting at {offset} with {num_symbols} symbols overflows i32")]
    OffsetOverflow {
        /// First symbol of the support.
        offset: i32,
        /// Number of symbols of the support (pmf entries without the escape bin).
        num_symbols: usize,
    },
    /// A fixed-point probability is zero.
    #[error("pmf entry {index} is zero")]
    ZeroProbability {
        /// Position of the zero entry in the pmf.
        index: usize,
    },
    /// The fixed-point probabilities do not sum to `1 << PRECISION`.
    #[error("the pmf sums to {sum}, not 1 << {PRECISION}")]
    BadSum {
        /// The actual sum.
        sum: u64,
    },
    /// A float mass is negative, infinite or NaN.
    #[error("probability mass {index} is {value}; masses must be finite and >= 0")]
    InvalidProbability {
        /// Position of the mass; `probabilities.len()` denotes the tail mass.
        index: usize,
        /// The offending value.
        value: f64,
    },
    /// The float masses sum to zero or to infinity.
    #[error("the probability masses sum to {total}; the sum must be finite and > 0")]
    InvalidTotalMass {
        /// The sum of all masses, tail mass included.
        total: f64,
    },
    /// A Gaussian scale is not a finite positive number.
    #[error("scale {index} is {value}; scales must be finite and > 0")]
    InvalidScale {
        /// Position of the scale in the slice passed in.
        index: usize,
        /// The offending value.
        value: f32,
    },
    /// More tables than a `u16` table index can address.
    #[error("{count} tables given, but u16 table indices address at most {max}")]
    TooManyTables {
        /// Number of tables given.
        count: usize,
        /// The maximum, `1 << 16`.
        max: usize,
    },
    /// One table of a set of tables is invalid.
    #[error("table {index} is invalid: {source}")]
    InTable {
        /// Position of the invalid table.
        index: usize,
        /// What is wrong with it.
        #[source]
        source: Box<TableError>,
    },
}

/// A discrete distribution over the integers `offset..offset + len` plus one escape bin.
///
/// The distribution is stored as fixed-point probabilities (the *pmf*) with [`PRECISION`]
/// fractional bits: entry `i < len` is the probability of the symbol `offset + i` times
/// `2^PRECISION`, and the last entry (position `len`) is the *escape bin*, the total
/// probability of every `i32` outside the support `offset..=offset + len - 1`.
/// A symbol that falls into the escape bin is coded as the escape followed by its exact value
/// under uniform models (see [`encode`](crate::encode)), so every `i32` is representable.
///
/// # Invariants
///
/// A `CdfTable` obtained from any constructor or from deserialisation satisfies:
/// - the pmf has at least 2 and at most [`MAX_TABLE_LEN`] entries (one symbol and the escape
///   bin at least);
/// - every entry is `>= 1`, so every `i32` has a nonzero probability and a finite code length;
/// - the entries sum to exactly `1 << PRECISION`;
/// - the last symbol of the support, `offset + len - 1`, does not overflow `i32`.
///
/// [`CdfTable::validate`] checks these, so values built by other means can be checked too.
///
/// # Serialisation
///
/// Serialises as `{"offset": i32, "pmf": [u32, ...]}`. Deserialisation runs
/// [`validate`](CdfTable::validate) and fails on a broken table, so a table read from an
/// untrusted model file is either valid or an error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CdfTableRepr")]
pub struct CdfTable {
    offset: i32,
    pmf: Vec<u32>,
}

/// The unchecked wire form of a [`CdfTable`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CdfTableRepr {
    offset: i32,
    pmf: Vec<u32>,
}

impl TryFrom<CdfTableRepr> for CdfTable {
    type Error = TableError;

    fn try_from(repr: CdfTableRepr) -> Result<Self, TableError> {
        CdfTable::from_fixed_point(repr.offset, repr.pmf)
    }
}

impl CdfTable {
    /// Quantises float masses to a table whose support starts at `offset`.
    ///
    /// `probabilities[i]` is the (unnormalised) mass of the symbol `offset + i`, and
    /// `tail_mass` the mass of every other `i32` together (the escape bin). With
    /// `p_j = m_j / sum_k m_k` the normalised masses (escape bin last) and
    /// `N = 2^PRECISION`, the result is the integer vector `n` that maximises
    ///
    /// ```text
    ///     sum_j p_j log2(n_j / N)      subject to   sum_j n_j = N,   n_j >= 1,
    /// ```
    ///
    /// i.e. that minimises the expected code length (cross entropy) of data distributed as
    /// `p`. It starts from `n_j = 1 + floor(p_j (N - len))`, hands out or takes back the
    /// remaining units greedily by the largest gain `p_j log(1 + 1/n_j)` (smallest loss
    /// `-p_j log(1 - 1/n_j)`), then moves single units from the bin with the smallest loss to
    /// the bin with the largest gain while that strictly helps. The objective is separable and
    /// concave, so this local optimum is the global one; the rate excess over the ideal
    /// `-log2 p_j` comes only from rounding to integers and the `n_j >= 1` floor.
    ///
    /// The result depends only on the input bits: the arithmetic is IEEE `f64` plus `libm`'s
    /// `log1p`, and ties are broken by position, so the same input gives the same table on
    /// every platform.
    ///
    /// # Errors
    ///
    /// - [`TableError::TooLong`] if `probabilities.len() + 1 > MAX_TABLE_LEN`;
    /// - [`TableError::TooShort`] if `probabilities` is empty;
    /// - [`TableError::OffsetOverflow`] if `offset + probabilities.len() - 1` overflows `i32`;
    /// - [`TableError::InvalidProbability`] if a mass (or `tail_mass`, reported at position
    ///   `probabilities.len()`) is negative, infinite or NaN;
    /// - [`TableError::InvalidTotalMass`] if the masses sum to zero or overflow to infinity.
    pub fn from_probabilities(
        offset: i32,
        probabilities: &[f64],
        tail_mass: f64,
    ) -> Result<Self, TableError> {
        let len = probabilities.len() + 1;
        check_shape(offset, len)?;

        let mut total = 0.0f64;
        for (index, &mass) in probabilities
            .iter()
            .chain(core::iter::once(&tail_mass))
            .enumerate()
        {
            if !(mass.is_finite() && mass >= 0.0) {
                return Err(TableError::InvalidProbability { index, value: mass });
            }
            total += mass;
        }
        if !(total.is_finite() && total > 0.0) {
            return Err(TableError::InvalidTotalMass { total });
        }

        let weights: Vec<f64> = probabilities
            .iter()
            .chain(core::iter::once(&tail_mass))
            .map(|&mass| mass / total)
            .collect();
        let pmf = quantise(&weights);
        let table = Self { offset, pmf };
        debug_assert_eq!(table.validate(), Ok(()));
        Ok(table)
    }

    /// Wraps an existing fixed-point pmf (escape bin last), checking the invariants.
    ///
    /// Use this to rebuild a table stored in a model file in some other form than serde.
    ///
    /// # Errors
    ///
    /// Every error of [`CdfTable::validate`].
    pub fn from_fixed_point(offset: i32, pmf: Vec<u32>) -> Result<Self, TableError> {
        let table = Self { offset, pmf };
        table.validate()?;
        Ok(table)
    }

    /// The first symbol of the support.
    #[inline]
    pub fn offset(&self) -> i32 {
        self.offset
    }

    /// The number of symbols of the support, i.e. `pmf().len() - 1` (at least 1).
    #[inline]
    pub fn num_symbols(&self) -> usize {
        self.pmf.len().saturating_sub(1)
    }

    /// The symbols with a bin of their own: `offset..=offset + len - 1`.
    ///
    /// Every other `i32` is coded through the escape bin.
    pub fn support(&self) -> core::ops::RangeInclusive<i32> {
        let last = i64::from(self.offset) + self.num_symbols() as i64 - 1;
        // The invariants guarantee that `last` fits; saturate instead of panicking anyway.
        let last = i32::try_from(last).unwrap_or(i32::MAX);
        self.offset..=last
    }

    /// The fixed-point probabilities, `2^PRECISION * p`, of the support symbols in increasing
    /// order followed by the escape bin.
    #[inline]
    pub fn pmf(&self) -> &[u32] {
        &self.pmf
    }

    /// Checks the [invariants](CdfTable#invariants).
    ///
    /// Needed only for values that bypassed the constructors; deserialisation already calls it.
    ///
    /// # Errors
    ///
    /// - [`TableError::TooShort`] if the pmf has fewer than 2 entries;
    /// - [`TableError::TooLong`] if it has more than [`MAX_TABLE_LEN`];
    /// - [`TableError::OffsetOverflow`] if the last support symbol overflows `i32`;
    /// - [`TableError::ZeroProbability`] for the first zero entry;
    /// - [`TableError::BadSum`] if the entries do not sum to `1 << PRECISION`.
    pub fn validate(&self) -> Result<(), TableError> {
        check_shape(self.offset, self.pmf.len())?;
        if let Some(index) = self.pmf.iter().position(|&p| p == 0) {
            return Err(TableError::ZeroProbability { index });
        }
        let sum: u64 = self.pmf.iter().map(|&p| u64::from(p)).sum();
        if sum != u64::from(TOTAL) {
            return Err(TableError::BadSum { sum });
        }
        Ok(())
    }

    /// Bits that [`encode`](crate::encode) spends on `symbol` under this table, ignoring the
    /// few bits of range-coder overhead: `-log2(n_i / 2^PRECISION)` for a support symbol with
    /// pmf entry `n_i`, and for any other symbol the information content of the escape bin plus
    /// that of its escape payload (see [`encode`](crate::encode)).
    ///
    /// The sum over a message is the ideal size that the coder approaches.
    #[must_use]
    pub fn information_content(&self, symbol: i32) -> f64 {
        let bits = |p: u32| f64::from(PRECISION) - libm::log2(f64::from(p.max(1)));
        let rel = i64::from(symbol) - i64::from(self.offset);
        let num_symbols = self.num_symbols();
        match usize::try_from(rel) {
            Ok(index) if index < num_symbols => bits(self.pmf[index]),
            _ => {
                let escape = self.pmf.last().copied().unwrap_or(1);
                let (lo, hi) = (*self.support().start(), *self.support().end());
                bits(escape) + escape::payload_bits(escape::zigzag_distance(symbol, lo, hi))
            }
        }
    }

    /// Entropy-coding cost in bits of `symbols` under this table: the sum of
    /// [`information_content`](CdfTable::information_content).
    #[must_use]
    pub fn total_information_content(&self, symbols: &[i32]) -> f64 {
        symbols.iter().map(|&s| self.information_content(s)).sum()
    }
}

/// Checks the length and offset invariants of a table with `len` pmf entries.
fn check_shape(offset: i32, len: usize) -> Result<(), TableError> {
    if len > MAX_TABLE_LEN {
        return Err(TableError::TooLong {
            len,
            max: MAX_TABLE_LEN,
        });
    }
    if len < 2 {
        return Err(TableError::TooShort { len });
    }
    let num_symbols = len - 1;
    if i64::from(offset) + num_symbols as i64 - 1 > i64::from(i32::MAX) {
        return Err(TableError::OffsetOverflow {
            offset,
            num_symbols,
        });
    }
    Ok(())
}

/// An `f64` ordered by [`f64::total_cmp`], for heap keys.
#[derive(Clone, Copy, Debug)]
struct Key(f64);

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Increase of `p ln n` when `n` grows by one: `p ln(1 + 1/n)`.
#[inline]
fn gain(p: f64, n: u32) -> f64 {
    p * libm::log1p(1.0 / f64::from(n))
}

/// Decrease of `p ln n` when `n` (`>= 2`) shrinks by one: `-p ln(1 - 1/n)`.
#[inline]
fn loss(p: f64, n: u32) -> f64 {
    -p * libm::log1p(-1.0 / f64::from(n))
}

/// Candidates for receiving one more unit: largest gain first, then lowest position.
type AddHeap = BinaryHeap<(Key, Reverse<usize>)>;
/// Candidates for giving up one unit: smallest loss first, then lowest position.
type RemoveHeap = BinaryHeap<Reverse<(Key, usize)>>;

/// Lazily maintained heaps over the bins of a pmf being quantised.
///
/// Every change of a bin pushes fresh entries; an entry whose key no longer equals the key
/// recomputed from the current count is stale and dropped when it reaches the top.
struct Allocation<'a> {
    weights: &'a [f64],
    counts: Vec<u32>,
    add: AddHeap,
    remove: RemoveHeap,
}

impl Allocation<'_> {
    fn push(&mut self, index: usize) {
        let (p, n) = (self.weights[index], self.counts[index]);
        self.add.push((Key(gain(p, n)), Reverse(index)));
        if n >= 2 {
            self.remove.push(Reverse((Key(loss(p, n)), index)));
        }
    }

    /// Best valid bin to grow, with its gain, leaving it on the heap.
    fn best_add(&mut self) -> Option<(f64, usize)> {
        while let Some(&(Key(g), Reverse(index))) = self.add.peek() {
            if g.to_bits() == gain(self.weights[index], self.counts[index]).to_bits() {
                return Some((g, index));
            }
            self.add.pop();
        }
        None
    }

    /// Best valid bin to shrink, with its loss, leaving it on the heap.
    fn best_remove(&mut self) -> Option<(f64, usize)> {
        while let Some(&Reverse((Key(l), index))) = self.remove.peek() {
            let n = self.counts[index];
            if n >= 2 && l.to_bits() == loss(self.weights[index], n).to_bits() {
                return Some((l, index));
            }
            self.remove.pop();
        }
        None
    }

    fn grow(&mut self, index: usize) {
        self.counts[index] += 1;
        self.push(index);
    }

    fn shrink(&mut self, index: usize) {
        self.counts[index] -= 1;
        self.push(index);
    }
}

/// Optimal fixed-point quantisation of normalised weights (see
/// [`CdfTable::from_probabilities`]). Requires `2 <= weights.len() <= MAX_TABLE_LEN` and
/// finite weights `>= 0` summing to about 1; returns counts `>= 1` summing to `2^PRECISION`.
fn quantise(weights: &[f64]) -> Vec<u32> {
    let len = weights.len();
    let free = f64::from(TOTAL - len as u32);
    let counts: Vec<u32> = weights
        .iter()
        // `w <= 1` up to rounding, so the cast cannot saturate in a harmful way.
        .map(|&w| 1 + (w * free).floor().min(free) as u32)
        .collect();
    let mut excess: i64 = counts.iter().map(|&n| i64::from(n)).sum::<i64>() - i64::from(TOTAL);

    let mut alloc = Allocation {
        weights,
        counts,
        add: BinaryHeap::with_capacity(len + 16),
        remove: BinaryHeap::with_capacity(len + 16),
    };
    for index in 0..len {
        alloc.push(index);
    }

    // Reach the exact total. The deficit is below `len` (one unit lost per floor at most); an
    // excess can only come from rounding in the normalisation and is tiny.
    while excess < 0 {
        let Some((_, index)) = alloc.best_add() else {
            break; // unreachable: the add heap always holds every bin
        };
        alloc.grow(index);
        excess += 1;
    }
    while excess > 0 {
        let Some((_, index)) = alloc.best_remove() else {
            break; // unreachable: a sum above 2^PRECISION > len needs a bin with n >= 2
        };
        alloc.shrink(index);
        excess -= 1;
    }

    // Exchange units until no single move improves the objective. Every move strictly raises
    // it, so this terminates; the cap only guards against float ping-pong.
    for _ in 0..4 * len + 64 {
        let (Some((g, to)), Some((l, from))) = (alloc.best_add(), alloc.best_remove()) else {
            break;
        };
        if to == from || g <= l {
            break;
        }
        alloc.shrink(from);
        alloc.grow(to);
    }
    alloc.counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entropy_excess(table: &CdfTable, p: &[f64]) -> f64 {
        let total: f64 = p.iter().sum();
        p.iter()
            .zip(table.pmf())
            .filter(|(&q, _)| q > 0.0)
            .map(|(&q, &n)| {
                let q = q / total;
                q * (libm::log2(q) - libm::log2(f64::from(n) / f64::from(TOTAL)))
            })
            .sum()
    }

    #[test]
    fn sums_and_nonzero() {
        let t = CdfTable::from_probabilities(-3, &[0.1, 0.0, 0.5, 1e-30, 0.3], 1e-12).unwrap();
        assert_eq!(t.pmf().len(), 6);
        assert_eq!(t.pmf().iter().map(|&p| u64::from(p)).sum::<u64>(), 1 << 24);
        assert!(t.pmf().iter().all(|&p| p >= 1));
        assert_eq!(t.support(), -3..=1);
        assert_eq!(t.validate(), Ok(()));
    }

    #[test]
    fn greedy_is_locally_optimal() {
        let p = [0.7, 0.2, 1e-9, 0.05, 0.03, 0.019_999_999];
        let t = CdfTable::from_probabilities(0, &p[..5], p[5]).unwrap();
        let n = t.pmf();
        // No single-unit move improves sum p ln n.
        for i in 0..n.len() {
            for j in 0..n.len() {
                if i != j && n[j] >= 2 {
                    assert!(gain(p[i], n[i]) <= loss(p[j], n[j]) + 1e-18, "{i} {j}");
                }
            }
        }
        assert!(entropy_excess(&t, &p) < 1e-6);
    }

    #[test]
    fn single_symbol_and_zero_tail() {
        let t = CdfTable::from_probabilities(i32::MAX, &[1.0], 0.0).unwrap();
        assert_eq!(t.pmf(), &[TOTAL - 1, 1]);
        assert_eq!(t.support(), i32::MAX..=i32::MAX);
    }

    #[test]
    fn rejects_bad_inputs() {
        use TableError::*;
        assert!(matches!(
            CdfTable::from_probabilities(0, &[], 1.0),
            Err(TooShort { len: 1 })
        ));
        assert!(matches!(
            CdfTable::from_probabilities(i32::MAX, &[1.0, 1.0], 1.0),
            Err(OffsetOverflow { .. })
        ));
        assert!(matches!(
            CdfTable::from_probabilities(0, &[1.0, -1.0], 1.0),
            Err(InvalidProbability { index: 1, .. })
        ));
        assert!(matches!(
            CdfTable::from_probabilities(0, &[1.0], f64::NAN),
            Err(InvalidProbability { index: 1, .. })
        ));
        assert!(matches!(
            CdfTable::from_probabilities(0, &[f64::INFINITY], 0.0),
            Err(InvalidProbability { index: 0, .. })
        ));
        assert!(matches!(
            CdfTable::from_probabilities(0, &[f64::MAX, f64::MAX], 0.0),
            Err(InvalidTotalMass { .. })
        ));
        assert!(matches!(
            CdfTable::from_probabilities(0, &[0.0, 0.0], 0.0),
            Err(InvalidTotalMass { .. })
        ));
        assert!(matches!(
            CdfTable::from_probabilities(0, &vec![1.0; MAX_TABLE_LEN], 0.0),
            Err(TooLong { .. })
        ));
    }

    #[test]
    fn validate_rejects_each_broken_kind() {
        use TableError::*;
        let broken = |offset, pmf: Vec<u32>| CdfTable { offset, pmf }.validate();
        assert!(matches!(broken(0, vec![]), Err(TooShort { len: 0 })));
        assert!(matches!(broken(0, vec![TOTAL]), Err(TooShort { len: 1 })));
        assert!(matches!(
            broken(0, vec![1; MAX_TABLE_LEN + 1]),
            Err(TooLong { .. })
        ));
        assert!(matches!(
            broken(i32::MAX, vec![TOTAL - 2, 1, 1]),
            Err(OffsetOverflow { .. })
        ));
        assert!(matches!(
            broken(0, vec![TOTAL, 0]),
            Err(ZeroProbability { index: 1 })
        ));
        assert!(matches!(broken(0, vec![TOTAL, 1]), Err(BadSum { .. })));
        assert!(matches!(
            broken(0, vec![u32::MAX, u32::MAX]),
            Err(BadSum { .. })
        ));
        assert_eq!(broken(i32::MAX - 1, vec![TOTAL - 2, 1, 1]), Ok(()));
        assert_eq!(broken(i32::MIN, vec![TOTAL - 2, 1, 1]), Ok(()));
    }

    #[test]
    fn information_content_of_support_and_escape() {
        let t = CdfTable::from_fixed_point(5, vec![TOTAL / 2, TOTAL / 4, TOTAL / 4]).unwrap();
        assert_eq!(t.information_content(5), 1.0);
        assert_eq!(t.information_content(6), 2.0);
        // Escapes cost the escape bin plus a payload that grows with the distance.
        let near = t.information_content(7);
        let far = t.information_content(i32::MAX);
        assert!(near > 2.0 && far > near + 20.0, "{near} {far}");
        assert!(t.information_content(i32::MIN).is_finite());
    }
}
