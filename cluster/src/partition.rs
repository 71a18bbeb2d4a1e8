//! Monthly partitions of the tables that grow without bound (`session_text` by the start of
//! its session, `audit_events` by the time of the request): the month a time falls in (pure),
//! and creating a month's partition before the first row of it is written.
//!
//! Creating a partition is DDL: it runs in its own short transaction under an advisory lock
//! (two replicas creating the same month wait for each other instead of failing), and each
//! replica remembers the months it has seen, so the common case costs nothing.

use std::collections::HashSet;
use std::sync::Mutex;

use chrono::{DateTime, Datelike, TimeZone, Utc};

use crate::error::{Error, Result};
use crate::postgres::Postgres;

/// A table partitioned by month on a column of microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Partitioned {
    /// `session_text`, by `started_at_us`.
    SessionText,
    /// `audit_events`, by `time_us`.
    AuditEvents,
}

impl Partitioned {
    fn table(self) -> &'static str {
        match self {
            Self::SessionText => "session_text",
            Self::AuditEvents => "audit_events",
        }
    }

    /// The advisory lock key for creating this table's partitions.
    fn lock_key(self) -> i64 {
        match self {
            Self::SessionText => 0x6375_7374_0001,
            Self::AuditEvents => 0x6375_7374_0002,
        }
    }
}

/// A calendar month (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Month {
    /// The year.
    pub year: i32,
    /// 1 to 12.
    pub month: u32,
}

impl Month {
    /// The month that µs-since-epoch `time_us` falls in (times before 1970 or beyond the
    /// calendar fall in January 1970).
    pub fn of(time_us: i64) -> Self {
        let t = DateTime::<Utc>::from_timestamp_micros(time_us).unwrap_or_default();
        Self {
            year: t.year(),
            month: t.month(),
        }
    }

    /// The month after this one.
    #[must_use]
    pub fn next(self) -> Self {
        if self.month >= 12 {
            Self {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Self {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// The month before this one.
    #[must_use]
    pub fn previous(self) -> Self {
        if self.month <= 1 {
            Self {
                year: self.year - 1,
                month: 12,
            }
        } else {
            Self {
                year: self.year,
                month: self.month - 1,
            }
        }
    }

    /// Its first microsecond since the Unix epoch.
    pub fn start_us(self) -> i64 {
        Utc.with_ymd_and_hms(self.year, self.month, 1, 0, 0, 0)
            .single()
            .map_or(0, |t| t.timestamp_micros())
    }

    /// The first microsecond of the next month (the partition's exclusive bound).
    pub fn end_us(self) -> i64 {
        self.next().start_us()
    }

    /// The partition's name for `table`: `audit_events_p202612`.
    fn partition_name(self, table: Partitioned) -> String {
        format!("{}_p{:04}{:02}", table.table(), self.year, self.month)
    }
}

/// The months this replica knows exist, per table.
#[derive(Debug, Default)]
pub struct Partitions {
    known: Mutex<HashSet<(Partitioned, Month)>>,
}

impl Partitions {
    /// Makes sure the partition of `table` holding `time_us` exists.
    pub async fn ensure(&self, db: &Postgres, table: Partitioned, time_us: i64) -> Result<()> {
        let month = Month::of(time_us);
        if self.is_known(table, month) {
            return Ok(());
        }
        let mut client = db.get().await?;
        let tx = client
            .transaction()
            .await
            .map_err(Error::pg("begin creating a partition"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&table.lock_key()])
            .await
            .map_err(Error::pg("lock for creating a partition"))?;
        // The name and bounds are made here from numbers, never from input.
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})",
            month.partition_name(table),
            table.table(),
            month.start_us(),
            month.end_us()
        );
        tx.batch_execute(&sql)
            .await
            .map_err(Error::pg("create a partition"))?;
        tx.commit()
            .await
            .map_err(Error::pg("commit creating a partition"))?;
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert((table, month));
        Ok(())
    }

    fn is_known(&self, table: Partitioned, month: Month) -> bool {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&(table, month))
    }
}

/// The months that have a partition of `table`, newest first.
pub async fn existing(db: &Postgres, table: Partitioned) -> Result<Vec<Month>> {
    let client = db.get().await?;
    let rows = client
        .query(
            "SELECT c.relname FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid
             JOIN pg_class p ON p.oid = i.inhparent
             WHERE p.relname = $1",
            &[&table.table()],
        )
        .await
        .map_err(Error::pg("list partitions"))?;
    let prefix = format!("{}_p", table.table());
    let mut months: Vec<Month> = rows
        .iter()
        .filter_map(|row| {
            let name: String = row.get(0);
            let digits = name.strip_prefix(&prefix)?;
            if digits.len() != 6 {
                return None;
            }
            Some(Month {
                year: digits.get(..4)?.parse().ok()?,
                month: digits.get(4..)?.parse().ok()?,
            })
        })
        .collect();
    months.sort_unstable_by(|a, b| b.cmp(a));
    Ok(months)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_and_bounds() {
        let t = Utc
            .with_ymd_and_hms(2026, 12, 31, 23, 59, 59)
            .unwrap()
            .timestamp_micros();
        let m = Month::of(t);
        assert_eq!(
            m,
            Month {
                year: 2026,
                month: 12
            }
        );
        assert!(m.start_us() <= t && t < m.end_us());
        assert_eq!(
            m.next(),
            Month {
                year: 2027,
                month: 1
            }
        );
        assert_eq!(m.next().previous(), m);
        assert_eq!(m.end_us(), m.next().start_us());
        assert_eq!(
            m.partition_name(Partitioned::AuditEvents),
            "audit_events_p202612"
        );
        assert_eq!(
            Month::of(0),
            Month {
                year: 1970,
                month: 1
            }
        );
    }
}
