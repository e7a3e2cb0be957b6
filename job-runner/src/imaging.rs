//! From encoded photo bytes to the float tensor a CNN expects.

use std::io::Cursor;

use image::imageops::FilterType;
use image::{DynamicImage, ImageFormat, ImageReader, Limits, RgbImage};
use serde::{Deserialize, Serialize};

/// Photos larger than this on either side are skipped rather than decoded: one would take
/// gigabytes, and no CNN input needs it.
pub const MAX_SIDE: u32 = 12_000;
/// Upper bound on what the decoder may allocate for one photo.
const MAX_DECODE_BYTES: u64 = 512 * 1024 * 1024;

/// How pixel values are scaled before the network sees them, named after the frameworks
/// whose pretrained weights expect them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// EfficientNet-Lite (the shipped model): (x - 127) / 128.
    Lite,
    /// PyTorch / torchvision: x/255, then ImageNet mean and standard deviation.
    Torch,
    /// Keras MobileNet, Inception: x/127.5 - 1, into [-1, 1].
    Tf,
    /// Keras VGG16, ResNet50: BGR order, ImageNet mean subtracted, no scaling.
    Caffe,
}

/// Order of the tensor's axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Layout {
    Nchw,
    Nhwc,
}

/// Everything needed to turn any photo into one model input.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    pub preset: Preset,
    pub size: u32,
    pub layout: Layout,
}

/// Why a photo could not be used; it lands in `errors.csv`.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Unusable {
    #[error("empty file")]
    Empty,
    #[error("not a supported image (JPEG or PNG): {0}")]
    NotAnImage(String),
    #[error("image is {width}x{height}, larger than the {MAX_SIDE}x{MAX_SIDE} limit")]
    TooLarge { width: u32, height: u32 },
    #[error("corrupt or truncated image: {0}")]
    Corrupt(String),
}

impl Preset {
    /// Per-channel (scale, offset) so that value = x * scale + offset, in RGB order.
    fn affine(self) -> [(f32, f32); 3] {
        match self {
            Preset::Lite => [(1.0 / 128.0, -127.0 / 128.0); 3],
            Preset::Tf => [(1.0 / 127.5, -1.0); 3],
            Preset::Torch => {
                let mean = [0.485f32, 0.456, 0.406];
                let std = [0.229f32, 0.224, 0.225];
                std::array::from_fn(|c| (1.0 / (255.0 * std[c]), -mean[c] / std[c]))
            }
            Preset::Caffe => {
                let mean_rgb = [123.68f32, 116.779, 103.939];
                std::array::from_fn(|c| (1.0, -mean_rgb[c]))
            }
        }
    }

    /// Channel order the network expects.
    fn is_bgr(self) -> bool {
        self == Preset::Caffe
    }
}

/// Decodes any supported photo into 8-bit RGB: grayscale is expanded, transparency is
/// composited over white (the Fruits-360 background), 16-bit is reduced.
pub fn decode_rgb(bytes: &[u8]) -> Result<RgbImage, Unusable> {
    if bytes.is_empty() {
        return Err(Unusable::Empty);
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|err| Unusable::NotAnImage(err.to_string()))?;
    match reader.format() {
        None => return Err(Unusable::NotAnImage("unrecognised file signature".into())),
        Some(ImageFormat::Jpeg) if !has_jpeg_end_marker(bytes) => {
            return Err(Unusable::Corrupt(
                "truncated JPEG (no end-of-image marker)".into(),
            ));
        }
        Some(_) => {}
    }
    let (width, height) = reader
        .into_dimensions()
        .map_err(|err| Unusable::Corrupt(err.to_string()))?;
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(Unusable::TooLarge { width, height });
    }
    reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|err| Unusable::NotAnImage(err.to_string()))?;
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let image = reader
        .decode()
        .map_err(|err| Unusable::Corrupt(err.to_string()))?;
    Ok(to_rgb_over_white(image))
}

/// The JPEG decoder fills a cut-off photo with grey instead of failing; a photo whose
/// end-of-image marker (FF D9) is missing was cut off. Outside the entropy-coded data FF D9
/// means nothing else, and some writers append a few bytes after it, hence the window.
fn has_jpeg_end_marker(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(1024)..];
    tail.windows(2).any(|pair| pair == [0xFF, 0xD9])
}

/// For each output coordinate: the two source coordinates around it and the weight of
/// the second.
fn interpolation_taps(source: usize, target: usize) -> Vec<(usize, usize, f32)> {
    let ratio = source as f32 / target as f32;
    (0..target)
        .map(|i| {
            let position = ((i as f32 + 0.5) * ratio - 0.5).clamp(0.0, (source - 1) as f32);
            let first = position.floor() as usize;
            let second = (first + 1).min(source - 1);
            (first, second, position - first as f32)
        })
        .collect()
}

fn to_rgb_over_white(image: DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return image.into_rgb8();
    }
    let rgba = image.into_rgba8();
    let (width, height) = rgba.dimensions();
    RgbImage::from_fn(width, height, |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        let alpha = u16::from(a);
        let blend = |v: u8| ((u16::from(v) * alpha + 255 * (255 - alpha) + 127) / 255) as u8;
        image::Rgb([blend(r), blend(g), blend(b)])
    })
}

impl Preprocessing {
    /// Number of floats one photo occupies in the model input.
    pub fn tensor_len(&self) -> usize {
        3 * (self.size as usize) * (self.size as usize)
    }

    /// Resizes (aspect ratio not kept, as Keras `load_img(target_size=...)` does) and
    /// normalises `image` into `out`, which holds `tensor_len()` floats. Enlarging (the
    /// common case: 100x100 photos, 224x224 models) interpolates bilinearly straight into
    /// the tensor; shrinking averages with a triangle filter first, to avoid aliasing.
    pub fn write_tensor(&self, image: &RgbImage, out: &mut [f32]) {
        assert_eq!(
            out.len(),
            self.tensor_len(),
            "tensor buffer has the wrong size"
        );
        let size = self.size;
        let (width, height) = image.dimensions();
        if width > size || height > size {
            let shrunk = image::imageops::resize(image, size, size, FilterType::Triangle);
            self.write_bilinear(&shrunk, out);
        } else {
            self.write_bilinear(image, out);
        }
    }

    /// Bilinear interpolation with pixel centres aligned (as the triangle filter does),
    /// in two separable passes, fused with normalisation and the layout change.
    fn write_bilinear(&self, image: &RgbImage, out: &mut [f32]) {
        let size = self.size as usize;
        let (width, height) = (image.width() as usize, image.height() as usize);
        let pixels = image.as_raw();
        // Pass 1: every source row stretched to `size` columns, interleaved RGB.
        let mut stretched = vec![0.0f32; height * size * 3];
        let columns = interpolation_taps(width, size);
        for (source, target) in pixels
            .chunks_exact(width * 3)
            .zip(stretched.chunks_exact_mut(size * 3))
        {
            for (pixel, &(left, right, weight)) in target.chunks_exact_mut(3).zip(&columns) {
                for channel in 0..3 {
                    let a = f32::from(source[left * 3 + channel]);
                    let b = f32::from(source[right * 3 + channel]);
                    pixel[channel] = a + (b - a) * weight;
                }
            }
        }
        // Pass 2: rows interpolated, normalised and written in the model's layout.
        let affine = self.preset.affine();
        let plane = size * size;
        for (y, &(top, bottom, weight)) in interpolation_taps(height, size).iter().enumerate() {
            let top = &stretched[top * size * 3..(top + 1) * size * 3];
            let bottom = &stretched[bottom * size * 3..(bottom + 1) * size * 3];
            for channel in 0..3 {
                let (scale, offset) = affine[channel];
                let target = if self.preset.is_bgr() {
                    2 - channel
                } else {
                    channel
                };
                for x in 0..size {
                    let (a, b) = (top[x * 3 + channel], bottom[x * 3 + channel]);
                    let value = (a + (b - a) * weight) * scale + offset;
                    let position = match self.layout {
                        Layout::Nchw => target * plane + y * size + x,
                        Layout::Nhwc => (y * size + x) * 3 + target,
                    };
                    out[position] = value;
                }
            }
        }
    }

    /// Decodes and preprocesses one photo into a fresh tensor.
    pub fn tensor_from_bytes(&self, bytes: &[u8]) -> Result<Vec<f32>, Unusable> {
        let image = decode_rgb(bytes)?;
        let mut out = vec![0.0; self.tensor_len()];
        self.write_tensor(&image, &mut out);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgba, RgbaImage};

    fn encode(image: DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    fn lite(size: u32, layout: Layout) -> Preprocessing {
        Preprocessing {
            preset: Preset::Lite,
            size,
            layout,
        }
    }

    #[test]
    fn presets_map_pixel_values_as_their_frameworks_do() {
        let white = RgbImage::from_pixel(1, 1, image::Rgb([255, 255, 255]));
        let black = RgbImage::from_pixel(1, 1, image::Rgb([0, 0, 0]));
        let value = |preset, image: &RgbImage| {
            let p = Preprocessing {
                preset,
                size: 1,
                layout: Layout::Nchw,
            };
            let mut out = vec![0.0; 3];
            p.write_tensor(image, &mut out);
            out
        };
        assert_eq!(value(Preset::Lite, &white), vec![1.0; 3]);
        assert_eq!(value(Preset::Lite, &black), vec![-127.0 / 128.0; 3]);
        assert_eq!(value(Preset::Tf, &white), vec![1.0; 3]);
        assert_eq!(value(Preset::Tf, &black), vec![-1.0; 3]);
        let torch = value(Preset::Torch, &black);
        assert!((torch[0] + 0.485 / 0.229).abs() < 1e-6);
        // Caffe is BGR: channel 0 is blue, with the blue mean subtracted.
        assert_eq!(
            value(Preset::Caffe, &black),
            vec![-103.939, -116.779, -123.68]
        );
    }

    #[test]
    fn layouts_place_channels_where_the_model_reads_them() {
        let mut image = RgbImage::new(2, 1);
        image.put_pixel(0, 0, image::Rgb([255, 127, 0]));
        image.put_pixel(1, 0, image::Rgb([127, 127, 127]));
        let mut nchw = vec![0.0; 12];
        let mut nhwc = vec![0.0; 12];
        let p = lite(2, Layout::Nchw);
        // 2x1 is resized to 2x2; both rows are equal, so check the first.
        p.write_tensor(&image, &mut nchw);
        lite(2, Layout::Nhwc).write_tensor(&image, &mut nhwc);
        let r0 = nchw[0];
        let g0 = nchw[4];
        assert!(r0 > 0.0 && g0.abs() < 0.05);
        assert_eq!(nhwc[0], r0);
        assert_eq!(nhwc[1], g0);
    }

    #[test]
    fn enlarging_matches_the_triangle_filter() {
        let photo = decode_rgb(
            &std::fs::read(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../data/fruits360-sample/Training/Banana/11_100.jpg"
            ))
            .unwrap(),
        )
        .unwrap();
        let p = Preprocessing {
            preset: Preset::Tf,
            size: 224,
            layout: Layout::Nhwc,
        };
        let mut ours = vec![0.0; p.tensor_len()];
        p.write_tensor(&photo, &mut ours);
        let reference = image::imageops::resize(&photo, 224, 224, FilterType::Triangle);
        let mut worst = 0.0f32;
        for (value, expected) in ours.iter().zip(reference.as_raw()) {
            let pixel = (value + 1.0) * 127.5;
            worst = worst.max((pixel - f32::from(*expected)).abs());
        }
        // The reference rounds to whole pixel values; we keep the fraction.
        assert!(worst <= 1.01, "largest difference {worst} pixel values");
    }

    #[test]
    fn shrinking_large_photos_works() {
        let big = RgbImage::from_fn(640, 480, |x, _| image::Rgb([(x % 256) as u8, 100, 200]));
        let p = lite(32, Layout::Nchw);
        let mut out = vec![0.0; p.tensor_len()];
        p.write_tensor(&big, &mut out);
        let green = &out[32 * 32..2 * 32 * 32];
        assert!(
            green
                .iter()
                .all(|v| (v - (100.0 - 127.0) / 128.0).abs() < 1e-5)
        );
    }

    #[test]
    fn grayscale_and_transparent_photos_become_rgb() {
        let gray = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(4, 4, image::Luma([80])));
        let rgb = decode_rgb(&encode(gray, ImageFormat::Png)).unwrap();
        assert_eq!(rgb.get_pixel(0, 0).0, [80, 80, 80]);

        let mut rgba = RgbaImage::from_pixel(4, 4, Rgba([0, 0, 0, 0]));
        rgba.put_pixel(1, 1, Rgba([10, 20, 30, 255]));
        let rgb = decode_rgb(&encode(DynamicImage::ImageRgba8(rgba), ImageFormat::Png)).unwrap();
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(rgb.get_pixel(1, 1).0, [10, 20, 30]);
    }

    #[test]
    fn bad_bytes_are_reported_not_panicked() {
        assert_eq!(decode_rgb(b""), Err(Unusable::Empty));
        assert!(matches!(
            decode_rgb(b"hello, I am a text file"),
            Err(Unusable::NotAnImage(_))
        ));
        let photo = encode(
            DynamicImage::ImageRgb8(RgbImage::from_pixel(64, 64, image::Rgb([1, 2, 3]))),
            ImageFormat::Jpeg,
        );
        for cut in [photo.len() / 2, photo.len() - 2, 40] {
            let truncated = &photo[..cut];
            assert!(
                matches!(decode_rgb(truncated), Err(Unusable::Corrupt(_))),
                "a JPEG cut at {cut} bytes was accepted"
            );
        }
        assert!(decode_rgb(&photo).is_ok());
    }

    #[test]
    fn huge_photos_are_refused_before_decoding() {
        // A PNG header that claims 20000x20000 pixels.
        let big = RgbImage::new(1, 1);
        let mut png = encode(DynamicImage::ImageRgb8(big), ImageFormat::Png);
        png[16..20].copy_from_slice(&20_000u32.to_be_bytes());
        png[20..24].copy_from_slice(&20_000u32.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            decode_rgb(&png),
            Err(Unusable::TooLarge {
                width: 20_000,
                height: 20_000
            })
        );
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}
