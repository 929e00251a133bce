// Composing a 4 -> 8 layer with a 9 -> 2 layer must not compile: the second layer's input is not the first's output.
use gradscope_core::{Act, Dense, Layer, NearestEven};

fn main() {
    let mut net: (Dense<f32, 4, 8>, Dense<f32, 9, 2>) = (Dense::new(Act::Relu), Dense::new(Act::Identity));
    let _ = net.forward(&[0.0; 4], 0, &mut NearestEven, &mut ());
}
