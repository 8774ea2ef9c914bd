//! Rate control: the best rate point whose file fits a bit budget.

use image::{DynamicImage, GenericImageView};

use crate::{Bitstream, Encoder, Error, Limits, Model};

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
    encode_within_bpp_refined(models, image, target_bpp, 0)
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
pub fn encode_within_bpp_refined(
    models: &[Model],
    image: &DynamicImage,
    target_bpp: f64,
    refine_steps: usize,
) -> Result<RateControlled, Error> {
    let (width, height) = image.dimensions();
    let pixels = f64::from(width) * f64::from(height);
    let budget_bytes = (target_bpp * pixels / 8.0).floor();
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

/// `encoder`'s (refining) file of `image` if it fits `budget_bytes`, else `unrefined`, the
/// same model's file without refinement. Refinement may let the `y` stream grow into what
/// `unrefined` leaves of the budget; the header and `z` stay as they are.
///
/// # Errors
/// As [`Encoder::encode`]; [`Error::Container`] if `unrefined` is not a valid file.
pub(crate) fn refine_within(
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
    use super::highest_fitting;

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
