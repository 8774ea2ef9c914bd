//! Conversions between `image` buffers and tensors, and padding to the network's multiple.

use image::RgbImage;
use tch::{Kind, Tensor};

/// An RGB image as a (1, 3, H, W) float tensor in [0, 1].
pub fn rgb_to_tensor(image: &RgbImage) -> Tensor {
    let (width, height) = image.dimensions();
    Tensor::from_slice(image.as_raw())
        .view([height as i64, width as i64, 3])
        .permute([2, 0, 1])
        .unsqueeze(0)
        .to_kind(Kind::Float)
        / 255.0
}

/// The first image of a (N, 3, H, W) tensor in [0, 1] as RGB, cropped to `width` x `height`
/// (rounded to the nearest integer, clamped to 0..255).
///
/// # Panics
/// If the tensor is smaller than `width` x `height` or not (N, 3, H, W).
pub fn tensor_to_rgb(x: &Tensor, width: u32, height: u32) -> RgbImage {
    let pixels = (x
        .get(0)
        .narrow(1, 0, height as i64)
        .narrow(2, 0, width as i64)
        * 255.0)
        .round()
        .clamp(0.0, 255.0)
        .to_kind(Kind::Uint8)
        .permute([1, 2, 0])
        .contiguous()
        .flatten(0, -1);
    let bytes = Vec::<u8>::try_from(pixels).expect("a uint8 tensor converts to bytes");
    RgbImage::from_raw(width, height, bytes).expect("the crop has width * height * 3 bytes")
}

/// Pads (N, C, H, W) on the right and bottom, repeating the edge pixels, to multiples of
/// `multiple`. Edge repetition costs fewer bits than zeros and is cropped off after decoding.
pub fn pad_to_multiple(x: &Tensor, multiple: i64) -> Tensor {
    let size = x.size();
    let (height, width) = (size[2], size[3]);
    let pad_h = (multiple - height % multiple) % multiple;
    let pad_w = (multiple - width % multiple) % multiple;
    if pad_h == 0 && pad_w == 0 {
        return x.shallow_clone();
    }
    // Replication padding needs the pad to be smaller than the side: repeat it until done.
    let mut padded = x.shallow_clone();
    let (mut remaining_h, mut remaining_w) = (pad_h, pad_w);
    while remaining_h > 0 || remaining_w > 0 {
        let s = padded.size();
        let step_h = remaining_h.min(s[2]);
        let step_w = remaining_w.min(s[3]);
        padded = padded.replication_pad2d([0, step_w, 0, step_h]);
        remaining_h -= step_h;
        remaining_w -= step_w;
    }
    padded
}

/// Mean squared error between two tensors of equal shape.
pub fn mse(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).square().mean(Kind::Float).double_value(&[])
}
