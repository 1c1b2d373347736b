//! Wall-clock times as the supervisor writes them (RFC 3339 in UTC, for JSON logs and
//! events) and reads them back, and the local time of day a person is shown.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A time as RFC 3339 in UTC with milliseconds: `2025-01-31T12:00:00.123Z`.
pub fn rfc3339(at: SystemTime) -> String {
    let since_epoch = match at.duration_since(UNIX_EPOCH) {
        Ok(d) => d,
        Err(_) => Duration::ZERO,
    };
    let seconds = since_epoch.as_secs();
    let (year, month, day) = civil_date((seconds / 86_400) as i64);
    let of_day = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        since_epoch.subsec_millis()
    )
}

/// The proleptic Gregorian date (year, month, day) of a count of days since 1970-01-01.
///
/// Counts in 400-year eras of 146,097 days, each year starting on 1 March so that the
/// leap day is the last day of its year; then shifts back to January-based months.
fn civil_date(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let march_month = (5 * day_of_year + 2) / 153; // 0 = March .. 11 = February
    let day = (day_of_year - (153 * march_month + 2) / 5 + 1) as u32;
    let month = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The count of days since 1970-01-01 of a proleptic Gregorian date (the inverse of
/// `civil_date`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = year - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let march_month = i64::from((month + 9) % 12); // 0 = March .. 11 = February
    let day_of_year = (153 * march_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Reads a time that `rfc3339` wrote (`2025-01-31T12:00:00.123Z`; the fraction may have
/// any number of digits, or none). `None` for anything else.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date = date.splitn(3, '-');
    let year: i64 = date.next()?.parse().ok()?;
    let month: u32 = date.next()?.parse().ok()?;
    let day: u32 = date.next()?.parse().ok()?;
    let (time, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut time = time.splitn(3, ':');
    let hour: u64 = time.next()?.parse().ok()?;
    let minute: u64 = time.next()?.parse().ok()?;
    let second: u64 = time.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    let nanos = format!("{:0<9}", &fraction[..fraction.len().min(9)])
        .parse::<u32>()
        .ok()?;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    UNIX_EPOCH.checked_add(Duration::new(seconds, nanos))
}

/// The local time of day of `at` (`03:12:01`), in the time zone of this process (`TZ`,
/// else the system's).
pub fn local_clock(at: SystemTime) -> String {
    let seconds = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as nix::libc::time_t);
    // SAFETY: `tm` is a plain struct of integers (and a pointer, null here): all zeroes
    // is a valid value of it.
    let mut tm: nix::libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: `localtime_r` reads `seconds` and writes only into the `tm` given, both
    // valid for the length of the call; it is the thread-safe form.
    let converted = unsafe { !nix::libc::localtime_r(&seconds, &mut tm).is_null() };
    if !converted {
        let of_day = seconds.rem_euclid(86_400);
        return format!(
            "{:02}:{:02}:{:02}",
            of_day / 3600,
            of_day % 3600 / 60,
            of_day % 60
        );
    }
    format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_in_utc() {
        let at = |s: u64, ms: u64| {
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(s * 1000 + ms)
        };
        assert_eq!(rfc3339(at(0, 0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(at(951_782_400, 5)), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(at(951_868_799, 999)), "2000-02-29T23:59:59.999Z");
        assert_eq!(rfc3339(at(1_700_000_000, 0)), "2023-11-14T22:13:20.000Z");
        assert_eq!(rfc3339(at(4_107_542_400, 0)), "2100-03-01T00:00:00.000Z");
        assert_eq!(rfc3339(at(253_402_300_799, 0)), "9999-12-31T23:59:59.000Z");
    }

    #[test]
    fn what_is_written_reads_back() {
        for seconds in [0, 951_782_400, 951_868_799, 1_700_000_000, 4_107_542_400] {
            let at = UNIX_EPOCH + Duration::from_millis(seconds * 1000 + 417);
            assert_eq!(parse_rfc3339(&rfc3339(at)), Some(at), "{}", rfc3339(at));
        }
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20Z"),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        for bad in [
            "",
            "2023-11-14",
            "2023-13-14T22:13:20Z",
            "2023-11-14T22:13:20.x1Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_local_clock_is_a_time_of_day() {
        let clock = local_clock(SystemTime::now());
        assert_eq!(clock.len(), 8, "{clock}");
        assert_eq!(&clock[2..3], ":");
    }
}
