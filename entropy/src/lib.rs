//! Integer probability tables and range coding for the `ocular` learned image codec.
//!
//! The latent `y` of the codec is coded element by element with a zero-mean Gaussian whose
//! scale the hyperprior predicts; the hyper-latent `z` with a learned factorized density.
//! Both are turned into *integer* tables here, so that encoding and decoding never depend on
//! floating point once the tables exist:
//!
//! - [`CdfTable`]: a fixed-point pmf at [`PRECISION`] = 24 bits over a contiguous range of
//!   integers plus an escape bin for every other `i32`, quantised from float masses with a
//!   rate-optimal scheme ([`CdfTable::from_probabilities`]);
//! - [`scale_table`], [`scale_index`], [`gaussian_tables`]: the 64 log-spaced Gaussian scales,
//!   the one mapping from a predicted scale to a table index, and the tables themselves;
//! - [`CodingTables`], [`encode`], [`decode`]: constriction's range coder with one table per
//!   symbol, lossless for every `i32`, and robust against corrupt input;
//! - [`HyperSynthesis`]: the hyperprior's `z -> (mean, table index)` network evaluated in a
//!   fixed order of `f32` operations, so encoder and decoder agree on every index on every
//!   machine and thread count;
//! - [`QuantizationStep`]: the grid step of variable-rate models, which divides the predicted
//!   scales before [`scale_index`] picks a table.
//!
//! # Example
//!
//! ```
//! use ocular_entropy::{decode, encode, gaussian_tables, scale_index, scale_table, CodingTables};
//!
//! let tables = CodingTables::new(&gaussian_tables(&scale_table())?)?;
//! let scales = [0.3f32, 2.0, 17.5, 0.05];
//! let symbols = [0, -2, 31, i32::MIN]; // the last one is far outside its table: escaped
//! let indices: Vec<u16> = scales.iter().map(|&s| u16::from(scale_index(s))).collect();
//!
//! let bytes = encode(&symbols, &indices, &tables)?;
//! assert_eq!(decode(&bytes, &indices, &tables)?, symbols);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The crate has no unsafe code, no file I/O and no dependency on libtorch.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod coder;
mod escape;
mod gaussian;
mod hyper;
mod rate;
mod table;

pub use coder::{decode, encode, CodingTables, DecodeError, EncodeError, MAX_TABLES};
pub use gaussian::{
    gaussian_tables, scale_index, scale_table, GAUSSIAN_TAIL_MASS, NUM_SCALES, SCALE_MAX, SCALE_MIN,
};
pub use hyper::{ConvKind, ConvLayer, ConvShape, HyperError, HyperSynthesis, YParameters, YPrior};
pub use rate::{QuantizationStep, Shrinkage, StepError};
pub use table::{CdfTable, TableError, MAX_TABLE_LEN, PRECISION};
