//! Shared by the benches: seeded data, initialized layers, and the training step written with nalgebra.
#![allow(dead_code)] // each bench uses part of it

use gradscope_core::{Act, Activate, Conv2d, Dense, Init, NearestEven, Scalar, init_slice};
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro128PlusPlus;

/// A seeded `O × I` matrix of values in (−0.5, 0.5).
pub fn fill<S: Scalar, const I: usize, const O: usize>(seed: u64) -> [[S; I]; O] {
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(seed);
    core::array::from_fn(|_| {
        core::array::from_fn(|_| {
            let u = rng.next_u32() as f64 / u32::MAX as f64;
            S::from_f64(u - 0.5, &mut NearestEven).0
        })
    })
}

/// Channels in and out of the benches' convolution.
pub const CONV_C: usize = 4;
/// The benches' convolution layer: 3×3 `same` over [`CONV_C`] channels of 8×8 into as many, identity
/// activation.
pub type Conv<S> = Conv2d<S, CONV_C, 8, 8, CONV_C, 3, 8, 8, 1, 1>;
/// [`CONV_C`] planes of 8×8.
pub type Planes<S> = [[[S; 8]; 8]; CONV_C];

/// [`Conv`] with seeded weights (zero bias), and a seeded input.
pub fn conv_setup<S: Scalar>() -> (Box<Conv<S>>, Planes<S>)
where
    Act: Activate<S>,
{
    let mut conv = Box::new(Conv::<S>::new(Act::Identity));
    let wrows: [[S; 9 * CONV_C]; CONV_C] = fill(5);
    for (f, row) in conv.weight.iter_mut().zip(&wrows) {
        for (v, &r) in f.as_flattened_mut().as_flattened_mut().iter_mut().zip(row) {
            *v = r;
        }
    }
    let xrows: [[S; 64]; CONV_C] = fill(6);
    let mut x = [[[S::ZERO; 8]; 8]; CONV_C];
    for (ch, row) in x.iter_mut().zip(&xrows) {
        for (v, &r) in ch.as_flattened_mut().iter_mut().zip(row) {
            *v = r;
        }
    }
    (conv, x)
}

/// Seeded inputs and targets in (−0.5, 0.5).
pub fn data<S: Scalar, const I: usize, const O: usize>(n: usize) -> Vec<([S; I], [S; O])> {
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(9);
    let u = Init::Uniform { a: -0.5, b: 0.5 };
    (0..n)
        .map(|_| {
            let (mut x, mut t) = ([S::ZERO; I], [S::ZERO; O]);
            init_slice(&mut x, &u, 1, 1, &mut rng, &mut NearestEven, &mut ()).expect("inputs");
            init_slice(&mut t, &u, 1, 1, &mut rng, &mut NearestEven, &mut ()).expect("targets");
            (x, t)
        })
        .collect()
}

pub fn dense<S: Scalar, const I: usize, const O: usize>(
    act: Act,
    rng: &mut Xoshiro128PlusPlus,
) -> Dense<S, I, O>
where
    Act: Activate<S>,
{
    let mut d = Dense::new(act);
    d.init(
        &Init::XavierNormal { gain: 1.0 },
        &Init::Zeros,
        rng,
        &mut NearestEven,
        &mut (),
    )
    .expect("init");
    d
}

/// The 4-8-8-1 tanh net of the training benches.
pub type TanhNet<S> = ((Dense<S, 4, 8>, Dense<S, 8, 8>), Dense<S, 8, 1>);

/// That net, Xavier-initialized from `rng` (boxed, as [`relu_net`]).
pub fn tanh_net<S: Scalar>(rng: &mut Xoshiro128PlusPlus) -> Box<TanhNet<S>>
where
    Act: Activate<S>,
{
    Box::new((
        (dense(Act::Tanh, rng), dense(Act::Tanh, rng)),
        dense(Act::Identity, rng),
    ))
}

/// The 16-32-32-16 ReLU net of the training benches.
pub type ReluNet<S> = ((Dense<S, 16, 32>, Dense<S, 32, 32>), Dense<S, 32, 16>);

/// That net, Xavier-initialized from a fixed seed (boxed: it is moved around by setup code).
pub fn relu_net<S: Scalar>(rng: &mut Xoshiro128PlusPlus) -> Box<ReluNet<S>>
where
    Act: Activate<S>,
{
    Box::new((
        (dense(Act::Relu, rng), dense(Act::Relu, rng)),
        dense(Act::Identity, rng),
    ))
}

/// The training step as a user would write it with nalgebra: `SMatrix` products for a whole batch (columns are
/// samples), MSE, plain SGD. No flags, no rounding control, no divergence checks.
pub mod na {
    use nalgebra::{SMatrix, SVector};
    use rand_core::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro128PlusPlus;

    #[derive(Copy, Clone)]
    pub enum Act {
        Identity,
        Tanh,
        Relu,
        Sigmoid,
    }

    impl Act {
        fn f(self, z: f32) -> f32 {
            match self {
                Act::Identity => z,
                Act::Tanh => libm::tanhf(z),
                Act::Relu => z.max(0.0),
                Act::Sigmoid => 1.0 / (1.0 + libm::expf(-z)),
            }
        }
        /// f′ from the output a = f(z).
        fn d(self, a: f32) -> f32 {
            match self {
                Act::Identity => 1.0,
                Act::Tanh => 1.0 - a * a,
                Act::Relu => (a > 0.0) as u8 as f32,
                Act::Sigmoid => a * (1.0 - a),
            }
        }
    }

    /// A dense layer for batches of `B`, caching its input and output.
    pub struct Dense<const I: usize, const O: usize, const B: usize> {
        w: SMatrix<f32, O, I>,
        b: SVector<f32, O>,
        gw: SMatrix<f32, O, I>,
        gb: SVector<f32, O>,
        x: SMatrix<f32, I, B>,
        a: SMatrix<f32, O, B>,
        act: Act,
    }

    impl<const I: usize, const O: usize, const B: usize> Dense<I, O, B> {
        pub fn new(act: Act, seed: u64) -> Box<Self> {
            let mut rng = Xoshiro128PlusPlus::seed_from_u64(seed);
            let bound = (6.0 / (I + O) as f32).sqrt();
            let mut u = move || (rng.next_u32() as f32 / u32::MAX as f32 * 2.0 - 1.0) * bound;
            Box::new(Dense {
                w: SMatrix::from_fn(|_, _| u()),
                b: SVector::zeros(),
                gw: SMatrix::zeros(),
                gb: SVector::zeros(),
                x: SMatrix::zeros(),
                a: SMatrix::zeros(),
                act,
            })
        }

        pub fn forward(&mut self, x: &SMatrix<f32, I, B>) -> SMatrix<f32, O, B> {
            self.x.copy_from(x);
            let mut z = self.w * x;
            for mut col in z.column_iter_mut() {
                col += &self.b;
            }
            let act = self.act;
            self.a = z.map(|v| act.f(v));
            self.a
        }

        pub fn backward(&mut self, da: &SMatrix<f32, O, B>) -> SMatrix<f32, I, B> {
            let act = self.act;
            let dz = da.zip_map(&self.a, |d, a| d * act.d(a));
            self.gw.gemm(1.0, &dz, &self.x.transpose(), 1.0);
            self.gb += dz.column_sum();
            self.w.tr_mul(&dz)
        }

        pub fn sgd(&mut self, lr: f32) {
            self.w -= self.gw * lr;
            self.b.axpy(-lr, &self.gb, 1.0);
            self.gw.fill(0.0);
            self.gb.fill(0.0);
        }
    }

    /// MSE over the batch: the loss and ∂L/∂y (mean over samples and outputs).
    pub fn mse<const O: usize, const B: usize>(
        y: &SMatrix<f32, O, B>,
        t: &SMatrix<f32, O, B>,
    ) -> (f32, SMatrix<f32, O, B>) {
        let d = y - t;
        let scale = 1.0 / (O * B) as f32;
        (d.norm_squared() * scale, d * (2.0 * scale))
    }
}
