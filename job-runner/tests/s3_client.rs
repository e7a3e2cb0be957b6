//! The storage layer in-process against a real S3 server (s3s + s3s-fs) on loopback.
//!
//! A test binary of its own: the AWS SDK reads credentials from the environment, which is
//! set once here, before any thread reads it.

mod support;

use std::sync::Once;

use fruitpipe_runner::error::{EXIT_PERMANENT, EXIT_RETRYABLE};
use fruitpipe_runner::storage::{Location, S3Options, Storage};
use support::S3Server;

fn storage_for(endpoint: &str) -> Storage {
    static CREDENTIALS: Once = Once::new();
    CREDENTIALS.call_once(|| {
        // SAFETY: runs once, before any S3 client of this test binary reads the
        // environment; nothing else in this binary reads or writes it.
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", support::ACCESS_KEY);
            std::env::set_var("AWS_SECRET_ACCESS_KEY", support::SECRET_KEY);
            std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        }
    });
    Storage::new(S3Options {
        endpoint: Some(endpoint.to_string()),
        region: Some("us-east-1".into()),
        path_style: true,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_go_up_in_parts_and_come_back_whole() {
    let root = tempfile::tempdir().unwrap();
    let server = S3Server::start(root.path());
    server.bucket("big");
    let storage = storage_for(&server.endpoint);
    let data: Vec<u8> = (0..40_000_000u32).map(|i| (i % 251) as u8).collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &data).unwrap();
    let target = Location::parse("s3://big/out/features_pca.csv").unwrap();
    storage.put_file(&target, file.path()).await.unwrap();
    let back = storage.get(&target).await.unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_lost_mid_run_is_retryable_but_a_wrong_one_is_not() {
    let root = tempfile::tempdir().unwrap();
    let server = S3Server::start(root.path());
    server.bucket("fruit");
    let endpoint = server.endpoint.clone();
    let object = Location::parse("s3://fruit/shard.bin").unwrap();

    let storage = storage_for(&endpoint);
    storage.put(&object, "features".into()).await.unwrap();
    drop(server);

    // The same client after the endpoint went away: a network fault, worth a pod retry.
    let lost = storage.get(&object).await.unwrap_err();
    assert_eq!(lost.exit_code(), EXIT_RETRYABLE, "{lost}");
    assert!(lost.to_string().contains("stopped answering"), "{lost}");

    // A client that never reached it: most likely a wrong --s3-endpoint, so exit 2.
    let never = storage_for(&endpoint).get(&object).await.unwrap_err();
    assert_eq!(never.exit_code(), EXIT_PERMANENT, "{never}");
    assert!(
        never.to_string().contains("cannot reach the S3 endpoint"),
        "{never}"
    );
}
