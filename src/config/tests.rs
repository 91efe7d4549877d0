//! The configuration's defaults, ranges and property names, against the KPL's.

use super::*;

#[test]
fn defaults_are_the_kpls() {
    let c = Config::default();
    assert!(c.aggregation_enabled());
    assert_eq!(c.aggregation_limits(), AggregationLimits::default());
    assert_eq!(
        (c.collection_max_count(), c.collection_max_size()),
        (500, 5_242_880)
    );
    assert_eq!(c.record_max_buffered_time(), Duration::from_millis(100));
    assert_eq!(c.record_ttl(), Duration::from_secs(30));
    assert_eq!(c.max_connections(), 24);
    assert_eq!(c.request_timeout(), Duration::from_secs(6));
}

#[test]
fn out_of_range_values_name_property_value_and_range() {
    let err = |b: ConfigBuilder| b.build().unwrap_err().to_string();
    assert_eq!(
        err(Config::builder().collection_max_count(501)),
        "CollectionMaxCount is 501; the range is 1..=500"
    );
    assert_eq!(
        err(Config::builder().collection_max_size(1000)),
        "CollectionMaxSize is 1000; the range is 52224..=5242880"
    );
    assert_eq!(
        err(Config::builder().max_connections(0)),
        "MaxConnections is 0; the range is 1..=256"
    );
    assert_eq!(
        err(Config::builder().record_ttl(Duration::from_millis(99))),
        "RecordTtl is 99 ms; the range is 100..=4294967295 ms"
    );
    assert_eq!(
        err(Config::builder().request_timeout(Duration::from_millis(50))),
        "RequestTimeout is 50 ms; the range is 100..=600000 ms"
    );
    assert_eq!(
        err(Config::builder().aggregation_max_size(63)),
        "AggregationMaxSize is 63; the range is 64..=1048576"
    );
    assert_eq!(
        err(Config::builder()
            .max_record_size(2 << 20)
            .aggregation_max_size(3 << 20)),
        "AggregationMaxSize is 3145728; the range is 64..=2097152"
    );
}

#[test]
fn properties_by_kpl_name() {
    let c = Config::builder()
        .set_property("AggregationEnabled", "FALSE")
        .and_then(|b| b.set_property("RecordMaxBufferedTime", "250"))
        .and_then(|b| b.set_property("KinesisEndpoint", "127.0.0.1"))
        .and_then(|b| b.set_property("KinesisPort", "4567"))
        .and_then(|b| b.set_property("Region", "eu-west-1"))
        .unwrap()
        .build()
        .unwrap();
    assert!(!c.aggregation_enabled());
    assert_eq!(c.aggregation_limits().max_count(), 1);
    assert_eq!(c.record_max_buffered_time(), Duration::from_millis(250));
    assert_eq!(c.endpoint(), Some("https://127.0.0.1:4567"));
    assert_eq!(c.region(), Some("eu-west-1"));
    let e = Config::builder()
        .set_property("RecordTtl", "soon")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "RecordTtl is \"soon\"; it must be a whole number"
    );
    let e = Config::builder()
        .set_property("AggregationEnabled", "yes")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "AggregationEnabled is \"yes\"; it must be true or false"
    );
    assert_eq!(
        with_port("http://localhost:1234/x", 99),
        "http://localhost:99"
    );
}
