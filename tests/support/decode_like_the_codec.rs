//! Shared by `tests/fuzz_inputs.rs` and the fuzz target `fuzz/fuzz_targets/container.rs`:
//! decodes a parsed file's `y` as the codec does, with the table of every symbol chosen by a
//! hyper-synthesis from the decoded `z` (a pseudo-random network of the codec's shape).

use ocular::container::Bitstream;
use ocular_entropy::{decode, CodingTables, HyperSynthesis};

/// Channels up to which `z` goes through a hyper-synthesis (more are legal in the container;
/// they only make the harness slow).
pub const MAX_HYPER_CHANNELS: u32 = 16;

/// `Some(number of y symbols decoded)` (0 if the y stream is refused) when `z` decoded and the
/// hyper-synthesis ran; `None` when the file is out of the harness's range or `z` is refused.
/// Panics only if a contract is broken (a wrong symbol or index count).
pub fn decode_like_the_codec(
    bitstream: &Bitstream,
    tables: &CodingTables,
    max_symbols: u64,
) -> Option<usize> {
    let (z, y) = (bitstream.header.z_shape, bitstream.header.y_shape);
    if z.channels > MAX_HYPER_CHANNELS
        || y.channels > MAX_HYPER_CHANNELS
        || z.elements() > max_symbols
        || y.elements() > max_symbols
    {
        return None;
    }
    let z_indices: Vec<u16> = (0..z.channels as u16)
        .flat_map(|c| std::iter::repeat_n(c % 64, (z.height * z.width) as usize))
        .collect();
    let z_symbols = decode(&bitstream.z_stream, &z_indices, tables).ok()?;
    let network = HyperSynthesis::pseudo_random(z.channels as usize, y.channels as usize, 7);
    let parameters = network
        .y_parameters(
            &z_symbols,
            [z.height as usize, z.width as usize],
            [y.height as usize, y.width as usize],
        )
        .ok()?;
    assert_eq!(parameters.scale_indices.len() as u64, y.elements());
    assert_eq!(parameters.means.len(), parameters.scale_indices.len());
    Some(
        match decode(&bitstream.y_stream, &parameters.scale_indices, tables) {
            Ok(symbols) => {
                assert_eq!(symbols.len(), parameters.scale_indices.len());
                symbols.len()
            }
            Err(_) => 0,
        },
    )
}
