//! What the cluster says about a run, read from Jobs and their pods' termination messages,
//! and the status conditions built from it.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde::Deserialize;

use crate::api::Outputs;
use crate::jobs::{ANNOTATION_INDEX, CONTAINER};

/// The JSON a runner writes to its termination message (`--summary-file`). Which fields
/// are present depends on the stage; `error` is set when it failed.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerResult {
    pub phase: Option<String>,
    pub shards: Option<u32>,
    pub shard: Option<u32>,
    pub images: Option<u64>,
    pub used: Option<u64>,
    pub skipped: Option<u64>,
    pub k: Option<u32>,
    pub explained_variance: Option<f64>,
    pub outputs: Option<Outputs>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Running,
    Succeeded,
    Failed { reason: String, message: String },
}

/// One Job of a run, as far as the operator cares.
#[derive(Clone, Debug, PartialEq)]
pub struct JobState {
    pub name: String,
    pub outcome: Outcome,
    pub parallelism: Option<i32>,
    pub suspended: bool,
    /// Indexes done and out of retries (Indexed Jobs).
    pub completed_indexes: u32,
    pub failed_indexes: u32,
    /// Results of succeeded pods, one per index for Indexed Jobs.
    pub results: Vec<RunnerResult>,
    /// The most telling error message of a failed pod, if any.
    pub pod_error: Option<String>,
    pub created: Option<Time>,
    /// Whether any pod of the Job exists or existed.
    pub has_pods: bool,
}

impl JobState {
    /// Why the Job failed, in the runner's words when one of its pods said it.
    pub fn failure(&self) -> Option<String> {
        match &self.outcome {
            Outcome::Failed { reason, message } => Some(
                self.pod_error
                    .clone()
                    .unwrap_or_else(|| format!("{reason}: {message}")),
            ),
            _ => None,
        }
    }
}

/// Counts the members of a compressed index list such as `"1,3-5,7"`.
pub fn count_indexes(list: Option<&str>) -> u32 {
    list.unwrap_or_default()
        .split(',')
        .filter(|part| !part.is_empty())
        .map(|part| match part.split_once('-') {
            Some((first, last)) => {
                let (first, last) = (first.parse::<u32>(), last.parse::<u32>());
                match (first, last) {
                    (Ok(first), Ok(last)) if last >= first => last - first + 1,
                    _ => 0,
                }
            }
            None => u32::from(part.parse::<u32>().is_ok()),
        })
        .sum()
}

fn has_condition(job: &Job, types: &[&str]) -> Option<(String, String)> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .find(|condition| types.contains(&condition.type_.as_str()) && condition.status == "True")
        .map(|condition| {
            (
                condition.reason.clone().unwrap_or_default(),
                condition.message.clone().unwrap_or_default(),
            )
        })
}

/// Terminated state of the runner container: exit code and message.
fn terminated(pod: &Pod) -> Option<(i32, Option<String>)> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let status = statuses.iter().find(|status| status.name == CONTAINER)?;
    let terminated = status.state.as_ref()?.terminated.as_ref()?;
    Some((terminated.exit_code, terminated.message.clone()))
}

fn parse_result(message: Option<&str>) -> Option<RunnerResult> {
    serde_json::from_str(message?.trim()).ok()
}

fn pod_index(pod: &Pod) -> Option<u32> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(ANNOTATION_INDEX)?
        .parse()
        .ok()
}

/// Reads a Job and the pods it created.
pub fn job_state(job: &Job, pods: &[&Pod]) -> JobState {
    let outcome = if let Some((reason, message)) = has_condition(job, &["Failed", "FailureTarget"])
    {
        Outcome::Failed { reason, message }
    } else if has_condition(job, &["Complete", "SuccessCriteriaMet"]).is_some() {
        Outcome::Succeeded
    } else {
        Outcome::Running
    };
    let status = job.status.clone().unwrap_or_default();
    let spec = job.spec.clone().unwrap_or_default();

    let mut results: Vec<(Option<u32>, RunnerResult)> = Vec::new();
    let mut pod_error = None;
    for pod in pods {
        let Some((code, message)) = terminated(pod) else {
            continue;
        };
        let result = parse_result(message.as_deref());
        if code == 0 {
            let index = pod_index(pod);
            // A retried index has one succeeded pod; keep one result per index anyway.
            if let Some(result) = result
                && !results
                    .iter()
                    .any(|(seen, _)| index.is_some() && *seen == index)
            {
                results.push((index, result));
            }
        } else {
            let text = result
                .and_then(|result| result.error)
                .or_else(|| message.filter(|text| !text.trim().is_empty()))
                .unwrap_or_else(|| format!("the runner exited with code {code}"));
            let text = match pod_index(pod) {
                Some(index) => format!("shard {index}: {text}"),
                None => text,
            };
            // Exit code 2 (bad input) explains a failure better than a retryable one.
            if pod_error.is_none() || code == crate::jobs::EXIT_PERMANENT {
                pod_error = Some(text);
            }
        }
    }
    results.sort_by_key(|(index, _)| *index);
    JobState {
        name: job.metadata.name.clone().unwrap_or_default(),
        outcome,
        parallelism: spec.parallelism,
        suspended: spec.suspend.unwrap_or(false),
        completed_indexes: count_indexes(status.completed_indexes.as_deref()),
        failed_indexes: count_indexes(status.failed_indexes.as_deref()),
        results: results.into_iter().map(|(_, result)| result).collect(),
        pod_error,
        created: job.metadata.creation_timestamp.clone(),
        has_pods: !pods.is_empty()
            || [status.active, status.ready, status.succeeded, status.failed]
                .iter()
                .any(|count| count.unwrap_or(0) > 0),
    }
}

/// Sets a condition, keeping its transition time when its status did not change.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let condition = Condition {
        type_: type_.into(),
        status: status.clone(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: now.clone(),
    };
    match conditions
        .iter_mut()
        .find(|existing| existing.type_ == type_)
    {
        Some(existing) if existing.status == status => {
            existing.reason = condition.reason;
            existing.message = condition.message;
            existing.observed_generation = condition.observed_generation;
        }
        Some(existing) => *existing = condition,
        None => conditions.push(condition),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_compressed_index_lists() {
        assert_eq!(count_indexes(None), 0);
        assert_eq!(count_indexes(Some("")), 0);
        assert_eq!(count_indexes(Some("0")), 1);
        assert_eq!(count_indexes(Some("1,3-5,7")), 5);
        assert_eq!(count_indexes(Some("0-99")), 100);
    }

    #[test]
    fn condition_transition_time_moves_only_on_change() {
        let t1 = Time(k8s_openapi::jiff::Timestamp::from_second(1).unwrap());
        let t2 = Time(k8s_openapi::jiff::Timestamp::from_second(2).unwrap());
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            "Planned",
            false,
            "Planning",
            "",
            Some(1),
            &t1,
        );
        set_condition(
            &mut conditions,
            "Planned",
            false,
            "Planning",
            "still",
            Some(1),
            &t2,
        );
        assert_eq!(conditions[0].last_transition_time, t1);
        assert_eq!(conditions[0].message, "still");
        set_condition(
            &mut conditions,
            "Planned",
            true,
            "Planned",
            "3 shards",
            Some(1),
            &t2,
        );
        assert_eq!(conditions[0].last_transition_time, t2);
        assert_eq!(conditions.len(), 1);
    }
}
