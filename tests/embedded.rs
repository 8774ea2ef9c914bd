//! The embeddable codec as a program that depends on `ocular` with its default features gets
//! it (pure Rust, no libtorch): built-in models encode and decode, a caller-built bitstream is
//! validated before it is decoded.

use image::{DynamicImage, GrayImage, Rgb, RgbImage};
use ocular::{Bitstream, Decoder, Encoder, Error, Limits, Model};

fn photo_like(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let v = |k: u32| (96 + ((x * (2 + k) + y * (3 + k)) % 64)) as u8;
        Rgb([v(0), v(1), v(2)])
    })
}

#[test]
fn builtin_model_round_trips_rgb_and_gray() {
    let model = Model::builtin_quality(ocular::DEFAULT_QUALITY).expect("built-in model");
    let original = photo_like(53, 37);
    let image = DynamicImage::ImageRgb8(original.clone());
    let file = Encoder::new(&model).encode(&image).expect("encodes");
    let decoded = Decoder::new(&model).decode(&file).expect("decodes");
    assert_eq!((decoded.width(), decoded.height()), (53, 37));
    let quality = ocular::metrics::measure(&original, &decoded.to_rgb8());
    assert!(quality.psnr > 24.0, "PSNR {}", quality.psnr);
    assert_eq!(file, Encoder::new(&model).encode(&image).expect("again"));

    let gray = DynamicImage::ImageLuma8(GrayImage::from_fn(20, 18, |x, y| {
        image::Luma([(100 + x * 3 + y) as u8])
    }));
    let file = Encoder::new(&model).encode(&gray).expect("encodes gray");
    let decoded = Decoder::new(&model).decode(&file).expect("decodes gray");
    assert!(matches!(decoded, DynamicImage::ImageLuma8(_)));
}

#[test]
fn forged_bitstreams_are_refused_not_panics() {
    let model = Model::builtin_quality(ocular::DEFAULT_QUALITY).expect("built-in model");
    let image = DynamicImage::ImageRgb8(photo_like(40, 24));
    let file = Encoder::new(&model).encode(&image).expect("encodes");
    let decoder = Decoder::new(&model);
    let parsed = Bitstream::parse(&file, &Limits::default()).expect("parses");
    assert!(decoder.decode_bitstream(parsed.clone()).is_ok());

    // Wider than 16 x the latent width: the container refuses it or the decoder does.
    let mut wide = parsed.clone();
    wide.header.width = 16 * wide.header.y_shape.width + 1;
    assert!(decoder.decode_bitstream(wide).is_err());

    // Over the decoder's limits.
    let small = Limits {
        max_pixels: 100,
        ..Limits::default()
    };
    let result = Decoder::new(&model)
        .with_limits(small)
        .decode_bitstream(parsed);
    assert!(matches!(result, Err(Error::Container(_))), "{result:?}");
}
