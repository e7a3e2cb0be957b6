//! The pretrained CNN: ONNX Runtime loaded at run time, one session per process.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;
use ort::value::TensorRef;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::imaging::{Layout, Preprocessing, Preset};

/// The ONNX Runtime release the runner is built and tested against.
pub const RUNTIME_FILE: &str = "libonnxruntime.so.1.31.1";
/// Input size used when the model accepts any size.
pub const DEFAULT_SIZE: u32 = 224;

/// What produced the features: recorded in every partial and in `pca_model.json`, so a
/// new photo can be projected exactly as the training photos were.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub uri: String,
    pub sha256: String,
    pub input: String,
    pub output: String,
    pub preprocessing: Preprocessing,
    pub dim: usize,
}

/// A loaded feature extractor.
pub struct Model {
    session: Session,
    pub info: ModelInfo,
    output_is_spatial: bool,
    /// The batch size the model's input fixes (e.g. `[1, 3, 224, 224]`), if any: batches
    /// are at most this large, and a shorter last batch is padded up to it.
    fixed_batch: Option<usize>,
}

static ENVIRONMENT: OnceLock<std::result::Result<Environment, String>> = OnceLock::new();

/// Where the runner looks for ONNX Runtime, in order. `ORT_DYLIB_PATH` wins when set.
pub fn runtime_search_path() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        dirs.push(dir.to_path_buf());
        dirs.push(dir.join("../lib"));
        // cargo puts test binaries one level below the main binaries.
        dirs.push(dir.join(".."));
    }
    dirs.push(PathBuf::from("/usr/lib/fruitpipe"));
    dirs.push(PathBuf::from("/usr/local/lib/fruitpipe"));
    // A development checkout: scripts/setup.sh puts the library in .ort/.
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ort"));
    dirs
}

fn find_runtime() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::Config(format!(
                "ORT_DYLIB_PATH points to {}, which does not exist; point it at {RUNTIME_FILE} or unset it",
                path.display()
            )))
        };
    }
    runtime_search_path()
        .into_iter()
        .map(|dir| dir.join(RUNTIME_FILE))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            Error::Config(format!(
                "ONNX Runtime ({RUNTIME_FILE}) was not found; run scripts/setup.sh, or set ORT_DYLIB_PATH to the library's path"
            ))
        })
}

fn environment() -> Result<&'static Environment> {
    let loaded = ENVIRONMENT.get_or_init(|| {
        let path = find_runtime().map_err(|err| err.to_string())?;
        ort::init_from(&path)
            .map_err(|err| format!("cannot load ONNX Runtime from {}: {err}", path.display()))?
            .with_name("fruitpipe")
            // ONNX Runtime's telemetry is on by default: it writes a session file into
            // $TMPDIR and would report usage from a data pipeline that should not.
            .with_telemetry(false)
            .build()
            .map_err(|err| format!("cannot start ONNX Runtime: {err}"))
    });
    loaded
        .as_ref()
        .map_err(|message| Error::Config(message.clone()))
}

/// Chooses the input size: the model's own when fixed, else the requested one, else 224.
fn choose_size(fixed: Option<u32>, requested: Option<u32>) -> Result<u32> {
    match (fixed, requested) {
        (Some(fixed), Some(requested)) if fixed != requested => Err(Error::Config(format!(
            "the model only accepts {fixed}x{fixed} inputs but --size {requested} was given; drop --size or give --size {fixed}"
        ))),
        (Some(fixed), _) => Ok(fixed),
        (None, Some(requested)) => Ok(requested),
        (None, None) => Ok(DEFAULT_SIZE),
    }
}

/// Reads layout and fixed size from an input shape such as `[-1, 3, 224, 224]`.
fn read_input_shape(shape: &[i64]) -> Result<(Layout, Option<u32>)> {
    let (layout, h, w) = match *shape {
        [_, 3, h, w] => (Layout::Nchw, h, w),
        [_, h, w, 3] => (Layout::Nhwc, h, w),
        _ => {
            return Err(Error::Input(format!(
                "the model's input shape {shape:?} is not an image batch; expected [batch, 3, H, W] or [batch, H, W, 3]"
            )));
        }
    };
    if h > 0 && w > 0 && h != w {
        return Err(Error::Input(format!(
            "the model's input shape {shape:?} is not square; the runner feeds square images"
        )));
    }
    Ok((layout, (h > 0 && h == w).then_some(h as u32)))
}

impl Model {
    /// Loads an ONNX model from its bytes and checks, with one inference, that it turns a
    /// photo into a feature vector.
    pub fn load(
        bytes: &[u8],
        uri: &str,
        preset: Preset,
        requested_size: Option<u32>,
        threads: usize,
    ) -> Result<Model> {
        Model::load_with_spinning(bytes, uri, preset, requested_size, threads, true)
    }

    /// [`Model::load`], choosing whether ONNX Runtime's worker threads keep spinning after
    /// an inference, waiting for the next one (its default), or stop. Spinning on is fastest
    /// when inference is all the process does; a server answering one photo at a time is
    /// faster with it off, as the spinning threads take the cores its requests need. Within
    /// an inference they spin either way (bench/serve.sh: p50 1.3x of inference alone with
    /// it off, 1.8-2x with it on).
    pub fn load_with_spinning(
        bytes: &[u8],
        uri: &str,
        preset: Preset,
        requested_size: Option<u32>,
        threads: usize,
        spin_between_runs: bool,
    ) -> Result<Model> {
        let environment = environment()?;
        let not_a_model = |err: String| {
            Error::Input(format!(
                "{uri} is not a usable ONNX model ({err}); check --model"
            ))
        };
        let session = Session::builder(environment)
            .and_then(|builder| {
                builder
                    .with_intra_threads(threads)
                    .map_err(ort::Error::<()>::from)
            })
            .and_then(|builder| {
                builder
                    .with_config_entry(
                        "session.force_spinning_stop",
                        if spin_between_runs { "0" } else { "1" },
                    )
                    .map_err(ort::Error::<()>::from)
            })
            .and_then(|mut builder| builder.commit_from_memory(bytes))
            .map_err(|err| not_a_model(err.to_string()))?;

        let [input] = session.inputs() else {
            return Err(not_a_model(format!(
                "it has {} inputs, the runner feeds exactly one image tensor",
                session.inputs().len()
            )));
        };
        let shape = input
            .dtype()
            .tensor_shape()
            .ok_or_else(|| not_a_model("its input is not a tensor".into()))?;
        let (layout, fixed) = read_input_shape(shape)?;
        let fixed_batch = usize::try_from(shape[0]).ok().filter(|&n| n > 0);
        let size = choose_size(fixed, requested_size)?;
        let input_name = input.name().to_string();
        let output_name = session
            .outputs()
            .first()
            .map(|output| output.name().to_string())
            .ok_or_else(|| not_a_model("it has no output".into()))?;

        let mut model = Model {
            info: ModelInfo {
                uri: uri.to_string(),
                sha256: format!("{:x}", Sha256::digest(bytes)),
                input: input_name,
                output: output_name,
                preprocessing: Preprocessing {
                    preset,
                    size,
                    layout,
                    exif_orientation: true,
                },
                dim: 0,
            },
            session,
            output_is_spatial: false,
            fixed_batch,
        };
        model.learn_output_shape(uri)?;
        Ok(model)
    }

    /// Runs one blank photo to learn the feature dimension and how to pool the output.
    fn learn_output_shape(&mut self, uri: &str) -> Result<()> {
        let blank = vec![0.0; self.info.preprocessing.tensor_len()];
        let (shape, _) = self
            .run_raw(&blank, 1)
            .map_err(|err| Error::Input(format!("{uri} fails on a single photo: {err}")))?;
        match shape.as_slice() {
            [1, dim] => self.info.dim = *dim as usize,
            [1, a, b, c] => {
                self.output_is_spatial = true;
                self.info.dim = match self.info.preprocessing.layout {
                    Layout::Nchw => *a as usize,
                    Layout::Nhwc => *c as usize,
                };
                let _ = b;
            }
            other => {
                return Err(Error::Input(format!(
                    "{uri} outputs shape {other:?}; the runner needs [batch, features] or a 4-D feature map"
                )));
            }
        }
        if self.info.dim == 0 {
            return Err(Error::Input(format!("{uri} outputs empty feature vectors")));
        }
        Ok(())
    }

    /// The largest batch the model takes, when its input fixes one.
    pub fn batch_limit(&self) -> Option<usize> {
        self.fixed_batch
    }

    fn run_raw(&mut self, batch: &[f32], count: usize) -> Result<(Vec<i64>, Vec<f32>)> {
        if let Some(fixed) = self.fixed_batch
            && count < fixed
        {
            // Padded with blank photos up to the fixed size; their rows are dropped.
            let mut padded = batch.to_vec();
            padded.resize(fixed * self.info.preprocessing.tensor_len(), 0.0);
            let (mut shape, values) = self.run_raw_exact(&padded, fixed)?;
            let per_photo = values.len() / fixed.max(1);
            shape[0] = count as i64;
            return Ok((shape, values[..count * per_photo].to_vec()));
        }
        self.run_raw_exact(batch, count)
    }

    fn run_raw_exact(&mut self, batch: &[f32], count: usize) -> Result<(Vec<i64>, Vec<f32>)> {
        let size = self.info.preprocessing.size as i64;
        let shape: Vec<i64> = match self.info.preprocessing.layout {
            Layout::Nchw => vec![count as i64, 3, size, size],
            Layout::Nhwc => vec![count as i64, size, size, 3],
        };
        // A view, not a copy: the caller reuses one buffer for every batch.
        let tensor = TensorRef::from_array_view((shape, batch))
            .map_err(|err| Error::Inference(err.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![self.info.input.as_str() => tensor])
            .map_err(|err| Error::Inference(err.to_string()))?;
        let (shape, values) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|err| Error::Inference(format!("output is not float32: {err}")))?;
        Ok((shape.to_vec(), values.to_vec()))
    }

    /// Feature vectors for `count` preprocessed photos laid end to end in `batch`;
    /// returns `count * dim` floats, a row per photo.
    pub fn features(&mut self, batch: &[f32], count: usize) -> Result<Vec<f32>> {
        let (shape, values) = self.run_raw(batch, count)?;
        // Checked on every batch: a short output would silently drop photos.
        let expected_rank = if self.output_is_spatial { 4 } else { 2 };
        if shape.len() != expected_rank
            || shape[0] != count as i64
            || shape.iter().product::<i64>() != values.len() as i64
        {
            return Err(Error::Input(format!(
                "the model returned shape {shape:?} for a batch of {count} photos; it must return one feature row per photo"
            )));
        }
        let rows = if self.output_is_spatial {
            global_average_pool(&values, &shape, self.info.preprocessing.layout)
        } else {
            values
        };
        if rows.len() != count * self.info.dim {
            return Err(Error::Input(format!(
                "the model returned {} values for {count} photos of {} features; its output changed shape between batches",
                rows.len(),
                self.info.dim
            )));
        }
        Ok(rows)
    }
}

/// Averages a `[n, c, h, w]` (NCHW) or `[n, h, w, c]` (NHWC) map over its spatial axes.
fn global_average_pool(values: &[f32], shape: &[i64], layout: Layout) -> Vec<f32> {
    let [n, a, b, c] = [shape[0], shape[1], shape[2], shape[3]].map(|d| d as usize);
    let (channels, spatial) = match layout {
        Layout::Nchw => (a, b * c),
        Layout::Nhwc => (c, a * b),
    };
    let mut pooled = vec![0.0f32; n * channels];
    for (image, out) in pooled.chunks_mut(channels).enumerate() {
        let map = &values[image * channels * spatial..(image + 1) * channels * spatial];
        for (channel, slot) in out.iter_mut().enumerate() {
            let sum: f32 = match layout {
                Layout::Nchw => map[channel * spatial..(channel + 1) * spatial].iter().sum(),
                Layout::Nhwc => (0..spatial).map(|p| map[p * channels + channel]).sum(),
            };
            *slot = sum / spatial as f32;
        }
    }
    pooled
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_shapes_give_layout_and_size() {
        assert_eq!(
            read_input_shape(&[-1, 3, -1, -1]).unwrap(),
            (Layout::Nchw, None)
        );
        assert_eq!(
            read_input_shape(&[1, 224, 224, 3]).unwrap(),
            (Layout::Nhwc, Some(224))
        );
        assert!(read_input_shape(&[-1, 1000]).is_err());
    }

    #[test]
    fn size_follows_the_model_then_the_flag_then_224() {
        assert_eq!(choose_size(Some(160), None).unwrap(), 160);
        assert_eq!(choose_size(None, Some(100)).unwrap(), 100);
        assert_eq!(choose_size(None, None).unwrap(), 224);
        assert!(choose_size(Some(160), Some(224)).is_err());
    }

    #[test]
    fn pooling_averages_each_channel() {
        // One image, two channels, 2x1 spatial.
        let nchw = [1.0, 3.0, 10.0, 20.0];
        assert_eq!(
            global_average_pool(&nchw, &[1, 2, 2, 1], Layout::Nchw),
            vec![2.0, 15.0]
        );
        let nhwc = [1.0, 10.0, 3.0, 20.0];
        assert_eq!(
            global_average_pool(&nhwc, &[1, 2, 1, 2], Layout::Nhwc),
            vec![2.0, 15.0]
        );
    }
}
