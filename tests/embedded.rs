//! The embeddable codec as a program that depends on `ocular` with its default features gets
//! it (pure Rust, no libtorch): built-in models encode and decode, a caller-built bitstream is
//! validated before it is decoded.

use image::{DynamicImage, GrayImage, Rgb, RgbImage};
use ocular::{Bitstream, Decoder, Encoder, Error, Limits, Model, ObserverMix};

fn photo_like(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let v = |k: u32| (96 + ((x * (2 + k) + y * (3 + k)) % 64)) as u8;
        Rgb([v(0), v(1), v(2)])
    })
}

#[test]
fn builtin_model_round_trips_rgb_and_gray() {
    let model = Model::builtin_default().expect("built-in model");
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
    let model = Model::builtin_default().expect("built-in model");
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

/// A sink that keeps what the decoder hands it, and checks the order.
#[derive(Default)]
struct Collected {
    start: Option<(u32, u32, image::ColorType)>,
    bytes: Vec<u8>,
    strips: usize,
}

impl ocular::RowSink for Collected {
    fn start(&mut self, width: u32, height: u32, color: image::ColorType) -> std::io::Result<()> {
        assert!(self.start.is_none(), "start is called once");
        self.start = Some((width, height, color));
        Ok(())
    }

    fn rows(&mut self, first: u32, rows: &[u8]) -> std::io::Result<()> {
        let (width, _, color) = self.start.expect("start comes first");
        let row = (width * u32::from(color.channel_count())) as usize;
        assert_eq!(first as usize, self.bytes.len() / row, "rows in order");
        assert_eq!(rows.len() % row, 0, "whole rows");
        self.bytes.extend_from_slice(rows);
        self.strips += 1;
        Ok(())
    }
}

/// Decoding in strips of any height, into a sink or a PNG written row by row, gives the
/// pixels of the whole-image decode, RGB and gray.
#[test]
fn strips_and_streamed_png_equal_the_whole_decode() {
    let model = Model::builtin_default().expect("built-in model");
    let rgb = DynamicImage::ImageRgb8(photo_like(45, 70));
    let gray = DynamicImage::ImageLuma8(GrayImage::from_fn(45, 70, |x, y| {
        image::Luma([(60 + x * 2 + y) as u8])
    }));
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, image) in [("rgb", rgb), ("gray", gray)] {
        let file = Encoder::new(&model).encode(&image).expect("encodes");
        let whole = Decoder::new(&model).decode(&file).expect("decodes");
        for strip_rows in [16, 23, 32] {
            let mut sink = Collected::default();
            Decoder::new(&model)
                .with_strip_rows(strip_rows)
                .decode_rows(&file, &mut sink)
                .expect("decodes in strips");
            assert_eq!(sink.strips, 70usize.div_ceil(strip_rows), "{name}");
            assert!(
                sink.bytes == whole.as_bytes(),
                "{name}: strips of {strip_rows}"
            );
        }
        let path = dir.path().join(format!("{name}.png"));
        let output = std::fs::File::create(&path).expect("create");
        Decoder::new(&model)
            .with_strip_rows(16)
            .decode_png(&file, output)
            .expect("decodes to PNG");
        let read = image::open(&path).expect("the PNG reads back");
        assert_eq!(read.color(), whole.color(), "{name}");
        assert!(read.as_bytes() == whole.as_bytes(), "{name}: PNG pixels");
    }
}

/// A sink's failure stops the decode and comes back as an output error.
#[test]
fn a_failing_sink_is_an_output_error() {
    struct Full;
    impl ocular::RowSink for Full {
        fn start(&mut self, _: u32, _: u32, _: image::ColorType) -> std::io::Result<()> {
            Ok(())
        }
        fn rows(&mut self, _: u32, _: &[u8]) -> std::io::Result<()> {
            Err(std::io::Error::other("disk full"))
        }
    }
    let model = Model::builtin_default().expect("built-in model");
    let file = Encoder::new(&model)
        .encode(&DynamicImage::ImageRgb8(photo_like(20, 20)))
        .expect("encodes");
    let result = Decoder::new(&model).decode_rows(&file, &mut Full);
    assert!(matches!(result, Err(Error::Output(_))), "{result:?}");
}

/// `Encoder::encode_to_bpp` searches with the encoder's own limits.
#[test]
fn exact_rate_control_keeps_the_encoders_limits() {
    let model = Model::builtin_variable_rate("mse").expect("built-in variable-rate model");
    let image = DynamicImage::ImageRgb8(photo_like(64, 48));
    let found = Encoder::new(&model)
        .encode_to_bpp(&image, 1.5)
        .expect("within reach");
    assert!(found.bpp <= 1.5 && found.bpp >= 0.97 * 1.5, "{}", found.bpp);
    let small = Limits {
        max_pixels: 100,
        ..Limits::default()
    };
    let refused = Encoder::new(&model)
        .with_limits(small)
        .encode_to_bpp(&image, 1.5);
    assert!(matches!(refused, Err(Error::Image(_))), "{refused:?}");
}

/// The built-in `mse-vr` ships its realism decoder: the knob at 0 is the plain decoder, at 1 it
/// decodes other pixels of the same file, as close to the source.
#[test]
fn builtin_mse_vr_decodes_with_its_realism_decoder() {
    let model = Model::builtin("mse-vr").expect("built-in mse-vr");
    assert!(model.has_realism_decoder());
    let original = photo_like(64, 48);
    let image = DynamicImage::ImageRgb8(original.clone());
    let file = Encoder::new(&model)
        .with_quality(5.0)
        .encode(&image)
        .expect("encodes");
    let plain = Decoder::new(&model).decode(&file).expect("plain");
    let at_zero = Decoder::new(&model)
        .with_realism(0.0)
        .decode(&file)
        .expect("R = 0");
    let at_one = Decoder::new(&model)
        .with_realism(1.0)
        .decode(&file)
        .expect("R = 1");
    assert_eq!(plain.as_bytes(), at_zero.as_bytes());
    assert_ne!(plain.as_bytes(), at_one.as_bytes());
    for decoded in [&plain, &at_one] {
        let quality = ocular::metrics::measure(&original, &decoded.to_rgb8());
        assert!(quality.psnr > 24.0, "PSNR {}", quality.psnr);
    }
}

/// Files made by the earlier built-in `mse-vr`s (retired when a better network replaced each)
/// still decode with nothing but the file: the built-in lookup finds the old network, with its
/// own realism decoder, by the file's fingerprint.
#[test]
fn files_of_a_retired_builtin_still_decode() {
    let current = Model::builtin_default().expect("built-in model");
    let image = DynamicImage::ImageRgb8(photo_like(48, 32));
    for shipped in ["2026-12-02", "2026-12-07"] {
        let path = format!(
            "{}/../models/trained/retired/mse-vr-{shipped}.safetensors",
            env!("CARGO_MANIFEST_DIR")
        );
        let old = Model::from_bytes(&std::fs::read(&path).expect("the retired model file"))
            .expect("loads");
        assert_eq!(old.name(), current.name());
        assert_ne!(old.fingerprint(), current.fingerprint());
        let file = Encoder::new(&old).encode(&image).expect("encodes");
        let parsed = Bitstream::parse(&file, &Limits::default()).expect("parses");
        let found = Model::builtin_for(&parsed.header.model_name, parsed.header.model_fingerprint)
            .expect("the retired network is still built in");
        assert_eq!(found.fingerprint(), old.fingerprint(), "{shipped}");
        assert!(found.has_realism_decoder());
        let decoded = Decoder::new(&found).decode(&file).expect("decodes");
        assert_eq!(
            decoded.as_bytes(),
            Decoder::new(&old)
                .decode(&file)
                .expect("decodes")
                .as_bytes(),
            "{shipped}"
        );
    }
}

/// Rate control analyses the image once and codes `y` again at each quality it tries: the file
/// it returns is byte for byte the plain encode at the quality it found.
#[test]
fn rate_control_files_equal_plain_encodes_at_their_quality() {
    let model = Model::builtin_default().expect("built-in model");
    let image = DynamicImage::ImageRgb8(photo_like(96, 64));
    for target in [0.6, 1.5] {
        let found = Encoder::new(&model)
            .encode_to_bpp(&image, target)
            .expect("within reach");
        assert!(found.encodes >= 2, "{found:?}");
        let plain = Encoder::new(&model)
            .with_quality(found.quality)
            .encode(&image)
            .expect("encodes");
        assert_eq!(
            found.bytes, plain,
            "target {target}, quality {}",
            found.quality
        );
    }
}

#[test]
fn observer_names_choose_their_builtin_families() {
    let names = |observer: &str| -> Vec<String> {
        let loaded: Vec<String> = Model::builtin_observer_family(observer)
            .expect("a built-in family")
            .iter()
            .map(|model| model.name().to_string())
            .collect();
        // The names alone, read without loading, are the same family.
        let listed = Model::builtin_observer_family_names(observer).expect("names");
        assert_eq!(loaded, listed, "{observer}");
        loaded
    };
    // `machine` is the mix measured to serve unseen classifiers best, not alpha 1.
    assert_eq!(
        ObserverMix::from_name("machine"),
        Some(ObserverMix::MACHINE)
    );
    assert_eq!(ObserverMix::from_name("0.5"), Some(ObserverMix::MACHINE));
    assert_eq!(names("machine"), ["mixed-q1", "mixed-q2"]);
    assert_eq!(names("1"), ["machine-q1", "machine-q2"]);
    // No network trained at alpha 0 is built in: the person's family is the MS-SSIM one.
    assert_eq!(ObserverMix::from_name("0"), Some(ObserverMix::HUMAN));
    assert_eq!(ObserverMix::from_name("-0"), Some(ObserverMix::HUMAN));
    assert_eq!(names("human"), ["msssim-q1", "msssim-q2", "msssim-q3"]);
    for bad in ["most", "1.5", "-0.1", "NaN", ""] {
        assert_eq!(ObserverMix::from_name(bad), None, "{bad}");
        assert!(
            matches!(
                Model::builtin_observer_family(bad),
                Err(Error::NoSuchModel(_))
            ),
            "{bad}"
        );
        assert!(
            matches!(
                Model::builtin_observer_family_names(bad),
                Err(Error::NoSuchModel(_))
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        Model::builtin_observer_family("0.3"),
        Err(Error::NoSuchModel(_))
    ));
}
