//! Rate control: the best rate point whose file fits a bit budget.

use image::{DynamicImage, GenericImageView};

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
    let budget_bytes = (target_bpp * pixels / 8.0).floor();
    let found = highest_fitting(models.len(), budget_bytes, |index| {
        Encoder::new(&models[index]).encode(image)
    })?;
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
