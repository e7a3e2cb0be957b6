//! From encoded photo bytes to the float tensor a CNN expects.

use std::io::Cursor;

use image::imageops::FilterType;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};
use serde::{Deserialize, Serialize};

/// Photos with more pixels than this are skipped rather than decoded, unless
/// `--max-pixels` says otherwise: a 12,000 x 12,000 photo takes 432 MB as RGB, and no CNN
/// input needs it.
pub const DEFAULT_MAX_PIXELS: u64 = 50_000_000;
/// Bytes read before a photo's format is checked ([`check_signature`]).
pub const SIGNATURE_BYTES: usize = 8;

const JPEG_SIGNATURE: [u8; 3] = [0xFF, 0xD8, 0xFF];
const PNG_SIGNATURE: [u8; 8] = *b"\x89PNG\r\n\x1a\n";

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
    /// Photos are turned upright as their EXIF orientation says, as phones and viewers show
    /// them (Keras' and PIL's loaders did not: a phone photo taken sideways reached the
    /// network sideways). Fruits-360 photos carry no EXIF, so their features are the same
    /// either way. Absent in files written before it existed: false.
    #[serde(default)]
    pub exif_orientation: bool,
}

/// Why a photo could not be used; it lands in `errors.csv`.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Unusable {
    #[error("empty file")]
    Empty,
    #[error("not a supported image (JPEG or PNG): {0}")]
    NotAnImage(String),
    #[error(
        "image is {width}x{height} ({} megapixels), over the --max-pixels limit ({max_pixels}); raise the limit to use it",
        (u64::from(*width) * u64::from(*height)) as f64 / 1e6
    )]
    TooLarge {
        width: u32,
        height: u32,
        max_pixels: u64,
    },
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

/// Refuses bytes that start like neither a JPEG nor a PNG (an empty file passes, for
/// [`inspect`] to call it empty).
pub fn check_signature(head: &[u8]) -> Result<(), Unusable> {
    let known = |signature: &[u8]| {
        let n = head.len().min(signature.len());
        head[..n] == signature[..n]
    };
    if head.is_empty() || known(&JPEG_SIGNATURE) || known(&PNG_SIGNATURE) {
        Ok(())
    } else {
        Err(Unusable::NotAnImage("unrecognised file signature".into()))
    }
}

/// Checks a photo without decoding it: a supported format, complete, and at most
/// `max_pixels` pixels. Returns its width and height.
pub fn inspect(bytes: &[u8], max_pixels: u64) -> Result<(u32, u32), Unusable> {
    if bytes.is_empty() {
        return Err(Unusable::Empty);
    }
    check_signature(bytes)?;
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|err| Unusable::NotAnImage(err.to_string()))?;
    match reader.format() {
        None => return Err(Unusable::NotAnImage("unrecognised file signature".into())),
        Some(ImageFormat::Jpeg) if !jpeg_is_complete(bytes) => {
            return Err(Unusable::Corrupt(
                "truncated JPEG (no end-of-image marker)".into(),
            ));
        }
        Some(_) => {}
    }
    let (width, height) = reader
        .into_dimensions()
        .map_err(|err| Unusable::Corrupt(err.to_string()))?;
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(Unusable::TooLarge {
            width,
            height,
            max_pixels,
        });
    }
    Ok((width, height))
}

/// Decodes any supported photo into 8-bit RGB: grayscale is expanded, transparency is
/// composited over white (the Fruits-360 background), 16-bit is reduced, and with
/// `upright` the EXIF orientation is applied.
pub fn decode_rgb(bytes: &[u8], max_pixels: u64, upright: bool) -> Result<RgbImage, Unusable> {
    inspect(bytes, max_pixels)?;
    decode_inspected(bytes, max_pixels, upright)
}

/// [`decode_rgb`] of bytes that [`inspect`] already accepted.
fn decode_inspected(bytes: &[u8], max_pixels: u64, upright: bool) -> Result<RgbImage, Unusable> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|err| Unusable::NotAnImage(err.to_string()))?;
    let mut limits = Limits::default();
    // RGBA at 16 bits per channel, plus the decoder's own buffers.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(limits);
    let corrupt = |err: image::ImageError| Unusable::Corrupt(err.to_string());
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    // A damaged EXIF block is no reason to lose the photo: it is then shown as stored.
    let orientation = match upright {
        true => decoder.orientation().unwrap_or(Orientation::NoTransforms),
        false => Orientation::NoTransforms,
    };
    let mut image = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    image.apply_orientation(orientation);
    Ok(to_rgb_over_white(image))
}

/// The JPEG decoder fills a cut-off photo with grey instead of failing, so a JPEG is
/// checked for its end-of-image marker by walking its segments: a marker in an EXIF
/// thumbnail does not count, and data after the end (the video of a phone's "motion
/// photo") does not hide it.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let mut at = 2; // after SOI
    while at + 1 < bytes.len() {
        if bytes[at] != 0xFF {
            return false;
        }
        let marker = bytes[at + 1];
        match marker {
            0xD9 => return true,
            // Fill bytes, and markers without a length.
            0xFF => at += 1,
            0x01 | 0xD0..=0xD7 => at += 2,
            _ => {
                let Some(length) = bytes.get(at + 2..at + 4) else {
                    return false;
                };
                at += 2 + usize::from(u16::from_be_bytes([length[0], length[1]]));
                if marker == 0xDA {
                    at = end_of_scan(bytes, at);
                }
            }
        }
    }
    false
}

/// The position of the first marker after entropy-coded data starting at `at`: data bytes
/// equal to FF are followed by 00, restart markers belong to the scan.
fn end_of_scan(bytes: &[u8], mut at: usize) -> usize {
    while at + 1 < bytes.len() {
        if bytes[at] == 0xFF && !matches!(bytes[at + 1], 0x00 | 0xD0..=0xD7) {
            return at;
        }
        at += 1;
    }
    bytes.len()
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

    /// Decodes and preprocesses one photo of at most `max_pixels` into a fresh tensor.
    pub fn tensor_from_bytes(&self, bytes: &[u8], max_pixels: u64) -> Result<Vec<f32>, Unusable> {
        inspect(bytes, max_pixels)?;
        self.tensor_from_inspected(bytes, max_pixels)
    }

    /// [`Preprocessing::tensor_from_bytes`] of bytes that [`inspect`] already accepted (the
    /// extract phase inspects every photo first, to weigh its decoding).
    pub fn tensor_from_inspected(
        &self,
        bytes: &[u8],
        max_pixels: u64,
    ) -> Result<Vec<f32>, Unusable> {
        let image = decode_inspected(bytes, max_pixels, self.exif_orientation)?;
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
            exif_orientation: true,
        }
    }

    fn decode(bytes: &[u8]) -> Result<RgbImage, Unusable> {
        decode_rgb(bytes, DEFAULT_MAX_PIXELS, true)
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
                exif_orientation: true,
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
        let photo = decode(
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
            exif_orientation: true,
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
        let rgb = decode(&encode(gray, ImageFormat::Png)).unwrap();
        assert_eq!(rgb.get_pixel(0, 0).0, [80, 80, 80]);

        let mut rgba = RgbaImage::from_pixel(4, 4, Rgba([0, 0, 0, 0]));
        rgba.put_pixel(1, 1, Rgba([10, 20, 30, 255]));
        let rgb = decode(&encode(DynamicImage::ImageRgba8(rgba), ImageFormat::Png)).unwrap();
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(rgb.get_pixel(1, 1).0, [10, 20, 30]);
    }

    #[test]
    fn bad_bytes_are_reported_not_panicked() {
        assert_eq!(decode(b""), Err(Unusable::Empty));
        assert!(matches!(
            decode(b"hello, I am a text file"),
            Err(Unusable::NotAnImage(_))
        ));
        let photo = encode(
            DynamicImage::ImageRgb8(RgbImage::from_pixel(64, 64, image::Rgb([1, 2, 3]))),
            ImageFormat::Jpeg,
        );
        for cut in [photo.len() / 2, photo.len() - 2, 40] {
            let truncated = &photo[..cut];
            assert!(
                matches!(decode(truncated), Err(Unusable::Corrupt(_))),
                "a JPEG cut at {cut} bytes was accepted"
            );
        }
        assert!(decode(&photo).is_ok());
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
            decode(&png),
            Err(Unusable::TooLarge {
                width: 20_000,
                height: 20_000,
                max_pixels: DEFAULT_MAX_PIXELS,
            })
        );
        // The cap is a setting: the same header passes a higher one (and then fails to
        // decode, as its data is missing).
        assert!(inspect(&png, 400_000_000).is_ok());
    }

    fn jpeg(image: RgbImage) -> Vec<u8> {
        encode(DynamicImage::ImageRgb8(image), ImageFormat::Jpeg)
    }

    #[test]
    fn data_after_the_end_of_a_jpeg_is_ignored_but_a_cut_is_not() {
        let photo = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../data/fruits360-sample/Training/Banana/11_100.jpg"
        ))
        .unwrap();
        // A "motion photo": the video follows the JPEG's end marker.
        let mut motion = photo.clone();
        motion.extend((0..3_000_000u32).map(|i| (i % 253) as u8));
        assert_eq!(decode(&motion).unwrap(), decode(&photo).unwrap());
        // An EXIF thumbnail's end marker does not make a cut photo whole.
        let thumbnail = jpeg(RgbImage::from_pixel(8, 8, image::Rgb([9, 9, 9])));
        let mut app1 = vec![0xFF, 0xE1];
        app1.extend_from_slice(&((thumbnail.len() + 2) as u16).to_be_bytes());
        app1.extend_from_slice(&thumbnail);
        let mut with_thumbnail = photo[..2].to_vec();
        with_thumbnail.extend_from_slice(&app1);
        with_thumbnail.extend_from_slice(&photo[2..]);
        assert!(decode(&with_thumbnail).is_ok());
        let cut = &with_thumbnail[..with_thumbnail.len() - 500];
        assert!(matches!(decode(cut), Err(Unusable::Corrupt(_))));
    }

    /// `jpeg` with an EXIF APP1 segment that holds one tag: Orientation = `orientation`.
    fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        let mut tiff = b"II*\0".to_vec();
        tiff.extend_from_slice(&8u32.to_le_bytes()); // first IFD right after the header
        tiff.extend_from_slice(&1u16.to_le_bytes()); // one entry
        tiff.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
        tiff.extend_from_slice(&3u16.to_le_bytes()); // SHORT
        tiff.extend_from_slice(&1u32.to_le_bytes()); // one value
        tiff.extend_from_slice(&orientation.to_le_bytes());
        tiff.extend_from_slice(&[0, 0]);
        tiff.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
        let mut app1 = vec![0xFF, 0xE1];
        app1.extend_from_slice(&((tiff.len() + 8) as u16).to_be_bytes());
        app1.extend_from_slice(b"Exif\0\0");
        app1.extend_from_slice(&tiff);
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&app1);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn exif_orientation_turns_the_photo_upright_when_asked() {
        // 40 wide, 20 high: left half red, right half blue.
        let stored = RgbImage::from_fn(40, 20, |x, _| {
            if x < 20 {
                image::Rgb([250, 0, 0])
            } else {
                image::Rgb([0, 0, 250])
            }
        });
        // Orientation 6: the camera was turned; shown rotated 90 degrees clockwise.
        let photo = with_exif_orientation(&jpeg(stored), 6);
        let upright = decode_rgb(&photo, DEFAULT_MAX_PIXELS, true).unwrap();
        assert_eq!(upright.dimensions(), (20, 40));
        assert!(upright.get_pixel(10, 5).0[0] > 200, "red is on top");
        assert!(upright.get_pixel(10, 35).0[2] > 200, "blue is below");
        let as_stored = decode_rgb(&photo, DEFAULT_MAX_PIXELS, false).unwrap();
        assert_eq!(as_stored.dimensions(), (40, 20));
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
