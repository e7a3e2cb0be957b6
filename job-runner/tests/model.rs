//! Decoding and preprocessing are right end to end: the shipped ImageNet classifier, fed
//! through the runner's own decode and preprocessing, names real Fruits-360 photos.

mod support;

use fruitpipe_runner::imaging::Preset;
use fruitpipe_runner::model::Model;

fn classes() -> Vec<String> {
    let text =
        std::fs::read_to_string(support::repo_root().join("data/models/imagenet_classes.txt"))
            .unwrap();
    text.lines().map(str::to_string).collect()
}

fn top_class(model: &mut Model, photo: &std::path::Path) -> usize {
    let bytes = std::fs::read(photo).unwrap();
    let tensor = model
        .info
        .preprocessing
        .tensor_from_bytes(&bytes, fruitpipe_runner::imaging::DEFAULT_MAX_PIXELS)
        .expect("a real photo decodes");
    let logits = model.features(&tensor, 1).unwrap();
    assert_eq!(logits.len(), 1000);
    (0..logits.len())
        .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
        .unwrap()
}

#[test]
fn the_classifier_recognises_fruit_through_our_preprocessing() {
    let bytes = std::fs::read(support::logits_model()).unwrap();
    let mut model = Model::load(&bytes, "logits.onnx", Preset::Lite, Some(224), 2).unwrap();
    assert_eq!(model.info.dim, 1000);
    let names = classes();
    let mut correct = 0;
    let mut tried = 0;
    for (folder, expected) in [
        ("Banana", "banana"),
        ("Lemon", "lemon"),
        ("Pineapple", "pineapple"),
        ("Pomegranate", "pomegranate"),
        ("Strawberry", "strawberry"),
    ] {
        let dir = support::sample_photos().join("Training").join(folder);
        let mut photos: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        photos.sort();
        for photo in photos {
            tried += 1;
            let predicted = &names[top_class(&mut model, &photo)];
            eprintln!("{} -> {predicted}", photo.display());
            if predicted == expected {
                correct += 1;
            }
        }
    }
    // Wrong channel order, scaling or layout drops this to near zero.
    assert!(
        correct * 10 >= tried * 8,
        "only {correct} of {tried} fruit photos were named right"
    );
}

#[test]
fn a_wrong_preset_is_visible_in_the_predictions() {
    // Guards the test above against passing by accident: the same photo, preprocessed as
    // Caffe (BGR, unscaled), must not still look like a banana.
    let bytes = std::fs::read(support::logits_model()).unwrap();
    let mut model = Model::load(&bytes, "logits.onnx", Preset::Caffe, Some(224), 2).unwrap();
    let photo = support::sample_photos().join("Training/Banana");
    let first = std::fs::read_dir(&photo)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let names = classes();
    assert_ne!(names[top_class(&mut model, &first)], "banana");
}
