//! Clipping invariants over parameter sets, against independent f64 norms.

use gradscope_core::clip::{grad_norm, norm_of};
use gradscope_core::{
    ClipError, EventCounts, Flags, I16F16, NearestEven, NormType, ParamTensor, Pooled, Scalar,
    clip_agc, clip_grad_norm, clip_grad_norm_per_tensor, clip_grad_value,
};
use proptest::prelude::*;

fn cfg() -> ProptestConfig {
    ProptestConfig {
        cases: 2_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A two-tensor "network": a 3×4 weight and a bias of 3.
struct Net<S> {
    w: [[S; 4]; 3],
    gw: [[S; 4]; 3],
    b: [S; 3],
    gb: [S; 3],
}

impl<S: Scalar> gradscope_core::Params<S> for Net<S> {
    fn depth(&self) -> usize {
        1
    }

    fn visit(&mut self, at: usize, f: &mut dyn FnMut(ParamTensor<'_, S>)) {
        f(ParamTensor::matrix(at, &mut self.w, &mut self.gw));
        f(ParamTensor::vector(at, &mut self.b, &mut self.gb));
    }
}

fn net(w: [f32; 12], g: [f32; 15]) -> Net<f32> {
    let mut n = Net {
        w: [[0.0; 4]; 3],
        gw: [[0.0; 4]; 3],
        b: [0.0; 3],
        gb: [0.0; 3],
    };
    n.w.as_flattened_mut().copy_from_slice(&w);
    n.gw.as_flattened_mut().copy_from_slice(&g[..12]);
    n.gb.copy_from_slice(&g[12..]);
    n
}

fn grads(n: &Net<f32>) -> Vec<f64> {
    n.gw.as_flattened()
        .iter()
        .chain(&n.gb)
        .map(|&v| v as f64)
        .collect()
}

fn f64_norm(g: &[f64], t: NormType) -> f64 {
    match t {
        NormType::L1 => g.iter().map(|v| v.abs()).sum(),
        NormType::L2 => g.iter().map(|v| v * v).sum::<f64>().sqrt(),
        NormType::Inf => g.iter().fold(0.0, |m: f64, v| m.max(v.abs())),
    }
}

fn vals() -> impl Strategy<Value = f32> {
    prop_oneof![
        -10.0f32..10.0,
        -1e-3f32..1e-3,
        (-1.0f32..1.0).prop_map(|u| u * 1e30)
    ]
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn global_norm_clipping_bounds_the_norm(
        w in prop::array::uniform12(vals()),
        g in prop::collection::vec(vals(), 15),
        max_norm in 1e-3f64..100.0,
        t in prop_oneof![Just(NormType::L1), Just(NormType::L2), Just(NormType::Inf)],
    ) {
        let mut n = net(w, g.clone().try_into().unwrap());
        let before = grads(&n);
        let want_total = f64_norm(&before, t);
        let mut fl = Flags::NONE;
        let total = clip_grad_norm(&mut n, max_norm, t, true, &mut NearestEven, &mut Pooled(&mut fl)).unwrap();
        // L2 of f32 gradients accumulates in f32 (as PyTorch does in the gradient's dtype): ~n·ε relative.
        let tol = if t == NormType::L2 { 15.0 * f32::EPSILON as f64 } else { 1e-12 };
        prop_assert!((total - want_total).abs() <= tol * want_total, "{} vs {}", total, want_total);
        let after = grads(&n);
        prop_assert!(f64_norm(&after, t) <= max_norm * (1.0 + 1e-5), "norm {} > {}", f64_norm(&after, t), max_norm);
        if max_norm / (total + 1e-6) >= 1.0 {
            prop_assert_eq!(after, before); // bit-identical when no clipping is needed
        } else {
            let c = max_norm / (total + 1e-6);
            for (a, b) in after.iter().zip(&before) {
                prop_assert_eq!(*a as f32, (*b as f32) * (c as f32));
            }
        }
    }

    #[test]
    fn value_clipping_clamps_exactly_the_values_beyond_the_threshold(
        w in prop::array::uniform12(vals()),
        g in prop::collection::vec(prop_oneof![vals(), Just(2.5f32), Just(-2.5f32)], 15),
    ) {
        let mut n = net(w, g.clone().try_into().unwrap());
        let before = grads(&n);
        let mut counts = EventCounts::default();
        clip_grad_value(&mut n, 2.5, &mut NearestEven, &mut Pooled(&mut counts)).unwrap();
        for (a, b) in grads(&n).iter().zip(&before) {
            prop_assert_eq!(*a, b.clamp(-2.5, 2.5));
        }
        prop_assert_eq!((counts.values, counts.nonfinite), (15, 0));
    }

    #[test]
    fn per_tensor_clipping_bounds_each_tensor_alone(
        w in prop::array::uniform12(vals()),
        g in prop::collection::vec(vals(), 15),
        max_norm in 1e-3f64..100.0,
    ) {
        let mut n = net(w, g.clone().try_into().unwrap());
        let before = grads(&n);
        clip_grad_norm_per_tensor(&mut n, max_norm, NormType::L2, &mut NearestEven, &mut ()).unwrap();
        let after = grads(&n);
        for (range, rows) in [(0..12, "weight"), (12..15, "bias")] {
            let (b, a) = (&before[range.clone()], &after[range]);
            let norm = f64_norm(b, NormType::L2);
            let c = max_norm / (norm + 1e-6);
            if c >= 1.0 {
                prop_assert_eq!(a, b, "{} under the bound changed", rows);
            } else {
                for (x, y) in a.iter().zip(b) {
                    let want = (*y as f32 * c as f32) as f64;
                    prop_assert!((x - want).abs() <= 2.0 * f32::EPSILON as f64 * want.abs(), "{} {} vs {}", rows, x, want);
                }
                prop_assert!(f64_norm(a, NormType::L2) <= max_norm * (1.0 + 1e-5));
            }
        }
    }

    #[test]
    fn a_policy_reports_the_norms_before_and_after(
        w in prop::array::uniform12(vals()),
        g in prop::collection::vec(vals(), 15),
        max_norm in 1e-3f64..100.0,
    ) {
        let mut n = net(w, g.clone().try_into().unwrap());
        let want_before = f64_norm(&grads(&n), NormType::L2);
        let report = gradscope_core::Clip::Global(max_norm).apply(&mut n, &mut NearestEven, &mut ()).unwrap();
        let want_after = f64_norm(&grads(&n), NormType::L2);
        let tol = 15.0 * f32::EPSILON as f64;
        prop_assert!((report.norm_before - want_before).abs() <= tol * want_before);
        prop_assert!((report.norm_after - want_after).abs() <= tol * want_after.max(1e-30));
        prop_assert!(report.norm_after <= max_norm * (1.0 + 1e-5));
    }

    #[test]
    fn agc_clips_exactly_the_units_over_lambda(
        w in prop::array::uniform12(vals()),
        g in prop::collection::vec(vals(), 15),
        lambda in 0.01f64..1.0,
    ) {
        let mut n = net(w, g.clone().try_into().unwrap());
        let before = net(w, g.try_into().unwrap());
        let clipped = clip_agc(&mut n, lambda, gradscope_core::clip::AGC_EPS, &mut NearestEven, &mut ()).unwrap();
        let mut count = 0;
        let rows = n.gw.iter().zip(&before.gw).zip(&n.w).map(|((a, b), w)| (a.to_vec(), b.to_vec(), w.to_vec()));
        let bias = n.gb.iter().zip(&before.gb).zip(&n.b).map(|((a, b), w)| (vec![*a], vec![*b], vec![*w]));
        for (after, orig, wv) in rows.chain(bias) {
            let to64 = |v: &Vec<f32>| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
            let (gn, wn) = (f64_norm(&to64(&orig), NormType::L2), f64_norm(&to64(&wv), NormType::L2).max(1e-3));
            if gn > lambda * wn * (1.0 + 1e-6) {
                count += 1;
                let an = f64_norm(&to64(&after), NormType::L2);
                prop_assert!((an - lambda * wn).abs() <= 1e-5 * lambda * wn, "{} vs {}", an, lambda * wn);
            } else if gn < lambda * wn * (1.0 - 1e-6) {
                prop_assert_eq!(after, orig); // under λ: bit-identical
            }
        }
        prop_assert!((clipped as i32 - count).abs() <= 1);
    }
}

#[test]
fn zero_gradients_stay_zero_and_thresholds_are_validated() {
    let mut n = net([1.0; 12], [0.0; 15]);
    assert_eq!(
        clip_grad_norm(&mut n, 1.0, NormType::L2, true, &mut NearestEven, &mut ()),
        Ok(0.0)
    );
    assert_eq!(
        clip_agc(&mut n, 0.01, 1e-3, &mut NearestEven, &mut ()),
        Ok(0)
    );
    clip_grad_norm_per_tensor(&mut n, 1e-9, NormType::L2, &mut NearestEven, &mut ()).unwrap();
    assert!(grads(&n).iter().all(|&v| v == 0.0));
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            clip_grad_value(&mut n, bad, &mut NearestEven, &mut ()),
            Err(ClipError::InvalidThreshold(_))
        ));
        assert!(
            clip_grad_norm(&mut n, bad, NormType::L2, false, &mut NearestEven, &mut ()).is_err()
        );
        assert!(clip_agc(&mut n, bad, 1e-3, &mut NearestEven, &mut ()).is_err());
        assert!(clip_agc(&mut n, 0.1, bad, &mut NearestEven, &mut ()).is_err());
    }
}

#[test]
fn non_finite_gradients_are_reported_never_spread() {
    let mut g = [0.5f32; 15];
    g[3] = f32::NAN;
    let mut n = net([1.0; 12], g);
    let before = grads(&n);
    let r = clip_grad_norm(&mut n, 0.1, NormType::L2, true, &mut NearestEven, &mut ());
    assert!(matches!(r, Err(ClipError::NonFiniteNorm(v)) if v.is_nan()));
    let mut fl = Flags::NONE;
    let total = clip_grad_norm(
        &mut n,
        0.1,
        NormType::L2,
        false,
        &mut NearestEven,
        &mut Pooled(&mut fl),
    )
    .unwrap();
    assert!(total.is_nan() && fl.contains(Flags::NONFINITE));
    let after = grads(&n);
    // Unchanged: the one NaN is still alone, every other gradient still 0.5.
    assert_eq!(after.iter().filter(|v| v.is_nan()).count(), 1);
    assert!(
        after
            .iter()
            .zip(&before)
            .all(|(a, b)| a == b || (a.is_nan() && b.is_nan()))
    );
    // AGC skips the unit holding the NaN and clips the others.
    let mut fl = Flags::NONE;
    let clipped = clip_agc(&mut n, 0.01, 1e-3, &mut NearestEven, &mut Pooled(&mut fl)).unwrap();
    assert!(fl.contains(Flags::NONFINITE));
    assert_eq!(clipped, 2 + 3); // two finite weight rows and three bias units
    assert_eq!(grads(&n).iter().filter(|v| v.is_nan()).count(), 1);
    // Clip by value keeps NaN where it was and reports it.
    let mut fl = Flags::NONE;
    clip_grad_value(&mut n, 0.25, &mut NearestEven, &mut Pooled(&mut fl)).unwrap();
    assert!(fl.contains(Flags::NONFINITE));
    assert!(grads(&n).iter().all(|v| v.is_nan() || v.abs() <= 0.25));
}

#[test]
fn fixed_point_norms_do_not_overflow_and_clipping_lands_on_max_norm() {
    // Gradients of 100 each: ‖g‖ ≈ 387 > 181, so a Q16.16 sum of squares would saturate.
    let q = |x: f64| I16F16::from_f64(x, &mut NearestEven).0;
    let mut n = Net {
        w: [[q(0.5); 4]; 3],
        gw: [[q(100.0); 4]; 3],
        b: [q(0.0); 3],
        gb: [q(-100.0); 3],
    };
    let want = (15.0f64 * 100.0 * 100.0).sqrt();
    assert!((grad_norm(&mut n, NormType::L2) - want).abs() < 1e-9);
    let mut counts = EventCounts::default();
    let total = clip_grad_norm(
        &mut n,
        1.0,
        NormType::L2,
        true,
        &mut NearestEven,
        &mut Pooled(&mut counts),
    )
    .unwrap();
    assert!((total - want).abs() < 1e-9);
    assert_eq!(counts.overflow, 0);
    let after: Vec<f64> =
        n.gw.as_flattened()
            .iter()
            .chain(&n.gb)
            .map(|v| v.to_f64())
            .collect();
    let norm = f64_norm(&after, NormType::L2);
    // Each element rounds once (≤ ½ LSB), so the norm lands within √15·½ LSB of max_norm.
    assert!(
        (norm - 1.0).abs() <= 15f64.sqrt() * 0.5 * I16F16::LSB + 1e-6,
        "{norm}"
    );
    assert_eq!(norm_of(&[q(3.0), q(-4.0)], NormType::L1), 7.0);
    assert_eq!(norm_of(&[q(3.0), q(-4.0)], NormType::Inf), 4.0);
}

/// Two layers of one f64 tensor each.
struct TwoLayers {
    w: [[f64; 3]; 2],
    g: [[f64; 3]; 2],
}

impl gradscope_core::Params<f64> for TwoLayers {
    fn depth(&self) -> usize {
        2
    }

    fn visit(&mut self, at: usize, f: &mut dyn FnMut(ParamTensor<'_, f64>)) {
        let [w0, w1] = &mut self.w;
        let [g0, g1] = &mut self.g;
        f(ParamTensor::vector(at, w0, g0));
        f(ParamTensor::vector(at + 1, w1, g1));
    }
}

#[test]
fn global_clipping_in_f64_uses_pytorchs_factor_and_blames_the_right_layer() {
    // ‖g‖ = 13: PyTorch's factor max_norm / (13 + 10⁻⁶), one rounding per value in f64.
    let mut t = TwoLayers {
        w: [[0.0; 3]; 2],
        g: [[3.0, 4.0, 0.0], [12.0, 0.0, 0.0]],
    };
    let total =
        clip_grad_norm(&mut t, 1.0, NormType::L2, false, &mut NearestEven, &mut ()).unwrap();
    assert_eq!(total, 13.0);
    let c = 1.0 / (13.0 + 1e-6);
    assert_eq!(t.g, [[3.0 * c, 4.0 * c, 0.0], [12.0 * c, 0.0, 0.0]]);
    // A non-finite gradient in the second layer is reported there.
    t.g[1][2] = f64::NAN;
    let mut stats = [gradscope_core::LayerStats::default(); 2];
    clip_grad_norm(
        &mut t,
        1.0,
        NormType::L2,
        false,
        &mut NearestEven,
        stats.as_mut_slice(),
    )
    .unwrap();
    assert_eq!((stats[0].clip.nonfinite, stats[1].clip.nonfinite), (0, 1));
}
