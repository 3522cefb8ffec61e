//! Calendar dates from Unix time, in UTC (the capture kernel has no time zone).

/// A UTC date and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    /// Year.
    pub year: i64,
    /// Month, 1-12.
    pub month: u32,
    /// Day of the month, 1-31.
    pub day: u32,
    /// Hour, 0-23.
    pub hour: u32,
    /// Minute, 0-59.
    pub minute: u32,
    /// Second, 0-59.
    pub second: u32,
}

impl UtcTime {
    /// Converts seconds since the Unix epoch (days-to-civil conversion after Howard Hinnant's
    /// `civil_from_days`, valid for the proleptic Gregorian calendar).
    pub fn from_unix(seconds: i64) -> Self {
        let days = seconds.div_euclid(86_400);
        let of_day =
            u32::try_from(seconds.rem_euclid(86_400)).expect("rem_euclid(86_400) is 0..86_400");
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).expect("day of month is 1..=31");
        let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).expect("month is 1..=12");
        let year = yoe + era * 400 + i64::from(month <= 2);
        Self {
            year,
            month,
            day,
            hour: of_day / 3600,
            minute: of_day / 60 % 60,
            second: of_day % 60,
        }
    }

    /// `YYYY-MM-DD-HH:MM:SS`, the dump directory suffix kdump uses (`date +%Y-%m-%d-%T`).
    pub fn dump_dir_stamp(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}-{:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

impl std::fmt::Display for UtcTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(UtcTime::from_unix(0).to_string(), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            UtcTime::from_unix(951_782_400).dump_dir_stamp(),
            "2000-02-29-00:00:00"
        );
        assert_eq!(
            UtcTime::from_unix(1_795_615_752).to_string(),
            "2026-11-25 14:09:12 UTC"
        );
        assert_eq!(
            UtcTime::from_unix(-1).to_string(),
            "1969-12-31 23:59:59 UTC"
        );
    }

    proptest! {
        /// GNU date is the reference.
        #[test]
        fn agrees_with_gnu_date(seconds in 0i64..4_102_444_800) {
            let output = std::process::Command::new("date")
                .args(["-u", "-d", &format!("@{seconds}"), "+%Y-%m-%d-%T"])
                .output()
                .unwrap();
            let expected = String::from_utf8(output.stdout).unwrap();
            prop_assert_eq!(UtcTime::from_unix(seconds).dump_dir_stamp(), expected.trim());
        }
    }
}
