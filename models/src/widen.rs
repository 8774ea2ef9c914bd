//! Widening a trained network: its hidden layers' `N` channels (and `z`'s) become `N' >= N`, its
//! latent's `M` channels of `y` become `M' >= M`, and the wider network starts as the function the
//! trained one computes.
//!
//! The half-width network (N = 64, M = 96) saturates at high rates: on Kodak it is 2.7 dB under
//! WebP at 1 bpp and 0.4 dB at 0.25 (docs/results.md), and published hyperpriors keep 128–192
//! hidden and 192 latent channels. Training a wider network from scratch would throw away the
//! CPU-hours already in the narrow one, so `train --init` widens it instead.
//!
//! # The map
//!
//! Every variable whose shape depends on `N` or `M` is a convolution weight `W` (or its bias), a
//! GDN's `beta` / `gamma`, or a density parameter of `z`'s entropy bottleneck, with an output
//! dimension `o` (the bottleneck's channel) and, for weights and `gamma`, an input dimension `i`.
//! Writing `W'` for the wider variable and `old` for the index ranges the narrow network had:
//!
//! ```text
//! W'[o ∈ old, i ∈ old] = W[o, i]          the trained weights, unchanged
//! W'[o ∈ old, i ∉ old] = 0                new inputs reach no trained output
//! W'[o ∉ old, ·]       = fresh init        new outputs: new units, random
//! ```
//!
//! The last layer of the hyper-synthesis, whose outputs are the scales (channels `0..M`) and the
//! means (`M..2M`) of `y`, is mapped half by half, so the trained scale and mean of channel `c`
//! stay at `c` and `M' + c`. A GDN's `gamma` is stored reparametrised (`v = sqrt(gamma +
//! pedestal)`, `crate::layers`); a stored 0 is `gamma = 0`, so a trained unit's normalisation
//! ignores the new units.
//!
//! New channels of `z` are the exception to "fresh init": a fresh density of the entropy
//! bottleneck spreads over about ±10 and learns slowly, so random new channels of `z` would cost
//! several bits each (measured: +0.066 bpp on Kodak at every rate, 1,500 steps after widening
//! N from 64 to 128). They start *silent* instead: the last hyper-analysis layer's new outputs
//! get zero weights and the bias `median_d`, and their densities (and quantiles) are copies of a
//! donor channel `d`'s, the trained channel whose tail quantiles lie closest together:
//!
//! ```text
//! z'[c ∉ old] = median_d,    p'_c = p_d,    rate of each ≈ -log2 p_d(median_d ± ½)
//! ```
//!
//! Training's noise on `z` (`z + U(-½, ½)`) reaches the hyper-synthesis through the new inputs'
//! zero weights, whose gradients are then not zero, so a silent channel comes into use when it
//! pays for its bits.
//!
//! # Invariant
//!
//! For every image, the widened network's reconstruction, the likelihoods of `z`'s first `N`
//! channels and those of `y`'s first `M` channels are the narrow network's, and every new
//! channel of `z` is the donor's median (the test below pins it): every new unit (a hidden
//! channel, a channel of `z` or of `y`) reaches the trained units only through zero weights. What the new units add is only the rate of their own channels of
//! `z` and `y`, which training then trades for the distortion they can remove. The zero weights
//! still receive gradients (from the new units' values), so the new units come into use; the
//! new units of `g_a` are random so those values are not all equal.

use std::collections::HashMap;

use tch::{nn, Tensor};

use crate::hyperprior::{channel_dims, ChannelDims};
use crate::ModelError;

/// Copies `source`'s variables into `target`, a network of the same shape but for more hidden
/// channels or more channels of `y`, by the map of the module doc. Variables only `target` has
/// (the observer-mix conditioning of a network for every mix) keep their initial values.
///
/// # Errors
/// [`ModelError::InvalidModel`] if a variable of `source` is missing in `target` or is larger in
/// some dimension than `target`'s.
pub(crate) fn widen_into(
    source: &nn::VarStore,
    target: &mut nn::VarStore,
) -> Result<(), ModelError> {
    let source = source.variables();
    let target_variables = target.variables();
    if let Some(name) = source
        .keys()
        .find(|name| !target_variables.contains_key(*name))
    {
        return Err(ModelError::InvalidModel(format!(
            "tensor {name} of the narrower network has no place in the wider one"
        )));
    }
    tch::no_grad(|| {
        for (name, mut wide) in target_variables.iter().map(|(n, t)| (n, t.shallow_clone())) {
            if let Some(narrow) = source.get(name) {
                widen_tensor(name, narrow, &mut wide)?;
            }
        }
        silence_new_z(&source, &target_variables)
    })
}

/// The names of the variables [`silence_new_z`] sets: the last hyper-analysis layer (whose
/// outputs are `z`) and the entropy bottleneck's per-channel density and quantiles.
const Z_WEIGHT: &str = "h_a.4.weight";
const Z_BIAS: &str = "h_a.4.bias";
const Z_DENSITY: &str = "entropy_bottleneck.";
const Z_QUANTILES: &str = "entropy_bottleneck.quantiles";

/// The donor of the module doc: the channel whose tail quantiles lie closest together, and its
/// median, from the entropy bottleneck's `quantiles` (C, 1, 3: lower tail, median, upper tail).
fn quietest_channel(quantiles: &Tensor) -> (i64, f64) {
    let spread = quantiles.select(2, 2) - quantiles.select(2, 0);
    let donor = spread.flatten(0, -1).argmin(0, false).int64_value(&[]);
    (donor, quantiles.double_value(&[donor, 0, 1]))
}

/// Makes the new channels of `z` silent, by the module doc, if `z` was widened.
fn silence_new_z(
    source: &HashMap<String, Tensor>,
    target: &HashMap<String, Tensor>,
) -> Result<(), ModelError> {
    let (Some(quantiles), Some(wide_quantiles)) =
        (source.get(Z_QUANTILES), target.get(Z_QUANTILES))
    else {
        return Ok(());
    };
    let (old, new) = (quantiles.size()[0], wide_quantiles.size()[0]);
    if new == old {
        return Ok(());
    }
    let (donor, median) = quietest_channel(quantiles);
    for (name, wide) in target {
        let added = || wide.narrow(0, old, new - old);
        if name.starts_with(Z_DENSITY) {
            let donor_row = source
                .get(name)
                .ok_or_else(|| ModelError::InvalidModel(format!("no tensor {name} to copy")))?
                .narrow(0, donor, 1);
            added().copy_(&donor_row);
        } else if name == Z_WEIGHT {
            let _ = added().zero_();
        } else if name == Z_BIAS {
            let _ = added().fill_(median);
        }
    }
    Ok(())
}

/// Writes `narrow` into `wide` by the map of the module doc, for the variable `name`.
fn widen_tensor(name: &str, narrow: &Tensor, wide: &mut Tensor) -> Result<(), ModelError> {
    let (old, new) = (narrow.size(), wide.size());
    if old.len() != new.len() || old.iter().zip(&new).any(|(o, n)| o > n) {
        return Err(ModelError::InvalidModel(format!(
            "tensor {name} has shape {old:?}, which does not fit in the wider network's {new:?}"
        )));
    }
    let ChannelDims { output, halves } = channel_dims(name);
    // The halves of the hyper-synthesis' output, as a leading dimension of 2.
    let (narrow, wide, output) = if halves {
        let split = |shape: &[i64]| {
            let mut split = vec![2, shape[0] / 2];
            split.extend_from_slice(&shape[1..]);
            split
        };
        (
            narrow.view(split(&old).as_slice()),
            wide.view(split(&new).as_slice()),
            1,
        )
    } else {
        (narrow.shallow_clone(), wide.shallow_clone(), output)
    };
    let (old, new) = (narrow.size(), wide.size());
    let mut block = wide.shallow_clone();
    for (dim, &size) in old.iter().enumerate() {
        block = block.narrow(dim as i64, 0, size);
    }
    block.copy_(&narrow);
    let trained_outputs = wide.narrow(output as i64, 0, old[output]);
    for dim in (0..new.len()).filter(|&d| d != output && new[d] > old[d]) {
        let _ = trained_outputs
            .narrow(dim as i64, old[dim], new[dim] - old[dim])
            .zero_();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hyperprior::MeanScaleHyperprior;
    use crate::HyperpriorConfig;
    use tch::{Device, Kind};

    fn network(config: HyperpriorConfig, seed: i64) -> (nn::VarStore, MeanScaleHyperprior) {
        tch::manual_seed(seed);
        let variables = nn::VarStore::new(Device::Cpu);
        let network = MeanScaleHyperprior::new(&variables.root(), config);
        (variables, network)
    }

    fn max_difference(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn the_widened_network_computes_what_the_narrow_one_did() {
        let (narrow_variables, narrow) = network(HyperpriorConfig { n: 8, m: 12 }, 1);
        let (mut wide_variables, wide) = network(HyperpriorConfig { n: 12, m: 20 }, 2);
        widen_into(&narrow_variables, &mut wide_variables).unwrap();
        tch::manual_seed(3);
        let x = Tensor::rand([2, 3, 64, 96], (Kind::Float, Device::Cpu));
        let (a, b) = tch::no_grad(|| (narrow.forward(&x, false), wide.forward(&x, false)));
        assert!(max_difference(&a.x_hat, &b.x_hat) < 1e-5);
        let trained_z = b.z_likelihoods.narrow(1, 0, 8);
        assert!(max_difference(&a.z_likelihoods, &trained_z) < 1e-6);
        // The new channels of z are silent: the donor's median everywhere.
        let (_, median) = quietest_channel(&narrow_variables.variables()[Z_QUANTILES]);
        let new_z = tch::no_grad(|| wide.hyper_analysis(&wide.analysis(&x))).narrow(1, 8, 4);
        assert!((new_z - median).abs().max().double_value(&[]) < 1e-6);
        let trained = b.y_likelihoods.narrow(1, 0, 12);
        assert!(max_difference(&a.y_likelihoods, &trained) < 1e-6);
        // The new channels are in use: their values differ across the image.
        let new_y = tch::no_grad(|| wide.analysis(&x)).narrow(1, 12, 8);
        assert!(new_y.std(true).double_value(&[]) > 1e-3);
    }

    #[test]
    fn a_network_that_does_not_fit_is_refused() {
        let (wide_variables, _) = network(HyperpriorConfig { n: 8, m: 20 }, 1);
        let (mut narrow_variables, _) = network(HyperpriorConfig { n: 8, m: 12 }, 2);
        assert!(matches!(
            widen_into(&wide_variables, &mut narrow_variables),
            Err(ModelError::InvalidModel(_))
        ));
    }
}
