//! The classical codecs ocular is compared with: JPEG (4:2:0) and lossy WebP.

use std::fmt;
use std::str::FromStr;

use image::{DynamicImage, ImageFormat, RgbImage, RgbaImage};

use super::EvalError;

/// A classical codec that ocular is compared with at matched bpp.
///
/// Parsed from `jpeg` (or `jpg`) and `webp`, in any case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Baseline {
    /// Baseline sequential JPEG (`jpeg-encoder`, IJG quantisation tables and quality scale):
    /// 4:2:0 chroma subsampling at every quality, the standard Huffman tables and one interleaved
    /// scan, as libjpeg's `cjpeg` and PIL write by default. Decoded by the `image` crate.
    Jpeg,
    /// Lossy WebP (VP8, 4:2:0) with libwebp's default settings other than quality (method 4, no
    /// sharp YUV); encoded and decoded by libwebp.
    Webp,
}

/// WebP's largest width and height.
const WEBP_MAX_SIDE: u32 = 16383;

impl Baseline {
    /// Both baselines.
    pub const ALL: [Baseline; 2] = [Baseline::Jpeg, Baseline::Webp];

    /// `jpeg` or `webp`: the codec name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Baseline::Jpeg => "jpeg",
            Baseline::Webp => "webp",
        }
    }

    /// Encodes `image` at `quality` (1 = smallest file, 100 = best).
    ///
    /// # Errors
    /// [`EvalError::Baseline`] for a quality outside 1..=100, an empty image, one too large for
    /// the format (JPEG: 65535 pixels a side, WebP: 16383), or a failure of the encoder.
    pub fn encode(self, image: &RgbImage, quality: u8) -> Result<Vec<u8>, EvalError> {
        let fail = |message: String| EvalError::Baseline {
            codec: self,
            image: None,
            message,
        };
        if !(1..=100).contains(&quality) {
            return Err(fail(format!("quality {quality} is outside 1..=100")));
        }
        let (width, height) = image.dimensions();
        if width == 0 || height == 0 {
            return Err(fail(format!("the image is empty ({width}x{height})")));
        }
        match self {
            Baseline::Jpeg => {
                let too_large = || {
                    fail(format!(
                        "{width}x{height} is too large for JPEG (65535 a side)"
                    ))
                };
                let w = u16::try_from(width).map_err(|_| too_large())?;
                let h = u16::try_from(height).map_err(|_| too_large())?;
                let mut bytes = Vec::new();
                let mut encoder = jpeg_encoder::Encoder::new(&mut bytes, quality);
                // jpeg-encoder's default is 4:4:4 from quality 90 up: ask for 4:2:0 explicitly.
                encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_2_0);
                // Optimised tables would save a few percent, but jpeg-encoder then writes one
                // scan per component, which the image crate's decoder (zune-jpeg 0.5.15)
                // decodes wrongly for 4:2:0 (green images; libjpeg-turbo decodes them fine).
                encoder.set_optimized_huffman_tables(false);
                encoder
                    .encode(image.as_raw(), w, h, jpeg_encoder::ColorType::Rgb)
                    .map_err(|e| fail(e.to_string()))?;
                Ok(bytes)
            }
            Baseline::Webp => {
                if width > WEBP_MAX_SIDE || height > WEBP_MAX_SIDE {
                    return Err(fail(format!(
                        "{width}x{height} is too large for WebP ({WEBP_MAX_SIDE} a side)"
                    )));
                }
                webp::Encoder::from_rgb(image.as_raw(), width, height)
                    .encode_simple(false, f32::from(quality))
                    .map(|memory| memory.to_vec())
                    .map_err(|e| fail(format!("libwebp: {e:?}")))
            }
        }
    }

    /// Decodes a file this baseline made into 8-bit RGB.
    ///
    /// # Errors
    /// [`EvalError::Baseline`] if the bytes are not a decodable file of this format.
    pub fn decode(self, bytes: &[u8]) -> Result<RgbImage, EvalError> {
        let fail = |message: String| EvalError::Baseline {
            codec: self,
            image: None,
            message,
        };
        match self {
            Baseline::Jpeg => image::load_from_memory_with_format(bytes, ImageFormat::Jpeg)
                .map(|decoded| decoded.to_rgb8())
                .map_err(|e| fail(e.to_string())),
            Baseline::Webp => {
                let decoded = webp::Decoder::new(bytes)
                    .decode()
                    .ok_or_else(|| fail("libwebp cannot decode the file".into()))?;
                let (width, height) = (decoded.width(), decoded.height());
                let pixels = decoded.to_vec();
                let wrong_size = || fail("libwebp returned a buffer of the wrong size".into());
                if decoded.is_alpha() {
                    let rgba = RgbaImage::from_raw(width, height, pixels).ok_or_else(wrong_size)?;
                    Ok(DynamicImage::ImageRgba8(rgba).to_rgb8())
                } else {
                    RgbImage::from_raw(width, height, pixels).ok_or_else(wrong_size)
                }
            }
        }
    }

    /// Checks that a file is of the promised kind: a baseline (SOF0) JPEG whose luma is sampled
    /// 2x2 and both chroma components 1x1 (4:2:0), coded in one interleaved scan (see
    /// [`Self::encode`]), or a lossy (VP8, not VP8L) WebP.
    pub(crate) fn verify(self, bytes: &[u8]) -> Result<(), EvalError> {
        let fail = |message: String| EvalError::Baseline {
            codec: self,
            image: None,
            message,
        };
        match self {
            Baseline::Jpeg => match jpeg_layout(bytes) {
                Some(layout)
                    if layout.frame == 0xC0
                        && layout.sampling == [(2, 2), (1, 1), (1, 1)]
                        && layout.first_scan_components == 3 =>
                {
                    Ok(())
                }
                Some(layout) => Err(fail(format!(
                    "the encoder made {layout:?}, not a baseline frame (SOF0 = 0xC0) sampled 4:2:0 \
                     (luma 2x2, chroma 1x1) in one interleaved scan"
                ))),
                None => Err(fail(
                    "the encoder made a file without frame or scan header".into(),
                )),
            },
            Baseline::Webp => match webp::BitstreamFeatures::new(bytes).and_then(|f| f.format()) {
                Some(webp::BitstreamFormat::Lossy) => Ok(()),
                _ => Err(fail("libwebp made a file that is not lossy WebP".into())),
            },
        }
    }
}

/// What [`Baseline::verify`] checks in a JPEG file.
#[derive(Debug)]
struct JpegLayout {
    /// The frame marker: 0xC0 (SOF0) for baseline sequential.
    frame: u8,
    /// (horizontal, vertical) sampling factors of each component.
    sampling: Vec<(u8, u8)>,
    /// Number of components in the first scan.
    first_scan_components: u8,
}

/// The frame type, sampling factors and first scan's component count of a JPEG file, or `None`
/// if it has no frame header before its first scan.
fn jpeg_layout(bytes: &[u8]) -> Option<JpegLayout> {
    if bytes.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut frame = None;
    let mut at = 2;
    loop {
        if *bytes.get(at)? != 0xFF {
            return None;
        }
        let marker = *bytes.get(at + 1)?;
        if marker == 0xFF {
            at += 1; // fill byte
            continue;
        }
        let length = usize::from(u16::from_be_bytes([
            *bytes.get(at + 2)?,
            *bytes.get(at + 3)?,
        ]));
        let segment = bytes.get(at + 4..(at + 2 + length).max(at + 4))?;
        // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
        if (0xC0..=0xCF).contains(&marker) && ![0xC4, 0xC8, 0xCC].contains(&marker) {
            // precision (1), height (2), width (2), component count (1), then 3 bytes each.
            let count = usize::from(*segment.get(5)?);
            let sampling = segment
                .get(6..6 + 3 * count)?
                .chunks_exact(3)
                .map(|c| (c[1] >> 4, c[1] & 0x0F))
                .collect();
            frame = Some((marker, sampling));
        } else if marker == 0xDA {
            let (frame, sampling) = frame?;
            return Some(JpegLayout {
                frame,
                sampling,
                first_scan_components: *segment.first()?,
            });
        } else if marker == 0xD9 {
            return None;
        }
        at += 2 + length;
    }
}

impl fmt::Display for Baseline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Baseline {
    type Err = EvalError;

    fn from_str(s: &str) -> Result<Self, EvalError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "jpeg" | "jpg" => Ok(Baseline::Jpeg),
            "webp" => Ok(Baseline::Webp),
            _ => Err(EvalError::UnknownBaseline(s.to_string())),
        }
    }
}
