//! What coding a mean-scale hyperprior model needs besides its networks, free of libtorch: its
//! shape, its integer tables with their coders and the reproducible hyper-synthesis, and the
//! two streams of a coded image.
//!
//! ```text
//! z symbols  = round(z - median_c)              coded with table c (the channel of z)
//! (μ, index) = HyperSynthesis(z symbols, Δ)      fixed-order f32, identical on every machine
//! y symbols  = round((y - μ) / Δ)               coded with table `index`
//! y_hat      = y symbol · Δ + μ                 (or nearer μ: crate::shrinkage)
//! ```
//!
//! Invariant: the encoder and the decoder derive the means and table indices of `y` from the
//! integer symbols of `z` and the step alone, through [`y_parameters`], so that every machine
//! and thread count selects the same tables (docs/architecture.md, "Reproducible
//! hyper-synthesis"). Both the libtorch coder (`hyperprior`, feature `torch`) and the pure-Rust
//! one ([`crate::pure`]) go through here.

use ocular_entropy::{CdfTable, CodingTables, HyperSynthesis, QuantizationStep, YPrior};
use serde::{Deserialize, Serialize};

use crate::shrinkage::{reconstruct, Shrinkage};
use crate::ModelError;

/// Downsampling of the analysis transform: `y` is 16x smaller than the image in each direction.
pub const Y_DOWNSAMPLING: i64 = 16;
/// Downsampling of `z` relative to the image.
pub const Z_DOWNSAMPLING: i64 = 64;

/// Shape of the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HyperpriorConfig {
    /// Channels of the hidden layers (and of `z`).
    pub n: i64,
    /// Channels of `y`.
    pub m: i64,
}

impl Default for HyperpriorConfig {
    /// The half-width network: at this CPU budget it reaches far better quality per training
    /// second than N=128, M=192 (DESIGN.md).
    fn default() -> Self {
        Self { n: 64, m: 96 }
    }
}

/// The two range-coded streams of one image and the shapes needed to decode them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompressedLatents {
    /// Range-coded `round(z - median)`.
    pub z_stream: Vec<u8>,
    /// Range-coded `round((y - mean) / step)`.
    pub y_stream: Vec<u8>,
    /// The grid `y` is coded on (1 for fixed-rate models).
    pub step: QuantizationStep,
    /// How far the decoder moves `y` toward its predicted means ([`crate::shrinkage`]); no
    /// part of the streams.
    pub shrinkage: Shrinkage,
    /// (channels, height, width) of `y`.
    pub y_shape: [i64; 3],
    /// (channels, height, width) of `z`.
    pub z_shape: [i64; 3],
}

impl CompressedLatents {
    /// Checks that the shapes fit a model of shape `config`: `y` of M channels and at least
    /// 1x1, `z` of N channels and `ceil(side / 4)` of `y`'s.
    ///
    /// # Errors
    /// [`ModelError::Shape`] if they do not.
    pub fn check_shapes(&self, config: HyperpriorConfig) -> Result<(), ModelError> {
        let [y_channels, y_height, y_width] = self.y_shape;
        let expected_z = [config.n, ceil_div(y_height, 4), ceil_div(y_width, 4)];
        if y_channels != config.m || self.z_shape != expected_z || y_height < 1 || y_width < 1 {
            return Err(ModelError::Shape(format!(
                "latent shapes y {:?} / z {:?} do not fit this model (M={}, N={})",
                self.y_shape, self.z_shape, config.m, config.n
            )));
        }
        Ok(())
    }
}

/// What a model codes with: its integer tables, their prepared coders, and the reproducible
/// hyper-synthesis that picks a `y` table per element — all derived once per model.
#[derive(Debug)]
pub struct ModelTables {
    /// One table per channel of `z`.
    pub z: Vec<CdfTable>,
    /// One table per entry of [`ocular_entropy::scale_table`].
    pub y: Vec<CdfTable>,
    pub(crate) z_coders: CodingTables,
    pub(crate) y_coders: CodingTables,
    pub(crate) hyper_synthesis: HyperSynthesis,
}

impl ModelTables {
    /// Validates the tables of a model with `z_channels` channels of `z`, prepares their coders
    /// and keeps `hyper_synthesis` (built from the model's `h_s` weights and `z` medians).
    ///
    /// # Errors
    /// [`ModelError::InvalidModel`] if a table is broken or the counts do not fit the network.
    pub fn from_parts(
        z: Vec<CdfTable>,
        y: Vec<CdfTable>,
        z_channels: i64,
        hyper_synthesis: HyperSynthesis,
    ) -> Result<Self, ModelError> {
        if z.len() as i64 != z_channels || hyper_synthesis.z_channels() as i64 != z_channels {
            return Err(ModelError::InvalidModel(format!(
                "{} z tables and a hyper-synthesis of {} channels for {z_channels} channels",
                z.len(),
                hyper_synthesis.z_channels()
            )));
        }
        if y.len() != ocular_entropy::NUM_SCALES {
            return Err(ModelError::InvalidModel(format!(
                "{} y tables, expected {}",
                y.len(),
                ocular_entropy::NUM_SCALES
            )));
        }
        let invalid = |e: ocular_entropy::TableError| ModelError::InvalidModel(e.to_string());
        let z_coders = CodingTables::new(&z).map_err(invalid)?;
        let y_coders = CodingTables::new(&y).map_err(invalid)?;
        Ok(Self {
            z,
            y,
            z_coders,
            y_coders,
            hyper_synthesis,
        })
    }

    /// The reproducible hyper-synthesis the coder runs.
    pub fn hyper_synthesis(&self) -> &HyperSynthesis {
        &self.hyper_synthesis
    }

    /// Range-codes the symbols of `z` (shape `z_shape`, channel-major), each with its
    /// channel's table.
    ///
    /// # Errors
    /// [`ModelError::Entropy`] if coding fails.
    pub(crate) fn encode_z(
        &self,
        symbols: &[i32],
        z_shape: [i64; 3],
    ) -> Result<Vec<u8>, ModelError> {
        Ok(ocular_entropy::encode(
            symbols,
            &z_channel_indices(z_shape),
            &self.z_coders,
        )?)
    }

    /// Decodes the symbols of `z` (shape `z_shape`).
    ///
    /// # Errors
    /// [`ModelError::Entropy`] for a corrupt stream.
    pub(crate) fn decode_z(
        &self,
        stream: &[u8],
        z_shape: [i64; 3],
    ) -> Result<Vec<i32>, ModelError> {
        Ok(ocular_entropy::decode(
            stream,
            &z_channel_indices(z_shape),
            &self.z_coders,
        )?)
    }

    /// Range-codes the symbols of `y`, element `i` with table `indices[i]`.
    ///
    /// # Errors
    /// [`ModelError::Entropy`] if coding fails.
    pub(crate) fn encode_y(&self, symbols: &[i32], indices: &[u16]) -> Result<Vec<u8>, ModelError> {
        Ok(ocular_entropy::encode(symbols, indices, &self.y_coders)?)
    }

    /// Decodes the symbols of `y`, element `i` with table `indices[i]`.
    ///
    /// # Errors
    /// [`ModelError::Entropy`] for a corrupt stream.
    pub(crate) fn decode_y(&self, stream: &[u8], indices: &[u16]) -> Result<Vec<i32>, ModelError> {
        Ok(ocular_entropy::decode(stream, indices, &self.y_coders)?)
    }

    /// The decoder's `y_hat` of `latents` (channel-major, `y_shape`): both streams decoded,
    /// `y_hat = symbol · step + mean`, moved toward the mean by `latents.shrinkage`
    /// ([`crate::shrinkage`]). One definition for every synthesis (pure or libtorch).
    ///
    /// # Errors
    /// [`ModelError::Entropy`] for a corrupt stream, [`ModelError::Shape`] for shapes the
    /// hyper-synthesis cannot take.
    pub(crate) fn dequantized_y(
        &self,
        latents: &CompressedLatents,
    ) -> Result<Vec<f32>, ModelError> {
        let z_symbols = self.decode_z(&latents.z_stream, latents.z_shape)?;
        let (means, indices) = y_parameters(
            self,
            &z_symbols,
            latents.z_shape,
            latents.y_shape,
            latents.step,
        )?;
        let symbols = self.decode_y(&latents.y_stream, &indices)?;
        let delta = latents.step.get();
        Ok(symbols
            .iter()
            .zip(&means)
            .zip(&indices)
            .map(|((&k, &mean), &index)| reconstruct(k, mean, delta, index, latents.shrinkage))
            .collect())
    }
}

/// Means (channel-major, `y_shape`) and table indices of `y` coded on the grid of `step` from
/// the integer symbols of `z`, by the model's reproducible hyper-synthesis (module docs).
///
/// # Errors
/// [`ModelError::Shape`] if the shapes do not fit the hyper-synthesis.
pub fn y_parameters(
    tables: &ModelTables,
    z_symbols: &[i32],
    [_, z_height, z_width]: [i64; 3],
    [_, y_height, y_width]: [i64; 3],
    step: QuantizationStep,
) -> Result<(Vec<f32>, Vec<u16>), ModelError> {
    let side = |v: i64| usize::try_from(v).unwrap_or(0);
    let parameters = tables
        .hyper_synthesis
        .y_parameters_at(
            z_symbols,
            [side(z_height), side(z_width)],
            [side(y_height), side(y_width)],
            step,
        )
        .map_err(|e| ModelError::Shape(e.to_string()))?;
    Ok((parameters.means, parameters.scale_indices))
}

/// The step-independent part of [`y_parameters`]: the predicted means and scales of `y`, which
/// [`YPrior::at`] takes to any step (an encoder's rate search runs the hyper-synthesis once).
///
/// # Errors
/// As [`y_parameters`].
pub fn y_prior(
    tables: &ModelTables,
    z_symbols: &[i32],
    [_, z_height, z_width]: [i64; 3],
    [_, y_height, y_width]: [i64; 3],
) -> Result<YPrior, ModelError> {
    let side = |v: i64| usize::try_from(v).unwrap_or(0);
    tables
        .hyper_synthesis
        .y_prior(
            z_symbols,
            [side(z_height), side(z_width)],
            [side(y_height), side(y_width)],
        )
        .map_err(|e| ModelError::Shape(e.to_string()))
}

/// `ceil(a / b)` for positive `b`.
pub(crate) fn ceil_div(a: i64, b: i64) -> i64 {
    (a + b - 1) / b
}

/// Table index of every element of `z`: its channel.
fn z_channel_indices([channels, height, width]: [i64; 3]) -> Vec<u16> {
    let plane = usize::try_from(height * width).unwrap_or(0);
    (0..u16::try_from(channels).unwrap_or(0))
        .flat_map(|c| std::iter::repeat_n(c, plane))
        .collect()
}
