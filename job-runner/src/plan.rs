//! Phase 1: list the input once and cut it into shard manifests.

use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use indicatif::ProgressBar;

use crate::error::{Error, Result};
use crate::storage::{Listed, Location, Storage};
use crate::work::{Plan, Skipped, WorkDir};

/// Lists every image under `input` (those whose path below it matches `include`, when
/// given) and writes one manifest per `shard_size` images, then `plan.json`. Memory holds
/// one manifest, whatever the number of photos. Inputs that cannot be photos are listed in
/// the plan's `skipped`, for `errors.csv`.
pub async fn plan(
    storage: &Storage,
    input: &Location,
    include: Option<&str>,
    work: &WorkDir,
    shard_size: usize,
    progress: &ProgressBar,
) -> Result<Plan> {
    if shard_size == 0 {
        return Err(Error::Config("--shard-size must be at least 1".into()));
    }
    let include = include
        .filter(|glob| !glob.is_empty())
        .map(compile_glob)
        .transpose()?;
    let started = Instant::now();
    let input = absolute(input)?;
    let prefix = format!("{}/", input.to_string().trim_end_matches('/'));
    let mut listing = std::pin::pin!(storage.list_images(&input));
    let (mut shards, mut images, mut manifest, mut in_manifest) = (0usize, 0u64, String::new(), 0);
    let mut skipped = Vec::new();
    while let Some(listed) = listing.next().await {
        let (photo, problem) = match listed? {
            Listed::Photo(photo) => (photo.to_string(), None),
            Listed::Skipped(item) => (item.path, Some(item.reason)),
        };
        if let Some(glob) = &include
            && !glob.is_match(photo.strip_prefix(&prefix).unwrap_or(&photo))
        {
            continue;
        }
        let problem = problem.or_else(|| {
            photo.contains(['\n', '\r']).then(|| {
                "the path contains a line break, which a shard manifest cannot hold; rename it"
                    .to_string()
            })
        });
        if let Some(reason) = problem {
            tracing::warn!(path = %photo.escape_debug(), %reason, "skipping an input");
            skipped.push(Skipped {
                path: photo,
                reason,
            });
            continue;
        }
        manifest.push_str(&photo);
        manifest.push('\n');
        in_manifest += 1;
        images += 1;
        progress.inc(1);
        if in_manifest == shard_size {
            write_manifest(storage, work, shards, &mut manifest).await?;
            shards += 1;
            in_manifest = 0;
        }
    }
    if in_manifest > 0 {
        write_manifest(storage, work, shards, &mut manifest).await?;
        shards += 1;
    }
    if images == 0 {
        let filter = include.map_or(String::new(), |glob| {
            format!(" matching --include {}", glob.glob())
        });
        return Err(Error::Input(format!(
            "no images (.jpg, .jpeg, .png){filter} under {input}; check --input (photos are found in sub-folders; hidden and _-prefixed folders are skipped)"
        )));
    }
    let plan = Plan {
        id: new_plan_id(&input, shard_size),
        input: input.to_string(),
        shards,
        images,
        shard_size,
        seconds: started.elapsed().as_secs_f64(),
        skipped,
    };
    let json = serde_json::to_vec_pretty(&plan).expect("plan serialises");
    storage.put(&work.plan(), Bytes::from(json)).await?;
    Ok(plan)
}

async fn write_manifest(
    storage: &Storage,
    work: &WorkDir,
    shard: usize,
    manifest: &mut String,
) -> Result<()> {
    let text = std::mem::take(manifest);
    storage.put(&work.manifest(shard), Bytes::from(text)).await
}

/// 16 hex digits that differ between any two plans: the input, the time and the process.
fn new_plan_id(input: &Location, shard_size: usize) -> String {
    use sha2::{Digest, Sha256};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seed = format!(
        "{input}\n{shard_size}\n{}\n{}",
        now.as_nanos(),
        std::process::id()
    );
    format!("{:x}", Sha256::digest(seed.as_bytes()))[..16].to_string()
}

/// `*` stays within one folder, `**` crosses folders: `Training/**`, `*/Banana/*`.
fn compile_glob(pattern: &str) -> Result<globset::GlobMatcher> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|glob| glob.compile_matcher())
        .map_err(|err| Error::Config(format!("--include '{pattern}' is not a valid glob: {err}")))
}

/// Local inputs are recorded as absolute paths, so the CSV names each photo fully.
fn absolute(input: &Location) -> Result<Location> {
    match input {
        // Canonical when it exists (no `..` in the CSV); a missing folder is reported by
        // the listing.
        Location::Local(path) => std::fs::canonicalize(path)
            .or_else(|_| std::path::absolute(path))
            .map(Location::Local)
            .map_err(|err| Error::io(path, err)),
        Location::S3 { .. } => Ok(input.clone()),
    }
}

/// Reads the plan a previous `plan` phase wrote.
pub async fn read_plan(storage: &Storage, work: &WorkDir) -> Result<Plan> {
    let bytes = storage
        .get_expected(&work.plan(), |uri| {
            Error::Config(format!(
                "no plan at {uri}; run `fruitpipe plan` with the same --work first"
            ))
        })
        .await?;
    serde_json::from_slice(&bytes).map_err(|err| {
        Error::Work(format!(
            "{} is not a fruitpipe plan ({err}); re-run `fruitpipe plan`",
            work.plan()
        ))
    })
}
