//! `fruitpipe`: the command line over the data-plane library.

mod cli;

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::Parser;
use serde_json::{Value, json};

use cli::{Cli, Command, LogFormat};
use fruitpipe_runner::error::{Error, Result};
use fruitpipe_runner::identify::{Engine, Identification};
use fruitpipe_runner::progress::{Display, Progress};
use fruitpipe_runner::run::{load_model, run};
use fruitpipe_runner::storage::compose::ComposeLimits;
use fruitpipe_runner::storage::{Location, Storage};
use fruitpipe_runner::work::WorkDir;
use fruitpipe_runner::{assemble, extract, fit, plan, project};

fn main() -> ExitCode {
    keep_large_buffers_out_of_the_heap();
    // ONNX Runtime's usage telemetry writes a database under ~/.cache/Microsoft and a
    // session file into $TMPDIR (disabling it through the API does not stop that); a data
    // pipeline reports nothing home, and may run on a read-only file system.
    if std::env::var_os("ORT_DISABLE_TELEMETRY").is_none() {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("ORT_DISABLE_TELEMETRY", "1") };
    }
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let summary_file = cli.command.summary_file().map(str::to_string);
    let phase = cli.command.name();

    // Blocking threads decode photos and read files; more than a few per core only adds
    // memory (an allocator arena each) without speed.
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4 * cores)
        .enable_all()
        .build()
        .expect("cannot start the async runtime");
    let progress = cli.progress();
    let outcome = runtime.block_on(execute(cli.command, progress));

    let (code, summary) = match outcome {
        Ok(summary) => (0, summary),
        Err(err) => {
            eprintln!("error: {err}");
            (
                err.exit_code(),
                json!({ "phase": phase, "error": err.to_string() }),
            )
        }
    };
    if let Some(path) = summary_file {
        write_summary_file(&path, &summary);
    }
    ExitCode::from(code as u8)
}

async fn execute(command: Command, progress: Display) -> Result<Value> {
    match command {
        Command::Run(args) => {
            let storage = Arc::new(Storage::new(args.s3.options()));
            let options = args.options(progress)?;
            let summary = run(storage, &options).await?;
            eprintln!(
                "wrote {} ({} photos, k = {}, {:.1}% of the variance; {} skipped, see {})",
                summary.outputs.features,
                summary.images_used,
                summary.k,
                100.0 * summary.cumulative_explained_variance,
                summary.images_skipped,
                summary.outputs.errors,
            );
            Ok(json!({
                "phase": "run",
                "images": summary.images_used,
                "skipped": summary.images_skipped,
                "k": summary.k,
                "explainedVariance": summary.cumulative_explained_variance,
                "outputs": summary.outputs,
            }))
        }
        Command::Plan(args) => {
            let storage = Storage::new(args.s3.options());
            let input = Location::parse(&args.input)?;
            let work = WorkDir::new(Location::parse(&args.work)?);
            let plan = plan::plan(
                &storage,
                &input,
                args.include.as_deref(),
                &work,
                args.shard_size,
                &indicatif::ProgressBar::hidden(),
            )
            .await?;
            println!("{} shards, {} images", plan.shards, plan.images);
            Ok(json!({ "phase": "plan", "shards": plan.shards, "images": plan.images }))
        }
        Command::Extract(args) => {
            let storage = Arc::new(Storage::new(args.s3.options()));
            let work = WorkDir::new(Location::parse(&args.work)?);
            let index = args.index()?;
            let model = Arc::new(Mutex::new(
                load_model(&storage, &args.model.options()).await?,
            ));
            let extracting = Progress::start(
                "extract",
                None,
                progress,
                "extracting [{bar:40}] {pos}/{len} photos, {per_sec}, ETA {eta}",
            );
            let report = extract::extract(
                &storage,
                &model,
                &work,
                index,
                args.model.batch,
                args.model.limits()?,
                extracting.bar(),
            )
            .await?;
            extracting.shard_done(index);
            println!(
                "shard {index}: {} images, {} used, {} skipped",
                report.images,
                report.used,
                report.skipped.len()
            );
            Ok(json!({
                "phase": "extract",
                "shard": index,
                "images": report.images,
                "used": report.used,
                "skipped": report.skipped.len(),
            }))
        }
        Command::Fit(args) => {
            let storage = Storage::new(args.s3.options());
            let work = WorkDir::new(Location::parse(&args.work)?);
            let output = Location::parse(&args.output)?;
            let record = fit::fit(&storage, &work, &output, args.pca.options()?).await?;
            let summary = &record.summary;
            println!(
                "fitted k = {} on {} photos; wrote {}",
                summary.k, summary.images_used, summary.outputs.model
            );
            Ok(json!({
                "phase": "fit",
                "images": summary.images_used,
                "skipped": summary.images_skipped,
                "k": summary.k,
                "explainedVariance": summary.cumulative_explained_variance,
            }))
        }
        Command::Project(args) => {
            let storage = Storage::new(args.s3.options());
            let work = WorkDir::new(Location::parse(&args.work)?);
            let index = args.index()?;
            let projection = project::load_projection(&storage, &work).await?;
            let projecting = Progress::start("project", None, progress, "projecting {pos} photos");
            let report = project::project(&storage, &work, &projection, index).await?;
            projecting.bar().inc(report.rows);
            projecting.shard_done(index);
            println!(
                "shard {index}: {} rows, {} bytes",
                report.rows, report.bytes
            );
            Ok(json!({ "phase": "project", "shard": index, "rows": report.rows }))
        }
        Command::Assemble(args) => {
            let storage = Storage::new(args.s3.options());
            let work = WorkDir::new(Location::parse(&args.work)?);
            let output = Location::parse(&args.output)?;
            let summary =
                assemble::assemble(&storage, &work, &output, ComposeLimits::default()).await?;
            println!(
                "wrote {} ({} photos, k = {}; {} bytes copied by S3, {} through this process)",
                summary.outputs.features,
                summary.images_used,
                summary.k,
                summary.assembly.copied_bytes,
                summary.assembly.sent_bytes
            );
            Ok(json!({
                "phase": "assemble",
                "images": summary.images_used,
                "skipped": summary.images_skipped,
                "k": summary.k,
                "explainedVariance": summary.cumulative_explained_variance,
                "outputs": summary.outputs,
            }))
        }
        Command::Identify(args) => identify(args).await,
        Command::Serve(args) => serve(args).await,
    }
}

/// The model, the index and the catalogue that `identify` and `serve` answer with.
async fn load_engine(storage: Arc<Storage>, args: cli::EngineArgs) -> Result<Engine> {
    let from = Location::parse(&args.from)?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let threads = args.threads.unwrap_or(cores).max(1);
    let mut engine = Engine::load(&storage, &from, args.model.as_deref(), threads).await?;
    if let Some(uri) = &args.catalogue {
        let bytes = storage.get(&Location::parse(uri)?).await?;
        let text = String::from_utf8_lossy(&bytes);
        engine.catalogue = fruitpipe_runner::catalogue::Catalogue::parse(&text, uri)?;
    }
    Ok(engine)
}

async fn serve(args: cli::ServeArgs) -> Result<Value> {
    let options = args.options()?;
    Location::parse(&args.engine.from)?;
    let storage = Arc::new(Storage::new(args.engine.s3.options()));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|err| {
            Error::Config(format!(
                "cannot listen on {}: {err}; choose another --listen address or port",
                args.listen
            ))
        })?;
    let load = load_engine(storage.clone(), args.engine);
    fruitpipe_runner::serve::serve(listener, storage, load, options).await?;
    Ok(json!({ "phase": "serve" }))
}

/// Answers every photo it can; one that cannot be read gets a line on stderr and makes
/// the exit code 2 at the end.
async fn identify(args: cli::IdentifyArgs) -> Result<Value> {
    let storage = Arc::new(Storage::new(args.engine.s3.options()));
    let voters = args.engine.voters;
    let engine = load_engine(storage.clone(), args.engine).await?;
    let mut failed = 0;
    for photo in &args.photos {
        let answer = match read_photo(&storage, photo).await {
            Ok(bytes) => engine.identify(photo, &bytes, args.top, voters),
            Err(err) => Err(err),
        };
        match answer {
            Ok(found) if args.json => {
                println!(
                    "{}",
                    serde_json::to_string(&found).expect("answers serialise")
                );
            }
            Ok(found) => print_identification(&found),
            Err(err) => {
                failed += 1;
                eprintln!("error: {photo}: {err}");
            }
        }
    }
    if failed > 0 {
        return Err(Error::Input(format!(
            "{failed} of {} photos could not be identified (see above)",
            args.photos.len()
        )));
    }
    Ok(json!({ "phase": "identify", "photos": args.photos.len() }))
}

async fn read_photo(storage: &Storage, photo: &str) -> Result<bytes::Bytes> {
    if photo == "-" {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
            .map_err(|err| Error::io("standard input", err))?;
        return Ok(bytes.into());
    }
    storage.get(&Location::parse(photo)?).await
}

fn print_identification(found: &Identification) {
    let share = found.votes.first().map_or(0.0, |vote| vote.share);
    println!(
        "{}: {} (similarity {:.3}, {:.0}% of the vote)",
        found.photo,
        found.label,
        found.score,
        100.0 * share
    );
    if let Some(fruit) = &found.fruit {
        println!(
            "  {} ({}, {}): {}",
            fruit.common, fruit.botanical, fruit.family, fruit.about
        );
    }
    for (rank, neighbour) in found.neighbours.iter().enumerate() {
        println!(
            "  {}. {:.3}  {}  {}",
            rank + 1,
            neighbour.similarity,
            neighbour.label,
            neighbour.path
        );
    }
}

/// Each batch allocates and frees buffers of tens of MiB (model input, co-moments). glibc
/// serves them with mmap at first, then raises its threshold and serves them from per-thread
/// heaps that it never shrinks, so peak memory crept up with every shard. A fixed threshold
/// keeps such buffers on mmap, returned to the system when freed.
fn keep_large_buffers_out_of_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        // And keep some free heap rather than return it at once: `serve` allocates and
        // frees a few hundred KiB per request, which otherwise page-faults in anew each time.
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,fruitpipe_runner=info"));
    // Colours only for a person at a terminal, not in `kubectl logs` or a CI log.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Kubernetes keeps at most 4 KiB of a termination message; longer error texts are cut,
/// and the output URIs left out (the operator knows them from the spec).
fn write_summary_file(path: &str, summary: &Value) {
    let mut text = summary.to_string();
    if text.len() > 4000 && summary.get("error").is_none() {
        let mut shorter = summary.clone();
        if let Some(fields) = shorter.as_object_mut() {
            fields.remove("outputs");
        }
        text = shorter.to_string();
    }
    if text.len() > 4000 {
        let message = summary["error"].as_str().unwrap_or_default();
        let cut: String = message.chars().take(3000).collect();
        text = json!({ "phase": summary["phase"], "error": cut }).to_string();
    }
    if let Err(err) = std::fs::write(path, text) {
        let err = Error::io(path, err);
        eprintln!("warning: cannot write the summary file: {err}");
    }
}
