//! The simulation's one source of randomness: every random choice of a run (packet fates,
//! jitter, node keys, quinn's endpoint seeds) is drawn from a [`SimRng`] seeded by the run's
//! seed, so a seed names one run exactly.

use std::time::Duration;

use meshcc::mesh::alloc::SplitMix64;

/// A seeded generator with the helpers the simulation needs.
#[derive(Debug, Clone)]
pub struct SimRng(SplitMix64);

impl SimRng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(SplitMix64::new(seed))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A uniform number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        // 53 random bits: every value is exactly representable.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p` (never for `p <= 0`, always for `p >= 1`).
    pub fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        self.unit() < p
    }

    /// A duration uniform in `[0, max]`, in whole microseconds.
    pub fn up_to(&mut self, max: Duration) -> Duration {
        let us = max.as_micros().min(u128::from(u64::MAX)) as u64;
        if us == 0 {
            return Duration::ZERO;
        }
        Duration::from_micros(self.next_u64() % (us + 1))
    }

    /// 32 random bytes (key seeds, quinn RNG seeds).
    pub fn bytes32(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for chunk in out.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_bounds_hold() {
        let mut a = SimRng::new(7);
        let mut b = SimRng::new(7);
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
            let u = a.unit();
            assert_eq!(u, b.unit());
            assert!((0.0..1.0).contains(&u));
            let d = a.up_to(Duration::from_millis(3));
            assert_eq!(d, b.up_to(Duration::from_millis(3)));
            assert!(d <= Duration::from_millis(3));
        }
        assert_ne!(SimRng::new(1).bytes32(), SimRng::new(2).bytes32());
    }

    #[test]
    fn chance_extremes_and_rate() {
        let mut r = SimRng::new(3);
        assert!((0..1000).all(|_| !r.chance(0.0)));
        assert!((0..1000).all(|_| r.chance(1.0)));
        assert_eq!(r.up_to(Duration::ZERO), Duration::ZERO);
        let hits = (0..100_000).filter(|_| r.chance(0.05)).count();
        assert!((4_500..5_500).contains(&hits), "{hits}");
    }
}
