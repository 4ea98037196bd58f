//! The link model (pure): what happens to one datagram sent over a link, decided from the
//! link's parameters and the simulation's RNG.

use std::time::Duration;

use crate::rng::SimRng;

/// The behaviour of a one-way link between two hosts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// One-way base delay.
    pub latency: Duration,
    /// Extra delay, uniform in `[0, jitter]`, drawn per datagram.
    pub jitter: Duration,
    /// Probability a datagram is lost.
    pub loss: f64,
    /// Probability a delivered datagram arrives twice.
    pub duplicate: f64,
    /// Probability a datagram is held back by up to `reorder_delay` more, so later ones pass it.
    pub reorder: f64,
    /// The most a reordered datagram is held back.
    pub reorder_delay: Duration,
}

impl Default for Link {
    /// A clean wired LAN: 250 µs one way, no jitter, no loss.
    fn default() -> Self {
        Self {
            latency: Duration::from_micros(250),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
        }
    }
}

/// What the link does with one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Dropped on the way.
    Lost,
    /// Arrives after `first`, and again after `again` when the link duplicated it.
    Deliver {
        /// Delay of the first copy.
        first: Duration,
        /// Delay of the duplicate, if any.
        again: Option<Duration>,
    },
}

impl Link {
    /// A link with this latency and otherwise clean.
    pub fn with_latency(latency: Duration) -> Self {
        Self {
            latency,
            ..Self::default()
        }
    }

    /// A link that loses `loss` of its datagrams.
    pub fn lossy(self, loss: f64) -> Self {
        Self { loss, ..self }
    }

    /// Decides one datagram's fate. Draws from `rng` in a fixed order so a seed replays.
    pub fn decide(&self, rng: &mut SimRng) -> Decision {
        if rng.chance(self.loss) {
            return Decision::Lost;
        }
        let first = self.delay(rng);
        let again = rng.chance(self.duplicate).then(|| self.delay(rng));
        Decision::Deliver { first, again }
    }

    fn delay(&self, rng: &mut SimRng) -> Duration {
        let mut d = self.latency + rng.up_to(self.jitter);
        if rng.chance(self.reorder) {
            d += rng.up_to(self.reorder_delay);
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(link: Link, n: usize, seed: u64) -> Vec<Decision> {
        let mut rng = SimRng::new(seed);
        (0..n).map(|_| link.decide(&mut rng)).collect()
    }

    #[test]
    fn clean_link_delivers_everything_once_at_its_latency() {
        let link = Link::with_latency(Duration::from_millis(2));
        for d in run(link, 1000, 1) {
            assert_eq!(
                d,
                Decision::Deliver {
                    first: Duration::from_millis(2),
                    again: None
                }
            );
        }
    }

    #[test]
    fn loss_rate_is_close_to_the_setting() {
        let lost = run(Link::default().lossy(0.05), 100_000, 2)
            .iter()
            .filter(|d| **d == Decision::Lost)
            .count();
        assert!((4_500..5_500).contains(&lost), "{lost}");
        assert!(run(Link::default().lossy(1.0), 100, 2)
            .iter()
            .all(|d| *d == Decision::Lost));
    }

    #[test]
    fn jitter_reorder_and_duplicates_stay_in_bounds() {
        let link = Link {
            latency: Duration::from_millis(1),
            jitter: Duration::from_millis(4),
            duplicate: 0.1,
            reorder: 0.2,
            reorder_delay: Duration::from_millis(10),
            ..Link::default()
        };
        let (mut dups, mut late, mut varied) = (0, 0, false);
        for d in run(link, 10_000, 3) {
            let Decision::Deliver { first, again } = d else {
                panic!("no loss configured");
            };
            for x in std::iter::once(first).chain(again) {
                assert!(x >= Duration::from_millis(1));
                assert!(x <= Duration::from_millis(15));
                if x > Duration::from_millis(5) {
                    late += 1;
                }
                varied |= x != first;
            }
            dups += usize::from(again.is_some());
        }
        assert!((800..1_200).contains(&dups), "{dups}");
        // Only reordered datagrams can take longer than latency + jitter.
        assert!((500..2_000).contains(&late), "{late}");
        assert!(varied, "duplicates draw their own delay");
    }

    #[test]
    fn a_seed_replays_the_same_decisions() {
        let link = Link {
            jitter: Duration::from_millis(3),
            loss: 0.1,
            duplicate: 0.1,
            reorder: 0.1,
            reorder_delay: Duration::from_millis(5),
            ..Link::default()
        };
        assert_eq!(run(link, 500, 9), run(link, 500, 9));
        assert_ne!(run(link, 500, 9), run(link, 500, 10));
    }
}
