//! ImageNet-style folders (`<root>/<wnid>/<image>`) and shards of their image lists.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use image::ImageFormat;
use ocular_models::observer::Synsets;

use super::BenchError;

/// An image and its class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabeledImage {
    /// The file.
    pub path: PathBuf,
    /// Its path below the root with `/` separators, e.g. `n01440764/ILSVRC2012_val_00000293.JPEG`:
    /// the image's name in reports (unique within a folder).
    pub name: String,
    /// The class folder's name.
    pub wnid: String,
    /// The class index: the wnid's line in the synset list (0-based).
    pub label: usize,
}

/// Lists the images of an ImageNet-style folder: `<root>/<wnid>/<image>` (images may also lie
/// deeper below their class folder), the class index of each being the wnid's line in
/// `synsets`. This is the layout of the ILSVRC-2012 validation set as usually arranged
/// (`n01440764/ILSVRC2012_val_00000293.JPEG`) and of torchvision's `ImageFolder`.
///
/// Images are files whose extension names a format the `image` crate reads in this build
/// (`png`, `jpg`, `jpeg`, `JPEG`, `webp`, `bmp`, `tif`, `ppm`, ..., in any case); other files
/// (`.txt`, `.csv`, `.DS_Store`...) are skipped, as are files directly in `root` and entries
/// whose name starts with `.`. Every folder directly in `root` must be a wnid of `synsets`.
/// The list is sorted by [`LabeledImage::name`] (byte order), the order shards split.
///
/// # Errors
/// [`BenchError::UnknownWnid`] for a class folder that is not in `synsets`,
/// [`BenchError::NoImages`] if no class folder holds an image, [`BenchError::Io`] if a folder
/// cannot be read.
pub fn scan_folder(root: &Path, synsets: &Synsets) -> Result<Vec<LabeledImage>, BenchError> {
    let mut images = Vec::new();
    for entry in read_dir(root)? {
        let (path, name) = entry;
        if name.starts_with('.') || !is_dir(&path)? {
            continue;
        }
        let label = synsets
            .index_of(&name)
            .ok_or_else(|| BenchError::UnknownWnid {
                wnid: name.clone(),
                path: path.clone(),
            })?;
        let mut pending = vec![(path, name.clone())];
        while let Some((folder, prefix)) = pending.pop() {
            for (path, file_name) in read_dir(&folder)? {
                if file_name.starts_with('.') {
                    continue;
                }
                let relative = format!("{prefix}/{file_name}");
                if is_dir(&path)? {
                    pending.push((path, relative));
                } else if is_readable_image(&path) {
                    images.push(LabeledImage {
                        path,
                        name: relative,
                        wnid: name.clone(),
                        label,
                    });
                }
            }
        }
    }
    if images.is_empty() {
        return Err(BenchError::NoImages(root.to_path_buf()));
    }
    images.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(images)
}

/// The entries of a folder with their (lossy UTF-8) names.
fn read_dir(folder: &Path) -> Result<Vec<(PathBuf, String)>, BenchError> {
    let io = |source| BenchError::Io {
        path: folder.to_path_buf(),
        source,
    };
    fs::read_dir(folder)
        .map_err(io)?
        .map(|entry| {
            let entry = entry.map_err(io)?;
            Ok((
                entry.path(),
                entry.file_name().to_string_lossy().into_owned(),
            ))
        })
        .collect()
}

/// Whether `path` is a folder (following links).
fn is_dir(path: &Path) -> Result<bool, BenchError> {
    fs::metadata(path)
        .map(|m| m.is_dir())
        .map_err(|source| BenchError::Io {
            path: path.to_path_buf(),
            source,
        })
}

fn is_readable_image(path: &Path) -> bool {
    path.extension()
        .and_then(ImageFormat::from_extension)
        .is_some_and(|format| format.reading_enabled())
}

/// One of `count` parts of an image list: image `i` (0-based, after the limit) belongs to
/// shard `i % count`. Written and parsed as `index/count`, e.g. `0/4` .. `3/4`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shard {
    index: usize,
    count: usize,
}

impl Shard {
    /// Shard `index` of `count` (0-based).
    ///
    /// # Errors
    /// [`BenchError::Shard`] unless `index < count`.
    pub fn new(index: usize, count: usize) -> Result<Self, BenchError> {
        if index >= count {
            return Err(BenchError::Shard(format!("{index}/{count}")));
        }
        Ok(Shard { index, count })
    }

    /// Its index, `0..count`.
    pub fn index(self) -> usize {
        self.index
    }

    /// The number of shards.
    pub fn count(self) -> usize {
        self.count
    }

    /// Whether image `i` of the list belongs to this shard.
    pub fn contains(self, i: usize) -> bool {
        i % self.count == self.index
    }
}

/// The environment variable that tells [`Shard::from_scheduler`] the number of completions of
/// a Kubernetes Indexed Job (Kubernetes sets only the index, `JOB_COMPLETION_INDEX`): set it in
/// the pod template to the Job's `completions`.
pub const SHARD_COUNT_VARIABLE: &str = "OCULAR_SHARD_COUNT";

impl Shard {
    /// The shard of this task of a job array, from the environment the scheduler gives it
    /// (`env`, e.g. `std::env::vars().collect()`):
    ///
    /// * a **Slurm job array** (`SLURM_ARRAY_TASK_ID` set): the tasks `MIN, MIN + STEP, ...,
    ///   MAX` (`SLURM_ARRAY_TASK_MIN` / `_MAX` / `_STEP`, step 1 if unset) must be exactly
    ///   `SLURM_ARRAY_TASK_COUNT` tasks; task `ID` is shard `(ID - MIN) / STEP` of `COUNT`.
    ///   `--array=0-7`, `--array=1-8` and `--array=0-14:2` give 8 shards; arrays with gaps
    ///   (`--array=1,2,5`, whose tasks are not one regular range) cannot be mapped;
    /// * a **Kubernetes Indexed Job** (`JOB_COMPLETION_INDEX` set): shard
    ///   `JOB_COMPLETION_INDEX` of [`SHARD_COUNT_VARIABLE`] (`OCULAR_SHARD_COUNT`, the Job's
    ///   `completions`, which Kubernetes does not pass to the pod itself).
    ///
    /// # Errors
    /// [`BenchError::Scheduler`] when neither or both schedulers' variables are set, a variable
    /// is missing or not a whole number, or the array cannot be mapped onto shards.
    pub fn from_scheduler(env: &HashMap<String, String>) -> Result<Shard, BenchError> {
        let slurm = env.contains_key("SLURM_ARRAY_TASK_ID");
        let kubernetes = env.contains_key("JOB_COMPLETION_INDEX");
        match (slurm, kubernetes) {
            (true, false) => slurm_shard(env),
            (false, true) => kubernetes_shard(env),
            (true, true) => Err(BenchError::Scheduler(
                "both SLURM_ARRAY_TASK_ID and JOB_COMPLETION_INDEX are set".into(),
            )),
            (false, false) => Err(BenchError::Scheduler(
                "neither SLURM_ARRAY_TASK_ID (a Slurm job array) nor JOB_COMPLETION_INDEX \
                 (a Kubernetes Indexed Job) is set"
                    .into(),
            )),
        }
    }
}

/// The whole number in the environment variable `name`, `default` when unset.
fn env_number(
    env: &HashMap<String, String>,
    name: &str,
    default: Option<usize>,
) -> Result<usize, BenchError> {
    match (env.get(name), default) {
        (Some(text), _) => text
            .trim()
            .parse()
            .map_err(|_| BenchError::Scheduler(format!("{name}={text:?} is not a whole number"))),
        (None, Some(default)) => Ok(default),
        (None, None) => Err(BenchError::Scheduler(format!("{name} is not set"))),
    }
}

fn slurm_shard(env: &HashMap<String, String>) -> Result<Shard, BenchError> {
    let id = env_number(env, "SLURM_ARRAY_TASK_ID", None)?;
    let count = env_number(env, "SLURM_ARRAY_TASK_COUNT", None)?;
    let min = env_number(env, "SLURM_ARRAY_TASK_MIN", None)?;
    let max = env_number(env, "SLURM_ARRAY_TASK_MAX", None)?;
    let step = env_number(env, "SLURM_ARRAY_TASK_STEP", Some(1))?;
    let array = format!("the Slurm array {min}-{max}:{step} of {count} tasks");
    if step == 0 || min > max || (max - min) % step != 0 || (max - min) / step + 1 != count {
        return Err(BenchError::Scheduler(format!(
            "{array} is not one range with a constant step (an array with gaps, e.g. \
             --array=1,2,5): submit it as --array=0-{}",
            count.saturating_sub(1)
        )));
    }
    if id < min || id > max || (id - min) % step != 0 {
        return Err(BenchError::Scheduler(format!(
            "task {id} is not a task of {array}"
        )));
    }
    Shard::new((id - min) / step, count)
}

fn kubernetes_shard(env: &HashMap<String, String>) -> Result<Shard, BenchError> {
    let index = env_number(env, "JOB_COMPLETION_INDEX", None)?;
    let count = env_number(env, SHARD_COUNT_VARIABLE, None).map_err(|_| {
        BenchError::Scheduler(format!(
            "JOB_COMPLETION_INDEX={index} but {SHARD_COUNT_VARIABLE} (the Indexed Job's \
             completions) is not a whole number or not set"
        ))
    })?;
    Shard::new(index, count).map_err(|_| {
        BenchError::Scheduler(format!(
            "completion index {index} is not below {SHARD_COUNT_VARIABLE}={count}"
        ))
    })
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = BenchError;

    fn from_str(s: &str) -> Result<Self, BenchError> {
        let invalid = || BenchError::Shard(s.to_string());
        let (index, count) = s.trim().split_once('/').ok_or_else(invalid)?;
        let index = index.trim().parse().map_err(|_| invalid())?;
        let count = count.trim().parse().map_err(|_| invalid())?;
        Shard::new(index, count).map_err(|_| invalid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn slurm(
        id: &str,
        count: &str,
        min: &str,
        max: &str,
        step: Option<&str>,
    ) -> HashMap<String, String> {
        let mut vars = env(&[
            ("SLURM_ARRAY_TASK_ID", id),
            ("SLURM_ARRAY_TASK_COUNT", count),
            ("SLURM_ARRAY_TASK_MIN", min),
            ("SLURM_ARRAY_TASK_MAX", max),
            ("SLURM_ARRAY_JOB_ID", "4242"),
        ]);
        if let Some(step) = step {
            vars.insert("SLURM_ARRAY_TASK_STEP".into(), step.into());
        }
        vars
    }

    fn shard(vars: &HashMap<String, String>) -> Result<String, String> {
        Shard::from_scheduler(vars)
            .map(|s| s.to_string())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn slurm_arrays() {
        // --array=0-7, --array=1-8, --array=0-14:2, --array=3 (one task), step unset.
        assert_eq!(
            shard(&slurm("0", "8", "0", "7", Some("1"))),
            Ok("0/8".into())
        );
        assert_eq!(
            shard(&slurm("7", "8", "0", "7", Some("1"))),
            Ok("7/8".into())
        );
        assert_eq!(
            shard(&slurm("1", "8", "1", "8", Some("1"))),
            Ok("0/8".into())
        );
        assert_eq!(
            shard(&slurm("8", "8", "1", "8", Some("1"))),
            Ok("7/8".into())
        );
        assert_eq!(
            shard(&slurm("6", "8", "0", "14", Some("2"))),
            Ok("3/8".into())
        );
        assert_eq!(
            shard(&slurm("3", "1", "3", "3", Some("1"))),
            Ok("0/1".into())
        );
        assert_eq!(shard(&slurm("2", "4", "0", "3", None)), Ok("2/4".into()));
        assert_eq!(shard(&slurm(" 2 ", "4", "0", "3", None)), Ok("2/4".into()));
    }

    #[test]
    fn slurm_arrays_that_cannot_be_mapped() {
        let cases = [
            // --array=1,2,5: three tasks between 1 and 5 with step 1.
            (slurm("2", "3", "1", "5", Some("1")), "gaps"),
            // --array=1,3,10 reported with a step of 2: 10 is off the grid.
            (slurm("3", "3", "1", "10", Some("2")), "gaps"),
            (slurm("0", "4", "0", "6", Some("0")), "gaps"),
            (slurm("3", "4", "0", "6", Some("2")), "not a task"),
            (slurm("9", "8", "0", "7", Some("1")), "not a task"),
            (slurm("x", "8", "0", "7", Some("1")), "not a whole number"),
            (slurm("1", "-8", "0", "7", Some("1")), "not a whole number"),
            (slurm("1", "8", "0", "7", Some("")), "not a whole number"),
        ];
        for (vars, expected) in cases {
            let error = shard(&vars).expect_err("unmappable");
            assert!(error.contains(expected), "{error} for {vars:?}");
        }
        let mut missing = slurm("1", "8", "0", "7", None);
        missing.remove("SLURM_ARRAY_TASK_COUNT");
        let error = shard(&missing).expect_err("no count");
        assert!(
            error.contains("SLURM_ARRAY_TASK_COUNT is not set"),
            "{error}"
        );
    }

    #[test]
    fn kubernetes_indexed_jobs() {
        let job = |index: &str, count: Option<&str>| {
            let mut vars = env(&[("JOB_COMPLETION_INDEX", index), ("HOSTNAME", "bench-3-x")]);
            if let Some(count) = count {
                vars.insert(SHARD_COUNT_VARIABLE.into(), count.into());
            }
            vars
        };
        assert_eq!(shard(&job("0", Some("16"))), Ok("0/16".into()));
        assert_eq!(shard(&job("15", Some("16"))), Ok("15/16".into()));
        for (vars, expected) in [
            (job("16", Some("16")), "not below"),
            (job("3", None), "OCULAR_SHARD_COUNT"),
            (job("3", Some("0")), "not below"),
            (job("3", Some("many")), "OCULAR_SHARD_COUNT"),
            (job("-1", Some("4")), "not a whole number"),
        ] {
            let error = shard(&vars).expect_err("invalid");
            assert!(error.contains(expected), "{error} for {vars:?}");
        }
    }

    #[test]
    fn no_scheduler_or_two() {
        let error = shard(&env(&[("HOME", "/root")])).expect_err("no scheduler");
        assert!(error.contains("neither"), "{error}");
        let mut both = slurm("1", "8", "0", "7", None);
        both.insert("JOB_COMPLETION_INDEX".into(), "1".into());
        assert!(shard(&both).expect_err("both").contains("both"));
    }
}
