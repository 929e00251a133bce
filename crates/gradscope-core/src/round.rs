//! Rounding modes, passed as values (never a global).
//!
//! Fixed-point narrowing divides a wide integer by `2^s` and must pick an integer: [`Rounding::shr`].
//! Float conversions pick one of two adjacent representable values: [`Rounding::round_up`].
//!
//! - [`Floor`] rounds toward −∞. A small positive product vanishes to 0 while a small negative one sticks at
//!   −1 LSB: the asymmetry is a property of the mode (the `fixed` crate and CMSIS truncation behave the same way).
//! - [`NearestEven`] rounds to nearest, ties to even: unbiased on average, no asymmetry.
//! - [`Stochastic`] rounds up with probability equal to the discarded fraction, using a caller-supplied
//!   [`rand_core::Rng`]: the expected result equals the exact value, so tiny gradients survive on average.
//! - [`AnyRounding`] selects one of the three at run time (for command-line tools).

use rand_core::Rng;

/// How to round a value that falls between two representable neighbours.
pub trait Rounding {
    /// `x / 2^s` rounded to an integer. `s` is clamped to `0..=62`; the result never overflows.
    fn shr(&mut self, x: i64, s: u32) -> i64;

    /// [`Rounding::shr`] of a 32-bit value by at most 31 places, the same result (and the same random draws)
    /// in 32-bit arithmetic where a mode provides it: a Cortex-M0 has no 64-bit shifts.
    #[inline]
    fn shr32(&mut self, x: i32, s: u32) -> i32 {
        // |x / 2^s| + 1 ≤ 2^31 for s ≥ 1, and s = 0 returns x: the result fits.
        self.shr(x as i64, s) as i32
    }

    /// For a value `lo + below` strictly between neighbours `lo` and `lo + gap` (`0 < below < gap`, both
    /// finite and positive), whether to return the upper neighbour. `lo_is_even` breaks ties for nearest-even.
    fn round_up(&mut self, below: f64, gap: f64, lo_is_even: bool) -> bool;

    /// For an exact value `q + rem/den` with `0 <= rem < den`, the integer to return (`q` or `q + 1`).
    /// A `rem >= den` is treated as `den − 1`, and `den == 0` as exact; the result saturates at `i64::MAX`.
    fn round_frac(&mut self, q: i64, rem: u64, den: u64) -> i64;

    /// The mode's name, for reports.
    fn name(&self) -> &'static str;

    /// Whether every result depends on its operands alone (no random draws), so that computing values in a
    /// different order gives the same values: what lets [`crate::train::step_tiled`] run a batch layer by
    /// layer. False unless a mode says otherwise.
    fn stateless(&self) -> bool {
        false
    }

    /// Whether this mode is round-to-nearest, ties to even, the hardware's own float conversion: a float
    /// conversion can then use it directly instead of comparing neighbours ([`Rounding::round_up`]), with the
    /// same result. False unless a mode says otherwise (always a correct answer, only a slower one).
    fn nearest_even(&self) -> bool {
        false
    }
}

impl<R: Rounding + ?Sized> Rounding for &mut R {
    #[inline]
    fn shr(&mut self, x: i64, s: u32) -> i64 {
        (**self).shr(x, s)
    }
    #[inline]
    fn shr32(&mut self, x: i32, s: u32) -> i32 {
        (**self).shr32(x, s)
    }
    #[inline]
    fn round_up(&mut self, below: f64, gap: f64, lo_is_even: bool) -> bool {
        (**self).round_up(below, gap, lo_is_even)
    }
    #[inline]
    fn round_frac(&mut self, q: i64, rem: u64, den: u64) -> i64 {
        (**self).round_frac(q, rem, den)
    }
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn stateless(&self) -> bool {
        (**self).stateless()
    }
    fn nearest_even(&self) -> bool {
        (**self).nearest_even()
    }
}

/// Round toward −∞ (arithmetic shift right).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Floor;

/// Round to nearest, ties to even.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct NearestEven;

/// Round up with probability equal to the discarded fraction (unbiased), drawing from `R`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stochastic<R>(pub R);

/// `x / 2^s` rounded to nearest, ties to even, from `t = x + 2^(s−1) − 1` (`1 ≤ s ≤ 31`, `t < i32::MAX`): the
/// result is `(t + bit_s(t)) >> s`. Adding one to `t` crosses a multiple of 2^s only when `t`'s low `s` bits are
/// all ones, i.e. when `x` lies exactly halfway, and there `bit_s(t)` is the bit of `⌊x / 2^s⌋` (nothing carried
/// into it): ties go to even, and every other value rounds to nearest either way. The bit is read as the top bit
/// of `t << (31 − s)`: one shift, and Arm adds it with a shifted operand.
#[inline(always)]
pub(crate) fn nearest_even_biased(t: i32, s: u32) -> i32 {
    (t + ((t << (31 - s)) as u32 >> 31) as i32) >> s
}

/// `x / 2^s` rounded to nearest, ties to even (`1 ≤ s ≤ 62`): [`nearest_even_biased`] in 64 bits with wrapping
/// sums, `t = x + 2^(s−1) − 1`, then `(t + bit_s(t)) >> s` by the same argument. Exact wherever `x + 2^(s−1)`
/// fits `i64`. Where it does not (`x` within 2^(s−1) of `i64::MAX`), one of the two sums wraps to within 2^s of
/// `i64::MIN` and the result is `−2^(63−s)` exactly, below every 32-bit format's range for `s ≤ 31`: a caller
/// saturates by `x`'s sign there, where a checked add would test and branch on every value.
#[inline(always)]
pub(crate) fn nearest_even_wrapping64(x: i64, s: u32) -> i64 {
    let t = x.wrapping_add((1i64 << (s - 1)) - 1);
    t.wrapping_add((t >> s) & 1) >> s
}

#[inline]
fn split(x: i64, s: u32) -> (i64, u64, u32) {
    let s = s.min(62);
    // q = floor(x / 2^s); rem in [0, 2^s). Both computed without overflow for every i64.
    let q = x >> s;
    let rem = (x as u64) & ((1u64 << s) - 1);
    (q, rem, s)
}

impl Rounding for Floor {
    #[inline]
    fn shr(&mut self, x: i64, s: u32) -> i64 {
        split(x, s).0
    }
    #[inline]
    fn shr32(&mut self, x: i32, s: u32) -> i32 {
        x >> s.min(31)
    }
    #[inline]
    fn round_up(&mut self, _below: f64, _gap: f64, _lo_is_even: bool) -> bool {
        false
    }
    #[inline]
    fn round_frac(&mut self, q: i64, _rem: u64, _den: u64) -> i64 {
        q
    }
    fn name(&self) -> &'static str {
        "floor"
    }
    fn stateless(&self) -> bool {
        true
    }
}

impl Rounding for NearestEven {
    #[inline]
    fn shr(&mut self, x: i64, s: u32) -> i64 {
        let (q, rem, s) = split(x, s);
        if s == 0 {
            return q;
        }
        let half = 1u64 << (s - 1);
        // q <= 2^62 here, so q + 1 cannot overflow.
        q + (rem > half || (rem == half && q & 1 == 1)) as i64
    }
    #[inline]
    fn shr32(&mut self, x: i32, s: u32) -> i32 {
        if s == 0 {
            return x;
        }
        let s = s.min(31);
        // On a microcontroller, where x + 2^(s−1) fits (all but the largest x; where a caller's operands bound x,
        // the compiler drops the test): three steps. A host keeps the branch-free form below, which its loops
        // vectorize (with the branch, I1F15 gradient clipping measured 1.5× the time).
        #[cfg(target_os = "none")]
        if let Some(u) = x.checked_add(1 << (s - 1)) {
            return nearest_even_biased(u - 1, s);
        }
        let (q, rem, half) = (x >> s, (x as u32) & ((1u32 << s) - 1), 1u32 << (s - 1));
        // Up when rem > half, or rem = half and q is odd: exactly when rem + (half − 1) + (q & 1) reaches 2^s,
        // which the shift reads off without a compare (the sum is below 2^s + 2^(s−1) ≤ 3·2^30: no wrap). |q| ≤
        // 2^30 here, so q + 1 cannot overflow.
        q + ((rem + (half - 1) + (q & 1) as u32) >> s) as i32
    }
    #[inline]
    fn round_up(&mut self, below: f64, gap: f64, lo_is_even: bool) -> bool {
        let twice = below * 2.0;
        twice > gap || (twice == gap && !lo_is_even)
    }
    #[inline]
    fn round_frac(&mut self, q: i64, rem: u64, den: u64) -> i64 {
        let (twice, den) = (2 * rem.min(den.saturating_sub(1)) as u128, den as u128);
        q.saturating_add((den > 0 && (twice > den || (twice == den && q & 1 == 1))) as i64)
    }
    fn name(&self) -> &'static str {
        "nearest"
    }
    fn stateless(&self) -> bool {
        true
    }
    fn nearest_even(&self) -> bool {
        true
    }
}

impl<R: Rng> Rounding for Stochastic<R> {
    #[inline]
    fn shr(&mut self, x: i64, s: u32) -> i64 {
        let (q, rem, s) = split(x, s);
        if s == 0 {
            return q;
        }
        let u = self.0.next_u64() & ((1u64 << s) - 1);
        // P(carry) = rem / 2^s exactly, so E[result] = x / 2^s.
        q + ((rem + u) >> s) as i64
    }
    #[inline]
    fn round_up(&mut self, below: f64, gap: f64, _lo_is_even: bool) -> bool {
        // u uniform on [0, 1) with 53 random bits.
        let u = (self.0.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        u * gap < below
    }
    #[inline]
    fn round_frac(&mut self, q: i64, rem: u64, den: u64) -> i64 {
        // u uniform on [0, den) (multiply-shift; bias below 2^-64 relative): P(up) = rem / den.
        let u = ((self.0.next_u64() as u128 * den as u128) >> 64) as u64;
        q.saturating_add((rem.min(den.saturating_sub(1)) > u) as i64)
    }
    fn name(&self) -> &'static str {
        "stochastic"
    }
}

/// The three modes as one runtime-selectable value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnyRounding<R> {
    /// [`Floor`].
    Floor,
    /// [`NearestEven`].
    NearestEven,
    /// [`Stochastic`] over the given RNG.
    Stochastic(R),
}

impl<R: Rng> Rounding for AnyRounding<R> {
    #[inline]
    fn shr(&mut self, x: i64, s: u32) -> i64 {
        match self {
            AnyRounding::Floor => Floor.shr(x, s),
            AnyRounding::NearestEven => NearestEven.shr(x, s),
            AnyRounding::Stochastic(r) => Stochastic(r).shr(x, s),
        }
    }
    #[inline]
    fn shr32(&mut self, x: i32, s: u32) -> i32 {
        match self {
            AnyRounding::Floor => Floor.shr32(x, s),
            AnyRounding::NearestEven => NearestEven.shr32(x, s),
            AnyRounding::Stochastic(r) => Stochastic(r).shr32(x, s),
        }
    }
    #[inline]
    fn round_up(&mut self, below: f64, gap: f64, lo_is_even: bool) -> bool {
        match self {
            AnyRounding::Floor => false,
            AnyRounding::NearestEven => NearestEven.round_up(below, gap, lo_is_even),
            AnyRounding::Stochastic(r) => Stochastic(r).round_up(below, gap, lo_is_even),
        }
    }
    #[inline]
    fn round_frac(&mut self, q: i64, rem: u64, den: u64) -> i64 {
        match self {
            AnyRounding::Floor => q,
            AnyRounding::NearestEven => NearestEven.round_frac(q, rem, den),
            AnyRounding::Stochastic(r) => Stochastic(r).round_frac(q, rem, den),
        }
    }
    fn name(&self) -> &'static str {
        match self {
            AnyRounding::Floor => "floor",
            AnyRounding::NearestEven => "nearest",
            AnyRounding::Stochastic(_) => "stochastic",
        }
    }
    fn stateless(&self) -> bool {
        !matches!(self, AnyRounding::Stochastic(_))
    }
    fn nearest_even(&self) -> bool {
        matches!(self, AnyRounding::NearestEven)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand_core::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro128PlusPlus;

    /// Test inputs `(k, x)` for `k` in `0..count`: `x` is `edges[k % period]` where that exists, otherwise
    /// `random(rng, k)` from a generator seeded with `seed`. It draws at every `k`, edges included, so a
    /// test's random values do not depend on how many edges it lists.
    pub(crate) fn edges_then_random<T: Copy>(
        seed: u64,
        edges: &[T],
        period: usize,
        count: u32,
        mut random: impl FnMut(&mut Xoshiro128PlusPlus, u32) -> T,
    ) -> impl Iterator<Item = (u32, T)> {
        let mut rng = Xoshiro128PlusPlus::seed_from_u64(seed);
        (0..count).map(move |k| {
            let r = random(&mut rng, k);
            (k, edges.get(k as usize % period).copied().unwrap_or(r))
        })
    }

    #[test]
    fn shr32_equals_the_64_bit_shift_in_every_mode() {
        let edges = [
            0,
            1,
            -1,
            2,
            -2,
            3,
            i32::MAX,
            i32::MIN,
            i32::MIN + 1,
            1 << 30,
            -(1 << 30),
        ];
        let random = |r: &mut Xoshiro128PlusPlus, _| r.next_u32() as i32;
        for (k, x) in edges_then_random(11, &edges, 64, 200_000, random) {
            let s = k % 32;
            assert_eq!(Floor.shr32(x, s) as i64, Floor.shr(x as i64, s), "{x} {s}");
            assert_eq!(
                NearestEven.shr32(x, s) as i64,
                NearestEven.shr(x as i64, s),
                "{x} {s}"
            );
            let (mut a, mut b) = (
                Stochastic(Xoshiro128PlusPlus::seed_from_u64(k as u64)),
                Stochastic(Xoshiro128PlusPlus::seed_from_u64(k as u64)),
            );
            assert_eq!(a.shr32(x, s) as i64, b.shr(x as i64, s), "{x} {s}");
        }
    }

    #[test]
    fn floor_and_nearest_small_cases() {
        // 5/4 = 1.25, -5/4 = -1.25, 6/4 = 1.5, 10/4 = 2.5, -6/4 = -1.5
        assert_eq!(Floor.shr(5, 2), 1);
        assert_eq!(Floor.shr(-5, 2), -2);
        assert_eq!(NearestEven.shr(5, 2), 1);
        assert_eq!(NearestEven.shr(-5, 2), -1);
        assert_eq!(NearestEven.shr(6, 2), 2);
        assert_eq!(NearestEven.shr(10, 2), 2);
        assert_eq!(NearestEven.shr(-6, 2), -2);
        assert_eq!(NearestEven.shr(-10, 2), -2);
        assert_eq!(NearestEven.shr(7, 0), 7);
    }

    #[test]
    fn quotient_rounding() {
        // 7/3 = 2 + 1/3, 8/3 = 2 + 2/3, 5/2 = 2 + 1/2, 7/2 = 3 + 1/2
        assert_eq!(Floor.round_frac(2, 2, 3), 2);
        assert_eq!(NearestEven.round_frac(2, 1, 3), 2);
        assert_eq!(NearestEven.round_frac(2, 2, 3), 3);
        assert_eq!(NearestEven.round_frac(2, 1, 2), 2);
        assert_eq!(NearestEven.round_frac(3, 1, 2), 4);
        assert_eq!(NearestEven.round_frac(i64::MAX, 9, 10), i64::MAX);
        assert_eq!(NearestEven.round_frac(1, 5, 0), 1);
        let mut st = Stochastic(Xoshiro128PlusPlus::seed_from_u64(9));
        let n = 100_000;
        // P(up) = rem/den; 3/8 also tells it from P(u = rem) = 1/8 and P(u > rem) = 4/8 (1/3 cannot).
        for (rem, den) in [(1u64, 3u64), (3, 8)] {
            let p = rem as f64 / den as f64;
            let ups: i64 = (0..n).map(|_| st.round_frac(0, rem, den)).sum();
            let sigma = (n as f64 * p * (1.0 - p)).sqrt();
            assert!(
                (ups as f64 - n as f64 * p).abs() < 4.0 * sigma,
                "{rem}/{den}: {ups}"
            );
        }
    }

    #[test]
    fn extreme_shifts_are_total() {
        let mut st = Stochastic(Xoshiro128PlusPlus::seed_from_u64(1));
        for x in [i64::MIN, i64::MAX, -1, 0, 1] {
            for s in [0, 1, 31, 62, 63, 64, 200] {
                let f = Floor.shr(x, s);
                let n = NearestEven.shr(x, s);
                let r = st.shr(x, s);
                assert!(n == f || n == f + 1);
                assert!(r == f || r == f + 1);
            }
        }
    }

    #[test]
    fn stochastic_rounds_to_a_neighbour_with_the_right_frequency() {
        let mut st = Stochastic(Xoshiro128PlusPlus::seed_from_u64(7));
        let n = 100_000;
        // 3/16 of an LSB: P(up) = 0.1875.
        let ups: i64 = (0..n).map(|_| st.shr(3, 4)).sum();
        let p = 3.0 / 16.0;
        let sigma = (p * (1.0 - p) * n as f64).sqrt();
        assert!(((ups as f64) - p * n as f64).abs() < 4.0 * sigma, "{ups}");
    }

    #[test]
    fn a_borrowed_mode_rounds_as_the_mode() {
        // Generic code passes `&mut r` on; the borrow must answer exactly as `r` would.
        fn all<R: Rounding>(mut r: R) -> (i64, i32, bool, i64, &'static str) {
            (
                r.shr(-7, 1),
                r.shr32(5, 1),
                r.round_up(0.75, 1.0, true),
                r.round_frac(3, 1, 2),
                r.name(),
            )
        }
        assert_eq!(all(&mut NearestEven), all(NearestEven));
        assert_eq!(all(&mut Floor), all(Floor));
        assert_eq!(all(&mut NearestEven), (-4, 2, true, 4, "nearest"));
        assert_eq!(all(&mut Floor), (-4, 2, false, 3, "floor"));
        // The run-time choice answers as the mode it holds, random draws included.
        type Any = AnyRounding<Xoshiro128PlusPlus>;
        assert_eq!(all(Any::Floor), all(Floor));
        assert_eq!(all(Any::NearestEven), all(NearestEven));
        for seed in 0..8 {
            let rng = || Xoshiro128PlusPlus::seed_from_u64(seed);
            let any = all(Any::Stochastic(rng()));
            assert_eq!(any, all(Stochastic(rng())));
            assert_eq!(any.4, "stochastic");
        }
    }

    /// `nearest_even_wrapping64` at every shift, on the edges of `i64` and of the SGD update's range
    /// (|x| ≤ 2^62), exact ties of both parities and seeded random values of every magnitude: equal to the exact
    /// quotient rounded to nearest-even (an `i128` reference) wherever `x + 2^(s−1)` fits `i64`, and exactly
    /// `−2^(63−s)` where it does not (the value the callers' saturation by the sign of `x` relies on).
    #[test]
    fn wrapping_64_bit_form_equals_nearest_even() {
        let edges = [
            i64::MAX,
            i64::MAX - 1,
            i64::MIN,
            i64::MIN + 1,
            1 << 62,
            -(1 << 62),
            0,
            1,
            -1,
            3 << 60,
            -(3 << 60),
            (1 << 40) + (1 << 15),
            (3 << 40) + (1 << 15),
            -(1 << 40) - (1 << 15),
        ];
        // Every edge meets every shift (17 and 62 are coprime); random values at every magnitude between.
        let random = |r: &mut Xoshiro128PlusPlus, k: u32| (r.next_u64() as i64) >> (k % 64);
        let (mut ties, mut tested, mut wrapped) = (0, 0, 0);
        for (k, x) in edges_then_random(23, &edges, 17, 400_000, random) {
            let s = 1 + k % 62;
            let got = nearest_even_wrapping64(x, s) as i128;
            if x.checked_add(1 << (s - 1)).is_none() {
                wrapped += 1;
                assert_eq!(got, -(1i128 << (63 - s)), "x = {x}, s = {s}");
                continue;
            }
            // floor(x / 2^s) and the remainder, in i128; up on more than half, or on half with an odd floor.
            let (q, rem, half) = (
                (x as i128) >> s,
                (x as i128) & ((1i128 << s) - 1),
                1i128 << (s - 1),
            );
            ties += (rem == half) as u32;
            tested += 1;
            let want = q + (rem > half || (rem == half && q & 1 == 1)) as i128;
            assert_eq!(got, want, "x = {x}, s = {s}");
        }
        assert!(
            ties > 100 && tested > 300_000 && wrapped >= 2,
            "{ties} ties and {wrapped} wrapped sums in {tested} values"
        );
    }

    /// The microcontrollers' three-step form of `NearestEven::shr32` (hosts compile the other one), under the
    /// same guard: equal to the 64-bit nearest-even shift wherever `x + 2^(s−1)` fits, the edges included.
    #[test]
    fn biased_form_equals_the_64_bit_shift_where_it_applies() {
        let edges = [
            i32::MAX,
            i32::MAX - 1,
            i32::MIN,
            i32::MIN + 1,
            0,
            1,
            -1,
            3 << 29,
            -(3 << 29),
        ];
        let random = |r: &mut Xoshiro128PlusPlus, _| r.next_u32() as i32;
        for (k, x) in edges_then_random(17, &edges, 40, 200_000, random) {
            let s = 1 + k % 31;
            if let Some(u) = x.checked_add(1 << (s - 1)) {
                let want = NearestEven.shr(x as i64, s);
                assert_eq!(
                    nearest_even_biased(u - 1, s) as i64,
                    want,
                    "x = {x}, s = {s}"
                );
            } else {
                assert!(x > i32::MAX - (1 << (s - 1)), "x = {x}, s = {s}");
            }
        }
    }
}
