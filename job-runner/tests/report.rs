//! `scree.png`, `pc_scatter.png` and `report.html` of a real run: valid PNGs of the stated
//! size, and a page that holds them inline, lists the skipped photos and fetches nothing.
//! (tests/browser.rs shows the page renders in Chromium.)

mod support;

use std::path::Path;

use base64::Engine as _;
use fruitpipe_runner::plots::{SCATTER_SIZE, SCREE_SIZE};
use support::{copy_sample, run, stderr};

const CLASSES: [&str; 5] = ["Banana", "Lemon", "Kiwi", "Cocos", "Avocado"];

fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        path.display()
    );
    let image = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
        .unwrap_or_else(|err| panic!("{} does not decode: {err}", path.display()));
    (image.width(), image.height())
}

/// The base64 payloads of the page's `data:image/png` URLs, decoded.
fn inline_pngs(page: &str) -> Vec<Vec<u8>> {
    let marker = "data:image/png;base64,";
    page.match_indices(marker)
        .map(|(at, _)| {
            let start = at + marker.len();
            let end = start + page[start..].find('"').expect("the URL is quoted");
            base64::engine::general_purpose::STANDARD
                .decode(&page[start..end])
                .expect("valid base64")
        })
        .collect()
}

fn files_under(folder: &Path) -> usize {
    std::fs::read_dir(folder)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .map(|path| if path.is_dir() { files_under(&path) } else { 1 })
        .sum()
}

#[test]
fn a_run_writes_both_figures_and_a_self_contained_report() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    copy_sample(&input, &CLASSES, 4);
    // Two photos that cannot be used, one with markup in its name.
    std::fs::write(input.join("Training/Kiwi/broken.jpg"), b"not a jpeg at all").unwrap();
    std::fs::write(input.join("Training/Lemon/<i>x&y.jpg"), b"").unwrap();
    let output = dir.path().join("out");
    let result =
        run(support::pipeline(&input, &output).args(["--variance", "0.9", "--shard-size", "9"]));
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));

    assert_eq!(png_size(&output.join("scree.png")), SCREE_SIZE);
    assert_eq!(png_size(&output.join("pc_scatter.png")), SCATTER_SIZE);

    let page = std::fs::read_to_string(output.join("report.html")).unwrap();
    let figures = inline_pngs(&page);
    assert_eq!(
        figures,
        [
            std::fs::read(output.join("scree.png")).unwrap(),
            std::fs::read(output.join("pc_scatter.png")).unwrap()
        ],
        "the page holds both figures, inline"
    );
    for external in ["<script", "src=\"http", "href=", "@import", "url(", "<link"] {
        assert!(
            !page.contains(external),
            "the page refers to something outside: {external}"
        );
    }

    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(output.join("summary.json")).unwrap()).unwrap();
    let used = summary["images_used"].as_u64().unwrap();
    let photos = files_under(&input) as u64;
    assert_eq!(used, photos - 2);
    assert!(page.contains(&format!("first two components of {used} photos")));
    let k = summary["k"].as_u64().unwrap();
    assert!(page.contains(&format!(
        "<th>Components kept (k)</th><td>{k} (the fewest reaching 90.00% of the variance)"
    )));
    assert!(page.contains("<h2>Skipped photos (2)</h2>"));
    assert!(page.contains("Training/Kiwi/broken.jpg"));
    assert!(
        page.contains("&lt;i&gt;x&amp;y.jpg"),
        "markup in a path is text"
    );
    assert!(!page.contains("<i>x"));
    assert!(page.contains("empty file"), "the reason from errors.csv");
    assert!(
        page.contains("efficientnet_lite0_features.onnx"),
        "the model is named"
    );
    for phase in ["plan", "extract", "fit", "project", "assemble"] {
        assert!(
            page.contains(&format!("<tr><td>{phase}")),
            "time of {phase}"
        );
    }

    let outputs = &summary["outputs"];
    for (field, file) in [
        ("report", "report.html"),
        ("scree", "scree.png"),
        ("scatter", "pc_scatter.png"),
    ] {
        assert_eq!(
            outputs[field].as_str(),
            Some(output.join(file).to_str().unwrap()),
            "summary.json outputs.{field}"
        );
    }
}
