//! The hyper-synthesis as the coder runs it: from the integer symbols of `z` to the mean and
//! the table index of every element of `y`, in plain `f32` arithmetic whose every operation
//! happens in one fixed order.
//!
//! # Why not the training network
//!
//! The encoder and the decoder must derive *bit-identical* table indices from `z`, or the range
//! decoder desynchronises. A libtorch convolution does not promise that: its summation order
//! depends on the kernel it picks, the CPU's vector width and the thread count (measured: a
//! Kodak image encoded with two threads failed to decode with one). Ballé, Johnston and Minnen
//! ("Integer networks for data compression with latent-variable models", ICLR 2019) cure this
//! with integer networks; ocular keeps the trained float weights and instead fixes the order of
//! evaluation, which IEEE 754 then makes reproducible:
//!
//! * every product and every sum is one correctly rounded `f32` operation — Rust never fuses a
//!   multiply and an add, nor reassociates floating point, at any optimisation level;
//! * each output value is accumulated by one loop in a fixed order (bias, then kernel rows,
//!   kernel columns, input channels), never split across threads (rows of the output are
//!   computed in parallel, each by one thread);
//! * the vectorisable inner loop runs over *output channels*, independent accumulators, so
//!   SIMD changes how many are updated at once, never the order of any one of them;
//! * that loop is compiled for the target's baseline vectors and, through `pulp`'s run-time
//!   dispatch, for the widest the CPU has (AVX2 on x86-64). Each lane still does one `f32`
//!   multiply then one `f32` add per term, rounded alike at any width; no FMA is formed, since
//!   Rust never contracts a multiply and an add, even where the CPU has FMA. A test compares
//!   the two builds of the loop to the bit, and the pinned-bits tests hold for both.
//!
//! The result equals libtorch's up to rounding (about 1e-6 relative), so a model trained with
//! libtorch codes at the rate its likelihoods predict, while every machine, thread count and
//! build agrees on every bit.
//!
//! # Shapes and layouts
//!
//! Layers take and return feature maps stored height-major, channels last (`HWC`). Weights
//! come in PyTorch's layouts — `(out, in, k, k)` for a convolution, `(in, out, k, k)` for a
//! transposed one — and are stored as `[ky][kx][in][out]` so the inner loop reads contiguous
//! memory. Padding is `k / 2` on every side; a transposed layer adds `stride - 1` rows and
//! columns of output padding, so it multiplies each side by its stride exactly.

use rayon::prelude::*;
use thiserror::Error;

use crate::rate::QuantizationStep;

/// Whether a layer is a plain or a transposed convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKind {
    /// `out[y, x] = sum in[y * s + ky - p, x * s + kx - p] * w[ky, kx]`.
    Regular,
    /// The adjoint: `in[y, x]` adds `w[ky, kx]` times itself into `out[y * s + ky - p, x * s + kx - p]`.
    Transposed,
}

/// Shapes or values the hyper-synthesis cannot work with.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HyperError {
    /// Weights, biases or inputs whose sizes do not fit the declared shapes.
    #[error("hyper-synthesis: {0}")]
    Shape(String),
}

/// The geometry of a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    /// Plain or transposed.
    pub kind: ConvKind,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Side of the square kernel (odd).
    pub kernel: usize,
    /// Stride (up-sampling factor of a transposed layer).
    pub stride: usize,
    /// Whether a ReLU follows.
    pub relu: bool,
}

/// One convolution layer with an optional ReLU after it.
#[derive(Clone, Debug)]
pub struct ConvLayer {
    shape: ConvShape,
    /// `[ky][kx][in][out]`.
    weights: Vec<f32>,
    bias: Vec<f32>,
}

impl ConvLayer {
    /// A layer from weights in PyTorch's layout (`(out, in, k, k)` for [`ConvKind::Regular`],
    /// `(in, out, k, k)` for [`ConvKind::Transposed`]) and one bias per output channel.
    ///
    /// # Errors
    /// [`HyperError::Shape`] when a size is zero, the kernel is even, or the weight and bias
    /// lengths do not match the channels and kernel.
    pub fn from_torch_layout(
        shape: ConvShape,
        weights: &[f32],
        bias: &[f32],
    ) -> Result<Self, HyperError> {
        let ConvShape {
            kind,
            in_channels,
            out_channels,
            kernel,
            stride,
            ..
        } = shape;
        if in_channels == 0 || out_channels == 0 || stride == 0 || kernel % 2 == 0 {
            return Err(HyperError::Shape(format!(
                "unsupported layer: {in_channels} -> {out_channels} channels, kernel {kernel}, stride {stride}"
            )));
        }
        let taps = kernel * kernel;
        if weights.len() != in_channels * out_channels * taps || bias.len() != out_channels {
            return Err(HyperError::Shape(format!(
                "{} weights and {} biases for {in_channels} -> {out_channels} channels, kernel {kernel}",
                weights.len(),
                bias.len()
            )));
        }
        // Input channel outermost, output channel innermost: the writes run along rows of
        // `out_channels` values and the reads of one `i` stay within a few KB of `weights`,
        // where output channel outermost scattered the writes over the whole layer (several
        // times slower to load).
        let mut reordered = vec![0.0f32; weights.len()];
        for i in 0..in_channels {
            // The weight of input i, output o and tap t is at base + o * o_stride + t.
            let (base, o_stride) = match kind {
                ConvKind::Regular => (i * taps, in_channels * taps),
                ConvKind::Transposed => (i * out_channels * taps, taps),
            };
            for tap in 0..taps {
                let row = &mut reordered[(tap * in_channels + i) * out_channels..][..out_channels];
                for (o, value) in row.iter_mut().enumerate() {
                    *value = weights[base + o * o_stride + tap];
                }
            }
        }
        Ok(Self {
            shape,
            weights: reordered,
            bias: bias.to_vec(),
        })
    }

    /// Output height and width for an input of `height` x `width`.
    pub fn output_size(&self, height: usize, width: usize) -> (usize, usize) {
        let stride = self.shape.stride;
        let side = |n: usize| match self.shape.kind {
            // (n + 2p - k) / s + 1 with p = k / 2 and k odd.
            ConvKind::Regular => n.saturating_sub(1) / stride + 1,
            // (n - 1) s - 2p + k + (s - 1) with p = k / 2 and k odd.
            ConvKind::Transposed => n * stride,
        };
        (side(height), side(width))
    }

    /// Applies the layer to an `HWC` map of `height` x `width` x `in_channels`, its loops
    /// compiled for `vectors`.
    fn forward(&self, input: &[f32], height: usize, width: usize, vectors: Vectors) -> Vec<f32> {
        let (out_height, out_width) = self.output_size(height, width);
        let (cin, cout) = (self.shape.in_channels, self.shape.out_channels);
        let mut output = vec![0.0f32; out_height * out_width * cout];
        let nonzero = NonZero::of(input, cin);
        // Rows in parallel: each output value is still computed by one thread, in one order.
        output
            .par_chunks_mut(out_width * cout)
            .enumerate()
            .for_each(|(oy, output_row)| {
                let row = OutputRow {
                    layer: self,
                    nonzero: &nonzero,
                    input_size: (height, width),
                    oy,
                    output_row,
                };
                match vectors {
                    Vectors::Widest => pulp::Arch::new().dispatch(row),
                    Vectors::Baseline => pulp::WithSimd::with_simd(row, pulp::Scalar::new()),
                }
            });
        output
    }

    /// The input row (column) that kernel tap `t` reads for output row (column) `o`, if there
    /// is one, `n` being the input's height (width).
    #[inline(always)]
    fn source(&self, o: usize, t: usize, n: usize) -> Option<usize> {
        let (k, stride) = (self.shape.kernel, self.shape.stride);
        let padding = k / 2;
        match self.shape.kind {
            ConvKind::Regular => (o * stride + t).checked_sub(padding).filter(|&i| i < n),
            ConvKind::Transposed => (o + padding)
                .checked_sub(t)
                .filter(|d| d % stride == 0)
                .map(|d| d / stride)
                .filter(|&i| i < n),
        }
    }

    /// One output pixel's channels `first..first + sums.len()` into `sums`: `bias[o] + sum over
    /// taps t, then input channels i, of input[t][i] w[t][i][o]`, each sum in exactly that
    /// order (module docs) over the non-zero inputs only: adding `0 w` changes no sum, and ReLU
    /// makes zeros common. `taps` are (input pixel, offset of the tap's weights) pairs.
    ///
    /// A whole block of [`OUTPUT_BLOCK`] channels is summed in a local array, which the
    /// compiler keeps in registers over all taps: one weight load per product, where updating
    /// all `C_out` sums in memory for every input value cost two more memory operations.
    #[inline(always)]
    fn accumulate(
        &self,
        first: usize,
        nonzero: &NonZero,
        taps: &[(usize, usize)],
        sums: &mut [f32],
    ) {
        if let Ok(sums) = <&mut [f32; OUTPUT_BLOCK]>::try_from(&mut *sums) {
            let mut block = [0.0f32; OUTPUT_BLOCK];
            self.add_terms(first, nonzero, taps, &mut block);
            *sums = block;
        } else {
            self.add_terms(first, nonzero, taps, sums);
        }
    }

    /// The sums of [`Self::accumulate`] in place.
    #[inline(always)]
    fn add_terms(
        &self,
        first: usize,
        nonzero: &NonZero,
        taps: &[(usize, usize)],
        sums: &mut [f32],
    ) {
        let (cout, count) = (self.shape.out_channels, sums.len());
        sums.copy_from_slice(&self.bias[first..first + count]);
        for &(pixel, tap) in taps {
            for &(i, value) in nonzero.of_pixel(pixel) {
                let row = tap + i as usize * cout + first;
                for (sum, &w) in sums.iter_mut().zip(&self.weights[row..row + count]) {
                    *sum += value * w;
                }
            }
        }
    }
}

/// The non-zero values of an `HWC` map, pixel by pixel, with their channels in order: what the
/// layers' sums run over (compacted once, so the inner loops do not branch on every input).
struct NonZero {
    /// `(channel, value)` of every non-zero value, pixel after pixel.
    values: Vec<(u32, f32)>,
    /// Where each pixel's values start in `values`, and one past the last.
    starts: Vec<usize>,
}

impl NonZero {
    fn of(map: &[f32], channels: usize) -> Self {
        let mut values = Vec::with_capacity(map.len());
        let mut starts = Vec::with_capacity(map.len() / channels.max(1) + 1);
        starts.push(0);
        for pixel in map.chunks_exact(channels) {
            values.extend(
                (0u32..)
                    .zip(pixel)
                    .filter(|&(_, &v)| v != 0.0)
                    .map(|(i, &v)| (i, v)),
            );
            starts.push(values.len());
        }
        Self { values, starts }
    }

    fn of_pixel(&self, pixel: usize) -> &[(u32, f32)] {
        &self.values[self.starts[pixel]..self.starts[pixel + 1]]
    }
}

/// Output channels the hyper-synthesis accumulates at once ([`ConvLayer::accumulate`]):
/// six AVX2 registers, and a divisor of the shipped networks' 96, 144 and 192 output channels.
const OUTPUT_BLOCK: usize = 48;

/// Which vectors a layer's loops are compiled for. The operations are the same either way,
/// lane by lane: one `f32` multiply, then one `f32` add, per term of each sum, in the same
/// order. Wider vectors update more independent sums at once; IEEE 754 rounds each operation
/// of each lane alike whatever the vector width, and Rust fuses no multiply-add even where the
/// CPU has FMA, so every value keeps its bits (module docs; pinned by a test of both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Vectors {
    /// The widest this CPU has (`pulp`'s run-time dispatch: AVX2 on x86-64 where present).
    Widest,
    /// The target's baseline (SSE2 on x86-64).
    #[cfg_attr(not(test), allow(dead_code))]
    Baseline,
}

/// One output row of a layer, as a task `pulp` compiles for the CPU's vectors.
struct OutputRow<'a> {
    layer: &'a ConvLayer,
    nonzero: &'a NonZero,
    /// The input's height and width.
    input_size: (usize, usize),
    oy: usize,
    output_row: &'a mut [f32],
}

impl pulp::WithSimd for OutputRow<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let Self {
            layer,
            nonzero,
            input_size: (height, width),
            oy,
            output_row,
        } = self;
        let ConvShape {
            in_channels: cin,
            out_channels: cout,
            kernel: k,
            relu,
            ..
        } = layer.shape;
        // (input pixel, weight tap) of every output pixel, in kernel order; pixel `ox`'s are
        // `taps[starts[ox]..starts[ox + 1]]`.
        let out_width = output_row.len() / cout;
        let mut taps = Vec::with_capacity(out_width * k * k);
        let mut starts = Vec::with_capacity(out_width + 1);
        starts.push(0);
        for ox in 0..out_width {
            for ky in 0..k {
                let Some(iy) = layer.source(oy, ky, height) else {
                    continue;
                };
                for kx in 0..k {
                    if let Some(ix) = layer.source(ox, kx, width) {
                        taps.push((iy * width + ix, (ky * k + kx) * cin * cout));
                    }
                }
            }
            starts.push(taps.len());
        }
        let pixel_taps = |ox: usize| &taps[starts[ox]..starts[ox + 1]];
        // Block by block of output channels, each over the whole row: one block's weights
        // (up to a few hundred KB) stay in cache for all the row's pixels, where all of a
        // layer's weights (a MB) went through the cache for every pixel.
        let whole = cout - cout % OUTPUT_BLOCK;
        for first in (0..whole).step_by(OUTPUT_BLOCK) {
            for (ox, acc) in output_row.chunks_exact_mut(cout).enumerate() {
                let block = &mut acc[first..first + OUTPUT_BLOCK];
                layer.accumulate(first, nonzero, pixel_taps(ox), block);
            }
        }
        for (ox, acc) in output_row.chunks_exact_mut(cout).enumerate() {
            if whole < cout {
                layer.accumulate(whole, nonzero, pixel_taps(ox), &mut acc[whole..]);
            }
            if relu {
                for a in acc.iter_mut() {
                    *a = a.max(0.0);
                }
            }
        }
    }
}

/// Means and table indices of every element of `y`, in `(channel, row, column)` order (the
/// order in which `y` is coded).
#[derive(Clone, Debug, PartialEq)]
pub struct YParameters {
    /// The predicted mean of each element.
    pub means: Vec<f32>,
    /// [`crate::scale_index`] of each element's predicted scale (divided by the quantisation
    /// step of a variable-rate model).
    pub scale_indices: Vec<u16>,
}

/// The hyper-synthesis `h_s` of a mean-scale hyperprior, evaluated reproducibly (module docs).
///
/// Invariant: the layers chain (each one's input channels are the previous one's outputs), the
/// first takes the channels of `z`, the last returns `2 M` channels: `M` scales, then `M`
/// means.
#[derive(Clone, Debug)]
pub struct HyperSynthesis {
    z_medians: Vec<f32>,
    layers: Vec<ConvLayer>,
    y_channels: usize,
}

impl HyperSynthesis {
    /// Chains `layers` after adding `z_medians` (one per channel of `z`) to the symbols.
    ///
    /// # Errors
    /// [`HyperError::Shape`] if there is no layer, the channels do not chain, or the last layer's
    /// output channels are odd.
    pub fn new(z_medians: Vec<f32>, layers: Vec<ConvLayer>) -> Result<Self, HyperError> {
        let (Some(first), Some(last)) = (layers.first(), layers.last()) else {
            return Err(HyperError::Shape("no layer".into()));
        };
        if first.shape.in_channels != z_medians.len() || last.shape.out_channels % 2 != 0 {
            return Err(HyperError::Shape(format!(
                "{} medians for a first layer of {} channels, last layer of {} channels",
                z_medians.len(),
                first.shape.in_channels,
                last.shape.out_channels
            )));
        }
        if let Some(pair) = layers
            .windows(2)
            .find(|pair| pair[0].shape.out_channels != pair[1].shape.in_channels)
        {
            return Err(HyperError::Shape(format!(
                "a layer of {} output channels feeds one of {} input channels",
                pair[0].shape.out_channels, pair[1].shape.in_channels
            )));
        }
        let y_channels = last.shape.out_channels / 2;
        Ok(Self {
            z_medians,
            layers,
            y_channels,
        })
    }

    /// A network of the codec's shape — two 5x5 stride-2 transposed layers with ReLU (`z` ->
    /// `M` -> `3M/2` channels), a 3x3 layer to `2 M` — with deterministic pseudo-random weights
    /// of `seed`, for tests, benchmarks and fuzzing: its outputs mean nothing, but it costs what
    /// a trained network of that size costs and exercises every code path.
    ///
    /// # Panics
    /// If `z_channels` or `y_channels` is 0.
    pub fn pseudo_random(z_channels: usize, y_channels: usize, seed: u64) -> Self {
        let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
        let mut values = |n: usize, scale: f32| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
                })
                .collect()
        };
        let mut layer = |kind, in_channels: usize, out_channels: usize, kernel: usize, relu| {
            let shape = ConvShape {
                kind,
                in_channels,
                out_channels,
                kernel,
                stride: if kernel == 5 { 2 } else { 1 },
                relu,
            };
            let weights = values(in_channels * out_channels * kernel * kernel, 0.5);
            ConvLayer::from_torch_layout(shape, &weights, &values(out_channels, 4.0))
                .expect("consistent shapes")
        };
        let wide = (3 * y_channels).div_ceil(2);
        let layers = vec![
            layer(ConvKind::Transposed, z_channels, y_channels, 5, true),
            layer(ConvKind::Transposed, y_channels, wide, 5, true),
            layer(ConvKind::Regular, wide, 2 * y_channels, 3, false),
        ];
        Self::new(values(z_channels, 2.0), layers).expect("consistent shapes")
    }

    /// Channels of `y` (`M`).
    pub fn y_channels(&self) -> usize {
        self.y_channels
    }

    /// Channels of `z`.
    pub fn z_channels(&self) -> usize {
        self.z_medians.len()
    }

    /// The height and width the layers turn a `z` of `z_height` x `z_width` into.
    pub fn output_size(&self, z_height: usize, z_width: usize) -> (usize, usize) {
        self.layers
            .iter()
            .fold((z_height, z_width), |(h, w), layer| layer.output_size(h, w))
    }

    /// Means and table indices of `y` (`y_height` x `y_width`, the top-left of the output) from
    /// the symbols of `z` in `(channel, row, column)` order: `z_hat = symbol + median`, then
    /// the layers, then `scale_index` of each scale.
    ///
    /// # Errors
    /// [`HyperError::Shape`] if `z_symbols` is not `z_channels * z_height * z_width` long or
    /// `y` is not inside the output.
    pub fn y_parameters(
        &self,
        z_symbols: &[i32],
        z_size: [usize; 2],
        y_size: [usize; 2],
    ) -> Result<YParameters, HyperError> {
        self.y_parameters_at(z_symbols, z_size, y_size, QuantizationStep::ONE)
    }

    /// [`Self::y_parameters`] for `y` coded on the grid of `step`: each table index is
    /// [`QuantizationStep::table_index`] of the predicted scale (`scale_index(scale / step)`);
    /// the means do not depend on the step. The same as [`Self::y_prior`] then
    /// [`YPrior::at`].
    ///
    /// # Errors
    /// As [`Self::y_parameters`].
    pub fn y_parameters_at(
        &self,
        z_symbols: &[i32],
        z_size: [usize; 2],
        y_size: [usize; 2],
        step: QuantizationStep,
    ) -> Result<YParameters, HyperError> {
        Ok(self.y_prior(z_symbols, z_size, y_size)?.at(step))
    }

    /// The part of [`Self::y_parameters_at`] that does not depend on the step: the predicted
    /// means and scales of `y` (`y_height` x `y_width`, the top-left of the output), so that an
    /// encoder searching for a rate evaluates the network once and only
    /// [`YPrior::at`] per step.
    ///
    /// # Errors
    /// As [`Self::y_parameters`].
    pub fn y_prior(
        &self,
        z_symbols: &[i32],
        z_size: [usize; 2],
        y_size: [usize; 2],
    ) -> Result<YPrior, HyperError> {
        self.y_prior_with(z_symbols, z_size, y_size, Vectors::Widest)
    }

    /// [`Self::y_prior`] with the layers' loops compiled for `vectors`.
    fn y_prior_with(
        &self,
        z_symbols: &[i32],
        [z_height, z_width]: [usize; 2],
        [y_height, y_width]: [usize; 2],
        vectors: Vectors,
    ) -> Result<YPrior, HyperError> {
        let channels = self.z_channels();
        let (out_height, out_width) = self.output_size(z_height, z_width);
        if z_symbols.len() != channels * z_height * z_width
            || z_height == 0
            || z_width == 0
            || y_height == 0
            || y_width == 0
            || y_height > out_height
            || y_width > out_width
        {
            return Err(HyperError::Shape(format!(
                "{} symbols for z {channels}x{z_height}x{z_width} and y {y_height}x{y_width}",
                z_symbols.len()
            )));
        }
        // CHW symbols to HWC values.
        let plane = z_height * z_width;
        let mut map = vec![0.0f32; z_symbols.len()];
        for (c, median) in self.z_medians.iter().enumerate() {
            for (p, &symbol) in z_symbols[c * plane..(c + 1) * plane].iter().enumerate() {
                // Exact: symbols of a sane model are far below 2^24.
                map[p * channels + c] = symbol as f32 + median;
            }
        }
        let (mut height, mut width) = (z_height, z_width);
        for layer in &self.layers {
            map = layer.forward(&map, height, width, vectors);
            (height, width) = layer.output_size(height, width);
        }
        // HWC (2M channels: scales, then means) to CHW of the y crop.
        let m = self.y_channels;
        let count = m * y_height * y_width;
        let mut means = vec![0.0f32; count];
        let mut scales = vec![0.0f32; count];
        for c in 0..m {
            for y in 0..y_height {
                for x in 0..y_width {
                    let pixel = (y * width + x) * 2 * m;
                    let at = (c * y_height + y) * y_width + x;
                    scales[at] = map[pixel + c];
                    means[at] = map[pixel + m + c];
                }
            }
        }
        Ok(YPrior { means, scales })
    }
}

/// The predicted means and scales of every element of `y` in `(channel, row, column)` order,
/// before any quantisation step: what [`HyperSynthesis::y_prior`] computes once per image.
///
/// Invariant: `means` and `scales` have the same length.
#[derive(Clone, Debug, PartialEq)]
pub struct YPrior {
    means: Vec<f32>,
    scales: Vec<f32>,
}

impl YPrior {
    /// The predicted means.
    pub fn means(&self) -> &[f32] {
        &self.means
    }

    /// The parameters of `y` coded on the grid of `step`: the means, and
    /// [`QuantizationStep::table_index`] of each scale — the very operations of
    /// [`HyperSynthesis::y_parameters_at`], so the tables chosen are the same bits.
    pub fn at(&self, step: QuantizationStep) -> YParameters {
        YParameters {
            means: self.means.clone(),
            scale_indices: self.scale_indices_at(step),
        }
    }

    /// The table indices of [`Self::at`] alone: what an encoder trying several steps needs of
    /// each, without copying the means every time.
    pub fn scale_indices_at(&self, step: QuantizationStep) -> Vec<u16> {
        self.scales
            .iter()
            .map(|&scale| u16::from(step.table_index(scale)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct evaluation of the definitions (no reordering, no skipping, f64) for comparison.
    fn reference(
        shape: ConvShape,
        w: &[f32],
        b: &[f32],
        input: &[f32],
        (h, wd): (usize, usize),
    ) -> Vec<f32> {
        let ConvShape {
            kind,
            in_channels: cin,
            out_channels: cout,
            kernel: k,
            stride: s,
            ..
        } = shape;
        let p = k / 2;
        let (oh, ow) = match kind {
            ConvKind::Regular => ((h - 1) / s + 1, (wd - 1) / s + 1),
            ConvKind::Transposed => (h * s, wd * s),
        };
        let mut out = vec![0.0f64; oh * ow * cout];
        for (o, v) in out.iter_mut().enumerate() {
            *v = f64::from(b[o % cout]);
        }
        for iy in 0..h {
            for ix in 0..wd {
                for i in 0..cin {
                    for o in 0..cout {
                        for ky in 0..k {
                            for kx in 0..k {
                                let x = f64::from(input[(iy * wd + ix) * cin + i]);
                                match kind {
                                    ConvKind::Transposed => {
                                        let wv = f64::from(w[((i * cout + o) * k + ky) * k + kx]);
                                        let (oy, ox) = (iy * s + ky, ix * s + kx);
                                        if oy >= p && ox >= p && oy - p < oh && ox - p < ow {
                                            out[((oy - p) * ow + ox - p) * cout + o] += x * wv;
                                        }
                                    }
                                    ConvKind::Regular => {
                                        let wv = f64::from(w[((o * cin + i) * k + ky) * k + kx]);
                                        // out[oy] takes in[oy * s + ky - p]
                                        let (ty, tx) = (iy + p, ix + p);
                                        if ty >= ky && tx >= kx {
                                            let (ny, nx) = (ty - ky, tx - kx);
                                            if ny % s == 0
                                                && nx % s == 0
                                                && ny / s < oh
                                                && nx / s < ow
                                            {
                                                out[((ny / s) * ow + nx / s) * cout + o] += x * wv;
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        out.into_iter().map(|v| v as f32).collect()
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let t = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
                (t % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn layers_match_the_definitions() {
        for (kind, stride) in [
            (ConvKind::Transposed, 2),
            (ConvKind::Regular, 1),
            (ConvKind::Regular, 2),
            (ConvKind::Transposed, 1),
        ] {
            let (cin, cout, k, h, w) = (3, 4, 5, 3, 4);
            let shape = ConvShape {
                kind,
                in_channels: cin,
                out_channels: cout,
                kernel: k,
                stride,
                relu: false,
            };
            let weights = values(cin * cout * k * k, 1);
            let bias = values(cout, 2);
            let input = values(h * w * cin, 3);
            let layer = ConvLayer::from_torch_layout(shape, &weights, &bias).expect("layer");
            let fast = layer.forward(&input, h, w, Vectors::Widest);
            let slow = reference(shape, &weights, &bias, &input, (h, w));
            assert_eq!(fast.len(), slow.len());
            for (a, b) in fast.iter().zip(&slow) {
                assert!((a - b).abs() < 1e-5, "{kind:?}/{stride}: {a} vs {b}");
            }
        }
    }

    /// A small network of the hyperprior's shape with fixed weights.
    fn small_network() -> HyperSynthesis {
        let layer = |kind, cin, cout, kernel, stride, relu, seed| {
            let shape = ConvShape {
                kind,
                in_channels: cin,
                out_channels: cout,
                kernel,
                stride,
                relu,
            };
            let weights: Vec<f32> = values(cin * cout * kernel * kernel, seed)
                .iter()
                .map(|w| w * 0.3)
                .collect();
            ConvLayer::from_torch_layout(shape, &weights, &values(cout, seed + 1)).expect("layer")
        };
        HyperSynthesis::new(
            values(4, 7),
            vec![
                layer(ConvKind::Transposed, 4, 5, 5, 2, true, 11),
                layer(ConvKind::Transposed, 5, 6, 5, 2, true, 13),
                layer(ConvKind::Regular, 6, 6, 3, 1, false, 17),
            ],
        )
        .expect("network")
    }

    /// FNV-1a over the means' bits and the indices of the small network's output at `step`.
    fn output_fingerprint(step: QuantizationStep) -> (u64, YParameters) {
        let network = small_network();
        let symbols: Vec<i32> = values(4 * 2 * 3, 23)
            .iter()
            .map(|v| (v * 6.0).round() as i32)
            .collect();
        let p = network
            .y_parameters_at(&symbols, [2, 3], [7, 11], step)
            .expect("parameters");
        (parameters_fingerprint(&p), p)
    }

    /// The exact bits of the output are part of the format: encoders and decoders built at
    /// other times, on other machines, must derive the same indices and means. A change of
    /// this fingerprint means files written before it may no longer decode.
    #[test]
    fn output_bits_are_pinned() {
        let (hash, p) = output_fingerprint(QuantizationStep::ONE);
        assert_eq!(p.means.len(), 3 * 7 * 11);
        assert!(p.scale_indices.iter().any(|&i| i > 0));
        assert_eq!(
            hash, 0xb51d_434d_e096_29b6,
            "output fingerprint {hash:#018x}"
        );
    }

    /// The same for a variable-rate model's step: the division of the scales by the step the
    /// file carries is part of the format too. Steps move indices, never means.
    #[test]
    fn output_bits_at_a_step_are_pinned() {
        let (hash, p) = output_fingerprint(QuantizationStep::new(0.37).expect("step"));
        let (_, unit) = output_fingerprint(QuantizationStep::ONE);
        assert_eq!(p.means, unit.means);
        assert_ne!(p.scale_indices, unit.scale_indices);
        assert!(p
            .scale_indices
            .iter()
            .zip(&unit.scale_indices)
            .all(|(fine, one)| fine >= one));
        assert_eq!(
            hash, 0x119b_b640_e7c7_54ff,
            "output fingerprint {hash:#018x}"
        );
    }

    /// FNV-1a over the bits of `p`'s means and its indices.
    fn parameters_fingerprint(p: &YParameters) -> u64 {
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        let words = p
            .means
            .iter()
            .map(|m| m.to_bits())
            .chain(p.scale_indices.iter().map(|&i| u32::from(i)));
        for word in words {
            for byte in word.to_le_bytes() {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        hash
    }

    /// The same at the channel counts of the shipped networks (`z` 64, `y` 96: layers of 96,
    /// 144 and 192 outputs) and at counts that are not multiples of the inner loop's blocks of
    /// output channels: however the loops are arranged, every value keeps its bits.
    #[test]
    fn output_bits_at_wide_layers_are_pinned() {
        let symbols = |n: usize| -> Vec<i32> {
            values(n, 29)
                .iter()
                .map(|v| (v * 5.0).round() as i32)
                .collect()
        };
        // Outputs worth pinning: finite means, indices spread over the tables.
        let varied = |p: &YParameters| {
            let indices: std::collections::BTreeSet<u16> =
                p.scale_indices.iter().copied().collect();
            p.means.iter().all(|m| m.is_finite()) && indices.len() >= 8
        };
        for (z, y, seed, y_size, pinned) in [
            (64, 96, 5, [8, 12], 0x079b_0002_e978_4d65u64),
            (5, 53, 6, [7, 11], 0xb5cb_1843_1db2_1eea),
        ] {
            let p = HyperSynthesis::pseudo_random(z, y, seed)
                .y_parameters(&symbols(z * 2 * 3), [2, 3], y_size)
                .expect("parameters");
            assert!(varied(&p), "{z}/{y}");
            let hash = parameters_fingerprint(&p);
            assert_eq!(hash, pinned, "{z}/{y}: {hash:#018x}");
        }
    }

    /// The layers compiled for the CPU's widest vectors and for the baseline give the same
    /// bits (on a CPU without wider vectors both are the baseline, and the test is trivial).
    #[test]
    fn every_vector_width_gives_the_same_bits() {
        for (z, y, seed) in [(64, 96, 5), (5, 53, 6)] {
            let network = HyperSynthesis::pseudo_random(z, y, seed);
            let symbols: Vec<i32> = values(z * 2 * 3, 31)
                .iter()
                .map(|v| (v * 5.0).round() as i32)
                .collect();
            let prior = |vectors| {
                network
                    .y_prior_with(&symbols, [2, 3], [7, 11], vectors)
                    .expect("prior")
            };
            let (widest, baseline) = (prior(Vectors::Widest), prior(Vectors::Baseline));
            let bits = |values: &[f32]| values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(widest.means()),
                bits(baseline.means()),
                "means, {z}/{y}"
            );
            assert_eq!(
                widest.at(QuantizationStep::ONE),
                baseline.at(QuantizationStep::ONE),
                "{z}/{y}"
            );
        }
    }

    /// An encoder's rate search evaluates the prior once and takes it to each step: the
    /// parameters are the very ones the decoder derives from the file's step.
    #[test]
    fn a_prior_taken_to_a_step_is_that_steps_parameters() {
        let network = small_network();
        let symbols: Vec<i32> = values(4 * 2 * 3, 23)
            .iter()
            .map(|v| (v * 6.0).round() as i32)
            .collect();
        let prior = network.y_prior(&symbols, [2, 3], [7, 11]).expect("prior");
        for delta in [0.37, 1.0, 2.83] {
            let step = QuantizationStep::new(delta).expect("step");
            assert_eq!(prior.at(step), output_fingerprint(step).1, "step {delta}");
        }
        assert_eq!(
            prior.means(),
            output_fingerprint(QuantizationStep::ONE).1.means
        );
    }

    /// Symbols from a hostile stream (escape-coded extremes) make infinities and NaNs, never a
    /// panic or an index outside the tables.
    #[test]
    fn extreme_symbols_give_valid_indices() {
        let network = small_network();
        let symbols: Vec<i32> = (0..24)
            .map(|i| [i32::MAX, i32::MIN, 0, 1 << 30][i % 4])
            .collect();
        let p = network
            .y_parameters(&symbols, [2, 3], [8, 12])
            .expect("parameters");
        assert!(p
            .scale_indices
            .iter()
            .all(|&i| usize::from(i) < crate::NUM_SCALES));
    }

    #[test]
    fn bad_shapes_are_errors() {
        let shape = |cin, cout, kernel| ConvShape {
            kind: ConvKind::Regular,
            in_channels: cin,
            out_channels: cout,
            kernel,
            stride: 1,
            relu: false,
        };
        let layer = |cin, cout| {
            ConvLayer::from_torch_layout(
                shape(cin, cout, 3),
                &vec![0.5; cin * cout * 9],
                &vec![0.0; cout],
            )
            .expect("layer")
        };
        assert!(ConvLayer::from_torch_layout(shape(1, 1, 2), &[0.0; 4], &[0.0]).is_err());
        assert!(ConvLayer::from_torch_layout(shape(1, 1, 3), &[0.0; 8], &[0.0]).is_err());
        assert!(HyperSynthesis::new(vec![0.0; 2], vec![]).is_err());
        assert!(HyperSynthesis::new(vec![0.0; 2], vec![layer(2, 3), layer(4, 2)]).is_err());
        assert!(HyperSynthesis::new(vec![0.0; 2], vec![layer(2, 3)]).is_err());
        let h = HyperSynthesis::new(vec![0.0; 2], vec![layer(2, 4)]).expect("chain");
        assert_eq!(h.y_channels(), 2);
        assert!(h.y_parameters(&[0; 7], [2, 2], [2, 2]).is_err());
        assert!(h.y_parameters(&[0; 8], [2, 2], [3, 2]).is_err());
        assert!(h.y_parameters(&[0; 0], [0, 2], [1, 1]).is_err());
        let p = h.y_parameters(&[1; 8], [2, 2], [2, 1]).expect("parameters");
        assert_eq!(p.means.len(), 4);
        assert_eq!(p.scale_indices.len(), 4);
    }
}
