//! One error type for the data plane, split by what the caller can do about it.
//!
//! The exit code is part of the contract with the operator (see DESIGN.md): 2 means the
//! input or the configuration is wrong and a retry cannot help; any other failure may be
//! retried.

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

    /// The S3 endpoint could not be reached at all.
    #[error(
        "cannot reach the S3 endpoint for {uri}: {detail}; check --s3-endpoint (or AWS_ENDPOINT_URL) and the network"
    )]
    Unreachable { uri: String, detail: String },

    /// Credentials were refused or lack a permission.
    #[error(
        "access to {uri} was refused ({detail}); check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, profile or IRSA role) and their S3 permissions"
    )]
    AccessDenied { uri: String, detail: String },

    /// The bucket, object or folder does not exist.
    #[error("{uri} does not exist{hint}")]
    NotFound { uri: String, hint: String },

    /// A failure that may go away on retry (throttling, 5xx, timeouts).
    #[error("{what} failed after retries: {detail}; re-running the same command is safe")]
    Transient { what: String, detail: String },

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
            | Error::Unreachable { .. }
            | Error::AccessDenied { .. }
            | Error::NotFound { .. } => EXIT_PERMANENT,
            Error::Transient { .. } | Error::Io { .. } | Error::Work(_) | Error::Inference(_) => {
                EXIT_RETRYABLE
            }
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
