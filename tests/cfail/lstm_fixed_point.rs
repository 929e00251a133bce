// LSTM and GRU are float-only by design: a fixed-point LSTM must not compile, and the error names `Float`.
use gradscope_core::{I16F16, Layer, Lstm, NearestEven};

fn main() {
    let mut lstm: Lstm<I16F16, 1, 4, 8> = Lstm::new();
    let _ = lstm.forward(&[[I16F16::ZERO; 1]; 8], 0, &mut NearestEven, &mut ());
}
