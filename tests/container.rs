//! Tests of the `.ocu` container: round trips, and one test for each error a reader or writer
//! reports.

use std::io::{self, Read};

use ocular::container::{
    Bitstream, ContainerError, Extension, FormatError, Header, HeaderError, InvalidInput, Latent,
    LatentShape, ModelFingerprint, ObserverMix, Section, UnsupportedError, CRITICAL_EXTENSION_BIT,
    MAGIC, MAX_HEADER_BYTES, OBSERVER_MIX_KIND, QUANTIZATION_STEP_KIND, SHRINKAGE_KIND,
    VERSION_MAJOR, VERSION_MINOR, Y_DOWNSAMPLING, Z_DOWNSAMPLING,
};
use ocular::limits::{Limit, Limits, LimitsExceeded};
use ocular::{QuantizationStep, Shrinkage};
use proptest::prelude::*;

// Offsets of fields in a file with an `n`-byte model name (see docs/bitstream.md).
const VERSION_MAJOR_AT: usize = 4;
const VERSION_MINOR_AT: usize = 5;
const HEADER_LEN_AT: usize = 6;
const NAME_LEN_AT: usize = 16;
const NAME_AT: usize = 17;
const fn quality_at(n: usize) -> usize {
    NAME_AT + n
}
const fn width_at(n: usize) -> usize {
    quality_at(n) + 1
}
const fn height_at(n: usize) -> usize {
    width_at(n) + 4
}
const fn channels_at(n: usize) -> usize {
    height_at(n) + 4
}
const fn y_shape_at(n: usize) -> usize {
    channels_at(n) + 1
}
const fn z_shape_at(n: usize) -> usize {
    y_shape_at(n) + 12
}
/// End of the fixed header fields = start of the extension records.
const fn records_at(n: usize) -> usize {
    z_shape_at(n) + 12
}

fn header(width: u32, height: u32, channels: u8, y_channels: u32, z_channels: u32) -> Header {
    Header {
        model_fingerprint: ModelFingerprint([0xde, 0xad, 0xbe, 0xef, 0x01, 0x23, 0x45, 0x67]),
        model_name: "mse-q3".to_owned(),
        quality: 3,
        width,
        height,
        channels,
        y_shape: LatentShape::for_image(Latent::Y, y_channels, width, height),
        z_shape: LatentShape::for_image(Latent::Z, z_channels, width, height),
        quantization_step: None,
        observer_mix: None,
        shrinkage: None,
    }
}

fn sample() -> Bitstream {
    Bitstream {
        header: header(300, 200, 3, 192, 128),
        z_stream: (0..40_u8).collect(),
        y_stream: (0..=255_u8).cycle().take(700).collect(),
    }
}

fn sample_bytes() -> Vec<u8> {
    sample().to_bytes().expect("valid sample")
}

const NAME_LEN: usize = "mse-q3".len();

/// Recomputes the CRC-32 at the end of a (modified) file.
fn fix_crc(bytes: &mut [u8]) {
    let end = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..end]);
    bytes[end..].copy_from_slice(&crc.to_le_bytes());
}

fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn parse(bytes: &[u8]) -> Result<Bitstream, ContainerError> {
    Bitstream::parse(bytes, &Limits::default())
}

fn format_error(result: Result<Bitstream, ContainerError>) -> FormatError {
    match result {
        Err(ContainerError::Format(e)) => e,
        other => panic!("expected a format error, got {other:?}"),
    }
}

fn header_error(result: Result<Bitstream, ContainerError>) -> HeaderError {
    match format_error(result) {
        FormatError::InvalidHeader(e) => e,
        other => panic!("expected an invalid header, got {other:?}"),
    }
}

fn limits_error(result: Result<Bitstream, ContainerError>) -> LimitsExceeded {
    match result {
        Err(ContainerError::LimitsExceeded(e)) => e,
        other => panic!("expected a limits error, got {other:?}"),
    }
}

fn unsupported_error(result: Result<Bitstream, ContainerError>) -> UnsupportedError {
    match result {
        Err(ContainerError::Unsupported(e)) => e,
        other => panic!("expected an unsupported error, got {other:?}"),
    }
}

// ----------------------------------------------------------------------------------------------
// Layout and round trips
// ----------------------------------------------------------------------------------------------

#[test]
fn layout_matches_the_documented_byte_table() {
    let b = sample();
    let bytes = b.to_bytes().unwrap();
    assert_eq!(bytes[..4], MAGIC);
    assert_eq!(&bytes[..4], b"\x8fOCU");
    assert_eq!(bytes[VERSION_MAJOR_AT], VERSION_MAJOR);
    assert_eq!(bytes[VERSION_MINOR_AT], VERSION_MINOR);
    let header_len = u16::from_le_bytes([bytes[HEADER_LEN_AT], bytes[HEADER_LEN_AT + 1]]);
    assert_eq!(usize::from(header_len), 43 + NAME_LEN);
    assert_eq!(bytes[8..16], b.header.model_fingerprint.0);
    assert_eq!(usize::from(bytes[NAME_LEN_AT]), NAME_LEN);
    assert_eq!(&bytes[NAME_AT..NAME_AT + NAME_LEN], b"mse-q3");
    assert_eq!(bytes[quality_at(NAME_LEN)], 3);
    assert_eq!(bytes[width_at(NAME_LEN)..][..4], 300_u32.to_le_bytes());
    assert_eq!(bytes[height_at(NAME_LEN)..][..4], 200_u32.to_le_bytes());
    assert_eq!(bytes[channels_at(NAME_LEN)], 3);
    let y = y_shape_at(NAME_LEN);
    assert_eq!(bytes[y..y + 4], 192_u32.to_le_bytes());
    assert_eq!(bytes[y + 4..y + 8], 13_u32.to_le_bytes()); // ceil(200 / 16)
    assert_eq!(bytes[y + 8..y + 12], 19_u32.to_le_bytes()); // ceil(300 / 16)
    let z = z_shape_at(NAME_LEN);
    assert_eq!(bytes[z + 4..z + 8], 4_u32.to_le_bytes()); // ceil(200 / 64)
    assert_eq!(bytes[z + 8..z + 12], 5_u32.to_le_bytes()); // ceil(300 / 64)
    let streams = records_at(NAME_LEN);
    assert_eq!(streams, 8 + usize::from(header_len));
    assert_eq!(bytes[streams..streams + 4], 40_u32.to_le_bytes());
    assert_eq!(bytes[streams + 4..streams + 44], b.z_stream[..]);
    assert_eq!(bytes[streams + 44..streams + 48], 700_u32.to_le_bytes());
    let crc_at = bytes.len() - 4;
    assert_eq!(crc_at, streams + 48 + 700);
    assert_eq!(
        bytes[crc_at..],
        crc32fast::hash(&bytes[..crc_at]).to_le_bytes()
    );
}

#[test]
fn overhead_is_the_file_minus_the_streams() {
    let b = sample();
    let len = b.to_bytes().unwrap().len();
    assert_eq!(b.overhead_bytes(), len - 40 - 700);
    assert_eq!(b.overhead_bytes(), 63 + NAME_LEN);
    assert_eq!(b.encoded_len(), len);
}

#[test]
fn write_to_and_read_from_round_trip() {
    let b = sample();
    let mut out = Vec::new();
    b.write_to(&mut out).unwrap();
    assert_eq!(out, b.to_bytes().unwrap());
    let back = Bitstream::read_from(out.as_slice(), &Limits::default()).unwrap();
    assert_eq!(back, b);
}

#[test]
fn read_from_reads_in_small_pieces() {
    /// Hands out at most 3 bytes per read.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(3).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let bytes = sample_bytes();
    let back = Bitstream::read_from(Trickle(&bytes), &Limits::default()).unwrap();
    assert_eq!(back, sample());
}

#[test]
fn empty_streams_and_smallest_image() {
    let b = Bitstream {
        header: Header {
            model_name: String::new(),
            ..header(1, 1, 1, 1, 1)
        },
        z_stream: Vec::new(),
        y_stream: Vec::new(),
    };
    assert_eq!(b.header.y_shape, LatentShape::new(1, 1, 1));
    let bytes = b.to_bytes().unwrap();
    assert_eq!(bytes.len(), 63);
    assert_eq!(parse(&bytes).unwrap(), b);
}

#[test]
fn latent_shapes_round_up() {
    let h = header(1, 17, 1, 8, 4);
    assert_eq!(h.y_shape, LatentShape::new(8, 2, 1));
    assert_eq!(h.z_shape, LatentShape::new(4, 1, 1));
    let h = header(64, 65, 1, 8, 4);
    assert_eq!(h.y_shape, LatentShape::new(8, 5, 4));
    assert_eq!(h.z_shape, LatentShape::new(4, 2, 1));
    assert_eq!(Y_DOWNSAMPLING, 16);
    assert_eq!(Z_DOWNSAMPLING, 64);
    assert_eq!(LatentShape::new(192, 13, 19).elements(), 192 * 13 * 19);
    assert_eq!(
        LatentShape::new(u32::MAX, u32::MAX, u32::MAX).elements(),
        u64::MAX
    );
}

#[test]
fn fingerprint_displays_as_hex() {
    let f = ModelFingerprint([0xde, 0xad, 0xbe, 0xef, 0x01, 0x23, 0x45, 0x67]);
    assert_eq!(f.to_string(), "deadbeef01234567");
}

#[test]
fn decoded_channels_drop_alpha_and_keep_gray() {
    let c = |channels| header(8, 8, channels, 1, 1).decoded_channels();
    assert_eq!([c(1), c(2), c(3), c(4)], [1, 1, 3, 3]);
}

#[test]
fn default_limits() {
    let l = Limits::default();
    assert_eq!(l.max_pixels, 1 << 27);
    assert_eq!(l.max_stream_bytes, 512 << 20);
    assert_eq!(l.max_latent_elements, 1 << 28);
}

fn arb_bitstream() -> impl Strategy<Value = Bitstream> {
    (
        any::<[u8; 8]>(),
        "\\PC{0,60}",
        any::<u8>(),
        (1_u32..=5000, 1_u32..=5000, 1_u8..=4),
        (1_u32..=320, 1_u32..=320),
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::collection::vec(any::<u8>(), 0..1500),
    )
        .prop_map(
            |(fp, name, quality, (w, h, ch), (yc, zc), z, y)| Bitstream {
                header: Header {
                    model_fingerprint: ModelFingerprint(fp),
                    model_name: name,
                    quality,
                    ..header(w, h, ch, yc, zc)
                },
                z_stream: z,
                y_stream: y,
            },
        )
}

proptest! {
    #[test]
    fn round_trip(b in arb_bitstream()) {
        let bytes = b.to_bytes().unwrap();
        prop_assert_eq!(bytes.len(), b.encoded_len());
        prop_assert_eq!(b.overhead_bytes(), bytes.len() - b.z_stream.len() - b.y_stream.len());
        prop_assert_eq!(&parse(&bytes).unwrap(), &b);
        prop_assert_eq!(&Bitstream::read_from(bytes.as_slice(), &Limits::default()).unwrap(), &b);
    }

    #[test]
    fn round_trip_skips_non_critical_extensions(
        b in arb_bitstream(),
        records in proptest::collection::vec(
            (
                // Any non-critical kind but the one the header writes itself (the shrinkage).
                (0_u16..CRITICAL_EXTENSION_BIT).prop_filter("a kind of the header's own", |kind| {
                    *kind != SHRINKAGE_KIND
                }),
                proptest::collection::vec(any::<u8>(), 0..40),
            ),
            0..6,
        ),
    ) {
        let extensions: Vec<Extension> =
            records.into_iter().map(|(kind, data)| Extension::new(kind, data)).collect();
        let bytes = b.to_bytes_with_extensions(&extensions).unwrap();
        prop_assert_eq!(&parse(&bytes).unwrap(), &b);
        let (back, skipped) = Bitstream::parse_with_extensions(&bytes, &Limits::default()).unwrap();
        prop_assert_eq!(&back, &b);
        prop_assert_eq!(&skipped, &extensions);
    }

    /// Whatever the header says, the writer either refuses it or writes a file that reads back.
    #[test]
    fn writer_output_always_reads_back(
        w in any::<u32>(), h in any::<u32>(), ch in any::<u8>(),
        y in any::<(u32, u32, u32)>(), z in any::<(u32, u32, u32)>(),
        consistent in any::<bool>(),
    ) {
        let mut hd = header(w, h, ch, y.0, z.0);
        if !consistent {
            hd.y_shape = LatentShape::new(y.0, y.1, y.2);
            hd.z_shape = LatentShape::new(z.0, z.1, z.2);
        }
        let b = Bitstream { header: hd, z_stream: vec![1, 2], y_stream: vec![3] };
        match b.to_bytes() {
            Ok(bytes) => prop_assert_eq!(Bitstream::parse(&bytes, &Limits::none()).unwrap(), b),
            Err(ContainerError::InvalidInput(InvalidInput::Header(e))) => {
                prop_assert_eq!(b.header.validate(), Err(e));
            }
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }
}

// ----------------------------------------------------------------------------------------------
// One test per error
// ----------------------------------------------------------------------------------------------

#[test]
fn bad_magic() {
    let mut bytes = sample_bytes();
    bytes[0] = b'X';
    let err = parse(&bytes).unwrap_err();
    assert!(matches!(err, ContainerError::Format(FormatError::BadMagic)));
    assert_eq!(err.to_string(), "not an .ocu file (bad magic number)");
    // A PNG file, and short inputs that already differ from the magic.
    assert_eq!(
        format_error(parse(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")),
        FormatError::BadMagic
    );
    assert_eq!(format_error(parse(b"O")), FormatError::BadMagic);
    assert_eq!(format_error(parse(b"\x8fOC!")), FormatError::BadMagic);
}

#[test]
fn unknown_major_version_is_unsupported() {
    for major in [0, 2, 255] {
        let mut bytes = sample_bytes();
        bytes[VERSION_MAJOR_AT] = major;
        bytes[VERSION_MINOR_AT] = 4;
        fix_crc(&mut bytes);
        let err = parse(&bytes).unwrap_err();
        assert_eq!(
            unsupported_error(Err(err)),
            UnsupportedError::Version { major, minor: 4 }
        );
    }
    let mut bytes = sample_bytes();
    bytes[VERSION_MAJOR_AT] = 2;
    let msg = parse(&bytes).unwrap_err().to_string();
    let version = format!("unsupported .ocu format version 2.{VERSION_MINOR}");
    assert!(msg.contains(&version), "{msg}");
    assert!(msg.contains("newer ocular"), "{msg}");
}

#[test]
fn newer_minor_version_is_accepted() {
    for minor in [1, 7, 255] {
        let mut bytes = sample_bytes();
        bytes[VERSION_MINOR_AT] = minor;
        fix_crc(&mut bytes);
        assert_eq!(parse(&bytes).unwrap(), sample());
    }
}

#[test]
fn truncated_at_every_offset() {
    let bytes = sample_bytes();
    for len in 0..bytes.len() {
        match format_error(parse(&bytes[..len])) {
            FormatError::Truncated {
                needed, available, ..
            } => assert!(available < needed, "at {len}"),
            other => panic!("truncation at {len}: {other:?}"),
        }
        // A reader that ends early says the same.
        let from_reader = Bitstream::read_from(&bytes[..len], &Limits::default());
        assert_eq!(
            format_error(from_reader),
            format_error(parse(&bytes[..len]))
        );
    }
    let err = format_error(parse(&bytes[..bytes.len() - 100]));
    assert_eq!(
        err,
        FormatError::Truncated {
            section: Section::Stream(Latent::Y),
            needed: 700,
            available: 700 - 100 + 4,
        }
    );
    assert_eq!(
        err.to_string(),
        "truncated .ocu file: the y stream needs 700 bytes but only 604 remain"
    );
    assert!(matches!(
        format_error(parse(&[])),
        FormatError::Truncated {
            section: Section::Magic,
            ..
        }
    ));
}

#[test]
fn crc_mismatch() {
    let good = sample_bytes();
    // A flipped bit anywhere that keeps the framing intact: fingerprint, quality, streams, CRC.
    for at in [
        8,
        quality_at(NAME_LEN),
        records_at(NAME_LEN) + 10,
        good.len() - 50,
        good.len() - 1,
    ] {
        let mut bytes = good.clone();
        bytes[at] ^= 0x10;
        assert!(
            matches!(
                format_error(parse(&bytes)),
                FormatError::ChecksumMismatch { .. }
            ),
            "flip at {at}"
        );
    }
    let mut bytes = good.clone();
    let n = bytes.len();
    bytes[n - 4..].copy_from_slice(&0x1234_5678_u32.to_le_bytes());
    let err = format_error(parse(&bytes));
    assert_eq!(
        err,
        FormatError::ChecksumMismatch {
            stored: 0x1234_5678,
            computed: crc32fast::hash(&good[..n - 4]),
        }
    );
    assert!(err
        .to_string()
        .starts_with("corrupt .ocu file: CRC-32 mismatch (stored 12345678"));
}

#[test]
fn corrupt_header_fields_report_crc_first() {
    // Without recomputing the CRC, a corrupt width is a checksum error, not a shape error.
    let mut bytes = sample_bytes();
    bytes[width_at(NAME_LEN)] ^= 1;
    assert!(matches!(
        format_error(parse(&bytes)),
        FormatError::ChecksumMismatch { .. }
    ));
}

#[test]
fn trailing_bytes() {
    let mut bytes = sample_bytes();
    let len = bytes.len() as u64;
    bytes.extend_from_slice(b"garbage");
    let err = format_error(parse(&bytes));
    assert_eq!(err, FormatError::TrailingBytes { offset: len });
    assert!(err.to_string().contains("unexpected data after the end"));
    let from_reader = Bitstream::read_from(bytes.as_slice(), &Limits::default());
    assert_eq!(
        format_error(from_reader),
        FormatError::TrailingBytes { offset: len }
    );
}

#[test]
fn pixel_limit() {
    let bytes = sample_bytes();
    let limits = Limits {
        max_pixels: 300 * 200 - 1,
        ..Limits::default()
    };
    let err = limits_error(Bitstream::parse(&bytes, &limits));
    assert_eq!(
        err,
        LimitsExceeded {
            limit: Limit::Pixels,
            value: 60_000,
            allowed: 59_999,
        }
    );
    assert_eq!(
        err.to_string(),
        "image size (pixels) 60000 exceeds the limit of 59999 (raise it in `Limits` to read this file)"
    );
    let limits = Limits {
        max_pixels: 300 * 200,
        ..Limits::default()
    };
    assert!(Bitstream::parse(&bytes, &limits).is_ok());
}

#[test]
fn pixel_limit_default_rejects_huge_images() {
    // A valid, tiny file declaring a 100000 x 100000 image.
    let b = Bitstream {
        header: header(100_000, 100_000, 3, 1, 1),
        z_stream: vec![0],
        y_stream: vec![0],
    };
    let bytes = b.to_bytes().unwrap();
    assert_eq!(limits_error(parse(&bytes)).limit, Limit::Pixels);
    assert!(Bitstream::parse(&bytes, &Limits::none()).is_ok());
}

#[test]
fn latent_elements_limit() {
    let bytes = sample_bytes();
    let elements = 192 * 13 * 19 + 128 * 4 * 5;
    let limits = Limits {
        max_latent_elements: elements - 1,
        ..Limits::default()
    };
    let err = limits_error(Bitstream::parse(&bytes, &limits));
    assert_eq!(
        err,
        LimitsExceeded {
            limit: Limit::LatentElements,
            value: elements,
            allowed: elements - 1,
        }
    );
    // Absurd channel counts hit the default limit.
    let b = Bitstream {
        header: header(300, 200, 3, u32::MAX, 1),
        ..sample()
    };
    let err = limits_error(parse(&b.to_bytes().unwrap()));
    assert_eq!(err.limit, Limit::LatentElements);
}

#[test]
fn stream_bytes_limit() {
    let bytes = sample_bytes();
    // The z stream alone is over the limit.
    let limits = Limits {
        max_stream_bytes: 39,
        ..Limits::default()
    };
    let err = limits_error(Bitstream::parse(&bytes, &limits));
    assert_eq!(
        (err.limit, err.value, err.allowed),
        (Limit::StreamBytes, 40, 39)
    );
    // Both streams together are.
    let limits = Limits {
        max_stream_bytes: 739,
        ..Limits::default()
    };
    let err = limits_error(Bitstream::parse(&bytes, &limits));
    assert_eq!(
        (err.limit, err.value, err.allowed),
        (Limit::StreamBytes, 740, 739)
    );
    let err = limits_error(Bitstream::read_from(bytes.as_slice(), &limits));
    assert_eq!(err.value, 740);
}

#[test]
fn huge_stream_length_is_refused_before_reading() {
    let mut bytes = sample_bytes();
    let at = records_at(NAME_LEN);
    put_u32(&mut bytes, at, u32::MAX);
    fix_crc(&mut bytes);
    // Default limits: refused by the limit.
    let err = limits_error(parse(&bytes));
    assert_eq!(
        (err.limit, err.value),
        (Limit::StreamBytes, u64::from(u32::MAX))
    );
    // No limits: the length runs past the end of the file.
    let err = format_error(Bitstream::parse(&bytes, &Limits::none()));
    assert!(matches!(
        err,
        FormatError::Truncated {
            section: Section::Stream(Latent::Z),
            needed: 4_294_967_295,
            ..
        }
    ));
    // A reader that claims 4 GiB and then ends: only the bytes that exist are read.
    let err = format_error(Bitstream::read_from(&bytes[..at + 10], &Limits::none()));
    assert!(matches!(err, FormatError::Truncated { .. }));
}

#[test]
fn header_length_too_short() {
    // Shrinking the header length cuts the z shape short.
    let mut bytes = sample_bytes();
    let body = u16::from_le_bytes([bytes[HEADER_LEN_AT], bytes[HEADER_LEN_AT + 1]]);
    let body_start = 8;
    let mut shrunk = bytes[..body_start].to_vec();
    shrunk[HEADER_LEN_AT..HEADER_LEN_AT + 2].copy_from_slice(&(body - 5).to_le_bytes());
    shrunk.extend_from_slice(&bytes[body_start..body_start + usize::from(body) - 5]);
    shrunk.extend_from_slice(&bytes[body_start + usize::from(body)..]);
    fix_crc(&mut shrunk);
    let err = format_error(parse(&shrunk));
    assert_eq!(
        err,
        FormatError::HeaderTooShort {
            section: Section::LatentShape(Latent::Z),
            header_len: body - 5,
            needed: 12,
            available: 7,
        }
    );
    assert!(err
        .to_string()
        .starts_with("corrupt .ocu header: its length (44 bytes)"));
    // A name length running past the header.
    bytes[NAME_LEN_AT] = 255;
    fix_crc(&mut bytes);
    assert!(matches!(
        format_error(parse(&bytes)),
        FormatError::HeaderTooShort {
            section: Section::ModelName,
            ..
        }
    ));
}

#[test]
fn extension_record_overrunning_the_header() {
    let ext = [Extension::new(7, vec![1, 2, 3, 4])];
    let mut bytes = sample().to_bytes_with_extensions(&ext).unwrap();
    // The record's length field says 5 where 4 bytes remain.
    let len_at = records_at(NAME_LEN) + 2;
    bytes[len_at] = 5;
    fix_crc(&mut bytes);
    assert!(matches!(
        format_error(parse(&bytes)),
        FormatError::HeaderTooShort {
            section: Section::ExtensionRecord,
            needed: 5,
            available: 4,
            ..
        }
    ));
}

#[test]
fn inconsistent_shapes() {
    // y one row too tall.
    let mut bytes = sample_bytes();
    put_u32(&mut bytes, y_shape_at(NAME_LEN) + 4, 14);
    fix_crc(&mut bytes);
    let err = header_error(parse(&bytes));
    assert_eq!(
        err,
        HeaderError::LatentShapeMismatch {
            latent: Latent::Y,
            found: LatentShape::new(192, 14, 19),
            expected: LatentShape::new(192, 13, 19),
            image_width: 300,
            image_height: 200,
        }
    );
    let msg = parse(&bytes).unwrap_err().to_string();
    assert_eq!(
        msg,
        "invalid .ocu header: the y latent shape 192x14x19 (channels x height x width) does not \
         match the 300x200 image, which gives 192x13x19 when downsampled by 16"
    );
    // z one column too narrow.
    let mut bytes = sample_bytes();
    put_u32(&mut bytes, z_shape_at(NAME_LEN) + 8, 4);
    fix_crc(&mut bytes);
    assert!(matches!(
        header_error(parse(&bytes)),
        HeaderError::LatentShapeMismatch {
            latent: Latent::Z,
            ..
        }
    ));
    // The image size changed under the shapes.
    let mut bytes = sample_bytes();
    put_u32(&mut bytes, width_at(NAME_LEN), 600);
    fix_crc(&mut bytes);
    assert!(matches!(
        header_error(parse(&bytes)),
        HeaderError::LatentShapeMismatch { .. }
    ));
}

#[test]
fn zero_image_dimensions() {
    for (at, expected) in [
        (width_at(NAME_LEN), (0, 200)),
        (height_at(NAME_LEN), (300, 0)),
    ] {
        let mut bytes = sample_bytes();
        put_u32(&mut bytes, at, 0);
        fix_crc(&mut bytes);
        assert_eq!(
            header_error(parse(&bytes)),
            HeaderError::ZeroImageSize {
                width: expected.0,
                height: expected.1,
            }
        );
    }
}

#[test]
fn zero_latent_dimensions() {
    for (latent, at) in [
        (Latent::Y, y_shape_at(NAME_LEN)),
        (Latent::Y, y_shape_at(NAME_LEN) + 4),
        (Latent::Z, z_shape_at(NAME_LEN)),
        (Latent::Z, z_shape_at(NAME_LEN) + 8),
    ] {
        let mut bytes = sample_bytes();
        put_u32(&mut bytes, at, 0);
        fix_crc(&mut bytes);
        match header_error(parse(&bytes)) {
            HeaderError::ZeroLatentDimension { latent: l, .. } => assert_eq!(l, latent),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn invalid_channel_count() {
    for channels in [0, 5, 255] {
        let mut bytes = sample_bytes();
        bytes[channels_at(NAME_LEN)] = channels;
        fix_crc(&mut bytes);
        assert_eq!(
            header_error(parse(&bytes)),
            HeaderError::InvalidChannels { channels }
        );
    }
}

#[test]
fn model_name_not_utf8() {
    let mut bytes = sample_bytes();
    bytes[NAME_AT + 1] = 0xff;
    fix_crc(&mut bytes);
    let err = format_error(parse(&bytes));
    assert_eq!(err, FormatError::ModelNameNotUtf8);
    assert_eq!(
        err.to_string(),
        "corrupt .ocu header: the model name is not valid UTF-8"
    );
}

#[test]
fn model_name_with_control_character() {
    let mut bytes = sample_bytes();
    bytes[NAME_AT + 1] = 0x1b; // ESC: no terminal escapes through `ocular info`
    fix_crc(&mut bytes);
    assert_eq!(
        header_error(parse(&bytes)),
        HeaderError::ModelNameControlCharacter
    );
}

#[test]
fn unknown_non_critical_extension_is_skipped() {
    let extensions = [
        Extension::new(0x0001, b"tiles? not yet".to_vec()),
        Extension::new(0x7fff, Vec::new()),
    ];
    assert!(!extensions[0].is_critical());
    let bytes = sample().to_bytes_with_extensions(&extensions).unwrap();
    assert_eq!(bytes.len(), sample_bytes().len() + 4 + 14 + 4);
    assert_eq!(parse(&bytes).unwrap(), sample());
    let (b, skipped) = Bitstream::parse_with_extensions(&bytes, &Limits::default()).unwrap();
    assert_eq!(b, sample());
    assert_eq!(skipped, extensions);
}

#[test]
fn unknown_critical_extension_is_rejected() {
    let extensions = [
        Extension::new(0x0001, vec![9; 3]),
        Extension::new(CRITICAL_EXTENSION_BIT | 0x0003, vec![1, 2]),
    ];
    assert!(extensions[1].is_critical());
    let bytes = sample().to_bytes_with_extensions(&extensions).unwrap();
    let err = parse(&bytes).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported .ocu feature: the file needs critical extension 0x8003, which this reader \
         does not know (the file may need a newer ocular)"
    );
    assert_eq!(
        unsupported_error(Err(err)),
        UnsupportedError::CriticalExtension { kind: 0x8003 }
    );
}

#[test]
fn critical_extension_is_reported_before_header_rules() {
    // A future feature may change what the fields mean: an old reader must say "unsupported",
    // not "inconsistent shapes".
    let bytes = sample()
        .to_bytes_with_extensions(&[Extension::new(0x8003, Vec::new())])
        .unwrap();
    let mut bytes = bytes;
    put_u32(&mut bytes, y_shape_at(NAME_LEN) + 4, 1);
    fix_crc(&mut bytes);
    assert!(matches!(
        parse(&bytes),
        Err(ContainerError::Unsupported(
            UnsupportedError::CriticalExtension { kind: 0x8003 }
        ))
    ));
}

#[test]
fn writer_rejects_invalid_headers() {
    let cases = [
        (
            Header {
                model_name: "x".repeat(256),
                ..sample().header
            },
            HeaderError::ModelNameTooLong { len: 256 },
        ),
        (
            Header {
                model_name: "bad\nname".to_owned(),
                ..sample().header
            },
            HeaderError::ModelNameControlCharacter,
        ),
        (
            Header {
                width: 0,
                ..sample().header
            },
            HeaderError::ZeroImageSize {
                width: 0,
                height: 200,
            },
        ),
        (
            Header {
                channels: 5,
                ..sample().header
            },
            HeaderError::InvalidChannels { channels: 5 },
        ),
        (
            Header {
                y_shape: LatentShape::new(192, 200, 300),
                ..sample().header
            },
            HeaderError::LatentShapeMismatch {
                latent: Latent::Y,
                found: LatentShape::new(192, 200, 300),
                expected: LatentShape::new(192, 13, 19),
                image_width: 300,
                image_height: 200,
            },
        ),
    ];
    for (header, expected) in cases {
        let b = Bitstream { header, ..sample() };
        match b.to_bytes() {
            Err(ContainerError::InvalidInput(InvalidInput::Header(e))) => assert_eq!(e, expected),
            other => panic!("{other:?}"),
        }
        let mut out = Vec::new();
        assert!(b.write_to(&mut out).is_err());
        assert!(out.is_empty(), "nothing is written for an invalid header");
    }
    // 255 bytes is fine.
    let b = Bitstream {
        header: Header {
            model_name: "é".repeat(127) + "x",
            ..sample().header
        },
        ..sample()
    };
    assert_eq!(parse(&b.to_bytes().unwrap()).unwrap(), b);
}

#[test]
fn writer_rejects_oversized_header() {
    let fits = MAX_HEADER_BYTES - (43 + NAME_LEN) - 4;
    let ok = sample().to_bytes_with_extensions(&[Extension::new(1, vec![0; fits])]);
    assert!(parse(&ok.unwrap()).is_ok());
    let err = sample()
        .to_bytes_with_extensions(&[Extension::new(1, vec![0; fits + 1])])
        .unwrap_err();
    assert!(matches!(
        err,
        ContainerError::InvalidInput(InvalidInput::HeaderTooLarge { len: 65_536 })
    ));
    assert!(err
        .to_string()
        .starts_with("cannot write .ocu file: the header is 65536 bytes"));
}

#[test]
fn io_errors_are_reported() {
    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
    }
    impl io::Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let err = Bitstream::read_from(Broken, &Limits::default()).unwrap_err();
    assert!(matches!(err, ContainerError::Io(_)));
    assert_eq!(err.to_string(), "disk on fire");
    let err = sample().write_to(Broken).unwrap_err();
    assert!(matches!(err, ContainerError::Io(_)));
}

#[test]
fn documented_example_parses() {
    // The example at the end of docs/bitstream.md.
    let hex = "8f4f4355010037000102030405060708066d73652d713303640000002800000003c000000003000000\
               0700000080000000010000000200000001000200686904000000aaaaaaaa08000000101112131415\
               16170442767d";
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(bytes.len(), 87);
    let expected = Bitstream {
        header: Header {
            model_fingerprint: ModelFingerprint([1, 2, 3, 4, 5, 6, 7, 8]),
            model_name: "mse-q3".to_owned(),
            quality: 3,
            width: 100,
            height: 40,
            channels: 3,
            y_shape: LatentShape::new(192, 3, 7),
            z_shape: LatentShape::new(128, 1, 2),
            quantization_step: None,
            observer_mix: None,
            shrinkage: None,
        },
        z_stream: vec![0xaa; 4],
        y_stream: (0x10..0x18).collect(),
    };
    let extensions = vec![Extension::new(1, b"hi".to_vec())];
    let (parsed, skipped) = Bitstream::parse_with_extensions(&bytes, &Limits::default()).unwrap();
    assert_eq!(parsed, expected);
    assert_eq!(skipped, extensions);
    // The example is a 1.0 file; this writer differs only in its minor version (and the CRC).
    let mut written = expected.to_bytes_with_extensions(&extensions).unwrap();
    written[VERSION_MINOR_AT] = 0;
    fix_crc(&mut written);
    assert_eq!(written, bytes);
    assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
}

fn with_step(step: f32) -> Bitstream {
    let mut b = sample();
    b.header.quantization_step = Some(QuantizationStep::new(step).unwrap());
    b
}

#[test]
fn quantization_step_round_trips_in_a_critical_record() {
    let b = with_step(0.371_5);
    let bytes = b.to_bytes().unwrap();
    // One record after the fixed fields: kind 0x8001, length 4, the f32's bits.
    let at = records_at(NAME_LEN);
    assert_eq!(bytes[at..at + 4], [0x01, 0x80, 4, 0]);
    assert_eq!(bytes[at + 4..at + 8], 0.371_5_f32.to_le_bytes());
    assert_eq!(
        QUANTIZATION_STEP_KIND & CRITICAL_EXTENSION_BIT,
        CRITICAL_EXTENSION_BIT
    );
    assert_eq!(bytes.len(), b.encoded_len());
    assert_eq!(b.overhead_bytes(), sample().overhead_bytes() + 8);
    let (parsed, skipped) = Bitstream::parse_with_extensions(&bytes, &Limits::default()).unwrap();
    assert_eq!(parsed, b);
    assert!(
        skipped.is_empty(),
        "a known record is not handed out as unknown"
    );
    // With other records beside it.
    let others = [Extension::new(0x0001, vec![7])];
    let bytes = b.to_bytes_with_extensions(&others).unwrap();
    let (parsed, skipped) = Bitstream::parse_with_extensions(&bytes, &Limits::default()).unwrap();
    assert_eq!((parsed, skipped), (b, others.to_vec()));
}

#[test]
fn invalid_quantization_step_records_are_format_errors() {
    let bytes = with_step(2.0).to_bytes().unwrap();
    let value_at = records_at(NAME_LEN) + 4;
    for bad in [0.0_f32, -1.0, f32::NAN, f32::INFINITY, 1e6] {
        let mut b = bytes.clone();
        b[value_at..value_at + 4].copy_from_slice(&bad.to_le_bytes());
        fix_crc(&mut b);
        assert!(
            matches!(
                format_error(parse(&b)),
                FormatError::InvalidQuantizationStep(_)
            ),
            "{bad}"
        );
    }
    // A short record, and a repeated one.
    let one = 1.0_f32.to_le_bytes();
    for b in malformed_f32_records(QUANTIZATION_STEP_KIND, 1.0, &[]) {
        assert!(matches!(
            format_error(parse(&b)),
            FormatError::InvalidQuantizationStep(_)
        ));
    }
    // Data after the f32 belongs to a later minor version: ignored.
    let longer = with_raw_records(&record(
        QUANTIZATION_STEP_KIND,
        &[&one[..], &[9, 9]].concat(),
    ));
    assert_eq!(
        parse(&longer).unwrap().header.quantization_step,
        QuantizationStep::new(1.0).ok()
    );
}

/// The sample file with `records` as the raw bytes of its extension records.
fn with_raw_records(records: &[u8]) -> Vec<u8> {
    let plain = sample_bytes();
    let at = records_at(NAME_LEN);
    let mut bytes = [&plain[..at], records, &plain[at..]].concat();
    let header_len = u16::from_le_bytes([plain[HEADER_LEN_AT], plain[HEADER_LEN_AT + 1]]);
    let header_len = header_len + records.len() as u16;
    bytes[HEADER_LEN_AT..HEADER_LEN_AT + 2].copy_from_slice(&header_len.to_le_bytes());
    fix_crc(&mut bytes);
    bytes
}

/// The bytes of an extension record of `kind` holding `data`.
fn record(kind: u16, data: &[u8]) -> Vec<u8> {
    let len = u16::try_from(data.len()).expect("a short record");
    [&kind.to_le_bytes()[..], &len.to_le_bytes(), data].concat()
}

/// Files whose single-`f32` record of `kind` is malformed: one for each value of `bad`, one
/// too short, and one with the record of `valid` twice.
fn malformed_f32_records(kind: u16, valid: f32, bad: &[f32]) -> Vec<Vec<u8>> {
    let valid = valid.to_le_bytes();
    let mut files: Vec<Vec<u8>> = bad
        .iter()
        .map(|v| with_raw_records(&record(kind, &v.to_le_bytes())))
        .collect();
    files.push(with_raw_records(&record(kind, &[0, 0])));
    files.push(with_raw_records(
        &[record(kind, &valid), record(kind, &valid)].concat(),
    ));
    files
}

#[test]
fn writer_refuses_a_step_record_among_extensions() {
    let err = sample()
        .to_bytes_with_extensions(&[Extension::new(QUANTIZATION_STEP_KIND, vec![0; 4])])
        .unwrap_err();
    assert!(matches!(
        err,
        ContainerError::InvalidInput(InvalidInput::ReservedExtension { kind: 0x8001 })
    ));
}

#[test]
fn observer_mix_round_trips_in_a_critical_record_after_the_step() {
    let mut b = with_step(0.5);
    b.header.observer_mix = ObserverMix::new(0.3);
    let bytes = b.to_bytes().unwrap();
    // The step's record, then kind 0x8002, length 4, the f32's bits.
    let at = records_at(NAME_LEN) + 8;
    assert_eq!(bytes[at..at + 4], [0x02, 0x80, 4, 0]);
    assert_eq!(bytes[at + 4..at + 8], 0.3_f32.to_le_bytes());
    assert_eq!(
        OBSERVER_MIX_KIND & CRITICAL_EXTENSION_BIT,
        CRITICAL_EXTENSION_BIT
    );
    assert_eq!(bytes.len(), b.encoded_len());
    assert_eq!(b.overhead_bytes(), sample().overhead_bytes() + 16);
    let (parsed, skipped) = Bitstream::parse_with_extensions(&bytes, &Limits::default()).unwrap();
    assert_eq!(parsed, b);
    assert!(skipped.is_empty());
    // Only numbers in [0, 1] are mixes.
    for bad in [-0.1_f32, 1.5, f32::NAN, f32::INFINITY] {
        assert_eq!(ObserverMix::new(bad), None, "{bad}");
    }
    assert_eq!(ObserverMix::new(1.0).map(ObserverMix::get), Some(1.0));
}

#[test]
fn invalid_observer_mix_records_are_format_errors() {
    let half = 0.5_f32.to_le_bytes();
    for b in malformed_f32_records(OBSERVER_MIX_KIND, 0.5, &[1.25, f32::NAN]) {
        assert!(matches!(
            format_error(parse(&b)),
            FormatError::InvalidObserverMix(_)
        ));
    }
    let longer = with_raw_records(&record(OBSERVER_MIX_KIND, &[&half[..], &[9, 9]].concat()));
    assert_eq!(
        parse(&longer).unwrap().header.observer_mix,
        ObserverMix::new(0.5)
    );
    let err = sample()
        .to_bytes_with_extensions(&[Extension::new(OBSERVER_MIX_KIND, half.to_vec())])
        .unwrap_err();
    assert!(matches!(
        err,
        ContainerError::InvalidInput(InvalidInput::ReservedExtension { kind: 0x8002 })
    ));
}

#[test]
fn shrinkage_round_trips_in_a_non_critical_record_before_the_step() {
    let mut b = with_step(0.5);
    b.header.shrinkage = Shrinkage::new(0.35);
    let bytes = b.to_bytes().unwrap();
    // Kind 0x0003 (before the step's 0x8001), length 4, the f32's bits.
    let at = records_at(NAME_LEN);
    assert_eq!(bytes[at..at + 4], [0x03, 0x00, 4, 0]);
    assert_eq!(bytes[at + 4..at + 8], 0.35_f32.to_le_bytes());
    // A reader that does not know it decodes the latents at their bins' centres: skippable.
    assert_eq!(SHRINKAGE_KIND & CRITICAL_EXTENSION_BIT, 0);
    assert_eq!(bytes.len(), b.encoded_len());
    let (parsed, skipped) = Bitstream::parse_with_extensions(&bytes, &Limits::default()).unwrap();
    assert_eq!(parsed, b);
    assert!(skipped.is_empty());
}

#[test]
fn invalid_shrinkage_records_are_format_errors() {
    let w = 0.25_f32.to_le_bytes();
    for b in malformed_f32_records(SHRINKAGE_KIND, 0.25, &[1.5, -0.1, f32::NAN]) {
        assert!(matches!(
            format_error(parse(&b)),
            FormatError::InvalidShrinkage(_)
        ));
    }
    let longer = with_raw_records(&record(SHRINKAGE_KIND, &[&w[..], &[9, 9]].concat()));
    assert_eq!(
        parse(&longer).unwrap().header.shrinkage,
        Shrinkage::new(0.25)
    );
    let err = sample()
        .to_bytes_with_extensions(&[Extension::new(SHRINKAGE_KIND, w.to_vec())])
        .unwrap_err();
    assert!(matches!(
        err,
        ContainerError::InvalidInput(InvalidInput::ReservedExtension { kind: 0x0003 })
    ));
}
