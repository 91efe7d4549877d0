//! The configuration's defaults, ranges and property names, against the KPL's.

use super::*;

#[test]
fn defaults_are_the_kpls() {
    let c = Config::default();
    assert!(c.aggregation_enabled());
    assert_eq!(
        c.aggregation_limits().for_stream(MAX_RECORD_SIZE),
        AggregationLimits::default(),
        "on a stream of the default 1 MiB records"
    );
    // Up to what a stream allows: its own MaxRecordSizeInKiB decides, up to 10 MiB.
    assert_eq!(c.aggregation_limits().max_record_size(), 10 << 20);
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
        "CollectionMaxSize is 1000; the range is 52224..=10485760"
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
        "AggregationMaxSize is 63; the range is 64..=10485760"
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

/// Applies a `.properties` text the way `kpl --config` reads one (`Name = value` lines).
fn from_properties(text: &str) -> Result<ConfigBuilder, ConfigError> {
    let mut b = Config::builder();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line.split_once('=').unwrap();
        b = b.set_property(name.trim(), value.trim())?;
    }
    Ok(b)
}

#[test]
fn the_kpls_own_properties_at_their_defaults_are_all_accepted_and_none_warns() {
    let text = include_str!("../../tests/data/kpl-defaults.properties");
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/kpl-defaults.properties"
    );
    let c = Config::builder()
        .properties_file(path)
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(c.ignored_properties(), []);
    // Every name the file holds is one the table knows, and the defaults are the KPL's.
    assert_eq!(c.endpoint(), None);
    assert_eq!(
        c.kinesis_port(),
        None,
        "443 is the regional endpoint's own port"
    );
    assert_eq!(c.max_connections(), 24);
    assert_eq!(c.record_ttl(), Duration::from_secs(30));
    let names = text
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .count();
    // tests/kpl_properties.rs checks the names against the KPL 1.0.7 setters.
    assert_eq!(names, 45, "every KinesisProducerConfiguration property");
}

#[test]
fn a_properties_file_that_cannot_be_applied_names_the_file_and_the_line() {
    let dir = std::env::temp_dir().join(format!("kpl-props-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.properties");
    std::fs::write(
        &path,
        "# a comment\n! another\n\nRateLimit = 90\nRateLimit 80\n",
    )
    .unwrap();
    let e = Config::builder().properties_file(&path).unwrap_err();
    assert!(
        e.to_string()
            .ends_with("bad.properties line 5: expected `Name = value`, found \"RateLimit 80\""),
        "{e}"
    );
    std::fs::write(&path, "RateLimit: 90\nRecordTtl = soon\n").unwrap();
    let e = Config::builder().properties_file(&path).unwrap_err();
    assert!(
        e.to_string()
            .ends_with("bad.properties line 2: RecordTtl is \"soon\"; it must be a whole number"),
        "{e}"
    );
    assert!(std::error::Error::source(&e).is_some(), "the cause is kept");
    let e = Config::builder()
        .properties_file(dir.join("missing.properties"))
        .unwrap_err();
    assert!(
        e.to_string().starts_with("cannot read the properties file"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_property_of_the_table_is_accepted_at_its_default() {
    for p in PROPERTIES {
        let b = Config::builder()
            .set_property(p.name, p.default)
            .unwrap_or_else(|e| panic!("{}: {e}", p.name));
        let c = b.build().unwrap_or_else(|e| panic!("{}: {e}", p.name));
        assert_eq!(c.ignored_properties(), [], "{}", p.name);
        // The table's default is the one the builder starts from (the reference says so), but
        // for MaxUserRecordSize: the KPL's 1048576 set applies it; unset, the stream's own limit
        // decides (docs/configuration.md).
        if p.name == "MaxUserRecordSize" {
            assert_eq!(c.max_user_record_size(), Some(1 << 20));
            continue;
        }
        assert_eq!(c, Config::default(), "{}", p.name);
    }
    let mut names: Vec<_> = PROPERTY_NAMES.to_vec();
    names.sort_unstable();
    assert_eq!(names, PROPERTY_NAMES, "the table is sorted by name");
}

#[test]
fn properties_with_no_effect_here_are_reported_with_why() {
    let c = from_properties("ThreadPoolSize = 8\nMinConnections = 4\nThreadPoolSize = 16\n")
        .unwrap()
        .build()
        .unwrap();
    let ignored: Vec<String> = c
        .ignored_properties()
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(
        ignored,
        [
            "MinConnections (the HTTP client opens connections as calls need them)",
            "ThreadPoolSize (there is no native daemon: the producer runs in your process)",
        ]
    );
    assert_eq!(
        c.ignored_properties()[1].value,
        "16",
        "the last value given counts"
    );
    // Checked as the KPL checks them.
    let e = Config::builder()
        .set_property("MetricsLevel", "verbose")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "MetricsLevel is \"verbose\"; it must be one of none, summary, detailed"
    );
    let e = Config::builder()
        .set_property("ThreadPoolSize", "many")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "ThreadPoolSize is \"many\"; it must be a whole number"
    );
    let e = Config::builder()
        .set_property("VerifyCertificate", "false")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "VerifyCertificate is \"false\"; it must be one of true (certificates are always verified; \
         to trust a private CA, give its certificate in CaCertFile)"
    );
}

#[test]
fn kinesis_port_alone_is_the_regional_endpoints_and_an_endpoint_url_wins_over_the_file() {
    let c = from_properties("KinesisPort = 8443")
        .unwrap()
        .build()
        .unwrap();
    assert_eq!((c.endpoint(), c.kinesis_port()), (None, Some(8443)));
    // A file's KinesisEndpoint and KinesisPort give way to an endpoint URL set in code (or
    // by `--endpoint-url`): it is used as given, port included.
    let c = from_properties("KinesisEndpoint = kinesis.example.com\nKinesisPort = 443")
        .unwrap()
        .endpoint("http://127.0.0.1:1")
        .build()
        .unwrap();
    assert_eq!(
        (c.endpoint(), c.kinesis_port()),
        (Some("http://127.0.0.1:1"), None)
    );
    // The KPL 0.x names.
    let c = from_properties("CustomEndpoint = 127.0.0.1\nPort = 4567")
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(c.endpoint(), Some("https://127.0.0.1:4567"));
}

#[test]
fn static_credentials_by_the_kpls_old_names_need_both_parts() {
    let c = from_properties("AwsAccessKeyId = AKIDEXAMPLE\nAwsSecretKey = secret")
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(c.credentials().unwrap().access_key_id, "AKIDEXAMPLE");
    assert!(!format!("{c:?}").contains("secret"), "never printed");
    let e = from_properties("AwsAccessKeyId = AKIDEXAMPLE")
        .unwrap()
        .build()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "AwsAccessKeyId is set but AwsSecretKey is not; set both"
    );
}

#[test]
fn max_user_record_size_is_the_kpls_user_record_check_not_the_stream_cap() {
    let c = from_properties("MaxUserRecordSize = 2097152")
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(c.max_user_record_size(), Some(2 << 20));
    assert_eq!(c.aggregation_limits().max_record_size(), 10 << 20);
    assert_eq!(Config::default().max_user_record_size(), None);
}

#[test]
fn the_configuration_reference_matches_the_table() {
    let doc = include_str!("../../docs/configuration.md");
    let rows: Vec<&str> = doc.lines().filter(|l| l.starts_with("| `")).collect();
    assert_eq!(rows.len(), PROPERTIES.len(), "one row per property");
    for (row, p) in rows.iter().zip(PROPERTIES) {
        let kind = match p.kind {
            Kind::Boolean => "boolean",
            Kind::Number => "number",
            Kind::Text => "text",
        };
        let default = if p.default.is_empty() {
            "(not set)".to_owned()
        } else {
            format!("`{}`", p.default)
        };
        let start = format!("| `{}` | {kind} | {default} |", p.name);
        assert!(row.starts_with(&start), "{row}\nshould start {start}");
        if let Effect::Ignored(why) = p.effect {
            assert!(row.contains(&format!("no effect here: {why}")), "{row}");
        } else {
            assert!(!row.contains("no effect here"), "{row}");
        }
    }
}

#[test]
fn user_record_timeout_shortens_record_ttl_when_set() {
    let ttl = |text: &str| from_properties(text).unwrap().build().unwrap().record_ttl();
    assert_eq!(
        ttl("UserRecordTimeoutInMillis = 0"),
        Duration::from_secs(30)
    );
    assert_eq!(
        ttl("UserRecordTimeoutInMillis = 500"),
        Duration::from_millis(500)
    );
    assert_eq!(
        ttl("RecordTtl = 2000\nUserRecordTimeoutInMillis = 60000"),
        Duration::from_secs(2)
    );
    let c = from_properties("UserRecordTimeoutInMillis = 500")
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(c.ignored_properties(), [], "it has an effect");
}

#[test]
fn proxy_and_ca_properties_take_effect() {
    let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/test-ca.pem");
    let c = from_properties(&format!(
        "ProxyHost = 127.0.0.1\nProxyPort = 3128\nProxyUserName = kpl\nProxyPassword = pw\n\
         CaCertFile = {ca}\nLogLevel = debug\nEnableOldestFutureTracker = false"
    ))
    .unwrap()
    .build()
    .unwrap();
    let proxy = c.proxy().unwrap();
    assert_eq!(
        (proxy.url(), proxy.user_name()),
        ("http://127.0.0.1:3128", Some("kpl"))
    );
    assert_eq!(c.trusted_certificates().unwrap().len(), 1);
    assert_eq!(c.log_level(), "debug");
    let ignored: Vec<&str> = c.ignored_properties().iter().map(|p| &*p.name).collect();
    assert_eq!(ignored, ["EnableOldestFutureTracker"]);
    assert!(
        !format!("{c:?}").contains("\"pw\""),
        "the password is never printed"
    );
    // At the KPL's defaults (empty host, port 443), no proxy and the system's roots.
    let c = from_properties("ProxyHost =\nProxyPort = 443\nCaCertFile =\nCaCertPath =")
        .unwrap()
        .build()
        .unwrap();
    assert_eq!((c.proxy(), c.trusted_certificates()), (None, None));
}
