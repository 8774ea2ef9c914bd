//! Writes a large test photo: SOURCE resampled (bilinear) to WIDTH x HEIGHT, streamed to a PNG
//! row by row with [`ocular::PngRows`], so that images far beyond memory can be made for the
//! memory measurements of large images (docs/results.md).
//!
//! ```text
//! cargo run --release -p ocular --example large_image -- kodim23.png 16000 12000 big.png
//! ```

use std::io::BufWriter;
use std::path::PathBuf;
use std::process::ExitCode;

use image::{ColorType, RgbImage};
use ocular::{PngRows, RowSink};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [source, width, height, output] = args.as_slice() else {
        eprintln!("usage: large_image SOURCE WIDTH HEIGHT OUT.png");
        return ExitCode::from(2);
    };
    let run = || -> Result<(), Box<dyn std::error::Error>> {
        let source = image::open(source)?.to_rgb8();
        write(
            &source,
            width.parse()?,
            height.parse()?,
            PathBuf::from(output),
        )
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("large_image: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write(
    source: &RgbImage,
    width: u32,
    height: u32,
    output: PathBuf,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut png = PngRows::new(BufWriter::new(std::fs::File::create(output)?));
    png.start(width, height, ColorType::Rgb8)?;
    let (sw, sh) = (source.width() as f32, source.height() as f32);
    let mut row = Vec::with_capacity(width as usize * 3);
    for y in 0..height {
        row.clear();
        let v = ((y as f32 + 0.5) * sh / height as f32 - 0.5).clamp(0.0, sh - 1.0);
        for x in 0..width {
            let u = ((x as f32 + 0.5) * sw / width as f32 - 0.5).clamp(0.0, sw - 1.0);
            row.extend(bilinear(source, u, v));
        }
        png.rows(y, &row)?;
    }
    png.finish()?;
    Ok(())
}

/// The source's colour at (u, v), interpolated between its four nearest pixels.
fn bilinear(source: &RgbImage, u: f32, v: f32) -> [u8; 3] {
    let (x0, y0) = (u.floor() as u32, v.floor() as u32);
    let (x1, y1) = (
        (x0 + 1).min(source.width() - 1),
        (y0 + 1).min(source.height() - 1),
    );
    let (fx, fy) = (u - x0 as f32, v - y0 as f32);
    let at = |x, y, c: usize| f32::from(source.get_pixel(x, y)[c]);
    std::array::from_fn(|c| {
        let top = at(x0, y0, c) * (1.0 - fx) + at(x1, y0, c) * fx;
        let bottom = at(x0, y1, c) * (1.0 - fx) + at(x1, y1, c) * fx;
        (top * (1.0 - fy) + bottom * fy).round() as u8
    })
}
