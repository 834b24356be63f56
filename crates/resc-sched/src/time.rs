//! Time as a value: the state machines never read a clock.
//!
//! Every time-dependent call takes a [`Millis`]: milliseconds since an epoch
//! the caller chooses (process start, a simulation's zero, the Unix epoch).
//! A deterministic harness passes a virtual clock; a platform passes the
//! elapsed time of its monotonic clock.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::{Add, Sub};

/// A point in time, or a duration, in milliseconds since a caller-chosen epoch.
///
/// Arithmetic saturates: `Millis(3) - Millis(5)` is `Millis(0)`, and adding
/// to [`Millis::MAX`] stays there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Millis(pub u64);

impl Millis {
    /// The epoch.
    pub const ZERO: Millis = Millis(0);
    /// The far future (a keep-alive that never ends).
    pub const MAX: Millis = Millis(u64::MAX);

    /// `secs` seconds.
    pub const fn from_secs(secs: u64) -> Millis {
        Millis(secs.saturating_mul(1000))
    }

    /// Milliseconds as a plain number.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl Add for Millis {
    type Output = Millis;
    fn add(self, rhs: Millis) -> Millis {
        Millis(self.0.saturating_add(rhs.0))
    }
}

impl Sub for Millis {
    type Output = Millis;
    fn sub(self, rhs: Millis) -> Millis {
        Millis(self.0.saturating_sub(rhs.0))
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ms", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Millis(3) - Millis(5), Millis::ZERO);
        assert_eq!(Millis::MAX + Millis(1), Millis::MAX);
        assert_eq!(Millis::from_secs(2), Millis(2000));
        assert_eq!(Millis(7).to_string(), "7 ms");
    }
}
