//! Message timestamps: microseconds since the Unix epoch, UTC.

use ::time::{format_description::well_known::Rfc3339, OffsetDateTime, UtcOffset};

/// A `createdAt` value with microsecond precision. Within a thread these are
/// unique and strictly increasing in commit order (SPEC invariant 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// From microseconds since the epoch.
    pub fn from_micros(us: i64) -> Self {
        Self(us)
    }

    /// This host's clock now.
    pub fn now() -> Self {
        Self::from_datetime(OffsetDateTime::now_utc())
    }

    /// Microseconds since the epoch.
    pub fn micros(self) -> i64 {
        self.0
    }

    /// As a `time` value (for PostgreSQL `timestamptz`).
    pub fn to_datetime(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// From a `time` value, truncated to microseconds.
    pub fn from_datetime(dt: OffsetDateTime) -> Self {
        Self((dt.unix_timestamp_nanos() / 1000) as i64)
    }

    /// RFC 3339 in UTC with exactly six fractional digits and `Z`.
    pub fn to_rfc3339(self) -> String {
        let dt = self.to_datetime();
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second(),
            dt.microsecond()
        )
    }

    /// Parses any RFC 3339 timestamp (used for input and tests).
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        let dt = OffsetDateTime::parse(s, &Rfc3339).ok()?.to_offset(UtcOffset::UTC);
        Some(Self::from_datetime(dt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_six_digits_utc() {
        let t = Timestamp::from_micros(1_764_104_400_123_456);
        assert_eq!(t.to_rfc3339(), "2025-11-25T21:00:00.123456Z");
        assert_eq!(Timestamp::from_micros(1_764_104_400_000_000).to_rfc3339(), "2025-11-25T21:00:00.000000Z");
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
    }
}
