//! The classifiers that judge the decoded crops: the built-in EfficientNet-Lite0 (the observer
//! the codec is trained for), EfficientNet-Lite1 and -Lite2 (never used in training) and users'
//! TorchScript classifiers.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ocular_models::observer::{
    load_observer, normalize, resize_square, top_k, weights_path, Classifier, Observer,
    ObserverError, Variant,
};
use tch::Tensor;

use super::{BenchError, CROP_SIZE};

/// The judges of `ocular bench imagenet` when none are named: Lite0 and Lite1.
pub const DEFAULT_JUDGES: &str = "lite0,lite1";

/// A judge as named on a command line: `lite0`, `lite1`, `lite2` or `torchscript:FILE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JudgeSpec {
    /// A built-in EfficientNet-Lite network (`lite0`, `lite1`, `lite2`).
    Builtin(Variant),
    /// A user's TorchScript classifier with the observer contract (`docs/observer.md`), given
    /// the 224x224 crops.
    TorchScript(PathBuf),
}

impl JudgeSpec {
    /// The judge's name in reports: `lite0`, `lite1`, `lite2`, or the TorchScript file's stem.
    pub fn name(&self) -> String {
        match self {
            JudgeSpec::Builtin(variant) => variant.short_name().into(),
            JudgeSpec::TorchScript(path) => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }

    /// Parses a comma-separated list of judges, e.g. `lite0,lite1,torchscript:resnet.pt`.
    ///
    /// # Errors
    /// [`BenchError::UnknownJudge`] for an entry that is none of the forms,
    /// [`BenchError::Config`] for an empty list or two judges of the same name.
    pub fn parse_list(text: &str) -> Result<Vec<JudgeSpec>, BenchError> {
        let specs = text
            .split(',')
            .map(str::parse)
            .collect::<Result<Vec<JudgeSpec>, _>>()?;
        check_names(specs.iter().map(JudgeSpec::name))?;
        Ok(specs)
    }
}

impl fmt::Display for JudgeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JudgeSpec::Builtin(_) => f.write_str(&self.name()),
            JudgeSpec::TorchScript(path) => write!(f, "torchscript:{}", path.display()),
        }
    }
}

impl FromStr for JudgeSpec {
    type Err = BenchError;

    /// `lite0`, `lite1`, `lite2` (any case) or `torchscript:FILE`.
    fn from_str(s: &str) -> Result<Self, BenchError> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("torchscript:") {
            let path = path.trim();
            if path.is_empty() {
                return Err(BenchError::UnknownJudge(s.to_string()));
            }
            return Ok(JudgeSpec::TorchScript(PathBuf::from(path)));
        }
        Variant::from_short_name(s)
            .map(JudgeSpec::Builtin)
            .ok_or_else(|| BenchError::UnknownJudge(s.to_string()))
    }
}

/// Checks judge names: at least one, none empty, none holding `,`, `"`, `[`, `]` or a line
/// break (they name CSV columns), no name twice.
fn check_names(names: impl IntoIterator<Item = String>) -> Result<(), BenchError> {
    let mut seen: Vec<String> = Vec::new();
    for name in names {
        if name.is_empty() || name.contains([',', '"', '[', ']', '\n', '\r']) {
            return Err(BenchError::Config(format!(
                "judge name '{name}' is empty or has , \" [ ] or a line break"
            )));
        }
        if seen.contains(&name) {
            return Err(BenchError::Config(format!("judge {name} is given twice")));
        }
        seen.push(name);
    }
    if seen.is_empty() {
        return Err(BenchError::Config("no judges".into()));
    }
    Ok(())
}

/// Checks the judges of a run as [`JudgeSpec::parse_list`] checks names.
pub(super) fn check_judges(judges: &[Judge]) -> Result<(), BenchError> {
    check_names(judges.iter().map(|j| j.name.clone()))
}

/// A classifier judging the decoded crops, with its name in reports and the side it resizes
/// the 224x224 crops to (antialiased bicubic, [`resize_square`]) before normalising them.
#[derive(Debug)]
pub struct Judge {
    name: String,
    input_size: i64,
    observer: Box<dyn Observer>,
}

impl Judge {
    /// A judge named `name` (e.g. `lite0`) that gets the crops resized to `input_size`.
    pub fn new(name: impl Into<String>, input_size: i64, observer: Box<dyn Observer>) -> Self {
        Judge {
            name: name.into(),
            input_size,
            observer,
        }
    }

    /// Loads the judge `spec` names: a built-in network from the weights `scripts/setup-observer.sh`
    /// converts ([`weights_path`]; `lite0_weights` replaces Lite0's), judging at its own input
    /// size (224, 240, 260), or a TorchScript module judging the 224x224 crops.
    ///
    /// # Errors
    /// [`BenchError::Judge`] if the weights or the module cannot be loaded.
    pub fn load(spec: &JudgeSpec, lite0_weights: Option<&Path>) -> Result<Self, BenchError> {
        let fail = |source| BenchError::Judge {
            judge: spec.to_string(),
            source: Box::new(source),
        };
        let (observer, input_size): (Box<dyn Observer>, i64) = match spec {
            JudgeSpec::Builtin(variant) => {
                let path = match (variant, lite0_weights) {
                    (Variant::Lite0, Some(path)) => path.to_path_buf(),
                    _ => weights_path(*variant),
                };
                let classifier = Classifier::load_variant(&path, *variant).map_err(fail)?;
                (Box::new(classifier), variant.input_size())
            }
            JudgeSpec::TorchScript(path) => (
                load_observer(Some(path.as_path()), None).map_err(fail)?,
                i64::from(CROP_SIZE),
            ),
        };
        Ok(Judge::new(spec.name(), input_size, observer))
    }

    /// Its name in reports.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The side its input is resized to.
    pub fn input_size(&self) -> i64 {
        self.input_size
    }

    /// The `k` most probable classes of each crop of `crops` (each (1, 3, 224, 224) in
    /// [0, 1]), classified in one batch: resized to [`Self::input_size`] if it differs,
    /// normalised, classified.
    pub(super) fn classify(
        &self,
        crops: &[Tensor],
        k: usize,
    ) -> Result<Vec<Vec<(usize, f32)>>, ObserverError> {
        tch::no_grad(|| {
            let crops = Tensor::f_cat(crops, 0)?;
            let side = crops.size().last().copied().unwrap_or(0);
            let input = if side == self.input_size {
                crops.shallow_clone()
            } else {
                resize_square(&crops, self.input_size)?
            };
            top_k(&self.observer.observe_logits(&normalize(&input))?, k)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judge_lists() {
        let specs = JudgeSpec::parse_list(" lite0, LITE1 ,torchscript:models/resnet.pt,Lite2")
            .expect("four judges");
        assert_eq!(
            specs,
            [
                JudgeSpec::Builtin(Variant::Lite0),
                JudgeSpec::Builtin(Variant::Lite1),
                JudgeSpec::TorchScript("models/resnet.pt".into()),
                JudgeSpec::Builtin(Variant::Lite2),
            ]
        );
        let names: Vec<String> = specs.iter().map(JudgeSpec::name).collect();
        assert_eq!(names, ["lite0", "lite1", "resnet", "lite2"]);
        assert_eq!(specs[2].to_string(), "torchscript:models/resnet.pt");
        assert_eq!(
            JudgeSpec::parse_list(DEFAULT_JUDGES).expect("the default judges"),
            specs[..2].to_vec()
        );
        for bad in ["lite3", "", "lite0,", "torchscript:", "resnet.pt"] {
            assert!(
                matches!(JudgeSpec::parse_list(bad), Err(BenchError::UnknownJudge(_))),
                "{bad}"
            );
        }
        for bad in [
            "lite0,lite0",
            "lite1,torchscript:x/lite1.pt",
            "torchscript:a[1].pt",
        ] {
            assert!(
                matches!(JudgeSpec::parse_list(bad), Err(BenchError::Config(_))),
                "{bad}"
            );
        }
    }
}
