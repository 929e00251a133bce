// Flattening 4 channels of 4x4 gives 64 values: declaring 60 must not compile.
use gradscope_core::Flatten;

fn main() {
    let _flat = Flatten::<[[[f32; 4]; 4]; 4], 60>::new();
}
