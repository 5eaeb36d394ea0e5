//! RFC 3339 timestamps with nanoseconds in UTC, formatted as Go's
//! `time.RFC3339Nano` does (trailing zeros of the fraction dropped), which is
//! what the kubelet's log parser and containerd's CRI plugin use.

use std::time::{SystemTime, UNIX_EPOCH};

/// Formats `t` as e.g. `2026-11-29T18:01:02.123456789Z`.
pub fn rfc3339_nano(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    let mut s = format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    );
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, nanos: u32) -> String {
        rfc3339_nano(UNIX_EPOCH + Duration::new(secs, nanos))
    }

    #[test]
    fn known_instants() {
        assert_eq!(at(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.000000005Z");
        assert_eq!(
            at(1_798_372_862, 123_456_789),
            "2026-12-27T12:01:02.123456789Z"
        );
        assert_eq!(at(1_798_372_862, 120_000_000), "2026-12-27T12:01:02.12Z");
        assert_eq!(
            at(4_102_444_799, 999_999_999),
            "2099-12-31T23:59:59.999999999Z"
        );
    }

    #[test]
    fn every_day_boundary_of_a_leap_cycle_round_trips() {
        // Day count → date → day count, over 400 years, against a simple walker.
        let mut expected = (1970i64, 1u32, 1u32);
        let month_len = |y: i64, m: u32| match m {
            2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        for day in 0..146_097 {
            assert_eq!(civil_from_days(day), expected, "day {day}");
            let (y, m, d) = expected;
            expected = if d < month_len(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
    }
}
