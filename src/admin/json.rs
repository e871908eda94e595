//! The JSON shapes of the admin API: a pool, a server, a recorded change.
//! The fields are documented with the endpoints, in [`super`].

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::config::BalanceConfig;
use crate::upstream::{Change, Health, Pool, Server};

/// A pool and its servers, as `GET /api/pools/{pool}` shows it.
#[derive(Debug, Serialize)]
pub struct PoolView {
    pub name: String,
    pub balance: &'static str,
    pub max_connections: Option<usize>,
    pub queue_size: usize,
    pub queued: usize,
    pub servers: Vec<ServerView>,
}

impl PoolView {
    pub fn of(pool: &Pool) -> PoolView {
        PoolView {
            name: pool.name().to_owned(),
            balance: balance_name(pool.config.balance),
            max_connections: pool.config.max_connections,
            queue_size: pool.config.queue_size,
            queued: pool.queued(),
            servers: pool.servers.iter().map(|s| ServerView::of(s)).collect(),
        }
    }
}

/// One server's live state.
#[derive(Debug, Serialize)]
pub struct ServerView {
    pub address: String,
    pub weight: u32,
    pub active: usize,
    pub idle_connections: usize,
    pub serving: bool,
    pub health: HealthView,
    pub admin: &'static str,
    pub ejected: bool,
    pub ejected_remaining_ms: Option<u64>,
    /// Most recent first.
    pub history: Vec<ChangeView>,
}

impl ServerView {
    pub fn of(server: &Server) -> ServerView {
        let state = server.state();
        let now = Instant::now();
        let ejected_remaining = state
            .ejected_until
            .and_then(|until| until.checked_duration_since(now))
            .filter(|remaining| !remaining.is_zero());
        ServerView {
            address: server.address.to_string(),
            weight: server.weight(),
            active: server.active(),
            idle_connections: server.idle.len(),
            serving: server.is_serving(),
            health: HealthView::of(state.health),
            admin: state.admin.name(),
            ejected: ejected_remaining.is_some(),
            // Rounded up, so that an ejected server never shows 0 ms left.
            ejected_remaining_ms: ejected_remaining
                .map(|d| u64::try_from(d.as_micros().div_ceil(1000)).unwrap_or(u64::MAX)),
            history: state.history.iter().rev().map(ChangeView::of).collect(),
        }
    }
}

/// `{"state": "rising", "count": 1}`: the count of checks in a row behind a
/// rising or falling server; null when up or down.
#[derive(Debug, Serialize)]
pub struct HealthView {
    pub state: &'static str,
    pub count: Option<u32>,
}

impl HealthView {
    fn of(health: Health) -> HealthView {
        let count = match health {
            Health::Rising(n) | Health::Falling(n) => Some(n),
            Health::Up | Health::Down => None,
        };
        HealthView {
            state: health.name(),
            count,
        }
    }
}

/// One recorded change of health or admin state.
#[derive(Debug, Serialize)]
pub struct ChangeView {
    pub what: String,
    pub cause: String,
    /// RFC 3339, UTC, in milliseconds.
    pub at: String,
    pub at_unix_ms: i64,
}

impl ChangeView {
    fn of(change: &Change) -> ChangeView {
        let at_unix_ms = unix_ms(change.at);
        ChangeView {
            what: change.what.clone(),
            cause: change.cause.clone(),
            at: rfc3339_utc(at_unix_ms),
            at_unix_ms,
        }
    }
}

fn balance_name(balance: BalanceConfig) -> &'static str {
    match balance {
        BalanceConfig::RoundRobin => "round_robin",
        BalanceConfig::LeastConn => "least_conn",
        BalanceConfig::RandomTwo => "random_two",
    }
}

/// Milliseconds since the Unix epoch (negative before it), saturating.
pub(crate) fn unix_ms(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

/// `2025-01-31T12:00:00.123Z` for a time in Unix milliseconds.
pub(crate) fn rfc3339_utc(unix_ms: i64) -> String {
    let days = unix_ms.div_euclid(86_400_000);
    let ms_of_day = unix_ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60);
    let (second, millis) = (ms_of_day / 1000 % 60, ms_of_day % 1000);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis:03}Z")
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_utc(1_738_324_800_123), "2025-01-31T12:00:00.123Z");
        assert_eq!(rfc3339_utc(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
        assert_eq!(rfc3339_utc(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn unix_ms_counts_both_ways_from_the_epoch() {
        assert_eq!(unix_ms(UNIX_EPOCH + Duration::from_millis(1500)), 1500);
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_millis(1500)), -1500);
    }

    #[test]
    fn health_counts_only_rising_and_falling() {
        let view = |h| {
            let v = HealthView::of(h);
            (v.state, v.count)
        };
        assert_eq!(view(Health::Up), ("up", None));
        assert_eq!(view(Health::Down), ("down", None));
        assert_eq!(view(Health::Rising(1)), ("rising", Some(1)));
        assert_eq!(view(Health::Falling(2)), ("falling", Some(2)));
    }
}
