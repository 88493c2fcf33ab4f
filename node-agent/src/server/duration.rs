//! Durations as katran-server's timeout flags take them: a bare integer is
//! seconds (`-read-timeout 30`, the form its document shows), anything else is
//! Go's `time.ParseDuration` syntax (`30s`, `1m30s`, `1.5h`, `500ms`), because
//! the Go flag package users know accepts exactly that.

use std::time::Duration;

/// Nanoseconds per unit, Go's unit names (both micro signs included).
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

const HINT: &str = "use a number of seconds or a Go duration such as 30s, 1m30s, 500ms";

/// Parses a timeout: `30` (seconds) or a Go duration. Negative durations are
/// refused: a timeout cannot be negative (Go would treat one as "expired").
pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err(format!("empty duration: {HINT}"));
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    if s.starts_with('-') {
        return Err(format!("negative duration {text:?}: a timeout must be 0 (none) or positive"));
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (int_part, frac_part, after) =
            split_number(rest).ok_or_else(|| format!("invalid duration {text:?}: {HINT}"))?;
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(format!("missing unit in duration {text:?}: {HINT}"));
        }
        let &(_, per_unit) = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .ok_or_else(|| format!("unknown unit {unit:?} in duration {text:?}: {HINT}"))?;
        total = int_part
            .checked_mul(per_unit)
            .and_then(|n| n.checked_add(fraction_nanos(frac_part, per_unit)))
            .and_then(|n| n.checked_add(total))
            .ok_or_else(|| format!("duration {text:?} is too large"))?;
        rest = next;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| format!("duration {text:?} is too large"))?;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// Splits `12.5rest` into (12, "5", "rest"); `None` without any digit.
fn split_number(s: &str) -> Option<(u128, &str, &str)> {
    let int_len = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (int_digits, after_int) = s.split_at(int_len);
    let (frac_digits, after) = match after_int.strip_prefix('.') {
        Some(frac) => {
            let len = frac.find(|c: char| !c.is_ascii_digit()).unwrap_or(frac.len());
            frac.split_at(len)
        }
        None => ("", after_int),
    };
    if int_digits.is_empty() && frac_digits.is_empty() {
        return None;
    }
    let int = if int_digits.is_empty() { 0 } else { int_digits.parse().ok()? };
    Some((int, frac_digits, after))
}

/// `0.<digits>` of a unit, in nanoseconds (digits beyond nanosecond precision are dropped, as Go does).
fn fraction_nanos(digits: &str, per_unit: u128) -> u128 {
    let mut scale: u128 = 1;
    let mut value: u128 = 0;
    for d in digits.bytes().take(20) {
        value = value * 10 + u128::from(d - b'0');
        scale *= 10;
    }
    value * per_unit / scale
}

/// Formats a duration the way Go prints one (`30s`, `1m30s`, `500ms`), for messages.
pub fn display(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 && !d.is_zero() {
        return format!("{}ns", d.as_nanos());
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m, s) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_integers_are_seconds() {
        assert_eq!(parse("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("2h45m"), Ok(Duration::from_secs(2 * 3600 + 45 * 60)));
        assert_eq!(parse("1µs"), Ok(Duration::from_micros(1)));
        assert_eq!(parse("1us"), Ok(Duration::from_micros(1)));
        assert_eq!(parse(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("+10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_say_why() {
        assert!(parse("").unwrap_err().contains("empty"));
        assert!(parse("10x").unwrap_err().contains("unknown unit \"x\""));
        assert!(parse("1.5").unwrap_err().contains("missing unit"));
        assert!(parse("1h5").unwrap_err().contains("missing unit"));
        assert!(parse("-5s").unwrap_err().contains("negative"));
        assert!(parse("s").unwrap_err().contains("invalid duration"));
        assert!(parse("99999999999999999999h").unwrap_err().contains("too large"));
    }

    #[test]
    fn displays_like_go() {
        assert_eq!(display(Duration::from_secs(30)), "30s");
        assert_eq!(display(Duration::from_secs(90)), "1m30s");
        assert_eq!(display(Duration::from_secs(120)), "2m");
        assert_eq!(display(Duration::from_millis(1500)), "1500ms");
        assert_eq!(display(Duration::from_secs(7200)), "2h");
    }
}
