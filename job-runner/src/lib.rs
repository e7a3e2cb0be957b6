//! fruitpipe's data plane: fruit photos -> CNN features -> PCA -> CSV, on a local folder or
//! an S3 prefix.
//!
//! The phases are plain async functions, so the `fruitpipe` binary can run them one per
//! Kubernetes pod ([`plan::plan`], [`extract::extract`], [`fit::fit`],
//! [`project::project`], [`assemble::assemble`]) or all in one process ([`run::run`]). See DESIGN.md for the data layout.

pub mod assemble;
pub mod catalogue;
pub mod error;
pub mod extract;
pub mod fit;
pub mod identify;
pub mod imaging;
pub mod index;
pub mod model;
pub mod output;
pub mod pca;
pub mod plan;
pub mod plots;
pub mod progress;
pub mod project;
pub mod report;
pub mod run;
pub mod serve;
pub mod stats;
pub mod storage;
pub mod work;

pub use error::{Error, Result};
