//! Producer configuration: the KPL's property names, defaults and ranges.
//!
//! A KPL user's settings carry over unchanged: every property keeps its KPL name (used in error
//! messages and by [`ConfigBuilder::set_property`]), default and range.

use std::path::PathBuf;
use std::time::Duration;

use crate::aggregation::{
    AggregationLimits, DEFAULT_AGGREGATION_MAX_COUNT, DEFAULT_AGGREGATION_MAX_SIZE,
    MAX_RECORD_SIZE, MAX_RECORD_SIZE_LIMIT, MIN_AGGREGATION_MAX_SIZE,
};
use crate::error::ConfigError;
use crate::metrics::{Granularity, Level};

mod network;
mod properties;
pub use network::{Proxy, TrustedCertificates};
pub use properties::{Effect, IgnoredProperty, Kind, PROPERTIES, PROPERTY_NAMES, Property};

/// Most entries in one PutRecords call (Kinesis API reference).
pub const MAX_PUT_RECORDS_ENTRIES: usize = 500;
/// Most bytes in one PutRecords call, data plus partition keys, since AWS's larger-records launch
/// (the request limit doubled to 10 MiB): the most `CollectionMaxSize` may be. A stream not
/// known to allow it gets calls of at most [`PUT_RECORDS_SIZE_WITHOUT_LARGE_RECORDS`].
pub const MAX_PUT_RECORDS_SIZE: usize = 10 * 1024 * 1024;
/// Most bytes in one PutRecords call to a stream not known to take the 10 MiB requests of the
/// larger-records launch (the API reference's 5 MiB), and `CollectionMaxSize`'s default (the
/// KPL's). A stream is known to take 10 MiB requests when DescribeStreamSummary gives it a
/// `MaxRecordSizeInKiB` above 1024: it is on the service that launched larger records.
pub const PUT_RECORDS_SIZE_WITHOUT_LARGE_RECORDS: usize = 5 * 1024 * 1024;
/// The smallest CollectionMaxSize the KPL accepts.
pub const MIN_COLLECTION_MAX_SIZE: usize = 52_224;

/// Static credentials, for local endpoints (e.g. an embedded Kinesis) that check none.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticCredentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
}

impl StaticCredentials {
    /// Neither part set yet (a properties file sets them one line at a time).
    pub(crate) fn empty() -> Self {
        StaticCredentials {
            access_key_id: String::new(),
            secret_access_key: String::new(),
        }
    }
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Validated producer configuration. Build it with [`Config::builder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub(crate) aggregation_enabled: bool,
    pub(crate) aggregation: AggregationLimits,
    pub(crate) collection_max_count: usize,
    pub(crate) collection_max_size: usize,
    pub(crate) record_max_buffered_time: Duration,
    pub(crate) record_ttl: Duration,
    pub(crate) max_connections: usize,
    /// `EngineCores`; 0: the runtime's worker count.
    pub(crate) engine_cores: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) region: Option<String>,
    pub(crate) endpoint: Option<String>,
    pub(crate) credentials: Option<StaticCredentials>,
    pub(crate) shard_map_refresh_interval: Duration,
    pub(crate) fail_if_throttled: bool,
    pub(crate) per_key_ordering: bool,
    pub(crate) rate_limit: u32,
    pub(crate) max_user_record_size: Option<usize>,
    pub(crate) max_buffered_records: usize,
    pub(crate) max_buffered_bytes: usize,
    /// `KinesisPort` given without an endpoint: the port of the regional endpoint.
    pub(crate) kinesis_port: Option<u16>,
    pub(crate) log_level: String,
    pub(crate) metrics_level: Level,
    pub(crate) metrics_granularity: Granularity,
    pub(crate) metrics_dimensions: Vec<(String, String)>,
    pub(crate) upload_metrics: bool,
    pub(crate) metrics_namespace: String,
    pub(crate) metrics_upload_delay: Duration,
    /// `CloudwatchEndpoint` (and `CloudwatchPort`) as a URL, if set.
    pub(crate) cloudwatch_endpoint: Option<String>,
    pub(crate) proxy: Option<Proxy>,
    pub(crate) trusted_certificates: Option<TrustedCertificates>,
    pub(crate) ignored: Vec<IgnoredProperty>,
    /// `SpoolDirectory`, `SpoolMaxBytes`, `SpoolSyncInterval`: the durable spool, when set.
    pub(crate) spool: Option<crate::spool::Options>,
}

impl Default for Config {
    /// The KPL defaults.
    fn default() -> Self {
        Config::builder()
            .build()
            .expect("the defaults are in range")
    }
}

impl Config {
    /// A builder starting from the KPL defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// `AggregationEnabled` (default true).
    pub fn aggregation_enabled(&self) -> bool {
        self.aggregation_enabled
    }
    /// `AggregationMaxSize`, `AggregationMaxCount` and the stream's per-record limit; with
    /// aggregation off, a count of 1.
    pub fn aggregation_limits(&self) -> AggregationLimits {
        self.aggregation
    }
    /// `CollectionMaxCount` (default 500).
    pub fn collection_max_count(&self) -> usize {
        self.collection_max_count
    }
    /// `CollectionMaxSize` in bytes (default 5242880, at most 10485760): the most one PutRecords
    /// call carries; to a stream not known to take 10 MiB requests (see
    /// [`PUT_RECORDS_SIZE_WITHOUT_LARGE_RECORDS`]), at most 5242880 whatever this says.
    pub fn collection_max_size(&self) -> usize {
        self.collection_max_size
    }
    /// `RecordMaxBufferedTime` (default 100 ms).
    pub fn record_max_buffered_time(&self) -> Duration {
        self.record_max_buffered_time
    }
    /// `SpoolDirectory`: where records are kept on disk until they resolve, when set (see
    /// [`ConfigBuilder::spool_directory`]).
    pub fn spool_directory(&self) -> Option<&std::path::Path> {
        self.spool.as_ref().map(|s| s.dir.as_path())
    }
    /// `SpoolMaxBytes` (default 1 GiB): the most the spool holds on disk.
    pub fn spool_max_bytes(&self) -> u64 {
        self.spool
            .as_ref()
            .map_or(DEFAULT_SPOOL_MAX_BYTES, |s| s.max_bytes)
    }
    /// `SpoolSyncInterval` (default 5 ms): the longest a record appended to the spool waits
    /// before it is made durable.
    pub fn spool_sync_interval(&self) -> Duration {
        self.spool
            .as_ref()
            .map_or(Duration::from_millis(DEFAULT_SPOOL_SYNC_INTERVAL_MS), |s| {
                s.sync_interval
            })
    }
    /// `RecordTtl` (default 30 s), or `UserRecordTimeoutInMillis` when that is set and
    /// shorter.
    pub fn record_ttl(&self) -> Duration {
        self.record_ttl
    }
    /// `MaxConnections` (default 24).
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }
    /// `EngineCores` (default 0: one per tokio worker thread, or one with `PerKeyOrdering`).
    pub fn engine_cores(&self) -> usize {
        self.engine_cores
    }
    /// `RequestTimeout` (default 6 s).
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }
    /// `ConnectTimeout` (default 6 s).
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }
    /// `Region`, if set; otherwise the standard AWS region chain decides.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }
    /// The endpoint URL (`KinesisEndpoint` and `KinesisPort`), if set.
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }
    /// Static credentials, if set; otherwise the standard AWS credential chain.
    pub fn credentials(&self) -> Option<&StaticCredentials> {
        self.credentials.as_ref()
    }
    /// `FailIfThrottled` (default false): fail throttled records at once instead of retrying.
    pub fn fail_if_throttled(&self) -> bool {
        self.fail_if_throttled
    }
    /// `PerKeyOrdering` (default false): records with the same partition key are written in
    /// the order sent, even across retries.
    pub fn per_key_ordering(&self) -> bool {
        self.per_key_ordering
    }
    /// `MaxUserRecordSize`: the largest user record (data plus partition key) accepted, if set;
    /// unset, each stream's own per-record limit decides (see
    /// [`ConfigBuilder::max_user_record_size`]).
    pub fn max_user_record_size(&self) -> Option<usize> {
        self.max_user_record_size
    }

    /// `RateLimit`: the percentage of each shard's write limits (1000 records/s, 1 MiB/s) the
    /// producer aims at (default 150).
    pub fn rate_limit(&self) -> u32 {
        self.rate_limit
    }
    /// `MaxBufferedRecords`: the most records accepted and not yet resolved (default 500,000).
    pub fn max_buffered_records(&self) -> usize {
        self.max_buffered_records
    }
    /// `MaxBufferedBytes`: the most memory the records accepted and not yet resolved may hold
    /// (default 256 MiB): each record's data and partition key twice (the record and its copy
    /// in the aggregate) plus its bookkeeping (see `Producer::buffered`).
    pub fn max_buffered_bytes(&self) -> usize {
        self.max_buffered_bytes
    }
    /// How often each stream's shard map is refreshed (`ShardMapRefreshInterval`, default 60 s).
    pub fn shard_map_refresh_interval(&self) -> Duration {
        self.shard_map_refresh_interval
    }
    /// `KinesisPort` when it was given without an endpoint: the port of the regional endpoint
    /// (the KPL's default, 443, is the endpoint's own).
    pub fn kinesis_port(&self) -> Option<u16> {
        self.kinesis_port
    }
    /// `LogLevel` (trace, debug, info, warning or error; default info): the level of `kpl`'s
    /// log. The library logs through `tracing`; in your program, your subscriber sets the level.
    pub fn log_level(&self) -> &str {
        &self.log_level
    }
    /// `MetricsLevel` (default detailed).
    pub fn metrics_level(&self) -> Level {
        self.metrics_level
    }
    /// `MetricsGranularity` (default shard).
    pub fn metrics_granularity(&self) -> Granularity {
        self.metrics_granularity
    }
    /// `UploadMetrics` (default false).
    pub fn upload_metrics(&self) -> bool {
        self.upload_metrics
    }
    /// `MetricsNamespace` (default `KinesisProducerLibrary`).
    pub fn metrics_namespace(&self) -> &str {
        &self.metrics_namespace
    }
    /// `MetricsUploadDelay` (default 60 s).
    pub fn metrics_upload_delay(&self) -> Duration {
        self.metrics_upload_delay
    }
    /// `CloudwatchEndpoint` (with `CloudwatchPort`) as a URL, if set.
    pub fn cloudwatch_endpoint(&self) -> Option<&str> {
        self.cloudwatch_endpoint.as_deref()
    }
    /// The HTTP proxy every call goes through (`ProxyHost`, `ProxyPort`, `ProxyUserName`,
    /// `ProxyPassword`), if set.
    pub fn proxy(&self) -> Option<&Proxy> {
        self.proxy.as_ref()
    }
    /// The certificates trusted instead of the system's roots (`CaCertFile`, `CaCertPath`), if
    /// set.
    pub fn trusted_certificates(&self) -> Option<&TrustedCertificates> {
        self.trusted_certificates.as_ref()
    }
    /// The dimensions added to every metric ([`ConfigBuilder::metrics_dimension`]).
    pub fn metrics_dimensions(&self) -> &[(String, String)] {
        &self.metrics_dimensions
    }
    /// The properties this configuration was given that have no effect here, with why (KPL
    /// daemon settings, for instance): see [`PROPERTIES`].
    pub fn ignored_properties(&self) -> &[IgnoredProperty] {
        &self.ignored
    }
}

/// Builds a [`Config`]; [`build`](Self::build) checks every value against its KPL range.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    aggregation_enabled: bool,
    aggregation_max_count: u64,
    aggregation_max_size: u64,
    max_record_size: u64,
    collection_max_count: u64,
    collection_max_size: u64,
    record_max_buffered_time_ms: u64,
    record_ttl_ms: u64,
    max_connections: u64,
    engine_cores: u64,
    request_timeout_ms: u64,
    connect_timeout_ms: u64,
    region: Option<String>,
    /// An endpoint URL given to [`ConfigBuilder::endpoint`]: it wins over the properties'
    /// `KinesisEndpoint` and `KinesisPort`.
    endpoint: Option<String>,
    /// `KinesisEndpoint`: a host name (HTTPS), or a URL.
    kinesis_endpoint: Option<String>,
    port: Option<u16>,
    log_level: String,
    metrics_level: Level,
    metrics_granularity: Granularity,
    metrics_dimensions: Vec<(String, String)>,
    upload_metrics: bool,
    metrics_namespace: String,
    metrics_upload_delay_ms: u64,
    cloudwatch_endpoint: Option<String>,
    cloudwatch_port: Option<u16>,
    proxy: network::ProxySettings,
    ca_cert_file: Option<PathBuf>,
    ca_cert_path: Option<PathBuf>,
    /// `UserRecordTimeoutInMillis`; 0 is off.
    user_record_timeout_ms: u64,
    ignored: Vec<IgnoredProperty>,
    /// A name no property has is ignored (with a warning), as the KPL does, not refused.
    ignore_unknown: bool,
    max_user_record_size: Option<u64>,
    credentials: Option<StaticCredentials>,
    shard_map_refresh_interval_ms: u64,
    spool_directory: Option<std::path::PathBuf>,
    spool_max_bytes: u64,
    spool_sync_interval_ms: u64,
    fail_if_throttled: bool,
    per_key_ordering: bool,
    rate_limit: u64,
    max_buffered_records: u64,
    max_buffered_bytes: u64,
}

/// The longest `RecordMaxBufferedTime` applied, in milliseconds (an hour); the KPL's setter takes
/// more, and a longer one here is an hour.
pub(crate) const MAX_BUFFERED_TIME_MS: u64 = 3_600_000;

/// Default `MetricsNamespace`: the KPL's.
pub const DEFAULT_METRICS_NAMESPACE: &str = "KinesisProducerLibrary";

/// Default `MaxBufferedRecords`: room for several seconds of a busy producer's records while
/// Kinesis throttles or is away, at roughly 1 KB of bookkeeping each.
pub const DEFAULT_MAX_BUFFERED_RECORDS: usize = 500_000;
/// Default `MaxBufferedBytes` (256 MiB of buffered records, bookkeeping included).
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 256 << 20;

/// Default `SpoolMaxBytes`: 1 GiB on disk.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1 << 30;
/// Default `SpoolSyncInterval`, in milliseconds.
pub const DEFAULT_SPOOL_SYNC_INTERVAL_MS: u64 = 5;

impl Default for ConfigBuilder {
    fn default() -> Self {
        ConfigBuilder {
            aggregation_enabled: true,
            aggregation_max_count: DEFAULT_AGGREGATION_MAX_COUNT as u64,
            aggregation_max_size: DEFAULT_AGGREGATION_MAX_SIZE as u64,
            max_record_size: MAX_RECORD_SIZE_LIMIT as u64,
            collection_max_count: MAX_PUT_RECORDS_ENTRIES as u64,
            collection_max_size: PUT_RECORDS_SIZE_WITHOUT_LARGE_RECORDS as u64,
            record_max_buffered_time_ms: 100,
            record_ttl_ms: 30_000,
            max_connections: 24,
            engine_cores: 0,
            request_timeout_ms: 6_000,
            connect_timeout_ms: 6_000,
            region: None,
            endpoint: None,
            kinesis_endpoint: None,
            port: None,
            log_level: "info".to_owned(),
            metrics_level: Level::Detailed,
            metrics_granularity: Granularity::Shard,
            metrics_dimensions: Vec::new(),
            upload_metrics: false,
            metrics_namespace: DEFAULT_METRICS_NAMESPACE.to_owned(),
            metrics_upload_delay_ms: 60_000,
            cloudwatch_endpoint: None,
            cloudwatch_port: None,
            proxy: network::ProxySettings::default(),
            ca_cert_file: None,
            ca_cert_path: None,
            user_record_timeout_ms: 0,
            ignored: Vec::new(),
            ignore_unknown: false,
            max_user_record_size: None,
            credentials: None,
            shard_map_refresh_interval_ms: 60_000,
            fail_if_throttled: false,
            per_key_ordering: false,
            rate_limit: 150,
            max_buffered_records: DEFAULT_MAX_BUFFERED_RECORDS as u64,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES as u64,
            spool_directory: None,
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            spool_sync_interval_ms: DEFAULT_SPOOL_SYNC_INTERVAL_MS,
        }
    }
}

fn check(property: &'static str, value: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::OutOfRange {
            property,
            value: value.to_string(),
            range: format!("{min}..={max}"),
        })
    }
}

/// As [`check`], for a time property in milliseconds: the message says so.
fn check_ms(property: &'static str, value: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    check(property, value, min, max).map_err(|_| ConfigError::OutOfRange {
        property,
        value: format!("{value} ms"),
        range: format!("{min}..={max} ms"),
    })
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $field:ident, $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.$field = value.into();
            self
        }
    };
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl ConfigBuilder {
    setter!(
        /// `AggregationEnabled`: pack user records into aggregates (default true).
        aggregation_enabled: aggregation_enabled, bool
    );
    setter!(
        /// `AggregationMaxCount`: most user records in an aggregate (1..=4294967295).
        aggregation_max_count: aggregation_max_count, u64
    );
    setter!(
        /// `AggregationMaxSize`: largest aggregate in bytes, data plus partition key
        /// (64..=1048576, or up to `MaxRecordSize`).
        aggregation_max_size: aggregation_max_size, u64
    );
    setter!(
        /// `MaxRecordSize`: the most a Kinesis record may be, data plus partition key, in bytes
        /// (1048576..=10485760, default 10485760). Each stream's own limit (its
        /// `MaxRecordSizeInKiB`, read with DescribeStreamSummary with each shard map; 1 MiB
        /// unless raised) applies under it.
        max_record_size: max_record_size, u64
    );

    /// `MaxUserRecordSize` (KPL 1.0.7): the largest user record accepted, data plus partition
    /// key, in bytes (64..=10485760). A larger one fails as
    /// [`PutErrorKind::InvalidRecord`](crate::PutErrorKind::InvalidRecord) with
    /// [`RecordError::RecordTooLarge`](crate::RecordError::RecordTooLarge). The KPL's default is
    /// 1048576; unset here, each stream's own limit decides (1 MiB unless the stream was raised),
    /// so a raised stream takes larger records without a setting, and a KPL file that sets the
    /// default keeps the KPL's behaviour.
    pub fn max_user_record_size(mut self, value: u64) -> Self {
        self.max_user_record_size = Some(value);
        self
    }

    /// Whether a property name no KPL or producer property has is ignored with a warning, as
    /// the KPL's `fromProperties` does (it is then listed by
    /// [`Config::ignored_properties`]), rather than refused with an error naming the closest
    /// known property (the default: a typo in a KPL file otherwise goes unnoticed).
    pub fn ignore_unknown_properties(mut self, value: bool) -> Self {
        self.ignore_unknown = value;
        self
    }
    setter!(
        /// `CollectionMaxCount`: most entries in one PutRecords call (1..=500).
        collection_max_count: collection_max_count, u64
    );
    setter!(
        /// `CollectionMaxSize`: most bytes in one PutRecords call (52224..=10485760; calls to a
        /// stream not known to take 10 MiB requests stay within 5242880).
        collection_max_size: collection_max_size, u64
    );
    setter!(
        /// `FailIfThrottled`: fail throttled records at once instead of retrying them until
        /// `RecordTtl` (default false).
        fail_if_throttled: fail_if_throttled, bool
    );
    setter!(
        /// `PerKeyOrdering`: write records with the same partition key in the order sent, even
        /// across retries (default false). Costs throughput: each shard then takes one Kinesis
        /// record per round trip, and a failed one holds its shard until it is retried.
        per_key_ordering: per_key_ordering, bool
    );
    setter!(
        /// `RateLimit`: the percentage of each shard's write limits (1000 records/s and
        /// 1 MiB/s) to aim at (1..=1000000, KPL default 150). The producer lowers a shard's rate
        /// by itself while the shard throttles, and raises it back as records go through. A very
        /// large value turns limiting off in effect (for a sink that never throttles).
        rate_limit: rate_limit, u64
    );
    setter!(
        /// `MaxBufferedRecords`: the most records accepted and not yet resolved
        /// (1..=100000000, default 500000). Beyond it `send` refuses and `send_wait` waits.
        max_buffered_records: max_buffered_records, u64
    );
    setter!(
        /// `MaxBufferedBytes`: the most memory the records accepted and not yet resolved may
        /// hold, bookkeeping included (1048576..=1099511627776, default 268435456; see
        /// `Producer::buffered`).
        max_buffered_bytes: max_buffered_bytes, u64
    );
    setter!(
        /// `MaxConnections`: most PutRecords calls in flight (1..=256).
        max_connections: max_connections, u64
    );
    setter!(
        /// `EngineCores`: how many engine cores share the work (0..=256; at most
        /// `MaxConnections`, which they share). 0, the default, is one per worker thread of the
        /// tokio runtime the producer runs on, or one with `PerKeyOrdering`.
        ///
        /// Each record goes to the core that owns its shard (each shard has one, from the
        /// latest listing). With `PerKeyOrdering` a key must stay on one core whatever the map
        /// does, so each core takes a fixed part of the hash key space instead; a shard whose
        /// range crosses a cut is then written by each of those cores with its own aggregates,
        /// so a stream of fewer shards than cores gets up to that many times the Kinesis
        /// records (and PUT payload units) when aggregates do not fill.
        engine_cores: engine_cores, u64
    );

    /// `RecordMaxBufferedTime`: the longest a record waits to be packed before it is sent
    /// (default 100 ms).
    pub fn record_max_buffered_time(mut self, value: Duration) -> Self {
        self.record_max_buffered_time_ms = millis(value);
        self
    }
    /// `RecordTtl`: how long a record may keep being retried before it fails as expired
    /// (at least 100 ms; default 30 s).
    pub fn record_ttl(mut self, value: Duration) -> Self {
        self.record_ttl_ms = millis(value);
        self
    }
    /// `SpoolDirectory`: keep every record on local disk, in this directory, from when it is
    /// sent until it resolves, so that records survive a crash of the process or the machine
    /// (see `docs/delivery.md`, "The spool"). A producer opened on the directory sends first
    /// what an earlier one left unresolved; [`Producer::sync_spool`](crate::Producer::sync_spool)
    /// waits until what was sent before it is durable. One producer per directory.
    pub fn spool_directory(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.spool_directory = Some(dir.into());
        self
    }
    /// `SpoolMaxBytes`: the most the spool holds on disk (1 MiB ..= 1 PiB, default 1 GiB);
    /// when full, sends are refused or wait as when the buffer is full.
    pub fn spool_max_bytes(mut self, value: u64) -> Self {
        self.spool_max_bytes = value;
        self
    }
    /// `SpoolSyncInterval`: the longest a record appended to the spool waits before it is made
    /// durable with `fdatasync` (0 ..= 60 s, default 5 ms); appends in between share one.
    pub fn spool_sync_interval(mut self, value: Duration) -> Self {
        self.spool_sync_interval_ms = millis(value);
        self
    }
    /// `RequestTimeout`: the limit on one PutRecords or ListShards call (100 ms ..= 600 s).
    pub fn request_timeout(mut self, value: Duration) -> Self {
        self.request_timeout_ms = millis(value);
        self
    }
    /// `ConnectTimeout` (100 ms ..= 300 s).
    pub fn connect_timeout(mut self, value: Duration) -> Self {
        self.connect_timeout_ms = millis(value);
        self
    }
    /// `ShardMapRefreshInterval`: how often shard maps are refreshed (1 s ..= 1 day).
    pub fn shard_map_refresh_interval(mut self, value: Duration) -> Self {
        self.shard_map_refresh_interval_ms = millis(value);
        self
    }
    /// `Region`, e.g. `us-east-1`.
    pub fn region(mut self, value: impl Into<String>) -> Self {
        self.region = Some(value.into());
        self
    }
    /// The endpoint URL, e.g. `http://127.0.0.1:4567` for a local Kinesis.
    pub fn endpoint(mut self, value: impl Into<String>) -> Self {
        self.endpoint = Some(value.into());
        self
    }
    /// `MetricsLevel`: which metrics are recorded (default [`Level::Detailed`]: all of them;
    /// [`Level::None`] records none, at no cost).
    pub fn metrics_level(mut self, value: Level) -> Self {
        self.metrics_level = value;
        self
    }
    /// `MetricsGranularity`: down to which dimension metrics are broken down (default
    /// [`Granularity::Shard`]: global, per stream and per shard).
    pub fn metrics_granularity(mut self, value: Granularity) -> Self {
        self.metrics_granularity = value;
        self
    }
    /// Adds a dimension to every metric (the KPL's `addAdditionalMetricsDims` at global
    /// granularity): a label on each series the `metrics` crate gets, so that several producers
    /// in one process (or one service's instances) are told apart.
    pub fn metrics_dimension(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.metrics_dimensions.push((name.into(), value.into()));
        self
    }
    /// `UploadMetrics` (ours; default false): upload the metrics to CloudWatch as the KPL does,
    /// every `MetricsUploadDelay` under `MetricsNamespace`, with the producer's credentials.
    /// Needs the `cloudwatch` feature. The KPL uploads unless `MetricsLevel` is none; here it is
    /// asked for, since custom CloudWatch metrics are billed per metric (a 1,000-shard stream at
    /// shard granularity is over 10,000 of them).
    pub fn upload_metrics(mut self, value: bool) -> Self {
        self.upload_metrics = value;
        self
    }
    /// `MetricsNamespace`: the CloudWatch namespace of the uploaded metrics (default
    /// `KinesisProducerLibrary`, the KPL's).
    pub fn metrics_namespace(mut self, value: impl Into<String>) -> Self {
        self.metrics_namespace = value.into();
        self
    }
    /// `MetricsUploadDelay`: how often metrics are uploaded (1 ms ..= 60 s, default 60 s).
    pub fn metrics_upload_delay(mut self, value: Duration) -> Self {
        self.metrics_upload_delay_ms = millis(value);
        self
    }
    /// `CloudwatchEndpoint`: the CloudWatch endpoint URL (default: the region's).
    pub fn cloudwatch_endpoint(mut self, value: impl Into<String>) -> Self {
        self.cloudwatch_endpoint = Some(value.into());
        self
    }
    /// `ProxyHost` and `ProxyPort`: send every Kinesis and CloudWatch call through this HTTP
    /// proxy (HTTPS calls through a `CONNECT` tunnel). `host` is a host name or address, spoken
    /// to over plain HTTP, or a URL whose scheme, `http` or `https`, says how to speak to the
    /// proxy; `port` is used unless the URL has one (the KPL's default is 443).
    pub fn proxy(mut self, host: impl Into<String>, port: u16) -> Self {
        self.proxy.host = Some(host.into());
        self.proxy.port = Some(port);
        self
    }
    /// `ProxyUserName` and `ProxyPassword`: basic authentication with the proxy.
    pub fn proxy_credentials(
        mut self,
        user_name: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.proxy.user_name = Some(user_name.into());
        self.proxy.password = Some(password.into());
        self
    }
    /// `CaCertFile`: trust the certificates of this PEM file instead of the system's roots (as
    /// the KPL does), e.g. a private CA's, or a TLS-inspecting proxy's. Read and checked by
    /// [`build`](Self::build).
    pub fn ca_cert_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_cert_file = Some(path.into());
        self
    }
    /// `CaCertPath`: trust the certificates of every PEM file in this directory (OpenSSL's
    /// `-CApath` layout works) instead of the system's roots; with `CaCertFile`, both are
    /// trusted. Read and checked by [`build`](Self::build).
    pub fn ca_cert_path(mut self, dir: impl Into<PathBuf>) -> Self {
        self.ca_cert_path = Some(dir.into());
        self
    }
    /// `UserRecordTimeoutInMillis`: when set (not zero) and shorter than `RecordTtl`, records
    /// fail as expired after this long instead. The KPL times the future out in Java while the
    /// record may still be put; here a record in a call waits for the call's answer, so one
    /// reported failed is never stored afterwards.
    pub fn user_record_timeout(mut self, value: Duration) -> Self {
        self.user_record_timeout_ms = millis(value);
        self
    }
    /// Static credentials instead of the standard AWS credential chain (for local endpoints).
    pub fn credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.credentials = Some(StaticCredentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
        });
        self
    }

    /// Checks every value against its range and builds the [`Config`].
    ///
    /// # Errors
    /// [`ConfigError::OutOfRange`] naming the setting, its value and the range, when a value is
    /// out of the KPL's range; [`ConfigError::Incomplete`] for half a pair (a proxy user without
    /// a password, static credentials without a secret); [`ConfigError::Certificates`] when
    /// `CaCertFile` or `CaCertPath` cannot be read or holds no usable certificate.
    pub fn build(self) -> Result<Config, ConfigError> {
        let max_record_size = check(
            "MaxRecordSize",
            self.max_record_size,
            MAX_RECORD_SIZE as u64,
            MAX_RECORD_SIZE_LIMIT as u64,
        )?;
        let max_size = check(
            "AggregationMaxSize",
            self.aggregation_max_size,
            MIN_AGGREGATION_MAX_SIZE as u64,
            max_record_size,
        )?;
        let max_count = check(
            "AggregationMaxCount",
            self.aggregation_max_count,
            1,
            DEFAULT_AGGREGATION_MAX_COUNT as u64,
        )?;
        // Aggregation off is aggregation with room for one record: each is sent plain.
        let max_count = if self.aggregation_enabled {
            max_count
        } else {
            1
        };
        let aggregation = AggregationLimits::with_max_record_size(
            max_size as usize,
            max_count as usize,
            max_record_size as usize,
        )?;
        let collection_max_count = check(
            "CollectionMaxCount",
            self.collection_max_count,
            1,
            MAX_PUT_RECORDS_ENTRIES as u64,
        )?;
        let collection_max_size = check(
            "CollectionMaxSize",
            self.collection_max_size,
            MIN_COLLECTION_MAX_SIZE as u64,
            MAX_PUT_RECORDS_SIZE as u64,
        )?;
        check_ms(
            "RecordMaxBufferedTime",
            self.record_max_buffered_time_ms,
            0,
            MAX_BUFFERED_TIME_MS,
        )?;
        let max_user_record_size = self
            .max_user_record_size
            .map(|n| check("MaxUserRecordSize", n, 64, MAX_RECORD_SIZE_LIMIT as u64))
            .transpose()?
            .map(|n| n as usize);
        check_ms("RecordTtl", self.record_ttl_ms, 100, u32::MAX as u64)?;
        check_ms(
            "UserRecordTimeoutInMillis",
            self.user_record_timeout_ms,
            0,
            u32::MAX as u64,
        )?;
        let record_ttl_ms = match self.user_record_timeout_ms {
            0 => self.record_ttl_ms,
            timeout => timeout.min(self.record_ttl_ms),
        };
        let max_connections = check("MaxConnections", self.max_connections, 1, 256)?;
        let engine_cores = check("EngineCores", self.engine_cores, 0, 256)?;
        let rate_limit = check("RateLimit", self.rate_limit, 1, 1_000_000)?;
        let max_buffered_records = check(
            "MaxBufferedRecords",
            self.max_buffered_records,
            1,
            100_000_000,
        )?;
        let max_buffered_bytes = check(
            "MaxBufferedBytes",
            self.max_buffered_bytes,
            1 << 20,
            1 << 40,
        )?;
        check_ms("RequestTimeout", self.request_timeout_ms, 100, 600_000)?;
        check_ms("ConnectTimeout", self.connect_timeout_ms, 100, 300_000)?;
        check_ms(
            "ShardMapRefreshInterval",
            self.shard_map_refresh_interval_ms,
            1_000,
            86_400_000,
        )?;
        // An endpoint URL given in code or on the command line wins over the properties'
        // `KinesisEndpoint` and `KinesisPort`; `KinesisPort` alone is the regional endpoint's.
        let (endpoint, kinesis_port) = match (self.endpoint, self.kinesis_endpoint, self.port) {
            (Some(url), _, _) => (Some(with_scheme(&url)), None),
            (None, Some(host), Some(port)) => (Some(with_port(&host, port)), None),
            (None, Some(host), None) => (Some(with_scheme(&host)), None),
            (None, None, port) => (None, port.filter(|&p| p != 443)),
        };
        check_ms(
            "MetricsUploadDelay",
            self.metrics_upload_delay_ms,
            1,
            60_000,
        )?;
        if self.metrics_namespace.is_empty() {
            return Err(ConfigError::OutOfRange {
                property: "MetricsNamespace",
                value: "empty".into(),
                range: "1 to 255 characters".into(),
            });
        }
        if self.upload_metrics && !cfg!(feature = "cloudwatch") {
            return Err(ConfigError::NotOneOf {
                property: "UploadMetrics",
                value: "true".into(),
                allowed: "false (this build of kinesis-producer has no `cloudwatch` feature)"
                    .into(),
            });
        }
        let cloudwatch_endpoint = match (self.cloudwatch_endpoint, self.cloudwatch_port) {
            (Some(host), Some(port)) => Some(with_port(&host, port)),
            (Some(host), None) => Some(with_scheme(&host)),
            (None, _) => None,
        };
        if let Some(c) = &self.credentials {
            if c.access_key_id.is_empty() {
                return Err(ConfigError::Incomplete {
                    property: "AwsSecretKey",
                    needs: "AwsAccessKeyId",
                });
            }
            if c.secret_access_key.is_empty() {
                return Err(ConfigError::Incomplete {
                    property: "AwsAccessKeyId",
                    needs: "AwsSecretKey",
                });
            }
        }
        let spool_max_bytes = check("SpoolMaxBytes", self.spool_max_bytes, 1 << 20, 1 << 50)?;
        check_ms("SpoolSyncInterval", self.spool_sync_interval_ms, 0, 60_000)?;
        let spool = self.spool_directory.map(|dir| crate::spool::Options {
            dir,
            max_bytes: spool_max_bytes,
            sync_interval: Duration::from_millis(self.spool_sync_interval_ms),
        });
        let proxy = self.proxy.build()?;
        let trusted_certificates = network::trusted_certificates(
            self.ca_cert_file.as_deref(),
            self.ca_cert_path.as_deref(),
        )?;
        if !self.ignored.is_empty() {
            let names: Vec<String> = self.ignored.iter().map(ToString::to_string).collect();
            tracing::warn!("these properties have no effect here: {}", names.join("; "));
        }
        Ok(Config {
            aggregation_enabled: self.aggregation_enabled,
            aggregation,
            collection_max_count: collection_max_count as usize,
            collection_max_size: collection_max_size as usize,
            record_max_buffered_time: Duration::from_millis(self.record_max_buffered_time_ms),
            record_ttl: Duration::from_millis(record_ttl_ms),
            max_connections: max_connections as usize,
            engine_cores: engine_cores as usize,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            region: self.region,
            endpoint,
            credentials: self.credentials,
            shard_map_refresh_interval: Duration::from_millis(self.shard_map_refresh_interval_ms),
            fail_if_throttled: self.fail_if_throttled,
            per_key_ordering: self.per_key_ordering,
            max_user_record_size,
            rate_limit: rate_limit as u32,
            max_buffered_records: max_buffered_records as usize,
            max_buffered_bytes: max_buffered_bytes as usize,
            kinesis_port,
            log_level: self.log_level,
            metrics_level: self.metrics_level,
            metrics_granularity: self.metrics_granularity,
            metrics_dimensions: self.metrics_dimensions,
            upload_metrics: self.upload_metrics,
            metrics_namespace: self.metrics_namespace,
            metrics_upload_delay: Duration::from_millis(self.metrics_upload_delay_ms),
            cloudwatch_endpoint,
            proxy,
            trusted_certificates,
            ignored: self.ignored,
            spool,
        })
    }
}

/// The KPL takes a bare host name as `KinesisEndpoint` and speaks HTTPS to it.
fn with_scheme(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("https://{endpoint}")
    }
}

fn with_port(endpoint: &str, port: u16) -> String {
    let url = with_scheme(endpoint);
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", &url));
    let host = rest.split('/').next().unwrap_or(rest);
    let host = host
        .rsplit_once(':')
        .filter(|(_, p)| p.parse::<u16>().is_ok())
        .map_or(host, |(h, _)| h);
    format!("{scheme}://{host}:{port}")
}

#[cfg(test)]
mod tests;
