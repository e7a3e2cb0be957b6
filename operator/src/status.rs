//! What the cluster says about a run, read from Jobs and their pods' termination messages,
//! and the status conditions built from it.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
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
    /// Rows a project pod wrote.
    pub rows: Option<u64>,
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

/// A pod that will not start without outside help (a missing Secret, an image that cannot
/// be pulled, no node that fits), as `kubectl describe pod` would show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StuckPod {
    pub pod: String,
    /// The kubelet's waiting reason (e.g. `CreateContainerConfigError`) or `Unschedulable`.
    pub reason: String,
    pub message: String,
}

/// Container waiting reasons that no wait will fix (pkg/kubelet/images/types.go and
/// pkg/kubelet/kuberuntime: ErrImagePull, ImagePullBackOff, ErrImageNeverPull,
/// InvalidImageName, CreateContainerConfigError, CreateContainerError).
const STUCK_REASONS: [&str; 6] = [
    "CreateContainerConfigError",
    "CreateContainerError",
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
];

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
    /// Results of succeeded pods, one per index for Indexed Jobs (read once the Job is done).
    pub results: Vec<RunnerResult>,
    /// The most telling error message of a failed pod, if any (read once the Job failed).
    pub pod_error: Option<String>,
    /// A pod waiting for something that will not come by itself.
    pub stuck: Option<StuckPod>,
    pub created: Option<Time>,
    /// Whether any pod of the Job exists or existed.
    pub has_pods: bool,
}

impl JobState {
    /// Why the Job failed, in the runner's words when one of its pods said it.
    pub fn failure(&self) -> Option<String> {
        match &self.outcome {
            Outcome::Failed { reason, message } if reason == "DeadlineExceeded" => Some(format!(
                "ran longer than spec.runner.activeDeadlineSeconds ({message}); raise it or \
                 remove it"
            )),
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

/// Where a Job stands, from its conditions alone.
pub fn job_outcome(job: &Job) -> Outcome {
    if let Some((reason, message)) = has_condition(job, &["Failed", "FailureTarget"]) {
        Outcome::Failed { reason, message }
    } else if has_condition(job, &["Complete", "SuccessCriteriaMet"]).is_some() {
        Outcome::Succeeded
    } else {
        Outcome::Running
    }
}

/// Which of a Job's pods the operator reads, by `status.phase`: the results of a Job that
/// succeeded, the errors of one that failed, and, while it runs, the pods not running yet
/// (only when some active pod is not ready). Reading no more keeps the API load of a
/// 2,000-shard run linear in the shards, not quadratic.
pub fn pods_to_read(job: &Job) -> Option<&'static str> {
    match job_outcome(job) {
        Outcome::Succeeded => Some("Succeeded"),
        Outcome::Failed { .. } => Some("Failed"),
        Outcome::Running => {
            let status = job.status.clone().unwrap_or_default();
            let waiting = status.active.unwrap_or(0) > status.ready.unwrap_or(0);
            waiting.then_some("Pending")
        }
    }
}

fn runner_status(pod: &Pod) -> Option<&ContainerStatus> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find(|status| status.name == CONTAINER)
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

/// The last line of a log tail (what `FallbackToLogsOnError` leaves), with the message
/// field of a JSON log line taken out.
fn last_log_line(text: &str) -> Option<String> {
    let line = text
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())?
        .trim();
    let parsed: Option<serde_json::Value> = serde_json::from_str(line).ok();
    let message = parsed.as_ref().and_then(|value| {
        value["fields"]["message"]
            .as_str()
            .or(value["message"].as_str())
            .map(str::to_string)
    });
    let mut line = message.unwrap_or_else(|| line.to_string());
    if line.len() > 300 {
        let mut end = 300;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push_str("...");
    }
    Some(line)
}

/// Why a failed pod failed, and how telling that is (higher is better: a configuration
/// error, then out of memory, then the rest).
fn pod_failure(pod: &Pod, memory_limit: Option<&str>) -> Option<(u8, String)> {
    let terminated = runner_status(pod)?.state.as_ref()?.terminated.as_ref()?;
    let code = terminated.exit_code;
    if code == 0 {
        return None;
    }
    let reason = terminated.reason.clone().unwrap_or_default();
    let message = terminated.message.clone().unwrap_or_default();
    if reason == "OOMKilled" {
        let limit = memory_limit.map_or("no memory limit".to_string(), |limit| {
            format!("memory limit {limit}")
        });
        return Some((
            1,
            format!(
                "out of memory: raise spec.runner.resources.limits.memory (the container was \
                 OOMKilled with exit code {code}, {limit})"
            ),
        ));
    }
    let said = parse_result(Some(&message))
        .and_then(|result| result.error)
        .or_else(|| last_log_line(&message));
    let rank = u8::from(code == crate::jobs::EXIT_PERMANENT) * 2;
    let text = match said {
        Some(text) if code == crate::jobs::EXIT_PERMANENT => text,
        Some(text) => format!("exit code {code}: {text}"),
        None if code > 128 => format!(
            "killed by signal {} (exit code {code}{})",
            code - 128,
            if reason.is_empty() || reason == "Error" {
                String::new()
            } else {
                format!(", {reason}")
            }
        ),
        None => format!("the runner exited with code {code}"),
    };
    Some((rank, text))
}

/// Why a pending pod does not start, if no wait will help.
fn stuck(pod: &Pod) -> Option<StuckPod> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.as_ref()?;
    let waiting = status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .filter_map(|container| container.state.as_ref()?.waiting.as_ref())
        .find(|waiting| STUCK_REASONS.contains(&waiting.reason.as_deref().unwrap_or_default()));
    if let Some(waiting) = waiting {
        return Some(StuckPod {
            pod: name,
            reason: waiting.reason.clone().unwrap_or_default(),
            message: waiting.message.clone().unwrap_or_default(),
        });
    }
    let unschedulable = status.conditions.iter().flatten().find(|condition| {
        condition.type_ == "PodScheduled"
            && condition.status == "False"
            && condition.reason.as_deref() == Some("Unschedulable")
    })?;
    Some(StuckPod {
        pod: name,
        reason: "Unschedulable".into(),
        message: unschedulable.message.clone().unwrap_or_default(),
    })
}

fn memory_limit(job: &Job) -> Option<String> {
    let pod = job.spec.as_ref()?.template.spec.as_ref()?;
    let container = pod.containers.iter().find(|c| c.name == CONTAINER)?;
    let limits = container.resources.as_ref()?.limits.as_ref()?;
    limits.get("memory").map(|quantity| quantity.0.clone())
}

/// Reads a Job and the pods the operator read of it (see [`pods_to_read`]). Pods must be
/// the Job's own, selected by its UID: a deleted Job's orphans may carry the same name.
pub fn job_state(job: &Job, pods: &[Pod]) -> JobState {
    let outcome = job_outcome(job);
    let status = job.status.clone().unwrap_or_default();
    let spec = job.spec.clone().unwrap_or_default();
    let limit = memory_limit(job);

    let mut results: Vec<(Option<u32>, RunnerResult)> = Vec::new();
    let mut pod_error: Option<(u8, String)> = None;
    let mut pods_sorted: Vec<&Pod> = pods.iter().collect();
    pods_sorted.sort_by_key(|pod| pod.metadata.name.clone());
    for pod in &pods_sorted {
        let Some(terminated) = runner_status(pod)
            .and_then(|status| status.state.as_ref())
            .and_then(|state| state.terminated.as_ref())
        else {
            continue;
        };
        if terminated.exit_code == 0 {
            let index = pod_index(pod);
            // A retried index has one succeeded pod; keep one result per index anyway.
            if let Some(result) = parse_result(terminated.message.as_deref())
                && !results
                    .iter()
                    .any(|(seen, _)| index.is_some() && *seen == index)
            {
                results.push((index, result));
            }
        } else if let Some((rank, text)) = pod_failure(pod, limit.as_deref()) {
            let text = match pod_index(pod) {
                Some(index) => format!("shard {index}: {text}"),
                None => text,
            };
            if pod_error.as_ref().is_none_or(|(best, _)| rank > *best) {
                pod_error = Some((rank, text));
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
        pod_error: pod_error.map(|(_, text)| text),
        stuck: pods_sorted.iter().find_map(|pod| stuck(pod)),
        created: job.metadata.creation_timestamp.clone(),
        has_pods: !pods.is_empty()
            || [
                status.active,
                status.ready,
                status.succeeded,
                status.failed,
                status.terminating,
            ]
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
