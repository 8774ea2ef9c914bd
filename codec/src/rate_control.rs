//! Rate control: the best rate point whose file fits a bit budget — among a family of
//! fixed-rate models ([`encode_within_bpp`]), or along the continuous quality of one
//! variable-rate model ([`encode_to_bpp`]).

use image::{DynamicImage, GenericImageView};

#[cfg(feature = "torch")]
use crate::{Bitstream, Limits};
use crate::{Encoder, Error, Model};

/// The outcome of [`encode_within_bpp`].
#[derive(Debug)]
pub struct RateControlled {
    /// The `.ocu` file.
    pub bytes: Vec<u8>,
    /// Index into the models given of the one that made it.
    pub model_index: usize,
    /// Its bits per pixel (whole file, header included).
    pub bpp: f64,
}

/// The outcome of [`encode_to_bpp`].
#[derive(Debug)]
pub struct ExactRate {
    /// The `.ocu` file: at most the target, and at least [`EXACT_RATE_TOLERANCE`] of it
    /// unless the search ran out of encodes ([`MAX_RATE_SEARCH_ENCODES`]).
    pub bytes: Vec<u8>,
    /// The quality that made it.
    pub quality: f32,
    /// Its bits per pixel (whole file, header included).
    pub bpp: f64,
    /// Encodes the search spent.
    pub encodes: usize,
}

/// [`encode_to_bpp`] aims for a file within `[EXACT_RATE_TOLERANCE · target, target]`.
pub const EXACT_RATE_TOLERANCE: f64 = 0.97;

/// The most encodes [`encode_to_bpp`] spends (the two ends of the range included).
pub const MAX_RATE_SEARCH_ENCODES: usize = 14;

/// Encodes `image` with the variable-rate `model` at the quality whose file is at most
/// `target_bpp` (whole file) and at least [`EXACT_RATE_TOLERANCE`] of it.
///
/// The file size grows with the quality, about exponentially; the search brackets the target
/// between the two ends of the model's range and narrows the bracket by interpolating
/// `log(bytes)` linearly in the quality (regula falsi, each new point kept at least 5% of the
/// bracket from its ends), aiming at the middle of the window. It returns the largest file
/// found within the target: after [`MAX_RATE_SEARCH_ENCODES`] encodes it may be below the
/// window, never above the target.
///
/// # Errors
/// [`Error::FixedRateModel`] for a fixed-rate model; [`Error::BppOutOfReach`] (with the
/// bpp of both ends) when the target is below the lowest quality's file or above the highest
/// one's; any error of [`Encoder::encode`].
pub fn encode_to_bpp(
    model: &Model,
    image: &DynamicImage,
    target_bpp: f64,
) -> Result<ExactRate, Error> {
    Encoder::new(model).encode_to_bpp(image, target_bpp)
}

impl Encoder<'_> {
    /// [`encode_to_bpp`] with this encoder's limits (and refinement, if any): the quality of
    /// its variable-rate model whose file is within `[0.97 T, T]` for `T = target_bpp`.
    ///
    /// # Errors
    /// As [`encode_to_bpp`].
    pub fn encode_to_bpp(&self, image: &DynamicImage, target_bpp: f64) -> Result<ExactRate, Error> {
        search_quality(self, image, target_bpp)
    }
}

/// The search of [`encode_to_bpp`], encoding with `encoder` at each quality it tries.
fn search_quality(
    encoder: &Encoder<'_>,
    image: &DynamicImage,
    target_bpp: f64,
) -> Result<ExactRate, Error> {
    let model = encoder.model();
    let (min, max) = model.quality_range().ok_or_else(|| Error::FixedRateModel {
        model: model.name().to_string(),
    })?;
    let (width, height) = image.dimensions();
    let pixels = f64::from(width) * f64::from(height);
    let budget = byte_budget(target_bpp, pixels);
    // The analysis transform runs once; each quality tried only codes `y` again.
    let sweep = encoder.sweep(image)?;
    let encode =
        |quality: f32| -> Result<(f32, Vec<u8>), Error> { Ok((quality, sweep.encode(quality)?)) };
    let (mut low, mut high) = (encode(min)?, encode(max)?);
    let mut encodes = 2;
    let bpp = |bytes: &[u8]| bytes.len() as f64 * 8.0 / pixels;
    if low.1.len() as f64 > budget || (high.1.len() as f64) < EXACT_RATE_TOLERANCE * budget {
        return Err(Error::BppOutOfReach {
            model: model.name().to_string(),
            target_bpp,
            min_bpp: bpp(&low.1),
            max_bpp: bpp(&high.1),
        });
    }
    // Invariant: low fits the budget, high does not (or is the top of the range and fits).
    while high.1.len() as f64 > budget
        && (low.1.len() as f64) < EXACT_RATE_TOLERANCE * budget
        && encodes < MAX_RATE_SEARCH_ENCODES
    {
        let aim = budget * (1.0 + EXACT_RATE_TOLERANCE) / 2.0;
        let next = encode(next_quality(&low, &high, aim))?;
        encodes += 1;
        if next.1.len() as f64 <= budget {
            low = next;
        } else {
            high = next;
        }
    }
    let (quality, bytes) = if high.1.len() as f64 <= budget {
        high
    } else {
        low
    };
    Ok(ExactRate {
        bpp: bpp(&bytes),
        quality,
        bytes,
        encodes,
    })
}

/// Regula falsi on `log(bytes)` against the quality, kept 5% of the bracket inside it.
fn next_quality(low: &(f32, Vec<u8>), high: &(f32, Vec<u8>), aim: f64) -> f32 {
    let log_size = |bytes: &[u8]| (bytes.len().max(1) as f64).ln();
    let (q_low, q_high) = (f64::from(low.0), f64::from(high.0));
    let (s_low, s_high) = (log_size(&low.1), log_size(&high.1));
    let t = if s_high > s_low {
        (aim.ln() - s_low) / (s_high - s_low)
    } else {
        0.5
    };
    (q_low + t.clamp(0.05, 0.95) * (q_high - q_low)) as f32
}

/// Encodes `image` with the model that spends the most bits without exceeding `target_bpp`
/// (whole file, header included).
///
/// `models` must be ordered by increasing rate (e.g. by quality); the search assumes file size
/// grows along that order, which holds for a family trained with increasing lambda, and encodes
/// about `log2(models.len()) + 1` times.
///
/// # Errors
/// [`Error::RateTargetUnreachable`] if even the first model's file exceeds the target (or no model
/// is given), and any error of [`Encoder::encode`].
pub fn encode_within_bpp(
    models: &[Model],
    image: &DynamicImage,
    target_bpp: f64,
) -> Result<RateControlled, Error> {
    let (width, height) = image.dimensions();
    let pixels = f64::from(width) * f64::from(height);
    let budget_bytes = byte_budget(target_bpp, pixels);
    let found = highest_fitting(models.len(), budget_bytes, |index| {
        Encoder::new(&models[index]).encode(image)
    })?;
    rate_controlled(found, pixels, target_bpp)
}

/// The most bytes a file of `pixels` pixels may have at `target_bpp`: the largest `n` with
/// `n * 8 / pixels <= target_bpp`, in the very arithmetic that reports a file's bpp. (The
/// floor of `target_bpp * pixels / 8` alone can land one byte short: a target computed as
/// `n * 8 / pixels` may come back as `n - 1e-13` bytes.)
fn byte_budget(target_bpp: f64, pixels: f64) -> f64 {
    let floor = (target_bpp * pixels / 8.0).floor();
    if (floor + 1.0) * 8.0 / pixels <= target_bpp {
        floor + 1.0
    } else {
        floor
    }
}

/// The outcome of a search: the file found (if any) with its bits per pixel.
///
/// # Errors
/// [`Error::RateTargetUnreachable`] when nothing was found.
fn rate_controlled(
    found: Option<(usize, Vec<u8>)>,
    pixels: f64,
    target_bpp: f64,
) -> Result<RateControlled, Error> {
    match found {
        Some((model_index, bytes)) => {
            let bpp = bytes.len() as f64 * 8.0 / pixels;
            Ok(RateControlled {
                bytes,
                model_index,
                bpp,
            })
        }
        None => Err(Error::RateTargetUnreachable { target_bpp }),
    }
}

/// [`encode_within_bpp`], then the chosen model's file made again with
/// [`Encoder::with_refinement`]`(refine_steps)` under the bytes the target leaves, kept if it
/// fits. When even the lowest rate point's plain file is over the target, its refinement under
/// that budget is tried too: trading distortion for rate, it often fits where the plain file
/// did not. The search itself runs unrefined: refining costs far more than encoding.
///
/// # Errors
/// As [`encode_within_bpp`], and [`Error::ObserverUnavailable`] when refining an observer
/// model without its classifier.
#[cfg(feature = "torch")]
pub fn encode_within_bpp_refined(
    models: &[Model],
    image: &DynamicImage,
    target_bpp: f64,
    refine_steps: usize,
) -> Result<RateControlled, Error> {
    let (width, height) = image.dimensions();
    let pixels = f64::from(width) * f64::from(height);
    let budget_bytes = byte_budget(target_bpp, pixels);
    // When nothing fits, the search has ended on the lowest rate point: keep its file.
    let mut lowest = None;
    let found = highest_fitting(models.len(), budget_bytes, |index| {
        let bytes = Encoder::new(&models[index]).encode(image)?;
        if index == 0 {
            lowest = Some(bytes.clone());
        }
        Ok(bytes)
    })?;
    let found = match found {
        Some((model_index, bytes)) if refine_steps > 0 => {
            let encoder = Encoder::new(&models[model_index]).with_refinement(refine_steps);
            let refined = refine_within(&encoder, image, bytes, budget_bytes)?;
            Some((model_index, refined))
        }
        // Even the lowest rate point is over the target (`lowest` holds its file whenever there
        // is a model): refinement under the budget trades distortion for rate and may still
        // bring it within.
        None if refine_steps > 0 => match lowest {
            Some(unrefined) => {
                let encoder = Encoder::new(&models[0]).with_refinement(refine_steps);
                let bytes = refine_within(&encoder, image, unrefined, budget_bytes)?;
                (bytes.len() as f64 <= budget_bytes).then_some((0, bytes))
            }
            None => None,
        },
        other => other,
    };
    rate_controlled(found, pixels, target_bpp)
}

/// `encoder`'s (refining) file of `image` if it fits `budget_bytes`, else `unrefined`, the
/// same model's file without refinement. Refinement may let the `y` stream grow into what
/// `unrefined` leaves of the budget; the header and `z` stay as they are.
///
/// # Errors
/// As [`Encoder::encode`]; [`Error::Container`] if `unrefined` is not a valid file.
#[cfg(feature = "torch")]
pub fn refine_within(
    encoder: &Encoder<'_>,
    image: &DynamicImage,
    unrefined: Vec<u8>,
    budget_bytes: f64,
) -> Result<Vec<u8>, Error> {
    let y_bytes = Bitstream::parse(&unrefined, &Limits::default())?
        .y_stream
        .len();
    // Two bytes of slack for the stream-length fields growing.
    let max_y_bytes = (budget_bytes as usize + y_bytes).saturating_sub(unrefined.len() + 2);
    let refined = encoder.encode_with_y_budget(image, Some(max_y_bytes))?;
    Ok(if refined.len() as f64 <= budget_bytes {
        refined
    } else {
        unrefined
    })
}

/// Binary search for the highest `index < count` whose output fits `budget_bytes`, assuming output
/// sizes grow with the index. Returns that index and its output, or `None` if index 0 does not fit.
fn highest_fitting(
    count: usize,
    budget_bytes: f64,
    mut encode: impl FnMut(usize) -> Result<Vec<u8>, Error>,
) -> Result<Option<(usize, Vec<u8>)>, Error> {
    // Invariant: every index below `low` fits (best holds the highest of them); every index at or
    // above `high` does not.
    let (mut low, mut high) = (0, count);
    let mut best = None;
    while low < high {
        let middle = low + (high - low) / 2;
        let bytes = encode(middle)?;
        if bytes.len() as f64 <= budget_bytes {
            best = Some((middle, bytes));
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::{byte_budget, highest_fitting, next_quality};

    /// A target that is some file's exact bpp admits that file, whatever the rounding of
    /// `n * 8 / pixels`; a hair less does not.
    #[test]
    fn a_files_own_bpp_is_a_budget_it_fits() {
        for pixels in [6402.0, 97.0 * 66.0 + 1.0, 15.0, 768.0 * 512.0] {
            for n in 1..3000u32 {
                let n = f64::from(n);
                let target: f64 = n * 8.0 / pixels;
                assert_eq!(byte_budget(target, pixels), n, "{n} bytes, {pixels} pixels");
                let under = target * (1.0 - 1e-9);
                assert_eq!(byte_budget(under, pixels), n - 1.0);
            }
        }
    }

    #[test]
    fn interpolation_stays_inside_the_bracket() {
        let low = (2.0, vec![0; 1000]);
        let high = (6.0, vec![0; 4000]);
        // log-linear: 2000 bytes is half-way in log(bytes).
        let q = next_quality(&low, &high, 2000.0);
        assert!((q - 4.0).abs() < 1e-4, "{q}");
        assert!((next_quality(&low, &high, 10.0) - 2.2).abs() < 1e-4);
        assert!((next_quality(&low, &high, 1e9) - 5.8).abs() < 1e-4);
        let flat = (6.0, vec![0; 1000]);
        assert!((next_quality(&low, &flat, 1000.0) - 4.0).abs() < 1e-4);
    }

    fn search(sizes: &[usize], budget: f64) -> (Option<usize>, usize) {
        let mut calls = 0;
        let found = highest_fitting(sizes.len(), budget, |i| {
            calls += 1;
            Ok(vec![0; sizes[i]])
        })
        .expect("no encoder error");
        (
            found.map(|(i, bytes)| {
                assert_eq!(bytes.len(), sizes[i]);
                i
            }),
            calls,
        )
    }

    #[test]
    fn finds_the_largest_output_within_budget() {
        let sizes = [100, 180, 250, 400, 700, 1200];
        assert_eq!(search(&sizes, 99.0).0, None);
        assert_eq!(search(&sizes, 100.0).0, Some(0));
        assert_eq!(search(&sizes, 399.9).0, Some(2));
        assert_eq!(search(&sizes, 400.0).0, Some(3));
        assert_eq!(search(&sizes, 1e9).0, Some(5));
        assert_eq!(search(&[], 1e9).0, None);
    }

    #[test]
    fn encodes_logarithmically_often() {
        let sizes: Vec<usize> = (1..=8).map(|q| q * 100).collect();
        for budget in [50.0, 350.0, 800.0, 1e6] {
            assert!(search(&sizes, budget).1 <= 4, "budget {budget}");
        }
    }
}
