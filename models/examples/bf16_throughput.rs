//! How many multiply-adds per second this core does in f32 (`vfmadd231ps`) and in bf16
//! (`vdpbf16ps`, AVX-512 BF16), each on 16 independent 512-bit accumulators: the ceiling of any
//! f32 or bf16 convolution kernel on the CPU, whatever the library.
//!
//! ```sh
//! cargo run --release -p ocular-models --example bf16_throughput
//! ```
//!
//! A bf16 path for `g_a`/`g_s` (issue 10) or for training (libtorch's CPU autocast) can only be
//! faster where the second figure is well above the first; docs/results.md records what it was
//! on the machines measured.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
mod kernels {
    use std::arch::x86_64::*;

    /// `iterations` x 16 `vfmadd231ps`; returns the sum so that nothing is optimised away.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn f32_fma(iterations: usize) -> f32 {
        let mut acc = [_mm512_setzero_ps(); 16];
        let one = _mm512_set1_ps(1.0);
        for _ in 0..iterations {
            for a in acc.iter_mut() {
                *a = _mm512_fmadd_ps(one, one, *a);
            }
        }
        acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
    }

    /// `iterations` x 16 `vdpbf16ps` (32 multiply-adds each).
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn bf16_dot(iterations: usize) -> f32 {
        let mut acc = [_mm512_setzero_ps(); 16];
        // Two bf16 ones (0x3f80) per 32-bit lane.
        let one: __m512bh = std::mem::transmute(_mm512_set1_epi32(0x3f80_3f80));
        for _ in 0..iterations {
            for a in acc.iter_mut() {
                *a = _mm512_dpbf16_ps(*a, one, one);
            }
        }
        acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
    }
}

#[cfg(target_arch = "x86_64")]
fn main() {
    use std::arch::is_x86_feature_detected;
    use std::time::Instant;
    if !is_x86_feature_detected!("avx512f") || !is_x86_feature_detected!("avx512bf16") {
        println!("this CPU has no AVX-512 BF16: nothing to compare");
        return;
    }
    let iterations = 20_000_000;
    let instructions = (16 * iterations) as f64;
    for round in 1..=3 {
        let start = Instant::now();
        // SAFETY: the features were detected above.
        let f = unsafe { kernels::f32_fma(iterations) };
        let f32_seconds = start.elapsed().as_secs_f64();
        let start = Instant::now();
        // SAFETY: as above.
        let b = unsafe { kernels::bf16_dot(iterations) };
        let bf16_seconds = start.elapsed().as_secs_f64();
        let f32_rate = instructions * 16.0 / f32_seconds / 1e9;
        let bf16_rate = instructions * 32.0 / bf16_seconds / 1e9;
        println!(
            "round {round}: f32 vfmadd231ps {f32_rate:.1} GMAC/s, bf16 vdpbf16ps {bf16_rate:.1} \
             GMAC/s, bf16 / f32 {:.2} (sums {f} {b})",
            bf16_rate / f32_rate
        );
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    println!("AVX-512 BF16 is an x86-64 extension: nothing to compare on this architecture");
}
