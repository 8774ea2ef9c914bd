//! The codec library end to end: encode/decode of every image kind and size, errors for wrong
//! models, corrupt files and bad inputs. Uses a small untrained network (codes correctly, poorly)
//! so the tests need no trained model and run in seconds.

use image::{DynamicImage, GrayAlphaImage, GrayImage, Rgb, RgbImage, RgbaImage};
use ocular::train::{
    untrained_model_bytes, untrained_observer_mix_model_bytes, untrained_variable_rate_model_bytes,
    HyperpriorConfig, QualityRange,
};
use ocular::{Bitstream, Decoder, Encoder, Error, Limits, Model, ObserverMix, Shrinkage};

const TINY: HyperpriorConfig = HyperpriorConfig { n: 8, m: 12 };

/// The untrained model of `seed` (the same file at every call).
fn tiny_model(seed: i64) -> Model {
    let bytes =
        untrained_model_bytes(TINY, &format!("tiny-{seed}"), seed).expect("untrained model");
    Model::from_bytes(&bytes).expect("a fresh model file loads")
}

fn photo_like(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let v = |k: u32| ((x * (3 + k) + y * (5 + 2 * k) + (x * y) % (7 + k)) % 256) as u8;
        Rgb([v(0), v(1), v(2)])
    })
}

#[test]
fn every_image_kind_and_tiny_sizes_round_trip() {
    let model = tiny_model(1);
    let cases: Vec<(DynamicImage, u8)> = vec![
        (DynamicImage::ImageRgb8(photo_like(1, 1)), 3),
        (DynamicImage::ImageRgb8(photo_like(3, 70)), 3),
        (DynamicImage::ImageRgb8(photo_like(70, 3)), 3),
        (DynamicImage::ImageRgb8(photo_like(97, 66)), 3),
        (
            DynamicImage::ImageLuma8(GrayImage::from_fn(40, 33, |x, y| {
                image::Luma([(x * 6 + y) as u8])
            })),
            1,
        ),
        (
            DynamicImage::ImageLumaA8(GrayAlphaImage::from_fn(17, 16, |x, _| {
                image::LumaA([x as u8 * 9, 128])
            })),
            2,
        ),
        (
            DynamicImage::ImageRgba8(RgbaImage::from_fn(33, 47, |x, y| {
                image::Rgba([x as u8, y as u8, 7, 200])
            })),
            4,
        ),
    ];
    for (image, channels) in cases {
        let bytes = Encoder::new(&model).encode(&image).expect("encode");
        let header = Bitstream::parse(&bytes, &Limits::default())
            .expect("valid file")
            .header;
        assert_eq!(
            (header.width, header.height, header.channels),
            (image.width(), image.height(), channels)
        );
        let decoded = Decoder::new(&model).decode(&bytes).expect("decode");
        assert_eq!(
            (decoded.width(), decoded.height()),
            (image.width(), image.height())
        );
        let expected_color = if channels <= 2 {
            image::ColorType::L8
        } else {
            image::ColorType::Rgb8
        };
        assert_eq!(decoded.color(), expected_color);
        // Decoding is a pure function of the file.
        assert_eq!(
            Decoder::new(&model).decode(&bytes).expect("decode again"),
            decoded
        );
    }
}

#[test]
fn encoding_is_deterministic() {
    let model = tiny_model(2);
    let image = DynamicImage::ImageRgb8(photo_like(50, 40));
    let a = Encoder::new(&model).encode(&image).expect("encode");
    let b = Encoder::new(&model).encode(&image).expect("encode");
    assert_eq!(a, b);
}

#[test]
fn another_model_is_refused_with_both_names() {
    let (encoder_model, other) = (tiny_model(3), tiny_model(4));
    let bytes = Encoder::new(&encoder_model)
        .encode(&DynamicImage::ImageRgb8(photo_like(20, 20)))
        .expect("encode");
    let error = Decoder::new(&other)
        .decode(&bytes)
        .expect_err("wrong model must fail");
    assert!(matches!(error, Error::ModelMismatch { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("tiny-3") && message.contains("tiny-4"),
        "{message}"
    );
}

#[test]
fn corrupt_files_give_errors_or_garbage_never_panics() {
    let model = tiny_model(5);
    let image = DynamicImage::ImageRgb8(photo_like(48, 40));
    let bytes = Encoder::new(&model).encode(&image).expect("encode");
    let decoder = Decoder::new(&model);

    // Any flipped bit is caught by the CRC.
    for position in [0, 5, 20, bytes.len() / 2, bytes.len() - 1] {
        let mut broken = bytes.clone();
        broken[position] ^= 0x10;
        let error = decoder.decode(&broken).expect_err("corrupt file must fail");
        assert!(matches!(error, Error::Container(_)), "{error:?}");
    }
    for len in [0, 3, 10, bytes.len() - 1] {
        assert!(matches!(
            decoder.decode(&bytes[..len]),
            Err(Error::Container(_))
        ));
    }

    // Streams altered behind a valid CRC reach the entropy decoder: error or garbage, no panic.
    let original = Bitstream::parse(&bytes, &Limits::default()).expect("valid");
    let mutations: [fn(&mut Bitstream); 6] = [
        (|b| b.y_stream.truncate(b.y_stream.len() / 2 / 4 * 4)),
        (|b| b.y_stream.clear()),
        (|b| b.z_stream.iter_mut().for_each(|x| *x = !*x)),
        (|b| b.y_stream.push(1)),
        (|b| b.y_stream.extend_from_slice(&[0xff; 64])),
        (|b| b.header.y_shape.channels += 1),
    ];
    for mutate in mutations {
        let mut forged = original.clone();
        mutate(&mut forged);
        let Ok(forged) = forged.to_bytes() else {
            continue;
        };
        match decoder.decode(&forged) {
            Ok(decoded) => assert_eq!((decoded.width(), decoded.height()), (48, 40)),
            Err(e) => assert!(
                matches!(e, Error::CorruptStream(_) | Error::Container(_)),
                "{e:?}"
            ),
        }
    }
}

#[test]
fn bad_inputs_are_refused() {
    let model = tiny_model(6);
    let empty = DynamicImage::ImageRgb8(RgbImage::new(0, 0));
    assert!(matches!(
        Encoder::new(&model).encode(&empty),
        Err(Error::Image(_))
    ));
    let limits = Limits {
        max_pixels: 100,
        ..Limits::default()
    };
    let big = DynamicImage::ImageRgb8(photo_like(11, 10));
    assert!(matches!(
        Encoder::new(&model).with_limits(limits).encode(&big),
        Err(Error::Image(_))
    ));
    let bytes = Encoder::new(&model).encode(&big).expect("encode");
    let small_limits = Limits {
        max_pixels: 50,
        ..Limits::default()
    };
    assert!(matches!(
        Decoder::new(&model)
            .with_limits(small_limits)
            .decode(&bytes),
        Err(Error::Container(_))
    ));
}

#[test]
fn model_files_round_trip_and_bad_ones_are_refused() {
    let bytes = untrained_model_bytes(TINY, "tiny-7", 7).expect("model");
    let a = Model::from_bytes(&bytes).expect("load");
    let b = Model::from_bytes(&bytes).expect("load again");
    assert_eq!(a.fingerprint(), b.fingerprint());
    assert_eq!(
        (a.name(), a.quality(), a.distortion().as_str()),
        ("tiny-7", 1, "mse")
    );
    // A reloaded model codes exactly like the first.
    let image = DynamicImage::ImageRgb8(photo_like(30, 30));
    assert_eq!(
        Encoder::new(&a).encode(&image).expect("a"),
        Encoder::new(&b).encode(&image).expect("b")
    );

    for broken in [
        Vec::new(),
        b"not a model".to_vec(),
        bytes[..bytes.len() / 2].to_vec(),
    ] {
        assert!(matches!(
            Model::from_bytes(&broken),
            Err(Error::InvalidModel(_))
        ));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    assert!(matches!(
        Model::load(&dir.path().join("missing.safetensors")),
        Err(Error::InvalidModel(_))
    ));
}

/// Refinement (an untrained mse model: it has a gradient, if not a good one) gives ordinary
/// files of the image's size, odd sizes included; under rate control it never exceeds the
/// target, and a target the plain file only just meets still yields a file.
#[test]
fn refined_files_decode_and_rate_control_keeps_the_target() {
    let model = tiny_model(1);
    for (width, height) in [(97, 66), (5, 3)] {
        let image = DynamicImage::ImageRgb8(photo_like(width, height));
        let file = Encoder::new(&model)
            .with_refinement(3)
            .encode(&image)
            .expect("refined encode");
        let decoded = Decoder::new(&model).decode(&file).expect("decode");
        assert_eq!((decoded.width(), decoded.height()), (width, height));
    }

    let image = DynamicImage::ImageRgb8(photo_like(97, 66));
    let pixels = 97.0 * 66.0;
    let plain = Encoder::new(&model).encode(&image).expect("encode");
    let families = [model];
    for slack in [0.0, 40.0, 400.0] {
        let target = (plain.len() as f64 + slack) * 8.0 / pixels;
        let found = ocular::encode_within_bpp_refined(&families, &image, target, 3)
            .expect("the plain file fits, so something does");
        assert!(found.bpp <= target, "{} > {target}", found.bpp);
        assert_eq!(found.bytes.len() as f64 * 8.0 / pixels, found.bpp);
        Decoder::new(&families[0])
            .decode(&found.bytes)
            .expect("decodes");
    }
}

/// A target a little below what the lowest rate point spends: plain rate control cannot reach
/// it, refinement under the budget can (it trades the model's distortion for rate).
#[test]
fn refinement_brings_an_unreachable_target_within_reach() {
    let model = Model::builtin("mse-q3").expect("built-in model");
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/ladybird.png");
    let image = image::open(sample)
        .expect("sample")
        .crop_imm(300, 200, 64, 64);
    let plain = Encoder::new(&model).encode(&image).expect("encode");
    let target = 0.95 * plain.len() as f64 * 8.0 / (64.0 * 64.0);
    let family = [model];
    assert!(matches!(
        ocular::encode_within_bpp(&family, &image, target),
        Err(Error::RateTargetUnreachable { .. })
    ));
    let found = ocular::encode_within_bpp_refined(&family, &image, target, 20)
        .expect("refinement reaches 95% of the plain size");
    assert!(found.bpp <= target, "{} > {target}", found.bpp);
    Decoder::new(&family[0])
        .decode(&found.bytes)
        .expect("decodes");
}

fn tiny_variable_rate_model() -> Model {
    let range = QualityRange::new(0.0, 10.0).expect("range");
    let bytes = untrained_variable_rate_model_bytes(TINY, "tiny-vr", 5, range).expect("model");
    Model::from_bytes(&bytes).expect("a fresh model file loads")
}

#[test]
fn variable_rate_files_carry_their_step_and_decode() {
    let model = tiny_variable_rate_model();
    assert_eq!(model.quality_range(), Some((0.0, 10.0)));
    let image = DynamicImage::ImageRgb8(photo_like(64, 48));
    let mut sizes = Vec::new();
    for quality in [0.0, 2.5, 5.0, 10.0] {
        let bytes = Encoder::new(&model)
            .with_quality(quality)
            .encode(&image)
            .expect("encode");
        let header = Bitstream::parse(&bytes, &Limits::default())
            .expect("parse")
            .header;
        let step = header.quantization_step.expect("a step record").get();
        assert!(
            (ocular::quality_of_step(header.quantization_step.unwrap()) - quality).abs() < 1e-4
        );
        assert!(
            (step - 2f32.powf((5.0 - quality) / 2.0)).abs() < 1e-5,
            "{step}"
        );
        let decoded = Decoder::new(&model).decode(&bytes).expect("decode");
        assert_eq!((decoded.width(), decoded.height()), (64, 48));
        sizes.push(bytes.len());
    }
    assert!(sizes.windows(2).all(|w| w[0] <= w[1]), "{sizes:?}");
    assert!(sizes[0] < sizes[3], "{sizes:?}");
    // The default quality is the reference (step 1, still written: the model is variable-rate).
    let bytes = Encoder::new(&model).encode(&image).expect("encode");
    let header = Bitstream::parse(&bytes, &Limits::default())
        .expect("parse")
        .header;
    assert_eq!(header.quantization_step.map(|s| s.get()), Some(1.0));
}

/// A variable-rate PSNR network's files carry the decoder's shrinkage below quality 6.5 (and
/// only there); it moves the decoded image, not the streams, and a reader that skips the
/// record decodes the plain image.
#[test]
fn files_of_the_psnr_network_carry_the_shrinkage_at_low_rates() {
    let model = tiny_variable_rate_model();
    let image = DynamicImage::ImageRgb8(photo_like(64, 48));
    let parse = |bytes: &[u8]| Bitstream::parse(bytes, &Limits::default()).expect("parse");
    for (quality, expected) in [(1.0, Some(0.35)), (5.25, Some(0.175)), (8.0, None)] {
        let bytes = Encoder::new(&model)
            .with_quality(quality)
            .encode(&image)
            .expect("encode");
        let file = parse(&bytes);
        let w = file.header.shrinkage.map(Shrinkage::get);
        assert!(
            w.zip(expected)
                .map_or(w == expected, |(w, e)| (w - e).abs() < 1e-6),
            "quality {quality}: {w:?}"
        );
        let Some(_) = w else { continue };
        let mut plain = file.clone();
        plain.header.shrinkage = None;
        let plain_bytes = plain.to_bytes().expect("bytes");
        let decoder = Decoder::new(&model);
        let shrunk = decoder.decode(&bytes).expect("decode").to_rgb8();
        let centred = decoder.decode(&plain_bytes).expect("decode").to_rgb8();
        assert_eq!(parse(&plain_bytes).y_stream, file.y_stream);
        assert!(
            shrunk != centred,
            "quality {quality}: the shrinkage changed nothing"
        );
    }
    // A fixed-rate model writes none.
    let bytes = Encoder::new(&tiny_model(1)).encode(&image).expect("encode");
    assert_eq!(parse(&bytes).header.shrinkage, None);
}

#[test]
fn qualities_a_model_cannot_code_at_are_errors() {
    let image = DynamicImage::ImageRgb8(photo_like(32, 32));
    let vr = tiny_variable_rate_model();
    for quality in [-0.5, 10.5, f32::NAN] {
        let err = Encoder::new(&vr)
            .with_quality(quality)
            .encode(&image)
            .unwrap_err();
        assert!(
            matches!(err, Error::QualityOutOfRange { .. }),
            "{quality}: {err}"
        );
    }
    let fixed = tiny_model(1);
    let err = Encoder::new(&fixed)
        .with_quality(3.0)
        .encode(&image)
        .unwrap_err();
    assert!(matches!(err, Error::FixedRateModel { .. }), "{err}");
    let err = ocular::encode_to_bpp(&fixed, &image, 0.5).unwrap_err();
    assert!(matches!(err, Error::FixedRateModel { .. }), "{err}");
}

#[test]
fn exact_rate_control_lands_within_three_percent_under_the_target() {
    let model = tiny_variable_rate_model();
    let image = DynamicImage::ImageRgb8(photo_like(128, 96));
    let pixels = 128.0 * 96.0;
    let bpp_at = |quality: f32| {
        let bytes = Encoder::new(&model)
            .with_quality(quality)
            .encode(&image)
            .expect("encode");
        bytes.len() as f64 * 8.0 / pixels
    };
    let (low, high) = (bpp_at(0.0), bpp_at(10.0));
    for t in [0.25, 0.5, 0.75] {
        let target = low + t * (high - low);
        let found = ocular::encode_to_bpp(&model, &image, target).expect("reachable");
        assert!(found.bpp <= target, "{} > {target}", found.bpp);
        assert!(
            found.bpp >= 0.97 * target,
            "{} < 0.97 x {target}",
            found.bpp
        );
        assert!(found.encodes <= ocular::MAX_RATE_SEARCH_ENCODES);
        assert_eq!(found.bytes.len() as f64 * 8.0 / pixels, found.bpp);
        Decoder::new(&model).decode(&found.bytes).expect("decodes");
    }
    for target in [0.5 * low, 2.0 * high] {
        let err = ocular::encode_to_bpp(&model, &image, target).unwrap_err();
        assert!(matches!(err, Error::BppOutOfReach { .. }), "{err}");
        assert!(err.to_string().contains("spans"), "{err}");
    }
}

/// `Model::with_refinement_objective`: refinement follows the objective it is given (here
/// MS-SSIM instead of the shipped `mse-q3`'s own MSE), so the file differs from the one refined
/// for the model's own objective, and both decode to the image's size.
#[test]
fn refinement_follows_the_objective_it_is_given() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/ladybird.png");
    let photo = image::open(path).expect("the sample image").to_rgb8();
    let image =
        DynamicImage::ImageRgb8(image::imageops::crop_imm(&photo, 200, 100, 176, 168).to_image());
    let own = Model::builtin("mse-q3").expect("built-in model");
    let other = Model::builtin("mse-q3")
        .expect("built-in model")
        .with_refinement_objective(ocular::train::Distortion::MsSsim);
    let refined = |model: &Model| {
        Encoder::new(model)
            .with_refinement(4)
            .encode(&image)
            .expect("refined encode")
    };
    let (for_mse, for_ms_ssim) = (refined(&own), refined(&other));
    let plain = Encoder::new(&own).encode(&image).expect("plain encode");
    assert!(for_mse != plain, "refining for MSE changed the latent");
    assert!(
        for_mse != for_ms_ssim,
        "the objective changes the refined latent"
    );
    for file in [&for_mse, &for_ms_ssim] {
        let decoded = Decoder::new(&own).decode(file).expect("decodes");
        assert_eq!((decoded.width(), decoded.height()), (176, 168));
    }
}

/// One network for every observer mix codes at any mix: the file carries it and decodes with
/// nothing else, and the mix changes the decoded image (the model's conditioning is random
/// here, not the identity of an untrained network). A plain model codes at mix 0 only, and a
/// file that claims another mix for it is refused as forged.
#[test]
fn observer_mix_files_carry_their_mix_and_decode() {
    let range = QualityRange::new(0.0, 10.0).expect("range");
    let bytes = untrained_observer_mix_model_bytes(TINY, "tiny-mix", 7, range).expect("model");
    let model = Model::from_bytes(&bytes).expect("a fresh model file loads");
    assert!(model.has_observer_mix());
    let image = DynamicImage::ImageRgb8(photo_like(70, 50));
    let at = |alpha: f32| {
        Encoder::new(&model)
            .with_quality(6.0)
            .with_observer_mix(alpha)
            .encode(&image)
            .expect("encodes at the mix")
    };
    let mix_of = |file: &[u8]| {
        Bitstream::parse(file, &Limits::default())
            .expect("parses")
            .header
            .observer_mix
    };
    let file = at(0.6);
    assert_eq!(mix_of(&file), ObserverMix::new(0.6));
    assert_eq!(mix_of(&at(0.0)), None);
    let decoded = Decoder::new(&model).decode(&file).expect("decodes");
    assert_eq!((decoded.width(), decoded.height()), (70, 50));
    // The same streams read at mix 0 make another image.
    let mut at_zero = Bitstream::parse(&file, &Limits::default()).expect("parses");
    at_zero.header.observer_mix = None;
    let other = Decoder::new(&model)
        .decode_bitstream(at_zero)
        .expect("decodes");
    assert_ne!(decoded.to_rgb8().as_raw(), other.to_rgb8().as_raw());
    assert!(matches!(
        Encoder::new(&model).with_observer_mix(1.5).encode(&image),
        Err(Error::ObserverMixUnavailable { .. })
    ));

    let plain = tiny_model(2);
    assert!(!plain.has_observer_mix());
    assert!(matches!(
        Encoder::new(&plain).with_observer_mix(0.5).encode(&image),
        Err(Error::ObserverMixUnavailable { .. })
    ));
    let plain_file = Encoder::new(&plain)
        .with_observer_mix(0.0)
        .encode(&image)
        .expect("mix 0 is every model's");
    let mut forged = Bitstream::parse(&plain_file, &Limits::default()).expect("parses");
    forged.header.observer_mix = ObserverMix::new(0.5);
    assert!(matches!(
        Decoder::new(&plain).decode_bitstream(forged),
        Err(Error::CorruptStream(_))
    ));
}
