//! `fruitpipe-operator`: watches FruitPipelines and runs them as Jobs.
//!
//! Run exactly one replica: two would race to create the same Jobs (harmless, the names
//! collide) and to write status (noisy). The Helm chart sets `replicas: 1` with `Recreate`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::Parser;
use fruitpipe_operator::api::S3Spec;
use fruitpipe_operator::controller::{self, Context};
use fruitpipe_operator::jobs::RunnerDefaults;
use fruitpipe_operator::metrics::Metrics;
use fruitpipe_operator::server;

#[derive(Debug, Parser)]
#[command(
    name = "fruitpipe-operator",
    version,
    about = "Runs FruitPipelines as Kubernetes Jobs"
)]
struct Args {
    /// Runner image for pipelines that do not name one
    #[arg(
        long,
        env = "FRUITPIPE_RUNNER_IMAGE",
        default_value = "ghcr.io/fruitpipe/fruitpipe:0.1.0"
    )]
    runner_image: String,
    /// Pull policy for that image
    #[arg(long, env = "FRUITPIPE_RUNNER_PULL_POLICY")]
    runner_pull_policy: Option<String>,
    /// Service account of pipeline pods that do not name one (e.g. the IRSA one)
    #[arg(long, env = "FRUITPIPE_RUNNER_SERVICE_ACCOUNT")]
    runner_service_account: Option<String>,
    /// S3 endpoint for pipelines that do not name one (e.g. the cluster's MinIO)
    #[arg(long, env = "FRUITPIPE_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// S3 region for pipelines that do not name one
    #[arg(long, env = "FRUITPIPE_S3_REGION")]
    s3_region: Option<String>,
    /// Path-style S3 addressing for every pipeline (MinIO needs it)
    #[arg(long, env = "FRUITPIPE_S3_PATH_STYLE")]
    s3_path_style: bool,
    /// Secret with S3 credentials for pipelines that do not name one; it must exist in
    /// each pipeline's namespace
    #[arg(long, env = "FRUITPIPE_S3_CREDENTIALS_SECRET")]
    s3_credentials_secret: Option<String>,
    /// Address of /metrics, /healthz and /readyz
    #[arg(long, env = "FRUITPIPE_HTTP_ADDRESS", default_value = "0.0.0.0:8080")]
    http_address: SocketAddr,
    /// Log format
    #[arg(long, env = "FRUITPIPE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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
    let defaults = RunnerDefaults {
        image: args.runner_image,
        image_pull_policy: args.runner_pull_policy,
        service_account: args.runner_service_account,
        s3: S3Spec {
            endpoint: args.s3_endpoint,
            region: args.s3_region,
            path_style: args.s3_path_style,
            credentials_secret: args.s3_credentials_secret,
        },
    };
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
