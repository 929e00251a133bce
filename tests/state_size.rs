//! The memory of a training state, read off the types: README quotes these numbers, and this test keeps it
//! honest.

use gradscope_core::{DenseStack, I16F16, param_count};

/// A 4-layer, 32-wide I16F16 dense stack: weights, biases, their gradients, and the forward caches.
type Net = DenseStack<I16F16, 32, 4>;

#[test]
fn readme_states_the_training_state_size() {
    let net = size_of::<Net>();
    let mut n = Box::new(Net::new(gradscope_core::Act::Tanh, 4));
    let params = param_count(&mut *n);
    let momentum = params * size_of::<I16F16>();
    let adam = 2 * momentum;
    let readme = include_str!("../README.md");
    let line = format!("| `DenseStack<I16F16, 32, 4>` | {net} | {params} | {momentum} | {adam} |");
    assert!(
        readme.contains(&line),
        "README.md must contain this row (from the types):\n{line}"
    );
    // Parameters are 4·(32·32 + 32); the network holds them twice (values and gradients) plus caches.
    assert_eq!(params, 4 * (32 * 32 + 32));
    assert!(net >= 2 * params * size_of::<I16F16>());
}
