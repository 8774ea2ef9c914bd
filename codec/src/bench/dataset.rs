//! ImageNet-style folders (`<root>/<wnid>/<image>`) and shards of their image lists.

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
