//! A KPL 1.0.7 user's `.properties` file works unchanged: every property the KPL's own
//! `KinesisProducerConfiguration` can take from a file is accepted, with the KPL's default and
//! range. The names, defaults and ranges come from a copy of the KPL's setters
//! (`tests/data/kpl-1.0.7-configuration.tsv`, read from its source at tag v1.0.7), not from the
//! producer's own table.

use kinesis_producer::config::{Effect, PROPERTIES};
use kinesis_producer::{Config, ConfigBuilder, ConfigError};

/// One setter of the KPL's configuration.
struct Setter {
    name: String,
    java_type: String,
    default: String,
    range: String,
}

fn kpl_setters() -> Vec<Setter> {
    let text = include_str!("data/kpl-1.0.7-configuration.tsv");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            Setter {
                name: cols[0].to_owned(),
                java_type: cols[1].to_owned(),
                default: cols[2].to_owned(),
                range: cols.get(3).copied().unwrap_or("").to_owned(),
            }
        })
        .collect()
}

/// A value the setter takes at its default: `(unset)` (a null Boolean) as the daemon's default.
fn default_value(s: &Setter) -> &str {
    if s.default == "(unset)" {
        "false"
    } else {
        &s.default
    }
}

fn with(name: &str, value: &str) -> Result<Config, ConfigError> {
    Config::builder().set_property(name, value)?.build()
}

#[test]
fn the_copy_of_the_kpls_setters_is_whole() {
    let setters = kpl_setters();
    assert_eq!(setters.len(), 45);
    for name in [
        "ReturnUserRecordOnFailure",
        "EnableDaemonHealthCheck",
        "DaemonHealthCheckTimeoutMs",
        "MaxUserRecordSize",
    ] {
        assert!(setters.iter().any(|s| s.name == name), "{name}");
    }
}

#[test]
fn every_kpl_property_is_accepted_at_its_default_without_a_warning() {
    for s in kpl_setters() {
        let c = with(&s.name, default_value(&s)).unwrap_or_else(|e| panic!("{}: {e}", s.name));
        assert_eq!(c.ignored_properties(), [], "{} at its default", s.name);
        let ours = PROPERTIES
            .iter()
            .find(|p| p.name == s.name)
            .unwrap_or_else(|| panic!("{} is not in the table", s.name));
        if s.default != "(unset)" {
            assert_eq!(ours.default, s.default, "{}'s default", s.name);
        }
    }
}

#[test]
fn every_kpl_range_is_the_kpls() {
    for s in kpl_setters() {
        let Some((low, high)) = s.range.split_once("..") else {
            continue;
        };
        let low: u64 = low.parse().unwrap();
        let high: Option<u64> = high.strip_prefix('=').map(|h| h.parse().unwrap());
        let name = &s.name;
        with(name, &low.to_string()).unwrap_or_else(|e| panic!("{name} = {low}: {e}"));
        if low > 0 {
            let below = (low - 1).to_string();
            assert!(with(name, &below).is_err(), "{name} = {below} is refused");
        }
        if let Some(high) = high {
            with(name, &high.to_string()).unwrap_or_else(|e| panic!("{name} = {high}: {e}"));
            if high < i64::MAX as u64 {
                let above = (high + 1).to_string();
                assert!(with(name, &above).is_err(), "{name} = {above} is refused");
            }
        }
        assert!(
            s.java_type == "long" || s.java_type == "int",
            "{name}: a range on a number"
        );
    }
}

/// A whole file, as a KPL 1.0.7 user has it: every property at its default.
#[test]
fn a_kpl_1_0_7_file_of_defaults_loads_unchanged() {
    let file: String = kpl_setters()
        .iter()
        .map(|s| format!("{} = {}\n", s.name, default_value(s)))
        .collect();
    let path = std::env::temp_dir().join(format!("kpl-1.0.7-{}.properties", std::process::id()));
    std::fs::write(&path, file).unwrap();
    let c = ConfigBuilder::default()
        .properties_file(&path)
        .unwrap()
        .build()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(c.ignored_properties(), []);
}

#[test]
fn the_daemons_properties_are_named_in_the_warning_when_set_away_from_their_default() {
    let c = Config::builder()
        .set_property("EnableDaemonHealthCheck", "true")
        .unwrap()
        .set_property("DaemonHealthCheckTimeoutMs", "60000")
        .unwrap()
        .build()
        .unwrap();
    let names: Vec<&str> = c.ignored_properties().iter().map(|p| &*p.name).collect();
    assert_eq!(
        names,
        ["EnableDaemonHealthCheck", "DaemonHealthCheckTimeoutMs"]
    );
    let ignored = PROPERTIES
        .iter()
        .filter(|p| matches!(p.effect, Effect::Ignored(_)))
        .count();
    assert!(ignored > 0);
}

/// `MaxUserRecordSize` is the KPL's client-side check on a user record's size (data plus
/// partition key), 64..=10485760, default 1048576 in the KPL.
#[tokio::test(start_paused = true)]
async fn max_user_record_size_refuses_larger_user_records() {
    use kinesis_producer::sink::memory::MemorySink;
    use kinesis_producer::{Producer, PutErrorKind, RecordError, UserRecord};
    let config = Config::builder()
        .set_property("MaxUserRecordSize", "100")
        .unwrap()
        .build()
        .unwrap();
    let producer = Producer::with_sink(config, MemorySink::new().with_stream("s", 1));
    let fits = producer.send("s", UserRecord::new("k", vec![0u8; 99]).unwrap());
    let over = producer.send("s", UserRecord::new("k", vec![0u8; 100]).unwrap());
    fits.await.unwrap();
    let err = over.await.unwrap_err();
    assert_eq!(
        err.kind,
        PutErrorKind::InvalidRecord(RecordError::RecordTooLarge {
            size: 101,
            data_len: 100,
            key_len: 1,
            limit: 100
        })
    );
    producer.shutdown().await;
}

/// A name no KPL has: the KPL logs a warning and ignores it; here it is an error naming the
/// closest known property, unless unknown names are to be ignored as the KPL does.
#[test]
fn an_unknown_name_names_the_closest_property_and_the_kpls_way_is_one_flag_away() {
    let err = Config::builder()
        .set_property("RecordMaxBufferedTme", "100")
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with(
            "unknown property RecordMaxBufferedTme; did you mean RecordMaxBufferedTime?"
        ),
        "{message}"
    );
    let c = Config::builder()
        .ignore_unknown_properties(true)
        .set_property("RecordMaxBufferedTme", "100")
        .unwrap()
        .build()
        .unwrap();
    let ignored = c.ignored_properties();
    assert_eq!(ignored.len(), 1);
    assert_eq!(ignored[0].name, "RecordMaxBufferedTme");
    // Not a KPL name either: the KPL never had ReturnUserRecordInFuture.
    let err = with("ReturnUserRecordInFuture", "true").unwrap_err();
    assert!(
        err.to_string()
            .contains("did you mean ReturnUserRecordOnFailure?"),
        "{err}"
    );
}
