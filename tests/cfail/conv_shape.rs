// A 3x3 convolution without padding maps 8x8 to 6x6: declaring an 8x8 output must not compile.
use gradscope_core::{Act, Conv2d};

fn main() {
    let _conv = Conv2d::<f32, 1, 8, 8, 4, 3, 8, 8>::new(Act::Relu);
}
