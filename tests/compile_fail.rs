//! Shapes are checked at compile time: composing layers whose sizes do not chain, a fixed-point LSTM, and a
//! convolution or flattening whose declared output size is wrong are compile errors (`tests/cfail`); the
//! sizes that fit compile (`tests/pass`).

#[test]
// A compile error does not depend on the profile, and trybuild builds its cases in the test's profile: once, in
// debug, is enough (CI runs both).
#[cfg_attr(
    not(debug_assertions),
    ignore = "profile-independent; runs in debug builds"
)]
fn layer_size_mismatch_is_a_compile_error() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/cfail/*.rs");
    // A pass case makes trybuild build the cases instead of only checking them: convolution and flattening
    // check their sizes in constants evaluated at monomorphization, which `cargo check` never reaches.
    t.pass("tests/pass/*.rs");
}
