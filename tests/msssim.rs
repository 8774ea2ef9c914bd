//! `ocular_models::msssim::ms_ssim` against the reference implementation, pytorch-msssim.
//!
//! The image pairs are rebuilt here from the same integer arithmetic as
//! `scripts/msssim_fixture.py` (see its header), which wrote the expected values into
//! `tests/fixtures/msssim.json`.

use ocular_models::msssim::{ms_ssim, MIN_SIDE};
use ocular_models::ModelError;
use serde::Deserialize;
use tch::{Kind, Tensor};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/msssim.json");
const TOLERANCE: f64 = 1e-5;
const NOISE_SEED_XOR: u32 = 0x9E37_79B9;

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    batch: usize,
    channels: usize,
    height: usize,
    width: usize,
    seed: u32,
    texture: i32,
    /// `["blur", r]`, `["shift", dx, dy]` or `["noise", a]`.
    ops: Vec<Vec<serde_json::Value>>,
    expected: Vec<f64>,
    sum_original: u64,
    sum_distorted: u64,
}

struct Lcg(u32);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        self.0
    }

    /// Uniform integer in `-a..=a`.
    fn sym(&mut self, a: i32) -> i32 {
        ((self.next() >> 16) % (2 * a as u32 + 1)) as i32 - a
    }
}

fn tri(t: usize) -> i32 {
    let t = (t % 512) as i32;
    if t < 256 {
        t
    } else {
        511 - t
    }
}

fn clamp_u8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// Pixels in (b, c, y, x) order.
fn original(case: &Case) -> Vec<u8> {
    let mut rng = Lcg(case.seed);
    let mut out = Vec::with_capacity(case.batch * case.channels * case.height * case.width);
    for _ in 0..case.batch {
        for c in 0..case.channels {
            for y in 0..case.height {
                for x in 0..case.width {
                    let smooth = (2 * tri(3 * x + 2 * y + 85 * c)
                        + tri((x * x + 3 * y * y) / 97 + 40 * c)
                        + tri(17 * x + 13 * y + 29 * c))
                        / 4;
                    out.push(clamp_u8(smooth + rng.sym(case.texture)));
                }
            }
        }
    }
    out
}

fn box_blur(img: &[u8], h: usize, w: usize, r: usize) -> Vec<u8> {
    let k = (2 * r + 1) as u32;
    let mut out = vec![0u8; img.len()];
    let mut rows = vec![0u32; h * w];
    for (plane, out_plane) in img.chunks(h * w).zip(out.chunks_mut(h * w)) {
        for y in 0..h {
            for x in 0..w {
                rows[y * w + x] = (x as isize - r as isize..=x as isize + r as isize)
                    .map(|xx| u32::from(plane[y * w + xx.clamp(0, w as isize - 1) as usize]))
                    .sum();
            }
        }
        for y in 0..h {
            for x in 0..w {
                let s: u32 = (y as isize - r as isize..=y as isize + r as isize)
                    .map(|yy| rows[yy.clamp(0, h as isize - 1) as usize * w + x])
                    .sum();
                out_plane[y * w + x] = (s / (k * k)) as u8;
            }
        }
    }
    out
}

fn shift(img: &[u8], h: usize, w: usize, dx: usize, dy: usize) -> Vec<u8> {
    let mut out = vec![0u8; img.len()];
    for (plane, out_plane) in img.chunks(h * w).zip(out.chunks_mut(h * w)) {
        for y in 0..h {
            for x in 0..w {
                out_plane[y * w + x] = plane[(y + dy).min(h - 1) * w + (x + dx).min(w - 1)];
            }
        }
    }
    out
}

fn arg(op: &[serde_json::Value], i: usize) -> u64 {
    op[i].as_u64().expect("integer op argument")
}

fn distort(case: &Case, original: &[u8]) -> Vec<u8> {
    let (h, w) = (case.height, case.width);
    let mut rng = Lcg(case.seed ^ NOISE_SEED_XOR);
    let mut img = original.to_vec();
    for op in &case.ops {
        img = match op[0].as_str().expect("op name") {
            "blur" => box_blur(&img, h, w, arg(op, 1) as usize),
            "shift" => shift(&img, h, w, arg(op, 1) as usize, arg(op, 2) as usize),
            "noise" => {
                let a = arg(op, 1) as i32;
                img.iter()
                    .map(|&v| clamp_u8(i32::from(v) + rng.sym(a)))
                    .collect()
            }
            other => panic!("{}: unknown op {other}", case.name),
        };
    }
    img
}

fn to_tensor(pixels: &[u8], shape: [usize; 4]) -> Tensor {
    let shape = shape.map(|s| s as i64);
    Tensor::from_slice(pixels).view(shape).to_kind(Kind::Float) / 255.0
}

/// The original and distorted images of a fixture case, as (N, C, H, W) floats in 0..=1.
fn case_images(case: &Case) -> (Tensor, Tensor) {
    let x = original(case);
    let y = distort(case, &x);
    let sum = |v: &[u8]| v.iter().map(|&p| u64::from(p)).sum::<u64>();
    assert_eq!(
        sum(&x),
        case.sum_original,
        "{}: original image differs from the script's",
        case.name
    );
    assert_eq!(
        sum(&y),
        case.sum_distorted,
        "{}: distorted image differs from the script's",
        case.name
    );
    let shape = [case.batch, case.channels, case.height, case.width];
    (to_tensor(&x, shape), to_tensor(&y, shape))
}

fn load_fixture() -> Fixture {
    let text = std::fs::read_to_string(FIXTURE).expect("read tests/fixtures/msssim.json");
    serde_json::from_str(&text).expect("parse tests/fixtures/msssim.json")
}

#[test]
fn matches_pytorch_msssim() {
    let fixture = load_fixture();
    assert!(fixture.cases.len() >= 10, "fixture has too few cases");
    let mut max_diff = 0f64;
    for case in &fixture.cases {
        let (x, y) = case_images(case);
        let got = ms_ssim(&x, &y, 1.0).expect("ms_ssim");
        assert_eq!(
            got.size(),
            [case.batch as i64],
            "{}: output shape",
            case.name
        );
        let got = Vec::<f64>::try_from(got.to_kind(Kind::Double)).expect("to Vec");
        for (i, (&got, &want)) in got.iter().zip(&case.expected).enumerate() {
            let diff = (got - want).abs();
            println!(
                "{:34} [{i}] rust {got:.9} reference {want:.9} diff {diff:.1e}",
                case.name
            );
            assert!(
                diff <= TOLERANCE,
                "{} [{i}]: rust {got} vs pytorch-msssim {want}",
                case.name
            );
            max_diff = max_diff.max(diff);
        }
    }
    println!("max |rust - pytorch-msssim| = {max_diff:.2e}");
}

#[test]
fn identical_images_give_one() {
    let fixture = load_fixture();
    for case in fixture.cases.iter().filter(|c| c.batch == 2) {
        let (x, _) = case_images(case);
        let got = ms_ssim(&x, &x.copy(), 1.0).expect("ms_ssim");
        for v in Vec::<f64>::try_from(got.to_kind(Kind::Double)).expect("to Vec") {
            assert!(
                (v - 1.0).abs() <= 1e-6,
                "{}: ms_ssim(x, x) = {v}",
                case.name
            );
        }
    }
}

#[test]
fn sides_below_161_are_rejected() {
    assert_eq!(MIN_SIDE, 161);
    let image = |h: i64, w: i64| Tensor::rand([1, 3, h, w], (Kind::Float, tch::Device::Cpu));
    for (h, w) in [(160, 200), (200, 160), (160, 160)] {
        let (x, y) = (image(h, w), image(h, w));
        assert!(
            matches!(ms_ssim(&x, &y, 1.0), Err(ModelError::Shape(_))),
            "{h}x{w} must give a Shape error"
        );
    }
    let (x, y) = (image(161, 161), image(161, 161));
    let v = ms_ssim(&x, &y, 1.0)
        .expect("161x161 works")
        .double_value(&[0]);
    assert!(
        v.is_finite() && (0.0..=1.0).contains(&v),
        "ms_ssim of 161x161 noise = {v}"
    );
}

#[test]
fn gradient_flows() {
    let fixture = load_fixture();
    let case = fixture
        .cases
        .iter()
        .find(|c| c.name == "rgb161x200_blur1")
        .expect("case");
    let (x, y) = case_images(case);
    let x = x.set_requires_grad(true);
    let value = ms_ssim(&x, &y, 1.0).expect("ms_ssim");
    let loss = (value.neg() + 1.0).sum(Kind::Float);
    loss.backward();
    let grad = x.grad();
    assert!(grad.defined(), "no gradient");
    assert!(
        bool::try_from(grad.isfinite().all()).expect("bool"),
        "non-finite gradient"
    );
    let magnitude = grad.abs().sum(Kind::Double).double_value(&[]);
    assert!(magnitude > 0.0, "zero gradient");
}

#[test]
fn works_in_double_precision() {
    let x = Tensor::rand([1, 3, 170, 170], (Kind::Double, tch::Device::Cpu));
    let y = (&x + Tensor::rand_like(&x) * 0.05).clamp(0.0, 1.0);
    let double = ms_ssim(&x, &y, 1.0).expect("f64 works");
    assert_eq!(double.kind(), Kind::Double);
    let single = ms_ssim(&x.to_kind(Kind::Float), &y.to_kind(Kind::Float), 1.0).expect("f32 works");
    let difference = (double.double_value(&[0]) - single.double_value(&[0])).abs();
    assert!(difference < 1e-5, "f32 and f64 differ by {difference}");
}
