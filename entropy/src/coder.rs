//! Range coding of `i32` symbols with per-symbol tables.

use core::convert::Infallible;

use constriction::{
    backends::{ReadWords, WriteWords},
    stream::{
        model::{DefaultContiguousCategoricalEntropyModel, DefaultUniformModel},
        queue::RangeDecoder,
        queue::RangeEncoder,
        Decode, Encode,
    },
    Queue,
};

use crate::escape::{self, CHUNK_BITS};
use crate::table::{CdfTable, TableError};

/// Most tables a [`CodingTables`] can hold: everything a `u16` table index addresses.
pub const MAX_TABLES: usize = 1 << 16;

/// Error from [`encode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// `symbols` and `table_indices` have different lengths.
    #[error("{symbols} symbols but {table_indices} table indices")]
    LengthMismatch {
        /// `symbols.len()`.
        symbols: usize,
        /// `table_indices.len()`.
        table_indices: usize,
    },
    /// A table index is `>= tables.len()`.
    #[error("symbol {position} uses table {index}, but there are only {num_tables} tables")]
    TableIndexOutOfRange {
        /// Position of the symbol in the message.
        position: usize,
        /// The offending table index.
        index: u16,
        /// `tables.len()`.
        num_tables: usize,
    },
    /// The range coder refused a symbol. The table invariants rule this out; seeing it is a bug.
    #[error("internal error: the range coder rejected symbol {position}")]
    Coder {
        /// Position of the symbol in the message.
        position: usize,
    },
}

/// Error from [`decode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The compressed data is not a whole number of 32-bit words.
    #[error("compressed length {len} is not a multiple of 4 bytes")]
    LengthNotMultipleOf4 {
        /// `bytes.len()`.
        len: usize,
    },
    /// A table index is `>= tables.len()`.
    #[error("symbol {position} uses table {index}, but there are only {num_tables} tables")]
    TableIndexOutOfRange {
        /// Position of the symbol in the message.
        position: usize,
        /// The offending table index.
        index: u16,
        /// `tables.len()`.
        num_tables: usize,
    },
    /// The data cannot have come from [`encode`] with these table indices and tables.
    #[error("invalid compressed data at symbol {position}")]
    InvalidData {
        /// Position of the symbol being decoded when the problem showed.
        position: usize,
    },
}

/// One table prepared for coding.
#[derive(Clone, Debug)]
struct Entry {
    /// First symbol of the support.
    lo: i32,
    /// Last symbol of the support.
    hi: i32,
    /// Number of support symbols; the model's symbol `num_symbols` is the escape bin.
    num_symbols: u32,
    /// Cumulative distribution over `0..=num_symbols` at `PRECISION` bits.
    model: DefaultContiguousCategoricalEntropyModel,
}

/// Entropy models prepared once from a slice of [`CdfTable`]s, for [`encode`] and [`decode`].
///
/// Building one validates the tables and computes their cumulative distributions; that cost
/// (linear in the total number of bins) is paid once per model, not per image.
///
/// # Invariants
///
/// Holds at most [`MAX_TABLES`] tables, each satisfying the [`CdfTable`] invariants.
#[derive(Clone, Debug)]
pub struct CodingTables {
    entries: Vec<Entry>,
}

impl CodingTables {
    /// Validates `tables` and prepares a constriction model for each.
    ///
    /// # Errors
    ///
    /// - [`TableError::TooManyTables`] for more than [`MAX_TABLES`] tables;
    /// - [`TableError::InTable`] wrapping the error of [`CdfTable::validate`] for the first
    ///   invalid table.
    pub fn new(tables: &[CdfTable]) -> Result<Self, TableError> {
        if tables.len() > MAX_TABLES {
            return Err(TableError::TooManyTables {
                count: tables.len(),
                max: MAX_TABLES,
            });
        }
        let entries = tables
            .iter()
            .enumerate()
            .map(|(index, table)| {
                let in_table = |source| TableError::InTable {
                    index,
                    source: Box::new(source),
                };
                table.validate().map_err(in_table)?;
                let support = table.support();
                let model = DefaultContiguousCategoricalEntropyModel::from_nonzero_fixed_point_probabilities(
                    table.pmf(),
                    false,
                )
                // Unreachable after `validate`; report the sum rather than panic.
                .map_err(|()| {
                    in_table(TableError::BadSum {
                        sum: table.pmf().iter().map(|&p| u64::from(p)).sum(),
                    })
                })?;
                Ok(Entry {
                    lo: *support.start(),
                    hi: *support.end(),
                    num_symbols: table.num_symbols() as u32,
                    model,
                })
            })
            .collect::<Result<Vec<_>, TableError>>()?;
        Ok(Self { entries })
    }

    /// Number of tables.
    #[inline]
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// `true` if there are no tables (then only empty messages can be coded).
    #[inline]
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A constriction write backend that stores each `u32` word as 4 little-endian bytes.
#[derive(Debug, Default)]
struct LeWordWriter {
    bytes: Vec<u8>,
}

impl WriteWords<u32> for LeWordWriter {
    type WriteError = Infallible;

    #[inline(always)]
    fn write(&mut self, word: u32) -> Result<(), Infallible> {
        self.bytes.extend_from_slice(&word.to_le_bytes());
        Ok(())
    }
}

/// A constriction read backend over little-endian `u32` words stored as bytes.
///
/// Reads the words in order (queue semantics) and reports the end of the data as `None`,
/// after which the range decoder shifts in zeros.
#[derive(Debug)]
struct LeWordReader<'a> {
    words: core::slice::ChunksExact<'a, u8>,
}

impl ReadWords<u32, Queue> for LeWordReader<'_> {
    type ReadError = Infallible;

    #[inline(always)]
    fn read(&mut self) -> Result<Option<u32>, Infallible> {
        Ok(self
            .words
            .next()
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])))
    }

    #[inline(always)]
    fn maybe_exhausted(&self) -> bool {
        self.words.len() == 0
    }
}

/// The models of the escape payload, built once per call.
struct EscapeModels {
    bit_length: DefaultUniformModel,
    chunks: [DefaultUniformModel; CHUNK_BITS as usize],
}

impl EscapeModels {
    fn new() -> Self {
        Self {
            bit_length: escape::bit_length_model(),
            chunks: escape::chunk_models(),
        }
    }
}

/// Range-codes `symbols[i]` under the table `tables[table_indices[i]]`.
///
/// The coder is constriction's range coder (`DefaultRangeEncoder`: 32-bit words, 64-bit
/// state) with `DefaultContiguousCategoricalEntropyModel`s at [`PRECISION`](crate::PRECISION)
/// bits, so the symbols can be decoded in the order they were encoded (queue semantics).
///
/// A symbol `v` inside its table's support `lo..=hi` is coded as bin `v - lo`, costing
/// `-log2 p(v)` bits. Any other `i32` is coded as the escape bin followed by its
/// zig-zag distance `u` beyond the support (`2 (v - hi - 1)` above, `2 (lo - v - 1) + 1` below):
/// first the bit length `b` of `u` (`0..=33`) under a uniform model over 34 values, then the
/// `b - 1` bits of `u` below its leading one in uniform chunks of at most 16 bits. So every
/// `i32` round-trips, and a far escape costs about `-log2 p(escape) + 5.1 + b - 1` bits
/// (see [`CdfTable::information_content`]).
///
/// The total size is within a few words of `sum_i -log2 p_i` bits (the range coder's
/// truncation of the range to `PRECISION` bits adds well under 0.1% on realistic data).
///
/// Returns the coder's `u32` words, each as 4 little-endian bytes; an empty message gives
/// an empty vector.
///
/// # Errors
///
/// - [`EncodeError::LengthMismatch`] if `symbols.len() != table_indices.len()`;
/// - [`EncodeError::TableIndexOutOfRange`] for the first index `>= tables.len()`.
pub fn encode(
    symbols: &[i32],
    table_indices: &[u16],
    tables: &CodingTables,
) -> Result<Vec<u8>, EncodeError> {
    if symbols.len() != table_indices.len() {
        return Err(EncodeError::LengthMismatch {
            symbols: symbols.len(),
            table_indices: table_indices.len(),
        });
    }
    let entries = tables.entries.as_slice();
    let escape_models = EscapeModels::new();
    let mut encoder = RangeEncoder::<u32, u64, _>::with_write_backend(LeWordWriter {
        bytes: Vec::with_capacity(symbols.len() / 2 + 16),
    });

    for (position, (&symbol, &table_index)) in symbols.iter().zip(table_indices).enumerate() {
        let entry =
            entries
                .get(usize::from(table_index))
                .ok_or(EncodeError::TableIndexOutOfRange {
                    position,
                    index: table_index,
                    num_tables: entries.len(),
                })?;
        let coder_error = |_| EncodeError::Coder { position };
        // Negative differences wrap to huge values and fail the range check.
        let bin = (i64::from(symbol) - i64::from(entry.lo)) as u64;
        if bin < u64::from(entry.num_symbols) {
            encoder
                .encode_symbol(bin as usize, entry.model.as_view())
                .map_err(coder_error)?;
        } else {
            encoder
                .encode_symbol(entry.num_symbols as usize, entry.model.as_view())
                .map_err(coder_error)?;
            let u = escape::zigzag_distance(symbol, entry.lo, entry.hi);
            let bits = escape::bit_length(u);
            encoder
                .encode_symbol(bits as usize, escape_models.bit_length)
                .map_err(coder_error)?;
            let mut rest = bits.saturating_sub(1);
            let mut payload = u;
            while rest > 0 {
                let k = rest.min(CHUNK_BITS);
                let chunk = (payload & ((1 << k) - 1)) as usize;
                encoder
                    .encode_symbol(chunk, escape_models.chunks[k as usize - 1])
                    .map_err(coder_error)?;
                payload >>= k;
                rest -= k;
            }
        }
    }

    match encoder.into_compressed() {
        Ok(writer) => Ok(writer.bytes),
        Err(never) => match never {},
    }
}

/// Decodes `table_indices.len()` symbols coded by [`encode`] with the same table indices and
/// tables.
///
/// The output has exactly `table_indices.len()` entries, so the caller bounds the work and the
/// memory: decoding runs in `O(table_indices.len())` time (at most 4 coder steps per symbol)
/// and allocates only the output. Bytes beyond what the symbols need are ignored.
///
/// On corrupt or truncated input it returns an error or wrong symbols; it never panics,
/// loops or allocates more. Past the end of `bytes` the decoder reads zero bits.
///
/// # Errors
///
/// - [`DecodeError::LengthNotMultipleOf4`] if `bytes.len() % 4 != 0`;
/// - [`DecodeError::TableIndexOutOfRange`] for the first index `>= tables.len()`;
/// - [`DecodeError::InvalidData`] when the data cannot come from [`encode`] (the range
///   decoder's point left its interval, or an escape decodes to a value outside `i32`).
pub fn decode(
    bytes: &[u8],
    table_indices: &[u16],
    tables: &CodingTables,
) -> Result<Vec<i32>, DecodeError> {
    if !bytes.len().is_multiple_of(4) {
        return Err(DecodeError::LengthNotMultipleOf4 { len: bytes.len() });
    }
    let entries = tables.entries.as_slice();
    let escape_models = EscapeModels::new();
    let reader = LeWordReader {
        words: bytes.chunks_exact(4),
    };
    let mut decoder = match RangeDecoder::<u32, u64, _>::with_backend(reader) {
        Ok(decoder) => decoder,
        Err(never) => match never {},
    };
    let mut symbols = Vec::with_capacity(table_indices.len());

    for (position, &table_index) in table_indices.iter().enumerate() {
        let entry =
            entries
                .get(usize::from(table_index))
                .ok_or(DecodeError::TableIndexOutOfRange {
                    position,
                    index: table_index,
                    num_tables: entries.len(),
                })?;
        let invalid = |_| DecodeError::InvalidData { position };
        let bin = decoder
            .decode_symbol(entry.model.as_view())
            .map_err(invalid)?;
        let symbol = if bin < entry.num_symbols as usize {
            // Cannot overflow: `lo + num_symbols - 1 == hi` is an `i32`.
            entry.lo.wrapping_add(bin as i32)
        } else {
            let bits = decoder
                .decode_symbol(escape_models.bit_length)
                .map_err(invalid)? as u32;
            let mut u = if bits == 0 { 0u64 } else { 1u64 << (bits - 1) };
            let mut rest = bits.saturating_sub(1);
            let mut shift = 0;
            while rest > 0 {
                let k = rest.min(CHUNK_BITS);
                let chunk = decoder
                    .decode_symbol(escape_models.chunks[k as usize - 1])
                    .map_err(invalid)?;
                u |= (chunk as u64) << shift;
                shift += k;
                rest -= k;
            }
            escape::symbol_from_distance(u, entry.lo, entry.hi)
                .ok_or(DecodeError::InvalidData { position })?
        };
        symbols.push(symbol);
    }
    Ok(symbols)
}
