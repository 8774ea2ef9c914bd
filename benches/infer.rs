//! The pure-Rust networks (`ocular_models::infer`) on a Kodak-sized image (768x512, the shipped
//! `mse-q3`, N=64, M=96), stage by stage, and the same stages in libtorch in the same run.
//!
//! Run with `cargo bench -p ocular-models --bench infer` (2 threads on both sides: rayon's pool
//! and libtorch's are set to 2; `OCULAR_BENCH_THREADS` overrides). Besides criterion's figures it
//! prints a side-by-side table: the median of several alternating runs of each whole stage
//! (encode networks `g_a + h_a`, decode network `g_s`, also in strips of 64 output rows) and the
//! ratio libtorch / pure Rust, so a loaded machine slows both alike.

use std::path::{Path, PathBuf};
use std::time::Instant;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ocular_models::infer::{InferError, Networks, Planes};
use ocular_models::CodecModel;
use tch::Tensor;

const ROUNDS: usize = 15;
/// Output rows per strip of the bounded-memory synthesis.
const STRIP_ROWS: usize = 64;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn threads() -> usize {
    std::env::var("OCULAR_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

/// kodim23 as planes in [0, 1].
fn kodak() -> Planes {
    let path = repo("../shared/data/kodak/kodim23.png");
    let image = image::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    let (width, height) = (image.width() as usize, image.height() as usize);
    let mut data = vec![0.0f32; 3 * height * width];
    for (x, y, pixel) in image.enumerate_pixels() {
        for c in 0..3 {
            data[(c * height + y as usize) * width + x as usize] = f32::from(pixel[c]) / 255.0;
        }
    }
    Planes::new(3, height, width, data).expect("image")
}

fn to_tensor(planes: &Planes) -> Tensor {
    let shape = [1, planes.channels, planes.height, planes.width].map(|v| v as i64);
    Tensor::from_slice(&planes.data).view(shape)
}

struct Setup {
    pure: Networks,
    torch: CodecModel,
    image: Planes,
    y: Planes,
    y_hat: Planes,
}

fn setup() -> Setup {
    let bytes = std::fs::read(repo("models/trained/mse-q3.safetensors")).expect("shipped model");
    let pure = Networks::from_safetensors(&bytes).expect("pure networks");
    let torch = CodecModel::from_bytes(&bytes).expect("libtorch model");
    let image = kodak();
    let y = pure.analysis(&image).expect("g_a");
    let mut y_hat = y.clone();
    y_hat.data.iter_mut().for_each(|v| *v = v.round());
    Setup {
        pure,
        torch,
        image,
        y,
        y_hat,
    }
}

fn median(mut seconds: Vec<f64>) -> f64 {
    seconds.sort_by(f64::total_cmp);
    seconds[seconds.len() / 2]
}

/// Alternating runs of each whole stage, both ways; prints medians and ratios.
fn side_by_side(s: &Setup) {
    let network = s.torch.network();
    let x = to_tensor(&s.image);
    let y_hat = to_tensor(&s.y_hat);
    let time = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        f();
        start.elapsed().as_secs_f64()
    };
    let mut rows: Vec<[Vec<f64>; 2]> = vec![[vec![], vec![]], [vec![], vec![]], [vec![], vec![]]];
    for _ in 0..ROUNDS {
        rows[0][0].push(time(&mut || {
            let y = s.pure.analysis(&s.image).expect("g_a");
            black_box(s.pure.hyper_analysis(&y).expect("h_a"));
        }));
        rows[0][1].push(time(&mut || {
            tch::no_grad(|| {
                let y = network.analysis(&x);
                let _ = black_box(network.hyper_analysis(&y));
            })
        }));
        rows[1][0].push(time(&mut || {
            black_box(s.pure.synthesis(&s.y_hat).expect("g_s"));
        }));
        rows[1][1].push(time(&mut || {
            let _ = black_box(tch::no_grad(|| network.synthesis(&y_hat)));
        }));
        rows[2][0].push(time(&mut || {
            s.pure
                .synthesis_in_strips::<InferError>(&s.y_hat, STRIP_ROWS, |_, strip| {
                    black_box(strip);
                    Ok(())
                })
                .expect("g_s in strips");
        }));
        rows[2][1] = rows[1][1].clone();
    }
    println!(
        "\nside by side, {} threads, median of {ROUNDS} alternating runs:",
        threads()
    );
    println!("| stage | pure Rust | libtorch | libtorch / pure |");
    println!("|---|---|---|---|");
    let strips = format!("g_s in strips of {STRIP_ROWS} rows");
    for (name, [pure, torch]) in ["g_a + h_a", "g_s", &strips].iter().zip(rows) {
        let (p, t) = (median(pure), median(torch));
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {:.2}x |",
            p * 1e3,
            t * 1e3,
            t / p
        );
    }
}

fn bench(c: &mut Criterion) {
    let threads = threads();
    tch::set_num_threads(threads as i32);
    // Criterion is not `Send`, so the pool is the global one rather than an installed one.
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .expect("rayon's global pool, set once");
    let s = setup();
    side_by_side(&s);
    let network = s.torch.network();
    let mut group = c.benchmark_group("infer_768x512");
    group.sample_size(10);
    group.bench_function("g_a", |b| b.iter(|| s.pure.analysis(black_box(&s.image))));
    group.bench_function("h_a", |b| b.iter(|| s.pure.hyper_analysis(black_box(&s.y))));
    group.bench_function("g_s", |b| b.iter(|| s.pure.synthesis(black_box(&s.y_hat))));
    let x = to_tensor(&s.image);
    let y_hat = to_tensor(&s.y_hat);
    group.bench_function("libtorch_g_a", |b| {
        b.iter(|| tch::no_grad(|| network.analysis(black_box(&x))))
    });
    group.bench_function("libtorch_g_s", |b| {
        b.iter(|| tch::no_grad(|| network.synthesis(black_box(&y_hat))))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
