//! Several observers at once: refinement that asks what classifiers in general keep, rather than
//! what one network keeps (issue "Observers the codec was not trained for").
//!
//! # The objective
//!
//! The observer distortion compares feature maps by their relative squared error and averages
//! the terms over the maps ([`crate::losses`]):
//!
//! ```text
//! L_f = 1/|S| sum_{l in S} |phi_l(x_hat) - phi_l(x)|^2 / (|phi_l(x)|^2 + eps)
//! ```
//!
//! Each term is dimensionless, so maps of different networks can be averaged as they are. An
//! [`Ensemble`] of observers `O_1 .. O_K` returns the maps of every member in turn, and the same
//! loss becomes the mean over members and their layers,
//!
//! ```text
//! L_f(ensemble) = 1/sum_k |S_k| sum_k sum_{l in S_k} (the term of map l of O_k),
//! ```
//!
//! which is the plain mean of the members' own `L_f` when they compare equally many maps (the
//! built-in classifiers do: the distortion's layers are set on each). No weights to tune, and one
//! observer is the ensemble of one.
//!
//! # Invariants
//!
//! * Every member receives the same preprocessed batch (224x224 for the built-in preprocessing):
//!   the members are fully convolutional up to their pooling, and the loss compares a member's
//!   maps of `x` with its own maps of `x_hat` only, so no member needs its native input size.
//! * The order of the maps is the order of the members, then each member's own order: fixed for
//!   an ensemble, as [`Observer::observe_features`] requires.
//! * The ensemble's logits (what a benchmark would classify with) are the mean of the members'
//!   logits, which needs members with the same classes; [`Ensemble::new`] checks nothing about
//!   classes, so [`Observer::observe`] reports members that disagree as an error.

use tch::Tensor;

use super::{Observation, Observer, ObserverError};

/// Several observers acting as one (see the module documentation): their feature maps
/// concatenated, their logits averaged.
#[derive(Debug)]
pub struct Ensemble {
    members: Vec<Box<dyn Observer>>,
}

impl Ensemble {
    /// The ensemble of `members`, in that order.
    ///
    /// # Errors
    /// [`ObserverError::Input`] for no members.
    pub fn new(members: Vec<Box<dyn Observer>>) -> Result<Self, ObserverError> {
        if members.is_empty() {
            return Err(ObserverError::Input(
                "an ensemble needs at least one observer".into(),
            ));
        }
        Ok(Ensemble { members })
    }

    /// The members, in order.
    pub fn members(&self) -> &[Box<dyn Observer>] {
        &self.members
    }

    /// The mean of the members' logits.
    fn mean_logits(&self, logits: Vec<Tensor>) -> Result<Tensor, ObserverError> {
        let first = logits[0].size();
        if let Some(other) = logits.iter().find(|l| l.size() != first) {
            return Err(ObserverError::Input(format!(
                "the observers of an ensemble disagree on their logits: {first:?} and {:?}",
                other.size()
            )));
        }
        Ok(Tensor::f_stack(&logits, 0)?.f_mean_dim(0, false, tch::Kind::Float)?)
    }
}

impl Observer for Ensemble {
    fn observe(&self, preprocessed: &Tensor) -> Result<Observation, ObserverError> {
        let mut logits = Vec::with_capacity(self.members.len());
        let mut features = Vec::new();
        for member in &self.members {
            let observation = member.observe(preprocessed)?;
            logits.push(observation.logits);
            features.extend(observation.features);
        }
        Ok(Observation {
            logits: self.mean_logits(logits)?,
            features,
        })
    }

    fn observe_logits(&self, preprocessed: &Tensor) -> Result<Tensor, ObserverError> {
        let logits = self
            .members
            .iter()
            .map(|m| m.observe_logits(preprocessed))
            .collect::<Result<Vec<_>, _>>()?;
        self.mean_logits(logits)
    }

    /// Each member's maps ([`Observer::observe_features`], so a member without feature maps
    /// contributes its logits), members in order.
    fn observe_features(&self, preprocessed: &Tensor) -> Result<Vec<Tensor>, ObserverError> {
        let mut features = Vec::new();
        for member in &self.members {
            features.extend(member.observe_features(preprocessed)?);
        }
        Ok(features)
    }

    /// The members' names joined by `+` (`efficientnet-lite0+efficientnet-lite2`).
    fn name(&self) -> String {
        let names: Vec<String> = self.members.iter().map(|m| m.name()).collect();
        names.join("+")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// An observer whose one feature map is the input times `gain` and whose logits are the
    /// channel means times `gain`.
    #[derive(Debug)]
    struct Scaled {
        gain: f64,
        maps: usize,
    }

    impl Observer for Scaled {
        fn observe(&self, x: &Tensor) -> Result<Observation, ObserverError> {
            Ok(Observation {
                logits: x.mean_dim(&[2i64, 3][..], false, Kind::Float) * self.gain,
                features: (0..self.maps).map(|_| x * self.gain).collect(),
            })
        }

        fn name(&self) -> String {
            format!("x{}", self.gain)
        }
    }

    fn scaled(gain: f64, maps: usize) -> Box<dyn Observer> {
        Box::new(Scaled { gain, maps })
    }

    #[test]
    fn maps_in_member_order_and_mean_logits() {
        let x = Tensor::ones([2, 3, 4, 4], (Kind::Float, Device::Cpu));
        let ensemble = Ensemble::new(vec![scaled(1.0, 2), scaled(3.0, 1)]).expect("two members");
        let maps = ensemble.observe_features(&x).expect("features");
        let firsts: Vec<f64> = maps.iter().map(|m| m.double_value(&[0, 0, 0, 0])).collect();
        assert_eq!(firsts, [1.0, 1.0, 3.0]);
        let logits = ensemble.observe_logits(&x).expect("logits");
        assert_eq!(logits.size(), [2, 3]);
        assert_eq!(logits.double_value(&[1, 2]), 2.0);
        let observation = ensemble.observe(&x).expect("observation");
        assert_eq!(observation.features.len(), 3);
        assert!(observation.logits.equal(&logits));
        assert_eq!(ensemble.name(), "x1+x3");
    }

    #[test]
    fn an_empty_ensemble_is_refused() {
        assert!(matches!(
            Ensemble::new(Vec::new()),
            Err(ObserverError::Input(_))
        ));
    }
}
