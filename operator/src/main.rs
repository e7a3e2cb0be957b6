//! `fruitpipe-operator`: watches FruitPipelines and runs them as Jobs.
//!
//! Run exactly one replica: two would race to create the same Jobs (harmless, the names
//! collide) and to write status (noisy). The Helm chart sets `replicas: 1` with `Recreate`.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::{Args, Parser, Subcommand};
use fruitpipe_operator::api::S3Spec;
use fruitpipe_operator::controller::{self, Context};
use fruitpipe_operator::jobs::RunnerDefaults;
use fruitpipe_operator::metrics::Metrics;
use fruitpipe_operator::{render, server};

#[derive(Debug, Parser)]
#[command(
    name = "fruitpipe-operator",
    version,
    about = "Runs FruitPipelines as Kubernetes Jobs"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    installation: Installation,
    /// Address of /metrics, /healthz and /readyz
    #[arg(long, env = "FRUITPIPE_HTTP_ADDRESS", default_value = "0.0.0.0:8080")]
    http_address: SocketAddr,
    /// Log format
    #[arg(long, env = "FRUITPIPE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print, as one multi-document YAML, every Job the operator would create for a
    /// FruitPipeline once plan has reported --shards shards; no cluster needed. Exits 2
    /// when the API server would refuse one of them.
    Render {
        /// The FruitPipeline as YAML; - for stdin
        #[arg(long)]
        file: PathBuf,
        /// Shards the plan Job reported
        #[arg(long)]
        shards: u32,
        /// Namespace when the file gives none
        #[arg(long, default_value = "default")]
        namespace: String,
    },
}

/// Installation defaults: the same flags and environment for the controller and `render`.
#[derive(Debug, Args)]
struct Installation {
    /// Runner image for pipelines that do not name one
    #[arg(
        long,
        global = true,
        env = "FRUITPIPE_RUNNER_IMAGE",
        default_value = "ghcr.io/fruitpipe/fruitpipe:0.1.0"
    )]
    runner_image: String,
    /// Pull policy for that image
    #[arg(long, global = true, env = "FRUITPIPE_RUNNER_PULL_POLICY")]
    runner_pull_policy: Option<String>,
    /// Service account of pipeline pods that do not name one (e.g. the IRSA one)
    #[arg(long, global = true, env = "FRUITPIPE_RUNNER_SERVICE_ACCOUNT")]
    runner_service_account: Option<String>,
    /// S3 endpoint for pipelines that do not name one (e.g. the cluster's MinIO)
    #[arg(long, global = true, env = "FRUITPIPE_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// S3 region for pipelines that do not name one
    #[arg(long, global = true, env = "FRUITPIPE_S3_REGION")]
    s3_region: Option<String>,
    /// Path-style S3 addressing for every pipeline (MinIO needs it)
    #[arg(long, global = true, env = "FRUITPIPE_S3_PATH_STYLE")]
    s3_path_style: bool,
    /// Secret with S3 credentials for pipelines that do not name one; it must exist in
    /// each pipeline's namespace
    #[arg(long, global = true, env = "FRUITPIPE_S3_CREDENTIALS_SECRET")]
    s3_credentials_secret: Option<String>,
}

impl Installation {
    fn defaults(self) -> RunnerDefaults {
        RunnerDefaults {
            image: self.runner_image,
            image_pull_policy: self.runner_pull_policy,
            service_account: self.runner_service_account,
            s3: S3Spec {
                endpoint: self.s3_endpoint,
                region: self.s3_region,
                path_style: self.s3_path_style,
                credentials_secret: self.s3_credentials_secret,
            },
        }
    }
}

/// `render`: YAML on stdout, or one error on stderr and exit code 2.
fn render(file: &PathBuf, shards: u32, namespace: &str, defaults: &RunnerDefaults) -> ! {
    let mut text = String::new();
    let read = if file.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(file).map(|content| text = content)
    };
    if let Err(err) = read {
        eprintln!(
            "fruitpipe-operator render: cannot read {}: {err}",
            file.display()
        );
        std::process::exit(2);
    }
    match render::render_yaml(&text, namespace, shards, defaults) {
        Ok(yaml) => {
            print!("{yaml}");
            std::process::exit(0)
        }
        Err(err) => {
            eprintln!("fruitpipe-operator render: {err}");
            std::process::exit(2)
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Cli::parse();
    let defaults = args.installation.defaults();
    if let Some(Command::Render {
        file,
        shards,
        namespace,
    }) = &args.command
    {
        render(file, *shards, namespace, &defaults);
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    if args.log_format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }

    let client = kube::Client::try_default().await.map_err(|err| {
        anyhow::anyhow!(
            "cannot reach the Kubernetes API ({err}); run in a cluster or set KUBECONFIG"
        )
    })?;
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let ctx = Arc::new(Context::new(client, defaults, Arc::clone(&metrics)));

    let http = tokio::spawn(server::serve(
        args.http_address,
        metrics,
        Arc::clone(&ready),
    ));
    tokio::select! {
        () = controller::run(ctx, ready) => tracing::info!("controller stopped; shutting down"),
        served = http => anyhow::bail!("the HTTP server stopped: {served:?}"),
    }
    Ok(())
}
