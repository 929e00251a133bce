//! Gradient flow restored by architecture: the same deep tanh stack plain, with residual connections
//! (He et al. 2016), and with batch normalization (Ioffe & Szegedy 2015).
//!
//! `depth` blocks of width 32 with tanh, weights from one initializer, zero biases, one batch of 16 inputs
//! U(−0.9, 0.9) and MSE targets U(0, 0.9). Blocks: plain `tanh(W x)`; residual `x + tanh(W x)`; batch-norm
//! `tanh(BN(W x))` with batch statistics. The measurement is each block's parameter-gradient norm (for batch
//! norm, γ and β included) of the batch-mean loss. Float only: batch norm is float-only in the core.

use anyhow::{Result, anyhow, bail};
use gradscope_core::train::backprop;
use gradscope_core::{
    Act, ActLayer, Activate, BatchNorm, Batched, Dense, Float, GradStats, Init, Layer, Loss,
    NearestEven, Objective, Residual, Stack, init_slice,
};
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro128PlusPlus;
use serde::Serialize;

const W: usize = 32;
const B: usize = 16;
/// Deepest stack compiled in.
pub const MAX_DEPTH: usize = 64;
/// Architectures.
pub const ARCHS: [&str; 3] = ["plain", "residual", "batchnorm"];

/// One architecture's result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FlowResult {
    /// `plain`, `residual` or `batchnorm`.
    pub arch: String,
    /// Initializer name.
    pub init: String,
    /// Blocks.
    pub depth: usize,
    /// Parameter-gradient norm per block, from the input.
    pub grad_norms: Vec<f64>,
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{e}")
}

type Batch<S> = [[S; W]; B];

fn batch_data<S: Float>(rng: &mut Xoshiro128PlusPlus) -> Result<(Batch<S>, Batch<S>)> {
    let (mut x, mut t) = ([[S::ZERO; W]; B], [[S::ZERO; W]; B]);
    init_slice(
        x.as_flattened_mut(),
        &Init::Uniform { a: -0.9, b: 0.9 },
        1,
        1,
        rng,
        &mut NearestEven,
        &mut (),
    )
    .map_err(err)?;
    init_slice(
        t.as_flattened_mut(),
        &Init::Uniform { a: 0.0, b: 0.9 },
        1,
        1,
        rng,
        &mut NearestEven,
        &mut (),
    )
    .map_err(err)?;
    Ok((x, t))
}

fn dense<S: Float>(init: &Init, act: Act, rng: &mut Xoshiro128PlusPlus) -> Result<Dense<S, W, W>>
where
    Act: Activate<S>,
{
    let mut d = Dense::new(act);
    d.init(init, &Init::Zeros, rng, &mut NearestEven, &mut ())
        .map_err(err)?;
    Ok(d)
}

/// Run one architecture.
pub fn run(arch: &str, init_name: &str, depth: usize, seed: u64) -> Result<FlowResult> {
    if !(1..=MAX_DEPTH).contains(&depth) {
        bail!("depth {depth} is not supported: choose 1 to {MAX_DEPTH}");
    }
    let init = Init::from_name(init_name).map_err(err)?;
    crate::par::one(|| typed::<f32>(arch, &init, init_name, depth, seed))
}

/// The blocks' gradient norms after one backward pass of the batch-mean MSE through a stack of `depth`
/// blocks made from `layers` by `block`.
fn stack_norms<S: Float, L>(
    layers: Vec<Dense<S, W, W>>,
    depth: usize,
    samples: &[([S; W], [S; W])],
    block: impl Fn(Dense<S, W, W>) -> L,
) -> Vec<f64>
where
    L: Layer<S, Input = [S; W], Output = [S; W]>,
{
    let mut it = layers.into_iter().map(&block);
    let mut net: Box<Stack<L, MAX_DEPTH>> = Box::new(Stack::from_fn(depth, |_| {
        it.next().unwrap_or_else(|| block(Dense::new(Act::Tanh)))
    }));
    let mse = Objective::new(Loss::Mse);
    backprop(&mut *net, samples, &mse, 1.0, &mut NearestEven, &mut ());
    net.active_mut()
        .iter_mut()
        .map(|l| GradStats::of::<S, _>(l).norm)
        .collect()
}

fn typed<S: Float>(
    arch: &str,
    init: &Init,
    init_name: &str,
    depth: usize,
    seed: u64,
) -> Result<FlowResult>
where
    Act: Activate<S>,
{
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(seed);
    let mut layers = Vec::with_capacity(depth);
    for _ in 0..depth {
        layers.push(dense::<S>(
            init,
            if arch == "batchnorm" {
                Act::Identity
            } else {
                Act::Tanh
            },
            &mut rng,
        )?);
    }
    let (x, t) = batch_data::<S>(&mut rng)?;
    let samples: Vec<([S; W], [S; W])> = x.iter().copied().zip(t.iter().copied()).collect();
    let grad_norms = match arch {
        "plain" => stack_norms::<S, _>(layers, depth, &samples, |d| d),
        "residual" => stack_norms::<S, _>(layers, depth, &samples, Residual),
        "batchnorm" => {
            type Block<S> = (
                (Batched<S, Dense<S, W, W>, B>, BatchNorm<S, W, B>),
                Batched<S, ActLayer<[S; W]>, B>,
            );
            let mut it = layers.into_iter();
            let mut net: Box<Stack<Block<S>, MAX_DEPTH>> = Box::new(Stack::from_fn(depth, |_| {
                (
                    (
                        Batched::new(it.next().unwrap_or_else(|| Dense::new(Act::Identity))),
                        BatchNorm::new(),
                    ),
                    Batched::new(ActLayer::new(Act::Tanh)),
                )
            }));
            let y = net.forward(&x, 0, &mut NearestEven, &mut ());
            let mut dy = [[S::ZERO; W]; B];
            for ((yi, ti), di) in y.iter().zip(&t).zip(dy.iter_mut()) {
                Objective::new(Loss::Mse).grad(
                    yi,
                    ti,
                    1.0 / B as f64,
                    di,
                    &mut NearestEven,
                    &mut (),
                );
            }
            net.backward(&dy, 0, &mut NearestEven, &mut ());
            net.active_mut()
                .iter_mut()
                .map(|l| GradStats::of::<S, _>(l).norm)
                .collect()
        }
        a => bail!(
            "unknown architecture '{a}': choose one of {}",
            ARCHS.join(", ")
        ),
    };
    Ok(FlowResult {
        arch: arch.into(),
        init: init_name.into(),
        depth,
        grad_norms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn residual_and_batchnorm_keep_the_first_blocks_gradient() {
        let [plain, res, bn] = ARCHS.map(|a| run(a, "standard", 20, 1).unwrap());
        let ratio = |r: &FlowResult| r.grad_norms[0] / r.grad_norms[19];
        assert!(ratio(&plain) < 1e-3, "{}", ratio(&plain));
        assert!(ratio(&res) > 0.1, "{}", ratio(&res));
        assert!(ratio(&bn) > 0.1, "{}", ratio(&bn));
    }
}
