//! One error type for the data plane, split by what the caller can do about it.
//!
//! The exit code is part of the contract with the operator (see DESIGN.md): 2 means the
//! input or the configuration is certainly wrong and a retry cannot help (the operator then
//! fails the whole pipeline at once); any failure a retry might fix exits 1, even when a
//! wrong setting is its likeliest cause (an S3 endpoint that cannot be reached may be a
//! typo or a DNS blip: only a retry tells them apart).

use std::path::PathBuf;

/// Exit code for bad configuration or input that a retry cannot fix.
pub const EXIT_PERMANENT: i32 = 2;
/// Exit code for failures that a retry may fix (network, 5xx, a killed process).
pub const EXIT_RETRYABLE: i32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag or combination of flags that cannot work.
    #[error("{0}")]
    Config(String),

    /// Input data the pipeline cannot use (no images, a model of the wrong shape, ...).
    #[error("{0}")]
    Input(String),

    /// The S3 endpoint could not be reached or did not answer in time (connection refused
    /// or reset, DNS failure, timeout), after the in-process retries. Retryable: a DNS blip
    /// or a proxy sidecar that is not ready yet must not fail the whole pipeline.
    #[error("{}", unreachable_message(.endpoint, .uri, .cause, .attempts, .answered_before))]
    Unreachable {
        /// `scheme://host[:port]` the requests went to.
        endpoint: String,
        /// The object or prefix the request was about.
        uri: String,
        /// Short reason: "connection refused", "timed out (...)", ...
        cause: String,
        /// Attempts made, the in-process retries included (0 if unknown).
        attempts: u32,
        /// The endpoint answered an earlier request of this process: it is the right one and
        /// went away, rather than possibly a wrong --s3-endpoint.
        answered_before: bool,
    },

    /// Credentials were refused or lack a permission.
    #[error(
        "access to {uri} was refused ({detail}); check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, profile or IRSA role) and their S3 permissions"
    )]
    AccessDenied { uri: String, detail: String },

    /// The bucket, object or folder does not exist.
    #[error("{uri} does not exist{hint}")]
    NotFound { uri: String, hint: String },

    /// One object or file cannot be read for a reason that is about it alone: access denied
    /// on that key (or on its KMS key), archived in Glacier, a FIFO or a symbolic link loop.
    /// A photo is skipped for it; anything else (the model, a manifest) cannot be used.
    #[error("{uri} cannot be read: {reason}; {hint}")]
    ObjectRefused {
        uri: String,
        reason: String,
        hint: String,
        /// Access was refused (a policy, an ACL, file permissions, a KMS key), as opposed to
        /// an object that is not readable as it is (archived, a FIFO).
        denied: bool,
    },

    /// A photo refused before it was downloaded or decoded (too large, not an image).
    #[error("{uri}: {reason}")]
    Unusable { uri: String, reason: String },

    /// A failure that may go away on retry (throttling, 5xx, a broken connection).
    #[error("{what} failed{}: {detail}; re-running the same command is safe", after(.attempts))]
    Transient {
        what: String,
        detail: String,
        /// Attempts made, the in-process retries included, when known.
        attempts: Option<u32>,
    },

    /// Local file-system failure.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Work files written by an earlier phase are missing or inconsistent.
    #[error("{0}")]
    Work(String),

    /// ONNX Runtime failed while running a model that loaded fine.
    #[error("inference failed: {0}")]
    Inference(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The process exit code this error maps to.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_)
            | Error::Input(_)
            | Error::AccessDenied { .. }
            | Error::NotFound { .. }
            | Error::ObjectRefused { .. }
            | Error::Unusable { .. } => EXIT_PERMANENT,
            Error::Unreachable { .. }
            | Error::Transient { .. }
            | Error::Io { .. }
            | Error::Work(_)
            | Error::Inference(_) => EXIT_RETRYABLE,
        }
    }

    /// The reason to skip a photo when this error came from reading it, if it is about that
    /// photo alone; `None` when the whole run is concerned (exit with [`Error::exit_code`]).
    ///
    /// This, with `exit_code`, is where every failure gets its class: one photo (skipped and
    /// listed in `errors.csv`), transient (exit 1: the operator retries the pod) or a
    /// mistake no retry fixes (exit 2: the pipeline fails at once).
    pub fn photo_problem(&self) -> Option<String> {
        match self {
            Error::NotFound { .. } => Some("missing: deleted after the input was listed".into()),
            Error::ObjectRefused { reason, .. } | Error::Unusable { reason, .. } => {
                Some(reason.clone())
            }
            _ => None,
        }
    }

    /// Access to the object was refused ([`Error::ObjectRefused`] with `denied`).
    pub fn is_denial(&self) -> bool {
        matches!(self, Error::ObjectRefused { denied: true, .. })
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// " after N attempts", or nothing when the count is unknown.
fn after(attempts: &Option<u32>) -> String {
    match *attempts {
        Some(1) => " after 1 attempt".into(),
        Some(n) if n > 1 => format!(" after {n} attempts"),
        _ => String::new(),
    }
}

fn unreachable_message(
    endpoint: &str,
    uri: &str,
    cause: &str,
    attempts: &u32,
    answered_before: &bool,
) -> String {
    let tried = match *attempts {
        0 => String::new(),
        1 => " (after 1 attempt)".into(),
        n => format!(" (after {n} attempts)"),
    };
    if *answered_before {
        format!(
            "the S3 endpoint {endpoint} stopped answering (for {uri}): {cause}{tried}; re-running the same command is safe"
        )
    } else {
        format!(
            "cannot reach the S3 endpoint {endpoint} (for {uri}): {cause}{tried}; check --s3-endpoint / AWS_ENDPOINT_URL, or retry"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_certain_failures_exit_2() {
        let unreachable = |answered_before| Error::Unreachable {
            endpoint: "http://127.0.0.1:9".into(),
            uri: "s3://fruit/in/".into(),
            cause: "connection refused".into(),
            attempts: 6,
            answered_before,
        };
        for err in [unreachable(false), unreachable(true)] {
            assert_eq!(err.exit_code(), EXIT_RETRYABLE, "{err}");
        }
        assert_eq!(
            unreachable(false).to_string(),
            "cannot reach the S3 endpoint http://127.0.0.1:9 (for s3://fruit/in/): connection refused (after 6 attempts); check --s3-endpoint / AWS_ENDPOINT_URL, or retry"
        );
        assert!(unreachable(true).to_string().contains("stopped answering"));
        let throttled = Error::Transient {
            what: "listing of s3://fruit/in/".into(),
            detail: "SlowDown".into(),
            attempts: Some(6),
        };
        assert_eq!(throttled.exit_code(), EXIT_RETRYABLE);
        assert!(
            throttled
                .to_string()
                .contains("failed after 6 attempts: SlowDown")
        );
        let missing = Error::NotFound {
            uri: "s3://nope/in/".into(),
            hint: String::new(),
        };
        assert_eq!(missing.exit_code(), EXIT_PERMANENT);
    }
}
