//! KPL `.properties` names: [`ConfigBuilder::set_property`] and the one table of every name it
//! knows, ours and every property of the KPL's `KinesisProducerConfiguration` (1.0.x, and the
//! older names its 0.x samples used), with what each does here.

use super::{ConfigBuilder, StaticCredentials, check};
use crate::error::{ConfigError, PropertiesError};
use crate::metrics::{Granularity, Level};

/// What a property does in this producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// It is applied, under the KPL's meaning, default and range.
    Applied,
    /// It is accepted and checked, but has no effect here, for this reason. A configuration
    /// carrying one reports it ([`Config::ignored_properties`](super::Config::ignored_properties)),
    /// and [`ConfigBuilder::build`] logs one warning naming them all.
    Ignored(&'static str),
}

/// The kind of value a property takes, as the KPL parses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `true` or `false` (any case).
    Boolean,
    /// A whole number.
    Number,
    /// Text.
    Text,
}

/// One property: its name, the kind of value it takes, and what it does here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Property {
    /// The name, as in a KPL `.properties` file.
    pub name: &'static str,
    /// The kind of value.
    pub kind: Kind,
    /// Its default value, as text (empty: not set); for the KPL's own names, the KPL's.
    pub default: &'static str,
    /// What it does here.
    pub effect: Effect,
}

const NO_DAEMON: &str = "there is no native daemon: the producer runs in your process";
const CHAIN: &str = "credentials come from the standard AWS chain or `ConfigBuilder::credentials`";

const fn applied(name: &'static str, kind: Kind, default: &'static str) -> Property {
    Property {
        name,
        kind,
        default,
        effect: Effect::Applied,
    }
}

const fn ignored(
    name: &'static str,
    kind: Kind,
    default: &'static str,
    why: &'static str,
) -> Property {
    Property {
        name,
        kind,
        default,
        effect: Effect::Ignored(why),
    }
}

/// Every property name [`ConfigBuilder::set_property`] accepts. A name not here is an error.
pub const PROPERTIES: &[Property] = &[
    applied("AggregationEnabled", Kind::Boolean, "true"),
    applied("AggregationMaxCount", Kind::Number, "4294967295"),
    applied("AggregationMaxSize", Kind::Number, "51200"),
    // KPL 0.x names for static credentials.
    applied("AwsAccessKeyId", Kind::Text, ""),
    applied("AwsSecretKey", Kind::Text, ""),
    applied("CaCertFile", Kind::Text, ""),
    applied("CaCertPath", Kind::Text, ""),
    applied("CloudwatchEndpoint", Kind::Text, ""),
    applied("CloudwatchPort", Kind::Number, "443"),
    applied("CollectionMaxCount", Kind::Number, "500"),
    applied("CollectionMaxSize", Kind::Number, "5242880"),
    applied("ConnectTimeout", Kind::Number, "6000"),
    ignored("CredentialsRefreshDelay", Kind::Number, "5000", NO_DAEMON),
    // The KPL 0.x name of KinesisEndpoint.
    applied("CustomEndpoint", Kind::Text, ""),
    // KPL 1.0.7: restarts a stuck daemon (which loses what it buffered).
    ignored(
        "DaemonHealthCheckTimeoutMs",
        Kind::Number,
        "30000",
        NO_DAEMON,
    ),
    ignored("EnableCoreDumps", Kind::Boolean, "false", NO_DAEMON),
    ignored("EnableDaemonHealthCheck", Kind::Boolean, "false", NO_DAEMON),
    ignored(
        "EnableOldestFutureTracker",
        Kind::Boolean,
        "true",
        "the oldest unresolved record's age is always kept (`Producer::oldest_unresolved_age`), \
         at a cost too small to turn off",
    ),
    // Ours: engine cores, each owning a part of the hash key space (0: one per worker thread).
    applied("EngineCores", Kind::Number, "0"),
    applied("FailIfThrottled", Kind::Boolean, "false"),
    ignored(
        "GlueSchemaRegistryPropertiesFilePath",
        Kind::Text,
        "",
        "Glue Schema Registry serialization is not supported",
    ),
    applied("KinesisEndpoint", Kind::Text, ""),
    applied("KinesisPort", Kind::Number, "443"),
    // The level of `kpl`'s log; in a program, its tracing subscriber decides.
    applied("LogLevel", Kind::Text, "info"),
    applied("MaxBufferedBytes", Kind::Number, "268435456"),
    applied("MaxBufferedRecords", Kind::Number, "500000"),
    applied("MaxConnections", Kind::Number, "24"),
    applied("MaxRecordSize", Kind::Number, "10485760"),
    // KPL 1.0.7: the largest user record (data plus partition key) accepted. Unset here, the
    // stream's own limit decides (see `ConfigBuilder::max_user_record_size`).
    applied("MaxUserRecordSize", Kind::Number, "1048576"),
    applied("MetricsGranularity", Kind::Text, "shard"),
    applied("MetricsLevel", Kind::Text, "detailed"),
    applied("MetricsNamespace", Kind::Text, "KinesisProducerLibrary"),
    applied("MetricsUploadDelay", Kind::Number, "60000"),
    ignored(
        "MinConnections",
        Kind::Number,
        "1",
        "the HTTP client opens connections as calls need them",
    ),
    ignored("NativeExecutable", Kind::Text, "", NO_DAEMON),
    applied("PerKeyOrdering", Kind::Boolean, "false"),
    // The KPL 0.x name of KinesisPort.
    applied("Port", Kind::Number, "443"),
    applied("ProxyHost", Kind::Text, ""),
    applied("ProxyPassword", Kind::Text, ""),
    applied("ProxyPort", Kind::Number, "443"),
    applied("ProxyUserName", Kind::Text, ""),
    applied("RateLimit", Kind::Number, "150"),
    applied("RecordMaxBufferedTime", Kind::Number, "100"),
    applied("RecordTtl", Kind::Number, "30000"),
    applied("Region", Kind::Text, ""),
    applied("RequestTimeout", Kind::Number, "6000"),
    // KPL 1.0.4+. Always true here: a failed record's error hands it back.
    applied("ReturnUserRecordOnFailure", Kind::Boolean, "false"),
    applied("ShardMapRefreshInterval", Kind::Number, "60000"),
    // Ours: the durable spool (`ConfigBuilder::spool_directory`).
    applied("SpoolDirectory", Kind::Text, ""),
    applied("SpoolMaxBytes", Kind::Number, "1073741824"),
    applied("SpoolSyncInterval", Kind::Number, "5"),
    ignored("StsEndpoint", Kind::Text, "", CHAIN),
    ignored("StsPort", Kind::Number, "443", CHAIN),
    ignored("TempDirectory", Kind::Text, "", NO_DAEMON),
    ignored("ThreadPoolSize", Kind::Number, "0", NO_DAEMON),
    ignored("ThreadingModel", Kind::Text, "PER_REQUEST", NO_DAEMON),
    // Ours: upload the metrics to CloudWatch (the KPL does unless MetricsLevel is none).
    applied("UploadMetrics", Kind::Boolean, "false"),
    // A shorter RecordTtl when set (see `ConfigBuilder::user_record_timeout`).
    applied("UserRecordTimeoutInMillis", Kind::Number, "0"),
    // Certificates are always verified: `true` is what happens anyway; `false` is refused.
    applied("VerifyCertificate", Kind::Boolean, "true"),
];

/// The properties [`ConfigBuilder::set_property`] knows, by name.
pub const PROPERTY_NAMES: &[&str] = &{
    let mut names = [""; PROPERTIES.len()];
    let mut i = 0;
    while i < PROPERTIES.len() {
        names[i] = PROPERTIES[i].name;
        i += 1;
    }
    names
};

/// A property a configuration was given that has no effect here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredProperty {
    /// Its name (one no property has, when unknown names are ignored as the KPL ignores them:
    /// [`ConfigBuilder::ignore_unknown_properties`]).
    pub name: std::borrow::Cow<'static, str>,
    /// The value it was given.
    pub value: String,
    /// Why it has no effect.
    pub why: &'static str,
}

impl std::fmt::Display for IgnoredProperty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, self.why)
    }
}

/// What an unknown name is told: the KPL ignores it with a warning (its `fromProperties`).
const UNKNOWN: &str = "no KPL or producer property has this name";

/// The range the KPL's setter checks for a number property (`KinesisProducerConfiguration`,
/// KPL 1.0.7), where it checks one; the builder may narrow what it applies within it.
fn kpl_range(name: &str) -> Option<(u64, u64)> {
    // The KPL reads numbers as Java longs.
    const MAX: u64 = i64::MAX as u64;
    Some(match name {
        "AggregationMaxCount" | "RateLimit" => (1, MAX),
        "AggregationMaxSize" | "MaxUserRecordSize" => (64, 10_485_760),
        "CloudwatchPort" | "KinesisPort" | "Port" | "ProxyPort" | "StsPort" => (1, 65_535),
        "CollectionMaxCount" => (1, 500),
        "CollectionMaxSize" => (52_224, MAX),
        "ConnectTimeout" => (100, 300_000),
        "CredentialsRefreshDelay" => (1, 300_000),
        "DaemonHealthCheckTimeoutMs" => (5_000, MAX),
        "MaxConnections" => (1, 256),
        "EngineCores" => (0, 256),
        "MetricsUploadDelay" => (1, 60_000),
        "MinConnections" => (1, 16),
        "RecordMaxBufferedTime" | "ThreadPoolSize" | "UserRecordTimeoutInMillis" => (0, MAX),
        "RecordTtl" => (100, MAX),
        "RequestTimeout" => (100, 600_000),
        _ => return None,
    })
}

/// The known property closest to `name` (case and a few letters apart), if one is close.
fn closest(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    PROPERTY_NAMES
        .iter()
        .map(|known| (distance(&lower, &known.to_ascii_lowercase()), *known))
        .filter(|(d, known)| *d <= known.len().max(name.len()) / 3)
        .min()
        .map(|(_, known)| known)
}

/// Edits (insertions, deletions, substitutions) from `a` to `b`.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Checks a value against the KPL's pattern for the text properties that have one.
fn check_pattern(name: &'static str, value: &str) -> Result<(), ConfigError> {
    let allowed: &[&str] = match name {
        "LogLevel" => &["trace", "debug", "info", "warning", "error"],
        "MetricsLevel" => &["none", "summary", "detailed"],
        "MetricsGranularity" => &["global", "stream", "shard"],
        "ThreadingModel" => &["PER_REQUEST", "POOLED"],
        _ => return Ok(()),
    };
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::NotOneOf {
            property: name,
            value: value.to_owned(),
            allowed: allowed.join(", "),
        })
    }
}

impl ConfigBuilder {
    /// Applies a KPL `.properties` file (the KPL's
    /// `KinesisProducerConfiguration.fromPropertiesFile`): `Name = value` or `Name: value`
    /// lines, each as [`set_property`](Self::set_property); blank lines and lines starting with
    /// `#` or `!` are skipped. Ranges that depend on one another are checked by
    /// [`build`](Self::build).
    ///
    /// # Errors
    /// [`PropertiesError`] naming the file (and the line) when the file cannot be read, a line is
    /// malformed, or a property is unknown or its value refused.
    pub fn properties_file(
        self,
        path: impl AsRef<std::path::Path>,
    ) -> Result<Self, PropertiesError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| PropertiesError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut builder = self;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let Some((name, value)) = line.split_once(['=', ':']) else {
                return Err(PropertiesError::Malformed {
                    path: path.to_owned(),
                    line: n + 1,
                    text: line.to_owned(),
                });
            };
            builder = builder
                .set_property(name.trim(), value.trim())
                .map_err(|source| PropertiesError::Property {
                    path: path.to_owned(),
                    line: n + 1,
                    source,
                })?;
        }
        Ok(builder)
    }

    /// Sets a property by its KPL name from its text, as in a KPL `.properties` file. Every
    /// property of the KPL is accepted ([`PROPERTIES`]); those with no effect here are checked
    /// like the KPL checks them and reported by
    /// [`Config::ignored_properties`](super::Config::ignored_properties).
    ///
    /// ```
    /// use kinesis_producer::Config;
    /// let config = Config::builder().set_property("AggregationMaxSize", "102400").unwrap().build().unwrap();
    /// assert_eq!(config.aggregation_limits().max_size(), 102_400);
    /// let config = Config::builder().set_property("ThreadPoolSize", "8").unwrap().build().unwrap();
    /// assert_eq!(config.ignored_properties()[0].name, "ThreadPoolSize");
    /// let err = Config::builder().set_property("AggregationMaxSise", "1").unwrap_err();
    /// assert!(err.to_string().starts_with("unknown property AggregationMaxSise; did you mean AggregationMaxSize?"));
    /// ```
    ///
    /// # Errors
    /// [`ConfigError`] naming the property when the name is unknown (unless unknown names are
    /// ignored: [`ignore_unknown_properties`](Self::ignore_unknown_properties)) or the value
    /// malformed or out of the KPL's range.
    pub fn set_property(mut self, name: &str, value: &str) -> Result<Self, ConfigError> {
        let value = value.trim();
        let Some(property) = PROPERTIES.iter().find(|p| p.name == name) else {
            if self.ignore_unknown {
                self.ignored.retain(|p| p.name != name);
                self.ignored.push(IgnoredProperty {
                    name: name.to_owned().into(),
                    value: value.to_owned(),
                    why: UNKNOWN,
                });
                return Ok(self);
            }
            return Err(ConfigError::UnknownProperty {
                name: name.to_owned(),
                closest: closest(name),
                known: PROPERTY_NAMES.join(", "),
            });
        };
        let name = property.name;
        let boolean = || match value.to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(ConfigError::NotABoolean {
                property: name,
                value: value.to_owned(),
            }),
        };
        let number = || {
            value.parse::<u64>().map_err(|_| ConfigError::NotANumber {
                property: name,
                value: value.to_owned(),
            })
        };
        match property.kind {
            Kind::Boolean => drop(boolean()?),
            Kind::Number => {
                let n = number()?;
                if let Some((low, high)) = kpl_range(name) {
                    check(name, n, low, high)?;
                }
            }
            Kind::Text => check_pattern(name, value)?,
        }
        if let Effect::Ignored(why) = property.effect {
            self.ignored.retain(|p| p.name != name);
            // At the KPL's default it changes nothing the KPL would have done differently: no
            // warning (a KPL file lists every property at its default).
            if value.eq_ignore_ascii_case(property.default) {
                return Ok(self);
            }
            self.ignored.push(IgnoredProperty {
                name: name.into(),
                value: value.to_owned(),
                why,
            });
            return Ok(self);
        }
        Ok(match name {
            "AggregationEnabled" => self.aggregation_enabled(boolean()?),
            "PerKeyOrdering" => self.per_key_ordering(boolean()?),
            "FailIfThrottled" => self.fail_if_throttled(boolean()?),
            // Past 2^32-1 (the KPL takes up to 2^63-1) the count never binds: the size does.
            "AggregationMaxCount" => self.aggregation_max_count(number()?.min(u64::from(u32::MAX))),
            "AggregationMaxSize" => self.aggregation_max_size(number()?),
            "MaxRecordSize" => self.max_record_size(number()?),
            "MaxUserRecordSize" => self.max_user_record_size(number()?),
            "CollectionMaxCount" => self.collection_max_count(number()?),
            // Past the API's limit on a call, the limit binds.
            "CollectionMaxSize" => {
                self.collection_max_size(number()?.min(super::MAX_PUT_RECORDS_SIZE as u64))
            }
            "MaxConnections" => self.max_connections(number()?),
            "EngineCores" => self.engine_cores(number()?),
            // Past 1,000,000% (10,000 times a shard's limits) the limiter never binds.
            "RateLimit" => self.rate_limit(number()?.min(1_000_000)),
            "MaxBufferedRecords" => self.max_buffered_records(number()?),
            "MaxBufferedBytes" => self.max_buffered_bytes(number()?),
            // The KPL takes up to 2^63-1 ms; past an hour here, an hour.
            "RecordMaxBufferedTime" => Self {
                record_max_buffered_time_ms: number()?.min(super::MAX_BUFFERED_TIME_MS),
                ..self
            },
            // Past 2^32-1 ms (49 days), 49 days.
            "RecordTtl" => Self {
                record_ttl_ms: number()?.min(u64::from(u32::MAX)),
                ..self
            },
            "RequestTimeout" => Self {
                request_timeout_ms: number()?,
                ..self
            },
            "ConnectTimeout" => Self {
                connect_timeout_ms: number()?,
                ..self
            },
            "ShardMapRefreshInterval" => Self {
                shard_map_refresh_interval_ms: number()?,
                ..self
            },
            // The KPL's default is no region (the chain decides): an empty value keeps it.
            "Region" if value.is_empty() => self,
            "Region" => self.region(value),
            "KinesisEndpoint" | "CustomEndpoint" if value.is_empty() => self,
            "KinesisEndpoint" | "CustomEndpoint" => Self {
                kinesis_endpoint: Some(value.to_owned()),
                ..self
            },
            "KinesisPort" | "Port" => {
                let port = check(name, number()?, 1, u16::MAX as u64)? as u16;
                Self {
                    port: Some(port),
                    ..self
                }
            }
            "AwsAccessKeyId" | "AwsSecretKey" if value.is_empty() => self,
            "AwsAccessKeyId" => {
                let c = self
                    .credentials
                    .get_or_insert_with(StaticCredentials::empty);
                c.access_key_id = value.to_owned();
                self
            }
            "AwsSecretKey" => {
                let c = self
                    .credentials
                    .get_or_insert_with(StaticCredentials::empty);
                c.secret_access_key = value.to_owned();
                self
            }
            "SpoolDirectory" if value.is_empty() => self,
            "SpoolDirectory" => self.spool_directory(value),
            "SpoolMaxBytes" => self.spool_max_bytes(number()?),
            "SpoolSyncInterval" => Self {
                spool_sync_interval_ms: number()?,
                ..self
            },
            "UploadMetrics" => self.upload_metrics(boolean()?),
            "MetricsNamespace" => self.metrics_namespace(value),
            "MetricsUploadDelay" => Self {
                metrics_upload_delay_ms: number()?,
                ..self
            },
            "CloudwatchEndpoint" if value.is_empty() => self,
            "CloudwatchEndpoint" => Self {
                cloudwatch_endpoint: Some(value.to_owned()),
                ..self
            },
            // 443 is the regional endpoint's own port; another takes effect with an endpoint.
            "CloudwatchPort" => {
                let port = check(name, number()?, 1, u16::MAX as u64)? as u16;
                Self {
                    cloudwatch_port: (port != 443).then_some(port),
                    ..self
                }
            }
            "MetricsLevel" => Self {
                metrics_level: Level::from_property(value).expect("checked against the pattern"),
                ..self
            },
            "MetricsGranularity" => Self {
                metrics_granularity: Granularity::from_property(value)
                    .expect("checked against the pattern"),
                ..self
            },
            "LogLevel" => Self {
                log_level: value.to_owned(),
                ..self
            },
            "ReturnUserRecordOnFailure" => self,
            "UserRecordTimeoutInMillis" => Self {
                user_record_timeout_ms: number()?.min(u64::from(u32::MAX)),
                ..self
            },
            "CaCertFile" if value.is_empty() => self,
            "CaCertFile" => self.ca_cert_file(value),
            "CaCertPath" if value.is_empty() => self,
            "CaCertPath" => self.ca_cert_path(value),
            "ProxyHost" | "ProxyUserName" | "ProxyPassword" if value.is_empty() => self,
            "ProxyHost" => {
                self.proxy.host = Some(value.to_owned());
                self
            }
            "ProxyPort" => {
                self.proxy.port = Some(check(name, number()?, 1, u16::MAX as u64)? as u16);
                self
            }
            "ProxyUserName" => {
                self.proxy.user_name = Some(value.to_owned());
                self
            }
            "ProxyPassword" => {
                self.proxy.password = Some(value.to_owned());
                self
            }
            "VerifyCertificate" => {
                if !boolean()? {
                    return Err(ConfigError::NotOneOf {
                        property: name,
                        value: value.to_owned(),
                        allowed: "true (certificates are always verified; to trust a private CA, \
                                  give its certificate in CaCertFile)"
                            .into(),
                    });
                }
                self
            }
            _ => unreachable!("every applied property of the table is matched above"),
        })
    }
}
