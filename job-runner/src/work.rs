//! The work area shared by the phases (`_work/<run>/` under the output) and its formats.
//!
//! Binary work files are a magic line, one line of JSON header, then little-endian numbers.
//! A phase that finds a file of another version or kind says so instead of misreading it.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::ModelInfo;
use crate::output::Summary;
use crate::plots::ScatterPoint;
use crate::stats::Moments;
use crate::storage::Location;

const FEATURES_MAGIC: &str = "fruitpipe-features v1";
const PARTIAL_MAGIC: &str = "fruitpipe-partial v1";

/// Names every object of one run's work area.
#[derive(Clone, Debug)]
pub struct WorkDir {
    pub root: Location,
}

impl WorkDir {
    pub fn new(root: Location) -> Self {
        WorkDir { root }
    }

    /// The work area `fruitpipe run` uses under its output.
    pub fn under_output(output: &Location, run: &str) -> Self {
        WorkDir::new(output.join(&format!("_work/{run}")))
    }

    pub fn plan(&self) -> Location {
        self.root.join("plan.json")
    }

    pub fn manifest(&self, shard: usize) -> Location {
        self.root.join(&format!("shards/{shard:05}.txt"))
    }

    pub fn features(&self, shard: usize) -> Location {
        self.root.join(&format!("features/{shard:05}.bin"))
    }

    pub fn partial(&self, shard: usize) -> Location {
        self.root.join(&format!("partials/{shard:05}.bin"))
    }

    /// What `fit` decided, for `project` and `assemble`.
    pub fn fit(&self) -> Location {
        self.root.join("fit.json")
    }

    /// Shard `shard`'s rows of `features_pca.csv` (shard 0's start with the header).
    pub fn projected(&self, shard: usize) -> Location {
        self.root.join(&format!("projected/{shard:05}.csv"))
    }

    /// Written after [`WorkDir::projected`]: its presence means the part is complete.
    pub fn projected_report(&self, shard: usize) -> Location {
        self.root.join(&format!("projected/{shard:05}.json"))
    }

    /// Intermediate objects of an assembly with more parts than one upload holds.
    pub fn assembly_scratch(&self) -> Location {
        self.root.join("assembled")
    }
}

/// What `plan` decided; written last, so its presence means the manifests are complete.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Unique to this plan: every shard's features and partial carry it, so that `fit`
    /// never merges shards of an earlier plan of the same work area.
    #[serde(default)]
    pub id: String,
    pub input: String,
    pub shards: usize,
    pub images: u64,
    pub shard_size: usize,
    pub seconds: f64,
    /// Inputs found by the listing that cannot be photos (a FIFO, a symbolic link loop, a
    /// path with a line break, ...).
    #[serde(default)]
    pub skipped: Vec<Skipped>,
}

/// An input that was not used, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

/// Everything about one extracted shard except its numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardReport {
    /// The [`Plan::id`] of the manifest this shard was extracted from.
    #[serde(default)]
    pub plan: String,
    pub shard: usize,
    pub images: u64,
    pub used: u64,
    pub skipped: Vec<Skipped>,
    pub seconds: f64,
    pub model: ModelInfo,
}

/// `fit.json`: the fitted model's identity and everything the summary needs from `fit`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FitRecord {
    /// The [`Plan::id`] of the shards that were merged.
    pub plan: String,
    /// Where the outputs go.
    pub output: String,
    /// sha256 of the `pca_model.json` written: the projection's identity. A part projected
    /// with another model is never assembled.
    pub model_sha256: String,
    /// `project` also writes each shard's part of `features_pca.parquet/`.
    #[serde(default)]
    pub parquet: bool,
    /// Every component's share of the variance, kept or not, largest first: the scree plot.
    #[serde(default)]
    pub spectrum: Vec<f64>,
    /// The `--variance` threshold `k` was chosen by, if it was.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// The feature model and its preprocessing, for the report.
    #[serde(default)]
    pub feature_model: Option<ModelInfo>,
    /// The first skipped inputs (at most [`crate::report::SKIPPED_SHOWN`]), for the report:
    /// `errors.csv` has them all.
    #[serde(default)]
    pub first_skipped: Vec<Skipped>,
    /// The summary as `fit` knows it; `assemble` adds its own figures and writes it.
    pub summary: Summary,
}

/// What `project` wrote for one shard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProjectedReport {
    /// The [`FitRecord::model_sha256`] the rows were projected with.
    pub model_sha256: String,
    pub shard: usize,
    pub rows: u64,
    /// Size of the CSV part.
    pub bytes: u64,
    pub seconds: f64,
    /// The shard's photos that are candidates for `pc_scatter.png`
    /// (see [`crate::plots::sample_candidate`]).
    #[serde(default)]
    pub sample: Vec<ScatterPoint>,
}

/// One shard's feature rows, in manifest order.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ShardFeatures {
    /// The [`Plan::id`] of the manifest these rows come from.
    pub plan: String,
    pub dim: usize,
    pub paths: Vec<String>,
    pub labels: Vec<String>,
    /// `paths.len() * dim` floats, a row per photo.
    pub rows: Vec<f32>,
}

#[derive(Serialize, Deserialize)]
struct FeaturesHeader {
    #[serde(default)]
    plan: String,
    dim: usize,
    paths: Vec<String>,
    labels: Vec<String>,
}

/// One shard's statistics: its report and the moments of its feature rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Partial {
    pub report: ShardReport,
    pub moments: Moments,
}

#[derive(Serialize, Deserialize)]
struct PartialHeader {
    n: u64,
    dim: usize,
    report: ShardReport,
}

fn encode(magic: &str, header: &impl Serialize, payload: &[u8]) -> Vec<u8> {
    let header = serde_json::to_vec(header).expect("work headers always serialise");
    let mut out = Vec::with_capacity(magic.len() + header.len() + payload.len() + 2);
    out.extend_from_slice(magic.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&header);
    out.push(b'\n');
    out.extend_from_slice(payload);
    out
}

fn decode<'a, H: DeserializeOwned>(
    bytes: &'a [u8],
    magic: &str,
    what: &Location,
) -> Result<(H, &'a [u8])> {
    let unreadable = |why: &str| {
        Error::Work(format!(
            "{what} is not a {magic} file ({why}); it was written by another version or is damaged: re-run the phase that writes it"
        ))
    };
    let mut parts = bytes.splitn(3, |&byte| byte == b'\n');
    if parts.next() != Some(magic.as_bytes()) {
        return Err(unreadable("wrong magic line"));
    }
    let header = parts.next().ok_or_else(|| unreadable("no header"))?;
    let header = serde_json::from_slice(header).map_err(|err| unreadable(&err.to_string()))?;
    Ok((header, parts.next().unwrap_or_default()))
}

impl ShardFeatures {
    pub fn new(plan: &str, dim: usize) -> Self {
        ShardFeatures {
            plan: plan.to_string(),
            dim,
            ..Default::default()
        }
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    pub fn push(&mut self, path: String, label: String, row: &[f32]) {
        debug_assert_eq!(row.len(), self.dim);
        self.paths.push(path);
        self.labels.push(label);
        self.rows.extend_from_slice(row);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let header = FeaturesHeader {
            plan: self.plan.clone(),
            dim: self.dim,
            paths: self.paths.clone(),
            labels: self.labels.clone(),
        };
        let payload: Vec<u8> = self.rows.iter().flat_map(|v| v.to_le_bytes()).collect();
        encode(FEATURES_MAGIC, &header, &payload)
    }

    pub fn from_bytes(bytes: &[u8], what: &Location) -> Result<Self> {
        let (header, payload): (FeaturesHeader, _) = decode(bytes, FEATURES_MAGIC, what)?;
        if header.paths.len() != header.labels.len()
            || payload.len() != 4 * header.dim * header.paths.len()
        {
            return Err(Error::Work(format!(
                "{what} is truncated or inconsistent; re-run the extract phase for its shard"
            )));
        }
        let rows = payload
            .chunks_exact(4)
            .map(|chunk| f32::from_le_bytes(chunk.try_into().expect("4-byte chunk")))
            .collect();
        Ok(ShardFeatures {
            plan: header.plan,
            dim: header.dim,
            paths: header.paths,
            labels: header.labels,
            rows,
        })
    }
}

impl Partial {
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = PartialHeader {
            n: self.moments.n,
            dim: self.moments.dim(),
            report: self.report.clone(),
        };
        encode(PARTIAL_MAGIC, &header, &self.moments.to_bytes())
    }

    pub fn from_bytes(bytes: &[u8], what: &Location) -> Result<Self> {
        let (header, payload): (PartialHeader, _) = decode(bytes, PARTIAL_MAGIC, what)?;
        let moments = Moments::from_bytes(header.n, header.dim, payload).ok_or_else(|| {
            Error::Work(format!(
                "{what} is truncated; re-run the extract phase for its shard"
            ))
        })?;
        Ok(Partial {
            report: header.report,
            moments,
        })
    }
}

/// A shard extracted from another plan's manifest than the current one (plan was run
/// again into the same work area) must not be merged: its photos are not this plan's.
pub fn check_plan(plan: &str, shard_plan: &str, shard: usize, place: &Location) -> Result<()> {
    if shard_plan == plan {
        return Ok(());
    }
    Err(Error::Config(format!(
        "{place} belongs to another plan of this work area (plan {}, the current one is {plan}): `plan` was run again after shard {shard} was extracted; run `fruitpipe extract --index {shard}` again for every shard, or use a new --work",
        if shard_plan.is_empty() {
            "unknown"
        } else {
            shard_plan
        }
    )))
}

/// Reads a shard manifest: one input URI per line.
pub fn parse_manifest(text: &str) -> Result<Vec<Location>> {
    text.lines()
        .filter(|line| !line.is_empty())
        .map(Location::parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::{Layout, Preprocessing, Preset};

    fn model() -> ModelInfo {
        ModelInfo {
            uri: "m.onnx".into(),
            sha256: "00".into(),
            input: "input".into(),
            output: "features".into(),
            preprocessing: Preprocessing {
                preset: Preset::Lite,
                size: 224,
                layout: Layout::Nchw,
                exif_orientation: true,
            },
            dim: 2,
        }
    }

    #[test]
    fn features_round_trip_and_reject_truncation() {
        let mut features = ShardFeatures::new("plan-1", 2);
        features.push("s3://b/Banana/1.jpg".into(), "Banana".into(), &[1.5, -2.0]);
        features.push("s3://b/Kiwi/2.jpg".into(), "Kiwi".into(), &[0.0, 3.25]);
        let place = Location::parse("f.bin").unwrap();
        let bytes = features.to_bytes();
        assert_eq!(ShardFeatures::from_bytes(&bytes, &place).unwrap(), features);
        assert!(ShardFeatures::from_bytes(&bytes[..bytes.len() - 1], &place).is_err());
        assert!(ShardFeatures::from_bytes(b"garbage", &place).is_err());
    }

    #[test]
    fn partials_round_trip() {
        let partial = Partial {
            report: ShardReport {
                plan: "plan-1".into(),
                shard: 3,
                images: 3,
                used: 2,
                skipped: vec![Skipped {
                    path: "x.jpg".into(),
                    reason: "empty file".into(),
                }],
                seconds: 0.5,
                model: model(),
            },
            moments: Moments::of_batch(&[1.0, 2.0, 3.0, 5.0], 2),
        };
        let place = Location::parse("p.bin").unwrap();
        let bytes = partial.to_bytes();
        assert_eq!(Partial::from_bytes(&bytes, &place).unwrap(), partial);
        assert!(Partial::from_bytes(&bytes[..bytes.len() - 8], &place).is_err());
    }

    #[test]
    fn work_objects_have_stable_names() {
        let work = WorkDir::under_output(&Location::parse("s3://b/out").unwrap(), "run-1");
        assert_eq!(
            work.manifest(7).to_string(),
            "s3://b/out/_work/run-1/shards/00007.txt"
        );
        assert_eq!(
            work.partial(0).to_string(),
            "s3://b/out/_work/run-1/partials/00000.bin"
        );
        assert_eq!(
            work.projected(12).to_string(),
            "s3://b/out/_work/run-1/projected/00012.csv"
        );
    }
}
