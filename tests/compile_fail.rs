//! Shapes are checked at compile time: composing layers whose sizes do not chain is a compile error.

#[test]
fn layer_size_mismatch_is_a_compile_error() {
    trybuild::TestCases::new().compile_fail("tests/cfail/*.rs");
}
