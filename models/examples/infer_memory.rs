//! Peak memory and time of the pure-Rust networks on a large synthetic image.
//!
//! `cargo run --release -p ocular-models --example infer_memory -- WIDTH HEIGHT [MODEL]` runs
//! `g_a` (in bands) and then `g_s` (in strips, each strip dropped once checked) and prints the
//! time of each and the process's peak resident memory after each (`VmHWM`, Linux). The input
//! image is held as `f32` planes (12 bytes per pixel), as `Networks::analysis` takes it.

use std::time::Instant;

use ocular_models::infer::{InferError, Networks, Planes};

fn peak_rss_mb() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or("unknown".into(), |kb| format!("{:.0} MB", kb / 1024.0))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let width: usize = args.get(1).map_or(Ok(6000), |v| v.parse())?;
    let height: usize = args.get(2).map_or(Ok(4000), |v| v.parse())?;
    let model = args
        .get(3)
        .map_or("models/trained/mse-q3.safetensors", |v| v.as_str());
    let networks = Networks::from_safetensors(&std::fs::read(model)?)?;
    println!("model loaded: peak RSS {}", peak_rss_mb());
    let data = (0..3 * width * height)
        .map(|i| ((i * 7919 + i / 4093) % 256) as f32 / 255.0)
        .collect();
    let image = Planes::new(3, height, width, data)?;
    println!(
        "{width}x{height} image as planes: peak RSS {}",
        peak_rss_mb()
    );
    let start = Instant::now();
    let mut y = networks.analysis(&image)?;
    drop(image);
    println!(
        "g_a: {:.2} s, y {}x{}x{}, peak RSS {}",
        start.elapsed().as_secs_f64(),
        y.channels,
        y.height,
        y.width,
        peak_rss_mb()
    );
    y.data.iter_mut().for_each(|v| *v = v.round());
    let start = Instant::now();
    let mut sum = 0.0f64;
    networks.synthesis_in_strips::<InferError>(&y, 64, |_, strip| {
        sum += strip.data.iter().map(|&v| f64::from(v)).sum::<f64>();
        Ok(())
    })?;
    println!(
        "g_s in strips of 64 rows: {:.2} s (mean {:.4}), peak RSS {}",
        start.elapsed().as_secs_f64(),
        sum / (3 * width * height) as f64,
        peak_rss_mb()
    );
    Ok(())
}
