//! The storage layer in-process against a real S3 server (s3s + s3s-fs) on loopback.
//!
//! A test binary of its own: the AWS SDK reads credentials from the environment, which is
//! set once here, before any thread reads it.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use fruitpipe_runner::error::EXIT_RETRYABLE;
use fruitpipe_runner::storage::compose::ComposeLimits;
use fruitpipe_runner::storage::{Location, Storage};
use support::S3Server;

fn storage_for(endpoint: &str) -> Storage {
    support::in_process_storage(endpoint)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_go_up_in_parts_and_come_back_whole() {
    let root = tempfile::tempdir().unwrap();
    let server = S3Server::start(root.path());
    server.bucket("big");
    let storage = storage_for(&server.endpoint);
    let data: Vec<u8> = (0..40_000_000u32).map(|i| (i % 251) as u8).collect();
    let target = Location::parse("s3://big/out/features_pca.csv").unwrap();
    let mut writer = storage.writer(&target).await.unwrap();
    // Written in uneven pieces, as the CSV is: parts are cut at their own size.
    for piece in data.chunks(3_000_001) {
        writer.write(piece).await.unwrap();
    }
    writer.finish().await.unwrap();
    let back = storage.get(&target).await.unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_lost_mid_run_or_never_reached_is_retryable() {
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
    assert!(lost.to_string().contains("connection refused"), "{lost}");

    // A client that never reached it: perhaps a wrong --s3-endpoint, perhaps a network
    // that is not up yet. Only a retry tells them apart, so exit 1, and the message names
    // both.
    let never = storage_for(&endpoint).get(&object).await.unwrap_err();
    assert_eq!(never.exit_code(), EXIT_RETRYABLE, "{never}");
    let text = never.to_string();
    assert!(
        text.contains(&format!("cannot reach the S3 endpoint {endpoint}")),
        "{text}"
    );
    assert!(
        text.contains("check --s3-endpoint / AWS_ENDPOINT_URL, or retry"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_that_keeps_breaking_off_is_retried_then_retryable() {
    use std::io::{Read, Write};
    // Announces 1000 bytes, sends 10 and hangs up: the SDK hands over the response at its
    // headers, so only the runner's own retries cover the body.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let served = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&served);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                request.push(byte[0]);
            }
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nContent-Type: application/octet-stream\r\n\r\n0123456789",
            );
        }
    });
    let object = Location::parse("s3://fruit/shard.bin").unwrap();
    let err = storage_for(&endpoint).get(&object).await.unwrap_err();
    assert_eq!(err.exit_code(), EXIT_RETRYABLE, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("download of s3://fruit/shard.bin failed after 6 attempts: the connection broke while the object was read"),
        "{text}"
    );
    assert_eq!(served.load(Ordering::SeqCst), 6);
}

const MIB: usize = 1024 * 1024;

/// Objects of these sizes under `s3://parts/in/`, with distinct bytes, and their
/// concatenation.
fn write_sources(server: &S3Server, sizes: &[usize]) -> (Vec<(Location, u64)>, Vec<u8>) {
    let folder = server.bucket("parts").join("in");
    std::fs::create_dir_all(&folder).unwrap();
    let mut whole = Vec::new();
    let mut sources = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let bytes: Vec<u8> = (0..size)
            .map(|at| ((at * 7 + i * 13) % 251) as u8)
            .collect();
        std::fs::write(folder.join(format!("{i:05}.csv")), &bytes).unwrap();
        whole.extend_from_slice(&bytes);
        sources.push((
            Location::parse(&format!("s3://parts/in/{i:05}.csv")).unwrap(),
            size as u64,
        ));
    }
    (sources, whole)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_copies_large_parts_on_the_server_and_sends_only_small_ones() {
    let root = tempfile::tempdir().unwrap();
    let server = S3Server::start(root.path());
    let sizes = [6 * MIB, MIB, MIB, 12 * MIB + 5, 0, 2 * MIB];
    let (sources, whole) = write_sources(&server, &sizes);
    let storage = storage_for(&server.endpoint);
    let target = Location::parse("s3://parts/out/features_pca.csv").unwrap();
    let scratch = Location::parse("s3://parts/scratch").unwrap();
    let report = storage
        .compose(&target, &sources, &scratch, ComposeLimits::default())
        .await
        .unwrap();
    assert!(storage.get(&target).await.unwrap() == whole);
    // Sent: the two 1 MiB sources and the 3 MiB of the next one that complete their part;
    // copied: the rest of that one, and the others whole (the last part may be small).
    assert_eq!(report.sent_bytes, (5 * MIB) as u64, "{report:?}");
    assert_eq!(report.copied_bytes, (17 * MIB + 5) as u64, "{report:?}");
    assert_eq!(report.parts, 4);

    // Shard parts as `project` writes them: all of about one size, the last smaller.
    let (sources, whole) = write_sources(&server, &[5 * MIB + 100, 5 * MIB + 7, 3 * MIB]);
    let report = storage
        .compose(&target, &sources, &scratch, ComposeLimits::default())
        .await
        .unwrap();
    assert!(storage.get(&target).await.unwrap() == whole);
    assert_eq!(report.sent_bytes, 0, "{report:?}");
    assert_eq!(report.intermediates, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_beyond_the_part_count_goes_through_intermediate_objects() {
    let root = tempfile::tempdir().unwrap();
    let server = S3Server::start(root.path());
    let (sources, whole) = write_sources(&server, &[5 * MIB + 11; 8]);
    let storage = storage_for(&server.endpoint);
    let target = Location::parse("s3://parts/out/features_pca.csv").unwrap();
    let scratch = Location::parse("s3://parts/scratch").unwrap();
    let limits = ComposeLimits {
        max_parts: 3,
        ..ComposeLimits::default()
    };
    let report = storage
        .compose(&target, &sources, &scratch, limits)
        .await
        .unwrap();
    assert!(storage.get(&target).await.unwrap() == whole);
    assert_eq!(report.intermediates, 3, "{report:?}");
    assert_eq!(report.sent_bytes, 0, "{report:?}");
    assert!(
        !server.root.join("parts/scratch").exists()
            || walk_files(&server.root.join("parts/scratch")).is_empty(),
        "intermediate objects were left behind"
    );
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk_files(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_server_refuses_parts_under_five_mib_as_s3_does() {
    // A double that accepted them would hide an assembly that AWS refuses.
    let root = tempfile::tempdir().unwrap();
    let server = S3Server::start(root.path());
    let (sources, _) = write_sources(&server, &[2 * MIB, 2 * MIB, MIB]);
    let storage = storage_for(&server.endpoint);
    let target = Location::parse("s3://parts/out/x.csv").unwrap();
    let scratch = Location::parse("s3://parts/scratch").unwrap();
    let too_small = ComposeLimits {
        min_part: MIB as u64,
        ..ComposeLimits::default()
    };
    let err = storage
        .compose(&target, &sources, &scratch, too_small)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("EntityTooSmall"), "{err}");
    assert!(!server.root.join("parts/out/x.csv").exists());
}
