//! The core README's activation accuracy table is the one `gradscope activations --markdown` prints. (The
//! derivative and LSB-bound checks of the activations live in the suite, `tests/activation.rs`.)

#[test]
fn core_readme_accuracy_table_is_current() {
    let readme = include_str!("../../gradscope-core/README.md");
    let table = gradscope_lab::accuracy::markdown_table();
    assert!(
        readme.contains(&table),
        "crates/gradscope-core/README.md is stale; regenerate its table with \
         `cargo run --release -- activations --markdown` and paste it:\n{table}"
    );
}
