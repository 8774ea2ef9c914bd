//! The evaluation harness behind the `ocular` command: what a user runs to compare ocular with
//! the codecs they use today, built on the `ocular` library's public API only.
//!
//! - [`eval`]: rate–distortion on a folder of images (e.g. Kodak) against JPEG and WebP at
//!   matched bpp, with perceptual metrics, the realism knob's trade-off, CSV / JSON / SVG.
//! - [`bench`]: rate against classifier accuracy on an ImageNet-style folder, under the
//!   observer classifier and judges the codec never trained with.
//! - [`html`]: self-contained visual reports (pictures side by side, a slider for the settings).
//!
//! It needs libtorch (the `torch` feature: MS-SSIM, the classifiers, refinement); without it this
//! crate is only the binary's pure-Rust encode / decode / info / models commands. Nothing here
//! is part of the embeddable codec: a program that codes images depends on `ocular` alone.
#![forbid(unsafe_code)]

#[cfg(feature = "torch")]
pub mod bench;
#[cfg(feature = "torch")]
pub mod eval;
#[cfg(feature = "torch")]
pub mod html;
#[cfg(feature = "torch")]
mod text;
