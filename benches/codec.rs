//! The embeddable codec end to end, as a program that depends on `ocular` gets it (default
//! features, pure Rust): `Encoder::encode` and `Decoder::decode` of a Kodak image (kodim23,
//! 768x512) with the default model, `mse-vr` at quality 5 — the networks, the hyper-synthesis
//! and the range coder together, no file or PNG I/O — and loading that model, which a
//! whole-process `ocular decode` pays once per file.
//!
//! Run with `cargo bench -p ocular --bench codec` (rayon's pool at 2 threads;
//! `OCULAR_BENCH_THREADS` overrides; `OCULAR_BENCH_MODEL=mse-q3` benches another built-in model,
//! e.g. the fixed-rate network that `scripts/compressai_speed.py` runs in CompressAI). Needs
//! `../shared/data/kodak` beside the repository.

use std::path::Path;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ocular::{Decoder, Encoder, Model};

fn threads() -> usize {
    std::env::var("OCULAR_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

fn codec(c: &mut Criterion) {
    // Another bench of the same process may have built the pool already; either is fine.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads())
        .build_global();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/kodak/kodim23.png");
    let image = image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let model = match std::env::var("OCULAR_BENCH_MODEL") {
        Ok(name) => Model::builtin(&name).unwrap_or_else(|e| panic!("{name}: {e}")),
        Err(_) => Model::builtin_default().expect("the default model"),
    };
    let file = Encoder::new(&model).encode(&image).expect("encodes");
    let bpp = file.len() as f64 * 8.0 / f64::from(image.width() * image.height());
    eprintln!(
        "kodim23, {}: {} bytes, {bpp:.4} bpp",
        model.name(),
        file.len()
    );

    let mut group = c.benchmark_group("codec");
    group.sample_size(10);
    group.bench_function("encode kodim23", |b| {
        b.iter(|| {
            Encoder::new(&model)
                .encode(black_box(&image))
                .expect("encodes")
        })
    });
    group.bench_function("decode kodim23", |b| {
        b.iter(|| {
            Decoder::new(&model)
                .decode(black_box(&file))
                .expect("decodes")
        })
    });
    group.bench_function("load default model", |b| {
        b.iter(|| Model::builtin_default().expect("the default model"))
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
