//! Fuzz target `container`: arbitrary bytes through the `.ocu` parser and, for what parses,
//! through the entropy decoder. See `fuzz/README.md`.
//!
//! The first input byte selects a mode: when its lowest bit is set, the CRC-32 at the end of the
//! rest of the input is recomputed before parsing, so that mutations reach past the checksum into
//! the header checks and the decoder. The rest is the candidate file.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ocular::container::{Bitstream, LatentShape};
use ocular::limits::Limits;
use ocular_entropy::{decode, gaussian_tables, scale_table, CodingTables};

#[path = "../../tests/support/decode_like_the_codec.rs"]
mod support;
use support::decode_like_the_codec;

/// At most this many symbols are decoded from one stream.
const MAX_SYMBOLS: u64 = 1 << 16;


fn tables() -> &'static CodingTables {
    static TABLES: OnceLock<CodingTables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let tables = gaussian_tables(&scale_table()).expect("Gaussian tables");
        CodingTables::new(&tables).expect("coding tables")
    })
}

/// A fixed pseudo-random table index per symbol (the same as `tests/fuzz_inputs.rs`).
fn indices(shape: LatentShape) -> Vec<u16> {
    let n = shape.elements().min(MAX_SYMBOLS) as usize;
    (0..n)
        .map(|i| ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as u16)
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut file = rest.to_vec();
    if mode & 1 == 1 && file.len() >= 4 {
        let end = file.len() - 4;
        let crc = crc32fast::hash(&file[..end]);
        file[end..].copy_from_slice(&crc.to_le_bytes());
    }

    let limits = Limits::default();
    let parsed = Bitstream::parse(&file, &limits);
    let read = Bitstream::read_from(file.as_slice(), &limits);
    match (&parsed, &read) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("parse and read_from disagree: {parsed:?} vs {read:?}"),
    }
    let Ok(bitstream) = parsed else {
        return;
    };
    // What parses re-serializes to a file that parses to the same thing.
    let canonical = bitstream.to_bytes().expect("a parsed header is valid");
    assert_eq!(
        Bitstream::parse(&canonical, &limits).expect("canonical file"),
        bitstream
    );

    let header = &bitstream.header;
    for (stream, shape) in [
        (&bitstream.z_stream, header.z_shape),
        (&bitstream.y_stream, header.y_shape),
    ] {
        let indices = indices(shape);
        let aligned = &stream[..stream.len() / 4 * 4];
        for bytes in [stream.as_slice(), aligned] {
            if let Ok(symbols) = decode(bytes, &indices, tables()) {
                assert_eq!(symbols.len(), indices.len());
            }
        }
    }

    // As the codec decodes: y's tables chosen by a hyper-synthesis from the decoded z.
    let _ = decode_like_the_codec(&bitstream, tables(), MAX_SYMBOLS);
});
