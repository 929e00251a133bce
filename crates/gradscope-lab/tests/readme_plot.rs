//! The plot in the top-level README is the report's, byte for byte: `docs/vanishing.svg` is regenerated
//! here and compared. After a deliberate change, refresh it with
//! `cargo run --release -- report && cp report/vanishing.svg docs/`.

use gradscope_lab::report::{Effort, section};

#[test]
fn the_readme_plot_is_what_the_report_draws() {
    let s = section("vanishing", Effort::FULL).expect("the vanishing section runs");
    let plot = s
        .plots
        .iter()
        .find(|p| p.name == "vanishing")
        .expect("its plot");
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/vanishing.svg"
    ))
    .expect("docs/vanishing.svg");
    assert!(
        plot.svg() == committed,
        "docs/vanishing.svg is stale: regenerate it (see this file's header)"
    );
}
