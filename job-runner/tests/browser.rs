//! Pages in a real browser: headless Chromium driven over WebDriver (chromedriver).
//! On the page of `fruitpipe serve` it uploads shipped Test photos as a person would, and
//! the result card must name the fruit and show five thumbnails that loaded; a run's
//! `report.html`, opened from its folder, must show both figures and fetch nothing.
//!
//! Needs Debian's `chromium` and `chromium-driver` (scripts/setup.sh installs them; CHROMIUM
//! and CHROMEDRIVER name other binaries). Without them the test fails in CI (CI is set) and
//! says it did not run elsewhere.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use support::serve::{Served, training_index};

const CLASSES: [&str; 6] = ["Banana", "Lemon", "Kiwi", "Cocos", "Avocado", "Limes"];

fn browser_binaries() -> Option<(PathBuf, PathBuf)> {
    let chromium = PathBuf::from(std::env::var("CHROMIUM").unwrap_or("/usr/bin/chromium".into()));
    let driver =
        PathBuf::from(std::env::var("CHROMEDRIVER").unwrap_or("/usr/bin/chromedriver".into()));
    (chromium.exists() && driver.exists()).then_some((chromium, driver))
}

/// chromedriver on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start(binary: &Path) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        // Made at once, so that a panic below still kills the child.
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return driver;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("chromedriver did not listen on port {port} within 10 s");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn open_browser(driver: &Driver, chromium: &Path) -> Client {
    let options = json!({
        "binary": chromium,
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=900,1000", "--hide-scrollbars"],
    });
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("goog:chromeOptions".into(), options);
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("open a Chromium session over WebDriver")
}

fn first_test_photo(index: &Path, class: &str) -> PathBuf {
    let mut photos: Vec<PathBuf> = std::fs::read_dir(index.join("../in/Test").join(class))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    photos.sort();
    std::fs::canonicalize(&photos[0]).unwrap()
}

/// Chooses `photo` in the page's file input and waits for the result card.
async fn upload(browser: &Client, photo: &Path) -> (String, String) {
    let input = browser.find(Locator::Id("choose")).await.unwrap();
    input.send_keys(photo.to_str().unwrap()).await.unwrap();
    let card = browser
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css("#result:not([hidden])"))
        .await
        .unwrap_or_else(|err| panic!("no result card for {}: {err}", photo.display()));
    (
        text_of(&card, "fruit-name").await,
        text_of(&card, "label").await,
    )
}

async fn text_of(card: &fantoccini::elements::Element, id: &str) -> String {
    card.find(Locator::Id(id))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Waits until the card's thumbnails have all loaded; returns their pixel widths.
async fn loaded_thumbnails(browser: &Client) -> Vec<u64> {
    let script = "return Array.from(document.querySelectorAll('#neighbours img'))
                    .map(img => img.complete ? img.naturalWidth : -1);";
    for _ in 0..100 {
        let widths: Vec<i64> =
            serde_json::from_value(browser.execute(script, vec![]).await.unwrap()).unwrap();
        if widths.iter().all(|width| *width >= 0) {
            return widths.into_iter().map(|width| width as u64).collect();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the thumbnails did not load within 10 s");
}

/// Chromium and chromedriver, or `None` (after saying so) where they are not installed.
/// In CI their absence is a failure.
fn browser_or_skip() -> Option<(PathBuf, PathBuf)> {
    let found = browser_binaries();
    if found.is_none() {
        let message = "headless Chromium is needed for the page tests: run scripts/setup.sh \
                       (it installs Debian's chromium and chromium-driver) or set CHROMIUM and \
                       CHROMEDRIVER";
        if std::env::var_os("CI").is_some() {
            panic!("{message}");
        }
        eprintln!("NOT RUN: {message}");
    }
    found
}

/// Writes a screenshot where FRUITPIPE_SCREENSHOTS says (the README's come from there),
/// else into cargo's scratch folder.
fn save_screenshot(name: &str, png: &[u8]) {
    let folder = std::env::var_os("FRUITPIPE_SCREENSHOTS")
        .map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from);
    std::fs::create_dir_all(&folder).unwrap();
    let saved = folder.join(name);
    std::fs::write(&saved, png).unwrap();
    eprintln!("screenshot: {}", saved.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_names_the_fruit_of_an_uploaded_photo_with_five_thumbnails() {
    let Some((chromium, driver_binary)) = browser_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let index = training_index(dir.path(), &CLASSES);
    let mut command = support::fruitpipe();
    command
        .args(["serve", "--threads", "1", "--from"])
        .arg(&index);
    let served = Served::start(command);
    served.wait_ready();

    let driver = Driver::start(&driver_binary);
    let browser = open_browser(&driver, &chromium).await;
    browser.goto(&served.url("/")).await.unwrap();
    assert_eq!(
        browser.title().await.unwrap(),
        "fruitpipe: which fruit is it?"
    );

    // A coconut, then a kiwi: the card is redrawn for each photo.
    for (class, common) in [("Cocos", "Coconut"), ("Kiwi", "Kiwifruit")] {
        let photo = first_test_photo(&index, class);
        let (name, label) = upload(&browser, &photo).await;
        assert_eq!(name, common, "{}", photo.display());
        assert_eq!(label, format!("Variety: {class}"));
        let widths = loaded_thumbnails(&browser).await;
        assert_eq!(widths, [160; 5], "five thumbnails, all loaded");
        let about = browser.find(Locator::Id("about")).await.unwrap();
        assert!(!about.text().await.unwrap().is_empty());
        let preview = browser.find(Locator::Id("preview")).await.unwrap();
        assert!(preview.is_displayed().await.unwrap());
        let error = browser.find(Locator::Id("error")).await.unwrap();
        assert!(!error.is_displayed().await.unwrap());
    }

    let screenshot = browser.screenshot().await.unwrap();
    let image = image::load_from_memory(&screenshot).expect("the screenshot is a PNG");
    assert!(
        image.width() >= 800 && image.height() >= 600,
        "{}x{}",
        image.width(),
        image.height()
    );
    save_screenshot("serve-page.png", &screenshot);
    browser.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_report_shows_both_figures_and_fetches_nothing() {
    let Some((chromium, driver_binary)) = browser_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    support::copy_sample(&input, &CLASSES, 4);
    std::fs::write(input.join("Training/Kiwi/broken.jpg"), b"not a jpeg").unwrap();
    let output = dir.path().join("out");
    let result = support::run(support::pipeline(&input, &output).args(["--shard-size", "10"]));
    assert_eq!(
        result.status.code(),
        Some(0),
        "{}",
        support::stderr(&result)
    );

    let driver = Driver::start(&driver_binary);
    let browser = open_browser(&driver, &chromium).await;
    browser.set_window_size(1100, 1500).await.unwrap();
    let page = std::fs::canonicalize(output.join("report.html")).unwrap();
    browser
        .goto(&format!("file://{}", page.display()))
        .await
        .unwrap();
    assert_eq!(browser.title().await.unwrap(), "fruitpipe report");
    let script = "return Array.from(document.querySelectorAll('figure img'))
                    .map(img => [img.complete, img.naturalWidth, img.naturalHeight,
                                 img.getBoundingClientRect().width]);";
    let figures: Vec<(bool, u64, u64, f64)> =
        serde_json::from_value(browser.execute(script, vec![]).await.unwrap()).unwrap();
    assert_eq!(figures.len(), 2, "{figures:?}");
    let sizes: Vec<(u64, u64)> = figures.iter().map(|f| (f.1, f.2)).collect();
    let expected = [
        fruitpipe_runner::plots::SCREE_SIZE,
        fruitpipe_runner::plots::SCATTER_SIZE,
    ];
    assert_eq!(
        sizes,
        expected.map(|(w, h)| (w as u64, h as u64)),
        "both figures decoded"
    );
    for figure in &figures {
        assert!(
            figure.0 && figure.3 > 600.0,
            "a figure is not shown: {figure:?}"
        );
    }
    // Nothing was fetched: the page and its figures are one file.
    let fetched: Vec<String> = serde_json::from_value(
        browser
            .execute(
                "return performance.getEntriesByType('resource').map(e => e.name);",
                vec![],
            )
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(fetched.is_empty(), "the report fetched {fetched:?}");
    let skipped = browser
        .find(Locator::Css("#skipped table"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(skipped.contains("broken.jpg"), "{skipped}");

    // The whole page in one picture (the README shows it).
    let height = browser
        .execute("return document.documentElement.scrollHeight;", vec![])
        .await
        .unwrap()
        .as_u64()
        .unwrap();
    browser
        .set_window_size(1100, height.clamp(800, 4000) as u32 + 120)
        .await
        .unwrap();
    let screenshot = browser.screenshot().await.unwrap();
    let image = image::load_from_memory(&screenshot).expect("the screenshot is a PNG");
    assert!(
        image.width() >= 1000,
        "{}x{}",
        image.width(),
        image.height()
    );
    save_screenshot("report.png", &screenshot);
    browser.close().await.unwrap();
}
