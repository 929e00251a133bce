// The sizes that fit compile (and run): valid and same padding, stride 2, pooling and flattening.
// Being a `pass` case also makes trybuild build rather than only check, which the shape checks need: they
// are constants evaluated when the constructors are instantiated.
use gradscope_core::{Act, AvgPool2d, Conv1d, Conv2d, Flatten, GlobalAvgPool, MaxPool2d};

fn main() {
    let _valid = Conv2d::<f32, 1, 8, 8, 4, 3, 6, 6>::new(Act::Relu);
    let _same = Conv2d::<f32, 1, 8, 8, 4, 3, 8, 8, 1, 1>::new(Act::Relu);
    let _strided = Conv2d::<f32, 1, 8, 8, 4, 3, 4, 4, 2, 1>::new(Act::Relu);
    let _seq = Conv1d::<f32, 2, 9, 3, 3, 5, 2, 1>::new(Act::Tanh);
    let _max = MaxPool2d::<f32, 4, 7, 8, 2, 3, 4>::new();
    let _avg = AvgPool2d::<f32, 4, 8, 8, 2, 4, 4>::new();
    let _gap = GlobalAvgPool::<f32, 4, 8, 8>::new();
    let _flat = Flatten::<[[[f32; 4]; 4]; 4], 64>::new();
}
