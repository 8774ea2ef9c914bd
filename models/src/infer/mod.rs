//! Pure-Rust inference of the analysis `g_a`, hyper-analysis `h_a` and synthesis `g_s`
//! networks, on the weights of a model file, without libtorch.
//!
//! # What is computed
//!
//! The same functions as `MeanScaleHyperprior`'s (feature `torch`) `analysis`,
//! `hyper_analysis` and `synthesis` (CompressAI's `MeanScaleHyperprior` layout, N / M channels):
//!
//! ```text
//! g_a: conv5/2 (3->N) GDN  conv5/2 (N->N) GDN  conv5/2 (N->N) GDN  conv5/2 (N->M)
//! h_a: conv3/1 (M->N) ReLU conv5/2 (N->N) ReLU conv5/2 (N->N)
//! g_s: tconv5/2 (M->N) IGDN tconv5/2 (N->N) IGDN tconv5/2 (N->N) IGDN tconv5/2 (N->3)
//! ```
//!
//! Convolutions (`conv.rs`) run as matrix products over output rows, through the `gemm` crate;
//! GDN (`gdn.rs`) too. Feature maps between layers are channels-last (`HWC`), so the patch
//! matrix of an output row is a set of contiguous copies; the public API takes and returns
//! channels-first [`Planes`] like the tensors `(1, C, H, W)` of the libtorch networks.
//!
//! `h_s` is deliberately absent: what selects a probability table runs in
//! [`ocular_entropy::HyperSynthesis`], in a fixed order of plain `f32` operations.
//!
//! # Determinism
//!
//! Every output row of every layer is computed by one task (im2col of its input rows, then
//! single-threaded products in a fixed sequence over column tiles of a fixed width), whatever
//! the number of threads `rayon` runs and whatever rows are computed with it, so the networks'
//! outputs — and decoded pixels — are bit-identical for every thread count, for the whole image
//! or any strips of it, and for every optimisation level of a build (the layout code does no
//! floating-point arithmetic that the compiler could reorder: Rust neither fuses nor
//! reassociates floats). The tests check threads and strips; a debug and a release build print
//! the same fingerprint.
//!
//! # Memory
//!
//! `g_a` runs in bands of a few rows of `y`, each hidden layer keeping only the rows the next
//! one still needs; `g_s` runs in strips of output rows, each recomputing the few hidden rows it
//! shares with its neighbours, and can hand the strips out as they are made
//! ([`Networks::synthesis_in_strips`]). The hidden activations, about 270 bytes per pixel for
//! the whole image, so take a few rows' worth.
//!
//! What may differ across **machines**: `gemm` chooses its kernel (AVX-512, AVX2 + FMA, SSE,
//! NEON, scalar) from the CPU's features and its blocking from the cache sizes, both at run time,
//! so the rounding of the products — fused multiply-adds or not, the order in which partial sums
//! meet — and with it the last bits of `y` and of decoded pixels may differ between CPUs. That is
//! allowed for `g_a` and `g_s` only: a different `y` on another encoder is just another valid
//! file, and a decoder's pixels may move by a rounding step. Nothing here may ever select a
//! probability table.
//!
//! # Accuracy
//!
//! The products accumulate in `f32` like libtorch's, in another order: outputs agree with
//! libtorch's to about 1e-5 of their magnitude (the tests check it on a shipped model).

use std::ops::Range;

mod conv;
mod gdn;
mod matmul;
mod network;
mod synthesis;

pub use network::{NetworkShape, Networks, ANALYSIS_BAND_ROWS, SYNTHESIS_STRIP_ROWS};
pub use synthesis::Synthesis;

/// Errors of the pure-Rust inference: a model file that does not hold the networks, or an
/// input that does not fit them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InferError {
    /// The bytes are not a safetensors file.
    #[error("model weights: {0}")]
    Format(String),
    /// A tensor the networks need is not in the file.
    #[error("model weights: missing tensor {0}")]
    Missing(String),
    /// A tensor has another shape than the networks need.
    #[error("model weights: tensor {name} has shape {found:?}, expected {expected:?}")]
    TensorShape {
        /// The tensor's name (`g_a.0.weight`, ...).
        name: String,
        /// Its shape in the file.
        found: Vec<usize>,
        /// The shape the networks need.
        expected: Vec<usize>,
    },
    /// A tensor is stored in a type other than f16, bf16 or f32.
    #[error("model weights: tensor {name} is of unsupported type {dtype}")]
    Dtype {
        /// The tensor's name.
        name: String,
        /// Its type in the file.
        dtype: String,
    },
    /// An input whose channels or size do not fit.
    #[error("inference input: {0}")]
    Input(String),
}

/// Spare `f32` buffers of one decode, handed from strip to strip: every strip needs maps of
/// the same few sizes, and fresh ones of several megabytes came from the kernel as new pages
/// that faulted on first touch (12,500 of the 19,700 page faults of a Kodak decode; docs/results.md,
/// "Buffers"). Dropped with the decode, so nothing outlives it.
#[derive(Debug, Default)]
pub(crate) struct Buffers {
    spare: Vec<Vec<f32>>,
}

impl Buffers {
    /// `len` zeros, in the smallest spare buffer that holds them without growing (else the
    /// largest spare one, grown; else a new one).
    pub(crate) fn zeros(&mut self, len: usize) -> Vec<f32> {
        let fits = (0..self.spare.len())
            .filter(|&i| self.spare[i].capacity() >= len)
            .min_by_key(|&i| self.spare[i].capacity());
        let largest = || (0..self.spare.len()).max_by_key(|&i| self.spare[i].capacity());
        match fits.or_else(largest) {
            Some(i) => {
                let mut buffer = self.spare.swap_remove(i);
                buffer.clear();
                buffer.resize(len, 0.0);
                buffer
            }
            None => vec![0.0; len],
        }
    }

    /// Takes `buffer` back for a later [`Self::zeros`].
    pub(crate) fn give(&mut self, buffer: Vec<f32>) {
        self.spare.push(buffer);
    }
}

/// A feature map stored channels-first: `data[(c * height + y) * width + x]`, the layout of a
/// tensor `(1, C, H, W)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Planes {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Channels.
    pub channels: usize,
    /// `channels x height x width` values.
    pub data: Vec<f32>,
}

impl Planes {
    /// Planes from their values.
    ///
    /// # Errors
    /// [`InferError::Input`] if a size is 0 or `data` is not `channels x height x width` long.
    pub fn new(
        channels: usize,
        height: usize,
        width: usize,
        data: Vec<f32>,
    ) -> Result<Self, InferError> {
        let expected = channels
            .checked_mul(height)
            .and_then(|v| v.checked_mul(width))
            .filter(|&v| v > 0);
        if expected != Some(data.len()) {
            return Err(InferError::Input(format!(
                "{} values for {channels} x {height} x {width}",
                data.len()
            )));
        }
        Ok(Self {
            height,
            width,
            channels,
            data,
        })
    }

    /// Planes from row blocks `[y][c][x]`.
    pub(crate) fn from_row_blocks(
        height: usize,
        width: usize,
        channels: usize,
        blocks: &[f32],
    ) -> Self {
        let mut data = vec![0.0f32; channels * height * width];
        for (y, block) in blocks.chunks_exact(channels * width).enumerate() {
            for (c, row) in block.chunks_exact(width).enumerate() {
                data[(c * height + y) * width..][..width].copy_from_slice(row);
            }
        }
        Self {
            height,
            width,
            channels,
            data,
        }
    }
}

/// Rows `first..first + map.height` of a channels-last map of `total` rows: what a layer
/// reads when it computes a horizontal strip of its output.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Strip<'a> {
    pub map: &'a FeatureMap,
    pub first: usize,
    pub total: usize,
}

impl<'a> Strip<'a> {
    /// A whole map.
    pub(crate) fn whole(map: &'a FeatureMap) -> Self {
        Self {
            map,
            first: 0,
            total: map.height,
        }
    }

    /// Row `y` of the whole map (`width x channels` values), or `None` outside it (zeros).
    ///
    /// # Panics
    /// If `y` is inside the whole map but not in the strip (the caller's halo is too small).
    pub(crate) fn row(&self, y: isize) -> Option<&'a [f32]> {
        let y = usize::try_from(y).ok().filter(|&y| y < self.total)?;
        let local = y
            .checked_sub(self.first)
            .filter(|&l| l < self.map.height)
            .unwrap_or_else(|| panic!("row {y} is outside the strip at {}", self.first));
        let len = self.map.width * self.map.channels;
        Some(&self.map.data[local * len..][..len])
    }
}

/// A feature map stored channels-last: `data[(y * width + x) * channels + c]`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FeatureMap {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub data: Vec<f32>,
}

impl FeatureMap {
    /// A map of zeros.
    pub(crate) fn zeros(height: usize, width: usize, channels: usize) -> Self {
        Self::zeros_in(height, width, channels, &mut Buffers::default())
    }

    /// A map of zeros, in a buffer of `buffers`.
    pub(crate) fn zeros_in(
        height: usize,
        width: usize,
        channels: usize,
        buffers: &mut Buffers,
    ) -> Self {
        Self {
            height,
            width,
            channels,
            data: buffers.zeros(height * width * channels),
        }
    }

    /// A map from channels-last values (tests).
    #[cfg(test)]
    pub(crate) fn from_hwc(
        height: usize,
        width: usize,
        channels: usize,
        data: Vec<f32>,
    ) -> Option<Self> {
        (data.len() == height * width * channels).then_some(Self {
            height,
            width,
            channels,
            data,
        })
    }

    /// The channels-last copy of `planes`.
    pub(crate) fn from_planes(planes: &Planes) -> Self {
        Self::from_plane_rows(planes, 0..planes.height)
    }

    /// The channels-last copy of rows `rows` of `planes`.
    pub(crate) fn from_plane_rows(planes: &Planes, rows: Range<usize>) -> Self {
        let (width, channels) = (planes.width, planes.channels);
        let mut map = Self::zeros(rows.len(), width, channels);
        let plane = planes.height * width;
        let first = rows.start * width;
        for (p, pixel) in map.data.chunks_exact_mut(channels).enumerate() {
            for (c, v) in pixel.iter_mut().enumerate() {
                *v = planes.data[c * plane + first + p];
            }
        }
        map
    }

    /// The channels-first copy.
    pub(crate) fn to_planes(&self) -> Planes {
        let plane = self.height * self.width;
        let c = self.channels;
        let mut data = vec![0.0f32; self.data.len()];
        for (p, pixel) in self.data.chunks_exact(c).enumerate() {
            for (channel, &v) in pixel.iter().enumerate() {
                data[channel * plane + p] = v;
            }
        }
        Planes {
            height: self.height,
            width: self.width,
            channels: c,
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Buffers;

    /// A buffer given back dirty comes back as zeros, from the smallest spare one that fits
    /// without growing.
    #[test]
    fn spare_buffers_come_back_as_zeros() {
        let mut buffers = Buffers::default();
        let mut big = buffers.zeros(1000);
        big.fill(7.0);
        let big_at = big.as_ptr();
        let mut small = buffers.zeros(10);
        small.fill(3.0);
        buffers.give(big);
        buffers.give(small);
        let again = buffers.zeros(500);
        assert_eq!(
            again.as_ptr(),
            big_at,
            "the one that holds 500 without growing"
        );
        assert!(again.len() == 500 && again.iter().all(|&v| v == 0.0));
        let grown = buffers.zeros(2000);
        assert!(grown.len() == 2000 && grown.iter().all(|&v| v == 0.0));
        assert!(buffers.spare.is_empty());
    }
}
