//! The `.ocu` container: the file format that carries one compressed image.
//!
//! A file holds a small header (which model made it, the image size, the shapes of the two
//! latents) and the two range-coded streams, `z` (the hyperprior) and `y` (the image latent),
//! followed by a CRC-32 of everything before it. The full specification, with a byte table, the
//! versioning rules and the extension mechanism, is `docs/bitstream.md`; in short (all integers
//! little-endian):
//!
//! ```text
//! magic "\x8FOCU" | major u8 | minor u8 | header_len u16
//! header (header_len bytes): fingerprint [8] | name_len u8 | name | quality u8 | width u32 | height u32
//!                            | channels u8 | y shape 3 x u32 | z shape 3 x u32 | extension records...
//! z_len u32 | z stream | y_len u32 | y stream | CRC-32 u32 of all bytes before it
//! ```
//!
//! Reading ([`Bitstream::parse`], [`Bitstream::read_from`]) never panics on any input, enforces
//! [`Limits`] before allocating, and reports problems as a [`ContainerError`] that says who is at
//! fault: the file ([`ContainerError::Format`]), the reader ([`ContainerError::Unsupported`]), the
//! configured limits ([`ContainerError::LimitsExceeded`]), the caller of a writer
//! ([`ContainerError::InvalidInput`]) or the I/O ([`ContainerError::Io`]).

use std::fmt;
use std::io::{self, Read, Write};

use byteorder::{ByteOrder, LittleEndian, WriteBytesExt};
use ocular_entropy::{QuantizationStep, Shrinkage};

use crate::limits::{Limit, Limits, LimitsExceeded};

/// The four bytes every `.ocu` file starts with: `0x8F`, then `OCU` in ASCII.
///
/// The first byte has its high bit set so that a transfer that strips the eighth bit, or a tool
/// that guesses "text", is noticed at once (as with PNG).
pub const MAGIC: [u8; 4] = [0x8F, b'O', b'C', b'U'];

/// Major format version this crate reads and writes. A reader rejects every other major version
/// with [`UnsupportedError::Version`].
pub const VERSION_MAJOR: u8 = 1;

/// Minor format version this crate writes. A reader accepts every minor version of its major
/// version: minor versions only add things that older readers can skip (new non-critical
/// extension records, new record kinds).
pub const VERSION_MINOR: u8 = 3;

/// Downsampling factor from the image to the latent `y`: `y` is `ceil(height / 16)` by
/// `ceil(width / 16)` (the encoder pads the image up to a multiple of 16).
pub const Y_DOWNSAMPLING: u32 = 16;

/// Downsampling factor from the image to the hyper-latent `z`: `z` is `ceil(height / 64)` by
/// `ceil(width / 64)` (the encoder pads the image up to a multiple of 64).
pub const Z_DOWNSAMPLING: u32 = 64;

/// Longest model name, in bytes of UTF-8 (its length is stored in one byte).
pub const MAX_MODEL_NAME_BYTES: usize = 255;

/// Largest header (fixed fields and extension records), in bytes: its length is stored as a
/// `u16`.
pub const MAX_HEADER_BYTES: usize = u16::MAX as usize;

/// Bit of an extension record's kind that marks it critical: a reader that does not know a
/// critical record must refuse the file ([`UnsupportedError::CriticalExtension`]); one that does
/// not know a non-critical record skips it.
pub const CRITICAL_EXTENSION_BIT: u16 = 0x8000;

/// Kind of the critical record that carries [`Header::quantization_step`] (format 1.1): the
/// step's `f32` bits, little-endian. Critical, because a reader that ignored it would decode
/// `y` on the wrong grid.
pub const QUANTIZATION_STEP_KIND: u16 = 0x8001;

/// Kind of the critical record that carries [`Header::observer_mix`] (format 1.2): `alpha`'s
/// `f32` bits, little-endian. Critical, because a reader that ignored it would decode with the
/// synthesis of another mix.
pub const OBSERVER_MIX_KIND: u16 = 0x8002;

/// Kind of the non-critical record that carries [`Header::shrinkage`] (format 1.3): `w`'s
/// `f32` bits, little-endian. Not critical: a reader that ignores it decodes every latent at
/// the centre of its bin, a valid image, slightly further from the original.
pub const SHRINKAGE_KIND: u16 = 0x0003;

/// The record kinds written from [`Header`]'s own fields (and refused among the caller's).
const HEADER_KINDS: [u16; 3] = [QUANTIZATION_STEP_KIND, OBSERVER_MIX_KIND, SHRINKAGE_KIND];

/// Magic, major, minor, header length.
const PREFIX_BYTES: usize = 4 + 1 + 1 + 2;
/// Fixed-size header fields: fingerprint, name length, quality, width, height, channels, shapes.
const HEADER_FIXED_BYTES: usize = 8 + 1 + 1 + 4 + 4 + 1 + 12 + 12;
/// Kind and length of an extension record.
const EXTENSION_RECORD_BYTES: usize = 2 + 2;
/// The two stream lengths and the CRC-32.
const FRAMING_BYTES: usize = 4 + 4 + 4;

// ---------------------------------------------------------------------------------------------
// Header types
// ---------------------------------------------------------------------------------------------

/// 8-byte fingerprint of the model that made a file (computed by the codec from the model file;
/// opaque to the container). Displayed as 16 lowercase hex digits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelFingerprint(pub [u8; 8]);

impl fmt::Display for ModelFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl serde::Serialize for ModelFingerprint {
    /// Serializes as the 16-hex-digit string of [`Display`](fmt::Display).
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Which of the two latents (and of their streams) something is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Latent {
    /// The image latent `y`, downsampled by [`Y_DOWNSAMPLING`].
    Y,
    /// The hyper-latent `z`, downsampled by [`Z_DOWNSAMPLING`].
    Z,
}

impl Latent {
    /// The latent's spatial downsampling factor relative to the image.
    #[must_use]
    pub const fn downsampling(self) -> u32 {
        match self {
            Latent::Y => Y_DOWNSAMPLING,
            Latent::Z => Z_DOWNSAMPLING,
        }
    }
}

impl fmt::Display for Latent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Latent::Y => "y",
            Latent::Z => "z",
        })
    }
}

/// Shape of a latent tensor: channels, height, width (all >= 1 in a valid header).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct LatentShape {
    /// Number of channels.
    pub channels: u32,
    /// Height in latent elements.
    pub height: u32,
    /// Width in latent elements.
    pub width: u32,
}

impl LatentShape {
    /// A shape from its three dimensions.
    #[must_use]
    pub const fn new(channels: u32, height: u32, width: u32) -> Self {
        LatentShape {
            channels,
            height,
            width,
        }
    }

    /// The shape the codec gives `latent` for an image of `image_width` x `image_height` pixels:
    /// `channels` x `ceil(image_height / f)` x `ceil(image_width / f)` with `f` the latent's
    /// [`downsampling`](Latent::downsampling).
    #[must_use]
    pub const fn for_image(
        latent: Latent,
        channels: u32,
        image_width: u32,
        image_height: u32,
    ) -> Self {
        let factor = latent.downsampling();
        LatentShape {
            channels,
            height: image_height.div_ceil(factor),
            width: image_width.div_ceil(factor),
        }
    }

    /// Number of elements, `channels * height * width` (saturating at `u64::MAX`, which no
    /// limit accepts).
    #[must_use]
    pub const fn elements(&self) -> u64 {
        (self.channels as u64)
            .saturating_mul(self.height as u64)
            .saturating_mul(self.width as u64)
    }
}

impl fmt::Display for LatentShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}x{}", self.channels, self.height, self.width)
    }
}

/// The header of an `.ocu` file: which model made it and what it contains.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Header {
    /// Fingerprint of the model that made the file; a decoder checks it against its model.
    pub model_fingerprint: ModelFingerprint,
    /// Name of that model, e.g. `"mse-q3"`: UTF-8, at most [`MAX_MODEL_NAME_BYTES`] bytes, no
    /// control characters (it is shown to users).
    pub model_name: String,
    /// Rate point of the model family (opaque to the container).
    pub quality: u8,
    /// Image width in pixels, >= 1.
    pub width: u32,
    /// Image height in pixels, >= 1.
    pub height: u32,
    /// Channels of the source image: 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA). The decoder
    /// outputs gray for 1 and 2 and RGB for 3 and 4 (see [`Header::decoded_channels`]).
    pub channels: u8,
    /// Shape of the latent `y`: its height and width are the image's divided by
    /// [`Y_DOWNSAMPLING`], rounded up.
    pub y_shape: LatentShape,
    /// Shape of the hyper-latent `z`: its height and width are the image's divided by
    /// [`Z_DOWNSAMPLING`], rounded up.
    pub z_shape: LatentShape,
    /// The grid a variable-rate model coded `y` on (record [`QUANTIZATION_STEP_KIND`]);
    /// `None` for a fixed-rate model's unit grid.
    pub quantization_step: Option<QuantizationStep>,
    /// The observer mix a model conditioned on the mix coded the image at (record
    /// [`OBSERVER_MIX_KIND`]); `None` for `alpha = 0` and for every other model.
    pub observer_mix: Option<ObserverMix>,
    /// How far the decoder moves `y` toward its predicted means (record [`SHRINKAGE_KIND`];
    /// `ocular_models::shrinkage`); `None` for the plain decoder (`w = 0`).
    pub shrinkage: Option<Shrinkage>,
}

/// An observer mix `alpha`: a number in [0, 1] (0: the person, 1: the classifier). Two are
/// equal when their bits are.
#[derive(Clone, Copy, Debug, serde::Serialize)]
#[serde(transparent)]
pub struct ObserverMix(f32);

impl ObserverMix {
    /// A person judged by MS-SSIM alone: `alpha = 0`.
    pub const HUMAN: Self = Self(0.0);

    /// What `machine` stands for: the mix that keeps the most top-1 for classifiers the codec
    /// was never trained with, not the classifier alone. On the first 150 imagenet-dev crops at
    /// 0.25 and 0.5 bpp the networks trained at `alpha = 0.5` keep more top-1 than those
    /// trained at `alpha = 1` under the classifier of training (EfficientNet-Lite0) and more
    /// still under the two it never saw (Lite1, Lite2), with about 5 dB more MS-SSIM
    /// (docs/observer.md, "What `machine` means").
    pub const MACHINE: Self = Self(0.5);

    /// `alpha` if it is in [0, 1].
    #[must_use]
    pub fn new(alpha: f32) -> Option<Self> {
        (0.0..=1.0).contains(&alpha).then_some(Self(alpha))
    }

    /// The mix an observer's name stands for: `human` ([`Self::HUMAN`]), `machine`
    /// ([`Self::MACHINE`]) or a number in [0, 1]; `None` for anything else.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "human" => Some(Self::HUMAN),
            "machine" => Some(Self::MACHINE),
            // `+ 0.0` turns a typed `-0` into the `0` it means (mixes compare by their bits).
            number => number
                .parse::<f32>()
                .ok()
                .map(|a| a + 0.0)
                .and_then(Self::new),
        }
    }

    /// The value.
    #[must_use]
    pub const fn get(self) -> f32 {
        self.0
    }
}

impl PartialEq for ObserverMix {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for ObserverMix {}

impl Header {
    /// Number of pixels of the image, `width * height`.
    #[must_use]
    pub const fn pixels(&self) -> u64 {
        self.width as u64 * self.height as u64
    }

    /// Number of channels the decoder outputs: 1 (gray) for 1- and 2-channel sources, 3 (RGB)
    /// for 3- and 4-channel sources (alpha is not coded).
    #[must_use]
    pub const fn decoded_channels(&self) -> u8 {
        if self.channels <= 2 {
            1
        } else {
            3
        }
    }

    /// Checks every rule of the format that concerns the header alone (not the limits): the
    /// model name's length and characters, non-zero image size, a channel count in `1..=4`,
    /// non-zero latent shapes, and latent heights and widths that match the image size and
    /// [`Y_DOWNSAMPLING`] / [`Z_DOWNSAMPLING`].
    ///
    /// # Errors
    ///
    /// The first rule the header breaks, as a [`HeaderError`].
    pub fn validate(&self) -> Result<(), HeaderError> {
        if self.model_name.len() > MAX_MODEL_NAME_BYTES {
            return Err(HeaderError::ModelNameTooLong {
                len: self.model_name.len(),
            });
        }
        if self.model_name.chars().any(char::is_control) {
            return Err(HeaderError::ModelNameControlCharacter);
        }
        if self.width == 0 || self.height == 0 {
            return Err(HeaderError::ZeroImageSize {
                width: self.width,
                height: self.height,
            });
        }
        if !(1..=4).contains(&self.channels) {
            return Err(HeaderError::InvalidChannels {
                channels: self.channels,
            });
        }
        for (latent, shape) in [(Latent::Y, self.y_shape), (Latent::Z, self.z_shape)] {
            if shape.channels == 0 || shape.height == 0 || shape.width == 0 {
                return Err(HeaderError::ZeroLatentDimension { latent, shape });
            }
            let expected = LatentShape::for_image(latent, shape.channels, self.width, self.height);
            if shape != expected {
                return Err(HeaderError::LatentShapeMismatch {
                    latent,
                    found: shape,
                    expected,
                    image_width: self.width,
                    image_height: self.height,
                });
            }
        }
        Ok(())
    }

    /// Checks the header against `limits`: the image's pixels against
    /// [`Limits::max_pixels`], the elements of `y` and `z` together against
    /// [`Limits::max_latent_elements`].
    ///
    /// # Errors
    ///
    /// [`LimitsExceeded`] for the first limit exceeded.
    pub fn check_limits(&self, limits: &Limits) -> Result<(), LimitsExceeded> {
        limits.check(Limit::Pixels, self.pixels())?;
        let elements = self
            .y_shape
            .elements()
            .saturating_add(self.z_shape.elements());
        limits.check(Limit::LatentElements, elements)
    }

    /// Bytes this header takes in a file without other extension records than its own.
    fn encoded_len(&self) -> usize {
        let step = self
            .quantization_step
            .map_or(0, |_| EXTENSION_RECORD_BYTES + 4);
        let mix = self.observer_mix.map_or(0, |_| EXTENSION_RECORD_BYTES + 4);
        let shrinkage = self.shrinkage.map_or(0, |_| EXTENSION_RECORD_BYTES + 4);
        HEADER_FIXED_BYTES + self.model_name.len() + step + mix + shrinkage
    }
}

/// An extension record of the header: a kind and opaque data.
///
/// Format version 1.0 defines no record kinds, so every record is unknown to this reader: a
/// non-critical one (kind below [`CRITICAL_EXTENSION_BIT`]) is skipped, a critical one makes
/// parsing fail with [`UnsupportedError::CriticalExtension`]. See `docs/bitstream.md` for the
/// allocation of kinds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Extension {
    /// Record kind; [`CRITICAL_EXTENSION_BIT`] set means critical.
    pub kind: u16,
    /// Record data (at most what fits in the header: [`MAX_HEADER_BYTES`] minus the rest).
    pub data: Vec<u8>,
}

impl Extension {
    /// A record of `kind` holding `data`.
    #[must_use]
    pub fn new(kind: u16, data: Vec<u8>) -> Self {
        Extension { kind, data }
    }

    /// Whether a reader that does not know this kind must refuse the file.
    #[must_use]
    pub const fn is_critical(&self) -> bool {
        self.kind & CRITICAL_EXTENSION_BIT != 0
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Everything that can go wrong reading or writing an `.ocu` file, grouped by who is at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContainerError {
    /// The bytes are not a well-formed `.ocu` file (the file's fault: corrupt, truncated, or not
    /// an `.ocu` file at all).
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The file may be valid but uses a format version or feature this reader does not
    /// implement (a newer reader may read it).
    #[error(transparent)]
    Unsupported(#[from] UnsupportedError),
    /// The file declares sizes above the reader's [`Limits`].
    #[error(transparent)]
    LimitsExceeded(#[from] LimitsExceeded),
    /// A writer was given something the format cannot represent (the caller's fault).
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    /// Reading or writing failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Part of a file, named in [`FormatError`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Section {
    /// The 4-byte magic number.
    Magic,
    /// The major and minor version bytes.
    Version,
    /// The header length field.
    HeaderLength,
    /// The header as a whole.
    Header,
    /// The model fingerprint.
    ModelFingerprint,
    /// The model name's length byte.
    ModelNameLength,
    /// The model name.
    ModelName,
    /// The quality byte.
    Quality,
    /// The image width.
    ImageWidth,
    /// The image height.
    ImageHeight,
    /// The channel count.
    Channels,
    /// The shape of a latent.
    LatentShape(Latent),
    /// An extension record (kind, length or data).
    ExtensionRecord,
    /// The length field of a stream.
    StreamLength(Latent),
    /// A stream.
    Stream(Latent),
    /// The CRC-32 at the end.
    Checksum,
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Section::Magic => f.write_str("magic number"),
            Section::Version => f.write_str("version"),
            Section::HeaderLength => f.write_str("header length"),
            Section::Header => f.write_str("header"),
            Section::ModelFingerprint => f.write_str("model fingerprint"),
            Section::ModelNameLength => f.write_str("model name length"),
            Section::ModelName => f.write_str("model name"),
            Section::Quality => f.write_str("quality"),
            Section::ImageWidth => f.write_str("image width"),
            Section::ImageHeight => f.write_str("image height"),
            Section::Channels => f.write_str("channel count"),
            Section::LatentShape(latent) => write!(f, "{latent} latent shape"),
            Section::ExtensionRecord => f.write_str("extension record"),
            Section::StreamLength(latent) => write!(f, "{latent} stream length"),
            Section::Stream(latent) => write!(f, "{latent} stream"),
            Section::Checksum => f.write_str("CRC-32"),
        }
    }
}

/// The bytes are not a well-formed `.ocu` file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The file does not start with [`MAGIC`].
    #[error("not an .ocu file (bad magic number)")]
    BadMagic,
    /// The file ends before `section` is complete.
    #[error("truncated .ocu file: the {section} needs {needed} bytes but only {available} remain")]
    Truncated {
        /// The part of the file being read.
        section: Section,
        /// Bytes that part needs.
        needed: u64,
        /// Bytes left in the file.
        available: u64,
    },
    /// The header length field is too small for the header's contents.
    #[error(
        "corrupt .ocu header: its length ({header_len} bytes) is too short for the {section} \
         (needs {needed} more bytes, {available} left)"
    )]
    HeaderTooShort {
        /// The header field being read.
        section: Section,
        /// The header length field.
        header_len: u16,
        /// Bytes that field needs.
        needed: u64,
        /// Bytes left in the header.
        available: u64,
    },
    /// The stored CRC-32 does not match the file's bytes.
    #[error("corrupt .ocu file: CRC-32 mismatch (stored {stored:08x}, computed {computed:08x})")]
    ChecksumMismatch {
        /// CRC-32 stored at the end of the file.
        stored: u32,
        /// CRC-32 of the bytes before it.
        computed: u32,
    },
    /// There are bytes after the CRC-32.
    #[error(
        "corrupt .ocu file: unexpected data after the end of the file (at byte offset {offset})"
    )]
    TrailingBytes {
        /// Offset of the first unexpected byte (the length the file should have).
        offset: u64,
    },
    /// The model name is not UTF-8.
    #[error("corrupt .ocu header: the model name is not valid UTF-8")]
    ModelNameNotUtf8,
    /// The quantisation-step record is short, repeated, or holds no valid step.
    #[error("corrupt .ocu header: invalid quantisation-step record ({0})")]
    InvalidQuantizationStep(String),
    /// The observer-mix record is short, repeated, or holds no number in [0, 1].
    #[error("corrupt .ocu header: invalid observer-mix record ({0})")]
    InvalidObserverMix(String),
    /// The shrinkage record is short, repeated, or holds no number in [0, 1].
    #[error("corrupt .ocu header: invalid shrinkage record ({0})")]
    InvalidShrinkage(String),
    /// A header field has an invalid value.
    #[error("invalid .ocu header: {0}")]
    InvalidHeader(HeaderError),
}

/// A header breaks a rule of the format ([`Header::validate`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The model name is longer than [`MAX_MODEL_NAME_BYTES`].
    #[error("the model name is {len} bytes long; at most 255 are allowed")]
    ModelNameTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The model name contains a control character.
    #[error("the model name contains a control character")]
    ModelNameControlCharacter,
    /// The image width or height is zero.
    #[error("the image size {width}x{height} has a zero dimension")]
    ZeroImageSize {
        /// Image width.
        width: u32,
        /// Image height.
        height: u32,
    },
    /// The channel count is not 1, 2, 3 or 4.
    #[error("the channel count {channels} is not 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA)")]
    InvalidChannels {
        /// The channel count.
        channels: u8,
    },
    /// A latent shape has a zero dimension.
    #[error("the {latent} latent shape {shape} (channels x height x width) has a zero dimension")]
    ZeroLatentDimension {
        /// Which latent.
        latent: Latent,
        /// Its shape.
        shape: LatentShape,
    },
    /// A latent's height or width does not match the image size.
    #[error(
        "the {latent} latent shape {found} (channels x height x width) does not match the \
         {image_width}x{image_height} image, which gives {expected} when downsampled by {}",
        latent.downsampling()
    )]
    LatentShapeMismatch {
        /// Which latent.
        latent: Latent,
        /// The shape in the header.
        found: LatentShape,
        /// The shape the image size implies (with the same channel count).
        expected: LatentShape,
        /// Image width.
        image_width: u32,
        /// Image height.
        image_height: u32,
    },
}

/// The file may be valid, but this reader cannot read it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnsupportedError {
    /// The major version is not [`VERSION_MAJOR`].
    #[error(
        "unsupported .ocu format version {major}.{minor}: this reader reads version {}.x only \
         (the file may need a newer ocular)",
        VERSION_MAJOR
    )]
    Version {
        /// The file's major version.
        major: u8,
        /// The file's minor version.
        minor: u8,
    },
    /// The header has a critical extension record of a kind this reader does not know.
    #[error(
        "unsupported .ocu feature: the file needs critical extension {kind:#06x}, which this \
         reader does not know (the file may need a newer ocular)"
    )]
    CriticalExtension {
        /// The record's kind.
        kind: u16,
    },
}

/// A writer was given something the format cannot represent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInput {
    /// The header breaks a rule of the format.
    #[error("cannot write .ocu file: {0}")]
    Header(HeaderError),
    /// A stream is longer than `u32::MAX` bytes.
    #[error("cannot write .ocu file: the {latent} stream is {len} bytes; at most 4294967295 fit")]
    StreamTooLong {
        /// Which stream.
        latent: Latent,
        /// Its length in bytes.
        len: usize,
    },
    /// The header with its extension records is longer than [`MAX_HEADER_BYTES`].
    #[error(
        "cannot write .ocu file: the header is {len} bytes with its extensions; at most 65535 fit"
    )]
    HeaderTooLarge {
        /// Its length in bytes.
        len: usize,
    },
    /// An extension record of a kind the header writes itself (e.g.
    /// [`QUANTIZATION_STEP_KIND`]).
    #[error("cannot write .ocu file: extension kind {kind:#06x} is written from the header")]
    ReservedExtension {
        /// The kind.
        kind: u16,
    },
}

// ---------------------------------------------------------------------------------------------
// Bitstream
// ---------------------------------------------------------------------------------------------

/// A parsed `.ocu` file: header and the two range-coded streams.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bitstream {
    /// The header.
    pub header: Header,
    /// Range-coded hyper-latent `z` (decoded first).
    pub z_stream: Vec<u8>,
    /// Range-coded latent `y`.
    pub y_stream: Vec<u8>,
}

impl Bitstream {
    /// Serializes the file (format version [`VERSION_MAJOR`].[`VERSION_MINOR`], no extension
    /// records).
    ///
    /// The header is validated first ([`Header::validate`]), so every file this writes can be
    /// read back (given large enough [`Limits`]).
    ///
    /// # Errors
    ///
    /// [`ContainerError::InvalidInput`] when the header is invalid or a stream is longer than
    /// `u32::MAX` bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ContainerError> {
        self.to_bytes_with_extensions(&[])
    }

    /// Serializes the file with extension records in the header, in the order given.
    ///
    /// Records of any kind are written, critical ones included (a reader that does not know a
    /// critical kind refuses the file).
    ///
    /// # Errors
    ///
    /// [`ContainerError::InvalidInput`] when the header is invalid, a stream is longer than
    /// `u32::MAX` bytes, or the header with its records is longer than [`MAX_HEADER_BYTES`].
    pub fn to_bytes_with_extensions(
        &self,
        extensions: &[Extension],
    ) -> Result<Vec<u8>, ContainerError> {
        self.header.validate().map_err(InvalidInput::Header)?;
        if let Some(ext) = extensions
            .iter()
            .find(|ext| HEADER_KINDS.contains(&ext.kind))
        {
            return Err(InvalidInput::ReservedExtension { kind: ext.kind }.into());
        }
        let header_len = extensions
            .iter()
            .fold(self.header.encoded_len(), |len, ext| {
                len.saturating_add(EXTENSION_RECORD_BYTES + ext.data.len())
            });
        let header_len_u16 = u16::try_from(header_len)
            .map_err(|_| InvalidInput::HeaderTooLarge { len: header_len })?;
        let stream_len = |latent, stream: &[u8]| {
            u32::try_from(stream.len()).map_err(|_| InvalidInput::StreamTooLong {
                latent,
                len: stream.len(),
            })
        };
        let z_len = stream_len(Latent::Z, &self.z_stream)?;
        let y_len = stream_len(Latent::Y, &self.y_stream)?;
        // Header validation bounds the name's length by 255.
        let name_len = u8::try_from(self.header.model_name.len()).map_err(|_| {
            InvalidInput::Header(HeaderError::ModelNameTooLong {
                len: self.header.model_name.len(),
            })
        })?;

        let total =
            PREFIX_BYTES + header_len + FRAMING_BYTES + self.z_stream.len() + self.y_stream.len();
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&MAGIC);
        out.write_u8(VERSION_MAJOR)?;
        out.write_u8(VERSION_MINOR)?;
        out.write_u16::<LittleEndian>(header_len_u16)?;

        write_header(&mut out, &self.header, name_len, extensions, header_len)?;

        out.write_u32::<LittleEndian>(z_len)?;
        out.extend_from_slice(&self.z_stream);
        out.write_u32::<LittleEndian>(y_len)?;
        out.extend_from_slice(&self.y_stream);
        let crc = crc32fast::hash(&out);
        out.write_u32::<LittleEndian>(crc)?;
        debug_assert_eq!(out.len(), total);
        Ok(out)
    }

    /// Writes the file to `w` (as [`Bitstream::to_bytes`], then one `write_all`).
    ///
    /// # Errors
    ///
    /// [`ContainerError::InvalidInput`] as for [`Bitstream::to_bytes`] (nothing is written
    /// then), [`ContainerError::Io`] when writing fails.
    pub fn write_to<W: Write>(&self, mut w: W) -> Result<(), ContainerError> {
        let bytes = self.to_bytes()?;
        w.write_all(&bytes)?;
        Ok(())
    }

    /// Parses a complete file held in memory.
    ///
    /// Checks, in this order: the magic number and major version; the framing (header length,
    /// stream lengths against [`Limits::max_stream_bytes`] and against the bytes present, no
    /// trailing bytes); the CRC-32; the header's fields and extension records (an unknown
    /// critical record is refused, unknown non-critical ones are skipped); the header's rules
    /// ([`Header::validate`]) and limits ([`Header::check_limits`]). Only then are the streams
    /// copied out.
    ///
    /// # Errors
    ///
    /// - [`ContainerError::Format`] when the bytes are not a well-formed file;
    /// - [`ContainerError::Unsupported`] for another major version or an unknown critical
    ///   extension record;
    /// - [`ContainerError::LimitsExceeded`] when the file exceeds `limits`.
    pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Bitstream, ContainerError> {
        parse_file(bytes, limits, |_, _| {})
    }

    /// Parses like [`Bitstream::parse`] and also returns the (non-critical) extension records
    /// that were skipped, in file order.
    ///
    /// # Errors
    ///
    /// As [`Bitstream::parse`].
    pub fn parse_with_extensions(
        bytes: &[u8],
        limits: &Limits,
    ) -> Result<(Bitstream, Vec<Extension>), ContainerError> {
        let mut extensions = Vec::new();
        let bitstream = parse_file(bytes, limits, |kind, data| {
            extensions.push(Extension::new(kind, data.to_vec()));
        })?;
        Ok((bitstream, extensions))
    }

    /// Reads one file from `r` and parses it like [`Bitstream::parse`].
    ///
    /// Reads in steps guided by the length fields, checking each against `limits` before
    /// reading what it announces, so at most about 64 KiB of header plus
    /// [`Limits::max_stream_bytes`] are ever read, and memory grows only with the bytes that
    /// actually arrive. After the CRC-32 it tries to read one more byte: `r` must hold exactly
    /// one file.
    ///
    /// # Errors
    ///
    /// As [`Bitstream::parse`] (a reader that ends early gives [`FormatError::Truncated`]), and
    /// [`ContainerError::Io`] when reading fails.
    pub fn read_from<R: Read>(mut r: R, limits: &Limits) -> Result<Bitstream, ContainerError> {
        let mut buf = Vec::new();
        loop {
            match locate(&buf, limits) {
                Ok(_) => break,
                Err(ContainerError::Format(FormatError::Truncated {
                    needed, available, ..
                })) => {
                    let want = needed.saturating_sub(available);
                    let before = buf.len();
                    (&mut r).take(want).read_to_end(&mut buf)?;
                    if ((buf.len() - before) as u64) < want {
                        // The reader ended early: report the truncation where it is now.
                        return Err(parse_error(&buf, limits));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let mut probe = [0_u8; 1];
        let extra = loop {
            match r.read(&mut probe) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        };
        if extra > 0 {
            return Err(FormatError::TrailingBytes {
                offset: buf.len() as u64,
            }
            .into());
        }
        Self::parse(&buf, limits)
    }

    /// Bytes of the whole file that are not the two streams (magic, versions, header, stream
    /// lengths, CRC-32), for bits-per-pixel accounting: `63 + model_name.len()` for a file
    /// without extension records, as [`Bitstream::to_bytes`] writes it.
    #[must_use]
    pub fn overhead_bytes(&self) -> usize {
        PREFIX_BYTES + self.header.encoded_len() + FRAMING_BYTES
    }

    /// Length of the file [`Bitstream::to_bytes`] writes: [`Bitstream::overhead_bytes`] plus
    /// both streams.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        self.overhead_bytes() + self.z_stream.len() + self.y_stream.len()
    }
}

/// Writes the header `h` after the file's prefix: its fixed fields (`name_len` is its name's
/// length), then its own records and the caller's `extensions`, each record `kind: u16, len:
/// u16, data`. `header_len` is the whole header's length, which bounds every record's.
fn write_header(
    out: &mut Vec<u8>,
    h: &Header,
    name_len: u8,
    extensions: &[Extension],
    header_len: usize,
) -> Result<(), ContainerError> {
    out.extend_from_slice(&h.model_fingerprint.0);
    out.write_u8(name_len)?;
    out.extend_from_slice(h.model_name.as_bytes());
    out.write_u8(h.quality)?;
    out.write_u32::<LittleEndian>(h.width)?;
    out.write_u32::<LittleEndian>(h.height)?;
    out.write_u8(h.channels)?;
    for shape in [h.y_shape, h.z_shape] {
        out.write_u32::<LittleEndian>(shape.channels)?;
        out.write_u32::<LittleEndian>(shape.height)?;
        out.write_u32::<LittleEndian>(shape.width)?;
    }
    // The header's own records in increasing order of kind.
    let own = [
        (SHRINKAGE_KIND, h.shrinkage.map(|w| w.get())),
        (QUANTIZATION_STEP_KIND, h.quantization_step.map(|q| q.get())),
        (OBSERVER_MIX_KIND, h.observer_mix.map(|a| a.get())),
    ];
    for (kind, value) in own {
        if let Some(value) = value {
            out.write_u16::<LittleEndian>(kind)?;
            out.write_u16::<LittleEndian>(4)?;
            out.write_f32::<LittleEndian>(value)?;
        }
    }
    for ext in extensions {
        // Each record is shorter than the whole header, which fits in a u16.
        let len = u16::try_from(ext.data.len())
            .map_err(|_| InvalidInput::HeaderTooLarge { len: header_len })?;
        out.write_u16::<LittleEndian>(ext.kind)?;
        out.write_u16::<LittleEndian>(len)?;
        out.extend_from_slice(&ext.data);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reader internals
// ---------------------------------------------------------------------------------------------

/// The framing of a file: its parts located, nothing interpreted.
struct Frame<'a> {
    header: &'a [u8],
    z_stream: &'a [u8],
    y_stream: &'a [u8],
    /// The bytes the CRC-32 covers (everything before it).
    checked: &'a [u8],
    /// The CRC-32 stored at the end.
    stored_crc: u32,
}

impl Frame<'_> {
    fn verify_crc(&self) -> Result<(), FormatError> {
        let computed = crc32fast::hash(self.checked);
        if self.stored_crc == computed {
            Ok(())
        } else {
            Err(FormatError::ChecksumMismatch {
                stored: self.stored_crc,
                computed,
            })
        }
    }
}

/// Where a [`Cursor`] reads, which decides how running out of bytes is reported.
#[derive(Clone, Copy)]
enum Area {
    File,
    Header { header_len: u16 },
}

/// Reads fields from a byte slice; never panics.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    area: Area,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8], area: Area) -> Self {
        Cursor {
            bytes,
            pos: 0,
            area,
        }
    }

    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize, section: Section) -> Result<&'a [u8], FormatError> {
        let slice = self
            .pos
            .checked_add(n)
            .and_then(|end| self.bytes.get(self.pos..end));
        match slice {
            Some(slice) => {
                self.pos += n;
                Ok(slice)
            }
            None => {
                let (needed, available) = (n as u64, self.remaining() as u64);
                Err(match self.area {
                    Area::File => FormatError::Truncated {
                        section,
                        needed,
                        available,
                    },
                    Area::Header { header_len } => FormatError::HeaderTooShort {
                        section,
                        header_len,
                        needed,
                        available,
                    },
                })
            }
        }
    }

    fn u8(&mut self, section: Section) -> Result<u8, FormatError> {
        Ok(self.take(1, section)?[0])
    }

    fn u16(&mut self, section: Section) -> Result<u16, FormatError> {
        Ok(LittleEndian::read_u16(self.take(2, section)?))
    }

    fn u32(&mut self, section: Section) -> Result<u32, FormatError> {
        Ok(LittleEndian::read_u32(self.take(4, section)?))
    }

    fn shape(&mut self, latent: Latent) -> Result<LatentShape, FormatError> {
        let bytes = self.take(12, Section::LatentShape(latent))?;
        Ok(LatentShape {
            channels: LittleEndian::read_u32(&bytes[0..4]),
            height: LittleEndian::read_u32(&bytes[4..8]),
            width: LittleEndian::read_u32(&bytes[8..12]),
        })
    }
}

/// Locates the parts of a file (without verifying the CRC-32), checking stream lengths against
/// the limits before anything else looks at them, and that nothing follows the CRC-32. On a
/// prefix of a valid file this returns [`FormatError::Truncated`] with the number of bytes the
/// next part needs.
fn locate<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Frame<'a>, ContainerError> {
    let present = bytes.len().min(MAGIC.len());
    if bytes.get(..present) != MAGIC.get(..present) {
        return Err(FormatError::BadMagic.into());
    }
    let mut c = Cursor::new(bytes, Area::File);
    c.take(MAGIC.len(), Section::Magic)?;
    let version = c.take(2, Section::Version)?;
    let (major, minor) = (version[0], version[1]);
    if major != VERSION_MAJOR {
        return Err(UnsupportedError::Version { major, minor }.into());
    }
    let header_len = c.u16(Section::HeaderLength)?;
    let header = c.take(usize::from(header_len), Section::Header)?;

    let z_len = c.u32(Section::StreamLength(Latent::Z))?;
    limits.check(Limit::StreamBytes, u64::from(z_len))?;
    let z_stream = c.take(stream_len(z_len), Section::Stream(Latent::Z))?;
    let y_len = c.u32(Section::StreamLength(Latent::Y))?;
    limits.check(Limit::StreamBytes, u64::from(z_len) + u64::from(y_len))?;
    let y_stream = c.take(stream_len(y_len), Section::Stream(Latent::Y))?;

    let checked = bytes.get(..c.pos).unwrap_or_default();
    let stored_crc = c.u32(Section::Checksum)?;
    if c.remaining() > 0 {
        return Err(FormatError::TrailingBytes {
            offset: c.pos as u64,
        }
        .into());
    }
    Ok(Frame {
        header,
        z_stream,
        y_stream,
        checked,
        stored_crc,
    })
}

/// A stream length as `usize`; on targets where it does not fit, a length no slice can have (so
/// the read reports truncation).
fn stream_len(len: u32) -> usize {
    usize::try_from(len).unwrap_or(usize::MAX)
}

/// Parses a whole file, handing each skipped (non-critical) extension record to `on_extension`.
fn parse_file(
    bytes: &[u8],
    limits: &Limits,
    on_extension: impl FnMut(u16, &[u8]),
) -> Result<Bitstream, ContainerError> {
    let frame = locate(bytes, limits)?;
    frame.verify_crc()?;
    let header = parse_header(frame.header, limits, on_extension)?;
    Ok(Bitstream {
        header,
        z_stream: frame.z_stream.to_vec(),
        y_stream: frame.y_stream.to_vec(),
    })
}

/// Parses and checks the header: fields, extension records (critical ones first refused), then
/// the header's rules and the limits.
fn parse_header(
    body: &[u8],
    limits: &Limits,
    mut on_extension: impl FnMut(u16, &[u8]),
) -> Result<Header, ContainerError> {
    // `body` came from a u16 length, so this never saturates.
    let header_len = u16::try_from(body.len()).unwrap_or(u16::MAX);
    let mut c = Cursor::new(body, Area::Header { header_len });
    let mut fingerprint = [0_u8; 8];
    fingerprint.copy_from_slice(c.take(8, Section::ModelFingerprint)?);
    let name_len = c.u8(Section::ModelNameLength)?;
    let name = c.take(usize::from(name_len), Section::ModelName)?;
    let quality = c.u8(Section::Quality)?;
    let width = c.u32(Section::ImageWidth)?;
    let height = c.u32(Section::ImageHeight)?;
    let channels = c.u8(Section::Channels)?;
    let y_shape = c.shape(Latent::Y)?;
    let z_shape = c.shape(Latent::Z)?;

    // Extension records, before any field is interpreted: a critical record may change what
    // the fields mean, so an old reader must refuse the file rather than judge them.
    let records = c.take(c.remaining(), Section::ExtensionRecord)?;
    let (mut quantization_step, mut observer_mix, mut shrinkage) = (None, None, None);
    for_each_record(records, header_len, |kind, data| match kind {
        QUANTIZATION_STEP_KIND => {
            let step = parse_quantization_step(data, quantization_step.is_some())?;
            quantization_step = Some(step);
            Ok(())
        }
        OBSERVER_MIX_KIND => {
            observer_mix = Some(parse_observer_mix(data, observer_mix.is_some())?);
            Ok(())
        }
        SHRINKAGE_KIND => {
            shrinkage = Some(parse_shrinkage(data, shrinkage.is_some())?);
            Ok(())
        }
        _ if kind & CRITICAL_EXTENSION_BIT != 0 => {
            Err(UnsupportedError::CriticalExtension { kind }.into())
        }
        _ => Ok(()),
    })?;

    let model_name = std::str::from_utf8(name)
        .map_err(|_| FormatError::ModelNameNotUtf8)?
        .to_owned();
    let header = Header {
        model_fingerprint: ModelFingerprint(fingerprint),
        model_name,
        quality,
        width,
        height,
        channels,
        y_shape,
        z_shape,
        quantization_step,
        observer_mix,
        shrinkage,
    };
    header.validate().map_err(FormatError::InvalidHeader)?;
    header.check_limits(limits)?;
    for_each_record(records, header_len, |kind, data| {
        if !HEADER_KINDS.contains(&kind) {
            on_extension(kind, data);
        }
        Ok(())
    })?;
    Ok(header)
}

/// The data of a [`QUANTIZATION_STEP_KIND`] record: an `f32` (little-endian) that
/// [`QuantizationStep::new`] accepts; bytes after it are a later minor version's and ignored.
fn parse_quantization_step(data: &[u8], repeated: bool) -> Result<QuantizationStep, FormatError> {
    let invalid = FormatError::InvalidQuantizationStep;
    let step = record_f32(data, repeated).map_err(invalid)?;
    QuantizationStep::new(step).map_err(|e| invalid(e.to_string()))
}

/// The data of an [`OBSERVER_MIX_KIND`] record: an `f32` (little-endian) in [0, 1]; bytes
/// after it are a later minor version's and ignored.
fn parse_observer_mix(data: &[u8], repeated: bool) -> Result<ObserverMix, FormatError> {
    let invalid = FormatError::InvalidObserverMix;
    let alpha = record_f32(data, repeated).map_err(invalid)?;
    ObserverMix::new(alpha).ok_or_else(|| invalid(format!("{alpha} is not in [0, 1]")))
}

/// The data of a [`SHRINKAGE_KIND`] record: an `f32` (little-endian) in [0, 1]; bytes after it
/// are a later minor version's and ignored.
fn parse_shrinkage(data: &[u8], repeated: bool) -> Result<Shrinkage, FormatError> {
    let invalid = FormatError::InvalidShrinkage;
    let w = record_f32(data, repeated).map_err(invalid)?;
    Shrinkage::new(w).ok_or_else(|| invalid(format!("{w} is not in [0, 1]")))
}

/// The leading `f32` (little-endian) of a record that may appear once; why not, otherwise.
fn record_f32(data: &[u8], repeated: bool) -> Result<f32, String> {
    if repeated {
        return Err("the record appears twice".into());
    }
    let bytes = data
        .get(..4)
        .ok_or_else(|| format!("{} bytes, needs 4", data.len()))?;
    Ok(LittleEndian::read_f32(bytes))
}

/// Walks the extension records that fill `records` (the end of a header of `header_len`
/// bytes), stopping at the first error `f` returns.
fn for_each_record(
    records: &[u8],
    header_len: u16,
    mut f: impl FnMut(u16, &[u8]) -> Result<(), ContainerError>,
) -> Result<(), ContainerError> {
    let mut c = Cursor::new(records, Area::Header { header_len });
    while c.remaining() > 0 {
        let kind = c.u16(Section::ExtensionRecord)?;
        let len = c.u16(Section::ExtensionRecord)?;
        let data = c.take(usize::from(len), Section::ExtensionRecord)?;
        f(kind, data)?;
    }
    Ok(())
}

/// The error [`Bitstream::parse`] reports for `bytes`, which must be invalid.
fn parse_error(bytes: &[u8], limits: &Limits) -> ContainerError {
    match Bitstream::parse(bytes, limits) {
        Err(e) => e,
        // Unreachable for the prefixes `read_from` passes; report a truncation regardless.
        Ok(_) => FormatError::Truncated {
            section: Section::Checksum,
            needed: 4,
            available: 0,
        }
        .into(),
    }
}
