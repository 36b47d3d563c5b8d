//! Waiting for AWS to converge: poll with short, growing intervals and return as soon as the object is
//! ready; never a fixed sleep. Bounded retries for eventual consistency and DependencyViolation.

use std::future::Future;
use std::time::Duration;

use tokio::time::{Instant, sleep};

use super::error::{AwsError, ErrorClass};

pub const FIRST_POLL: Duration = Duration::from_millis(25);
pub const MAX_POLL: Duration = Duration::from_secs(5);

/// Creating, modifying and deleting EC2 network objects; overridable per resource by a `timeouts` block.
pub const CREATE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
pub const DELETE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// How long a freshly created object may stay invisible to Describe calls (eventual consistency).
pub const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(2 * 60);

/// What one poll of an object's status found.
#[derive(Debug)]
pub enum Status<T> {
    /// Not there yet; the text names the current state for the timeout message.
    Pending(String),
    Ready(T),
}

/// The growing poll interval: 25 ms, ×1.5 per poll, capped at 5 s.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: FIRST_POLL }
    }
}

impl Backoff {
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next.mul_f64(1.5)).min(MAX_POLL);
        d
    }
}

/// Polls `status` until it reports `Ready`, an error, or `timeout` passes.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut status: F) -> Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Status<T>, AwsError>>,
{
    let deadline = Instant::now() + timeout;
    let mut backoff = Backoff::default();
    loop {
        let last = match status().await? {
            Status::Ready(v) => return Ok(v),
            Status::Pending(state) => state,
        };
        if Instant::now() >= deadline {
            return Err(AwsError::local(
                ErrorClass::Other,
                format!("timed out after {timeout:?} waiting for {what} (last state: {last})"),
            ));
        }
        sleep(backoff.next_delay().min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// Runs `op` again while it fails with an error of class `retry_on`, for at most `timeout`.
pub async fn retry_while<T, F, Fut>(retry_on: ErrorClass, timeout: Duration, mut op: F) -> Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AwsError>>,
{
    let deadline = Instant::now() + timeout;
    let mut backoff = Backoff::default();
    loop {
        match op().await {
            Err(e) if e.class == retry_on && Instant::now() < deadline => {
                tracing::debug!(error = %e, "retrying");
                sleep(backoff.next_delay().min(deadline.saturating_duration_since(Instant::now()))).await;
            }
            other => return other,
        }
    }
}

/// The duration the resource's `timeouts` block gives for `op` ("create", "update", "delete"), else `default`.
pub fn timeout_for(state: &crate::framework::Value, op: &str, default: Duration) -> Duration {
    state.attr("timeouts").attr(op).as_str().and_then(|t| parse_duration(t).ok()).unwrap_or(default)
}

/// Parses a `timeouts` block value such as "10m", "90s", "1h30m".
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let mut total = 0u64;
    let mut digits = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: u64 = digits.parse().map_err(|_| format!("{text:?} is not a duration such as 10m or 90s"))?;
        digits.clear();
        total += match c {
            'h' => n * 3600,
            'm' => n * 60,
            's' => n,
            _ => return Err(format!("{text:?} is not a duration such as 10m or 90s")),
        };
    }
    if !digits.is_empty() || text.trim().is_empty() {
        return Err(format!("{text:?} is not a duration such as 10m or 90s"));
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut b = Backoff::default();
        let first = b.next_delay();
        let second = b.next_delay();
        assert!(second > first);
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.next_delay(), MAX_POLL);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_returns_as_soon_as_ready() {
        let polls = Cell::new(0);
        let v = wait_for("thing", Duration::from_secs(10), || {
            polls.set(polls.get() + 1);
            let n = polls.get();
            async move { Ok(if n < 3 { Status::Pending("pending".into()) } else { Status::Ready(n) }) }
        })
        .await
        .unwrap();
        assert_eq!(v, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_times_out_naming_the_last_state() {
        let err = wait_for::<(), _, _>("VPC vpc-1", Duration::from_secs(1), || async {
            Ok(Status::Pending("pending".into()))
        })
        .await
        .unwrap_err();
        assert!(err.message.contains("VPC vpc-1") && err.message.contains("pending"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_stops_on_other_errors_and_is_bounded() {
        let calls = Cell::new(0);
        let r: Result<(), _> = retry_while(ErrorClass::DependencyViolation, Duration::from_secs(2), || {
            calls.set(calls.get() + 1);
            async { Err(AwsError::local(ErrorClass::DependencyViolation, "busy")) }
        })
        .await;
        assert!(r.is_err());
        assert!(calls.get() > 1 && calls.get() < 100);
        let calls2 = Cell::new(0);
        let _: Result<(), _> = retry_while(ErrorClass::DependencyViolation, Duration::from_secs(2), || {
            calls2.set(calls2.get() + 1);
            async { Err(AwsError::local(ErrorClass::Other, "no")) }
        })
        .await;
        assert_eq!(calls2.get(), 1);
    }

    #[test]
    fn timeouts_block_overrides_the_default() {
        use crate::framework::Value;
        let state =
            Value::object([("timeouts", Value::object([("create", Value::from("2m")), ("delete", Value::Null)]))]);
        assert_eq!(timeout_for(&state, "create", CREATE_TIMEOUT), Duration::from_secs(120));
        assert_eq!(timeout_for(&state, "delete", DELETE_TIMEOUT), DELETE_TIMEOUT);
        assert_eq!(timeout_for(&Value::Null, "create", CREATE_TIMEOUT), CREATE_TIMEOUT);
    }

    #[test]
    fn durations_parse_like_terraform_timeouts() {
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h30m5s").unwrap(), Duration::from_secs(5405));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("ten minutes").is_err());
    }
}
