//! Coding images with a model file's networks in pure Rust: no libtorch.
//!
//! [`PureModel`] reads everything from the bytes of a model file: the description, the stored
//! integer tables, `g_a` / `h_a` / `g_s` ([`crate::infer::Networks`]) and the reproducible
//! hyper-synthesis ([`ocular_entropy::HyperSynthesis`], built from the stored `h_s` weights and
//! the medians of `z`'s prior exactly as the libtorch model builds it, from the same `f32`
//! values of the same fp16 weights). It codes what `MeanScaleHyperprior::compress_at` /
//! `decompress` (feature `torch`) code:
//!
//! ```text
//! x          = pixel / 255, padded to a multiple of 16 by repeating the last row and column
//! y = g_a(x),  z = h_a(y)
//! z symbols  = round(z - median_c)                      (ties to even, as libtorch's round)
//! (μ, index) = HyperSynthesis(z symbols, Δ)             (crate::latents::y_parameters)
//! y symbols  = round((y - μ) / Δ)                       (ties to even)
//! y_hat      = y symbol · Δ + μ,   x_hat = clamp(g_s(y_hat), 0, 1)
//! pixel      = round(255 · x_hat)                       (ties to even)
//! ```
//!
//! Files are interchangeable with the libtorch path's: both select tables through the same
//! fixed-order hyper-synthesis, so any valid file decodes with either. `g_a` and `g_s` round
//! differently from libtorch's (another summation order), so an encoder may pick a different
//! integer for a `y` element that sits on a rounding boundary (a different, equally valid
//! file), and decoded pixels may differ by a level.

use std::borrow::Cow;
use std::sync::Arc;

use image::RgbImage;
use ocular_entropy::{ConvKind, ConvLayer, ConvShape, HyperSynthesis, QuantizationStep, YPrior};
use safetensors::tensor::SafeTensors;

use crate::infer::{Buffers, Networks, Planes, Synthesis};
use crate::latents::{y_parameters, y_prior, CompressedLatents, HyperpriorConfig, ModelTables};
use crate::model_file::{fingerprint, read_info_and_tables, ModelInfo};
use crate::realism::{mix, Realism};
use crate::shrinkage::Shrinkage;
use crate::ModelError;

/// The side the networks need: images are padded to a multiple of it.
const MULTIPLE: usize = 16;

/// A model ready to code with the pure-Rust networks (module docs).
///
/// Cloning is cheap: the copies share the tables and the convolutions' weights.
#[derive(Clone, Debug)]
pub struct PureModel {
    info: ModelInfo,
    tables: Arc<ModelTables>,
    networks: Networks,
    /// The medians of `z`'s prior, one per channel: `z` is coded as `round(z - median)`.
    z_medians: Vec<f32>,
    fingerprint: [u8; 8],
}

/// An image analysed by a [`PureModel`] ([`PureModel::analyse`]): what coding it at any
/// quantisation step needs, computed once.
///
/// Invariant: `prior` describes `y` element for element (same shape, channel-major), and
/// `z_stream` codes the `z` whose symbols gave `prior`.
#[derive(Clone, Debug)]
pub struct Analysis {
    y: Planes,
    prior: YPrior,
    z_stream: Vec<u8>,
    y_shape: [i64; 3],
    z_shape: [i64; 3],
}

impl PureModel {
    /// Reads a model from the bytes of a model file.
    ///
    /// # Errors
    /// [`ModelError::InvalidModel`] if the bytes are not a valid ocular model file, or its
    /// networks do not have the shape its description records.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ModelError> {
        let (info, stored) = read_info_and_tables(bytes)?;
        let invalid = |e: &dyn std::fmt::Display| ModelError::InvalidModel(e.to_string());
        let HyperpriorConfig { n, m } = info.network;
        let (Ok(described_n), Ok(described_m)) = (usize::try_from(n), usize::try_from(m)) else {
            return Err(invalid(&format!("a file describing N={n}, M={m}")));
        };
        // Four pieces of work of a few milliseconds each (the networks being two, `g_a` and
        // `g_s`, side by side): whichever thread is free takes the next.
        let (networks, (hyper, fingerprint)) = rayon::join(
            || Networks::from_safetensors(bytes),
            || {
                rayon::join(
                    || hyper_synthesis_from_file(bytes, described_n, described_m),
                    || fingerprint(bytes),
                )
            },
        );
        let networks = networks.map_err(|e| invalid(&e))?;
        let shape = networks.shape();
        if (shape.n, shape.m) != (described_n, described_m) {
            return Err(invalid(&format!(
                "networks of N={}, M={} in a file describing N={n}, M={m}",
                shape.n, shape.m
            )));
        }
        if networks.has_observer_mix() != info.observer_mix {
            return Err(invalid(&format!(
                "a file describing a network {} conditioned on the observer mix, with weights {} \
                 the conditioning",
                if info.observer_mix { "" } else { "not" },
                if networks.has_observer_mix() {
                    "for"
                } else {
                    "without"
                }
            )));
        }
        let (hyper_synthesis, z_medians) = hyper?;
        let tables = ModelTables::from_parts(stored.z, stored.y, n, hyper_synthesis)?;
        Ok(Self {
            info,
            tables: Arc::new(tables),
            networks,
            z_medians,
            fingerprint,
        })
    }

    /// The model's description.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The integer tables and the reproducible hyper-synthesis.
    pub fn tables(&self) -> &ModelTables {
        &self.tables
    }

    /// The pure-Rust `g_a`, `h_a` and `g_s`.
    pub fn networks(&self) -> &Networks {
        &self.networks
    }

    /// First 8 bytes of the SHA-256 of the model file.
    pub fn fingerprint(&self) -> [u8; 8] {
        self.fingerprint
    }

    /// The model at the observer mix `alpha` ([`Networks::at_observer_mix`]): at 0 this very
    /// model, else a copy whose `g_a` and `g_s` are conditioned on `alpha` (sharing the
    /// tables and weights). Everything else — `h_a`, the hyper-synthesis, the tables — is the
    /// same at every mix.
    ///
    /// # Errors
    /// [`ModelError::InvalidModel`] if `alpha` is outside [0, 1], or not 0 for a model not
    /// conditioned on the mix.
    pub fn at_observer_mix(&self, alpha: f32) -> Result<Cow<'_, Self>, ModelError> {
        let networks = self
            .networks
            .at_observer_mix(alpha)
            .map_err(|e| ModelError::InvalidModel(format!("{}: {e}", self.info.name)))?;
        Ok(match networks {
            Cow::Borrowed(_) => Cow::Borrowed(self),
            Cow::Owned(networks) => Cow::Owned(Self {
                info: self.info.clone(),
                tables: Arc::clone(&self.tables),
                networks,
                z_medians: self.z_medians.clone(),
                fingerprint: self.fingerprint,
            }),
        })
    }

    /// Compresses `image` with `y` on the grid of `step` (1 for a fixed-rate model). The image
    /// is padded to a multiple of 16 by repeating its edges ([`padded_planes`]). The same as
    /// [`Self::analyse`] then [`Self::code_at`].
    ///
    /// # Errors
    /// [`ModelError::Shape`] for an empty image, [`ModelError::Entropy`] if coding fails.
    pub fn compress_at(
        &self,
        image: &RgbImage,
        step: QuantizationStep,
    ) -> Result<CompressedLatents, ModelError> {
        self.code_at(&self.analyse(image)?, step)
    }

    /// Everything of coding `image` that does not depend on the quantisation step: `y = g_a(x)`,
    /// `z`, its stream and the prior of `y` (module docs). Nearly all of an encode's time; a
    /// rate search analyses once and codes at each step it tries ([`Self::code_at`]).
    ///
    /// # Errors
    /// As [`Self::compress_at`].
    pub fn analyse(&self, image: &RgbImage) -> Result<Analysis, ModelError> {
        let (width, height) = (image.width() as usize, image.height() as usize);
        if width == 0 || height == 0 {
            return Err(ModelError::Shape(format!(
                "an empty {width}x{height} image"
            )));
        }
        // The rows of `padded_planes`, made as `g_a` asks for them: the image is never held as
        // f32 (12 bytes a pixel), only a band of rows at a time.
        let padded = |side: usize| side.div_ceil(MULTIPLE) * MULTIPLE;
        let raw = image.as_raw();
        let y = self
            .networks
            .analysis_of_rows(padded(height), padded(width), |y, row| {
                let source = &raw[y.min(height - 1) * width * 3..][..width * 3];
                for (x, pixel) in row.chunks_exact_mut(3).enumerate() {
                    let from = &source[x.min(width - 1) * 3..][..3];
                    for (v, &byte) in pixel.iter_mut().zip(from) {
                        *v = f32::from(byte) / 255.0;
                    }
                }
            })?;
        self.analyse_y(y)
    }

    /// [`Self::compress_at`] of an image already in planes (3 channels, values in [0, 1]).
    ///
    /// # Errors
    /// As [`Self::compress_at`].
    pub fn compress_planes(
        &self,
        x: &Planes,
        step: QuantizationStep,
    ) -> Result<CompressedLatents, ModelError> {
        self.code_at(&self.analyse_y(self.networks.analysis(x)?)?, step)
    }

    /// The [`Analysis`] of `y = g_a(x)`.
    fn analyse_y(&self, y: Planes) -> Result<Analysis, ModelError> {
        let z = self.networks.hyper_analysis(&y)?;
        let medians = &self.z_medians;
        let plane = z.height * z.width;
        let z_symbols: Vec<i32> = z
            .data
            .iter()
            .enumerate()
            .map(|(i, &v)| (v - medians[i / plane]).round_ties_even() as i32)
            .collect();
        let shape = |p: &Planes| [p.channels, p.height, p.width].map(|v| v as i64);
        let (y_shape, z_shape) = (shape(&y), shape(&z));
        let prior = y_prior(&self.tables, &z_symbols, z_shape, y_shape)?;
        Ok(Analysis {
            z_stream: self.tables.encode_z(&z_symbols, z_shape)?,
            y,
            prior,
            y_shape,
            z_shape,
        })
    }

    /// The coded latents of an image analysed by this model ([`Self::analyse`]) with `y` on the
    /// grid of `step`: only the quantisation and the coding of `y`.
    ///
    /// # Errors
    /// [`ModelError::Shape`] if `analysis` was made by a model of other shapes,
    /// [`ModelError::Entropy`] if coding fails.
    pub fn code_at(
        &self,
        analysis: &Analysis,
        step: QuantizationStep,
    ) -> Result<CompressedLatents, ModelError> {
        let means = analysis.prior.means();
        if means.len() != analysis.y.data.len() {
            return Err(ModelError::Shape(format!(
                "an analysis of {} latents with a prior of {}",
                analysis.y.data.len(),
                means.len()
            )));
        }
        let delta = step.get();
        let y_symbols: Vec<i32> = analysis
            .y
            .data
            .iter()
            .zip(means)
            .map(|(&v, &mean)| ((v - mean) / delta).round_ties_even() as i32)
            .collect();
        let scale_indices = analysis.prior.scale_indices_at(step);
        Ok(CompressedLatents {
            z_stream: analysis.z_stream.clone(),
            y_stream: self.tables.encode_y(&y_symbols, &scale_indices)?,
            step,
            shrinkage: Shrinkage::NONE,
            y_shape: analysis.y_shape,
            z_shape: analysis.z_shape,
        })
    }

    /// Decompresses `latents` into the padded reconstruction: 3 planes of `16 h x 16 w`, values
    /// clamped to [0, 1] (crop it to the image's size, e.g. with [`planes_to_rgb`]).
    ///
    /// # Errors
    /// [`ModelError::Shape`] if the shapes do not fit this model, [`ModelError::Entropy`] if a
    /// stream is corrupt.
    pub fn decompress(&self, latents: &CompressedLatents) -> Result<Planes, ModelError> {
        latents.check_shapes(self.info.network)?;
        let y_hat = self.tables.dequantized_y(latents)?;
        let [channels, height, width] = latents.y_shape.map(|v| usize::try_from(v).unwrap_or(0));
        let y_hat = Planes::new(channels, height, width, y_hat)?;
        let mut x_hat = self.networks.synthesis(&y_hat)?;
        x_hat.data.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
        Ok(x_hat)
    }

    /// The integer symbols of `z` and of `y` in `latents` (channel-major), decoded from their
    /// streams: what two encoders' files may be compared by.
    ///
    /// # Errors
    /// As [`Self::decompress`].
    pub fn decode_symbols(
        &self,
        latents: &CompressedLatents,
    ) -> Result<(Vec<i32>, Vec<i32>), ModelError> {
        latents.check_shapes(self.info.network)?;
        let z_symbols = self.tables.decode_z(&latents.z_stream, latents.z_shape)?;
        let (_, indices) = y_parameters(
            &self.tables,
            &z_symbols,
            latents.z_shape,
            latents.y_shape,
            latents.step,
        )?;
        let y_symbols = self.tables.decode_y(&latents.y_stream, &indices)?;
        Ok((z_symbols, y_symbols))
    }

    /// [`Self::decompress`] cropped to `width` x `height` and rounded to 8-bit RGB, made in
    /// strips ([`Self::decompress_rows`]): the reconstruction is never held as `f32`.
    ///
    /// # Errors
    /// As [`Self::decompress_rows`].
    pub fn decompress_to_rgb(
        &self,
        latents: &CompressedLatents,
        width: u32,
        height: u32,
    ) -> Result<RgbImage, ModelError> {
        let (w, h) = (width as usize, height as usize);
        let mut bytes = Vec::with_capacity(w.saturating_mul(h).saturating_mul(3));
        let size = (width, height);
        self.decompress_rows::<ModelError>(latents, size, STRIP_ROWS, None, |_, rows| {
            bytes.extend_from_slice(rows);
            Ok(())
        })?;
        RgbImage::from_raw(width, height, bytes)
            .ok_or_else(|| ModelError::Shape(format!("{width}x{height} RGB buffer")))
    }

    /// Decompresses `latents` into the top-left `width` x `height` of the reconstruction as
    /// 8-bit RGB rows (`round(255 · clamp(x_hat, 0, 1))`, ties to even), handed to `emit` top
    /// to bottom in strips of `strip_rows` rows (the last may be shorter) with the index of
    /// their first row: `3 * width` bytes a row. Memory grows with the strip and the latents,
    /// not with the image; the pixels are those of [`Self::decompress`], to the bit, whatever
    /// `strip_rows` is. With `realism`, `x_hat` mixes `g_s` with the realism decoder `g_s'`
    /// ([`crate::realism`]; `R = 0` is the plain decoder to the bit, `R = 1` is `g_s'` alone).
    ///
    /// # Errors
    /// [`ModelError::Shape`] if the shapes do not fit this model or `width` x `height` does not
    /// fit the latents, or `strip_rows` is 0; [`ModelError::Inference`] if the realism decoder
    /// does not take this model's `y`; [`ModelError::Entropy`] if a stream is corrupt; else what
    /// `emit` returns.
    pub fn decompress_rows<E: From<ModelError>>(
        &self,
        latents: &CompressedLatents,
        (width, height): (u32, u32),
        strip_rows: usize,
        realism: Option<Realism<'_>>,
        mut emit: impl FnMut(usize, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let y_hat = self.checked_y_hat(latents, width, height, strip_rows)?;
        let (w, h) = (width as usize, height as usize);
        let (first_network, second) = self.syntheses(realism, y_hat.channels)?;
        let mut rgb = Vec::new();
        let mut buffers = Buffers::default();
        let result =
            first_network.in_strips::<StripError<E>>(&y_hat, strip_rows, |first, mut strip| {
                let rows = first..(first + strip.height).min(h);
                if rows.is_empty() {
                    return Ok(());
                }
                if let Some((realistic, r)) = second {
                    let other = realistic.strip(&y_hat, first..first + strip.height, &mut buffers);
                    mix(&mut strip.data, &other.data, r);
                    buffers.give(other.data);
                }
                strip_to_rgb(&strip, rows.len(), w, &mut rgb);
                emit(first, &rgb).map_err(StripError::Emit)
            });
        match result {
            Ok(()) => Ok(()),
            Err(StripError::Model(e)) => Err(e.into()),
            Err(StripError::Emit(e)) => Err(e),
        }
    }

    /// The network a decode runs on every strip, and the one it mixes in with its weight `R`:
    /// `g_s` alone without realism or at `R = 0`, `g_s'` alone at `R = 1`.
    ///
    /// # Errors
    /// [`ModelError::Shape`] if `g_s'` does not take `channels` channels.
    fn syntheses<'s>(
        &'s self,
        realism: Option<Realism<'s>>,
        channels: usize,
    ) -> Result<Syntheses<'s>, ModelError> {
        let plain = self.networks.synthesis_network();
        let Some(realism) = realism else {
            return Ok((plain, None));
        };
        let realistic = realism.decoder().synthesis();
        if realistic.in_channels() != channels {
            return Err(ModelError::Shape(format!(
                "a realism decoder of {} channels for a y of {channels}",
                realistic.in_channels()
            )));
        }
        let r = realism.weight();
        Ok(if r == 0.0 {
            (plain, None)
        } else if r == 1.0 {
            (realistic, None)
        } else {
            (plain, Some((realistic, r)))
        })
    }

    /// The dequantised `y` of `latents`, once every size is checked.
    fn checked_y_hat(
        &self,
        latents: &CompressedLatents,
        width: u32,
        height: u32,
        strip_rows: usize,
    ) -> Result<Planes, ModelError> {
        latents.check_shapes(self.info.network)?;
        let [channels, y_height, y_width] = latents.y_shape;
        let fits = |side: u32, latent: i64| i64::from(side) <= latent.saturating_mul(16);
        if !fits(width, y_width) || !fits(height, y_height) || width == 0 || height == 0 {
            return Err(ModelError::Shape(format!(
                "a {width}x{height} image does not fit latents of {y_width}x{y_height}"
            )));
        }
        if strip_rows == 0 {
            return Err(ModelError::Shape("strips of 0 rows".into()));
        }
        let y_hat = self.tables.dequantized_y(latents)?;
        let size = |v: i64| usize::try_from(v).unwrap_or(0);
        Ok(Planes::new(
            size(channels),
            size(y_height),
            size(y_width),
            y_hat,
        )?)
    }
}

/// The synthesis a decode runs on every strip, and the one it mixes in with its weight `R`.
type Syntheses<'s> = (&'s Synthesis, Option<(&'s Synthesis, f32)>);

/// Output rows per strip of [`PureModel::decompress_to_rgb`].
pub const STRIP_ROWS: usize = crate::infer::SYNTHESIS_STRIP_ROWS;

/// What stops a decode in strips: the networks, or the caller's `emit`.
enum StripError<E> {
    Model(ModelError),
    Emit(E),
}

impl<E> From<crate::infer::InferError> for StripError<E> {
    fn from(e: crate::infer::InferError) -> Self {
        Self::Model(e.into())
    }
}

/// The first `rows` rows and `width` columns of a strip of 3 planes in 8-bit RGB, into `rgb`
/// (cleared first): `round(255 · clamp(v, 0, 1))`, ties to even.
fn strip_to_rgb(strip: &Planes, rows: usize, width: usize, rgb: &mut Vec<u8>) {
    let plane = strip.height * strip.width;
    rgb.clear();
    for y in 0..rows {
        for x in 0..width {
            for c in 0..3 {
                let v = strip.data[c * plane + y * strip.width + x].clamp(0.0, 1.0);
                rgb.push((v * 255.0).round_ties_even() as u8);
            }
        }
    }
}

/// The image as 3 planes of values `pixel / 255`, padded on the right and bottom to a multiple
/// of 16 by repeating the last column and row (what libtorch's repeated replication padding
/// makes).
///
/// # Errors
/// [`ModelError::Shape`] for an empty image.
pub fn padded_planes(image: &RgbImage) -> Result<Planes, ModelError> {
    let (width, height) = (image.width() as usize, image.height() as usize);
    if width == 0 || height == 0 {
        return Err(ModelError::Shape(format!(
            "an empty {width}x{height} image"
        )));
    }
    let padded = |side: usize| side.div_ceil(MULTIPLE) * MULTIPLE;
    let (padded_width, padded_height) = (padded(width), padded(height));
    let plane = padded_width * padded_height;
    let mut data = vec![0.0f32; 3 * plane];
    let raw = image.as_raw();
    for y in 0..padded_height {
        let row = &raw[y.min(height - 1) * width * 3..][..width * 3];
        for x in 0..padded_width {
            let pixel = &row[x.min(width - 1) * 3..][..3];
            for (c, &value) in pixel.iter().enumerate() {
                data[c * plane + y * padded_width + x] = f32::from(value) / 255.0;
            }
        }
    }
    Ok(Planes::new(3, padded_height, padded_width, data)?)
}

/// The top-left `width` x `height` of 3 planes in [0, 1] as 8-bit RGB: `round(255 v)`, ties to
/// even, clamped to 0..=255.
///
/// # Errors
/// [`ModelError::Shape`] if the planes are not 3 or smaller than `width` x `height`.
pub fn planes_to_rgb(planes: &Planes, width: u32, height: u32) -> Result<RgbImage, ModelError> {
    let (w, h) = (width as usize, height as usize);
    if planes.channels != 3 || planes.width < w || planes.height < h {
        return Err(ModelError::Shape(format!(
            "{} planes of {}x{} for a {width}x{height} RGB image",
            planes.channels, planes.width, planes.height
        )));
    }
    let plane = planes.width * planes.height;
    let mut bytes = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let v = planes.data[c * plane + y * planes.width + x];
                bytes.push((v * 255.0).round_ties_even().clamp(0.0, 255.0) as u8);
            }
        }
    }
    RgbImage::from_raw(width, height, bytes)
        .ok_or_else(|| ModelError::Shape(format!("{width}x{height} RGB buffer")))
}

/// The coder's hyper-synthesis from a model file: the `h_s` layers (`h_s.0`, `h_s.2` transposed
/// 5x5 stride 2 with ReLU, `h_s.4` 3x3) and the medians of `z`'s prior (the middle column of
/// `entropy_bottleneck.quantiles`), as `f32` from the stored values — what
/// `MeanScaleHyperprior::coding_hyper_synthesis` reads from the same file.
/// Returns it with the medians.
///
/// # Errors
/// [`ModelError::InvalidModel`] if a tensor is missing or of another shape.
fn hyper_synthesis_from_file(
    bytes: &[u8],
    n: usize,
    m: usize,
) -> Result<(HyperSynthesis, Vec<f32>), ModelError> {
    let invalid = |e: String| ModelError::InvalidModel(e);
    let file = SafeTensors::deserialize(bytes).map_err(|e| invalid(e.to_string()))?;
    let wide = m * 3 / 2;
    let layer = |index: usize, kind, in_channels, out_channels, kernel, stride, relu| {
        let weight_shape = match kind {
            ConvKind::Regular => [out_channels, in_channels, kernel, kernel],
            ConvKind::Transposed => [in_channels, out_channels, kernel, kernel],
        };
        let weights = tensor_values(&file, &format!("h_s.{index}.weight"), &weight_shape)?;
        let bias = tensor_values(&file, &format!("h_s.{index}.bias"), &[out_channels])?;
        let shape = ConvShape {
            kind,
            in_channels,
            out_channels,
            kernel,
            stride,
            relu,
        };
        ConvLayer::from_torch_layout(shape, &weights, &bias).map_err(|e| invalid(e.to_string()))
    };
    let layers = vec![
        layer(0, ConvKind::Transposed, n, m, 5, 2, true)?,
        layer(2, ConvKind::Transposed, m, wide, 5, 2, true)?,
        layer(4, ConvKind::Regular, wide, 2 * m, 3, 1, false)?,
    ];
    let quantiles = tensor_values(&file, "entropy_bottleneck.quantiles", &[n, 1, 3])?;
    let medians: Vec<f32> = quantiles.chunks_exact(3).map(|q| q[1]).collect();
    let hyper_synthesis =
        HyperSynthesis::new(medians.clone(), layers).map_err(|e| invalid(e.to_string()))?;
    Ok((hyper_synthesis, medians))
}

/// The values of tensor `name` as `f32` (stored as f16, bf16 or f32), checking its shape.
fn tensor_values(
    file: &SafeTensors<'_>,
    name: &str,
    shape: &[usize],
) -> Result<Vec<f32>, ModelError> {
    let invalid = |e: String| ModelError::InvalidModel(format!("tensor {name}: {e}"));
    let view = file.tensor(name).map_err(|e| invalid(e.to_string()))?;
    if view.shape() != shape {
        return Err(invalid(format!(
            "shape {:?}, expected {shape:?}",
            view.shape()
        )));
    }
    crate::model_file::tensor_f32(&view)
        .map_err(|dtype| invalid(format!("unsupported type {dtype}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_repeats_the_last_row_and_column() {
        let image = RgbImage::from_fn(3, 2, |x, y| image::Rgb([(x * 10 + y) as u8, 0, 255]));
        let planes = padded_planes(&image).expect("planes");
        assert_eq!((planes.channels, planes.height, planes.width), (3, 16, 16));
        let at = |c: usize, y: usize, x: usize| planes.data[(c * 16 + y) * 16 + x] * 255.0;
        assert_eq!(at(0, 0, 2), 20.0);
        assert_eq!(at(0, 15, 15), 21.0);
        assert_eq!(at(0, 1, 0), 1.0);
        assert_eq!(at(2, 7, 9), 255.0);
        assert!(padded_planes(&RgbImage::new(0, 4)).is_err());
    }

    /// Decoding in strips of any height gives the pixels of the whole reconstruction, and
    /// encoding from rows made on demand gives the latents of the padded planes (a shipped
    /// model, an image whose sides are not multiples of 16).
    #[test]
    fn strips_and_rows_equal_whole_planes() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/trained/mse-q3.safetensors");
        let bytes = std::fs::read(path).expect("the shipped mse-q3 model");
        let model = PureModel::from_bytes(&bytes).expect("model");
        let (width, height) = (70u32, 83u32);
        let image = RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([
                (x * 3 + y) as u8,
                (y * 5 % 256) as u8,
                ((x * y) % 251) as u8,
            ])
        });
        let step = QuantizationStep::ONE;
        let latents = model.compress_at(&image, step).expect("encode");
        let planes = padded_planes(&image).expect("planes");
        let from_planes = model.compress_planes(&planes, step).expect("encode planes");
        assert_eq!(latents.y_stream, from_planes.y_stream);
        assert_eq!(latents.z_stream, from_planes.z_stream);

        let whole = planes_to_rgb(&model.decompress(&latents).expect("decode"), width, height)
            .expect("rgb");
        for strip_rows in [16, 23, 32, 64, 1000] {
            let mut bytes = Vec::new();
            let mut firsts = Vec::new();
            model
                .decompress_rows::<ModelError>(
                    &latents,
                    (width, height),
                    strip_rows,
                    None,
                    |first, rows| {
                        assert_eq!(first, bytes.len() / (3 * width as usize));
                        firsts.push(first);
                        bytes.extend_from_slice(rows);
                        Ok(())
                    },
                )
                .expect("strips");
            assert!(
                bytes == whole.as_raw()[..],
                "strips of {strip_rows} rows differ"
            );
            assert_eq!(firsts.len(), (height as usize).div_ceil(strip_rows));
        }
        let too_big = model.decompress_to_rgb(&latents, width, 16 * 6 + 1);
        assert!(matches!(too_big, Err(ModelError::Shape(_))));
        let no_strips =
            model.decompress_rows::<ModelError>(&latents, (width, height), 0, None, |_, _| Ok(()));
        assert!(matches!(no_strips, Err(ModelError::Shape(_))));
        // The caller's error stops the decode and comes back as it was.
        let stopped = model.decompress_rows(&latents, (width, height), 16, None, |first, _| {
            if first >= 32 {
                Err(ModelError::Shape(format!("stop at {first}")))
            } else {
                Ok(())
            }
        });
        assert!(matches!(stopped, Err(ModelError::Shape(m)) if m == "stop at 32"));
    }

    #[test]
    fn pixels_round_half_to_even_and_clamp() {
        // 0.5 · 255 = 127.5 exactly: ties to even.
        let values = [0.5, 0.0, -0.2, 1.3, 0.999];
        let mut data = Vec::new();
        for _ in 0..3 {
            data.extend(values);
        }
        let planes = Planes::new(3, 1, 5, data).expect("planes");
        let rgb = planes_to_rgb(&planes, 5, 1).expect("rgb");
        let reds: Vec<u8> = rgb.pixels().map(|p| p.0[0]).collect();
        assert_eq!(reds, [128, 0, 0, 255, 255]);
        assert!(planes_to_rgb(&planes, 6, 1).is_err());
    }
}
