//! `kpl bench --sweep NAME=V1,V2,...`: the same workload at each value of one producer
//! property, side by side, and a chart of packing efficiency and p99 latency against the value.

use kinesis_producer::ConfigBuilder;
use serde::Serialize;

/// One property and the values a sweep runs it at.
#[derive(Clone, Debug)]
pub struct Sweep {
    pub name: String,
    pub values: Vec<String>,
}

/// The property value a run was made at.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Setting {
    pub name: String,
    pub value: String,
}

impl std::str::FromStr for Sweep {
    type Err = String;

    /// `NAME=V1,V2,...`: a KPL property by its name, each value checked as the property file
    /// reader checks it (and later, with the rest of the configuration, for its range).
    fn from_str(s: &str) -> Result<Sweep, String> {
        let (name, values) = s.split_once('=').ok_or_else(|| {
            format!("--sweep {s:?}: use NAME=V1,V2,... (a producer property and its values)")
        })?;
        let name = name.trim();
        if name == "AggregationEnabled" {
            return Err(
                "--sweep AggregationEnabled: use --aggregation on|off|both, which every sweep runs at"
                    .into(),
            );
        }
        let values: Vec<String> = values.split(',').map(|v| v.trim().to_owned()).collect();
        if values.iter().any(String::is_empty) {
            return Err(format!("--sweep {s:?}: a value is empty"));
        }
        if values.len() > 20 {
            return Err(format!(
                "--sweep {s:?}: {} values; at most 20 runs a sweep",
                values.len()
            ));
        }
        for v in &values {
            ConfigBuilder::default()
                .set_property(name, v)
                .and_then(ConfigBuilder::build)
                .map_err(|e| format!("--sweep {name}={v}: {e}"))?;
        }
        Ok(Sweep {
            name: name.to_owned(),
            values,
        })
    }
}

impl Sweep {
    /// The settings the runs are made at: each value of the property, in the order given.
    pub fn settings(&self) -> Vec<Setting> {
        self.values
            .iter()
            .map(|v| Setting {
                name: self.name.clone(),
                value: v.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_names_a_known_property_and_values_in_its_range() {
        let s: Sweep = "RecordMaxBufferedTime=10, 100,500".parse().unwrap();
        assert_eq!(s.name, "RecordMaxBufferedTime");
        assert_eq!(s.values, ["10", "100", "500"]);
        assert_eq!(s.settings()[1].value, "100");
        for (bad, why) in [
            ("RecordMaxBufferedTime", "use NAME=V1,V2,..."),
            (
                "RecordMaxBufferedTme=10",
                "unknown property RecordMaxBufferedTme",
            ),
            (
                "AggregationMaxSize=10,51200",
                "--sweep AggregationMaxSize=10:",
            ),
            ("CollectionMaxCount=100,,200", "a value is empty"),
            ("AggregationEnabled=true,false", "use --aggregation"),
            (
                "CollectionMaxCount=1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21",
                "21 values; at most 20",
            ),
        ] {
            let err = bad.parse::<Sweep>().unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
