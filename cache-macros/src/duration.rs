//! Humantime-style durations (`"5m"`, `"30s"`, `"1h 30m"`, `"250ms"`), parsed at compile time.

/// Parses a duration into nanoseconds.
///
/// Grammar: one or more `<integer><unit>` groups, optionally separated by spaces (`"1h30m"` and
/// `"1h 30m"` are the same). Units: `ns`, `us`/`µs`, `ms`, `s`/`sec`/`secs`/`second`/`seconds`,
/// `m`/`min`/`mins`/`minute`/`minutes`, `h`/`hr`/`hrs`/`hour`/`hours`, `d`/`day`/`days`,
/// `w`/`week`/`weeks`. A zero duration is rejected (an entry that expires at once is a bug).
pub(crate) fn parse_nanos(text: &str) -> Result<u64, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration; write e.g. \"30s\", \"5m\", \"1h 30m\" or \"250ms\"".into());
    }
    let mut total: u128 = 0;
    let bytes: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && bytes[i].is_whitespace() {
            i += 1;
        }
        if i == bytes.len() {
            break;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(format!(
                "invalid duration \"{text}\": expected a number at `{}`; write e.g. \"30s\", \"5m\", \"1h 30m\"",
                bytes[i..].iter().collect::<String>()
            ));
        }
        let number: String = bytes[start..i].iter().collect();
        let n: u128 = number
            .parse()
            .map_err(|_| format!("invalid duration \"{text}\": `{number}` is too large"))?;
        while i < bytes.len() && bytes[i] == ' ' {
            i += 1;
        }
        let ustart = i;
        while i < bytes.len() && (bytes[i].is_alphabetic()) {
            i += 1;
        }
        let unit: String = bytes[ustart..i].iter().collect();
        let scale: u128 = match unit.as_str() {
            "ns" | "nsec" | "nanos" => 1,
            "us" | "µs" | "usec" | "micros" => 1_000,
            "ms" | "msec" | "millis" => 1_000_000,
            "s" | "sec" | "secs" | "second" | "seconds" => 1_000_000_000,
            "m" | "min" | "mins" | "minute" | "minutes" => 60 * 1_000_000_000,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3_600 * 1_000_000_000,
            "d" | "day" | "days" => 86_400 * 1_000_000_000,
            "w" | "week" | "weeks" => 7 * 86_400 * 1_000_000_000,
            "" => {
                return Err(format!(
                    "invalid duration \"{text}\": `{number}` has no unit; write e.g. \"{number}s\" or \"{number}ms\""
                ))
            }
            other => {
                return Err(format!(
                    "invalid duration \"{text}\": unknown unit `{other}`; use ns, us, ms, s, m, h, d or w"
                ))
            }
        };
        total = total.saturating_add(n.saturating_mul(scale));
    }
    if total == 0 {
        return Err(format!(
            "invalid duration \"{text}\": it must be longer than zero"
        ));
    }
    u64::try_from(total).map_err(|_| format!("invalid duration \"{text}\": too long"))
}

#[cfg(test)]
mod tests {
    use super::parse_nanos;

    #[test]
    fn parses() {
        assert_eq!(parse_nanos("5m"), Ok(300_000_000_000));
        assert_eq!(parse_nanos("30s"), Ok(30_000_000_000));
        assert_eq!(parse_nanos("1h 30m"), Ok(5_400_000_000_000));
        assert_eq!(parse_nanos("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(parse_nanos("250ms"), Ok(250_000_000));
        assert_eq!(parse_nanos("2 days"), Ok(2 * 86_400_000_000_000));
        assert_eq!(parse_nanos("10us"), Ok(10_000));
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "5",
            "5x",
            "m",
            "0s",
            "1.5s",
            "-1s",
            "99999999999999999999999999999999999h",
        ] {
            assert!(parse_nanos(bad).is_err(), "{bad} parsed");
        }
    }
}
