//! When checks run: a random first delay, then `interval` with jitter.
//!
//! Servers of a pool that started together would otherwise be checked in
//! lockstep, and every pool of every wharf instance would probe at the same
//! instants. These are pure functions of the interval and a random number in
//! `[0, 1)`, so that they are tested without a clock or a generator.

use std::time::Duration;

/// How far a delay may stray from the interval, as a fraction of it.
pub const JITTER: f64 = 0.1;

/// The delay before a server's first check: `interval × random`, in
/// `[0, interval)` for `random` in `[0, 1)`.
pub fn initial_delay(interval: Duration, random: f64) -> Duration {
    scale(interval, unit(random))
}

/// The delay from one check's start to the next: `interval` ± up to
/// [`JITTER`] of it, `random` 0 giving the shortest and 1 the longest.
pub fn next_delay(interval: Duration, random: f64) -> Duration {
    scale(interval, 1.0 - JITTER + 2.0 * JITTER * unit(random))
}

/// `random` clamped to `[0, 1]`; a NaN counts as the middle.
fn unit(random: f64) -> f64 {
    if random.is_nan() {
        0.5
    } else {
        random.clamp(0.0, 1.0)
    }
}

/// `duration × factor`, without the panic of [`Duration::mul_f64`] on overflow.
fn scale(duration: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(duration.as_secs_f64() * factor).unwrap_or(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_millis(1000);

    #[test]
    fn initial_delay_spans_zero_to_the_interval() {
        assert_eq!(initial_delay(INTERVAL, 0.0), Duration::ZERO);
        assert_eq!(initial_delay(INTERVAL, 0.25), Duration::from_millis(250));
        let almost = initial_delay(INTERVAL, 0.999_999);
        assert!(
            almost < INTERVAL && almost > Duration::from_millis(999),
            "{almost:?}"
        );
    }

    #[test]
    fn next_delay_stays_within_ten_percent_of_the_interval() {
        assert_eq!(next_delay(INTERVAL, 0.0), Duration::from_millis(900));
        assert_eq!(next_delay(INTERVAL, 0.5), INTERVAL);
        assert_eq!(next_delay(INTERVAL, 1.0), Duration::from_millis(1100));
        for i in 0..=100 {
            let delay = next_delay(INTERVAL, f64::from(i) / 100.0);
            assert!(
                (Duration::from_millis(900)..=Duration::from_millis(1100)).contains(&delay),
                "{i}: {delay:?}"
            );
        }
    }

    #[test]
    fn delays_grow_with_the_random_value() {
        let mut last = Duration::ZERO;
        for i in 0..=100 {
            let delay = next_delay(INTERVAL, f64::from(i) / 100.0);
            assert!(delay >= last, "{i}: {delay:?} < {last:?}");
            last = delay;
        }
    }

    #[test]
    fn out_of_range_random_values_are_clamped() {
        assert_eq!(next_delay(INTERVAL, -3.0), Duration::from_millis(900));
        assert_eq!(next_delay(INTERVAL, 7.0), Duration::from_millis(1100));
        assert_eq!(next_delay(INTERVAL, f64::NAN), INTERVAL);
        assert_eq!(initial_delay(INTERVAL, f64::INFINITY), INTERVAL);
        assert_eq!(
            initial_delay(INTERVAL, f64::NAN),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn huge_intervals_do_not_panic() {
        assert_eq!(next_delay(Duration::MAX, 1.0), Duration::MAX);
        assert!(next_delay(Duration::MAX, 0.0) < Duration::MAX);
        assert!(initial_delay(Duration::MAX, 0.5) < Duration::MAX);
    }
}
