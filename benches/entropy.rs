//! Encode and decode throughput of `ocular_entropy` on 1M y-like symbols, and the time of the
//! reproducible hyper-synthesis for a Kodak-sized image (768x512: z 12x8, y 48x32, N=64, M=96).
//!
//! Run with `cargo bench -p ocular-entropy --bench entropy`. Besides criterion's figures it
//! prints the coded size against the ideal `sum -log2 p` under the integer tables.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ocular_entropy::{decode, encode, gaussian_tables, scale_table, CodingTables, HyperSynthesis};

#[path = "../tests/entropy_ylike.rs"]
mod ylike;

const NUM_SYMBOLS: usize = 1 << 20;

fn bench(c: &mut Criterion) {
    let tables = gaussian_tables(&scale_table()).expect("Gaussian tables");
    let coding = CodingTables::new(&tables).expect("coding tables");
    let (symbols, indices) = ylike::y_like(NUM_SYMBOLS, 7);
    let bytes = encode(&symbols, &indices, &coding).expect("encode");
    assert_eq!(
        decode(&bytes, &indices, &coding).expect("decode"),
        symbols,
        "round trip"
    );

    let ideal: f64 = symbols
        .iter()
        .zip(&indices)
        .map(|(&s, &i)| tables[usize::from(i)].information_content(s))
        .sum();
    let bits = 8.0 * bytes.len() as f64;
    println!(
        "y-like: {NUM_SYMBOLS} symbols, ideal {:.4} bits/symbol, coded {:.4} bits/symbol \
         ({} bytes), {:+.4}% over ideal",
        ideal / NUM_SYMBOLS as f64,
        bits / NUM_SYMBOLS as f64,
        bytes.len(),
        100.0 * (bits / ideal - 1.0)
    );

    let mut group = c.benchmark_group("entropy");
    group.throughput(Throughput::Elements(NUM_SYMBOLS as u64));
    group.bench_function("encode_1M_y_like", |b| {
        b.iter(|| encode(black_box(&symbols), black_box(&indices), &coding))
    });
    group.bench_function("decode_1M_y_like", |b| {
        b.iter(|| decode(black_box(&bytes), black_box(&indices), &coding))
    });
    group.finish();

    // One-off cost per model: validating the 64 tables and building their cumulatives.
    c.bench_function("entropy/build_coding_tables", |b| {
        b.iter(|| CodingTables::new(black_box(&tables)))
    });
}

/// The default model's hyper-synthesis shape (N=64, M=96) with arbitrary weights (the time does
/// not depend on their values, except through how many ReLU outputs are zero).
fn kodak_hyper_synthesis(c: &mut Criterion) {
    let n = 64;
    let network = HyperSynthesis::pseudo_random(n, 96, 1);
    let symbols: Vec<i32> = (0..n * 8 * 12).map(|i| (i % 7) as i32 - 3).collect();
    c.bench_function("hyper_synthesis/kodak_768x512", |b| {
        b.iter(|| network.y_parameters(black_box(&symbols), [8, 12], [32, 48]))
    });
}

criterion_group!(benches, bench, kodak_hyper_synthesis);
criterion_main!(benches);
