//! Shared by the integration tests: a real S3 server on loopback, the shipped data, and
//! a way to run the real `fruitpipe` binary.
#![allow(dead_code)]

mod fault_proxy;
mod s3_server;
pub mod serve;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

// Only some test binaries use the proxy; the others would call the import unused.
#[allow(unused_imports)]
pub use fault_proxy::*;
pub use s3_server::{ACCESS_KEY, S3Server, SECRET_KEY};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The storage layer in this process, set up for the test server at `endpoint`. The AWS
/// SDK reads credentials from the environment: they are set once, before any client of the
/// test binary reads it (binaries that use this touch the environment nowhere else).
pub fn in_process_storage(endpoint: &str) -> fruitpipe_runner::storage::Storage {
    static CREDENTIALS: std::sync::Once = std::sync::Once::new();
    CREDENTIALS.call_once(|| {
        // SAFETY: runs once, before any S3 client of this test binary reads the environment.
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
            std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
            std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        }
    });
    fruitpipe_runner::storage::Storage::new(fruitpipe_runner::storage::S3Options {
        endpoint: Some(endpoint.to_string()),
        region: Some("us-east-1".into()),
        path_style: true,
        ..Default::default()
    })
}

/// The photos shipped in the repository (`data/fruits360-sample`).
pub fn sample_photos() -> PathBuf {
    repo_root().join("data/fruits360-sample")
}

pub fn features_model() -> PathBuf {
    repo_root().join("data/models/efficientnet_lite0_features.onnx")
}

pub fn logits_model() -> PathBuf {
    repo_root().join("data/models/efficientnet_lite0_logits.onnx")
}

impl S3Server {
    /// The `fruitpipe` binary, set up to talk to this server.
    pub fn fruitpipe(&self) -> Command {
        fruitpipe_for(&self.endpoint)
    }
}

/// The `fruitpipe` binary, set up to talk to the S3 endpoint `endpoint` with the test
/// server's credentials.
pub fn fruitpipe_for(endpoint: &str) -> Command {
    let mut command = fruitpipe();
    command
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("FRUITPIPE_S3_PATH_STYLE", "true");
    command
}

/// The real binary, with no AWS settings leaking in from the machine.
pub fn fruitpipe() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fruitpipe"));
    for variable in [
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "FRUITPIPE_MODEL",
        "FRUITPIPE_S3_PATH_STYLE",
        "FRUITPIPE_S3_TIMEOUT",
        "JOB_COMPLETION_INDEX",
    ] {
        command.env_remove(variable);
    }
    command
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("RUST_LOG", "warn");
    command
}

/// `fruitpipe run` of `input` into `output` with the shipped model at 100 px.
pub fn pipeline(input: &Path, output: &Path) -> Command {
    let mut command = fruitpipe();
    command
        .arg("run")
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output)
        .arg("--model")
        .arg(features_model())
        .args(["--size", "100"]);
    command
}

/// `http://127.0.0.1:PORT` with nothing listening: connections to it are refused.
pub fn refused_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let address = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}")
}

/// A loopback endpoint that accepts connections and never answers, for as long as it lives.
pub struct SilentEndpoint {
    pub endpoint: String,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentEndpoint {
    pub fn start() -> SilentEndpoint {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (connections, stop) = (Arc::clone(&connections), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut held = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((socket, _)) => {
                            connections.fetch_add(1, Ordering::SeqCst);
                            held.push(socket);
                        }
                        Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
                    }
                }
            })
        };
        SilentEndpoint {
            endpoint,
            connections,
            stop,
            thread: Some(thread),
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for SilentEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs a command and returns its output, printing it when the test fails.
pub fn run(command: &mut Command) -> Output {
    let output = command.output().expect("cannot start fruitpipe");
    eprintln!(
        "$ {:?}\nexit: {:?}\nstdout: {}\nstderr: {}",
        command,
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Copies `per_class` photos of each of `classes` from both splits of the shipped sample.
pub fn copy_sample(target: &Path, classes: &[&str], per_class: usize) {
    for split in ["Training", "Test"] {
        for class in classes {
            let source = sample_photos().join(split).join(class);
            let destination = target.join(split).join(class);
            std::fs::create_dir_all(&destination).unwrap();
            let mut names: Vec<_> = std::fs::read_dir(&source)
                .unwrap_or_else(|err| panic!("{}: {err}", source.display()))
                .map(|entry| entry.unwrap().file_name())
                .collect();
            names.sort();
            for name in names.into_iter().take(per_class) {
                std::fs::copy(source.join(&name), destination.join(&name)).unwrap();
            }
        }
    }
}

/// Rows of a CSV file, header included.
pub fn read_csv(path: &Path) -> Vec<Vec<String>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    reader
        .records()
        .map(|record| record.unwrap().iter().map(str::to_string).collect())
        .collect()
}

/// A minimal ONNX model, `y = Identity(x)`, with the given input shape (`-1` = dynamic):
/// a real model the runner must refuse when the shape is not an image batch.
pub fn identity_onnx(shape: &[i64]) -> Vec<u8> {
    one_node_onnx("Identity", &[], shape, shape)
}

/// A minimal ONNX model, `y = ReduceMean(x, axes=[3], keepdims=0)`: it takes an image batch
/// `[N, 3, H, W]` but gives a 3-D output, which is neither features nor a feature map.
pub fn three_d_output_onnx(height: i64, width: i64) -> Vec<u8> {
    reduce_mean_onnx(3, false, &[-1, 3, height, width], &[-1, 3, height])
}

/// A minimal ONNX model, `y = ReduceMean(x, axes=[0], keepdims=1)`: one feature map for a
/// whole batch, `[1, 3, H, W]` whatever `N` is. One photo looks fine; a batch of several
/// returns fewer rows than photos.
pub fn batch_mean_onnx(height: i64, width: i64) -> Vec<u8> {
    reduce_mean_onnx(0, true, &[-1, 3, height, width], &[1, 3, height, width])
}

fn reduce_mean_onnx(axis: u64, keep: bool, input: &[i64], output: &[i64]) -> Vec<u8> {
    let mut axes = Vec::new();
    onnx::field(1, b"axes", &mut axes);
    onnx::int(8, axis, &mut axes); // ints
    onnx::int(20, 7, &mut axes); // type INTS
    let mut keepdims = Vec::new();
    onnx::field(1, b"keepdims", &mut keepdims);
    onnx::int(3, u64::from(keep), &mut keepdims); // i
    onnx::int(20, 2, &mut keepdims); // type INT
    one_node_onnx("ReduceMean", &[axes, keepdims], input, output)
}

/// A small real feature model: `y = Flatten(x) . W`, from `[N, 3, size, size]` images to
/// `[N, dim]` features, with fixed pseudo-random weights. Fast enough for thousands of
/// shards, and its features vary with the photo (unlike a pooled identity).
pub fn linear_onnx(size: i64, dim: usize) -> Vec<u8> {
    use onnx::{field, int};
    let inputs = 3 * (size * size) as usize;
    let mut weights = Vec::with_capacity(4 * inputs * dim);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..inputs * dim {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let value = ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) / inputs as f32;
        weights.extend_from_slice(&value.to_le_bytes());
    }
    let mut initializer = Vec::new();
    int(1, inputs as u64, &mut initializer); // dims
    int(1, dim as u64, &mut initializer);
    int(2, 1, &mut initializer); // data_type FLOAT
    field(8, b"w", &mut initializer); // name
    field(9, &weights, &mut initializer); // raw_data
    let node = |op: &str, ins: &[&str], out: &str| {
        let mut node = Vec::new();
        for name in ins {
            field(1, name.as_bytes(), &mut node);
        }
        field(2, out.as_bytes(), &mut node);
        field(4, op.as_bytes(), &mut node);
        node
    };
    let mut graph = Vec::new();
    field(1, &node("Flatten", &["x"], "flat"), &mut graph);
    field(1, &node("MatMul", &["flat", "w"], "y"), &mut graph);
    field(2, b"linear", &mut graph);
    field(5, &initializer, &mut graph);
    field(11, &value_info("x", &[-1, 3, size, size]), &mut graph);
    field(12, &value_info("y", &[-1, dim as i64]), &mut graph);
    model_of(&graph)
}

/// Protocol-buffer encoding, just enough for [`one_node_onnx`].
mod onnx {
    pub fn varint(mut value: u64, out: &mut Vec<u8>) {
        while value >= 0x80 {
            out.push((value as u8) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }
    pub fn field(number: u32, payload: &[u8], out: &mut Vec<u8>) {
        varint(u64::from(number << 3 | 2), out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }
    pub fn int(number: u32, value: u64, out: &mut Vec<u8>) {
        varint(u64::from(number << 3), out);
        varint(value, out);
    }
}

/// The `ValueInfoProto` of a float32 tensor of this shape (`-1` = dynamic, named `N`).
fn value_info(name: &str, shape: &[i64]) -> Vec<u8> {
    use onnx::{field, int};
    let mut dims = Vec::new();
    for &size in shape {
        let mut dim = Vec::new();
        if size < 0 {
            field(2, b"N", &mut dim);
        } else {
            int(1, size as u64, &mut dim);
        }
        field(1, &dim, &mut dims);
    }
    let mut tensor = Vec::new();
    int(1, 1, &mut tensor); // elem_type FLOAT
    field(2, &dims, &mut tensor);
    let mut kind = Vec::new();
    field(1, &tensor, &mut kind);
    let mut info = Vec::new();
    field(1, name.as_bytes(), &mut info);
    field(2, &kind, &mut info);
    info
}

/// A `ModelProto` around an encoded graph (IR 8, opset 13).
fn model_of(graph: &[u8]) -> Vec<u8> {
    use onnx::{field, int};
    let mut opset = Vec::new();
    int(2, 13, &mut opset);
    let mut model = Vec::new();
    int(1, 8, &mut model); // ir_version
    field(7, graph, &mut model);
    field(8, &opset, &mut model);
    model
}

/// An ONNX model of one float32 node `y = op(x)` with encoded `attributes`.
fn one_node_onnx(op: &str, attributes: &[Vec<u8>], input: &[i64], output: &[i64]) -> Vec<u8> {
    use onnx::field;
    let mut node = Vec::new();
    field(1, b"x", &mut node);
    field(2, b"y", &mut node);
    field(4, op.as_bytes(), &mut node);
    for attribute in attributes {
        field(5, attribute, &mut node);
    }
    let mut graph = Vec::new();
    field(1, &node, &mut graph);
    field(2, b"one-node", &mut graph);
    field(11, &value_info("x", input), &mut graph);
    field(12, &value_info("y", output), &mut graph);
    model_of(&graph)
}
