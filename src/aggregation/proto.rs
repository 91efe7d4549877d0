//! prost structs mirroring `proto/aggregation.proto` (no `protoc` needed to build).
//!
//! The schema's `required` fields are declared `optional` here so that decoding can tell an
//! absent field from a zero one: strict deaggregation rejects a record without its partition key
//! index or data, as the Java protobuf runtime under the KCL does. Encoding through these structs
//! with every required field set gives the same bytes as a proto2 encoder; the hot path encodes
//! by hand (see `packer.rs`) and is pinned to these structs and to golden vectors by tests.

/// `message AggregatedRecord`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AggregatedRecord {
    /// `repeated string partition_key_table = 1`.
    #[prost(string, repeated, tag = "1")]
    pub partition_key_table: Vec<String>,
    /// `repeated string explicit_hash_key_table = 2`.
    #[prost(string, repeated, tag = "2")]
    pub explicit_hash_key_table: Vec<String>,
    /// `repeated Record records = 3`.
    #[prost(message, repeated, tag = "3")]
    pub records: Vec<Record>,
}

/// `message Record`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Record {
    /// `required uint64 partition_key_index = 1`.
    #[prost(uint64, optional, tag = "1")]
    pub partition_key_index: Option<u64>,
    /// `optional uint64 explicit_hash_key_index = 2`.
    #[prost(uint64, optional, tag = "2")]
    pub explicit_hash_key_index: Option<u64>,
    /// `required bytes data = 3`.
    #[prost(bytes = "bytes", optional, tag = "3")]
    pub data: Option<bytes::Bytes>,
    /// `repeated Tag tags = 4`: never written by the KPL or by us; read and ignored.
    #[prost(message, repeated, tag = "4")]
    pub tags: Vec<Tag>,
}

/// `message Tag`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Tag {
    /// `required string key = 1`.
    #[prost(string, optional, tag = "1")]
    pub key: Option<String>,
    /// `optional string value = 2`.
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}
