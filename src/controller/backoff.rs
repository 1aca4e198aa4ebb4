//! How the operator's watches retry after an error. kube-runtime's default
//! backoff doubles up to 30 s and, inside a Controller, pauses every trigger
//! watch *and* the cache reconciles read from; a restarted API server answers
//! 403 for a few seconds (its RBAC authorizer warming up), so the default left
//! reconciles running on a frozen cache for 10–20 s. Revocation cannot wait
//! that long: retry at a short, steady pace instead.

use std::time::Duration;

use kube::runtime::utils::Backoff;

/// The first retry after `first`, every later one after `then`.
#[derive(Clone, Debug)]
pub struct Steady {
    first: Duration,
    then: Duration,
    failures: u32,
}

impl Steady {
    pub fn new(first: Duration, then: Duration) -> Steady {
        Steady { first, then, failures: 0 }
    }
}

/// What every watch of the operator uses: 250 ms, then once a second.
pub fn watches() -> Steady {
    Steady::new(Duration::from_millis(250), Duration::from_secs(1))
}

impl Iterator for Steady {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.failures = self.failures.saturating_add(1);
        Some(if self.failures == 1 { self.first } else { self.then })
    }
}

impl Backoff for Steady {
    fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_waits_longer_than_a_second_and_starts_over_after_success() {
        let mut b = watches();
        let waits: Vec<_> = (&mut b).take(20).collect();
        assert_eq!(waits[0], Duration::from_millis(250));
        assert!(waits[1..].iter().all(|w| *w == Duration::from_secs(1)), "{waits:?}");
        b.reset();
        assert_eq!(b.next(), Some(Duration::from_millis(250)));
    }
}
