//! Resource limits that a reader of untrusted `.ocu` files enforces.
//!
//! Every size that a file declares (image pixels, latent elements, stream bytes) is compared with
//! these limits *before* anything is allocated for it, so a small malicious file cannot make the
//! reader (or the decoder behind it) reserve gigabytes of memory.

use std::fmt;

/// Resource limits a reader enforces before allocating.
///
/// The defaults accept every image a desktop machine can reasonably decode:
///
/// | field | default | meaning |
/// |---|---|---|
/// | [`max_pixels`](Self::max_pixels) | `1 << 27` (134,217,728, e.g. 11585 x 11585) | image width x height |
/// | [`max_stream_bytes`](Self::max_stream_bytes) | 512 MiB | z stream + y stream, in bytes |
/// | [`max_latent_elements`](Self::max_latent_elements) | `1 << 28` | elements of y + elements of z |
///
/// Use [`Limits::none`] only for trusted input.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Largest accepted image, in pixels (`width * height`).
    pub max_pixels: u64,
    /// Largest accepted total size of the two range-coded streams, in bytes.
    pub max_stream_bytes: u64,
    /// Largest accepted total number of latent elements (`y` and `z` together), i.e. of
    /// symbols the entropy decoder will produce.
    pub max_latent_elements: u64,
}

impl Limits {
    /// Default for [`max_pixels`](Self::max_pixels): `1 << 27` pixels.
    pub const DEFAULT_MAX_PIXELS: u64 = 1 << 27;
    /// Default for [`max_stream_bytes`](Self::max_stream_bytes): 512 MiB.
    pub const DEFAULT_MAX_STREAM_BYTES: u64 = 512 << 20;
    /// Default for [`max_latent_elements`](Self::max_latent_elements): `1 << 28` elements.
    pub const DEFAULT_MAX_LATENT_ELEMENTS: u64 = 1 << 28;

    /// No limits at all (every field `u64::MAX`). Only for trusted input.
    #[must_use]
    pub const fn none() -> Self {
        Limits {
            max_pixels: u64::MAX,
            max_stream_bytes: u64::MAX,
            max_latent_elements: u64::MAX,
        }
    }

    /// The limit's allowed maximum.
    #[must_use]
    pub const fn allowed(&self, limit: Limit) -> u64 {
        match limit {
            Limit::Pixels => self.max_pixels,
            Limit::StreamBytes => self.max_stream_bytes,
            Limit::LatentElements => self.max_latent_elements,
        }
    }

    /// Checks `value` against `limit`.
    ///
    /// # Errors
    ///
    /// [`LimitsExceeded`] when `value` is larger than the allowed maximum.
    pub const fn check(&self, limit: Limit, value: u64) -> Result<(), LimitsExceeded> {
        let allowed = self.allowed(limit);
        if value > allowed {
            Err(LimitsExceeded {
                limit,
                value,
                allowed,
            })
        } else {
            Ok(())
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pixels: Self::DEFAULT_MAX_PIXELS,
            max_stream_bytes: Self::DEFAULT_MAX_STREAM_BYTES,
            max_latent_elements: Self::DEFAULT_MAX_LATENT_ELEMENTS,
        }
    }
}

/// Which of the [`Limits`] a file exceeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// [`Limits::max_pixels`].
    Pixels,
    /// [`Limits::max_stream_bytes`].
    StreamBytes,
    /// [`Limits::max_latent_elements`].
    LatentElements,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::Pixels => "image size (pixels)",
            Limit::StreamBytes => "stream size (bytes)",
            Limit::LatentElements => "latent size (elements)",
        })
    }
}

/// A file declares a size larger than the reader's [`Limits`] allow.
///
/// The file may well be valid: a reader configured with larger limits can read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{limit} {value} exceeds the limit of {allowed} (raise it in `Limits` to read this file)")]
pub struct LimitsExceeded {
    /// The limit that was exceeded.
    pub limit: Limit,
    /// The value the file declares.
    pub value: u64,
    /// The largest value the limit allows.
    pub allowed: u64,
}
