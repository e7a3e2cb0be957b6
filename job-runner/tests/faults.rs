//! The real `fruitpipe` binary against a real S3 server (s3s + s3s-fs) behind a proxy that
//! injects faults: throttling, server errors, connections reset or closed mid-response,
//! stalls, processes killed at chosen requests, and photos that are not photos. Every
//! scenario compares `features_pca.csv` (and `pca_model.json`, `errors.csv`) byte for byte
//! with a clean run on the same photos, and prints a table row (`--nocapture` shows it).
//!
//! The photos are the 510 of `data/fruits360-sample` copied under several names (2,000 in
//! all); the model is a one-node ONNX graph (`Identity` on 8x8 images, average-pooled to 3
//! features), so a photo costs its download and its decoding, nothing more.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use support::{FaultConfig, FaultCounts, FaultKind, FaultProxy, FaultRates, S3Server};

const BUCKET: &str = "fruit";
/// Photos of the main set (`in/`: kills, bad photos, 503 storms) and its shards.
const PHOTOS: usize = 2000;
const SHARD_SIZE: usize = 500;
const SHARDS: usize = PHOTOS / SHARD_SIZE;
/// Photos of the set the fault-rate scenarios run on (`in1k/`), and its shards: 2,000 took
/// 150 s per run at 10% stalls on the 2-core machine (see `ten_percent_stalls...`).
const FAULT_PHOTOS: usize = 1000;
const FAULT_SHARD_SIZE: usize = 250;
/// `--s3-timeout` of every faulty run, and how long the proxy stalls (longer).
const S3_TIMEOUT: &str = "2";
const STALL: Duration = Duration::from_secs(3);
/// How long a run may take to give up on a store that answers nothing but 503.
const GIVE_UP_BOUND: Duration = Duration::from_secs(20);
const MODEL: &str = "s3://fruit/models/tiny.onnx";

// ---------------------------------------------------------------------------------------
// The shared store: photos, model, and the clean reference outputs, made once per process.

struct Fixture {
    _root: tempfile::TempDir,
    server: S3Server,
    /// The bucket's folder on disk.
    bucket: PathBuf,
    /// Outputs of a clean `fruitpipe run` on `in/`, and on `in1k/`.
    reference: Outputs,
    reference_1k: Outputs,
    /// The photo keys of each shard of `in/`, in manifest order.
    shards: Vec<Vec<String>>,
    /// A clean work area of `in/` (plan, manifests, features, partials), below `bucket`.
    clean_work: String,
}

#[derive(Clone, Debug, PartialEq)]
struct Outputs {
    csv: Vec<u8>,
    model: Vec<u8>,
    errors: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let root = tempfile::tempdir().unwrap();
        remove_at_exit(root.path());
        let scratch = root.path().join("scratch");
        std::fs::create_dir_all(scratch.join("tmp")).unwrap();
        SCRATCH.set(scratch).unwrap();
        let server = S3Server::start(root.path());
        let bucket = server.bucket(BUCKET);
        write_photos(&bucket.join("in"), PHOTOS);
        write_photos(&bucket.join("in1k"), FAULT_PHOTOS);
        std::fs::create_dir_all(bucket.join("models")).unwrap();
        std::fs::write(
            bucket.join("models/tiny.onnx"),
            support::identity_onnx(&[-1, 3, 8, 8]),
        )
        .unwrap();

        let started = Instant::now();
        let clean = pipeline(&server.endpoint, Mode::Run, "in", "out/clean");
        assert_eq!(clean.code, Some(0), "clean run: {}", clean.stderr);
        let reference = outputs(&bucket, "out/clean").expect("clean outputs");
        let phases = pipeline(&server.endpoint, Mode::Phases, "in", "out/phases-clean");
        assert_eq!(phases.code, Some(0), "clean phases: {}", phases.stderr);
        assert!(
            outputs(&bucket, "out/phases-clean").as_ref() == Some(&reference),
            "a clean `run` and clean plan/extract/fit differ"
        );
        let clean_work = "out/phases-clean/_work/run-1".to_string();
        let small = pipeline(&server.endpoint, Mode::Run, "in1k", "out/clean-1k");
        assert_eq!(small.code, Some(0), "clean run of in1k: {}", small.stderr);
        let reference_1k = outputs(&bucket, "out/clean-1k").expect("clean outputs of in1k");
        println!(
            "fixture: clean run of the {FAULT_PHOTOS} photos of in1k/ in {:.1} s",
            small.seconds
        );
        let shards: Vec<Vec<String>> = (0..SHARDS)
            .map(|shard| {
                let manifest = bucket.join(format!("{clean_work}/shards/{shard:05}.txt"));
                std::fs::read_to_string(manifest)
                    .unwrap()
                    .lines()
                    .map(|line| line.strip_prefix("s3://fruit/").unwrap().to_string())
                    .collect()
            })
            .collect();
        assert!(shards.iter().all(|keys| keys.len() == SHARD_SIZE));
        println!(
            "fixture: {PHOTOS} photos, {SHARDS} shards; clean run {:.1} s, clean phases {:.1} s (set up in {:.1} s)",
            clean.seconds,
            phases.seconds,
            started.elapsed().as_secs_f64()
        );
        Fixture {
            _root: root,
            server,
            bucket,
            reference,
            reference_1k,
            shards,
            clean_work,
        }
    })
}

/// The fixture lives in a static, which is never dropped: its folder (about 40 MB of
/// photo copies and outputs) is removed when the test process exits.
fn remove_at_exit(root: &Path) {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    extern "C" fn remove_root() {
        if let Some(root) = ROOT.get() {
            let _ = std::fs::remove_dir_all(root);
        }
    }
    if ROOT.set(root.to_path_buf()).is_ok() {
        // SAFETY: registers a plain function with no arguments, once.
        unsafe { libc::atexit(remove_root) };
    }
}

/// The sample photos as `(relative path, file)`, sorted.
fn sample_files() -> Vec<(String, PathBuf)> {
    let mut files = Vec::new();
    for split in ["Training", "Test"] {
        for class in std::fs::read_dir(support::sample_photos().join(split)).unwrap() {
            let class = class.unwrap();
            for photo in std::fs::read_dir(class.path()).unwrap() {
                let photo = photo.unwrap();
                let relative = format!(
                    "{split}/{}/{}",
                    class.file_name().to_string_lossy(),
                    photo.file_name().to_string_lossy()
                );
                files.push((relative, photo.path()));
            }
        }
    }
    files.sort();
    files
}

/// `count` photos under `dir`: the sample, copied as often as needed, copy `c` of
/// `FOLDER/NAME` as `FOLDER/cC_NAME` (so labels stay right); returns their relative paths.
fn write_photos(dir: &Path, count: usize) -> Vec<String> {
    let sample = sample_files();
    let mut written = Vec::new();
    'copies: for copy in 0.. {
        for (relative, file) in &sample {
            if written.len() == count {
                break 'copies;
            }
            let (folder, name) = relative.rsplit_once('/').unwrap();
            let relative = format!("{folder}/c{copy}_{name}");
            let target = dir.join(&relative);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(file, &target).unwrap();
            written.push(relative);
        }
    }
    written
}

fn outputs(bucket: &Path, prefix: &str) -> Option<Outputs> {
    let read = |name: &str| std::fs::read(bucket.join(prefix).join(name)).ok();
    Some(Outputs {
        csv: read("features_pca.csv")?,
        model: read("pca_model.json")?,
        errors: read("errors.csv")?,
    })
}

/// Copies every file of a folder tree for which `keep(relative path)` holds.
fn copy_tree(from: &Path, to: &Path, keep: &dyn Fn(&str) -> bool) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target, &|rest| {
                keep(&format!("{}/{rest}", entry.file_name().to_string_lossy()))
            });
        } else if keep(&entry.file_name().to_string_lossy()) {
            std::fs::create_dir_all(to).unwrap();
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Running the binary.

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// `fruitpipe run`.
    Run,
    /// `plan`, `extract --index I` for each shard, `fit`, as separate processes.
    Phases,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Run => "run",
            Mode::Phases => "phases",
        }
    }
}

fn uri(key: &str) -> String {
    format!("s3://{BUCKET}/{key}")
}

/// What every command gets: the timeout the stalls exceed, and a TMPDIR of the suite's.
fn shared_flags(command: &mut Command) -> &mut Command {
    command
        .args(["--s3-timeout", S3_TIMEOUT])
        .env("TMPDIR", scratch().join("tmp"))
}

/// A folder inside the fixture's, removed with it: the commands' TMPDIR is below it.
fn scratch() -> &'static Path {
    SCRATCH
        .get()
        .expect("the fixture sets the scratch folder up first")
}

static SCRATCH: OnceLock<PathBuf> = OnceLock::new();

fn run_command(endpoint: &str, input: &str, output: &str) -> Command {
    let mut command = support::fruitpipe_for(endpoint);
    command
        .args(["run", "--input", &uri(input), "--output", &uri(output)])
        .args(["--model", MODEL, "--batch", "100", "--threads", "1"])
        .args(["--shard-size", &shard_size(input).to_string()])
        .args(["--components", "2"]);
    shared_flags(&mut command);
    command
}

fn plan_command(endpoint: &str, input: &str, work: &str) -> Command {
    let mut command = support::fruitpipe_for(endpoint);
    command
        .args(["plan", "--input", &uri(input), "--work", &uri(work)])
        .args(["--shard-size", &shard_size(input).to_string()]);
    shared_flags(&mut command);
    command
}

fn extract_command(endpoint: &str, work: &str, index: usize) -> Command {
    let mut command = support::fruitpipe_for(endpoint);
    command
        .args([
            "extract",
            "--work",
            &uri(work),
            "--index",
            &index.to_string(),
        ])
        .args(["--model", MODEL, "--batch", "100", "--threads", "1"]);
    shared_flags(&mut command);
    command
}

fn fit_command(endpoint: &str, work: &str, output: &str) -> Command {
    let mut command = support::fruitpipe_for(endpoint);
    command
        .args(["fit", "--work", &uri(work), "--output", &uri(output)])
        .args(["--components", "2"]);
    shared_flags(&mut command);
    command
}

fn project_command(endpoint: &str, work: &str, index: usize) -> Command {
    let mut command = support::fruitpipe_for(endpoint);
    command.args([
        "project",
        "--work",
        &uri(work),
        "--index",
        &index.to_string(),
    ]);
    shared_flags(&mut command);
    command
}

fn assemble_command(endpoint: &str, work: &str, output: &str) -> Command {
    let mut command = support::fruitpipe_for(endpoint);
    command.args(["assemble", "--work", &uri(work), "--output", &uri(output)]);
    shared_flags(&mut command);
    command
}

/// fit, project every shard, assemble: what follows the extracts, stopping at the first
/// command that fails.
fn fit_project_assemble(
    endpoint: &str,
    work: &str,
    output: &str,
    shards: usize,
    started: Instant,
) -> Outcome {
    let fit = execute("fit", &mut fit_command(endpoint, work, output), started);
    if fit.code != Some(0) {
        return fit;
    }
    project_and_assemble(endpoint, work, output, 0..shards, started)
}

/// project the given shards, then assemble.
fn project_and_assemble(
    endpoint: &str,
    work: &str,
    output: &str,
    shards: impl IntoIterator<Item = usize>,
    started: Instant,
) -> Outcome {
    for index in shards {
        let project = execute(
            &format!("project {index}"),
            &mut project_command(endpoint, work, index),
            started,
        );
        if project.code != Some(0) {
            return project;
        }
    }
    execute(
        "assemble",
        &mut assemble_command(endpoint, work, output),
        started,
    )
}

/// How a command (or the first failing one of a pipeline) ended.
#[derive(Clone, Debug)]
struct Outcome {
    /// Which command: "run", "plan", "extract 2", "fit", "project 1", "assemble".
    step: String,
    code: Option<i32>,
    /// The whole pipeline's time so far.
    seconds: f64,
    stderr: String,
}

impl Outcome {
    fn describe(&self) -> String {
        let code = self
            .code
            .map_or_else(|| "killed".to_string(), |code| format!("exit {code}"));
        if self.code == Some(0) {
            format!("{code} in {:.1} s", self.seconds)
        } else {
            format!("{} {code} in {:.1} s", self.step, self.seconds)
        }
    }

    /// The `error:` line, or the end of stderr.
    fn error_line(&self) -> String {
        self.stderr
            .lines()
            .find(|line| line.starts_with("error:"))
            .map(str::to_string)
            .unwrap_or_else(|| {
                let tail: Vec<&str> = self.stderr.lines().rev().take(5).collect();
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            })
    }
}

fn execute(step: &str, command: &mut Command, started: Instant) -> Outcome {
    let output = command
        .stdin(Stdio::null())
        .output()
        .expect("cannot start fruitpipe");
    Outcome {
        step: step.to_string(),
        code: output.status.code(),
        seconds: started.elapsed().as_secs_f64(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs the whole pipeline in `mode`, stopping at the first command that fails.
fn pipeline(endpoint: &str, mode: Mode, input: &str, output: &str) -> Outcome {
    let started = Instant::now();
    match mode {
        Mode::Run => execute("run", &mut run_command(endpoint, input, output), started),
        Mode::Phases => {
            let work = format!("{output}/_work/run-1");
            let plan = execute("plan", &mut plan_command(endpoint, input, &work), started);
            if plan.code != Some(0) {
                return plan;
            }
            let shards = plan_shards(input);
            for index in 0..shards {
                let extract = execute(
                    &format!("extract {index}"),
                    &mut extract_command(endpoint, &work, index),
                    started,
                );
                if extract.code != Some(0) {
                    return extract;
                }
            }
            fit_project_assemble(endpoint, &work, output, shards, started)
        }
    }
}

/// Photos of an input, and how many per shard.
fn photos_and_shard_size(input: &str) -> (usize, usize) {
    match input {
        "in" => (PHOTOS, SHARD_SIZE),
        "in1k" => (FAULT_PHOTOS, FAULT_SHARD_SIZE),
        "bad" => (PHOTOS + BAD_FILES, SHARD_SIZE),
        other => panic!("unknown input {other}"),
    }
}

fn shard_size(input: &str) -> usize {
    photos_and_shard_size(input).1
}

/// Shards of an input, as `plan` cuts them.
fn plan_shards(input: &str) -> usize {
    let (photos, shard_size) = photos_and_shard_size(input);
    photos.div_ceil(shard_size)
}

/// `/fruit/in/Test/Apple%20Red%201/c0_1.jpg?x-id=GetObject` -> `/fruit/in/Test/Apple Red
/// 1/c0_1.jpg`.
fn path_of(target: &str) -> String {
    let path = target.split('?').next().unwrap_or(target);
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%'
            && at + 2 < bytes.len()
            && let Ok(hex) = std::str::from_utf8(&bytes[at + 1..at + 3])
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------
// The summary table.

#[derive(Clone)]
struct Row {
    scenario: String,
    counts: FaultCounts,
    outcome: String,
    identical: &'static str,
    /// Printed under the row: the error line of a run that failed, say.
    note: Option<String>,
}

fn print_table(title: &str, rows: &[Row]) {
    let mut text = format!(
        "\n== {title}\n{:<52} | {} | {:<62} | identical\n",
        "scenario",
        FaultCounts::HEADER,
        "outcome"
    );
    for row in rows {
        text.push_str(&format!(
            "{:<52} | {} | {:<62} | {}\n",
            row.scenario, row.counts, row.outcome, row.identical
        ));
        if let Some(note) = &row.note {
            text.push_str(&format!("    {note}\n"));
        }
    }
    // One write, so tables of tests running side by side do not interleave.
    print!("{text}");
}

fn yes_no(same: bool) -> &'static str {
    if same { "yes" } else { "NO" }
}

/// Fails the test with every failure of its scenarios, after the table was printed.
fn assert_no_failures(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} scenario(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// The proxy itself.

fn sdk_client(
    endpoint: &str,
    region: &str,
    attempts: u32,
    timeout: Duration,
) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::retry::RetryConfig;
    use aws_sdk_s3::config::timeout::TimeoutConfig;
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(region.to_string()))
        .credentials_provider(Credentials::new(
            support::ACCESS_KEY,
            support::SECRET_KEY,
            None,
            None,
            "faults-test",
        ))
        .force_path_style(true)
        .retry_config(RetryConfig::standard().with_max_attempts(attempts))
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(timeout)
                .build(),
        )
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

fn error_code<E: aws_sdk_s3::error::ProvideErrorMetadata>(
    err: &aws_sdk_s3::error::SdkError<E>,
) -> Option<String> {
    err.as_service_error()
        .and_then(|service| service.code())
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_passes_objects_through_whole_or_fails_them_as_told() {
    let root = tempfile::tempdir().unwrap();
    let server = S3Server::start(root.path());
    let bucket = server.bucket("box");
    let mut state = 7u64;
    let data: Vec<u8> = (0..3_000_000)
        .map(|_| support::splitmix64(&mut state) as u8)
        .collect();
    std::fs::write(bucket.join("blob.bin"), &data).unwrap();

    // No faults: byte-identical both ways, over one kept-alive connection.
    let clean = FaultProxy::start(&server.endpoint, FaultConfig::default());
    let client = sdk_client(&clean.endpoint, "us-east-1", 1, Duration::from_secs(10));
    for _ in 0..3 {
        let got = client
            .get_object()
            .bucket("box")
            .key("blob.bin")
            .send()
            .await;
        let body = got.unwrap().body.collect().await.unwrap().into_bytes();
        assert!(body == data, "GET through the proxy changed the object");
    }
    client
        .put_object()
        .bucket("box")
        .key("up/copy.bin")
        .body(data.clone().into())
        .send()
        .await
        .unwrap();
    assert!(std::fs::read(bucket.join("up/copy.bin")).unwrap() == data);
    let listed = client.list_objects_v2().bucket("box").send().await.unwrap();
    assert_eq!(listed.contents().len(), 2);
    let head = client
        .head_object()
        .bucket("box")
        .key("blob.bin")
        .send()
        .await;
    assert_eq!(head.unwrap().content_length(), Some(data.len() as i64));
    assert_eq!(clean.counts().requests, 6);
    assert_eq!(clean.counts().faults(), 0);

    // Every kind at 100%: a single attempt fails as that fault.
    for kind in FaultKind::ALL {
        let config = FaultConfig {
            stall: Duration::from_millis(800),
            ..FaultConfig::with_rates(1, FaultRates::only(kind, 1.0))
        };
        let proxy = FaultProxy::start(&server.endpoint, config);
        let client = sdk_client(&proxy.endpoint, "us-east-1", 1, Duration::from_millis(400));
        for _ in 0..3 {
            let sent = client
                .get_object()
                .bucket("box")
                .key("blob.bin")
                .send()
                .await;
            let failed = match sent {
                Err(err) => {
                    match kind {
                        FaultKind::SlowDown => {
                            assert_eq!(error_code(&err).as_deref(), Some("SlowDown"))
                        }
                        FaultKind::InternalError => {
                            assert_eq!(error_code(&err).as_deref(), Some("InternalError"))
                        }
                        FaultKind::Stall => assert!(
                            matches!(err, aws_sdk_s3::error::SdkError::TimeoutError(_)),
                            "{err:?}"
                        ),
                        _ => {}
                    }
                    true
                }
                Ok(response) => response.body.collect().await.is_err(),
            };
            assert!(failed, "{}: a GET got through whole", kind.name());
        }
        let counts = proxy.counts();
        assert_eq!(
            (counts.requests, counts.of(kind), counts.faults()),
            (3, 3, 3),
            "{}",
            kind.name()
        );
    }

    // Always 503, whatever the rates.
    let throttled = FaultProxy::start(&server.endpoint, FaultConfig::default());
    throttled.set_always_503(true);
    let client = sdk_client(&throttled.endpoint, "us-east-1", 1, Duration::from_secs(5));
    for _ in 0..10 {
        let err = client
            .head_object()
            .bucket("box")
            .key("blob.bin")
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            err.raw_response().map(|raw| raw.status().as_u16()),
            Some(503)
        );
    }
    assert_eq!(throttled.counts().slow_down, 10);
    throttled.set_always_503(false);
    throttled.set_rates(FaultRates::only(FaultKind::InternalError, 1.0));
    let err = client
        .head_object()
        .bucket("box")
        .key("blob.bin")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err.raw_response().map(|raw| raw.status().as_u16()),
        Some(500)
    );
    throttled.set_rates(FaultRates::NONE);
    client
        .head_object()
        .bucket("box")
        .key("blob.bin")
        .send()
        .await
        .unwrap();

    // Rates apply per request kind and seed: about 10% of 2,000 draws each.
    let mut counts = [0usize; 5];
    let rates = FaultRates::each(0.1);
    for i in 0..2000 {
        if let Some(kind) = support::pick_fault(&rates, 99, &format!("GET /box/{i}"), 1) {
            counts[FaultKind::ALL.iter().position(|&k| k == kind).unwrap()] += 1;
        }
    }
    assert!(
        counts.iter().all(|&n| (150..=250).contains(&n)),
        "{counts:?}"
    );

    // A request signed for another region than the bucket's: 301 PermanentRedirect.
    let config = FaultConfig {
        region_redirect: Some("eu-west-1".into()),
        ..FaultConfig::default()
    };
    let aws_like = FaultProxy::start(&server.endpoint, config);
    let wrong = sdk_client(&aws_like.endpoint, "us-east-1", 1, Duration::from_secs(5));
    let err = wrong
        .get_object()
        .bucket("box")
        .key("blob.bin")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_code(&err).as_deref(),
        Some("PermanentRedirect"),
        "{err:?}"
    );
    let raw = err.raw_response().unwrap();
    assert_eq!(raw.status().as_u16(), 301);
    assert_eq!(raw.headers().get("x-amz-bucket-region"), Some("eu-west-1"));
    let right = sdk_client(&aws_like.endpoint, "eu-west-1", 1, Duration::from_secs(5));
    right
        .head_object()
        .bucket("box")
        .key("blob.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(aws_like.counts().redirected, 1);

    // Flexible checksums refused as older MinIO and Ceph do, unless the client sends none.
    let config = FaultConfig {
        reject_checksum_headers: true,
        ..FaultConfig::default()
    };
    let old_store = FaultProxy::start(&server.endpoint, config);
    let default_client = sdk_client(&old_store.endpoint, "us-east-1", 1, Duration::from_secs(5));
    let err = default_client
        .put_object()
        .bucket("box")
        .key("up/checked.bin")
        .body(b"abc".to_vec().into())
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_code(&err).as_deref(),
        Some("InvalidArgument"),
        "{err:?}"
    );
    assert_eq!(old_store.counts().checksum_rejected, 1);
    let plain = {
        use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
        let config = default_client
            .config()
            .to_builder()
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    };
    plain
        .put_object()
        .bucket("box")
        .key("up/plain.bin")
        .body(b"abc".to_vec().into())
        .send()
        .await
        .unwrap();
    let got = plain
        .get_object()
        .bucket("box")
        .key("up/plain.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(&got.body.collect().await.unwrap().into_bytes()[..], b"abc");
    assert_eq!(old_store.counts().checksum_rejected, 1);

    // A paused request is announced and never answered.
    let pausing = FaultProxy::start(&server.endpoint, FaultConfig::default());
    let paused = pausing.pause_on(|method, target| method == "GET" && target.contains("blob"));
    let client = sdk_client(
        &pausing.endpoint,
        "us-east-1",
        1,
        Duration::from_millis(500),
    );
    let err = client
        .get_object()
        .bucket("box")
        .key("blob.bin")
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(err, aws_sdk_s3::error::SdkError::TimeoutError(_)),
        "{err:?}"
    );
    let announced = paused.try_recv().unwrap();
    assert_eq!(announced.method, "GET");
    assert!(announced.path.starts_with("/box/blob.bin"), "{announced:?}");
    // Used up: the next one goes through.
    client
        .get_object()
        .bucket("box")
        .key("blob.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(pausing.counts().held, 1);
}

// ---------------------------------------------------------------------------------------
// 10% of the requests faulted, one kind at a time.
//
// One kind per scenario, at 10% of all requests: five kinds at 10% each would fault half of
// the requests, which no store does, and a failure would not say which kind caused it.
// `mixed_faults_of_every_kind_change_nothing` adds 2% of each kind together.

fn faulty_runs(title: &str, label: &str, seed: u64, rates: FaultRates) {
    let fx = fixture();
    // Both modes at once: they mostly wait (backoff, stalls), each behind a proxy of its own.
    let results: Vec<(Row, Vec<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = [Mode::Run, Mode::Phases]
            .into_iter()
            .map(|mode| scope.spawn(move || faulty_run(fx, title, label, seed, rates, mode)))
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .collect()
    });
    let rows: Vec<Row> = results.iter().map(|(row, _)| row.clone()).collect();
    let failures: Vec<String> = results
        .into_iter()
        .flat_map(|(_, failures)| failures)
        .collect();
    print_table(&format!("{title} ({FAULT_PHOTOS} photos)"), &rows);
    assert_no_failures(&failures);
}

fn faulty_run(
    fx: &Fixture,
    title: &str,
    label: &str,
    seed: u64,
    rates: FaultRates,
    mode: Mode,
) -> (Row, Vec<String>) {
    let mut failures = Vec::new();
    let config = FaultConfig {
        stall: STALL,
        ..FaultConfig::with_rates(seed, rates)
    };
    let proxy = FaultProxy::start(&fx.server.endpoint, config);
    let output = format!("out/{label}-{}", mode.name());
    let outcome = pipeline(&proxy.endpoint, mode, "in1k", &output);
    let produced = outputs(&fx.bucket, &output);
    let identical = produced.as_ref() == Some(&fx.reference_1k);
    let scenario = format!("{title}, {}", mode.name());
    let row = Row {
        scenario: scenario.clone(),
        counts: proxy.counts(),
        outcome: outcome.describe(),
        identical: if outcome.code == Some(0) {
            yes_no(identical)
        } else {
            "-"
        },
        note: (outcome.code != Some(0)).then(|| outcome.error_line()),
    };
    if outcome.code != Some(0) {
        failures.push(format!(
            "{scenario}: `{}` exited {:?} (expected 0): {}",
            outcome.step,
            outcome.code,
            outcome.error_line()
        ));
    } else if !identical {
        failures.push(format!(
            "{scenario}: outputs differ from the clean run ({})",
            differing(produced.as_ref(), &fx.reference_1k)
        ));
    }
    if rates != FaultRates::NONE && proxy.counts().faults() == 0 {
        failures.push(format!("{scenario}: no fault was injected"));
    }
    (row, failures)
}

fn differing(produced: Option<&Outputs>, reference: &Outputs) -> String {
    let Some(produced) = produced else {
        return "outputs missing".into();
    };
    let mut names = Vec::new();
    if produced.csv != reference.csv {
        names.push("features_pca.csv");
    }
    if produced.model != reference.model {
        names.push("pca_model.json");
    }
    if produced.errors != reference.errors {
        names.push("errors.csv");
    }
    names.join(", ")
}

#[test]
fn ten_percent_503_slow_down_changes_nothing() {
    faulty_runs(
        "10% 503 SlowDown",
        "slowdown",
        11,
        FaultRates::only(FaultKind::SlowDown, 0.1),
    );
}

#[test]
fn ten_percent_500_internal_error_changes_nothing() {
    faulty_runs(
        "10% 500 InternalError",
        "internal",
        12,
        FaultRates::only(FaultKind::InternalError, 0.1),
    );
}

#[test]
fn ten_percent_resets_mid_body_change_nothing() {
    faulty_runs(
        "10% reset mid-body",
        "reset",
        13,
        FaultRates::only(FaultKind::Reset, 0.1),
    );
}

#[test]
fn ten_percent_stalls_change_nothing() {
    faulty_runs(
        "10% stalled (3 s > --s3-timeout 2)",
        "stall",
        14,
        FaultRates::only(FaultKind::Stall, 0.1),
    );
}

#[test]
fn ten_percent_truncated_bodies_change_nothing() {
    faulty_runs(
        "10% truncated body (FIN)",
        "truncate",
        15,
        FaultRates::only(FaultKind::Truncate, 0.1),
    );
}

#[test]
fn mixed_faults_of_every_kind_change_nothing() {
    faulty_runs(
        "2% of each kind (10% in all)",
        "mixed",
        16,
        FaultRates::each(0.02),
    );
}

// ---------------------------------------------------------------------------------------
// Faults that do not end.

const SAFE: &str = "re-running the same command is safe";

#[test]
fn a_store_that_only_throttles_fails_fast_with_exit_1_then_a_rerun_is_identical() {
    let fx = fixture();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let proxy = FaultProxy::start(&fx.server.endpoint, FaultConfig::default());
    let mut check =
        |scenario: &str, outcome: &Outcome, counts: FaultCounts, rows: &mut Vec<Row>| {
            rows.push(Row {
                scenario: scenario.to_string(),
                counts,
                outcome: outcome.describe(),
                identical: "-",
                note: Some(outcome.error_line()),
            });
            if outcome.code != Some(1) {
                failures.push(format!(
                    "{scenario}: exit {:?}, expected 1: {}",
                    outcome.code,
                    outcome.error_line()
                ));
            }
            if outcome.seconds > GIVE_UP_BOUND.as_secs_f64() {
                failures.push(format!(
                    "{scenario}: gave up after {:.1} s, more than {:?}",
                    outcome.seconds, GIVE_UP_BOUND
                ));
            }
            if !outcome.stderr.contains(SAFE) {
                failures.push(format!(
                    "{scenario}: stderr does not say '{SAFE}': {}",
                    outcome.error_line()
                ));
            }
            if outcome.stderr.contains("panicked") {
                failures.push(format!("{scenario}: panicked: {}", outcome.stderr));
            }
        };

    // 503 from the first request on, in each command.
    proxy.set_always_503(true);
    let work = &fx.clean_work;
    let commands: Vec<(&str, Command)> = vec![
        (
            "always 503: plan",
            plan_command(&proxy.endpoint, "in", "out/throttled/_work/run-1"),
        ),
        (
            "always 503: extract 1",
            extract_command(&proxy.endpoint, work, 1),
        ),
        (
            "always 503: fit",
            fit_command(&proxy.endpoint, work, "out/throttled"),
        ),
        (
            "always 503: project 1",
            project_command(&proxy.endpoint, work, 1),
        ),
        (
            "always 503: assemble",
            assemble_command(&proxy.endpoint, work, "out/phases-clean"),
        ),
        (
            "always 503: run",
            run_command(&proxy.endpoint, "in", "out/throttled"),
        ),
    ];
    for (scenario, mut command) in commands {
        let before = proxy.counts();
        let outcome = execute(scenario, &mut command, Instant::now());
        let counts = minus(proxy.counts(), before);
        check(scenario, &outcome, counts, &mut rows);
    }
    proxy.set_always_503(false);

    // 503 from the middle of the extraction on: 32 downloads in flight all fail.
    let output = "out/throttled-midway";
    let downloads = proxy.count_answered(|method, target| {
        method == "GET" && path_of(target).starts_with("/fruit/in/")
    });
    let before = proxy.counts();
    let started = Instant::now();
    let mut child = run_command(&proxy.endpoint, "in", output)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut storm_started = None;
    let status = loop {
        if storm_started.is_none() && downloads.count() >= 700 {
            proxy.set_always_503(true);
            storm_started = Some(Instant::now());
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the run never ended"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    let stderr = {
        use std::io::Read;
        let mut text = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    };
    let since_storm = storm_started.map_or(0.0, |at| at.elapsed().as_secs_f64());
    let outcome = Outcome {
        step: "run".into(),
        code: status.code(),
        seconds: since_storm,
        stderr,
    };
    let scenario = "always 503 from photo 700 on: run";
    check(scenario, &outcome, minus(proxy.counts(), before), &mut rows);
    if storm_started.is_none() {
        failures.push(format!(
            "{scenario}: the run ended before 700 photos were read"
        ));
    }
    proxy.set_always_503(false);

    // The store is back: the same command again gives the clean result.
    let before = proxy.counts();
    let rerun = pipeline(&proxy.endpoint, Mode::Run, "in", output);
    let identical = outputs(&fx.bucket, output).as_ref() == Some(&fx.reference);
    rows.push(Row {
        scenario: "  then the store is back: run again".into(),
        counts: minus(proxy.counts(), before),
        outcome: rerun.describe(),
        identical: yes_no(identical),
        note: (rerun.code != Some(0)).then(|| rerun.error_line()),
    });
    if rerun.code != Some(0) || !identical {
        failures.push(format!(
            "re-run after the 503 storm: {} identical={identical}: {}",
            rerun.describe(),
            rerun.error_line()
        ));
    }
    print_table("a store that answers nothing but 503", &rows);
    assert_no_failures(&failures);
}

fn minus(after: FaultCounts, before: FaultCounts) -> FaultCounts {
    FaultCounts {
        connections: after.connections - before.connections,
        requests: after.requests - before.requests,
        slow_down: after.slow_down - before.slow_down,
        internal_error: after.internal_error - before.internal_error,
        reset: after.reset - before.reset,
        stall: after.stall - before.stall,
        truncate: after.truncate - before.truncate,
        redirected: after.redirected - before.redirected,
        checksum_rejected: after.checksum_rejected - before.checksum_rejected,
        held: after.held - before.held,
    }
}

// ---------------------------------------------------------------------------------------
// SIGKILL at chosen requests, then the killed step again.

/// Where a process is killed.
#[derive(Clone, Copy, Debug)]
enum At {
    /// A GET of a photo of the shard (a fifth of the way in) arrives: it is held.
    PhotoDownload,
    /// Every photo GET of the shard was answered: decoding and inference are left (the
    /// features PUT is held too, should it come first).
    Inference,
    /// The PUT of the shard's `features/NNNNN.bin` arrives: it is held.
    FeaturesUpload,
    /// The PUT of the shard's `partials/NNNNN.bin` arrives: it is held.
    PartialUpload,
    /// fit's GET of `partials/00002.bin` (merging the statistics) arrives: it is held.
    Merge,
    /// fit's PUT of `pca_model.json` arrives: it is held.
    ModelUpload,
    /// project's GET of `features/00001.bin` arrives: it is held.
    Projection,
    /// project's PUT of `projected/00001.csv` arrives: it is held.
    PartUpload,
    /// The PUT of `features_pca.csv` (by `assemble`, or `run`) arrives: it is held.
    CsvUpload,
}

const EXTRACT_POINTS: [At; 4] = [
    At::PhotoDownload,
    At::Inference,
    At::FeaturesUpload,
    At::PartialUpload,
];
const FIT_POINTS: [At; 2] = [At::Merge, At::ModelUpload];
const PROJECT_POINTS: [At; 2] = [At::Projection, At::PartUpload];
/// The shard whose extraction is killed.
const KILLED_SHARD: usize = 1;

impl At {
    fn name(self) -> &'static str {
        match self {
            At::PhotoDownload => "photo download",
            At::Inference => "inference (all photos answered)",
            At::FeaturesUpload => "features upload",
            At::PartialUpload => "partial upload",
            At::Merge => "merge (partial download)",
            At::ModelUpload => "pca_model.json upload",
            At::Projection => "projection (features download)",
            At::PartUpload => "CSV part upload",
            At::CsvUpload => "features_pca.csv upload",
        }
    }

    /// (method, path) of the request to hold, for work area `work` and output `output`.
    fn held_request(self, fx: &Fixture, work: &str, output: &str) -> (&'static str, String) {
        let shard = KILLED_SHARD;
        match self {
            At::PhotoDownload => (
                "GET",
                format!("/fruit/{}", fx.shards[shard][SHARD_SIZE / 5]),
            ),
            At::Inference | At::FeaturesUpload => {
                ("PUT", format!("/fruit/{work}/features/{shard:05}.bin"))
            }
            At::PartialUpload => ("PUT", format!("/fruit/{work}/partials/{shard:05}.bin")),
            At::Merge => ("GET", format!("/fruit/{work}/partials/00002.bin")),
            At::ModelUpload => ("PUT", format!("/fruit/{output}/pca_model.json")),
            At::Projection => ("GET", format!("/fruit/{work}/features/00001.bin")),
            At::PartUpload => ("PUT", format!("/fruit/{work}/projected/00001.csv")),
            At::CsvUpload => ("PUT", format!("/fruit/{output}/features_pca.csv")),
        }
    }
}

/// Starts `command` through `proxy` and kills it (SIGKILL) at `at`; says how it went.
fn kill_at(
    fx: &Fixture,
    proxy: &FaultProxy,
    mut command: Command,
    at: At,
    work: &str,
    output: &str,
) -> Result<String, String> {
    let (method, path) = at.held_request(fx, work, output);
    let pause = proxy.pause_on(move |verb, target| verb == method && path_of(target) == path);
    let answered = matches!(at, At::Inference).then(|| {
        let photos: std::collections::HashSet<String> = fx.shards[KILLED_SHARD]
            .iter()
            .map(|key| format!("/fruit/{key}"))
            .collect();
        proxy.count_answered(move |verb, target| verb == "GET" && photos.contains(&path_of(target)))
    });
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let how = loop {
        if let Ok(paused) = pause.try_recv() {
            break format!("held {} {}", paused.method, short(&path_of(&paused.path)));
        }
        if let Some(answered) = &answered
            && answered.count() >= SHARD_SIZE as u64
        {
            break format!("{SHARD_SIZE} photo GETs answered");
        }
        if let Some(status) = child.try_wait().unwrap() {
            use std::io::Read;
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            return Err(format!(
                "ended ({status}) before the kill point was reached: {}",
                stderr.lines().last().unwrap_or("")
            ));
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the kill point was not reached within 120 s".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    child.kill().unwrap();
    let status = child.wait().unwrap();
    if status.signal() != Some(libc::SIGKILL) {
        return Err(format!(
            "finished ({status}) before it could be killed at: {how}"
        ));
    }
    let also = if pause.try_recv().is_ok() {
        ", features PUT held"
    } else {
        ""
    };
    Ok(format!("{how}{also}"))
}

/// The last two segments of a path, for the table.
fn short(path: &str) -> String {
    let parts: Vec<&str> = path.rsplitn(3, '/').collect();
    match parts.as_slice() {
        [name, folder, _] => format!(".../{folder}/{name}"),
        _ => path.to_string(),
    }
}

/// Kills `killed` at `at`, then runs `rerun` (the killed step and those after it) and
/// compares the outputs with the clean run's.
#[allow(clippy::too_many_arguments)]
fn kill_scenario(
    fx: &Fixture,
    scenario: String,
    at: At,
    (work, output): (&str, &str),
    killed: impl FnOnce(&str) -> Command,
    rerun: impl FnOnce(&str) -> Outcome,
    rows: &mut Vec<Row>,
    failures: &mut Vec<String>,
) {
    let proxy = FaultProxy::start(&fx.server.endpoint, FaultConfig::default());
    // A TMPDIR of its own for the killed process, to see what it leaves behind.
    let tmp = scratch().join(output.replace('/', "-"));
    std::fs::create_dir_all(&tmp).unwrap();
    let mut command = killed(&proxy.endpoint);
    command.env("TMPDIR", &tmp);
    let kill = kill_at(fx, &proxy, command, at, work, output);
    // ONNX Runtime's own `.ses` (a telemetry session id) stays after any run: not counted.
    let left: Vec<u64> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_name() != ".ses")
        .map(|entry| entry.metadata().unwrap().len())
        .collect();
    let outcome = rerun(&proxy.endpoint);
    let produced = outputs(&fx.bucket, output);
    let identical = produced.as_ref() == Some(&fx.reference);
    let description = match &kill {
        Ok(how) => format!("killed: {how}; re-run {}", outcome.describe()),
        Err(why) => format!("NOT killed ({why}); re-run {}", outcome.describe()),
    };
    rows.push(Row {
        scenario: scenario.clone(),
        counts: proxy.counts(),
        outcome: description,
        identical: if outcome.code == Some(0) {
            yes_no(identical)
        } else {
            "-"
        },
        note: if outcome.code != Some(0) {
            Some(outcome.error_line())
        } else if !left.is_empty() {
            Some(format!(
                "the killed process left {} file(s) in its TMPDIR ({} bytes)",
                left.len(),
                left.iter().sum::<u64>()
            ))
        } else {
            None
        },
    });
    if let Err(why) = kill {
        failures.push(format!("{scenario}: {why}"));
    }
    if !left.is_empty() {
        failures.push(format!(
            "{scenario}: the killed process left {} file(s) in its TMPDIR",
            left.len()
        ));
    }
    if outcome.code != Some(0) {
        failures.push(format!(
            "{scenario}: the re-run `{}` exited {:?}: {}",
            outcome.step,
            outcome.code,
            outcome.error_line()
        ));
    } else if !identical {
        failures.push(format!(
            "{scenario}: outputs differ from the clean run ({})",
            differing(produced.as_ref(), &fx.reference)
        ));
    }
}

#[test]
fn run_killed_then_rerun_gives_identical_outputs() {
    let fx = fixture();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    // Killed during its fit, `run` starts over like any re-run: the CSV upload, the last
    // step, stands for the fit here; `fit_killed_...` covers the fit's other steps.
    for (number, at) in EXTRACT_POINTS
        .into_iter()
        .chain([At::CsvUpload])
        .enumerate()
    {
        let output = format!("out/kill-run-{number}");
        let work = format!("{output}/_work/local");
        let shard = if matches!(at, At::CsvUpload) {
            String::new()
        } else {
            format!("shard {KILLED_SHARD} ")
        };
        kill_scenario(
            fx,
            format!("run killed at {shard}{}", at.name()),
            at,
            (&work, &output),
            |endpoint| run_command(endpoint, "in", &output),
            |endpoint| pipeline(endpoint, Mode::Run, "in", &output),
            &mut rows,
            &mut failures,
        );
    }
    print_table("SIGKILL of `fruitpipe run`, then `run` again", &rows);
    assert_no_failures(&failures);
}

#[test]
fn extract_killed_then_rerun_gives_identical_outputs() {
    let fx = fixture();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for (number, at) in EXTRACT_POINTS.into_iter().enumerate() {
        let output = format!("out/kill-extract-{number}");
        let work = format!("{output}/_work/run-1");
        // The plan and the other shards as a clean run left them; this shard not extracted.
        let this_shard = format!("{KILLED_SHARD:05}.bin");
        copy_tree(
            &fx.bucket.join(&fx.clean_work),
            &fx.bucket.join(&work),
            &|path| !path.ends_with(&this_shard),
        );
        kill_scenario(
            fx,
            format!("extract {KILLED_SHARD} killed at {}", at.name()),
            at,
            (&work, &output),
            |endpoint| extract_command(endpoint, &work, KILLED_SHARD),
            |endpoint| {
                let started = Instant::now();
                let extract = execute(
                    &format!("extract {KILLED_SHARD}"),
                    &mut extract_command(endpoint, &work, KILLED_SHARD),
                    started,
                );
                if extract.code != Some(0) {
                    return extract;
                }
                fit_project_assemble(endpoint, &work, &output, SHARDS, started)
            },
            &mut rows,
            &mut failures,
        );
    }
    print_table(
        "SIGKILL of `extract --index 1`, then extract 1, fit, project and assemble",
        &rows,
    );
    assert_no_failures(&failures);
}

#[test]
fn fit_killed_then_rerun_gives_identical_outputs() {
    let fx = fixture();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for (number, at) in FIT_POINTS.into_iter().enumerate() {
        let output = format!("out/kill-fit-{number}");
        let work = format!("{output}/_work/run-1");
        copy_tree(
            &fx.bucket.join(&fx.clean_work),
            &fx.bucket.join(&work),
            &|_| true,
        );
        kill_scenario(
            fx,
            format!("fit killed at {}", at.name()),
            at,
            (&work, &output),
            |endpoint| fit_command(endpoint, &work, &output),
            |endpoint| fit_project_assemble(endpoint, &work, &output, SHARDS, Instant::now()),
            &mut rows,
            &mut failures,
        );
    }
    print_table(
        "SIGKILL of `fit`, then fit, project and assemble again",
        &rows,
    );
    assert_no_failures(&failures);
}

/// A work area as a clean run left it up to its extracts, fitted for `output`, with every
/// shard but `unprojected` projected.
fn fitted_work(fx: &Fixture, work: &str, output: &str, unprojected: Option<usize>) {
    copy_tree(
        &fx.bucket.join(&fx.clean_work),
        &fx.bucket.join(work),
        &|path| !path.starts_with("projected/"),
    );
    let endpoint = &fx.server.endpoint;
    let started = Instant::now();
    let fit = execute("fit", &mut fit_command(endpoint, work, output), started);
    assert_eq!(fit.code, Some(0), "fit: {}", fit.stderr);
    for index in (0..SHARDS).filter(|shard| Some(*shard) != unprojected) {
        let project = execute(
            "project",
            &mut project_command(endpoint, work, index),
            started,
        );
        assert_eq!(project.code, Some(0), "project {index}: {}", project.stderr);
    }
}

#[test]
fn project_killed_then_rerun_gives_identical_outputs() {
    let fx = fixture();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for (number, at) in PROJECT_POINTS.into_iter().enumerate() {
        let output = format!("out/kill-project-{number}");
        let work = format!("{output}/_work/run-1");
        fitted_work(fx, &work, &output, Some(KILLED_SHARD));
        kill_scenario(
            fx,
            format!("project {KILLED_SHARD} killed at {}", at.name()),
            at,
            (&work, &output),
            |endpoint| project_command(endpoint, &work, KILLED_SHARD),
            |endpoint| {
                project_and_assemble(endpoint, &work, &output, [KILLED_SHARD], Instant::now())
            },
            &mut rows,
            &mut failures,
        );
    }
    let output = "out/kill-assemble";
    let work = format!("{output}/_work/run-1");
    fitted_work(fx, &work, output, None);
    kill_scenario(
        fx,
        format!("assemble killed at {}", At::CsvUpload.name()),
        At::CsvUpload,
        (&work, output),
        |endpoint| assemble_command(endpoint, &work, output),
        |endpoint| {
            execute(
                "assemble",
                &mut assemble_command(endpoint, &work, output),
                Instant::now(),
            )
        },
        &mut rows,
        &mut failures,
    );
    print_table(
        "SIGKILL of `project --index 1` or `assemble`, then the same again",
        &rows,
    );
    assert_no_failures(&failures);
}

// ---------------------------------------------------------------------------------------
// Photos that are not photos.

const BAD_FILES: usize = 20;

/// 20 awkward files: what each is, and whether it must be used (in the CSV) or skipped
/// (in errors.csv, with a reason containing the given text).
fn awkward_files() -> Vec<(&'static str, Vec<u8>, Result<(), &'static str>)> {
    use image::{DynamicImage, ImageFormat};
    let encode = |image: DynamicImage, format: ImageFormat| {
        let mut out = std::io::Cursor::new(Vec::new());
        image.write_to(&mut out, format).unwrap();
        out.into_inner()
    };
    let sample = sample_files();
    let jpeg = std::fs::read(&sample[0].1).unwrap();
    let other_jpeg = std::fs::read(&sample[100].1).unwrap();
    let photo = image::load_from_memory(&jpeg).unwrap();
    let png = encode(photo.clone(), ImageFormat::Png);
    let mut state = 2024u64;
    let random: Vec<u8> = (0..5000)
        .map(|_| support::splitmix64(&mut state) as u8)
        .collect();
    let mut garbage_after = jpeg.clone();
    garbage_after.extend_from_slice(b"\x00\x01 trailing bytes some writers add \x00");
    let mut long_garbage_after = other_jpeg.clone();
    long_garbage_after.extend(std::iter::repeat_n(b'x', 4096));
    let mut flipped_crc = png.clone();
    // The IHDR chunk's CRC (bytes 29..33) no longer matches.
    flipped_crc[30] ^= 0xFF;
    let zero_width_png = {
        // Width 0 in IHDR, with the chunk's CRC (over type and data, bytes 12..29) redone.
        let mut bytes = png.clone();
        bytes[16..20].copy_from_slice(&0u32.to_be_bytes());
        let crc = crc32(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        bytes
    };
    // A header that says 8,000 x 8,000 (64 megapixels, over --max-pixels): refused from
    // its header, before any decoding.
    let mut too_many_pixels = encode(
        DynamicImage::ImageRgb8(image::RgbImage::new(1, 1)),
        ImageFormat::Png,
    );
    too_many_pixels[16..20].copy_from_slice(&8_000u32.to_be_bytes());
    too_many_pixels[20..24].copy_from_slice(&8_000u32.to_be_bytes());
    let crc = crc32(&too_many_pixels[12..29]);
    too_many_pixels[29..33].copy_from_slice(&crc.to_be_bytes());
    let gray = encode(
        DynamicImage::ImageLuma8(image::GrayImage::from_fn(50, 50, |x, y| {
            image::Luma([(x * 3 + y) as u8])
        })),
        ImageFormat::Jpeg,
    );
    let rgba = encode(
        DynamicImage::ImageRgba8(image::RgbaImage::from_fn(60, 40, |x, _| {
            image::Rgba([200, 30, 30, (x * 4) as u8])
        })),
        ImageFormat::Png,
    );
    let gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;".to_vec();
    vec![
        ("empty.jpg", Vec::new(), Err("empty file")),
        ("empty.png", Vec::new(), Err("empty file")),
        ("random-bytes.jpg", random, Err("not a supported image")),
        (
            "truncated-half.jpg",
            jpeg[..jpeg.len() / 2].to_vec(),
            Err("truncated"),
        ),
        (
            "truncated-png.png",
            png[..png.len() / 2].to_vec(),
            Err("corrupt"),
        ),
        (
            "text.png",
            b"just some notes, not a photo\n".to_vec(),
            Err("not a supported image"),
        ),
        (
            "html-error-page.jpg",
            b"<html><body>502 Bad Gateway</body></html>".to_vec(),
            Err("not a supported image"),
        ),
        (
            "soi-eoi-only.jpg",
            vec![0xFF, 0xD8, 0xFF, 0xD9],
            Err("corrupt"),
        ),
        ("gif-named.jpg", gif, Err("not a supported image")),
        ("bad-crc.png", flipped_crc, Err("corrupt")),
        ("zero-width.png", zero_width_png, Err("corrupt")),
        ("too-many-pixels.png", too_many_pixels, Err("--max-pixels")),
        ("png-named.jpg", png.clone(), Ok(())),
        ("jpeg-named.png", other_jpeg.clone(), Ok(())),
        ("garbage-after-end.jpg", garbage_after, Ok(())),
        ("4k-garbage-after-end.jpg", long_garbage_after, Ok(())),
        ("UPPER-CASE.JPG", jpeg.clone(), Ok(())),
        ("name with spaces & ünïcode.jpeg", other_jpeg, Ok(())),
        ("gray.jpg", gray, Ok(())),
        ("rgba.png", rgba, Ok(())),
    ]
}

/// CRC-32 (IEEE), as PNG chunks use it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
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

#[test]
fn bad_photos_are_listed_and_every_good_one_is_used() {
    let fx = fixture();
    let input = "bad";
    let dir = fx.bucket.join(input);
    let good = write_photos(&dir, PHOTOS);
    let awkward = awkward_files();
    assert_eq!(awkward.len(), BAD_FILES);
    let mut expected_used: Vec<String> = good
        .iter()
        .map(|key| uri(&format!("{input}/{key}")))
        .collect();
    let mut expected_skipped = Vec::new();
    // Spread over the classes, so they land in different shards.
    let folders: Vec<String> = {
        let mut folders: Vec<String> = good
            .iter()
            .map(|key| key.rsplit_once('/').unwrap().0.to_string())
            .collect();
        folders.sort();
        folders.dedup();
        folders
    };
    for (number, (name, bytes, expected)) in awkward.iter().enumerate() {
        let folder = &folders[(number * 7) % folders.len()];
        let key = format!("{folder}/{name}");
        std::fs::write(dir.join(&key), bytes).unwrap();
        let path = uri(&format!("{input}/{key}"));
        match expected {
            Ok(()) => expected_used.push(path),
            Err(reason) => expected_skipped.push((path, *reason)),
        }
    }
    expected_used.sort();
    expected_skipped.sort();

    let proxy = FaultProxy::start(&fx.server.endpoint, FaultConfig::default());
    let output = "out/bad";
    let outcome = pipeline(&proxy.endpoint, Mode::Run, input, output);
    let mut failures = Vec::new();
    let mut used_ok = false;
    let mut skipped_ok = false;
    if outcome.code != Some(0) {
        failures.push(format!(
            "run on bad photos exited {:?}: {}",
            outcome.code,
            outcome.error_line()
        ));
    } else {
        let rows = support::read_csv(&fx.bucket.join(output).join("features_pca.csv"));
        let mut used: Vec<String> = rows[1..].iter().map(|row| row[0].clone()).collect();
        used.sort();
        let errors = support::read_csv(&fx.bucket.join(output).join("errors.csv"));
        let mut skipped: Vec<(String, String)> = errors[1..]
            .iter()
            .map(|row| (row[0].clone(), row[1].clone()))
            .collect();
        skipped.sort();
        let missing: Vec<&String> = expected_used
            .iter()
            .filter(|path| !used.contains(path))
            .collect();
        let extra: Vec<&String> = used
            .iter()
            .filter(|path| !expected_used.contains(path))
            .collect();
        used_ok = missing.is_empty() && extra.is_empty();
        if !used_ok {
            let reasons: Vec<String> = missing
                .iter()
                .map(|path| {
                    let why = skipped
                        .iter()
                        .find(|(skipped, _)| skipped == *path)
                        .map_or("not in errors.csv either", |(_, why)| why.as_str());
                    format!("{path} ({why})")
                })
                .collect();
            failures.push(format!(
                "features_pca.csv: {} good photo(s) missing: {}; {} unexpected: {extra:?}",
                missing.len(),
                reasons.join("; "),
                extra.len()
            ));
        }
        let skipped_paths: Vec<&String> = skipped.iter().map(|(path, _)| path).collect();
        let expected_paths: Vec<&String> = expected_skipped.iter().map(|(path, _)| path).collect();
        skipped_ok = skipped_paths == expected_paths;
        if !skipped_ok {
            failures.push(format!(
                "errors.csv lists {skipped:?}, expected exactly {expected_paths:?}"
            ));
        }
        for (path, reason) in &expected_skipped {
            if let Some((_, why)) = skipped.iter().find(|(skipped, _)| skipped == path)
                && !why.contains(reason)
            {
                failures.push(format!(
                    "{path}: reason '{why}' does not mention '{reason}'"
                ));
            }
        }
    }
    print_table(
        "20 awkward files (12 unusable, 8 odd but valid) among 2,000 photos",
        &[Row {
            scenario: "run on bad/".into(),
            counts: proxy.counts(),
            outcome: outcome.describe(),
            identical: if used_ok && skipped_ok {
                "lists ok"
            } else {
                "lists NO"
            },
            note: None,
        }],
    );
    assert_no_failures(&failures);
}
