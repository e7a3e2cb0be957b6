//! Prints the FruitPipeline CRD: `cargo run -p fruitpipe-operator --bin crdgen > crds/fruitpipeline.yaml`.

fn main() {
    print!("{}", fruitpipe_operator::crd_yaml());
}
