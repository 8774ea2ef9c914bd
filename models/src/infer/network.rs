//! The three networks, built from the tensors of a model file (safetensors, CompressAI names).

use safetensors::tensor::SafeTensors;

use super::conv::{Conv, ConvKind, ConvShape};
use super::gdn::Gdn;
use super::synthesis::Synthesis;
use std::borrow::Cow;
use std::ops::Range;

use super::{Buffers, FeatureMap, InferError, Planes, Strip};

/// Output rows per strip of [`Networks::synthesis`]. On a Kodak image strips of 64 rows run
/// as fast as the whole image at once (within the noise of a loaded machine): the hidden rows
/// they recompute (the halo, about 9% more work) are paid back by rows that stay in cache.
pub const SYNTHESIS_STRIP_ROWS: usize = 64;

/// Rows of `y` per band of [`Networks::analysis`] (64 image rows): the hidden layers keep a
/// few dozen rows each instead of the whole image, which also keeps them in cache.
pub const ANALYSIS_BAND_ROWS: usize = 4;

/// Channels of the networks: `n` hidden (and of `z`), `m` of `y`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkShape {
    /// Hidden channels (CompressAI's N).
    pub n: usize,
    /// Channels of `y` (CompressAI's M).
    pub m: usize,
}

/// What follows a convolution.
#[derive(Clone, Debug)]
pub(super) enum Activation {
    None,
    Relu,
    Gdn(Gdn),
    /// GDN, then the observer-mix conditioning at one `alpha`.
    GdnThenAffine(Gdn, ChannelAffine),
}

impl Activation {
    pub(super) fn apply(&self, row: &mut [f32], scratch: &mut Vec<f32>) {
        match self {
            Self::None => {}
            Self::Relu => row.iter_mut().for_each(|v| *v = v.max(0.0)),
            Self::Gdn(gdn) => gdn.apply(row, scratch),
            Self::GdnThenAffine(gdn, affine) => {
                gdn.apply(row, scratch);
                affine.apply(row);
            }
        }
    }

    /// The GDN of this activation followed by `affine` (an activation without GDN as it is).
    fn with_affine(&self, affine: ChannelAffine) -> Self {
        match self {
            Self::Gdn(gdn) | Self::GdnThenAffine(gdn, _) => {
                Self::GdnThenAffine(gdn.clone(), affine)
            }
            other => other.clone(),
        }
    }
}

/// `x_c · scale_c + shift_c` on channels-last rows: the affine map of the observer-mix
/// conditioning (docs/architecture.md) at one `alpha`, `scale = 1 + alpha u`, `shift = alpha
/// v`, in the operations of the training network (`ocular_models::layers::AlphaAffine`).
#[derive(Clone, Debug)]
pub(super) struct ChannelAffine {
    scale: Vec<f32>,
    shift: Vec<f32>,
}

impl ChannelAffine {
    fn at(alpha: f32, (u, v): &AffineWeights) -> Self {
        Self {
            scale: u.iter().map(|u| u * alpha + 1.0).collect(),
            shift: v.iter().map(|v| v * alpha).collect(),
        }
    }

    fn apply(&self, row: &mut [f32]) {
        for pixel in row.chunks_exact_mut(self.scale.len()) {
            for ((x, scale), shift) in pixel.iter_mut().zip(&self.scale).zip(&self.shift) {
                *x = *x * scale + shift;
            }
        }
    }
}

/// The `(u, v)` of one affine map of the observer-mix conditioning.
type AffineWeights = (Vec<f32>, Vec<f32>);

/// The observer-mix conditioning of a model file (its `alpha.*` tensors, docs/architecture.md):
/// the affine maps' `(u, v)` after the three GDNs of `g_a` and of `g_s`, and `y`'s log-gains.
#[derive(Clone, Debug)]
struct MixWeights {
    analysis: Vec<AffineWeights>,
    synthesis: Vec<AffineWeights>,
    y_log_gain: Vec<f32>,
}

/// `exp(sign · alpha · g_c)`: the gain on `y` at one `alpha` (`sign` 1 for `g_a`'s output, -1
/// for `g_s`'s input), as the training network computes it.
fn gains(alpha: f32, sign: f32, log_gain: &[f32]) -> Vec<f32> {
    log_gain
        .iter()
        .map(|g| (g * (sign * alpha)).exp())
        .collect()
}

/// A chain of convolutions, each followed by its activation.
#[derive(Clone, Debug)]
pub(super) struct Chain {
    pub(super) layers: Vec<(Conv, Activation)>,
}

impl Chain {
    /// Runs every layer on a whole channels-last map.
    fn run(&self, mut map: FeatureMap) -> FeatureMap {
        let mut buffers = Buffers::default();
        for (conv, activation) in &self.layers {
            let rows = 0..conv.shape().output_size(map.height, map.width).0;
            let next = conv.forward_rows(
                Strip::whole(&map),
                rows,
                |row, scratch| activation.apply(row, scratch),
                &mut buffers,
            );
            buffers.give(std::mem::replace(&mut map, next).data);
        }
        map
    }

    /// Runs every layer on `input`, `band` rows of the last output at a time: each layer
    /// computes only the rows the next one still lacks and keeps only those it will still need
    /// ([`Window`]), so the hidden layers hold a few rows each whatever the image size, and
    /// every row is computed once, exactly as [`Self::run`] computes it. Returns the whole
    /// output.
    ///
    /// The input is `height` x `width`, and `input(rows)` returns those rows of it (channels
    /// last); it is asked for every row once, top to bottom.
    ///
    /// # Panics
    /// If `band` is 0 or the chain is empty.
    fn run_in_bands(
        &self,
        (height, width): (usize, usize),
        mut input: impl FnMut(Range<usize>) -> FeatureMap,
        band: usize,
    ) -> FeatureMap {
        assert!(band > 0 && !self.layers.is_empty(), "bands of {band} rows");
        // sizes[i]: (rows, columns) of the input of layer i; the last: of the output.
        let mut sizes = vec![(height, width)];
        for (conv, _) in &self.layers {
            let (h, w) = sizes[sizes.len() - 1];
            sizes.push(conv.shape().output_size(h, w));
        }
        let mut source = Window::empty(width, self.in_channels());
        let mut windows: Vec<Window> = self
            .layers
            .iter()
            .zip(&sizes[1..])
            .map(|((conv, _), &(_, w))| Window::empty(w, conv.shape().out_channels))
            .collect();
        let height = sizes[sizes.len() - 1].0;
        for first in (0..height).step_by(band) {
            // wanted[0]: rows of the input; wanted[i + 1]: output rows of layer i.
            let rows = first..first.saturating_add(band).min(height);
            let mut wanted = vec![rows];
            for ((conv, _), &(h, _)) in self.layers.iter().zip(&sizes).rev() {
                let needed = conv.input_rows(&wanted[0], h);
                wanted.insert(0, needed);
            }
            source.trim(wanted[0].start);
            let new = source.end().max(wanted[0].start)..wanted[0].end;
            if !new.is_empty() {
                source.append(input(new));
            }
            for (i, (conv, activation)) in self.layers.iter().enumerate() {
                let (done, rest) = windows.split_at_mut(i);
                let previous = done.last().unwrap_or(&source);
                let window = &mut rest[0];
                if i + 1 < self.layers.len() {
                    window.trim(wanted[i + 1].start);
                }
                let new = window.end().max(wanted[i + 1].start)..wanted[i + 1].end;
                if new.is_empty() {
                    continue;
                }
                let strip = Strip {
                    map: &previous.map,
                    first: previous.first,
                    total: sizes[i].0,
                };
                window.append(conv.forward_rows(
                    strip,
                    new,
                    |row, scratch| activation.apply(row, scratch),
                    &mut Buffers::default(),
                ));
            }
        }
        windows.pop().map_or(source.map, |window| window.map)
    }

    pub(super) fn in_channels(&self) -> usize {
        self.layers
            .first()
            .map_or(0, |(conv, _)| conv.shape().in_channels)
    }
}

/// Rows `first..first + map.height` of a map produced top to bottom: what a layer keeps of its
/// output while the next layer may still read it.
#[derive(Clone, Debug)]
struct Window {
    map: FeatureMap,
    first: usize,
}

impl Window {
    fn empty(width: usize, channels: usize) -> Self {
        Self {
            map: FeatureMap::zeros(0, width, channels),
            first: 0,
        }
    }

    /// One past the last row held.
    fn end(&self) -> usize {
        self.first + self.map.height
    }

    /// Drops the rows before `row`.
    fn trim(&mut self, row: usize) {
        let drop = row.saturating_sub(self.first).min(self.map.height);
        let len = self.map.width * self.map.channels;
        self.map.data.drain(..drop * len);
        self.map.height -= drop;
        self.first = self.first.max(row);
    }

    /// Appends `rows`, which follow the last row held.
    fn append(&mut self, rows: FeatureMap) {
        debug_assert_eq!(
            (rows.width, rows.channels),
            (self.map.width, self.map.channels)
        );
        self.map.data.extend_from_slice(&rows.data);
        self.map.height += rows.height;
    }
}

/// `g_a`, `h_a` and `g_s` of a mean-scale hyperprior model, in pure Rust (module docs of
/// [`super`]).
#[derive(Clone, Debug)]
pub struct Networks {
    shape: NetworkShape,
    analysis: Chain,
    /// The gain on `y` at the end of `g_a` (a conditioned network at a non-zero mix).
    analysis_gain: Option<Vec<f32>>,
    hyper_analysis: Chain,
    synthesis: Synthesis,
    /// The observer-mix conditioning, in a network for every mix.
    mix: Option<MixWeights>,
}

/// The tensors of a model file, read as `f32`.
pub(super) struct Tensors<'a> {
    pub(super) file: SafeTensors<'a>,
}

impl Tensors<'_> {
    /// The values of tensor `name`, which must have shape `expected`.
    fn get(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>, InferError> {
        let view = self
            .file
            .tensor(name)
            .map_err(|_| InferError::Missing(name.to_string()))?;
        if view.shape() != expected {
            return Err(InferError::TensorShape {
                name: name.to_string(),
                found: view.shape().to_vec(),
                expected: expected.to_vec(),
            });
        }
        let values = crate::model_file::tensor_f32(&view).map_err(|dtype| InferError::Dtype {
            name: name.to_string(),
            dtype,
        })?;
        // safetensors checks that the data fits the shape; keep the invariant local anyway.
        if values.len() != expected.iter().product::<usize>() {
            return Err(InferError::Format(format!(
                "tensor {name}: {} values",
                values.len()
            )));
        }
        Ok(values)
    }

    /// The first dimension of tensor `name`.
    pub(super) fn leading_dimension(&self, name: &str) -> Result<usize, InferError> {
        let view = self
            .file
            .tensor(name)
            .map_err(|_| InferError::Missing(name.to_string()))?;
        view.shape()
            .first()
            .copied()
            .ok_or_else(|| InferError::TensorShape {
                name: name.to_string(),
                found: view.shape().to_vec(),
                expected: vec![0, 0, 0, 0],
            })
    }

    /// Convolution `prefix.{index}` of `shape`.
    fn conv(&self, prefix: &str, index: usize, shape: ConvShape) -> Result<Conv, InferError> {
        let ConvShape {
            kind,
            in_channels,
            out_channels,
            kernel,
            ..
        } = shape;
        let dims = match kind {
            ConvKind::Regular => [out_channels, in_channels, kernel, kernel],
            ConvKind::Transposed => [in_channels, out_channels, kernel, kernel],
        };
        let weight = self.get(&format!("{prefix}.{index}.weight"), &dims)?;
        let bias = self.get(&format!("{prefix}.{index}.bias"), &[out_channels])?;
        Ok(Conv::new(shape, &weight, &bias))
    }

    /// GDN `prefix.{index}` over `channels` channels.
    fn gdn(
        &self,
        prefix: &str,
        index: usize,
        channels: usize,
        inverse: bool,
    ) -> Result<Activation, InferError> {
        let beta = self.get(&format!("{prefix}.{index}.beta"), &[channels])?;
        let gamma = self.get(&format!("{prefix}.{index}.gamma"), &[channels, channels])?;
        Ok(Activation::Gdn(Gdn::from_stored(&beta, &gamma, inverse)))
    }

    /// `g_a` or `g_s`: four 5x5 stride-2 layers through `channels`, GDN between them.
    pub(super) fn transform(
        &self,
        prefix: &str,
        kind: ConvKind,
        channels: [usize; 5],
    ) -> Result<Chain, InferError> {
        let mut layers = Vec::with_capacity(4);
        for (i, pair) in channels.windows(2).enumerate() {
            let shape = ConvShape {
                kind,
                in_channels: pair[0],
                out_channels: pair[1],
                kernel: 5,
                stride: 2,
            };
            let conv = self.conv(prefix, 2 * i, shape)?;
            let activation = if i < 3 {
                self.gdn(prefix, 2 * i + 1, pair[1], kind == ConvKind::Transposed)?
            } else {
                Activation::None
            };
            layers.push((conv, activation));
        }
        Ok(Chain { layers })
    }

    /// The observer-mix conditioning, if the file has it (`alpha.y.log_gain` present: then
    /// every `alpha.*` tensor must be).
    fn mix(&self, NetworkShape { n, m }: NetworkShape) -> Result<Option<MixWeights>, InferError> {
        if self.file.tensor("alpha.y.log_gain").is_err() {
            return Ok(None);
        }
        let affines = |transform: &str| -> Result<Vec<AffineWeights>, InferError> {
            [1, 3, 5]
                .iter()
                .map(|layer| {
                    let name = |what: &str| format!("alpha.{transform}.{layer}.{what}");
                    Ok((
                        self.get(&name("scale"), &[n])?,
                        self.get(&name("shift"), &[n])?,
                    ))
                })
                .collect()
        };
        Ok(Some(MixWeights {
            analysis: affines("g_a")?,
            synthesis: affines("g_s")?,
            y_log_gain: self.get("alpha.y.log_gain", &[m])?,
        }))
    }

    /// `h_a`: 3x3 conv, ReLU, two 5x5 stride-2 convs with a ReLU between.
    fn hyper_analysis(&self, NetworkShape { n, m }: NetworkShape) -> Result<Chain, InferError> {
        let shape = |in_channels, kernel, stride| ConvShape {
            kind: ConvKind::Regular,
            in_channels,
            out_channels: n,
            kernel,
            stride,
        };
        Ok(Chain {
            layers: vec![
                (self.conv("h_a", 0, shape(m, 3, 1))?, Activation::Relu),
                (self.conv("h_a", 2, shape(n, 5, 2))?, Activation::Relu),
                (self.conv("h_a", 4, shape(n, 5, 2))?, Activation::None),
            ],
        })
    }
}

impl Networks {
    /// The networks of a model file's bytes (safetensors; f16, bf16 or f32 tensors named as in
    /// CompressAI's state dict). N and M are read from the shapes of `g_a.0.weight` and
    /// `g_a.6.weight`; every other tensor must fit them.
    ///
    /// # Errors
    /// [`InferError::Format`] if the bytes are not safetensors, [`InferError::Missing`],
    /// [`InferError::TensorShape`] or [`InferError::Dtype`] for a tensor the networks cannot
    /// use.
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self, InferError> {
        let file =
            SafeTensors::deserialize(bytes).map_err(|e| InferError::Format(e.to_string()))?;
        let tensors = Tensors { file };
        let n = tensors.leading_dimension("g_a.0.weight")?;
        let m = tensors.leading_dimension("g_a.6.weight")?;
        if n == 0 || m == 0 {
            return Err(InferError::TensorShape {
                name: "g_a".into(),
                found: vec![n, m],
                expected: vec![64, 96],
            });
        }
        let shape = NetworkShape { n, m };
        // The layers' weights are re-laid out as they are read: g_a and g_s side by side.
        let (analysis, synthesis) = rayon::join(
            || tensors.transform("g_a", ConvKind::Regular, [3, n, n, n, m]),
            || tensors.transform("g_s", ConvKind::Transposed, [m, n, n, n, 3]),
        );
        let (analysis, synthesis) = (analysis?, synthesis?);
        Ok(Self {
            shape,
            analysis,
            analysis_gain: None,
            hyper_analysis: tensors.hyper_analysis(shape)?,
            synthesis: Synthesis::new(synthesis)?,
            mix: tensors.mix(shape)?,
        })
    }

    /// Whether the networks are conditioned on the observer mix (a model for every mix).
    pub fn has_observer_mix(&self) -> bool {
        self.mix.is_some()
    }

    /// The networks at the observer mix `alpha`: at 0 these very networks (a conditioned
    /// network's conditioning is the identity there); else, for a conditioned network, a copy
    /// (sharing the convolutions' weights) with the conditioning at `alpha` in `g_a` and `g_s`.
    ///
    /// # Errors
    /// [`InferError::Input`] if `alpha` is outside [0, 1], or not 0 for networks without the
    /// conditioning.
    pub fn at_observer_mix(&self, alpha: f32) -> Result<Cow<'_, Self>, InferError> {
        if !(0.0..=1.0).contains(&alpha) {
            return Err(InferError::Input(format!(
                "observer mix {alpha} is outside [0, 1]"
            )));
        }
        if alpha == 0.0 {
            return Ok(Cow::Borrowed(self));
        }
        let Some(mix) = &self.mix else {
            return Err(InferError::Input(format!(
                "observer mix {alpha}: these networks are not conditioned on the mix"
            )));
        };
        let mut mixed = self.clone();
        for ((_, activation), weights) in mixed.analysis.layers.iter_mut().zip(&mix.analysis) {
            *activation = activation.with_affine(ChannelAffine::at(alpha, weights));
        }
        mixed.analysis_gain = Some(gains(alpha, 1.0, &mix.y_log_gain));
        mixed.synthesis = self.synthesis.conditioned(
            |activation, layer| {
                activation.with_affine(ChannelAffine::at(alpha, &mix.synthesis[layer]))
            },
            gains(alpha, -1.0, &mix.y_log_gain),
        );
        Ok(Cow::Owned(mixed))
    }

    /// Networks of `shape` with deterministic pseudo-random weights of `seed` (scaled by fan-in,
    /// GDN near its initialisation), for tests and benchmarks: the outputs mean nothing, but they
    /// cost what trained networks of that shape cost and exercise every code path.
    ///
    /// # Panics
    /// If `shape.n` or `shape.m` is 0.
    pub fn pseudo_random(shape: NetworkShape, seed: u64) -> Self {
        assert!(shape.n > 0 && shape.m > 0, "channels of {shape:?}");
        let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
        let mut values = |count: usize, scale: f32, offset: f32| -> Vec<f32> {
            (0..count)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale + offset
                })
                .collect()
        };
        let mut conv = |kind, in_channels: usize, out_channels: usize, kernel: usize| {
            let stride = if kernel == 5 { 2 } else { 1 };
            let scale = 2.0 / ((in_channels * kernel * kernel) as f32).sqrt();
            let weights = values(in_channels * out_channels * kernel * kernel, scale, 0.0);
            let bias = values(out_channels, 0.2, 0.0);
            let shape = ConvShape {
                kind,
                in_channels,
                out_channels,
                kernel,
                stride,
            };
            Conv::new(shape, &weights, &bias)
        };
        let NetworkShape { n, m } = shape;
        let regular =
            [(3, n), (n, n), (n, n), (n, m)].map(|(i, o)| conv(ConvKind::Regular, i, o, 5));
        let transposed =
            [(m, n), (n, n), (n, n), (n, 3)].map(|(i, o)| conv(ConvKind::Transposed, i, o, 5));
        let hyper = [(m, 3), (n, 5), (n, 5)].map(|(i, k)| conv(ConvKind::Regular, i, n, k));
        let mut gdn = |inverse| {
            let gamma = values(n * n, 0.2, 0.15);
            Activation::Gdn(Gdn::from_stored(&values(n, 0.2, 1.0), &gamma, inverse))
        };
        let mut chain = |convs: Vec<Conv>, inverse: bool| Chain {
            layers: convs
                .into_iter()
                .enumerate()
                .map(|(i, c)| {
                    (
                        c,
                        if i < 3 {
                            gdn(inverse)
                        } else {
                            Activation::None
                        },
                    )
                })
                .collect(),
        };
        let analysis = chain(regular.to_vec(), false);
        let synthesis = Synthesis::new(chain(transposed.to_vec(), true)).expect("four layers");
        let activations = [Activation::Relu, Activation::Relu, Activation::None];
        Self {
            shape,
            analysis,
            analysis_gain: None,
            hyper_analysis: Chain {
                layers: hyper.into_iter().zip(activations).collect(),
            },
            synthesis,
            mix: None,
        }
    }

    /// The channels of the networks.
    pub fn shape(&self) -> NetworkShape {
        self.shape
    }

    /// `g_a`: an RGB image (3 planes, values in [0, 1]) to `y` (M planes of `ceil(H / 16)` x
    /// `ceil(W / 16)`).
    ///
    /// # Errors
    /// [`InferError::Input`] if `image` does not have 3 channels.
    pub fn analysis(&self, image: &Planes) -> Result<Planes, InferError> {
        check_channels(image, self.analysis.in_channels(), "g_a")?;
        let size = (image.height, image.width);
        let rows = |rows| FeatureMap::from_plane_rows(image, rows);
        let y = self.analysis.run_in_bands(size, rows, ANALYSIS_BAND_ROWS);
        Ok(self.gained(y.to_planes()))
    }

    /// `y` with the gain of the observer-mix conditioning, if any.
    fn gained(&self, mut y: Planes) -> Planes {
        if let Some(gain) = &self.analysis_gain {
            let plane = y.height * y.width;
            for (values, gain) in y.data.chunks_exact_mut(plane).zip(gain) {
                values.iter_mut().for_each(|v| *v *= gain);
            }
        }
        y
    }

    /// [`Self::analysis`] of a `height` x `width` RGB image that `fill` produces a row at a
    /// time: `fill(y, row)` writes row `y` channels-last into `row` (`3 * width` values: red,
    /// green, blue of pixel 0, then of pixel 1, ...; values in [0, 1]). Rows are asked for once
    /// each, top to bottom, and only a band of them is held at a time, so the caller never
    /// needs the image as `f32` (12 bytes a pixel). The same values as [`Self::analysis`] of
    /// the same image, to the bit.
    ///
    /// # Errors
    /// [`InferError::Input`] if `height` or `width` is 0.
    pub fn analysis_of_rows(
        &self,
        height: usize,
        width: usize,
        mut fill: impl FnMut(usize, &mut [f32]),
    ) -> Result<Planes, InferError> {
        if height == 0 || width == 0 {
            return Err(InferError::Input(format!(
                "g_a of a {width}x{height} image"
            )));
        }
        let channels = self.analysis.in_channels();
        let rows = |rows: Range<usize>| {
            let mut map = FeatureMap::zeros(rows.len(), width, channels);
            for (row, y) in map.data.chunks_exact_mut(width * channels).zip(rows) {
                fill(y, row);
            }
            map
        };
        let y = self
            .analysis
            .run_in_bands((height, width), rows, ANALYSIS_BAND_ROWS);
        Ok(self.gained(y.to_planes()))
    }

    /// `h_a`: `y` (M planes) to `z` (N planes, 4x smaller on each side, rounded up).
    ///
    /// # Errors
    /// [`InferError::Input`] if `y` does not have M channels.
    pub fn hyper_analysis(&self, y: &Planes) -> Result<Planes, InferError> {
        check_channels(y, self.hyper_analysis.in_channels(), "h_a")?;
        Ok(self
            .hyper_analysis
            .run(FeatureMap::from_planes(y))
            .to_planes())
    }

    /// `g_s`: `y_hat` (M planes of `h x w`) to the reconstruction (3 planes of `16 h x 16 w`),
    /// not clamped ([`Synthesis::run`]).
    ///
    /// # Errors
    /// [`InferError::Input`] if `y_hat` does not have M channels.
    pub fn synthesis(&self, y_hat: &Planes) -> Result<Planes, InferError> {
        self.synthesis.run(y_hat)
    }

    /// `g_s` in horizontal strips ([`Synthesis::in_strips`]).
    ///
    /// # Errors
    /// As [`Synthesis::in_strips`].
    pub fn synthesis_in_strips<E: From<InferError>>(
        &self,
        y_hat: &Planes,
        strip_rows: usize,
        emit: impl FnMut(usize, Planes) -> Result<(), E>,
    ) -> Result<(), E> {
        self.synthesis.in_strips(y_hat, strip_rows, emit)
    }

    /// The synthesis network `g_s` on its own.
    pub fn synthesis_network(&self) -> &Synthesis {
        &self.synthesis
    }
}

/// That `planes` are a non-empty map of `expected` channels whose data fits its sizes (its
/// fields are public, so [`Planes::new`]'s check may have been bypassed).
pub(super) fn check_channels(
    planes: &Planes,
    expected: usize,
    network: &str,
) -> Result<(), InferError> {
    let size = planes
        .channels
        .checked_mul(planes.height)
        .and_then(|v| v.checked_mul(planes.width));
    if planes.channels != expected || size == Some(0) || size != Some(planes.data.len()) {
        return Err(InferError::Input(format!(
            "{network} takes {expected} channels, got {} x {} x {} ({} values)",
            planes.channels,
            planes.height,
            planes.width,
            planes.data.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(height: usize, width: usize) -> Planes {
        let data = (0..3 * height * width)
            .map(|i| ((i * 7919) % 256) as f32 / 255.0)
            .collect();
        Planes::new(3, height, width, data).expect("image")
    }

    fn in_pool<T: Send>(threads: usize, work: impl FnOnce() -> T + Send) -> T {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("thread pool")
            .install(work)
    }

    fn bits(planes: &Planes) -> Vec<u32> {
        planes.data.iter().map(|v| v.to_bits()).collect()
    }

    /// Every output is the same to the bit on one thread and on two (module docs of `infer`).
    #[test]
    fn outputs_do_not_depend_on_the_thread_count() {
        let networks = Networks::pseudo_random(NetworkShape { n: 64, m: 96 }, 5);
        // Wide enough for several column tiles in the first layers and their GDN.
        let x = image(83, 530);
        let run = || {
            let y = networks.analysis(&x).expect("g_a");
            let z = networks.hyper_analysis(&y).expect("h_a");
            let x_hat = networks.synthesis(&y).expect("g_s");
            (bits(&y), bits(&z), bits(&x_hat))
        };
        let one = in_pool(1, run);
        let two = in_pool(2, run);
        assert!(one == two, "outputs differ between 1 and 2 threads");
        // For comparing builds (debug / release) on one machine: `--nocapture` prints it.
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for word in one.0.iter().chain(&one.1).chain(&one.2) {
            for byte in word.to_le_bytes() {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        println!("outputs' FNV-1a fingerprint on this machine: {hash:#018x}");
    }

    /// Strips of any height give the whole image's values to the bit (the halo logic).
    #[test]
    fn strips_equal_the_whole_image() {
        let networks = Networks::pseudo_random(NetworkShape { n: 16, m: 24 }, 9);
        let y_hat = networks.analysis(&image(250, 40)).expect("g_a");
        let whole = networks.synthesis(&y_hat).expect("g_s");
        let rows = networks.synthesis.output_side(y_hat.height);
        let mut map = FeatureMap::from_planes(&y_hat);
        for (conv, activation) in networks.synthesis.hidden_layers() {
            let rows = 0..conv.shape().output_size(map.height, map.width).0;
            map = conv.forward_rows(
                Strip::whole(&map),
                rows,
                |row, scratch| activation.apply(row, scratch),
                &mut Buffers::default(),
            );
        }
        let at_once = networks.synthesis.output_layer().forward_rows(
            Strip::whole(&map),
            0..rows,
            &mut Buffers::default(),
        );
        assert!(
            bits(&at_once) == bits(&whole),
            "strips of 64 rows differ from the whole image"
        );
        for strip_rows in [16, 23, 32, 1000] {
            let mut data = vec![0.0f32; whole.data.len()];
            let plane = whole.height * whole.width;
            networks
                .synthesis_in_strips::<InferError>(&y_hat, strip_rows, |first, strip| {
                    assert_eq!(strip.width, whole.width);
                    let len = strip.height * strip.width;
                    for c in 0..3 {
                        let target = c * plane + first * whole.width;
                        data[target..target + len]
                            .copy_from_slice(&strip.data[c * len..(c + 1) * len]);
                    }
                    Ok(())
                })
                .expect("strips");
            assert!(
                data.iter()
                    .zip(&whole.data)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "strips of {strip_rows} rows differ from the whole image"
            );
        }
    }

    /// The banded analysis computes every row as the whole-image one does, to the bit.
    #[test]
    fn bands_equal_the_whole_image() {
        let networks = Networks::pseudo_random(NetworkShape { n: 16, m: 24 }, 4);
        let x = image(141, 37);
        let whole = networks.analysis.run(FeatureMap::from_planes(&x));
        for band in [1, 2, 3, 4, 100] {
            let rows = |rows| FeatureMap::from_plane_rows(&x, rows);
            let banded = networks
                .analysis
                .run_in_bands((x.height, x.width), rows, band);
            assert_eq!((banded.height, banded.width), (whole.height, whole.width));
            assert!(
                banded
                    .data
                    .iter()
                    .zip(&whole.data)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "bands of {band} rows differ from the whole image"
            );
        }
    }

    /// The analysis of rows produced on demand equals that of the whole planes, to the bit.
    #[test]
    fn rows_on_demand_equal_the_planes() {
        let networks = Networks::pseudo_random(NetworkShape { n: 16, m: 24 }, 6);
        let x = image(77, 45);
        let whole = networks.analysis(&x).expect("g_a");
        let plane = x.height * x.width;
        let mut asked = Vec::new();
        let from_rows = networks
            .analysis_of_rows(x.height, x.width, |y, row| {
                asked.push(y);
                for (i, v) in row.iter_mut().enumerate() {
                    *v = x.data[(i % 3) * plane + y * x.width + i / 3];
                }
            })
            .expect("g_a of rows");
        assert!(bits(&from_rows) == bits(&whole), "rows on demand differ");
        assert_eq!(
            asked,
            (0..x.height).collect::<Vec<_>>(),
            "each row once, in order"
        );
        assert!(networks.analysis_of_rows(0, 5, |_, _| {}).is_err());
    }

    #[test]
    fn output_shapes_follow_the_strides() {
        let networks = Networks::pseudo_random(NetworkShape { n: 8, m: 12 }, 1);
        let y = networks.analysis(&image(33, 17)).expect("g_a");
        assert_eq!((y.channels, y.height, y.width), (12, 3, 2));
        let z = networks.hyper_analysis(&y).expect("h_a");
        assert_eq!((z.channels, z.height, z.width), (8, 1, 1));
        let x_hat = networks.synthesis(&y).expect("g_s");
        assert_eq!((x_hat.channels, x_hat.height, x_hat.width), (3, 48, 32));
        assert!(x_hat.data.iter().all(|v| v.is_finite()));
        assert!(networks.synthesis(&image(4, 4)).is_err());
        assert!(networks.hyper_analysis(&image(4, 4)).is_err());
        let mut short = image(4, 4);
        short.data.pop();
        assert!(networks.analysis(&short).is_err());
    }

    #[test]
    fn malformed_weights_are_typed_errors() {
        assert!(matches!(
            Networks::from_safetensors(b"not a model"),
            Err(InferError::Format(_))
        ));
        let tensor = |name: &str, shape: Vec<usize>| {
            let count: usize = shape.iter().product();
            (name.to_string(), shape, vec![0u8; 4 * count])
        };
        let file = |tensors: Vec<(String, Vec<usize>, Vec<u8>)>| {
            let views: Vec<_> = tensors
                .iter()
                .map(|(name, shape, bytes)| {
                    let view = safetensors::tensor::TensorView::new(
                        safetensors::tensor::Dtype::F32,
                        shape.clone(),
                        bytes,
                    )
                    .expect("view");
                    (name.clone(), view)
                })
                .collect();
            safetensors::serialize(views, &None).expect("serialise")
        };
        let missing = file(vec![tensor("g_a.0.weight", vec![4, 3, 5, 5])]);
        assert!(matches!(
            Networks::from_safetensors(&missing),
            Err(InferError::Missing(name)) if name == "g_a.6.weight"
        ));
        let mis_shaped = file(vec![
            tensor("g_a.0.weight", vec![4, 3, 5, 5]),
            tensor("g_a.0.bias", vec![5]),
            tensor("g_a.6.weight", vec![6, 4, 5, 5]),
        ]);
        assert!(matches!(
            Networks::from_safetensors(&mis_shaped),
            Err(InferError::TensorShape { name, .. }) if name == "g_a.0.bias"
        ));
    }
}
