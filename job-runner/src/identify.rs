//! The app's engine: which fruit a new photo shows, from what a pipeline made.
//!
//! A photo goes through exactly what the pipeline's photos went through (the feature model
//! `pca_model.json` records, checked by sha256, its preprocessing, the projection), then is
//! compared by cosine similarity with every row of `features_pca.csv`. The prediction is a
//! similarity-weighted vote of the nearest rows.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use crate::catalogue::{Catalogue, Fruit};
use crate::error::{Error, Result};
use crate::extract::PhotoLimits;
use crate::index::{Index, Neighbour};
use crate::model::{Model, ModelInfo};
use crate::output::{FEATURES_CSV, MODEL_JSON, ModelFile};
use crate::pca::{Pca, Projector};
use crate::storage::{Location, Storage};

/// Nearest rows that vote, unless told otherwise. Measured on the 4,250-photo sample
/// (`VOTES=1 knn_accuracy`, whitened, k = 247): weighted 1-NN 98.71%, 3-NN 98.35%, 5-NN
/// 97.76%, 10-NN 97.41%: with about 40 photos per variety, the neighbours after the first
/// are more often a sister variety. More photos per variety may change that.
pub const DEFAULT_VOTERS: usize = 1;

/// What the engine says about one photo (`identify --json` prints one per line).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Identification {
    pub photo: String,
    /// The predicted label.
    pub label: String,
    /// Cosine similarity of the nearest photo of the predicted label.
    pub score: f64,
    /// The nearest photos, most similar first.
    pub neighbours: Vec<Neighbour>,
    /// Labels with their share of the vote, largest first.
    pub votes: Vec<Vote>,
    /// What the catalogue says about the predicted fruit (null when it has no entry).
    pub fruit: Option<Fruit>,
    /// The most likely fruits, best first: each label among the nearest photos with the
    /// similarity of its nearest photo.
    pub fruits: Vec<Candidate>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Candidate {
    pub label: String,
    /// The catalogue's common name, else the label.
    pub name: String,
    pub similarity: f64,
}

/// How many nearest photos are searched for the other likely fruits.
const CANDIDATE_DEPTH: usize = 50;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Vote {
    pub label: String,
    pub share: f64,
}

/// The similarity-weighted vote of `voters`: each label's share of the summed similarity
/// (negative similarities count as 0), largest first; a tie goes to the label of the
/// nearer photo.
pub fn vote(voters: &[Neighbour]) -> Vec<Vote> {
    let mut weights: HashMap<&str, (f64, usize)> = HashMap::new();
    for (rank, voter) in voters.iter().enumerate() {
        let entry = weights.entry(&voter.label).or_insert((0.0, rank));
        entry.0 += voter.similarity.max(0.0);
    }
    let total: f64 = weights.values().map(|(weight, _)| weight).sum();
    let mut votes: Vec<(&str, f64, usize)> = weights
        .into_iter()
        .map(|(label, (weight, first))| (label, weight, first))
        .collect();
    votes.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)));
    votes
        .into_iter()
        .map(|(label, weight, _)| Vote {
            label: label.to_string(),
            share: if total > 0.0 { weight / total } else { 0.0 },
        })
        .collect()
}

/// The model, the projection and the index, loaded once and shared: the index is read
/// by every request at once, the model (one inference session) by one at a time.
pub struct Engine {
    model: Mutex<Model>,
    pub pca: Pca,
    projector: Projector,
    pub feature_model: ModelInfo,
    pub index: Index,
    pub catalogue: Catalogue,
    pub limits: PhotoLimits,
}

impl Engine {
    /// Loads `pca_model.json` and `features_pca.csv` from `from` (a pipeline's output) and
    /// the feature model it records, or `model` when given (it must be the same file).
    pub async fn load(
        storage: &Storage,
        from: &Location,
        model: Option<&str>,
        threads: usize,
    ) -> Result<Engine> {
        let started = Instant::now();
        let model_place = from.join(MODEL_JSON);
        let bytes = storage
            .get_expected(&model_place, |uri| {
                Error::Config(format!(
                    "no pca_model.json at {uri}; give --from the --output of a finished fruitpipe run"
                ))
            })
            .await?;
        let file: ModelFile = serde_json::from_slice(&bytes).map_err(|err| {
            Error::Input(format!(
                "{model_place} is not a fruitpipe PCA model ({err})"
            ))
        })?;
        let csv_place = from.join(FEATURES_CSV);
        let csv = storage.get(&csv_place).await?;
        let index = tokio::task::spawn_blocking(move || Index::from_csv(&csv, &csv_place))
            .await
            .expect("index loading panicked")?;
        if index.k != file.pca.k {
            return Err(Error::Input(format!(
                "{} has {} components per photo, {model_place} {}; they come from different runs",
                from.join(FEATURES_CSV),
                index.k,
                file.pca.k
            )));
        }
        let loaded = load_feature_model(storage, &file.feature_model, model, threads).await?;
        tracing::info!(
            photos = index.len(),
            k = index.k,
            seconds = started.elapsed().as_secs_f64(),
            "loaded the index"
        );
        Ok(Engine {
            model: Mutex::new(loaded),
            projector: file.pca.projector(),
            pca: file.pca,
            feature_model: file.feature_model,
            index,
            catalogue: Catalogue::shipped(),
            limits: PhotoLimits::default(),
        })
    }

    /// The photo's components, exactly as the pipeline projected its own photos.
    pub fn components(&self, photo: &str, bytes: &[u8]) -> Result<Vec<f64>> {
        let preprocessing = &self.feature_model.preprocessing;
        let tensor = preprocessing
            .tensor_from_bytes(bytes, self.limits.max_pixels)
            .map_err(|unusable| Error::Unusable {
                uri: photo.to_string(),
                reason: unusable.to_string(),
            })?;
        let features = self
            .model
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .features(&tensor, 1)?;
        Ok(self.projector.project(&features))
    }

    /// Names the fruit in one photo: its `top` nearest photos, and the vote of the
    /// `voters` nearest.
    pub fn identify(
        &self,
        photo: &str,
        bytes: &[u8],
        top: usize,
        voters: usize,
    ) -> Result<Identification> {
        let components = self.components(photo, bytes)?;
        let nearest = self
            .index
            .nearest(&components, top.max(voters).max(CANDIDATE_DEPTH));
        let votes = vote(&nearest[..voters.max(1).min(nearest.len())]);
        let fruits = self.candidates(&nearest, top);
        let label = votes[0].label.clone();
        let score = nearest
            .iter()
            .find(|neighbour| neighbour.label == label)
            .map_or(0.0, |neighbour| neighbour.similarity);
        let fruit = self.catalogue.lookup(&label).cloned();
        Ok(Identification {
            photo: photo.to_string(),
            fruit,
            label,
            score,
            neighbours: nearest.into_iter().take(top).collect(),
            votes,
            fruits,
        })
    }

    /// The first `count` distinct labels of `nearest` (most similar first).
    fn candidates(&self, nearest: &[Neighbour], count: usize) -> Vec<Candidate> {
        let mut seen = HashSet::new();
        nearest
            .iter()
            .filter(|neighbour| seen.insert(neighbour.label.as_str()))
            .take(count)
            .map(|neighbour| Candidate {
                label: neighbour.label.clone(),
                name: self
                    .catalogue
                    .lookup(&neighbour.label)
                    .map_or_else(|| neighbour.label.clone(), |fruit| fruit.common.clone()),
                similarity: neighbour.similarity,
            })
            .collect()
    }
}

/// The feature model `pca_model.json` records, from where it says or from `given` (which
/// must be the same file: same sha256).
async fn load_feature_model(
    storage: &Storage,
    recorded: &ModelInfo,
    given: Option<&str>,
    threads: usize,
) -> Result<Model> {
    let uri = given.unwrap_or(&recorded.uri);
    let bytes = storage
        .get_expected(&Location::parse(uri)?, |uri| {
            Error::Config(format!(
                "the feature model {uri} that pca_model.json records is not there; give --model with a copy of it"
            ))
        })
        .await?;
    let recorded = recorded.clone();
    let uri = uri.to_string();
    let model = tokio::task::spawn_blocking(move || {
        let preprocessing = &recorded.preprocessing;
        // The engine answers one photo at a time between other work: threads that do not
        // spin between photos.
        let model = Model::load_with_spinning(
            &bytes,
            &uri,
            preprocessing.preset,
            Some(preprocessing.size),
            threads,
            false,
        )?;
        if model.info.sha256 != recorded.sha256 {
            return Err(Error::Config(format!(
                "{uri} is not the feature model the pipeline used (sha256 {}, pca_model.json records {} from {}); give --model a copy of that file",
                model.info.sha256, recorded.sha256, recorded.uri
            )));
        }
        Ok(model)
    })
    .await
    .expect("model loading panicked")?;
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn neighbour(label: &str, similarity: f64) -> Neighbour {
        Neighbour {
            path: format!("{label}.jpg"),
            label: label.into(),
            similarity,
        }
    }

    #[test]
    fn the_vote_is_weighted_by_similarity() {
        let votes = vote(&[
            neighbour("Kiwi", 0.9),
            neighbour("Lemon", 0.8),
            neighbour("Lemon", 0.7),
            neighbour("Kiwi", 0.1),
        ]);
        assert_eq!(votes[0].label, "Lemon");
        assert!((votes[0].share - 1.5 / 2.5).abs() < 1e-12);
        assert_eq!(votes[1].label, "Kiwi");
    }

    #[test]
    fn a_tie_goes_to_the_nearer_photo_and_negative_similarities_do_not_vote() {
        let votes = vote(&[neighbour("Kiwi", 0.5), neighbour("Lemon", 0.5)]);
        assert_eq!(votes[0].label, "Kiwi");
        let votes = vote(&[neighbour("Kiwi", -0.2), neighbour("Lemon", 0.1)]);
        assert_eq!(votes[0].label, "Lemon");
        assert_eq!(votes[1].share, 0.0);
    }
}
