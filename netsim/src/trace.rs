//! The packet trace: one [`Event`] for every decision the network makes about a datagram, in
//! the order it made them. Two runs with the same seed produce equal traces.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// What happened to a datagram at one point of its way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fate {
    /// Sent; will arrive after this delay.
    InFlight(Duration),
    /// A second copy made by the link; arrives after this delay.
    Duplicated(Duration),
    /// Lost by the link.
    Lost,
    /// Sender and receiver are in different partitions.
    Partitioned,
    /// The sending host is asleep (frozen); nothing leaves it.
    SenderAsleep,
    /// Arrived and queued at the socket bound to the destination.
    Delivered,
    /// Arrived where no socket is bound (host gone, address moved).
    NoSocket,
    /// Arrived at a host that is asleep.
    Asleep,
    /// Arrived at a socket whose queue was full.
    Overflow,
}

/// One decision about one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Event {
    /// Virtual time since the network was made.
    pub at: Duration,
    /// The sender's address.
    pub src: SocketAddr,
    /// The destination address.
    pub dst: SocketAddr,
    /// Payload size in bytes.
    pub size: usize,
    /// What happened.
    pub fate: Fate,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>12.6}s {} -> {} {}B {:?}",
            self.at.as_secs_f64(),
            self.src,
            self.dst,
            self.size,
            self.fate
        )
    }
}

/// The whole trace of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace(pub Vec<Event>);

impl Trace {
    /// Number of events with this fate.
    pub fn count(&self, fate: impl Fn(&Fate) -> bool) -> usize {
        self.0.iter().filter(|e| fate(&e.fate)).count()
    }

    /// The first index at which two traces differ, for a readable failure message.
    pub fn first_difference(&self, other: &Trace) -> Option<usize> {
        let n = self.0.len().min(other.0.len());
        (0..n)
            .find(|&i| self.0[i] != other.0[i])
            .or((self.0.len() != other.0.len()).then_some(n))
    }

    /// Up to `radius` events either side of `index`, one per line.
    pub fn around(&self, index: usize, radius: usize) -> String {
        let lo = index.saturating_sub(radius);
        let hi = (index + radius + 1).min(self.0.len());
        self.0[lo..hi]
            .iter()
            .enumerate()
            .map(|(i, e)| format!("{:>8} {e}\n", lo + i))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ms: u64, fate: Fate) -> Event {
        Event {
            at: Duration::from_millis(ms),
            src: "10.0.0.1:1".parse().unwrap(),
            dst: "10.0.0.2:1".parse().unwrap(),
            size: 100,
            fate,
        }
    }

    #[test]
    fn differences_are_located() {
        let a = Trace(vec![ev(1, Fate::Lost), ev(2, Fate::Delivered)]);
        let mut b = a.clone();
        assert_eq!(a.first_difference(&b), None);
        b.0[1].fate = Fate::NoSocket;
        assert_eq!(a.first_difference(&b), Some(1));
        b.0.truncate(1);
        assert_eq!(a.first_difference(&b), Some(1));
        assert_eq!(a.count(|f| *f == Fate::Lost), 1);
        assert!(a.around(1, 5).contains("Delivered"));
    }
}
