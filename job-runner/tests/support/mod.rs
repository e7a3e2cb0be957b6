//! Shared by the integration tests: a real S3 server on loopback, the shipped data, and
//! a way to run the real `fruitpipe` binary.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

pub const ACCESS_KEY: &str = "fruitpipe-test";
pub const SECRET_KEY: &str = "fruitpipe-test-secret";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
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

/// An S3 server (s3s + s3s-fs) serving `root` over HTTP on a loopback port, for as long as
/// this value lives. Each folder of `root` is a bucket.
pub struct S3Server {
    pub endpoint: String,
    pub root: PathBuf,
    faults: Arc<AtomicUsize>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl S3Server {
    pub fn start(root: &Path) -> S3Server {
        S3Server::start_with_faults(root, 0)
    }

    /// Like `start`, but every `fail_every`-th request gets `503 SlowDown`, as a throttled
    /// S3 does (0 = never).
    pub fn start_with_faults(root: &Path, fail_every: usize) -> S3Server {
        let filesystem = s3s_fs::FileSystem::new(root).expect("s3s-fs root");
        let mut builder = S3ServiceBuilder::new(filesystem);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).unwrap();
        let address: SocketAddr = listener.local_addr().unwrap();
        let (shutdown, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let requests = Arc::new(AtomicUsize::new(0));
        let faults = Arc::new(AtomicUsize::new(0));
        let faults_served = Arc::clone(&faults);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let http = ConnBuilder::new(TokioExecutor::new());
                loop {
                    let socket = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok((socket, _)) => socket,
                            Err(_) => continue,
                        },
                        _ = &mut stopped => break,
                    };
                    let service = service.clone();
                    let requests = Arc::clone(&requests);
                    let faults = Arc::clone(&faults_served);
                    let flaky = hyper::service::service_fn(move |request| {
                        let service = service.clone();
                        let count = requests.fetch_add(1, Ordering::SeqCst) + 1;
                        let faults = Arc::clone(&faults);
                        async move {
                            if fail_every > 0 && count.is_multiple_of(fail_every) {
                                faults.fetch_add(1, Ordering::SeqCst);
                                return Ok(slow_down());
                            }
                            hyper::service::Service::call(&service, request).await
                        }
                    });
                    let connection = http
                        .serve_connection(TokioIo::new(socket), flaky)
                        .into_owned();
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                }
            });
        });
        S3Server {
            endpoint: format!("http://{address}"),
            root: root.to_path_buf(),
            faults,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// How many requests were answered with an injected fault.
    pub fn faults(&self) -> usize {
        self.faults.load(Ordering::SeqCst)
    }

    /// Creates a bucket (a folder of the server's root).
    pub fn bucket(&self, name: &str) -> PathBuf {
        let path = self.root.join(name);
        std::fs::create_dir_all(&path).unwrap();
        path
    }

    /// The `fruitpipe` binary, set up to talk to this server.
    pub fn fruitpipe(&self) -> Command {
        let mut command = fruitpipe();
        command
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("FRUITPIPE_S3_PATH_STYLE", "true");
        command
    }
}

fn slow_down() -> http::Response<s3s::Body> {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
        <Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
    http::Response::builder()
        .status(503)
        .header("content-type", "application/xml")
        .body(s3s::Body::from(body.to_string()))
        .unwrap()
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
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
    fn varint(mut value: u64, out: &mut Vec<u8>) {
        while value >= 0x80 {
            out.push((value as u8) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }
    fn field(number: u32, payload: &[u8], out: &mut Vec<u8>) {
        varint(u64::from(number << 3 | 2), out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }
    fn int(number: u32, value: u64, out: &mut Vec<u8>) {
        varint(u64::from(number << 3), out);
        varint(value, out);
    }
    let value_info = |name: &str| {
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
    };
    let mut node = Vec::new();
    field(1, b"x", &mut node);
    field(2, b"y", &mut node);
    field(4, b"Identity", &mut node);
    let mut graph = Vec::new();
    field(1, &node, &mut graph);
    field(2, b"identity", &mut graph);
    field(11, &value_info("x"), &mut graph);
    field(12, &value_info("y"), &mut graph);
    let mut opset = Vec::new();
    int(2, 13, &mut opset);
    let mut model = Vec::new();
    int(1, 8, &mut model); // ir_version
    field(7, &graph, &mut model);
    field(8, &opset, &mut model);
    model
}
