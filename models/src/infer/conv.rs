//! Convolutions and transposed convolutions as matrix products over output rows.
//!
//! # Regular convolution
//!
//! A `k x k` convolution with stride `s` and padding `p = k / 2` (PyTorch's `conv2d`, weight
//! `w[o][i][ky][kx]`) computes
//!
//! ```text
//! out[y][x][o] = b[o] + sum_{ky, kx, i} in[s y + ky - p][s x + kx - p][i] * w[o][i][ky][kx]
//! ```
//!
//! with zeros outside the input, so a side of `n` becomes `(n - 1) / s + 1`. For one output row
//! `y` this is a matrix product: the *patch matrix* (one row per output column `x`, one column
//! per tap `(ky, kx, i)`, copied from the input: "im2col") times the weight matrix
//! `W[(ky k + kx) C_in + i][o]`.
//!
//! # Transposed convolution
//!
//! PyTorch's `conv_transpose2d` with stride `s`, padding `p = k / 2` and output padding `s - 1`
//! (weight `w[i][o][ky][kx]`) is the adjoint: input pixel `(u, v)` adds `in[u][v][i] w[i][o][ky][kx]`
//! into `out[s u + ky - p][s v + kx - p][o]`, and a side of `n` becomes `s n`. Written per output
//! value, output row `y = s a + r` (phase `r < s`) receives input row `u` through kernel row
//! `ky = r + p - s (u - a)`, which exists for `u - a` in `[ceil((r + p - k + 1) / s), floor((r + p)
//! / s)]`. So each of the `s x s` output *phases* `(r, c)` is a stride-1 correlation of the input
//! with its own small kernel (for `k = 5`, `s = 2`: 3x3, 3x2, 2x3 and 2x2 taps) whose outputs land
//! on every `s`-th row and column. Splitting by phase multiplies no zero: the products add up to
//! exactly the `k^2` taps per input pixel of the definition.
//!
//! # One form for both
//!
//! Both are sums of phases:
//!
//! ```text
//! out[t a + r][t b + c] = sum_{ty, tx} in[s a + dy + ty][s b + dx + tx] * W_phase[ty][tx]
//! ```
//!
//! with input stride `s` and output step `t` (`s` = stride, `t` = 1 for a convolution; `s` = 1,
//! `t` = stride for a transposed one). Each output row is computed by one task, so its values
//! do not depend on how rows are spread over threads. For few input channels (the image's 3)
//! a phase is one product of a patch matrix (im2col of the needed input rows) with `W_phase`;
//! for many (`C_in >= 32`) it is one product per tap, each reading the channels-last input rows
//! in place (`C_in` deep), which spares the copy. A transposed layer with few output channels
//! (the last of the synthesis) merges its phases instead ([`SubPixelConv`]).

use rayon::prelude::*;

use std::ops::Range;
use std::sync::Arc;

use super::matmul::{add_product, Layout};
use super::{Buffers, FeatureMap, Planes, Strip};

/// Output columns per product: the patch matrix of a tile (at most 128 x 1600 values here) stays
/// in a core's cache however wide the image is.
const TILE_COLUMNS: usize = 128;

/// Output columns per product read in place ([`DIRECT_MIN_CHANNELS`]): no patch matrix to keep
/// in cache, so wider tiles only spare calls.
const DIRECT_TILE_COLUMNS: usize = 512;

/// Input channels from which a layer's products read the input in place, one per tap, instead
/// of through a patch matrix: each tap's product is then `C_in` deep.
const DIRECT_MIN_CHANNELS: usize = 32;

/// Whether a layer convolves or transposes a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKind {
    /// PyTorch `conv2d`, weight `(out, in, k, k)`.
    Regular,
    /// PyTorch `conv_transpose2d` with output padding `stride - 1`, weight `(in, out, k, k)`.
    Transposed,
}

/// The geometry of a layer: square odd kernel, padding `kernel / 2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    /// Regular or transposed.
    pub kind: ConvKind,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Side of the kernel (odd).
    pub kernel: usize,
    /// Stride (the up-sampling factor of a transposed layer).
    pub stride: usize,
}

impl ConvShape {
    /// Output height and width for an input of `height` x `width`.
    pub fn output_size(&self, height: usize, width: usize) -> (usize, usize) {
        let side = |n: usize| match self.kind {
            ConvKind::Regular => n.saturating_sub(1) / self.stride + 1,
            ConvKind::Transposed => n * self.stride,
        };
        (side(height), side(width))
    }
}

/// One phase of a layer (module docs): a stride-`in_stride` correlation with `taps` taps whose
/// outputs land at `out[step a + row][step b + column]`.
#[derive(Clone, Debug)]
struct Phase {
    /// Output phase `(r, c)`.
    out_phase: [usize; 2],
    /// First input row / column relative to `in_stride * (a, b)`.
    in_offset: [isize; 2],
    /// Taps `(rows, columns)`.
    taps: [usize; 2],
    /// `W[(ty taps_x + tx) C_in + i][o]`.
    weights: Vec<f32>,
}

/// A convolution or transposed convolution ready to run (module docs).
#[derive(Clone, Debug)]
pub struct Conv {
    shape: ConvShape,
    /// Input stride `s` and output step `t` of every phase.
    in_stride: usize,
    out_step: usize,
    /// Shared: clones of a network (e.g. at another observer mix) share the packed weights.
    phases: Arc<[Phase]>,
    bias: Vec<f32>,
}

/// Floor of `a / b` for a positive `b`.
fn floor_div(a: isize, b: isize) -> isize {
    a.div_euclid(b)
}

impl Conv {
    /// A layer from weights in PyTorch's layout for its kind and one bias per output channel.
    ///
    /// # Panics
    /// If the weight or bias length does not fit `shape`, the kernel is even or the stride is 0
    /// (the loader checks all of these first).
    pub(crate) fn new(shape: ConvShape, weight: &[f32], bias: &[f32]) -> Self {
        let ConvShape {
            kind,
            in_channels: cin,
            out_channels: cout,
            kernel: k,
            stride: s,
        } = shape;
        assert!(
            k % 2 == 1 && s > 0 && weight.len() == cin * cout * k * k && bias.len() == cout,
            "layer {shape:?} with {} weights, {} biases",
            weight.len(),
            bias.len()
        );
        let kernel = tap_major(shape, weight);
        let block = cin * cout;
        let kernel_tap = |ky: usize, kx: usize| &kernel[(ky * k + kx) * block..][..block];
        let (in_stride, out_step, phases) = match kind {
            ConvKind::Regular => {
                let pad = -((k / 2) as isize);
                let phase = build_phase([0, 0], [pad, pad], [k, k], block, kernel_tap);
                (s, 1, vec![phase])
            }
            ConvKind::Transposed => {
                let mut phases = Vec::with_capacity(s * s);
                for r in 0..s {
                    for c in 0..s {
                        phases.push(transposed_phase(shape, [r, c], kernel_tap));
                    }
                }
                (1, s, phases)
            }
        };
        Self {
            shape,
            in_stride,
            out_step,
            phases: phases.into(),
            bias: bias.to_vec(),
        }
    }

    /// The layer's geometry.
    pub fn shape(&self) -> ConvShape {
        self.shape
    }

    /// Applies the layer to a whole map, then `activation` to every output row (in place).
    ///
    /// # Panics
    /// If `input` does not have the layer's input channels.
    #[cfg(test)]
    pub(crate) fn forward<F>(&self, input: &FeatureMap, activation: F) -> FeatureMap
    where
        F: Fn(&mut [f32], &mut Vec<f32>) + Sync,
    {
        let rows = 0..self.shape.output_size(input.height, input.width).0;
        self.forward_rows(
            Strip::whole(input),
            rows,
            activation,
            &mut Buffers::default(),
        )
    }

    /// The input rows that output rows `rows` read, within an input of `height` rows.
    pub(crate) fn input_rows(&self, rows: &Range<usize>, height: usize) -> Range<usize> {
        if rows.is_empty() {
            return 0..0;
        }
        let ([first, _], [taps, _]) = self.window();
        let at = |y: usize| (self.in_stride * (y / self.out_step)) as isize;
        let clip = |v: isize| v.clamp(0, height as isize) as usize;
        clip(at(rows.start) + first)..clip(at(rows.end - 1) + first + taps as isize)
    }

    /// The union of the phases' input windows, rows then columns: its first offset relative to
    /// `in_stride * (a, b)` and its taps (for a transposed 5x5 layer of stride 2: from -1, 3).
    fn window(&self) -> ([isize; 2], [usize; 2]) {
        let axis = |axis: usize| {
            let first = self.phases.iter().map(|p| p.in_offset[axis]).min();
            let ends = self.phases.iter();
            let end = ends
                .map(|p| p.in_offset[axis] + p.taps[axis] as isize)
                .max();
            let first = first.unwrap_or(0);
            (first, (end.unwrap_or(0) - first) as usize)
        };
        let ((row, rows), (column, columns)) = (axis(0), axis(1));
        ([row, column], [rows, columns])
    }

    /// Output rows `rows` (of the whole output) from `input`, a strip that holds at least
    /// [`Self::input_rows`] of them, then `activation` on every row.
    ///
    /// # Panics
    /// If `input` does not have the layer's input channels or lacks a row it needs.
    pub(crate) fn forward_rows<F>(
        &self,
        input: Strip<'_>,
        rows: Range<usize>,
        activation: F,
        buffers: &mut Buffers,
    ) -> FeatureMap
    where
        F: Fn(&mut [f32], &mut Vec<f32>) + Sync,
    {
        assert_eq!(input.map.channels, self.shape.in_channels, "input channels");
        let width = self.shape.output_size(input.total, input.map.width).1;
        let cout = self.shape.out_channels;
        let mut output = FeatureMap::zeros_in(rows.len(), width, cout, buffers);
        output
            .data
            .par_chunks_mut(width * cout)
            .zip(rows)
            .for_each_init(
                || (Vec::new(), Vec::new()),
                |(patches, scratch), (row, y)| {
                    self.output_row(input, y, row, patches);
                    activation(row, scratch);
                },
            );
        output
    }

    /// Computes output row `y` into `row` (`width x C_out`), using `patches` as scratch.
    fn output_row(&self, input: Strip<'_>, y: usize, row: &mut [f32], patches: &mut Vec<f32>) {
        let cout = self.shape.out_channels;
        for pixel in row.chunks_exact_mut(cout) {
            pixel.copy_from_slice(&self.bias);
        }
        let width = row.len() / cout;
        let (t, r) = (self.out_step, y % self.out_step);
        let a = y / self.out_step;
        // Tiles of a fixed number of columns, whatever the image width or thread count.
        let direct = input.map.channels >= DIRECT_MIN_CHANNELS;
        let tile_columns = if direct {
            DIRECT_TILE_COLUMNS
        } else {
            TILE_COLUMNS
        };
        for phase in self.phases.iter().filter(|p| p.out_phase[0] == r) {
            let c = phase.out_phase[1];
            // Output columns t b + c < width.
            let columns = (width + t - 1 - c) / t;
            if columns == 0 {
                continue;
            }
            let k = phase.taps[0] * phase.taps[1] * input.map.channels;
            for first in (0..columns).step_by(tile_columns) {
                let tile = first..(first + tile_columns).min(columns);
                let count = tile.len();
                if direct {
                    let target = &mut row[(t * first + c) * cout..];
                    self.tap_products(input, phase, a, tile, target);
                    continue;
                }
                self.im2col(input, phase, a, tile, patches);
                add_product(
                    (
                        &mut row[(t * first + c) * cout..],
                        Layout::rows_apart(count, cout, t * cout),
                    ),
                    (patches, Layout::dense(count, k)),
                    (&phase.weights, Layout::dense(k, cout)),
                );
            }
        }
    }

    /// Adds `phase`'s products for columns `columns` of row `a` into `target` (whose first
    /// pixel is the output of column `columns.start`, pixels `out_step` apart), one product per
    /// tap read in place from the channels-last input: input pixels `in_stride` apart are the
    /// rows of the tap's `columns x C_in` matrix. Taps outside the input add nothing, so each
    /// tap's product covers the columns where it lies inside.
    fn tap_products(
        &self,
        input: Strip<'_>,
        phase: &Phase,
        a: usize,
        columns: Range<usize>,
        target: &mut [f32],
    ) {
        let (cin, cout) = (input.map.channels, self.shape.out_channels);
        let [taps_y, taps_x] = phase.taps;
        let s = self.in_stride as isize;
        let width = input.map.width as isize;
        let (b0, b1) = (columns.start as isize, columns.end as isize);
        for ty in 0..taps_y {
            let iy = s * a as isize + phase.in_offset[0] + ty as isize;
            let Some(input_row) = input.row(iy) else {
                continue;
            };
            for tx in 0..taps_x {
                let offset = phase.in_offset[1] + tx as isize;
                // Columns b with 0 <= s b + offset < width.
                let first = (-floor_div(offset, s)).max(b0);
                let end = (floor_div(width - 1 - offset, s) + 1).min(b1);
                if first >= end {
                    continue;
                }
                let count = (end - first) as usize;
                let x = (s * first + offset) as usize;
                let weights = &phase.weights[(ty * taps_x + tx) * cin * cout..][..cin * cout];
                add_product(
                    (
                        &mut target[(first - b0) as usize * self.out_step * cout..],
                        Layout::rows_apart(count, cout, self.out_step * cout),
                    ),
                    (
                        &input_row[x * cin..],
                        Layout::rows_apart(count, cin, self.in_stride * cin),
                    ),
                    (weights, Layout::dense(cin, cout)),
                );
            }
        }
    }

    /// Fills `patches` (`columns x taps x C_in`) for columns `columns` of row `a` of `phase`,
    /// zeros outside the input. Every element is written (copied or zeroed) once, so the buffer
    /// is never cleared first.
    fn im2col(
        &self,
        input: Strip<'_>,
        phase: &Phase,
        a: usize,
        columns: Range<usize>,
        patches: &mut Vec<f32>,
    ) {
        let map = input.map;
        let cin = map.channels;
        let [taps_y, taps_x] = phase.taps;
        let (patch, run) = (taps_y * taps_x * cin, taps_x * cin);
        patches.resize(columns.len() * patch, 0.0);
        let s = self.in_stride as isize;
        let width = map.width as isize;
        for ty in 0..taps_y {
            let iy = s * a as isize + phase.in_offset[0] + ty as isize;
            let input_row = input.row(iy);
            for (b, patch_row) in columns.clone().zip(patches.chunks_exact_mut(patch)) {
                let target = &mut patch_row[ty * run..][..run];
                let Some(input_row) = input_row else {
                    target.fill(0.0);
                    continue;
                };
                let x0 = s * b as isize + phase.in_offset[1];
                // Taps tx with 0 <= x0 + tx < width.
                let first = (-x0).clamp(0, taps_x as isize) as usize;
                let end = (width - x0).clamp(first as isize, taps_x as isize) as usize;
                target[..first * cin].fill(0.0);
                target[end * cin..].fill(0.0);
                if first < end {
                    let source = (x0 + first as isize) as usize * cin;
                    let count = (end - first) * cin;
                    target[first * cin..end * cin]
                        .copy_from_slice(&input_row[source..source + count]);
                }
            }
        }
    }
}

/// A transposed layer with all its phases merged into one stride-1 correlation
/// ("sub-pixel" form), for a layer with few output channels (the last of the synthesis),
/// whose phases' products would be a few columns wide.
///
/// The `s x s` phases of a transposed layer read windows of input offsets that overlap (for
/// `k = 5`, `s = 2`: `[-1, 1]` and `[0, 1]` on each axis); over their union window one patch
/// matrix serves them all, and one product with `s^2 C_out` columns gives the `s x s` block of
/// outputs `out[s a + r][s b + c][o]` of every input pixel `(a, b)`:
///
/// ```text
/// block[b][(r s + c) C_out + o] = bias[o]
///     + sum_{dy, dx, i} in[a + dy][b + dx][i] * W[(dy, dx, i)][(r, c, o)]
/// ```
///
/// where `W` holds phase `(r, c)`'s weights at its own offsets and zeros elsewhere (for
/// `k = 5`, `s = 2`: 36 taps where the definition has 25; the zeros add exact zeros).
#[derive(Clone, Debug)]
pub struct SubPixelConv {
    /// The layer as defined, for its geometry.
    conv: Conv,
    /// The union window: its `in_offset` and `taps`, and `W` as `K x s^2 C_out`.
    merged: Phase,
    /// `bias[o]` at every column `(r, c, o)` of `W`.
    bias: Vec<f32>,
}

impl SubPixelConv {
    /// The merged form of a transposed layer.
    ///
    /// # Panics
    /// If `conv` is not a transposed layer.
    pub(crate) fn new(conv: Conv) -> Self {
        assert!(conv.shape.kind == ConvKind::Transposed, "a regular layer");
        let (s, cin, cout) = (
            conv.out_step,
            conv.shape.in_channels,
            conv.shape.out_channels,
        );
        let (in_offset, taps) = conv.window();
        let columns = s * s * cout;
        let mut weights = vec![0.0f32; taps[0] * taps[1] * cin * columns];
        for phase in conv.phases.iter() {
            let [r, c] = phase.out_phase;
            let dy = (phase.in_offset[0] - in_offset[0]) as usize;
            let dx = (phase.in_offset[1] - in_offset[1]) as usize;
            for ty in 0..phase.taps[0] {
                for tx in 0..phase.taps[1] {
                    let from = (ty * phase.taps[1] + tx) * cin * cout;
                    let to = ((ty + dy) * taps[1] + tx + dx) * cin;
                    for i in 0..cin {
                        let source = &phase.weights[from + i * cout..][..cout];
                        let row = (to + i) * columns + (r * s + c) * cout;
                        weights[row..row + cout].copy_from_slice(source);
                    }
                }
            }
        }
        let bias = conv.bias.repeat(s * s);
        let merged = Phase {
            out_phase: [0, 0],
            in_offset,
            taps,
            weights,
        };
        Self { conv, merged, bias }
    }

    /// The layer's geometry.
    pub fn shape(&self) -> ConvShape {
        self.conv.shape
    }

    /// The input rows that output rows `rows` read, within an input of `height` rows: those of
    /// the layer as defined ([`Conv::input_rows`] reads the union window of every phase, which
    /// is the merged window).
    pub(crate) fn input_rows(&self, rows: &Range<usize>, height: usize) -> Range<usize> {
        self.conv.input_rows(rows, height)
    }

    /// Output rows `rows` of the layer as channels-first planes, from a channels-last strip
    /// that holds at least [`Self::input_rows`] of them. One task per input row computes its
    /// `s` output rows, so no value depends on how rows are spread over threads.
    ///
    /// # Panics
    /// If `input` does not have the layer's input channels or lacks a row it needs.
    pub(crate) fn forward_rows(
        &self,
        input: Strip<'_>,
        rows: Range<usize>,
        buffers: &mut Buffers,
    ) -> Planes {
        let shape = self.conv.shape;
        assert_eq!(input.map.channels, shape.in_channels, "input channels");
        let s = self.conv.out_step;
        let width = shape.output_size(input.total, input.map.width).1;
        let cout = shape.out_channels;
        let height = rows.len();
        if height == 0 {
            return Planes::from_row_blocks(0, width, cout, &[]);
        }
        // Row blocks `[y][o][x]` of whole input rows' output rows, reordered to planes at the end.
        let inputs = rows.start / s..(rows.end - 1) / s + 1;
        let mut blocks = buffers.zeros(inputs.len() * s * cout * width);
        blocks
            .par_chunks_mut(s * cout * width)
            .zip(inputs.clone())
            .for_each_init(
                || (Vec::new(), Vec::new()),
                |(patches, product), (block, a)| self.input_row(input, a, block, patches, product),
            );
        let skipped = (rows.start - s * inputs.start) * cout * width;
        let planes = Planes::from_row_blocks(
            height,
            width,
            cout,
            &blocks[skipped..][..height * cout * width],
        );
        buffers.give(blocks);
        planes
    }

    /// The `s` output rows of input row `a` into `block` (`[r][o][x]`).
    fn input_row(
        &self,
        input: Strip<'_>,
        a: usize,
        block: &mut [f32],
        patches: &mut Vec<f32>,
        product: &mut Vec<f32>,
    ) {
        let (s, cout) = (self.conv.out_step, self.conv.shape.out_channels);
        let width = block.len() / (s * cout);
        let columns = self.bias.len();
        let k = self.merged.taps[0] * self.merged.taps[1] * input.map.channels;
        for first in (0..input.map.width).step_by(TILE_COLUMNS) {
            let tile = first..(first + TILE_COLUMNS).min(input.map.width);
            let count = tile.len();
            self.conv.im2col(input, &self.merged, a, tile, patches);
            product.clear();
            for _ in 0..count {
                product.extend_from_slice(&self.bias);
            }
            add_product(
                (product, Layout::dense(count, columns)),
                (patches, Layout::dense(count, k)),
                (&self.merged.weights, Layout::dense(k, columns)),
            );
            for (b, outputs) in (first..).zip(product.chunks_exact(columns)) {
                for (rc, values) in outputs.chunks_exact(cout).enumerate() {
                    let (r, c) = (rc / s, rc % s);
                    for (o, &v) in values.iter().enumerate() {
                        block[(r * cout + o) * width + s * b + c] = v;
                    }
                }
            }
        }
    }
}

/// The weight matrix of a phase: `taps` maps a tap `(ty, tx)` to what `value(i, o, tap)` takes.
fn build_phase<'a>(
    out_phase: [usize; 2],
    in_offset: [isize; 2],
    taps: [usize; 2],
    block: usize,
    tap: impl Fn(usize, usize) -> &'a [f32],
) -> Phase {
    let mut weights = Vec::with_capacity(taps[0] * taps[1] * block);
    for ty in 0..taps[0] {
        for tx in 0..taps[1] {
            weights.extend_from_slice(tap(ty, tx));
        }
    }
    Phase {
        out_phase,
        in_offset,
        taps,
        weights,
    }
}

/// PyTorch's weight of a layer (`w[o][i][ky][kx]`, transposed `w[i][o][ky][kx]`) tap-major:
/// `W[(ky k + kx) C_in + i][o]`, the `C_in x C_out` block of every kernel tap in one piece.
///
/// Input channel outermost, output channel innermost: the writes run along rows of `C_out`
/// values and the reads of one `i` stay within a few KB of the weight, where gathering each
/// tap's block from the whole layer (hundreds of KB) made loading a model several times slower.
fn tap_major(shape: ConvShape, weight: &[f32]) -> Vec<f32> {
    let (cin, cout) = (shape.in_channels, shape.out_channels);
    let taps = shape.kernel * shape.kernel;
    let mut out = vec![0.0f32; weight.len()];
    for i in 0..cin {
        // w[.][.][ky][kx] of input channel i and output channel o is at base + o * o_stride + tap.
        let (base, o_stride) = match shape.kind {
            ConvKind::Regular => (i * taps, cin * taps),
            ConvKind::Transposed => (i * cout * taps, taps),
        };
        for tap in 0..taps {
            let row = &mut out[(tap * cin + i) * cout..][..cout];
            for (o, value) in row.iter_mut().enumerate() {
                *value = weight[base + o * o_stride + tap];
            }
        }
    }
    out
}

/// Phase `(r, c)` of a transposed layer: input offsets `u - a` from `ceil((r + p - k + 1) / s)`
/// to `floor((r + p) / s)`, kernel index `r + p - s (u - a)` (module docs).
fn transposed_phase<'a>(
    shape: ConvShape,
    out_phase: [usize; 2],
    kernel_tap: impl Fn(usize, usize) -> &'a [f32],
) -> Phase {
    let (k, s) = (shape.kernel as isize, shape.stride as isize);
    let p = k / 2;
    let first = |r: isize| -floor_div(-(r + p - k + 1), s);
    let last = |r: isize| floor_div(r + p, s);
    let [r, c] = out_phase.map(|v| v as isize);
    let in_offset = [first(r), first(c)];
    let taps = [last(r) - first(r) + 1, last(c) - first(c) + 1].map(|v| v as usize);
    let kernel_index = |r: isize, d: isize| (r + p - s * d) as usize;
    let tap = |ty: usize, tx: usize| {
        kernel_tap(
            kernel_index(r, in_offset[0] + ty as isize),
            kernel_index(c, in_offset[1] + tx as isize),
        )
    };
    let block = shape.in_channels * shape.out_channels;
    build_phase(out_phase, in_offset, taps, block, tap)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct evaluation of PyTorch's definitions in f64 (scatter form for the transposed layer).
    fn reference(shape: ConvShape, w: &[f32], b: &[f32], input: &FeatureMap) -> Vec<f64> {
        let ConvShape {
            kind,
            in_channels: cin,
            out_channels: cout,
            kernel: k,
            stride: s,
        } = shape;
        let p = (k / 2) as isize;
        let (oh, ow) = shape.output_size(input.height, input.width);
        let mut out: Vec<f64> = (0..oh * ow * cout)
            .map(|j| f64::from(b[j % cout]))
            .collect();
        for u in 0..input.height as isize {
            for v in 0..input.width as isize {
                for i in 0..cin {
                    let x =
                        f64::from(input.data[(u as usize * input.width + v as usize) * cin + i]);
                    for o in 0..cout {
                        for ky in 0..k as isize {
                            for kx in 0..k as isize {
                                let (ku, kv) = (ky as usize, kx as usize);
                                let (oy, ox, wv) = match kind {
                                    ConvKind::Transposed => (
                                        u * s as isize + ky - p,
                                        v * s as isize + kx - p,
                                        w[((i * cout + o) * k + ku) * k + kv],
                                    ),
                                    ConvKind::Regular => {
                                        let (ty, tx) = (u + p - ky, v + p - kx);
                                        if ty % s as isize != 0 || tx % s as isize != 0 {
                                            continue;
                                        }
                                        (
                                            ty / s as isize,
                                            tx / s as isize,
                                            w[((o * cin + i) * k + ku) * k + kv],
                                        )
                                    }
                                };
                                if (0..oh as isize).contains(&oy) && (0..ow as isize).contains(&ox)
                                {
                                    out[(oy as usize * ow + ox as usize) * cout + o] +=
                                        x * f64::from(wv);
                                }
                            }
                        }
                    }
                }
            }
        }
        out
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
        for (kind, k, s) in [
            (ConvKind::Regular, 5, 2),
            (ConvKind::Regular, 3, 1),
            (ConvKind::Transposed, 5, 2),
            (ConvKind::Transposed, 3, 2),
            (ConvKind::Transposed, 5, 3),
            (ConvKind::Regular, 5, 3),
        ] {
            // 3 channels: through a patch matrix; DIRECT_MIN_CHANNELS: a product per tap.
            let cases = [(3, (1, 1)), (3, (3, 4)), (3, (7, 5))];
            let direct = [(DIRECT_MIN_CHANNELS, (3, 4)), (DIRECT_MIN_CHANNELS, (7, 5))];
            for (cin, (h, w)) in cases.into_iter().chain(direct) {
                let shape = ConvShape {
                    kind,
                    in_channels: cin,
                    out_channels: 4,
                    kernel: k,
                    stride: s,
                };
                let weight = values(cin * 4 * k * k, 1);
                let bias = values(4, 2);
                let input = FeatureMap::from_hwc(h, w, cin, values(h * w * cin, 3)).expect("map");
                let conv = Conv::new(shape, &weight, &bias);
                let fast = conv.forward(&input, |_, _| {});
                let slow = reference(shape, &weight, &bias, &input);
                let case = format!("{kind:?} k{k} s{s} {h}x{w}x{cin}");
                assert_eq!(fast.data.len(), slow.len(), "{case}");
                for (a, b) in fast.data.iter().zip(&slow) {
                    assert!((f64::from(*a) - b).abs() < 1e-5, "{case}: {a} vs {b}");
                }
                if kind == ConvKind::Transposed {
                    let rows = 0..shape.output_size(h, w).0;
                    let merged = SubPixelConv::new(conv.clone()).forward_rows(
                        Strip::whole(&input),
                        rows,
                        &mut Buffers::default(),
                    );
                    let plane = merged.height * merged.width;
                    for (j, b) in slow.iter().enumerate() {
                        let a = merged.data[(j % 4) * plane + j / 4];
                        assert!(
                            (f64::from(a) - b).abs() < 1e-5,
                            "sub-pixel {case}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }
}
