//! Go-style duration strings ("90s", "1h30m", "2160h", "1.5h"), the format
//! Kubernetes users write in specs and CEL's `duration()` accepts.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}")]
pub struct ParseDurationError {
    input: String,
    reason: &'static str,
}

/// Parses a non-negative Go duration. A bare `0` is accepted, as in Go.
pub fn parse(input: &str) -> Result<Duration, ParseDurationError> {
    let fail = |reason| ParseDurationError {
        input: input.to_owned(),
        reason,
    };
    if input == "0" {
        return Ok(Duration::ZERO);
    }
    if input.is_empty() {
        return Err(fail("empty"));
    }
    if input.starts_with('-') {
        return Err(fail("must not be negative"));
    }
    let mut rest = input.strip_prefix('+').unwrap_or(input);
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| fail("missing unit"))?;
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            "" => return Err(fail("missing unit")),
            _ => return Err(fail("unknown unit")),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
            return Err(fail("malformed number"));
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| fail("number too large"))?
        };
        let mut part = whole
            .checked_mul(unit_nanos)
            .ok_or_else(|| fail("number too large"))?;
        let mut scale = unit_nanos;
        for digit in fraction.bytes().take(18) {
            scale /= 10;
            part += u128::from(digit - b'0') * scale;
        }
        total_nanos = total_nanos
            .checked_add(part)
            .ok_or_else(|| fail("number too large"))?;
        rest = tail;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| fail("number too large"))?;
    // The remainder of a division by 10^9 always fits in u32.
    let nanos = (total_nanos % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

/// Formats a duration the way Go prints it for whole seconds ("1h30m0s").
pub fn format(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let cases = [
            ("0", 0),
            ("0s", 0),
            ("90s", 90_000),
            ("1h30m", 5_400_000),
            ("2160h", 7_776_000_000),
            ("1.5h", 5_400_000),
            ("500ms", 500),
            ("1m0.5s", 60_500),
            (".5s", 500),
            ("+2m", 120_000),
        ];
        for (input, millis) in cases {
            assert_eq!(parse(input), Ok(Duration::from_millis(millis)), "{input}");
        }
        assert_eq!(parse("1us"), Ok(Duration::from_micros(1)));
        assert_eq!(parse("3ns"), Ok(Duration::from_nanos(3)));
    }

    #[test]
    fn rejects_malformed_durations() {
        for input in [
            "",
            "1",
            "h",
            "-1s",
            "1x",
            "1.2.3s",
            ".s",
            "1h 2m",
            "1d",
            "99999999999999999999h",
        ] {
            assert!(parse(input).is_err(), "{input:?} should not parse");
        }
        assert_eq!(
            parse("5d").unwrap_err().to_string(),
            "invalid duration \"5d\": unknown unit"
        );
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format(Duration::from_secs(0)), "0s");
        assert_eq!(format(Duration::from_secs(59)), "59s");
        assert_eq!(format(Duration::from_secs(61)), "1m1s");
        assert_eq!(format(Duration::from_secs(86_400)), "24h0m0s");
    }
}
