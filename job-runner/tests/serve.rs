//! `fruitpipe serve` over real HTTP on loopback, against the output of a real run on the
//! shipped Training photos (their Test photos are new to it).

mod support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use support::serve::{Served, encode_query, exchange, form, get, post, training_index};
use support::{SilentEndpoint, fruitpipe, fruitpipe_for};

const CLASSES: [&str; 6] = ["Banana", "Lemon", "Kiwi", "Cocos", "Avocado", "Limes"];

fn pipeline_output() -> &'static Path {
    static OUTPUT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &OUTPUT
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let output = training_index(dir.path(), &CLASSES);
            (dir, output)
        })
        .1
}

fn test_photo(class: &str) -> PathBuf {
    let folder = pipeline_output().join("../in/Test").join(class);
    let mut photos: Vec<PathBuf> = std::fs::read_dir(folder)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    photos.sort();
    photos.remove(0)
}

fn serve(extra: &[&str]) -> Served {
    let mut command = fruitpipe();
    command
        .args(["serve", "--threads", "1", "--from"])
        .arg(pipeline_output())
        .args(extra);
    let served = Served::start(command);
    served.wait_ready();
    served
}

fn assert_refused(response: &support::serve::Response, status: u16, kind: &str, says: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{}",
        response.text()
    );
    let body = response.json();
    assert_eq!(body["kind"], kind, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(message.contains(says), "{message:?} should say {says:?}");
}

#[test]
fn test_photos_are_identified_sent_raw_or_as_a_form() {
    let served = serve(&[]);
    for class in CLASSES {
        let photo = std::fs::read(test_photo(class)).unwrap();
        let raw = post(
            &served.address,
            "/v1/identify",
            "Content-Type: image/jpeg\r\n",
            &photo,
        );
        assert_eq!(raw.status, 200, "{}", raw.text());
        let raw = raw.json();
        assert_eq!(raw["label"], class, "{raw}");

        let (content_type, body) = form("photo", &format!("{class}.jpg"), &photo);
        let answer = post(&served.address, "/v1/identify?top=3", &content_type, &body);
        assert_eq!(answer.status, 200, "{}", answer.text());
        let answer = answer.json();
        assert_eq!(answer["label"], class, "{answer}");
        assert_eq!(answer["photo"], format!("{class}.jpg"));
        // The same answer, whichever way the photo came.
        assert_eq!(answer["score"], raw["score"]);
        assert_eq!(answer["neighbours"][0], raw["neighbours"][0]);
        assert_eq!(answer["neighbours"].as_array().unwrap().len(), 3);
        assert_eq!(raw["neighbours"].as_array().unwrap().len(), 5);
        let nearest = &answer["neighbours"][0];
        assert!(
            nearest["path"].as_str().unwrap().contains("/Training/"),
            "{nearest}"
        );
        assert!(
            nearest["similarity"].as_f64().unwrap() < 0.9999,
            "a new photo"
        );
        assert!(answer["fruit"]["common"].is_string(), "{answer}");
        assert_eq!(answer["fruits"][0]["label"], class);
        assert_eq!(answer["votes"][0]["label"], class);
    }
}

#[test]
fn every_refusal_is_json_with_a_status_and_a_reason() {
    let served = serve(&["--max-upload", "20000"]);
    let address = &served.address;
    let photo = std::fs::read(test_photo("Lemon")).unwrap();

    let answer = post(address, "/v1/identify", "", b"");
    assert_refused(&answer, 400, "not_an_image", "empty");
    let answer = post(
        address,
        "/v1/identify",
        "Content-Type: image/jpeg\r\n",
        b"hello",
    );
    assert_refused(&answer, 400, "not_an_image", "not an image");
    let answer = post(
        address,
        "/v1/identify",
        "Content-Type: image/jpeg\r\n",
        &photo[..photo.len() / 2],
    );
    assert_refused(&answer, 400, "unusable", "truncated");
    let (content_type, body) = form("picture", "lemon.jpg", &photo);
    let answer = post(address, "/v1/identify", &content_type, &body);
    assert_refused(&answer, 400, "bad_request", "no field 'photo'");
    let answer = post(
        address,
        "/v1/identify",
        "Content-Type: multipart/form-data\r\n",
        &photo,
    );
    assert_refused(&answer, 400, "bad_request", "form cannot be read");

    let answer = post(
        address,
        "/v1/identify",
        "Content-Type: text/plain\r\n",
        &photo,
    );
    assert_refused(
        &answer,
        415,
        "unsupported_type",
        "text/plain is not a photo",
    );
    let answer = post(
        address,
        "/v1/identify",
        "Content-Type: image/gif\r\n",
        &photo,
    );
    assert_refused(&answer, 415, "unsupported_type", "send a JPEG or PNG");
    let gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";
    let answer = post(address, "/v1/identify", "", gif);
    assert_refused(
        &answer,
        415,
        "unsupported_type",
        "GIF photos are not supported",
    );

    let large = vec![0xffu8; 30_000];
    let answer = post(
        address,
        "/v1/identify",
        "Content-Type: image/jpeg\r\n",
        &large,
    );
    assert_refused(&answer, 413, "too_large", "20000-byte limit (--max-upload)");
    // Without a Content-Length the limit holds while the body streams in.
    let mut chunked = format!(
        "POST /v1/identify HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
         Content-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..3 {
        chunked.extend_from_slice(format!("{:x}\r\n", 10_000).as_bytes());
        chunked.extend_from_slice(&[0xffu8; 10_000]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_refused(
        &exchange(address, &chunked),
        413,
        "too_large",
        "--max-upload",
    );

    let answer = post(address, "/v1/identify?top=many", "", &photo);
    assert_refused(&answer, 400, "bad_request", "?top=N takes a number");
    assert_refused(
        &get(address, "/no/such/page"),
        404,
        "not_found",
        "no such page",
    );
    let answer = get(address, "/v1/identify");
    assert_eq!(answer.status, 405, "GET is not how a photo is sent");

    // Each refusal is counted by kind, each answer by route and status.
    let metrics = get(address, "/metrics").text();
    for line in [
        "fruitpipe_identify_errors_total{kind=\"not_an_image\"} 2",
        "fruitpipe_identify_errors_total{kind=\"unsupported_type\"} 3",
        "fruitpipe_identify_errors_total{kind=\"too_large\"} 2",
        "fruitpipe_identify_errors_total{kind=\"unusable\"} 1",
        "fruitpipe_identify_errors_total{kind=\"bad_request\"} 3",
        "fruitpipe_http_requests_total{route=\"/v1/identify\",code=\"413\"} 2",
        "fruitpipe_index_photos 24",
        "fruitpipe_ready 1",
    ] {
        assert!(metrics.contains(line), "no {line:?} in\n{metrics}");
    }
    assert!(
        metrics.contains(
            "fruitpipe_http_request_duration_seconds_bucket{le=\"+Inf\",route=\"/v1/identify\"} 12"
        ),
        "{metrics}"
    );
}

#[test]
fn thumbnails_are_served_for_photos_of_the_index_and_nothing_else() {
    let served = serve(&[]);
    let address = &served.address;
    let photo = std::fs::read(test_photo("Kiwi")).unwrap();
    let answer = post(address, "/v1/identify", "", &photo).json();
    let nearest = answer["neighbours"][0]["path"]
        .as_str()
        .unwrap()
        .to_string();

    let thumbnail = get(
        address,
        &format!("/v1/photo?path={}", encode_query(&nearest)),
    );
    assert_eq!(thumbnail.status, 200, "{}", thumbnail.text());
    assert_eq!(thumbnail.header("content-type"), Some("image/jpeg"));
    let image = image::load_from_memory(&thumbnail.body).unwrap();
    assert_eq!((image.width(), image.height()), (160, 160));

    let output = pipeline_output().to_string_lossy().into_owned();
    let test_photo = test_photo("Kiwi").to_string_lossy().into_owned();
    let in_index = Path::new(&nearest);
    let sideways = format!(
        "{}/../{}/{}",
        in_index.parent().unwrap().display(),
        in_index
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy(),
        in_index.file_name().unwrap().to_string_lossy()
    );
    for refused in [
        "../../../../etc/passwd".to_string(),
        "/etc/passwd".to_string(),
        format!("{output}/pca_model.json"),
        format!("{output}/../out/features_pca.csv"),
        // The same file as an index photo, by another path.
        sideways,
        format!("./{nearest}"),
        // A real photo, next to the others, that the index does not hold.
        test_photo,
        "s3://another-bucket/photo.jpg".to_string(),
        "file:///etc/passwd".to_string(),
        String::new(),
    ] {
        let answer = get(
            address,
            &format!("/v1/photo?path={}", encode_query(&refused)),
        );
        assert_refused(&answer, 404, "not_in_index", "no photo of the index");
    }
    // Unencoded traversal in the query string is the same refusal.
    let answer = get(address, "/v1/photo?path=../../etc/passwd");
    assert_refused(&answer, 404, "not_in_index", "no photo of the index");
    let answer = get(address, "/v1/photo");
    assert_refused(&answer, 400, "bad_request", "?path=");
}

#[test]
fn concurrent_requests_are_all_answered() {
    let served = serve(&[]);
    let address = served.address.clone();
    let workers: Vec<_> = CLASSES
        .iter()
        .chain(CLASSES.iter())
        .map(|class| {
            let address = address.clone();
            let photo = std::fs::read(test_photo(class)).unwrap();
            std::thread::spawn(move || {
                let answer = post(
                    &address,
                    "/v1/identify",
                    "Content-Type: image/jpeg\r\n",
                    &photo,
                );
                assert_eq!(answer.status, 200, "{}", answer.text());
                answer.json()["label"].as_str().unwrap().to_string()
            })
        })
        .collect();
    let labels: Vec<String> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let expected: Vec<&str> = CLASSES.iter().chain(CLASSES.iter()).copied().collect();
    assert_eq!(labels, expected);
    let metrics = get(&address, "/metrics").text();
    assert!(
        metrics.contains("fruitpipe_http_requests_total{route=\"/v1/identify\",code=\"200\"} 12"),
        "{metrics}"
    );
    assert!(
        metrics.contains("fruitpipe_identify_in_flight 0"),
        "{metrics}"
    );
}

#[test]
fn a_server_over_its_time_budget_answers_503_and_stays_up() {
    // One identification at a time and a microsecond each: every photo runs out of time,
    // waiting for the model or in it (no model answers within a microsecond).
    let served = serve(&["--max-in-flight", "1", "--timeout", "0.000001"]);
    let address = served.address.clone();
    let photo = std::fs::read(test_photo("Avocado")).unwrap();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (address, photo) = (address.clone(), photo.clone());
            std::thread::spawn(move || post(&address, "/v1/identify", "", &photo))
        })
        .collect();
    for worker in workers {
        let answer = worker.join().unwrap();
        assert_eq!(answer.status, 503, "{}", answer.text());
        assert_eq!(answer.header("retry-after"), Some("5"));
        let body = answer.json();
        assert!(
            body["kind"] == "timeout" || body["kind"] == "busy",
            "{body}"
        );
        assert!(
            body["error"].as_str().unwrap().contains("try again"),
            "{body}"
        );
    }
    assert_eq!(get(&address, "/healthz").status, 200);
    assert_eq!(get(&address, "/readyz").status, 200);
}

#[test]
fn while_loading_it_is_alive_but_not_ready_and_a_failed_load_ends_it() {
    // An S3 endpoint that never answers: loading takes as long as it lives.
    let silent = SilentEndpoint::start();
    let mut command = fruitpipe_for(&silent.endpoint);
    command.args(["serve", "--from", "s3://fruits/out", "--s3-timeout", "30"]);
    let served = Served::start(command);
    let address = &served.address;
    assert_eq!(get(address, "/healthz").status, 200);
    let ready = get(address, "/readyz");
    assert_refused(&ready, 503, "loading", "still loading");
    assert_eq!(ready.header("retry-after"), Some("5"));
    let photo = std::fs::read(test_photo("Banana")).unwrap();
    assert_refused(
        &post(address, "/v1/identify", "", &photo),
        503,
        "loading",
        "try again in a few seconds",
    );
    assert_refused(
        &get(address, "/v1/photo?path=x.jpg"),
        503,
        "loading",
        "still loading",
    );
    assert!(
        get(address, "/metrics")
            .text()
            .contains("fruitpipe_ready 0")
    );
    let page = get(address, "/");
    assert_eq!(page.status, 200, "the page is there while the index loads");
    drop(served);

    let mut command = fruitpipe();
    command.args(["serve", "--from", "/nonexistent/output"]);
    let mut served = Served::start(command);
    assert_eq!(served.wait_exit(Duration::from_secs(30)), Some(2));
    assert!(
        served
            .log()
            .contains("no pca_model.json at /nonexistent/output"),
        "{}",
        served.log()
    );
}

#[test]
fn the_page_is_one_self_contained_file() {
    let served = serve(&[]);
    let page = get(&served.address, "/");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let policy = page.header("content-security-policy").unwrap();
    assert!(policy.contains("default-src 'none'"), "{policy}");
    let html = page.text();
    assert!(html.contains(r#"accept="image/*" capture="environment""#));
    assert!(html.contains(r#"id="choose" type="file" accept="image/*""#));
    for external in ["http://", "https://", "//cdn", "<link"] {
        assert!(!html.contains(external), "the page loads {external}");
    }
}
