//! Robustness: thousands of random and mutated inputs go through the container parser and, for
//! those that parse, through the entropy decoder — also the way the codec decodes, with the table
//! of every `y` symbol chosen by the hyper-synthesis from the decoded `z`. Nothing may panic, and
//! the two ways of reading a file (`Bitstream::parse`, `Bitstream::read_from`) must agree.
//!
//! Mutations of valid files get their CRC-32 recomputed (most of the time), so they reach past
//! the checksum into the header checks and the decoder. Everything is seeded: a failure
//! reproduces. The same harness runs under libFuzzer in `fuzz/` (target `container`).

use ocular::container::{
    Bitstream, ContainerError, Extension, Header, Latent, LatentShape, ModelFingerprint,
};
use ocular::limits::Limits;
use ocular_entropy::{decode, encode, gaussian_tables, scale_table, CodingTables, Shrinkage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[path = "support/decode_like_the_codec.rs"]
mod support;
use support::decode_like_the_codec;

/// At most this many symbols are decoded from one stream.
const MAX_SYMBOLS: u64 = 1 << 16;

/// The table index of symbol `i`: a fixed pseudo-random pattern over the 64 Gaussian tables,
/// shared by the seed encoder and the harness so that unmutated seeds decode exactly.
fn table_index(i: usize) -> u16 {
    ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as u16
}

fn indices(shape: LatentShape) -> Vec<u16> {
    let n = shape.elements().min(MAX_SYMBOLS) as usize;
    (0..n).map(table_index).collect()
}

#[derive(Default)]
struct Stats {
    inputs: usize,
    parsed: usize,
    decoded_ok: usize,
    decoded_err: usize,
    /// `y` decodes whose tables the hyper-synthesis chose from the decoded `z`.
    hyper_decodes: usize,
}

struct Harness {
    tables: CodingTables,
    stats: Stats,
}

impl Harness {
    fn new() -> Self {
        let tables = gaussian_tables(&scale_table()).expect("Gaussian tables");
        Harness {
            tables: CodingTables::new(&tables).expect("coding tables"),
            stats: Stats::default(),
        }
    }

    /// Parses `input` both ways and decodes what parses.
    fn run(&mut self, input: &[u8], limits: &Limits) {
        self.stats.inputs += 1;
        let parsed = Bitstream::parse(input, limits);
        let read = Bitstream::read_from(input, limits);
        match (&parsed, &read) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            _ => panic!("parse and read_from disagree: {parsed:?} vs {read:?}"),
        }
        let bitstream = match parsed {
            Ok(b) => b,
            Err(e) => {
                // Messages are built without panicking, and are never empty.
                assert!(!e.to_string().is_empty());
                assert!(!matches!(e, ContainerError::InvalidInput(_)));
                return;
            }
        };
        self.stats.parsed += 1;
        // What parses is valid: it re-serializes to a file that parses to the same thing.
        let canonical = bitstream.to_bytes().expect("a parsed header is valid");
        assert_eq!(canonical.len(), bitstream.encoded_len());
        assert_eq!(Bitstream::parse(&canonical, limits).unwrap(), bitstream);
        assert!(bitstream.header.pixels() <= limits.max_pixels);

        let h = &bitstream.header;
        for (stream, shape) in [
            (&bitstream.z_stream, h.z_shape),
            (&bitstream.y_stream, h.y_shape),
        ] {
            let indices = indices(shape);
            // The stream as it is, and cut to whole 32-bit words (the coder's unit), so that
            // odd lengths reach the decoder too.
            let aligned = &stream[..stream.len() / 4 * 4];
            for bytes in [stream.as_slice(), aligned] {
                match decode(bytes, &indices, &self.tables) {
                    Ok(symbols) => {
                        assert_eq!(symbols.len(), indices.len());
                        self.stats.decoded_ok += 1;
                    }
                    Err(e) => {
                        assert!(!e.to_string().is_empty());
                        self.stats.decoded_err += 1;
                    }
                }
            }
        }
        if decode_like_the_codec(&bitstream, &self.tables, MAX_SYMBOLS).is_some() {
            self.stats.hyper_decodes += 1;
        }
    }
}

/// A valid file whose streams the entropy coder really produced (so the decoder runs deep into
/// them), optionally with extension records.
fn seed(rng: &mut StdRng, tables: &CodingTables) -> (Bitstream, Vec<u8>) {
    let width = rng.gen_range(1..=160);
    let height = rng.gen_range(1..=160);
    let y_channels = rng.gen_range(1..=24);
    let z_channels = rng.gen_range(1..=8);
    let header = Header {
        model_fingerprint: ModelFingerprint(rng.gen()),
        model_name: ["mse-q3", "", "msssim-q8", "observer-α0.5-q1"][rng.gen_range(0..4)].to_owned(),
        quality: rng.gen_range(1..=8),
        width,
        height,
        channels: rng.gen_range(1..=4),
        y_shape: LatentShape::for_image(Latent::Y, y_channels, width, height),
        z_shape: LatentShape::for_image(Latent::Z, z_channels, width, height),
        quantization_step: None,
        observer_mix: None,
        shrinkage: rng
            .gen_bool(0.3)
            .then(|| Shrinkage::new(rng.gen()))
            .flatten(),
    };
    let mut stream = |shape: LatentShape| {
        let indices = indices(shape);
        let symbols: Vec<i32> = indices
            .iter()
            .map(|&i| {
                // Roughly the scale of table `i`, with an occasional escape.
                let spread = 1 + i32::from(i) * 4;
                if rng.gen_ratio(1, 200) {
                    rng.gen()
                } else {
                    rng.gen_range(-spread..=spread)
                }
            })
            .collect();
        let bytes = encode(&symbols, &indices, tables).expect("encode");
        assert_eq!(decode(&bytes, &indices, tables).expect("decode"), symbols);
        bytes
    };
    let bitstream = Bitstream {
        z_stream: stream(header.z_shape),
        y_stream: stream(header.y_shape),
        header,
    };
    let extensions: Vec<Extension> = (0..rng.gen_range(0..3))
        .map(|_| {
            let len = rng.gen_range(0..24);
            Extension::new(
                rng.gen_range(0..0x8000),
                (0..len).map(|_| rng.gen()).collect(),
            )
        })
        .collect();
    let bytes = bitstream
        .to_bytes_with_extensions(&extensions)
        .expect("valid seed");
    (bitstream, bytes)
}

fn fix_crc(bytes: &mut [u8]) {
    if bytes.len() >= 4 {
        let end = bytes.len() - 4;
        let crc = crc32fast::hash(&bytes[..end]);
        bytes[end..].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Values that often break length and size arithmetic.
const INTERESTING_U32: [u32; 12] = [
    0,
    1,
    2,
    3,
    4,
    16,
    64,
    0xFFFF,
    0x1_0000,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFF,
];

/// Applies a few random mutations to `bytes`.
fn mutate(rng: &mut StdRng, bytes: &mut Vec<u8>, donor: &[u8]) {
    for _ in 0..rng.gen_range(1..=4) {
        let len = bytes.len();
        match rng.gen_range(0..9) {
            // Flip one bit.
            0 if len > 0 => {
                let at = rng.gen_range(0..len);
                bytes[at] ^= 1 << rng.gen_range(0..8);
            }
            // Overwrite a byte.
            1 if len > 0 => {
                let at = rng.gen_range(0..len);
                bytes[at] = rng.gen();
            }
            // Write an interesting (or random) little-endian u32 or u16 anywhere, e.g. over a
            // length, a dimension or a shape.
            2 | 3 if len >= 4 => {
                let at = rng.gen_range(0..=len - 4);
                let value = if rng.gen_bool(0.7) {
                    INTERESTING_U32[rng.gen_range(0..INTERESTING_U32.len())]
                } else {
                    rng.gen()
                };
                let width = if rng.gen_bool(0.3) { 2 } else { 4 };
                bytes[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
            }
            // Insert random bytes.
            4 => {
                let at = rng.gen_range(0..=len);
                let n = rng.gen_range(1..=16);
                let insert: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                bytes.splice(at..at, insert);
            }
            // Delete a range.
            5 if len > 0 => {
                let at = rng.gen_range(0..len);
                let end = (at + rng.gen_range(1..=16)).min(len);
                bytes.drain(at..end);
            }
            // Truncate.
            6 if len > 0 => bytes.truncate(rng.gen_range(0..len)),
            // Splice in part of another file.
            7 if !donor.is_empty() => {
                let from = rng.gen_range(0..donor.len());
                let n = rng.gen_range(1..=32).min(donor.len() - from);
                let at = rng.gen_range(0..=len);
                let end = (at + n).min(len);
                bytes.splice(at..end, donor[from..from + n].iter().copied());
            }
            // Make a byte of a stream (or the header) small or large.
            _ if len > 0 => {
                let at = rng.gen_range(0..len);
                bytes[at] = [0, 0x7f, 0x80, 0xff][rng.gen_range(0..4)];
            }
            _ => {}
        }
    }
}

#[test]
fn random_and_mutated_inputs_never_panic() {
    let mut rng = StdRng::seed_from_u64(0x0c0_ffee);
    let mut h = Harness::new();
    let default = Limits::default();
    let tight = Limits {
        max_pixels: 64 * 64,
        max_stream_bytes: 2048,
        max_latent_elements: 8 * 1024,
    };

    let seeds: Vec<(Bitstream, Vec<u8>)> = (0..24).map(|_| seed(&mut rng, &h.tables)).collect();

    // `OCULAR_FUZZ_SEEDS=DIR` exports the seeds as a corpus for the libFuzzer target (whose
    // first input byte is a mode byte: 1 = recompute the CRC-32).
    if let Some(dir) = std::env::var_os("OCULAR_FUZZ_SEEDS") {
        std::fs::create_dir_all(&dir).unwrap();
        for (i, (_, bytes)) in seeds.iter().enumerate() {
            let path = std::path::Path::new(&dir).join(format!("seed-{i:02}.ocu"));
            std::fs::write(path, [&[1], bytes.as_slice()].concat()).unwrap();
        }
    }

    // Unmutated seeds parse and decode exactly.
    for (bitstream, bytes) in &seeds {
        assert_eq!(&Bitstream::parse(bytes, &default).unwrap(), bitstream);
        h.run(bytes, &default);
        h.run(bytes, &tight);
    }
    let decoded_seeds = h.stats.decoded_ok;
    assert!(
        decoded_seeds >= 24 * 2,
        "seeds decode: {}",
        h.stats.decoded_ok
    );

    // Every truncation of a few seeds.
    for (_, bytes) in seeds.iter().take(3) {
        for len in 0..bytes.len() {
            h.run(&bytes[..len], &default);
        }
    }

    // Every byte of the smallest seeds changed in a few ways, the CRC-32 recomputed: every
    // field of the header sees bad values.
    let mut by_size: Vec<&Vec<u8>> = seeds.iter().map(|(_, bytes)| bytes).collect();
    by_size.sort_by_key(|bytes| bytes.len());
    for bytes in by_size.iter().take(2) {
        for at in 0..bytes.len() {
            for change in [|b: u8| b ^ 1, |b: u8| b ^ 0x80, |_| 0, |_| 0xff] {
                let mut mutant = bytes.to_vec();
                mutant[at] = change(mutant[at]);
                fix_crc(&mut mutant);
                h.run(&mutant, &default);
            }
        }
    }

    // Random bytes: with and without a valid start (magic, version 1.x, random header length).
    for i in 0..3000 {
        let len = rng.gen_range(0..256);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        if i % 2 == 0 && bytes.len() >= 6 {
            bytes[..5].copy_from_slice(b"\x8fOCU\x01");
        }
        if i % 4 == 0 {
            fix_crc(&mut bytes);
        }
        h.run(&bytes, &default);
    }

    // Mutated seeds, mostly with the CRC-32 recomputed.
    for i in 0..10_000 {
        let (_, base) = &seeds[i % seeds.len()];
        let (_, donor) = &seeds[(i * 7 + 3) % seeds.len()];
        let mut bytes = base.clone();
        mutate(&mut rng, &mut bytes, donor);
        if rng.gen_bool(0.85) {
            fix_crc(&mut bytes);
        }
        let limits = if i % 5 == 0 { &tight } else { &default };
        h.run(&bytes, limits);
    }

    // Valid framing around random streams and free latent channel counts: these all reach the
    // decoder with garbage.
    for _ in 0..300 {
        let (mut bitstream, _) = seeds[rng.gen_range(0..seeds.len())].clone();
        let len = rng.gen_range(0..200);
        bitstream.y_stream = (0..len).map(|_| rng.gen()).collect();
        bitstream.z_stream = (0..rng.gen_range(0..40)).map(|_| rng.gen()).collect();
        let channels = if rng.gen_bool(0.1) {
            rng.gen_range(1..=1 << 20)
        } else {
            rng.gen_range(1..=64)
        };
        bitstream.header.y_shape.channels = channels;
        h.run(&bitstream.to_bytes().unwrap(), &default);
    }

    let s = &h.stats;
    eprintln!(
        "{} inputs, {} parsed, {} streams decoded, {} refused by the decoder, {} y streams \
         decoded with tables from the hyper-synthesis",
        s.inputs, s.parsed, s.decoded_ok, s.decoded_err, s.hyper_decodes
    );
    assert!(
        s.hyper_decodes >= 500,
        "hyper-synthesis reached {} times",
        s.hyper_decodes
    );
    // The harness reaches where it should.
    assert!(s.parsed >= 1000, "only {} inputs parsed", s.parsed);
    assert!(
        s.decoded_ok - decoded_seeds >= 500,
        "decoder reached {} times",
        s.decoded_ok
    );
    assert!(
        s.decoded_err >= 100,
        "decoder refused {} times",
        s.decoded_err
    );
}
