//! KPL `.properties` names: [`ConfigBuilder::set_property`] and the names it knows.

use super::{ConfigBuilder, check};
use crate::error::ConfigError;

/// The properties [`ConfigBuilder::set_property`] knows, by their KPL names.
pub const PROPERTY_NAMES: &[&str] = &[
    "AggregationEnabled",
    "AggregationMaxCount",
    "AggregationMaxSize",
    "CollectionMaxCount",
    "CollectionMaxSize",
    "ConnectTimeout",
    "FailIfThrottled",
    "KinesisEndpoint",
    "KinesisPort",
    "MaxBufferedBytes",
    "MaxBufferedRecords",
    "MaxConnections",
    "MaxRecordSize",
    "PerKeyOrdering",
    "RateLimit",
    "RecordMaxBufferedTime",
    "RecordTtl",
    "Region",
    "RequestTimeout",
    "ShardMapRefreshInterval",
];

impl ConfigBuilder {
    /// Sets a property by its KPL name from its text, as in a KPL `.properties` file.
    ///
    /// ```
    /// use kinesis_producer::Config;
    /// let config = Config::builder().set_property("AggregationMaxSize", "102400").unwrap().build().unwrap();
    /// assert_eq!(config.aggregation_limits().max_size(), 102_400);
    /// let err = Config::builder().set_property("AggregationMaxSise", "1").unwrap_err();
    /// assert!(err.to_string().starts_with("unknown property AggregationMaxSise; the known properties are AggregationEnabled,"));
    /// ```
    ///
    /// # Errors
    /// [`ConfigError`] naming the property when the name is unknown or the value malformed or out
    /// of the KPL's range.
    pub fn set_property(self, name: &str, value: &str) -> Result<Self, ConfigError> {
        let value = value.trim();
        let boolean = |property: &'static str| match value.to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(ConfigError::NotABoolean {
                property,
                value: value.to_owned(),
            }),
        };
        let number = |property: &'static str| {
            value.parse::<u64>().map_err(|_| ConfigError::NotANumber {
                property,
                value: value.to_owned(),
            })
        };
        Ok(match name {
            "AggregationEnabled" => self.aggregation_enabled(boolean("AggregationEnabled")?),
            "PerKeyOrdering" => self.per_key_ordering(boolean("PerKeyOrdering")?),
            "FailIfThrottled" => self.fail_if_throttled(boolean("FailIfThrottled")?),
            "AggregationMaxCount" => self.aggregation_max_count(number("AggregationMaxCount")?),
            "AggregationMaxSize" => self.aggregation_max_size(number("AggregationMaxSize")?),
            "MaxRecordSize" => self.max_record_size(number("MaxRecordSize")?),
            "CollectionMaxCount" => self.collection_max_count(number("CollectionMaxCount")?),
            "CollectionMaxSize" => self.collection_max_size(number("CollectionMaxSize")?),
            "MaxConnections" => self.max_connections(number("MaxConnections")?),
            "RateLimit" => self.rate_limit(number("RateLimit")?),
            "MaxBufferedRecords" => self.max_buffered_records(number("MaxBufferedRecords")?),
            "MaxBufferedBytes" => self.max_buffered_bytes(number("MaxBufferedBytes")?),
            "RecordMaxBufferedTime" => Self {
                record_max_buffered_time_ms: number("RecordMaxBufferedTime")?,
                ..self
            },
            "RecordTtl" => Self {
                record_ttl_ms: number("RecordTtl")?,
                ..self
            },
            "RequestTimeout" => Self {
                request_timeout_ms: number("RequestTimeout")?,
                ..self
            },
            "ConnectTimeout" => Self {
                connect_timeout_ms: number("ConnectTimeout")?,
                ..self
            },
            "ShardMapRefreshInterval" => Self {
                shard_map_refresh_interval_ms: number("ShardMapRefreshInterval")?,
                ..self
            },
            "Region" => self.region(value),
            "KinesisEndpoint" => Self {
                endpoint: Some(value.to_owned()),
                ..self
            },
            "KinesisPort" => {
                let port = number("KinesisPort")?;
                let port = check("KinesisPort", port, 1, u16::MAX as u64)? as u16;
                Self {
                    port: Some(port),
                    ..self
                }
            }
            _ => {
                return Err(ConfigError::UnknownProperty {
                    name: name.to_owned(),
                    known: PROPERTY_NAMES.join(", "),
                });
            }
        })
    }
}
