//! Command-line flags. Names are a contract: the operator and scripts rely on them.

use clap::{Args, Parser, Subcommand, ValueEnum};

use fruitpipe_runner::error::{Error, Result};
use fruitpipe_runner::extract::{DEFAULT_MAX_PHOTO_BYTES, PhotoLimits};
use fruitpipe_runner::fit::FitOptions;
use fruitpipe_runner::imaging::{DEFAULT_MAX_PIXELS, Preset};
use fruitpipe_runner::pca::Components;
use fruitpipe_runner::progress::Display;
use fruitpipe_runner::run::{ModelOptions, RunOptions};
use fruitpipe_runner::storage::{DEFAULT_S3_ATTEMPT_TIMEOUT, Location, S3Options};

const ABOUT: &str = "Fruit photos -> pretrained CNN features -> PCA -> CSV, on a folder or S3.";
const LONG_ABOUT: &str = "\
Fruit photos -> pretrained CNN features -> PCA -> CSV, on a local folder or an S3 prefix.

`fruitpipe run` does everything in one process. On Kubernetes the operator runs the same
work as `plan` (one pod), `extract` (one pod per shard), `fit` (one pod, statistics only),
`project` (one pod per shard) and `assemble` (one short pod).

URIs are local paths or s3://bucket/prefix. S3 credentials come from the AWS default chain
(environment, profile, EKS web identity). Exit codes: 0 done; 2 bad configuration or input
that a retry cannot fix (no such bucket, object or model, refused credentials, bad flags);
anything else may be retried: 1 for S3 throttling, 5xx, timeouts and an endpoint that cannot
be reached (a wrong --s3-endpoint included: the message says so), after the built-in
retries.";

#[derive(Debug, Parser)]
#[command(name = "fruitpipe", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log format on stderr (RUST_LOG sets the level).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "FRUITPIPE_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// When stderr is not a terminal, seconds between progress lines of a phase (also
    /// logged at each shard's end); on a terminal a bar shows progress instead
    #[arg(long, global = true, value_name = "SECONDS", env = "FRUITPIPE_PROGRESS_INTERVAL", default_value_t = fruitpipe_runner::progress::DEFAULT_INTERVAL.as_secs_f64(), value_parser = parse_seconds)]
    pub progress_interval: f64,
}

impl Cli {
    pub fn progress(&self) -> Display {
        Display::for_stderr(std::time::Duration::from_secs_f64(self.progress_interval))
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every phase in one process, with progress bars. Start here.
    Run(RunArgs),
    /// List the input and write shard manifests under --work.
    Plan(PlanArgs),
    /// Turn one shard's photos into features and partial statistics.
    Extract(ExtractArgs),
    /// Merge all shards' statistics, fit PCA and write pca_model.json (reads no feature row).
    Fit(FitArgs),
    /// Project one shard's features onto the fitted components: its part of the CSV.
    Project(ProjectArgs),
    /// Put the shards' parts together into features_pca.csv and write summary.json.
    Assemble(AssembleArgs),
    /// Tell which fruit each photo shows, with its nearest photos, from a pipeline's output.
    Identify(IdentifyArgs),
    /// The same over HTTP (POST /v1/identify), with a web page to try it (GET /).
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct S3Args {
    /// S3 endpoint URL, for MinIO, Ceph or a local server [default: AWS]
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region [default: from the AWS config, else us-east-1]
    #[arg(long, env = "AWS_REGION")]
    pub s3_region: Option<String>,
    /// Address buckets as ENDPOINT/BUCKET rather than BUCKET.ENDPOINT (MinIO needs this)
    #[arg(long, env = "FRUITPIPE_S3_PATH_STYLE")]
    pub s3_path_style: bool,
    /// Seconds one attempt of an S3 request may take, an upload's body included, before it
    /// is retried (6 attempts in all)
    #[arg(long, value_name = "SECONDS", env = "FRUITPIPE_S3_TIMEOUT", default_value_t = DEFAULT_S3_ATTEMPT_TIMEOUT.as_secs_f64(), value_parser = parse_seconds)]
    pub s3_timeout: f64,
}

fn parse_seconds(text: &str) -> std::result::Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds.is_finite() => Ok(seconds),
        _ => Err(format!("'{text}' is not a positive number of seconds")),
    }
}

#[derive(Debug, Args)]
pub struct ModelArgs {
    /// ONNX feature model: a path or s3:// URI
    #[arg(long, env = "FRUITPIPE_MODEL")]
    pub model: String,
    /// Pixel preprocessing the model was trained with
    #[arg(long, value_enum, default_value_t = Preset::Lite)]
    pub preset: Preset,
    /// Input size in pixels [default: the model's fixed size, else 224]. The photos are
    /// 100x100: --size 100 is about 3.7x faster for about 0.3 points less 1-NN accuracy.
    #[arg(long)]
    pub size: Option<u32>,
    /// Photos per inference call
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Inference threads [default: all cores]
    #[arg(long)]
    pub threads: Option<usize>,
    /// Photos larger than this many bytes are skipped (and listed in errors.csv) before
    /// they are downloaded
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_PHOTO_BYTES)]
    pub max_photo_bytes: u64,
    /// Photos of more pixels (width x height) than this are skipped before they are decoded
    #[arg(long, value_name = "PIXELS", default_value_t = DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
}

#[derive(Debug, Args)]
pub struct PcaArgs {
    /// Keep exactly K principal components
    #[arg(long, value_name = "K", conflicts_with = "variance")]
    pub components: Option<usize>,
    /// Keep the fewest components explaining this fraction of the variance, in (0, 1]
    #[arg(long, value_name = "F", default_value_t = 0.95)]
    pub variance: f64,
    /// Scale every feature to unit variance first (PCA on the correlation matrix). Off by
    /// default: on Fruits-360 it lowers nearest-neighbour accuracy at every k.
    #[arg(long)]
    pub standardize: bool,
    /// Divide each component by the square root of its eigenvalue, so that every component
    /// has unit variance (the default: photos compared by cosine then find their kind
    /// more often)
    #[arg(long, overrides_with = "no_whiten")]
    pub whiten: bool,
    /// Keep each component's own scale (plain PCA scores)
    #[arg(long, overrides_with = "whiten")]
    pub no_whiten: bool,
    /// Formats of the principal components, comma-separated: csv (features_pca.csv, always
    /// written: identify and serve read it) and parquet (features_pca.parquet/, one
    /// part-NNNNN.parquet per shard)
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "csv",
        value_name = "FORMATS"
    )]
    pub format: Vec<Format>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Csv,
    Parquet,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Photos: a folder or s3:// prefix, searched recursively; the label is the parent folder
    #[arg(long)]
    pub input: String,
    /// Only photos whose path below --input matches this glob (`*` within a folder, `**`
    /// across folders), e.g. 'Training/**'
    #[arg(long, value_name = "GLOB")]
    pub include: Option<String>,
    /// Where to write features_pca.csv, pca_model.json, summary.json and errors.csv
    #[arg(long)]
    pub output: String,
    /// Photos per shard
    #[arg(long, default_value_t = 2000)]
    pub shard_size: usize,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub pca: PcaArgs,
    #[command(flatten)]
    pub s3: S3Args,
    /// Also write a short JSON result here (e.g. /dev/termination-log)
    #[arg(long)]
    pub summary_file: Option<String>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Photos: a folder or s3:// prefix, searched recursively
    #[arg(long)]
    pub input: String,
    /// Only photos whose path below --input matches this glob (`*` within a folder, `**`
    /// across folders), e.g. 'Training/**'
    #[arg(long, value_name = "GLOB")]
    pub include: Option<String>,
    /// Work area of this run (e.g. s3://bucket/out/_work/RUN)
    #[arg(long)]
    pub work: String,
    /// Photos per shard
    #[arg(long, default_value_t = 2000)]
    pub shard_size: usize,
    #[command(flatten)]
    pub s3: S3Args,
    /// Also write a short JSON result here (e.g. /dev/termination-log)
    #[arg(long)]
    pub summary_file: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExtractArgs {
    /// Work area written by `plan`
    #[arg(long)]
    pub work: String,
    /// Shard to extract [default: $JOB_COMPLETION_INDEX, set by Indexed Jobs]
    #[arg(long)]
    pub index: Option<usize>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub s3: S3Args,
    /// Also write a short JSON result here (e.g. /dev/termination-log)
    #[arg(long)]
    pub summary_file: Option<String>,
}

#[derive(Debug, Args)]
pub struct FitArgs {
    /// Work area written by `plan` and `extract`
    #[arg(long)]
    pub work: String,
    /// Where pca_model.json and errors.csv go now, and features_pca.csv and summary.json
    /// after `assemble`
    #[arg(long)]
    pub output: String,
    #[command(flatten)]
    pub pca: PcaArgs,
    #[command(flatten)]
    pub s3: S3Args,
    /// Also write a short JSON result here (e.g. /dev/termination-log)
    #[arg(long)]
    pub summary_file: Option<String>,
}

#[derive(Debug, Args)]
pub struct ProjectArgs {
    /// Work area written by `plan`, `extract` and `fit`
    #[arg(long)]
    pub work: String,
    /// Shard to project [default: $JOB_COMPLETION_INDEX, set by Indexed Jobs]
    #[arg(long)]
    pub index: Option<usize>,
    #[command(flatten)]
    pub s3: S3Args,
    /// Also write a short JSON result here (e.g. /dev/termination-log)
    #[arg(long)]
    pub summary_file: Option<String>,
}

#[derive(Debug, Args)]
pub struct AssembleArgs {
    /// Work area written by the other phases
    #[arg(long)]
    pub work: String,
    /// The --output given to `fit`
    #[arg(long)]
    pub output: String,
    #[command(flatten)]
    pub s3: S3Args,
    /// Also write a short JSON result here (e.g. /dev/termination-log)
    #[arg(long)]
    pub summary_file: Option<String>,
}

/// Where the engine's model and index come from (`identify` and `serve`).
#[derive(Debug, Args)]
pub struct EngineArgs {
    /// A pipeline's output (folder or s3:// prefix) holding pca_model.json and
    /// features_pca.csv
    #[arg(long, value_name = "URI", env = "FRUITPIPE_FROM")]
    pub from: String,
    /// The feature model, when it is not where pca_model.json says: a copy of the same
    /// file (its sha256 must match)
    #[arg(long, value_name = "URI")]
    pub model: Option<String>,
    /// Nearest photos whose similarity-weighted vote names the fruit
    #[arg(long, value_name = "N", default_value_t = fruitpipe_runner::identify::DEFAULT_VOTERS)]
    pub voters: usize,
    /// Inference threads [default: all cores]
    #[arg(long)]
    pub threads: Option<usize>,
    /// A fruit catalogue in the format of data/fruits.toml (path or s3:// URI), instead of
    /// the shipped one
    #[arg(long, value_name = "FILE")]
    pub catalogue: Option<String>,
    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Debug, Args)]
pub struct IdentifyArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Photos: paths, s3:// URIs, or - for standard input
    #[arg(required = true, value_name = "PHOTO")]
    pub photos: Vec<String>,
    /// One JSON object per line and photo
    #[arg(long)]
    pub json: bool,
    /// Nearest photos to show
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub top: usize,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Address to listen on (port 0: any free port, printed on stderr)
    #[arg(
        long,
        value_name = "ADDRESS",
        default_value = "0.0.0.0:8080",
        env = "FRUITPIPE_LISTEN"
    )]
    pub listen: std::net::SocketAddr,
    /// Largest upload, in bytes; larger ones get 413
    #[arg(long, value_name = "BYTES", default_value_t = fruitpipe_runner::serve::DEFAULT_MAX_UPLOAD)]
    pub max_upload: usize,
    /// Photos identified or waiting for the model at once; more wait, then get 503
    #[arg(long, value_name = "N", default_value_t = fruitpipe_runner::serve::DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
    /// Seconds an identification may take, waiting included, before it gets 503
    #[arg(long, value_name = "SECONDS", default_value_t = fruitpipe_runner::serve::DEFAULT_TIMEOUT.as_secs_f64(), value_parser = parse_seconds)]
    pub timeout: f64,
    /// Nearest photos per answer (a request may ask for others with ?top=N)
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub top: usize,
}

impl ServeArgs {
    pub fn options(&self) -> Result<fruitpipe_runner::serve::ServeOptions> {
        if self.max_upload == 0
            || self.max_in_flight == 0
            || self.top == 0
            || self.engine.voters == 0
        {
            return Err(Error::Config(
                "--max-upload, --max-in-flight, --top and --voters must be at least 1".into(),
            ));
        }
        Ok(fruitpipe_runner::serve::ServeOptions {
            max_upload: self.max_upload,
            max_in_flight: self.max_in_flight,
            timeout: std::time::Duration::from_secs_f64(self.timeout),
            top: self.top,
            voters: self.engine.voters,
        })
    }
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Run(_) => "run",
            Command::Plan(_) => "plan",
            Command::Extract(_) => "extract",
            Command::Fit(_) => "fit",
            Command::Project(_) => "project",
            Command::Assemble(_) => "assemble",
            Command::Identify(_) => "identify",
            Command::Serve(_) => "serve",
        }
    }

    pub fn summary_file(&self) -> Option<&str> {
        match self {
            Command::Run(args) => args.summary_file.as_deref(),
            Command::Plan(args) => args.summary_file.as_deref(),
            Command::Extract(args) => args.summary_file.as_deref(),
            Command::Fit(args) => args.summary_file.as_deref(),
            Command::Project(args) => args.summary_file.as_deref(),
            Command::Assemble(args) => args.summary_file.as_deref(),
            Command::Identify(_) | Command::Serve(_) => None,
        }
    }
}

impl S3Args {
    pub fn options(&self) -> S3Options {
        S3Options {
            endpoint: self.s3_endpoint.clone().filter(|value| !value.is_empty()),
            region: self.s3_region.clone().filter(|value| !value.is_empty()),
            path_style: self.s3_path_style,
            attempt_timeout: Some(std::time::Duration::from_secs_f64(self.s3_timeout)),
        }
    }
}

impl ModelArgs {
    pub fn options(&self) -> ModelOptions {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        ModelOptions {
            uri: self.model.clone(),
            preset: self.preset,
            size: self.size,
            threads: self.threads.unwrap_or(cores).max(1),
        }
    }
}

impl ModelArgs {
    pub fn limits(&self) -> Result<PhotoLimits> {
        if self.max_photo_bytes == 0 || self.max_pixels == 0 {
            return Err(Error::Config(
                "--max-photo-bytes and --max-pixels must be at least 1".into(),
            ));
        }
        Ok(PhotoLimits {
            max_bytes: self.max_photo_bytes,
            max_pixels: self.max_pixels,
        })
    }
}

impl PcaArgs {
    pub fn options(&self) -> Result<FitOptions> {
        let components = match self.components {
            Some(k) => Components::Count(k),
            None => Components::Variance(self.variance),
        };
        components.validate(usize::MAX)?;
        if !self.format.contains(&Format::Csv) {
            return Err(Error::Config(
                "--format must include csv: features_pca.csv is what identify and serve read; give --format csv,parquet".into(),
            ));
        }
        Ok(FitOptions {
            components,
            standardize: self.standardize,
            whiten: !self.no_whiten,
            parquet: self.format.contains(&Format::Parquet),
        })
    }
}

impl RunArgs {
    pub fn options(&self, progress: Display) -> Result<RunOptions> {
        Ok(RunOptions {
            input: Location::parse(&self.input)?,
            include: self.include.clone(),
            output: Location::parse(&self.output)?,
            model: self.model.options(),
            batch: self.model.batch,
            limits: self.model.limits()?,
            shard_size: self.shard_size,
            fit: self.pca.options()?,
            progress,
        })
    }
}

impl ExtractArgs {
    pub fn index(&self) -> Result<usize> {
        shard_index(self.index)
    }
}

impl ProjectArgs {
    pub fn index(&self) -> Result<usize> {
        shard_index(self.index)
    }
}

/// The shard index: --index, else the Indexed Job's JOB_COMPLETION_INDEX.
fn shard_index(given: Option<usize>) -> Result<usize> {
    if let Some(index) = given {
        return Ok(index);
    }
    let value = std::env::var("JOB_COMPLETION_INDEX").map_err(|_| {
        Error::Config("no shard given: pass --index N or set JOB_COMPLETION_INDEX".to_string())
    })?;
    value.trim().parse().map_err(|_| {
        Error::Config(format!(
            "JOB_COMPLETION_INDEX is '{value}', not a shard number"
        ))
    })
}
