//! When the `http` sink tries again after a request that may succeed later (a 5xx, a
//! 408 or 429, a refused connection, a timeout), and when it stops trying.
//!
//! The budget is time, not a count: the receiver may be down for a minute (a deploy, a
//! restart) and every alert must still arrive once it is back, in order. So failures
//! are counted as one **streak** from the first failure after a success: while the
//! streak is younger than `retry_for_secs`, the failed event waits and is tried again
//! (the events behind it wait too, and the pipeline slows its sources). Once the streak
//! is older, each event gets one attempt and becomes a dead letter if that fails too, so
//! that a receiver gone for good drains the pipeline into the dead-letter route instead
//! of holding it forever. One success ends the streak.

use std::time::{Duration, Instant, SystemTime};

/// The first wait; each further failure of a streak doubles it, up to `max_backoff`.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// The longest `Retry-After` taken as it is: a server asking for an hour is asked again
/// sooner.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// The retry policy of one sink, and its current streak of failures.
#[derive(Debug)]
pub struct Schedule {
    budget: Duration,
    max_backoff: Duration,
    streak: Option<Streak>,
}

#[derive(Debug)]
struct Streak {
    since: Instant,
    attempts: u32,
}

/// What to do after a failed attempt.
#[derive(Debug, PartialEq)]
pub enum Next {
    /// Try the same request again after this long.
    RetryIn(Duration),
    /// Give up on this request: the receiver has failed for `failing_for`, over
    /// `attempts` attempts.
    GiveUp { attempts: u32, failing_for: Duration },
}

impl Schedule {
    pub fn new(budget: Duration, max_backoff: Duration) -> Schedule {
        Schedule {
            budget,
            max_backoff,
            streak: None,
        }
    }

    /// The receiver answered (with a success, or a refusal that retrying cannot change).
    pub fn answered(&mut self) {
        self.streak = None;
    }

    /// An attempt failed at `now`; `retry_after` is the wait the server asked for.
    pub fn failed(&mut self, now: Instant, retry_after: Option<Duration>) -> Next {
        let streak = self.streak.get_or_insert(Streak {
            since: now,
            attempts: 0,
        });
        streak.attempts += 1;
        let failing_for = now.saturating_duration_since(streak.since);
        if failing_for >= self.budget {
            return Next::GiveUp {
                attempts: streak.attempts,
                failing_for,
            };
        }
        Next::RetryIn(match retry_after {
            Some(wait) => wait.min(MAX_RETRY_AFTER),
            None => jittered(backoff(streak.attempts, self.max_backoff)),
        })
    }
}

/// The exponential backoff after `attempts` failures, capped.
fn backoff(attempts: u32, cap: Duration) -> Duration {
    let doublings = attempts.saturating_sub(1).min(20);
    (FIRST_BACKOFF * 2u32.pow(doublings)).min(cap)
}

/// Between half of `wait` and all of it, at random: hosts (and sinks) that failed
/// together do not all come back in the same instant.
fn jittered(wait: Duration) -> Duration {
    let half = wait / 2;
    half + half.mul_f64(fastrand::f64())
}

/// A `Retry-After` value as a wait from `now`: delay-seconds, or an HTTP date (a date
/// already past is no wait). `None` for anything else.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(retry_after(" 2 ", now), Some(Duration::from_secs(2)));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        for nonsense in ["-1", "1.5", "soon", ""] {
            assert_eq!(retry_after(nonsense, now), None, "{nonsense}");
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let cap = Duration::from_secs(30);
        assert_eq!(backoff(1, cap), Duration::from_millis(500));
        assert_eq!(backoff(3, cap), Duration::from_secs(2));
        assert_eq!(backoff(10, cap), cap);
        assert_eq!(backoff(u32::MAX, cap), cap);
        for _ in 0..100 {
            let wait = jittered(Duration::from_secs(4));
            assert!((Duration::from_secs(2)..=Duration::from_secs(4)).contains(&wait));
        }
    }

    #[test]
    fn a_streak_retries_within_its_budget_then_gives_up_until_an_answer() {
        let mut schedule = Schedule::new(Duration::from_secs(60), Duration::from_secs(30));
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        assert!(matches!(schedule.failed(at(0), None), Next::RetryIn(_)));
        // The server's own wait wins over the backoff, within reason.
        assert_eq!(
            schedule.failed(at(1), Some(Duration::from_secs(2))),
            Next::RetryIn(Duration::from_secs(2))
        );
        assert_eq!(
            schedule.failed(at(2), Some(Duration::from_secs(86_400))),
            Next::RetryIn(MAX_RETRY_AFTER)
        );
        assert_eq!(
            schedule.failed(at(60), None),
            Next::GiveUp {
                attempts: 4,
                failing_for: Duration::from_secs(60)
            }
        );
        // Still failing: the next request gets one attempt.
        assert!(matches!(schedule.failed(at(61), None), Next::GiveUp { .. }));
        schedule.answered();
        assert!(matches!(schedule.failed(at(62), None), Next::RetryIn(_)));
    }
}
