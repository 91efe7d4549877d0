//! The metrics, by name: the KPL's fifteen (`aws/metrics/metrics_constants.cc` in
//! awslabs/amazon-kinesis-producer: each name's level and unit are the KPL's) and the ones KPL
//! users ask for that it lacks.

use std::sync::Arc;

/// A set of dimensions, as the KPL sets them: error code, stream, shard.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Dims {
    pub(crate) code: Option<Arc<str>>,
    pub(crate) stream: Option<Arc<str>>,
    pub(crate) shard: Option<Arc<str>>,
}

/// How much the producer records: the KPL's `MetricsLevel`. Each metric has a level; it is
/// recorded when its level is at most this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Level {
    /// Nothing (`none`).
    None,
    /// The summary metrics only (`summary`).
    Summary,
    /// Every metric (`detailed`, the KPL's default).
    #[default]
    Detailed,
}

/// How finely metrics are broken down: the KPL's `MetricsGranularity`. A value is recorded for
/// the whole producer and, down to this granularity, for its stream and its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Granularity {
    /// Only across all streams (`global`).
    Global,
    /// Also per stream (`stream`).
    Stream,
    /// Also per shard (`shard`, the KPL's default).
    #[default]
    Shard,
}

impl Level {
    /// The level a `MetricsLevel` value names (`none`, `summary`, `detailed`).
    pub fn from_property(value: &str) -> Option<Level> {
        match value {
            "none" => Some(Level::None),
            "summary" => Some(Level::Summary),
            "detailed" => Some(Level::Detailed),
            _ => None,
        }
    }
}

impl Granularity {
    /// The granularity a `MetricsGranularity` value names (`global`, `stream`, `shard`).
    pub fn from_property(value: &str) -> Option<Granularity> {
        match value {
            "global" => Some(Granularity::Global),
            "stream" => Some(Granularity::Stream),
            "shard" => Some(Granularity::Shard),
            _ => None,
        }
    }
}

/// What a metric's values measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    /// A number of things.
    Count,
    /// Bytes.
    Bytes,
    /// Milliseconds.
    Milliseconds,
    /// Things per second.
    CountPerSecond,
    /// Bytes per second.
    BytesPerSecond,
}

impl Unit {
    /// The name CloudWatch gives the unit.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Bytes => "Bytes",
            Unit::Milliseconds => "Milliseconds",
            Unit::CountPerSecond => "Count/Second",
            Unit::BytesPerSecond => "Bytes/Second",
        }
    }
}

macro_rules! names {
    ($($(#[$doc:meta])* $name:ident: $level:ident, $unit:ident, $sampled:literal;)*) => {
        /// A metric, named as the KPL names it (the extras in the KPL's style).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[non_exhaustive]
        pub enum Name {
            $($(#[$doc])* $name,)*
        }

        impl Name {
            /// Every metric, in the order of the docs.
            pub const ALL: &'static [Name] = &[$(Name::$name,)*];

            /// Its name, as the KPL (and CloudWatch) spell it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Name::$name => stringify!($name),)*
                }
            }

            /// The lowest `MetricsLevel` that records it.
            pub fn level(self) -> Level {
                match self {
                    $(Name::$name => Level::$level,)*
                }
            }

            /// What its values measure.
            pub fn unit(self) -> Unit {
                match self {
                    $(Name::$name => Unit::$unit,)*
                }
            }

            /// Whether its values are samples of a quantity taken every
            /// [`SAMPLE_INTERVAL`](super::SAMPLE_INTERVAL) (a gauge), rather than one value per
            /// event.
            pub fn is_sampled(self) -> bool {
                match self {
                    $(Name::$name => $sampled,)*
                }
            }
        }
    };
}

names! {
    /// One per user record the engine took in (stream level).
    UserRecordsReceived: Detailed, Count, false;
    /// User records taken in and not yet resolved, sampled (stream level).
    UserRecordsPending: Detailed, Count, true;
    /// Per finished user record: 1 if put, 0 if it failed. Its sum is the records put, its
    /// count the records finished.
    UserRecordsPut: Summary, Count, false;
    /// Per user record put: its data's size.
    UserRecordsDataPut: Detailed, Bytes, false;
    /// Per Kinesis record in a PutRecords answer: 1 if put, 0 if not.
    KinesisRecordsPut: Summary, Count, false;
    /// Per Kinesis record put: its size (data and partition key).
    KinesisRecordsDataPut: Detailed, Bytes, false;
    /// 1 per error, with the error's code as the `ErrorCode` dimension: per failed entry, and
    /// per PutRecords call that failed as a whole (stream level).
    ErrorsByCode: Summary, Count, false;
    /// As ErrorsByCode, without the code; per Kinesis record also 0 when it was put.
    AllErrors: Summary, Count, false;
    /// Per finished user record: the attempts it took beyond the first.
    RetriesPerRecord: Detailed, Count, false;
    /// 1 per user record that failed because its RecordTtl ran out.
    UserRecordExpired: Summary, Count, false;
    /// Per attempt of a user record: from its arrival (or the end of its previous attempt) to
    /// the start of the PutRecords call that carried it.
    BufferingTime: Summary, Milliseconds, false;
    /// Per PutRecords call: how long it took (stream level).
    RequestTime: Detailed, Milliseconds, false;
    /// Per Kinesis record sent: the user records in it.
    UserRecordsPerKinesisRecord: Detailed, Count, false;
    /// Per PutRecords call: its entries (stream level).
    KinesisRecordsPerPutRecordsRequest: Detailed, Count, false;
    /// Per PutRecords call: the user records in its entries (stream level).
    UserRecordsPerPutRecordsRequest: Detailed, Count, false;
    // What KPL users ask for and the KPL lacks.
    /// 1 per Kinesis record that Kinesis throttled (ProvisionedThroughputExceededException).
    ThrottledEntries: Summary, Count, false;
    /// User records packed and ready to send, waiting for their shard's rate limiter (or for
    /// a free connection), sampled.
    UserRecordsWaitingToSend: Detailed, Count, true;
    /// The rate, in Kinesis records per second, the shard's limiter lets through now, sampled
    /// (shard level).
    LimiterRecordsPerSecond: Detailed, CountPerSecond, true;
    /// The rate, in bytes per second, the shard's limiter lets through now, sampled (shard
    /// level).
    LimiterBytesPerSecond: Detailed, BytesPerSecond, true;
    /// How long the oldest user record taken in and not yet resolved has waited, sampled
    /// (global).
    OldestUnresolvedRecordAge: Summary, Milliseconds, true;
    /// User records buffered against `MaxBufferedRecords`, sampled (global).
    UserRecordsBuffered: Summary, Count, true;
    /// Bytes buffered against `MaxBufferedBytes`, bookkeeping included, sampled (global).
    BytesBuffered: Summary, Bytes, true;
}

/// How many metrics there are: the size of a per-name array.
pub(crate) const COUNT: usize = Name::ALL.len();

impl Name {
    /// Its index in a per-name array.
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Its name for Prometheus and the `metrics` crate: `kpl_`, the name in snake case, and
    /// the unit (`kpl_buffering_time_milliseconds`).
    pub fn exported(self) -> String {
        let mut out = String::from("kpl");
        for c in self.as_str().chars() {
            if c.is_ascii_uppercase() {
                out.push('_');
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        out.push_str(match self.unit() {
            Unit::Count => "",
            Unit::Bytes => "_bytes",
            Unit::Milliseconds => "_milliseconds",
            Unit::CountPerSecond => "_per_second",
            Unit::BytesPerSecond => "_bytes_per_second",
        });
        out
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kpl_names_keep_the_kpl_levels_and_units() {
        // aws/metrics/metrics_constants.cc in awslabs/amazon-kinesis-producer.
        let summary = [
            "UserRecordsPut",
            "KinesisRecordsPut",
            "ErrorsByCode",
            "AllErrors",
            "UserRecordExpired",
            "BufferingTime",
        ];
        for name in &Name::ALL[..15] {
            let expected = if summary.contains(&name.as_str()) {
                Level::Summary
            } else {
                Level::Detailed
            };
            assert_eq!(name.level(), expected, "{name}");
        }
        assert_eq!(Name::UserRecordsDataPut.unit(), Unit::Bytes);
        assert_eq!(Name::RequestTime.unit(), Unit::Milliseconds);
        assert_eq!(
            Name::BufferingTime.exported(),
            "kpl_buffering_time_milliseconds"
        );
        assert_eq!(
            Name::KinesisRecordsPerPutRecordsRequest.exported(),
            "kpl_kinesis_records_per_put_records_request"
        );
    }
}
