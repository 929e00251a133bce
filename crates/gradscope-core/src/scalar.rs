//! One scalar abstraction for every kernel: `f32`, `f64`, the 16-bit floats of [`crate::float16`] and the
//! fixed-point types of [`crate::fixed`].
//!
//! Conventions, stated once:
//!
//! - **Wide accumulation, one narrowing.** Kernels sum products in [`Scalar::Acc`] and narrow once per output
//!   with [`Scalar::narrow`]. For fixed point the accumulator holds the *exact* sum (products at `2F` fraction
//!   bits in an `i128`), so a dot product rounds once, not once per term, and the order of the terms does not
//!   matter. For floats the accumulator is the float itself (IEEE round-to-nearest-even on every operation)
//!   plus the events seen on the way, and the order is fixed: [`Scalar::dot_fast`] documents it.
//! - **Fast when nothing can happen.** A kernel summarizes a vector in a [`Scalar::Bound`] (magnitudes) and asks
//!   [`Scalar::quiet`] whether a sum of products could have any event at all (a float product underflowing,
//!   subnormal or overflowing; a fixed-point sum leaving the fast `i64` lanes). When not, it runs the fast lanes
//!   ([`Scalar::Lane`]), which vectorize and compute the same value with no per-product checks; otherwise the
//!   exact, checked path. Both paths give the same value and, where events are observed, the same events.
//! - **Rounding is a value.** Every narrowing takes a [`Rounding`]. IEEE float arithmetic always rounds to
//!   nearest-even; the rounding mode applies to fixed-point narrowing and to [`Scalar::from_f64`] of every type.
//! - **Events are values.** Each operation that can lose information returns [`Flags`] (see [`crate::flags`]).
//! - **Conversions saturate.** A finite input beyond the range becomes `MIN`/`MAX` with
//!   [`Flags::OVERFLOW`], for floats too; NaN becomes zero in fixed point (with [`Flags::NONFINITE`]).
//! - **Nothing panics.** Every function is total over its inputs, NaN and ±∞ included.

use core::fmt::Debug;

use crate::flags::Flags;
use crate::math::{Libm, Math, Real, sigmoid};
use crate::round::{NearestEven, Rounding};

/// A number type that every kernel of this crate runs on.
///
/// See the [module docs](self) for the conventions; accumulator width and guard bits are documented on each
/// implementing type.
pub trait Scalar: Copy + Default + PartialEq + PartialOrd + Debug + Send + Sync + 'static {
    /// Wide accumulator for sums of products (exact for fixed point).
    type Acc: Copy + Debug;
    /// Accumulator for sums of squares, which cannot overflow silently.
    type SqAcc: Copy + Debug;

    /// Short name used in reports (`"f32"`, `"I16F16"`, ...).
    const NAME: &'static str;
    /// Zero.
    const ZERO: Self;
    /// Most negative finite value.
    const MIN: Self;
    /// Largest finite value.
    const MAX: Self;
    /// Smallest positive step of the regular grid: one LSB for fixed point, the smallest positive normal for
    /// floats. A gradient below this is where underflow begins.
    const RESOLUTION: f64;
    /// Smallest positive value: one LSB for fixed point, the smallest subnormal for floats. Below half of it,
    /// round-to-nearest gives zero: in the subnormal range a float is a fixed-point format with this LSB, so
    /// this is the "one LSB" of the underflow horizon ([`crate::horizon`]) for every format.
    const SMALLEST: f64;
    /// True for binary floating-point types.
    const IS_FLOAT: bool;
    /// Whether [`Scalar::narrow_sticky`] under [`NearestEven`] sets the processor's
    /// sticky saturation flag (a Cortex-M4's Q) whenever it saturates, so that a kernel under a watching probe
    /// can read one flag for all its outputs where it tested each: the 16-bit fixed-point formats with at least
    /// one fraction bit on thumbv7em.
    const STICKY_SATURATION: bool = false;
    /// Rows per block in the fixed-point matrix–vector kernels' fast loop (the rows of a block share each load
    /// of the vector), where the format's best shape on the target differs from the kernels' default: 4 takes
    /// four rows at a time, any other value leaves the default. Only the speed depends on it: each row's sum is
    /// the same. Four for the 16-bit fixed-point formats on thumbv7em, whose four 32-bit sums stay in
    /// registers (`SMLAD`, BENCHMARKS.md).
    const ROW_BLOCK: usize = 0;

    /// An empty accumulator.
    fn acc_zero() -> Self::Acc;
    /// `acc + a·b`, with the product's events (floats); exact (fixed point).
    fn mac(acc: Self::Acc, a: Self, b: Self) -> Self::Acc;
    /// `acc + x`.
    fn acc_add(acc: Self::Acc, x: Self) -> Self::Acc;
    /// `a + b` of two accumulators (exact for fixed point; one IEEE addition for floats, with its events).
    fn acc_merge(a: Self::Acc, b: Self::Acc) -> Self::Acc;

    /// The fast accumulator of [`Scalar::dot_fast`]'s lanes: the float itself, or a wrapping `i64` that a
    /// [`Scalar::quiet`] bound keeps from wrapping.
    type Lane: Copy + Debug;
    /// An empty lane.
    const LANE_ZERO: Self::Lane;
    /// `lane + a·b`, without event checks.
    fn lane_mac(lane: Self::Lane, a: Self, b: Self) -> Self::Lane;
    /// `a + b` of two lanes.
    fn lane_add(a: Self::Lane, b: Self::Lane) -> Self::Lane;
    /// A lane holding `x` (a sum's starting value; floats: `0 + x`, as an accumulator starts).
    fn lane_of(x: Self) -> Self::Lane;
    /// A lane's value as an accumulator.
    fn lane_acc(lane: Self::Lane) -> Self::Acc;

    /// What a kernel knows of a vector's magnitudes to decide whether its products can have events.
    type Bound: Copy + Debug;
    /// The bound of every value of the type (fixed point: its range; floats: one that is never quiet).
    const ANY: Self::Bound;
    /// A bound of the values in `x`: for fixed point, at least their largest magnitude (their magnitudes' bitwise
    /// OR, which is below twice it); for floats, their smallest non-zero and largest magnitudes.
    fn bound(x: &[Self]) -> Self::Bound;
    /// Whether a sum of `n` products of values bounded by `a` and `b` is certain to have no event: no float
    /// product that underflows, is subnormal or overflows and no partial sum that overflows; no fixed-point sum
    /// beyond the fast lanes. When true, [`Scalar::dot_fast`]'s lane, as an accumulator, equals
    /// [`Scalar::dot_exact`] with no events.
    fn quiet(a: Self::Bound, b: Self::Bound, n: usize) -> bool;
    /// Whether a sum of `n` products of the values in `a` with values bounded by `b` is certain to have no event
    /// unless the sum ends non-finite: what a kernel asks before its fast lanes, since it then checks each
    /// output's finiteness and takes the events of one that is not from its exact recomputation.
    ///
    /// `f32` and `f64` test only that no product of non-zero values is below the normal range, comparing each
    /// value of `a` with one threshold derived from `b` in one pass that vectorizes: a float sum with an overflow
    /// or a non-finite operand stays non-finite (∞ + finite = ∞, ∞ − ∞ = NaN, NaN stays). Fixed point, whose
    /// overflow would not show in the value, and the 16-bit floats test everything: [`Scalar::quiet`] of the
    /// bound of `a`.
    #[inline]
    fn quiet_if_finite(a: &[Self], b: Self::Bound, n: usize) -> bool {
        Self::quiet(Self::bound(a), b, n)
    }

    /// `Σ aᵢ·bᵢ` over the common length, without event checks. Floats, the summation order of every dot
    /// product in the crate, on every target: element `i` goes to lane `i mod 4`, each lane adds its products
    /// in order (`lane + a·b`, two roundings, never fused), and the lanes are combined as
    /// `(l₀ + l₂) + (l₁ + l₃)`. Fixed point: the exact sum, valid when [`Scalar::quiet`] (its lanes are `i64`).
    /// As a lane, which [`Scalar::lane_acc`] turns into an accumulator where it is narrowed: a fixed-point lane
    /// widened there is known to fit `i64`, which the compiler no longer sees in an `i128` read back from memory.
    #[inline]
    fn dot_fast<const N: usize>(a: &[Self; N], b: &[Self; N], b_bound: Self::Bound) -> Self::Lane {
        let [lane] = Self::dots_fast(core::array::from_ref(a), b, b_bound);
        lane
    }

    /// [`Scalar::dot_fast`] of `R` rows with one vector `b` (whose bound may pick a faster exact shape): each
    /// row's value is exactly its `dot_fast`; the rows share every load of `b`.
    #[inline(always)]
    fn dots_fast<const R: usize, const N: usize>(
        rows: &[[Self; N]; R],
        b: &[Self; N],
        _b_bound: Self::Bound,
    ) -> [Self::Lane; R] {
        let (bc, bt) = b.as_chunks::<4>();
        // One 4-wide register of lanes per row; the rows of a block are independent chains.
        let mut lanes = [Lanes([Self::LANE_ZERO; 4]); R];
        for (c, y) in bc.iter().enumerate() {
            for (ls, row) in lanes.iter_mut().zip(rows) {
                if let Some(x) = row.as_chunks::<4>().0.get(c) {
                    for ((l, &p), &q) in ls.0.iter_mut().zip(x).zip(y) {
                        *l = Self::lane_mac(*l, p, q);
                    }
                }
            }
        }
        for (ls, row) in lanes.iter_mut().zip(rows) {
            for ((l, &p), &q) in ls.0.iter_mut().zip(row.as_chunks::<4>().1).zip(bt) {
                *l = Self::lane_mac(*l, p, q);
            }
        }
        // On x86 the vectorizer otherwise plans the whole block around the final tree (across rows, with
        // gathers); materializing the lanes keeps each row's lanes in one register. A hint: same values.
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        let lanes = core::hint::black_box(lanes);
        let mut out = [Self::LANE_ZERO; R];
        for (o, Lanes([l0, l1, l2, l3])) in out.iter_mut().zip(lanes) {
            *o = Self::lane_add(Self::lane_add(l0, l2), Self::lane_add(l1, l3));
        }
        out
    }

    /// [`Scalar::dots_fast`], each row's lane handed to `out(row, lane)` in row order: a target whose fast shape
    /// can fail and be redone reaches `out` from both paths, each keeping what it knows of its lanes (the M4F's
    /// Q15 rows in 32-bit sums, `crate::dsp::dots_each`).
    #[inline(always)]
    fn dots_fast_each<const R: usize, const N: usize>(
        rows: &[[Self; N]; R],
        b: &[Self; N],
        b_bound: Self::Bound,
        mut out: impl FnMut(usize, Self::Lane),
    ) {
        for (k, lane) in Self::dots_fast(rows, b, b_bound).into_iter().enumerate() {
            out(k, lane);
        }
    }

    /// The sums of [`crate::matrix::matvec_t`]'s fast path: each lane `i` (arriving at [`Scalar::LANE_ZERO`] or
    /// at a starting value) gains `Σₒ w[o][i]·d[o]`, added by [`Scalar::lane_mac`] with `o` ascending (floats:
    /// that order exactly; fixed point: the exact sum, valid when [`Scalar::quiet`]).
    #[inline(always)]
    fn columns_lanes<const I: usize, const O: usize>(
        w: &[[Self; I]; O],
        d: &[Self; O],
        lanes: &mut [Self::Lane; I],
    ) {
        for (row, &dv) in w.iter().zip(d) {
            for (l, &wv) in lanes.iter_mut().zip(row) {
                *l = Self::lane_mac(*l, wv, dv);
            }
        }
    }

    /// The `R × N` block `A B` of [`crate::matrix::matmul`]'s fast path, as lanes: lane `(i, j)` becomes
    /// `Σₖ a[i][k]·b[k][j]` added by [`Scalar::lane_mac`] with `k` ascending (floats: that order exactly; fixed
    /// point: the exact sum, valid when [`Scalar::quiet`]). `b`'s bound may pick a faster exact shape. (Into the
    /// caller's lanes, which arrive at [`Scalar::LANE_ZERO`]: a returned block would be copied out.)
    #[inline(always)]
    fn matmul_lanes<const R: usize, const K: usize, const N: usize>(
        a: &[[Self; K]; R],
        b: &[[Self; N]; K],
        _b_bound: Self::Bound,
        lanes: &mut [[Self::Lane; N]; R],
    ) {
        crate::matrix::matmul_lanes_chunked(a, b, lanes);
    }

    /// `Σ aᵢ·bᵢ` in [`Scalar::dot_fast`]'s order with every product's events (floats); exact (fixed point, in
    /// the wide accumulator).
    #[inline]
    fn dot_exact(a: &[Self], b: &[Self]) -> Self::Acc {
        let mut lanes = [Self::acc_zero(); 4];
        for (k, (&p, &q)) in a.iter().zip(b).enumerate() {
            if let Some(l) = lanes.get_mut(k % 4) {
                *l = Self::mac(*l, p, q);
            }
        }
        let [l0, l1, l2, l3] = lanes;
        Self::acc_merge(Self::acc_merge(l0, l2), Self::acc_merge(l1, l3))
    }
    /// Round the accumulated value to `Self`, reporting every event seen since [`Scalar::acc_zero`].
    fn narrow<R: Rounding + ?Sized>(acc: Self::Acc, r: &mut R) -> (Self, Flags);

    /// [`Scalar::narrow`] for a probe that only watches ([`Probe::WATCH`](crate::Probe::WATCH)): the same
    /// value and rounding, with flags that may leave out every event but the value's own (overflow or
    /// saturation, non-finite), the only ones such a probe keeps ([`Probe::note`](crate::Probe::note)).
    #[inline]
    fn narrow_watched<R: Rounding + ?Sized>(acc: Self::Acc, r: &mut R) -> (Self, Flags) {
        Self::narrow(acc, r)
    }

    /// [`Scalar::narrow`]'s value alone; where [`Scalar::STICKY_SATURATION`] holds and `r` rounds to nearest-even,
    /// a saturation also sets the processor's sticky flag.
    #[inline]
    fn narrow_sticky<R: Rounding + ?Sized>(acc: Self::Acc, r: &mut R) -> Self {
        Self::narrow(acc, r).0
    }

    /// The mean `acc / n` of a sum of `n` values accumulated with [`Scalar::acc_add`], rounded with `r`.
    /// Fixed point overrides it with the exact quotient rounded once, so a mean is in range whenever its
    /// value is, however large the sum. The default (the floats) rounds the sum, then multiplies by `1/n`:
    /// two roundings, and a sum beyond the format's range overflows even where the mean would not.
    #[inline]
    fn narrow_mean<R: Rounding + ?Sized>(acc: Self::Acc, n: u32, r: &mut R) -> (Self, Flags) {
        let (sum, f1) = Self::narrow(acc, r);
        let (v, f2) = sum.scale_by(&Coef::new(1.0 / n.max(1) as f64), r);
        (v, f1 | f2)
    }
    /// `self + rhs`, saturating (fixed) or IEEE (float).
    fn add(self, rhs: Self) -> (Self, Flags);
    /// `self − rhs`, saturating (fixed) or IEEE (float).
    fn sub(self, rhs: Self) -> (Self, Flags);
    /// `−self`; saturates for the most negative fixed-point value.
    fn neg(self) -> (Self, Flags);
    /// `self · rhs`, rounded with `r`.
    fn mul<R: Rounding + ?Sized>(self, rhs: Self, r: &mut R) -> (Self, Flags);

    /// `self · c` for a real coefficient `c` (a clipping or loss scale), rounded once with `r` (floats: IEEE
    /// nearest; fixed point: `c` is held to 2⁻⁴⁰). A non-finite `c` gives zero (fixed) or NaN/∞ (float),
    /// flagged. `f32` multiplies by `c` rounded to `f32` first, as PyTorch multiplies an `f32` tensor by a
    /// Python float: a `c` beyond `f32`'s range scales by 0 or by `f32::MAX`, and only the product's own events
    /// are flagged ([`Coef::as_f32`] gives the coefficient's). Loops that scale many values by one `c` should
    /// prepare it once with [`Coef::new`] and call [`Scalar::scale_by`]: the result is the same, without
    /// converting `c` per value (on an FPU-less core that conversion costs more than the multiplication).
    #[inline]
    fn scale<R: Rounding + ?Sized>(self, c: f64, r: &mut R) -> (Self, Flags) {
        self.scale_by(&Coef::new(c), r)
    }
    /// `self · c` for a prepared coefficient: identical to [`Scalar::scale`] with `c`'s value.
    fn scale_by<R: Rounding + ?Sized>(self, c: &Coef, r: &mut R) -> (Self, Flags);
    /// `w ← w − c·g` for each pair of `w` and `g` (the shorter decides), each value exactly as
    /// [`Scalar::scale_by`] then [`Scalar::sub`] would give it; each value's events go to `record` (in an order
    /// a format may choose: a count of them is what is defined). An SGD update's inner loop: a format may hoist
    /// the coefficient's preparation out of it, or update several values at once.
    #[inline]
    fn sub_scaled<R: Rounding + ?Sized>(
        w: &mut [Self],
        g: &[Self],
        c: &Coef,
        r: &mut R,
        record: impl FnMut(Flags),
    ) {
        sub_scaled_each(w, g, c, r, record)
    }
    /// Convert from `f64`, rounding with `r` and saturating.
    fn from_f64<R: Rounding + ?Sized>(x: f64, r: &mut R) -> (Self, Flags);
    /// Convert from `f32`, rounding with `r` and saturating.
    #[inline]
    fn from_f32<R: Rounding + ?Sized>(x: f32, r: &mut R) -> (Self, Flags) {
        // f32 -> f64 is exact, so this rounds only once.
        Self::from_f64(x as f64, r)
    }
    /// The exact value as `f64` (every type here converts exactly).
    fn to_f64(self) -> f64;
    /// The value as `f32`, rounded to nearest-even and saturating, with the events of that conversion.
    fn to_f32(self) -> (f32, Flags);
    /// True for zero (either sign).
    fn is_zero(self) -> bool;
    /// Whether the value is finite (always, for fixed point). Native: no conversion to `f64`, which a
    /// Cortex-M4F does in software.
    fn is_finite(self) -> bool;
    /// Whether every value of `v` is finite (always, for fixed point): the same answer as testing each with
    /// [`Scalar::is_finite`].
    #[inline]
    fn all_finite(v: &[Self]) -> bool {
        !Self::IS_FLOAT || v.iter().all(|x| x.is_finite())
    }
    /// The storage bit pattern, zero-extended (for digests that must agree across targets).
    fn raw_bits(self) -> u64;

    /// An empty sum of squares.
    fn sq_zero() -> Self::SqAcc;
    /// `acc + x²`.
    fn sq_add(acc: Self::SqAcc, x: Self) -> Self::SqAcc;
    /// Combine two partial sums of squares.
    fn sq_merge(a: Self::SqAcc, b: Self::SqAcc) -> Self::SqAcc;
    /// The sum of squares as `Self` (saturating: a Q16.16 sum of squares passes its range once the norm
    /// passes ≈181), rounded with `r`.
    fn sq_total<R: Rounding + ?Sized>(acc: Self::SqAcc, r: &mut R) -> (Self, Flags);
    /// The square root of the sum (the L2 norm), rounded to nearest. Overflows only if the norm itself does.
    fn sq_sqrt(acc: Self::SqAcc) -> (Self, Flags);
    /// The sum of squares as `f64`, for reports (may be `inf` if it exceeds `f64`).
    fn sq_to_f64(acc: Self::SqAcc) -> f64;
}

/// The four lanes of one row in [`Scalar::dots_fast`], aligned as one SIMD register.
#[derive(Copy, Clone)]
#[repr(C, align(16))]
struct Lanes<L>([L; 4]);

/// What a kernel knows of a float vector's magnitudes: the smallest non-zero and the largest magnitude, and
/// whether every value is finite.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct FloatBound<T> {
    /// Smallest non-zero magnitude (∞ if none).
    pub min: T,
    /// Largest magnitude.
    pub max: T,
    /// Every value finite.
    pub finite: bool,
}

/// The binary floating-point scalars (`f32`, `f64`): the bound of layers that are float-only by design
/// (LSTM, GRU), so using them with a fixed-point type is a compile error that names this trait. Provides the
/// gate nonlinearities through libm.
pub trait Float: Scalar + Real {
    /// Logistic sigmoid, PyTorch's stable form.
    fn sigmoid(self) -> Self;
    /// Hyperbolic tangent.
    fn tanh(self) -> Self;
}

// One impl per type (not a blanket impl over `Real`), so that a fixed-point LSTM's compile error names
// `Float` itself.
macro_rules! float_impl {
    ($t:ty) => {
        impl Float for $t {
            #[inline]
            fn sigmoid(self) -> $t {
                sigmoid::<$t, Libm>(self)
            }
            #[inline]
            fn tanh(self) -> $t {
                Libm::tanh(self)
            }
        }
    };
}
float_impl!(f32);
float_impl!(f64);

/// Float accumulator: the running IEEE sum and the events met while building it.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct FloatAcc<T> {
    /// Running sum.
    pub value: T,
    /// Events seen in products and partial sums.
    pub flags: Flags,
}

/// Float sum of squares in LAPACK's scaled form: `scale² · ssq`, which neither overflows nor underflows
/// before the result does (Hammarling's `xLASSQ` update).
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct ScaledSumSq<T> {
    /// Largest magnitude seen so far.
    pub scale: T,
    /// Sum of `(x / scale)²`.
    pub ssq: T,
    /// Sum of the non-finite magnitudes met (NaN or ∞ when any was met, else 0).
    pub nonfinite: T,
}

/// A real coefficient (learning rate, clipping factor, loss scale) prepared once for scaling many values:
/// its value rounded to `f32` and to `f64`, its fixed-point form `q · 2^−frac` (`frac` = 40 for |c| < 2²², else
/// 0; the activations' parameters use it), and two floating mantissas for [`Scalar::scale_by`]:
///
/// - 16-bit formats multiply by `ĉ₁₅ = m · 2^−e` with `m` of 15 significant bits (`2¹⁴ ≤ |m| < 2¹⁵`), so a raw
///   value times `m` fits 32 bits: one 32-bit multiply per value, as on a Cortex-M0. `|ĉ₁₅ − c| ≤ 2⁻¹⁵·|c|`.
/// - 32-bit formats multiply by `ĉ₃₁` with 31 significant bits, one 32 × 32 → 64-bit multiply per value;
///   `|ĉ₃₁ − c| ≤ 2⁻³¹·|c|`.
///
/// Either way the product is exact and rounded once, so a result is the correctly rounded `x·ĉ`: for `I1F15`
/// within one LSB of the correctly rounded `x·c`, for the 32-bit formats the same except when `x·c` lies within
/// `2⁻³¹·|x·c|` of a rounding boundary. Powers of two (loss scales) are exact in both.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Coef {
    value: f64,
    as_f32: f32,
    f32_flags: Flags,
    q: i64,
    frac: u32,
    m15: (i32, i32),
    m31: (i32, i32),
}

/// Fraction bits of a coefficient's fixed-point form (every fixed-point coefficient in the crate uses it).
pub(crate) const COEF_FRAC: u32 = 40;

/// [`Scalar::sub_scaled`] value by value: [`Scalar::scale_by`], then [`Scalar::sub`].
#[inline]
pub(crate) fn sub_scaled_each<S: Scalar, R: Rounding + ?Sized>(
    w: &mut [S],
    g: &[S],
    c: &Coef,
    r: &mut R,
    mut record: impl FnMut(Flags),
) {
    for (w, &g) in w.iter_mut().zip(g) {
        let (d, f1) = g.scale_by(c, r);
        let (v, f2) = w.sub(d);
        record(f1 | f2);
        *w = v;
    }
}

/// `c = m · 2^−e` with `m` rounded to nearest-even at `bits` significant bits (`2^(bits−1) ≤ |m| < 2^bits`), or
/// `(0, 0)` for zero and non-finite `c`.
fn mantissa(c: f64, bits: i32) -> (i32, i32) {
    if c == 0.0 || !c.is_finite() {
        return (0, 0);
    }
    // c = fr · 2^exp with 0.5 ≤ |fr| < 1, so |fr · 2^bits| in [2^(bits−1), 2^bits].
    let (fr, exp) = libm::frexp(c);
    let m = libm::rint(fr * (1u64 << bits) as f64) as i64;
    let (m, exp) = if m.unsigned_abs() == 1u64 << bits {
        (m / 2, exp + 1)
    } else {
        (m, exp)
    };
    (m as i32, bits - exp)
}

impl Coef {
    /// Prepare `c`.
    pub fn new(c: f64) -> Coef {
        let (as_f32, f32_flags) = <f32 as Scalar>::from_f64(c, &mut NearestEven);
        // c at 40 fraction bits (|c| < 2^22), else at 0 (any larger c saturates all but zero).
        let (q, frac) = if !c.is_finite() {
            (0, 0)
        } else if libm::fabs(c) < (1u64 << 22) as f64 {
            (libm::rint(c * (1u64 << COEF_FRAC) as f64) as i64, COEF_FRAC)
        } else {
            // `as` saturates; |c| ≥ 2^22 already saturates every non-zero fixed-point product.
            (c as i64, 0)
        };
        Coef {
            value: c,
            as_f32,
            f32_flags,
            q,
            frac,
            m15: mantissa(c, 15),
            m31: mantissa(c, 31),
        }
    }

    /// The coefficient's value.
    pub fn value(&self) -> f64 {
        self.value
    }

    /// Whether the coefficient is finite.
    pub fn is_finite(&self) -> bool {
        self.value.is_finite()
    }

    /// The coefficient rounded to `f32` (nearest-even, saturating), as `f32` values are scaled by it, with the
    /// events of that rounding: e.g. `UNDERFLOW` for a non-zero `c` that `f32` cannot hold, which scales every
    /// value to zero.
    pub fn as_f32(&self) -> (f32, Flags) {
        (self.as_f32, self.f32_flags)
    }

    /// The fixed-point form: `(q, frac)` with `c ≈ q · 2^−frac`.
    pub fn fixed(&self) -> (i64, u32) {
        (self.q, self.frac)
    }

    /// The mantissa form that 16-bit formats multiply by: `(m, e)` with `ĉ₁₅ = m · 2^−e`, `2¹⁴ ≤ |m| < 2¹⁵`
    /// (zero for `c = 0`).
    pub fn mantissa15(&self) -> (i32, i32) {
        self.m15
    }

    /// The mantissa form that 32-bit formats multiply by: `(m, e)` with `ĉ₃₁ = m · 2^−e`, `2³⁰ ≤ |m| < 2³¹`.
    pub fn mantissa31(&self) -> (i32, i32) {
        self.m31
    }
}

/// The coefficient in a float type, with the flags of converting it there.
trait FloatCoef: Sized {
    fn coef(c: &Coef) -> (Self, Flags);
}

impl FloatCoef for f32 {
    #[inline]
    fn coef(c: &Coef) -> (f32, Flags) {
        (c.as_f32, c.f32_flags)
    }
}

impl FloatCoef for f64 {
    #[inline]
    fn coef(c: &Coef) -> (f64, Flags) {
        // f64 → f64 is exact; a NaN or ∞ coefficient is flagged as the conversion would.
        (c.value, Flags::when(!c.value.is_finite(), Flags::NONFINITE))
    }
}

macro_rules! float_scalar {
    ($t:ident, $bits:ty, $sqrt:path, $doc:literal) => {
        #[doc = $doc]
        impl Scalar for $t {
            type Acc = FloatAcc<$t>;
            type SqAcc = ScaledSumSq<$t>;
            const NAME: &'static str = stringify!($t);
            const ZERO: $t = 0.0;
            const MIN: $t = $t::MIN;
            const MAX: $t = $t::MAX;
            const RESOLUTION: f64 = $t::MIN_POSITIVE as f64;
            const SMALLEST: f64 = $t::from_bits(1) as f64;
            const IS_FLOAT: bool = true;

            #[inline]
            fn acc_zero() -> Self::Acc {
                FloatAcc {
                    value: 0.0,
                    flags: Flags::NONE,
                }
            }
            #[inline]
            fn mac(acc: Self::Acc, a: $t, b: $t) -> Self::Acc {
                let p = a * b;
                let s = acc.value + p;
                let flags = acc.flags
                    | Flags::when(p == 0.0 && a != 0.0 && b != 0.0, Flags::UNDERFLOW)
                    | Flags::when(p.is_subnormal(), Flags::SUBNORMAL)
                    | Flags::when(
                        p.is_infinite() && a.is_finite() && b.is_finite(),
                        Flags::OVERFLOW,
                    )
                    | Flags::when(
                        s.is_infinite() && acc.value.is_finite() && p.is_finite(),
                        Flags::OVERFLOW,
                    );
                FloatAcc { value: s, flags }
            }
            #[inline]
            fn acc_merge(a: Self::Acc, b: Self::Acc) -> Self::Acc {
                let s = a.value + b.value;
                let overflow = s.is_infinite() && a.value.is_finite() && b.value.is_finite();
                FloatAcc {
                    value: s,
                    flags: a.flags | b.flags | Flags::when(overflow, Flags::OVERFLOW),
                }
            }

            type Lane = $t;
            const LANE_ZERO: $t = 0.0;
            #[inline(always)]
            fn lane_mac(lane: $t, a: $t, b: $t) -> $t {
                lane + a * b
            }
            #[inline(always)]
            fn lane_add(a: $t, b: $t) -> $t {
                a + b
            }
            #[inline(always)]
            fn lane_of(x: $t) -> $t {
                0.0 + x
            }
            #[inline(always)]
            fn lane_acc(lane: $t) -> Self::Acc {
                FloatAcc {
                    value: lane,
                    flags: Flags::NONE,
                }
            }

            type Bound = FloatBound<$t>;
            const ANY: Self::Bound = FloatBound {
                min: 0.0,
                max: $t::INFINITY,
                finite: false,
            };
            #[inline]
            fn bound(x: &[$t]) -> Self::Bound {
                // On the magnitudes' bit patterns, which order as the magnitudes do (NaN above ∞): integer
                // reductions vectorize where float ones cannot, and zero wraps to the top for the minimum.
                let (mut hi, mut lo) = (0, <$bits>::MAX);
                for &v in x {
                    let m = v.to_bits() & !(1 << (<$bits>::BITS - 1));
                    hi = hi.max(m);
                    lo = lo.min(m.wrapping_sub(1));
                }
                FloatBound {
                    min: if lo == <$bits>::MAX {
                        $t::INFINITY
                    } else {
                        <$t>::from_bits(lo + 1)
                    },
                    max: <$t>::from_bits(hi),
                    finite: hi < $t::INFINITY.to_bits(),
                }
            }
            #[inline]
            fn quiet(a: Self::Bound, b: Self::Bound, n: usize) -> bool {
                // Products of non-zero values are at least min·min and at most max·max (in f64, exactly for
                // f32; for f64 an out-of-range check product only makes this answer no).
                let (lo, hi) = (a.min as f64 * b.min as f64, a.max as f64 * b.max as f64);
                a.finite
                    && b.finite
                    && (lo >= $t::MIN_POSITIVE as f64 || a.min == $t::INFINITY || b.min == $t::INFINITY)
                    // Partial sums are at most n·max·max, each rounding adding under 2^-23 relative: twice
                    // that is a safe margin for any n the kernels see.
                    && hi * (n as f64) * 2.0 < $t::MAX as f64
            }
            #[inline]
            fn quiet_if_finite(a: &[$t], b: Self::Bound, _n: usize) -> bool {
                // Every non-zero |aᵢ| at least `lo`, so no product of non-zero values falls below the normal
                // range; `lo` is derived in f64 with a margin, then rounded up. Nothing else is needed: a
                // non-finite value in `b` meets every value of `a`, and a NaN or ±∞ in `a` (NaN's bits lie above
                // ∞'s, so both pass) makes its sum non-finite too.
                let lo = if b.min == $t::INFINITY {
                    0.0
                } else {
                    let t = $t::MIN_POSITIVE as f64 / b.min as f64 * (1.0 + 1e-12);
                    let r = t as $t;
                    if (r as f64) < t { r.next_up() } else { r }
                };
                // On the magnitudes' bits (ordered as the magnitudes): a non-zero value below `lo` is
                // `|v| − 1 < lo − 1` unsigned (zero wraps to the top). The unsigned compare runs signed, as SSE2
                // compares: adding 2^(B−1) − 1 subtracts one and flips the sign bit in one vector add.
                let sign: $bits = 1 << (<$bits>::BITS - 1);
                let lo1 = (lo.to_bits().saturating_sub(1) ^ sign).cast_signed();
                let mut out = false;
                for &v in a {
                    out |= ((v.to_bits() & !sign).wrapping_add(sign - 1).cast_signed()) < lo1;
                }
                !out
            }
            #[inline]
            fn acc_add(acc: Self::Acc, x: $t) -> Self::Acc {
                let (value, f) = Scalar::add(acc.value, x);
                FloatAcc {
                    value,
                    flags: acc.flags | f,
                }
            }
            #[inline]
            fn narrow<R: Rounding + ?Sized>(acc: Self::Acc, _r: &mut R) -> ($t, Flags) {
                (
                    acc.value,
                    acc.flags | float_result_flags(acc.value.is_finite(), acc.value.is_subnormal()),
                )
            }
            #[inline]
            fn add(self, rhs: $t) -> ($t, Flags) {
                let s = self + rhs;
                (
                    s,
                    float_op_flags(
                        s.is_finite(),
                        s.is_subnormal(),
                        self.is_finite() && rhs.is_finite(),
                    ),
                )
            }
            #[inline]
            fn sub(self, rhs: $t) -> ($t, Flags) {
                let s = self - rhs;
                (
                    s,
                    float_op_flags(
                        s.is_finite(),
                        s.is_subnormal(),
                        self.is_finite() && rhs.is_finite(),
                    ),
                )
            }
            #[inline]
            fn neg(self) -> ($t, Flags) {
                let s = -self;
                (s, float_result_flags(s.is_finite(), s.is_subnormal()))
            }
            #[inline]
            fn mul<R: Rounding + ?Sized>(self, rhs: $t, _r: &mut R) -> ($t, Flags) {
                let p = self * rhs;
                let f = float_op_flags(
                    p.is_finite(),
                    p.is_subnormal(),
                    self.is_finite() && rhs.is_finite(),
                ) | Flags::when(p == 0.0 && self != 0.0 && rhs != 0.0, Flags::UNDERFLOW);
                (p, f)
            }
            #[inline]
            fn scale_by<R: Rounding + ?Sized>(self, c: &Coef, r: &mut R) -> ($t, Flags) {
                let (cv, fc) = <$t as FloatCoef>::coef(c);
                let (v, f) = self.mul(cv, r);
                (v, f | (fc & Flags::NONFINITE))
            }
            #[inline]
            fn from_f64<R: Rounding + ?Sized>(x: f64, r: &mut R) -> ($t, Flags) {
                float_from_f64!($t, x, r)
            }
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline]
            fn to_f32(self) -> (f32, Flags) {
                f32::from_f64(self as f64, &mut NearestEven)
            }
            #[inline]
            fn is_finite(self) -> bool {
                // On the bits: two integer instructions, where an FPU compare costs a flag transfer too.
                self.to_bits() & !(1 << (<$bits>::BITS - 1)) < $t::INFINITY.to_bits()
            }
            #[inline]
            fn all_finite(v: &[$t]) -> bool {
                // A magnitude's bits plus the lowest exponent bit carry into the sign bit exactly when the
                // exponent is all ones (∞, NaN): three integer operations per value, no branch, and the ORs
                // vectorize. (A float sum would take one add, but a library call each on a core without an FPU.)
                let sign: $bits = 1 << (<$bits>::BITS - 1);
                let mut acc: $bits = 0;
                for x in v {
                    acc |= (x.to_bits() & !sign).wrapping_add($t::MIN_POSITIVE.to_bits());
                }
                acc & sign == 0
            }
            #[inline]
            fn is_zero(self) -> bool {
                self == 0.0
            }
            #[inline]
            fn raw_bits(self) -> u64 {
                self.to_bits() as u64
            }
            #[inline]
            fn sq_zero() -> Self::SqAcc {
                ScaledSumSq {
                    scale: 0.0,
                    ssq: 0.0,
                    nonfinite: 0.0,
                }
            }
            #[inline]
            fn sq_add(acc: Self::SqAcc, x: $t) -> Self::SqAcc {
                let ax = if x < 0.0 { -x } else { x };
                if !ax.is_finite() {
                    return ScaledSumSq {
                        nonfinite: acc.nonfinite + ax,
                        ..acc
                    };
                }
                if ax == 0.0 {
                    acc
                } else if acc.scale < ax {
                    let q = acc.scale / ax;
                    ScaledSumSq {
                        scale: ax,
                        ssq: 1.0 + acc.ssq * q * q,
                        ..acc
                    }
                } else {
                    let q = ax / acc.scale;
                    ScaledSumSq {
                        ssq: acc.ssq + q * q,
                        ..acc
                    }
                }
            }
            #[inline]
            fn sq_merge(a: Self::SqAcc, b: Self::SqAcc) -> Self::SqAcc {
                let nonfinite = a.nonfinite + b.nonfinite;
                let (big, small) = if a.scale >= b.scale { (a, b) } else { (b, a) };
                if small.scale == 0.0 {
                    return ScaledSumSq { nonfinite, ..big };
                }
                let q = small.scale / big.scale;
                ScaledSumSq {
                    scale: big.scale,
                    ssq: big.ssq + small.ssq * q * q,
                    nonfinite,
                }
            }
            #[inline]
            fn sq_total<R: Rounding + ?Sized>(acc: Self::SqAcc, _r: &mut R) -> ($t, Flags) {
                if acc.nonfinite != 0.0 {
                    return (acc.nonfinite, Flags::NONFINITE);
                }
                let v = (acc.scale * acc.ssq) * acc.scale;
                let f = float_op_flags(v.is_finite(), v.is_subnormal(), true)
                    | Flags::when(v == 0.0 && acc.scale != 0.0, Flags::UNDERFLOW);
                (v, f)
            }
            #[inline]
            fn sq_sqrt(acc: Self::SqAcc) -> ($t, Flags) {
                if acc.nonfinite != 0.0 {
                    return (acc.nonfinite, Flags::NONFINITE);
                }
                let v = acc.scale * $sqrt(acc.ssq);
                (v, float_op_flags(v.is_finite(), v.is_subnormal(), true))
            }
            #[inline]
            fn sq_to_f64(acc: Self::SqAcc) -> f64 {
                if acc.nonfinite != 0.0 {
                    return acc.nonfinite as f64;
                }
                let s = acc.scale as f64;
                s * s * acc.ssq as f64
            }
        }
    };
}

/// Flags of a value a float formula produced (not one IEEE operation): non-finite, or non-zero and below the
/// normal range. Layers that compute in plain float arithmetic report their outputs with it.
#[inline]
pub(crate) fn float_value_flags<T: Scalar>(v: T) -> Flags {
    let f = v.to_f64();
    float_result_flags(f.is_finite(), f != 0.0 && libm::fabs(f) < T::RESOLUTION)
}

/// Flags of a float result: non-finite or subnormal.
#[inline]
fn float_result_flags(finite: bool, subnormal: bool) -> Flags {
    Flags::when(!finite, Flags::NONFINITE) | Flags::when(subnormal, Flags::SUBNORMAL)
}

/// Flags of a float operation; a non-finite result from finite operands is an overflow.
#[inline]
fn float_op_flags(finite: bool, subnormal: bool, inputs_finite: bool) -> Flags {
    float_result_flags(finite, subnormal) | Flags::when(!finite && inputs_finite, Flags::OVERFLOW)
}

/// `from_f64` for a float type: exact when representable, else the neighbour the rounding mode picks.
macro_rules! float_from_f64 {
    ($t:ident, $x:expr, $r:expr) => {{
        let x: f64 = $x;
        if x.is_nan() {
            return ($t::NAN, Flags::NONFINITE);
        }
        if x.is_infinite() {
            return (x as $t, Flags::NONFINITE);
        }
        if x > $t::MAX as f64 {
            return ($t::MAX, Flags::OVERFLOW);
        }
        if x < $t::MIN as f64 {
            return ($t::MIN, Flags::OVERFLOW);
        }
        let n = x as $t; // nearest-even, finite here
        if $r.nearest_even() {
            // The conversion is the mode: no neighbours to compare (a loss gradient per output takes this).
            return (
                n,
                Flags::when(n == 0.0 && x != 0.0, Flags::UNDERFLOW)
                    | Flags::when(n.is_subnormal(), Flags::SUBNORMAL),
            );
        }
        let nf = n as f64;
        if nf == x {
            return (n, Flags::when(n.is_subnormal(), Flags::SUBNORMAL));
        }
        let (lo, hi) = if nf < x {
            (n, n.next_up())
        } else {
            (n.next_down(), n)
        };
        // lo < x < hi are adjacent and of one sign (or lo/hi zero), so both differences are exact.
        let below = x - lo as f64;
        let gap = hi as f64 - lo as f64;
        let v = if $r.round_up(below, gap, lo.to_bits() & 1 == 0) {
            hi
        } else {
            lo
        };
        let v = if v.is_infinite() {
            if v > 0.0 { $t::MAX } else { $t::MIN }
        } else {
            v
        };
        (
            v,
            Flags::when(v == 0.0, Flags::UNDERFLOW)
                | Flags::when(v.is_subnormal(), Flags::SUBNORMAL),
        )
    }};
}

float_scalar!(
    f32,
    u32,
    libm::sqrtf,
    "IEEE binary32. Accumulator: `f32` itself (no guard bits; round to nearest-even on every add)."
);
float_scalar!(
    f64,
    u64,
    libm::sqrt,
    "IEEE binary64, the host reference. Accumulator: `f64` itself (no guard bits)."
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::round::{Floor, NearestEven, Stochastic};
    use rand_core::SeedableRng;

    #[test]
    fn f32_from_f64_modes() {
        let x = 1.0f64 + f64::EPSILON; // between 1 and next_up(1f32), closer to 1
        assert_eq!(f32::from_f64(x, &mut Floor), (1.0, Flags::NONE));
        assert_eq!(f32::from_f64(x, &mut NearestEven), (1.0, Flags::NONE));
        let neg = -x;
        assert_eq!(f32::from_f64(neg, &mut Floor).0, (-1.0f32).next_down());
        assert_eq!(
            f32::from_f64(1e300, &mut NearestEven),
            (f32::MAX, Flags::OVERFLOW)
        );
        assert_eq!(
            f32::from_f64(1e-60, &mut NearestEven),
            (0.0, Flags::UNDERFLOW)
        );
        assert_eq!(f32::from_f64(1e-60, &mut Floor), (0.0, Flags::UNDERFLOW));
        let (v, f) = f32::from_f64(1e-40, &mut NearestEven);
        assert!(v.is_subnormal() && f == Flags::SUBNORMAL);
        let (v, f) = f32::from_f64(f64::NAN, &mut NearestEven);
        assert!(v.is_nan() && f == Flags::NONFINITE);
    }

    #[test]
    fn f32_stochastic_conversion_is_unbiased() {
        let mut r = Stochastic(rand_xoshiro::Xoshiro128PlusPlus::seed_from_u64(3));
        let x = 1.0f64 + 0.25 * f32::EPSILON as f64;
        let n = 100_000;
        let ups = (0..n).filter(|_| f32::from_f64(x, &mut r).0 > 1.0).count() as f64;
        let sigma = (0.25f64 * 0.75 * n as f64).sqrt();
        assert!((ups - 0.25 * n as f64).abs() < 4.0 * sigma, "{ups}");
    }

    #[test]
    fn float_ops_flag_ieee_events() {
        assert_eq!(
            f32::MAX.add(f32::MAX),
            (f32::INFINITY, Flags::OVERFLOW | Flags::NONFINITE)
        );
        assert_eq!(f32::INFINITY.add(1.0), (f32::INFINITY, Flags::NONFINITE));
        assert_eq!(
            1e-30f32.mul(1e-30, &mut NearestEven),
            (0.0, Flags::UNDERFLOW)
        );
        let (v, f) = 1e-20f32.mul(1e-20, &mut NearestEven);
        assert!(v.is_subnormal() && f == Flags::SUBNORMAL);
        let acc = f32::mac(f32::mac(f32::acc_zero(), 1e-30, 1e-30), 2.0, 3.0);
        assert_eq!(f32::narrow(acc, &mut NearestEven), (6.0, Flags::UNDERFLOW));
    }

    #[test]
    fn value_flags_mark_subnormal_and_non_finite_results() {
        let m = f32::MIN_POSITIVE;
        assert_eq!(float_value_flags(m), Flags::NONE);
        assert_eq!(float_value_flags(-m), Flags::NONE);
        assert_eq!(float_value_flags(m.next_down()), Flags::SUBNORMAL);
        assert_eq!(float_value_flags(-m / 4.0), Flags::SUBNORMAL);
        assert_eq!(float_value_flags(0.0f32), Flags::NONE);
        assert_eq!(float_value_flags(1.5f32), Flags::NONE);
        assert_eq!(float_value_flags(f32::INFINITY), Flags::NONFINITE);
        assert_eq!(float_value_flags(f32::NAN), Flags::NONFINITE);
        assert_eq!(float_value_flags(f64::MIN_POSITIVE / 2.0), Flags::SUBNORMAL);
        assert_eq!(float_value_flags(m as f64), Flags::NONE);
    }

    #[test]
    fn coefficient_forms() {
        let c = Coef::new(-0.3);
        assert_eq!(c.value(), -0.3);
        assert!(c.is_finite());
        // −0.3 at 40 fraction bits, rounded to nearest: the exact product in i128 decides.
        let q = -0.3f64 * (1u64 << 40) as f64;
        assert_eq!(c.fixed(), (q.round() as i64, 40));
        assert_eq!(c.fixed().0, -329_853_488_333);
        // Beyond 2²² the fixed form is the integer part at 0 fraction bits.
        assert_eq!(Coef::new(5e6 + 0.75).fixed(), (5_000_000, 0));
        for bad in [f64::NAN, f64::INFINITY] {
            let c = Coef::new(bad);
            assert!(!c.is_finite());
            assert_eq!(
                (c.fixed(), c.mantissa15(), c.mantissa31()),
                ((0, 0), (0, 0), (0, 0))
            );
        }
        assert_eq!(Coef::new(0.75).mantissa15(), (24_576, 15));
        assert_eq!(Coef::new(0.75).mantissa31(), (1_610_612_736, 31));
    }

    #[test]
    fn f32_scales_by_the_coefficient_as_f32_holds_it_and_as_f32_reports_its_rounding() {
        let r = &mut NearestEven;
        assert_eq!(Coef::new(0.75).as_f32(), (0.75, Flags::NONE));
        assert_eq!(Coef::new(-0.1).as_f32(), f32::from_f64(-0.1, r));
        // Below f32's least subnormal: a coefficient of 0, its underflow reported here, not per product.
        let tiny = Coef::new(7e-46);
        assert_eq!(tiny.as_f32(), (0.0, Flags::UNDERFLOW));
        assert_eq!(1.0f32.scale_by(&tiny, r), (0.0, Flags::NONE));
        // Beyond f32::MAX: a coefficient of f32::MAX.
        let huge = Coef::new(1e300);
        assert_eq!(huge.as_f32(), (f32::MAX, Flags::OVERFLOW));
        assert_eq!(0.5f32.scale_by(&huge, r), (f32::MAX / 2.0, Flags::NONE));
        // f64 holds both exactly.
        assert_eq!(1.0f64.scale_by(&tiny, r).0, 7e-46);
        assert_eq!(0.5f64.scale_by(&huge, r).0, 5e299);
    }

    #[test]
    fn float_sum_of_squares_neither_overflows_nor_underflows() {
        let big = [3e30f32, 4e30];
        let acc = big.iter().fold(f32::sq_zero(), |a, &x| f32::sq_add(a, x));
        let (n, f) = f32::sq_sqrt(acc);
        assert!((n - 5e30).abs() <= 5e30 * 1e-6 && f.is_empty(), "{n} {f}");
        assert_eq!(
            f32::sq_total(acc, &mut NearestEven).1,
            Flags::OVERFLOW | Flags::NONFINITE
        );
        let tiny = [3e-30f32, 4e-30];
        let acc = tiny.iter().fold(f32::sq_zero(), |a, &x| f32::sq_add(a, x));
        assert!((f32::sq_sqrt(acc).0 - 5e-30).abs() <= 5e-30 * 1e-6);
        let acc = f32::sq_add(acc, f32::NAN);
        assert_eq!(f32::sq_sqrt(acc).1, Flags::NONFINITE);
    }
}
