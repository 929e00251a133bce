//! The gradscope demo on the target: a depth sweep that shows vanishing and exploding gradients in f32,
//! I16F16 and I1F15 (per-layer gradient norms and numeric events), the FPU's sticky exception flags on the M4F,
//! and the parity workloads (initializers and backpropagation), whose digests must equal the host's
//! (`gradscope firmware-digests`).
#![no_std]
#![no_main]

use cortex_m as _;
use gradscope_core::{
    Act, Activate, DenseStack, FanMode, GradStats, I1F15, I16F16, Init, Layer, LayerStats, Loss,
    NearestEven, Nonlinearity, Scalar, init_slice, loss_grad,
};
use gradscope_firmware::exit;
use rand_xoshiro::Xoshiro128PlusPlus;
use rand_xoshiro::rand_core::SeedableRng;

const W: usize = 8;
const D: usize = 8;

/// One depth experiment: 8 dense layers of width 8, batch of 4, MSE; logs every layer from the input.
// Own stack frame per instance: inlined together they would not fit the M0's 16 KiB.
#[inline(never)]
fn sweep<S: Scalar>(label: &str, act: Act, init: &Init, seed: u64) -> bool
where
    Act: Activate<S>,
{
    let mut net: DenseStack<S, W, D> = DenseStack::new(act, D);
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(seed);
    if net
        .init(init, &Init::Zeros, &mut rng, &mut NearestEven, &mut ())
        .is_err()
    {
        defmt::println!("sweep {=str} {=str}: initializer rejected", label, S::NAME);
        return false;
    }
    let mut stats = [LayerStats::default(); D];
    for _ in 0..4 {
        let (mut x, mut t) = ([S::ZERO; W], [S::ZERO; W]);
        let u = Init::Uniform { a: -0.9, b: 0.9 };
        let ok = init_slice(&mut x, &u, 1, 1, &mut rng, &mut NearestEven, &mut ()).is_ok()
            && init_slice(&mut t, &u, 1, 1, &mut rng, &mut NearestEven, &mut ()).is_ok();
        if !ok {
            return false;
        }
        let y = net.forward(&x, 0, &mut NearestEven, &mut stats);
        let mut dy = [S::ZERO; W];
        loss_grad(Loss::Mse, &y, &t, 4, &mut dy, &mut NearestEven, &mut ());
        net.backward(&dy, 0, &mut NearestEven, &mut stats);
    }
    for (k, (layer, st)) in net.active_mut().iter_mut().zip(&stats).enumerate() {
        let g = GradStats::of(layer);
        defmt::println!(
            "sweep {=str} {=str} layer {=usize} grad_norm {=f64} zero_grads {=u32}/{=u32} underflow {=u32} saturated {=u32} nonfinite {=u32}",
            label,
            S::NAME,
            k + 1,
            g.norm,
            g.zeros,
            g.count,
            st.backward.underflow + st.grad.underflow,
            st.forward.overflow + st.backward.overflow + st.grad.overflow,
            st.forward.nonfinite + st.backward.nonfinite + st.grad.nonfinite
        );
    }
    true
}

fn depth_sweep() -> bool {
    let he = Init::KaimingNormal {
        slope: 0.0,
        mode: FanMode::FanIn,
        nonlinearity: Nonlinearity::Relu,
    };
    let xavier = Init::XavierNormal { gain: 1.0 };
    // The last one explodes on purpose: saturation everywhere in fixed point; the demo reports it and goes on.
    let cases: [(&str, Act, Init); 5] = [
        ("sigmoid-xavier", Act::Sigmoid, xavier),
        ("sigmoid-he", Act::Sigmoid, he),
        ("relu-xavier", Act::Relu, xavier),
        ("relu-he", Act::Relu, he),
        (
            "relu-normal10",
            Act::Relu,
            Init::Normal {
                mean: 0.0,
                std: 10.0,
            },
        ),
    ];
    let mut ok = true;
    for (k, (label, act, init)) in cases.iter().enumerate() {
        ok &= sweep::<f32>(label, *act, init, k as u64);
        ok &= sweep::<I16F16>(label, *act, init, k as u64);
        ok &= sweep::<I1F15>(label, *act, init, k as u64);
    }
    ok
}

/// The FPU's sticky exception flags after the f32 work (Cortex-M4F only).
fn fpu_flags() {
    #[cfg(target_abi = "eabihf")]
    {
        let f = cortex_m::register::fpscr::read();
        defmt::println!(
            "fpscr sticky flags: IOC {=bool} DZC {=bool} OFC {=bool} UFC {=bool} IXC {=bool} IDC {=bool}",
            f.ioc(),
            f.dzc(),
            f.ofc(),
            f.ufc(),
            f.ixc(),
            f.idc()
        );
    }
    #[cfg(not(target_abi = "eabihf"))]
    defmt::println!("fpscr: no FPU on this core (soft float)");
}

#[cortex_m_rt::entry]
fn main() -> ! {
    defmt::println!("gradscope firmware {=str}", env!("CARGO_PKG_VERSION"));
    let sweep_ok = depth_sweep();
    fpu_flags();
    let mut lines = 0u32;
    gradscope_core::parity::init_digests(&mut |name, format, d| {
        defmt::println!("digest init/{=str}/{=str} {=u64:x}", name, format, d);
        lines += 1;
    });
    gradscope_core::parity::backprop_digests(&mut |name, format, d| {
        defmt::println!("digest backprop/{=str}/{=str} {=u64:x}", name, format, d);
        lines += 1;
    });
    #[cfg(feature = "panic-never-control")]
    {
        lines += gradscope_firmware::out_of_bounds(lines as usize);
    }
    defmt::println!("parity workloads: {=u32}", lines);
    exit(sweep_ok && lines > 0)
}
