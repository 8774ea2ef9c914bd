//! Encoding images into `.ocu` files and decoding them back.

//!
//! Plain coding runs the model's networks in pure Rust (`ocular_models::pure`); with the
//! `torch` feature, refinement runs in libtorch and the file it makes is an ordinary one.

use std::borrow::Cow;

use image::{ColorType, DynamicImage, GenericImageView, RgbImage};
use ocular_entropy::{QuantizationStep, Shrinkage};
use ocular_models::pure::Analysis;
use ocular_models::{CompressedLatents, ModelError, Realism};

use crate::container::{Bitstream, Header, LatentShape, ObserverMix};
use crate::limits::{Limit, Limits};
use crate::rows::{ImageRows, PngRows, RowSink};
use crate::{Error, Model};

/// Encodes images with one model.
///
/// ```no_run
/// # fn main() -> Result<(), ocular::Error> {
/// let model = ocular::Model::builtin_default()?;
/// let image = image::open("photo.png").map_err(|e| ocular::Error::Image(e.to_string()))?;
/// let file: Vec<u8> = ocular::Encoder::new(&model).with_quality(3.5).encode(&image)?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Encoder<'m> {
    model: &'m Model,
    limits: Limits,
    #[cfg(feature = "torch")]
    refine_steps: usize,
    quality: Option<f32>,
    observer_mix: Option<f32>,
}

impl<'m> Encoder<'m> {
    /// An encoder with the default [`Limits`] on image size, without refinement, at the
    /// model's default quality.
    pub fn new(model: &'m Model) -> Self {
        Self {
            model,
            limits: Limits::default(),
            #[cfg(feature = "torch")]
            refine_steps: 0,
            quality: None,
            observer_mix: None,
        }
    }

    /// Codes at `quality`, a continuous rate parameter within the [`Model::quality_range`] of a
    /// variable-rate model (higher: more bits; 5 is the model's reference, ~0.4 bpp on Kodak
    /// for the PSNR network; see `ocular_models::rate`). Files carry the exact quantisation
    /// step, so decoding needs nothing but the file. Fixed-rate models refuse it when encoding
    /// ([`Error::FixedRateModel`]).
    pub fn with_quality(mut self, quality: f32) -> Self {
        self.quality = Some(quality);
        self
    }

    /// Codes for the observer mix `alpha` in [0, 1] (0: the person, MS-SSIM; 1: the
    /// classifier's features; between: both, weighed as the model's training loss weighs
    /// them), with a model that is one network for every mix ([`Model::has_observer_mix`]).
    /// Files carry `alpha`, so decoding needs nothing but the file. Other models code at 0
    /// only; any other mix is refused when encoding ([`Error::ObserverMixUnavailable`]).
    pub fn with_observer_mix(mut self, alpha: f32) -> Self {
        self.observer_mix = Some(alpha);
        self
    }

    /// Uses `limits` (only `max_pixels` concerns encoding).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Refines every image's latent with `steps` steps of gradient descent on the model's own
    /// objective, `rate + lambda * distortion` for the observer it was trained for, before
    /// coding it (0, the default, codes the analysis transform's latent as is). Files stay
    /// ordinary `.ocu` files, decoded as fast as any; encoding costs about `steps` times a
    /// decode plus, for observer models, a classifier pass forwards and backwards.
    ///
    /// The coded latent is never worse than the unrefined one by that objective (see
    /// `ocular_models::refine`); refinement reaches the model's observer, not every metric: an
    /// `mse` model gains PSNR, an observer-1 model classifier fidelity. Needs the `torch`
    /// feature (refinement runs the libtorch networks).
    #[cfg(feature = "torch")]
    pub fn with_refinement(mut self, steps: usize) -> Self {
        self.refine_steps = steps;
        self
    }

    /// Encodes `image` into the bytes of an `.ocu` file.
    ///
    /// Gray images are coded as RGB and decoded as gray; alpha is not coded (decoded images are
    /// opaque). The image is padded to a multiple of 16 pixels by repeating its edges, and
    /// cropped back when decoded.
    ///
    /// # Errors
    /// [`Error::Image`] for an empty image or one over `max_pixels`;
    /// [`Error::QualityOutOfRange`] / [`Error::FixedRateModel`] for a quality the model cannot
    /// code at; [`Error::Internal`] if coding fails.
    pub fn encode(&self, image: &DynamicImage) -> Result<Vec<u8>, Error> {
        self.encode_with_y_budget(image, None)
    }

    /// [`Self::encode`], refinement (if any) keeping the `y` stream within `max_y_bytes`
    /// (see `ocular_models::refine`). Rate control's way to refine within a bit budget.
    pub(crate) fn encode_with_y_budget(
        &self,
        image: &DynamicImage,
        max_y_bytes: Option<usize>,
    ) -> Result<Vec<u8>, Error> {
        self.check_image(image)?;
        let step = self.model.step_for(self.quality)?;
        let grid = step.unwrap_or(QuantizationStep::ONE);
        let latents = self.latents(image, grid, max_y_bytes)?;
        self.file(image, latents, step)
    }

    /// Refuses an empty image and one over the limits.
    fn check_image(&self, image: &DynamicImage) -> Result<(), Error> {
        let (width, height) = image.dimensions();
        if width == 0 || height == 0 {
            return Err(Error::Image(format!(
                "the image is empty ({width}x{height})"
            )));
        }
        self.limits
            .check(Limit::Pixels, u64::from(width) * u64::from(height))
            .map_err(|e| Error::Image(e.to_string()))
    }

    /// The bytes of the file of `image` coded as `latents` (on the grid of `step`, if the model
    /// is variable-rate).
    fn file(
        &self,
        image: &DynamicImage,
        latents: CompressedLatents,
        step: Option<QuantizationStep>,
    ) -> Result<Vec<u8>, Error> {
        let (width, height) = image.dimensions();
        let shape = |[c, h, w]: [i64; 3]| LatentShape::new(c as u32, h as u32, w as u32);
        let bitstream = Bitstream {
            header: Header {
                model_fingerprint: self.model.fingerprint(),
                model_name: self.model.name().to_string(),
                quality: self.header_quality(),
                width,
                height,
                channels: image.color().channel_count(),
                y_shape: shape(latents.y_shape),
                z_shape: shape(latents.z_shape),
                quantization_step: step,
                observer_mix: self.file_observer_mix()?,
                shrinkage: self.shrinkage(step),
            },
            z_stream: latents.z_stream,
            y_stream: latents.y_stream,
        };
        Ok(bitstream.to_bytes()?)
    }

    /// A sweep over qualities of `image` (rate control): see [`QualitySweep`].
    ///
    /// # Errors
    /// As [`Self::encode`].
    pub(crate) fn sweep<'i>(&self, image: &'i DynamicImage) -> Result<QualitySweep<'m, 'i>, Error> {
        self.check_image(image)?;
        let analysis = if self.refines() {
            None
        } else {
            Some(
                self.model
                    .pure_at(self.observer_mix)?
                    .analyse(&rgb(image))?,
            )
        };
        Ok(QualitySweep {
            encoder: self.clone(),
            image,
            analysis,
        })
    }

    /// Whether it refines latents (which then depend on the quality).
    fn refines(&self) -> bool {
        #[cfg(feature = "torch")]
        {
            self.refine_steps > 0
        }
        #[cfg(not(feature = "torch"))]
        {
            false
        }
    }
}

/// One image encoded at the qualities a rate search tries. Without refinement the latents'
/// step-independent part — `y = g_a(x)`, `z` and its stream, the prior of `y`: nearly all of an
/// encode's time — is computed once (the quantisation step of a variable-rate model only moves
/// `y`'s grid and table indices, `docs/architecture.md`), and each quality only quantises and
/// codes `y`. The files are byte for byte those of [`Encoder::encode`] at each quality.
pub(crate) struct QualitySweep<'m, 'i> {
    encoder: Encoder<'m>,
    image: &'i DynamicImage,
    analysis: Option<Analysis>,
}

impl QualitySweep<'_, '_> {
    /// The file of the image at `quality`.
    ///
    /// # Errors
    /// As [`Encoder::encode`].
    pub(crate) fn encode(&self, quality: f32) -> Result<Vec<u8>, Error> {
        let encoder = self.encoder.clone().with_quality(quality);
        let Some(analysis) = &self.analysis else {
            return encoder.encode(self.image);
        };
        let step = encoder.model.step_for(encoder.quality)?;
        let grid = step.unwrap_or(QuantizationStep::ONE);
        // Coding `y` needs only the tables, the same at every mix: the analysis carries the mix.
        let latents = encoder.model.pure_at(None)?.code_at(analysis, grid)?;
        encoder.file(self.image, latents, step)
    }
}

impl Encoder<'_> {
    /// The model it encodes with.
    pub(crate) fn model(&self) -> &Model {
        self.model
    }

    /// The file's observer-mix record: none at 0, every file's mix without it.
    fn file_observer_mix(&self) -> Result<Option<ObserverMix>, Error> {
        match self.observer_mix {
            None | Some(0.0) => Ok(None),
            Some(alpha) => {
                ObserverMix::new(alpha)
                    .map(Some)
                    .ok_or_else(|| Error::ObserverMixUnavailable {
                        model: self.model.name().to_string(),
                        alpha,
                        reason: "a mix is a number in [0, 1]".into(),
                    })
            }
        }
    }

    /// The decoder's shrinkage of `y` toward its means for a file on the grid of `step`
    /// (`ocular_models::shrinkage::for_mse`): only for a variable-rate PSNR network.
    fn shrinkage(&self, step: Option<QuantizationStep>) -> Option<Shrinkage> {
        let step = step?;
        if self.model.distortion() != "mse" {
            return None;
        }
        ocular_models::shrinkage::for_mse(ocular_models::rate::quality_of_step(step))
    }

    /// The header's informational `quality` byte: the model's own, or for a variable-rate
    /// model the quality asked for, rounded (the file's exact rate is its quantisation step).
    fn header_quality(&self) -> u8 {
        match (self.model.quality_range(), self.quality) {
            (Some(_), Some(q)) => q.round().clamp(0.0, 255.0) as u8,
            _ => self.model.quality(),
        }
    }
}

impl Encoder<'_> {
    /// The latents of `image` on the grid of `step`, by the pure-Rust networks.
    #[cfg(not(feature = "torch"))]
    fn latents(
        &self,
        image: &DynamicImage,
        step: QuantizationStep,
        _max_y_bytes: Option<usize>,
    ) -> Result<CompressedLatents, Error> {
        let pure = self.model.pure_at(self.observer_mix)?;
        Ok(pure.compress_at(&rgb(image), step)?)
    }

    /// The latents of `image` on the grid of `step`: by the pure-Rust networks, or refined by
    /// libtorch (`y` stream within `max_y_bytes`) when refinement is asked for.
    #[cfg(feature = "torch")]
    fn latents(
        &self,
        image: &DynamicImage,
        step: QuantizationStep,
        max_y_bytes: Option<usize>,
    ) -> Result<CompressedLatents, Error> {
        let pure = self.model.pure_at(self.observer_mix)?;
        if self.refine_steps == 0 {
            return Ok(pure.compress_at(&rgb(image), step)?);
        }
        if self.observer_mix.is_some_and(|alpha| alpha != 0.0) {
            return Err(Error::ObserverMixUnavailable {
                model: self.model.name().to_string(),
                alpha: self.observer_mix.unwrap_or_default(),
                reason: "refinement runs at mix 0 only".into(),
            });
        }
        crate::torch_model::refined_latents(self.model, image, step, self.refine_steps, max_y_bytes)
    }
}

/// `image` as 8-bit RGB, borrowed if it already is.
fn rgb(image: &DynamicImage) -> Cow<'_, RgbImage> {
    match image.as_rgb8() {
        Some(rgb) => Cow::Borrowed(rgb),
        None => Cow::Owned(image.to_rgb8()),
    }
}

/// Decodes `.ocu` files made by one model.
#[derive(Debug)]
pub struct Decoder<'m> {
    model: &'m Model,
    limits: Limits,
    /// Output rows per strip of the synthesis.
    strip_rows: usize,
    /// The realism knob R (0: the plain decoder).
    realism: f32,
}

impl<'m> Decoder<'m> {
    /// A decoder with the default [`Limits`].
    pub fn new(model: &'m Model) -> Self {
        Self {
            model,
            limits: Limits::default(),
            strip_rows: ocular_models::pure::STRIP_ROWS,
            realism: 0.0,
        }
    }

    /// Decodes with the realism knob at `r` in 0..=1: the model's synthesis `g_s` and its
    /// realism decoder `g_s'` ([`Model::with_realism_decoder`]) mixed as
    /// `(1 - r) g_s(y) + r g_s'(y)`. 0 (the default) is the plain decoder, to the bit; 1 is the
    /// realism decoder alone. Checked when decoding.
    pub fn with_realism(mut self, r: f32) -> Self {
        self.realism = r;
        self
    }

    /// Uses `limits` for the files it reads.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Runs the synthesis in strips of `rows` output rows (default 64; at least 1). Decoded
    /// pixels do not depend on it; smaller strips hold less memory and recompute more of the
    /// rows that neighbouring strips share.
    pub fn with_strip_rows(mut self, rows: usize) -> Self {
        self.strip_rows = rows.max(1);
        self
    }

    /// Decodes the bytes of an `.ocu` file into an image: 8-bit gray if the source was gray,
    /// else 8-bit RGB, of the source's size.
    ///
    /// # Errors
    /// [`Error::Container`] for a malformed file or one over the limits,
    /// [`Error::ModelMismatch`] if another model made it, [`Error::CorruptStream`] if its streams
    /// are corrupt.
    pub fn decode(&self, bytes: &[u8]) -> Result<DynamicImage, Error> {
        let bitstream = Bitstream::parse(bytes, &self.limits)?;
        self.decode_image(bitstream)
    }

    /// Decodes an already parsed file (see [`Bitstream::parse`]). The bitstream is checked as
    /// [`Bitstream::parse`] checks a file, against this decoder's limits, before anything is
    /// allocated for it (a caller may have built or changed it).
    ///
    /// # Errors
    /// As [`Self::decode`].
    pub fn decode_bitstream(&self, bitstream: Bitstream) -> Result<DynamicImage, Error> {
        let checked = Bitstream::parse(&bitstream.to_bytes()?, &self.limits)?;
        self.decode_image(checked)
    }

    /// The whole image of a checked bitstream.
    fn decode_image(&self, bitstream: Bitstream) -> Result<DynamicImage, Error> {
        let mut image = ImageRows::default();
        self.decode_parsed(bitstream, &mut image)?;
        image
            .into_image()
            .ok_or_else(|| Error::Internal("the decoder left rows out".into()))
    }

    /// Decodes the bytes of an `.ocu` file in horizontal strips, handing each to `sink` as
    /// soon as it is made ([`RowSink`]): memory grows with the latents and one strip, not with
    /// the image, so images far larger than what fits as `f32` decode. The pixels are those of
    /// [`Self::decode`], to the bit.
    ///
    /// # Errors
    /// As [`Self::decode`]; [`Error::Output`] if the sink fails.
    pub fn decode_rows(&self, bytes: &[u8], sink: &mut impl RowSink) -> Result<(), Error> {
        let bitstream = Bitstream::parse(bytes, &self.limits)?;
        self.decode_parsed(bitstream, sink)
    }

    /// Decodes the bytes of an `.ocu` file into a PNG written to `output` row by row (8-bit RGB,
    /// or gray if the source was gray), without holding the image ([`Self::decode_rows`]).
    ///
    /// # Errors
    /// As [`Self::decode_rows`].
    pub fn decode_png(
        &self,
        bytes: &[u8],
        output: impl std::io::Write + 'static,
    ) -> Result<(), Error> {
        let mut png = PngRows::new(output);
        self.decode_rows(bytes, &mut png)?;
        png.finish().map_err(Error::Output)
    }

    /// Decodes a bitstream that [`Bitstream::parse`] made with this decoder's limits into
    /// `sink`.
    fn decode_parsed(&self, bitstream: Bitstream, sink: &mut impl RowSink) -> Result<(), Error> {
        let header = &bitstream.header;
        if header.model_fingerprint != self.model.fingerprint() {
            return Err(Error::ModelMismatch {
                file_model: header.model_name.clone(),
                file_fingerprint: header.model_fingerprint,
                model: self.model.name().to_string(),
                fingerprint: self.model.fingerprint(),
            });
        }
        let shape = |s: LatentShape| {
            [
                i64::from(s.channels),
                i64::from(s.height),
                i64::from(s.width),
            ]
        };
        let (width, height, gray) = (header.width, header.height, header.decoded_channels() == 1);
        let latents = CompressedLatents {
            y_shape: shape(header.y_shape),
            z_shape: shape(header.z_shape),
            z_stream: bitstream.z_stream,
            y_stream: bitstream.y_stream,
            step: header.quantization_step.unwrap_or(QuantizationStep::ONE),
            shrinkage: header.shrinkage.unwrap_or(Shrinkage::NONE),
        };
        let realism = self.checked_realism()?;
        let color = if gray { ColorType::L8 } else { ColorType::Rgb8 };
        sink.start(width, height, color).map_err(Error::Output)?;
        let emit = |first: usize, rgb: &[u8]| -> Result<(), DecodeFailure> {
            let first = u32::try_from(first).map_err(|e| Error::Internal(e.to_string()))?;
            if !gray {
                return Ok(sink.rows(first, rgb).map_err(Error::Output)?);
            }
            let rows = u32::try_from(rgb.len() / (3 * width as usize)).unwrap_or(0);
            let strip = RgbImage::from_raw(width, rows, rgb.to_vec())
                .ok_or_else(|| Error::Internal("a strip of partial rows".into()))?;
            let luma = DynamicImage::ImageRgb8(strip).to_luma8();
            Ok(sink.rows(first, luma.as_raw()).map_err(Error::Output)?)
        };
        let pure = self
            .model
            .pure_at(header.observer_mix.map(ObserverMix::get))
            .map_err(|e| match e {
                // The container checked the range: the file is this model's by fingerprint, so
                // a mix it cannot decode at means a forged file.
                Error::ObserverMixUnavailable { .. } => Error::CorruptStream(e.to_string()),
                other => other,
            })?;
        let decoded =
            pure.decompress_rows(&latents, (width, height), self.strip_rows, realism, emit);
        match decoded {
            Ok(()) => Ok(()),
            // The header passed the container's checks and names this model, so latent shapes
            // that still do not fit the network mean a forged or corrupt file.
            Err(DecodeFailure::Model(ModelError::Shape(message))) => {
                Err(Error::CorruptStream(message))
            }
            Err(DecodeFailure::Model(other)) => Err(other.into()),
            Err(DecodeFailure::Codec(error)) => Err(error),
        }
    }
}

impl Decoder<'_> {
    /// The realism knob of this decode, checked: `None` for the plain decoder.
    fn checked_realism(&self) -> Result<Option<Realism<'_>>, Error> {
        let r = self.realism;
        if r == 0.0 {
            return Ok(None);
        }
        if !(0.0..=1.0).contains(&r) {
            return Err(Error::RealismOutOfRange(r));
        }
        let decoder = self
            .model
            .realism_decoder()
            .ok_or_else(|| Error::NoRealismDecoder {
                model: self.model.name().to_string(),
            })?;
        Ok(Some(
            Realism::new(decoder, r).map_err(|_| Error::RealismOutOfRange(r))?,
        ))
    }
}

/// What stops a decode in strips: the model (its error mapped for a file's reader), or the
/// codec around it.
enum DecodeFailure {
    Model(ModelError),
    Codec(Error),
}

impl From<ModelError> for DecodeFailure {
    fn from(error: ModelError) -> Self {
        Self::Model(error)
    }
}

impl From<Error> for DecodeFailure {
    fn from(error: Error) -> Self {
        Self::Codec(error)
    }
}

/// Reads an image file in any format the `image` crate knows, refusing images over
/// `limits.max_pixels` before decoding them.
///
/// # Errors
/// [`Error::Image`] if the file cannot be read or decoded, or is too large.
pub fn open_image(path: &std::path::Path, limits: &Limits) -> Result<DynamicImage, Error> {
    let fail = |e: &dyn std::fmt::Display| Error::Image(format!("{}: {e}", path.display()));
    let reader = image::ImageReader::open(path)
        .map_err(|e| fail(&e))?
        .with_guessed_format()
        .map_err(|e| fail(&e))?;
    let (width, height) = reader.into_dimensions().map_err(|e| fail(&e))?;
    limits
        .check(Limit::Pixels, u64::from(width) * u64::from(height))
        .map_err(|e| fail(&e))?;
    let mut reader = image::ImageReader::open(path)
        .map_err(|e| fail(&e))?
        .with_guessed_format()
        .map_err(|e| fail(&e))?;
    let mut image_limits = image::Limits::default();
    // 16-bit RGBA is the widest buffer the decoders make: 8 bytes a pixel.
    image_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8));
    reader.limits(image_limits);
    reader.decode().map_err(|e| fail(&e))
}
