//! Turning input lines into user records, and the dead-letter file: shared by `kpl put` and
//! `kpl tail`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use kinesis_producer::{HashKey, PutError, UserRecord};
use serde_json::Value;

use crate::io::b64;
use crate::pick::{Picked, Wanted, pick};

/// How a line becomes a record.
#[derive(clap::Args, Debug, Clone)]
pub struct LineArgs {
    /// Read each line as a JSON object (implied by --partition-key-field and the other field
    /// options).
    #[arg(long)]
    pub json: bool,
    /// The JSON field whose value is the partition key (otherwise a random key); implies --json.
    #[arg(long, value_name = "FIELD")]
    pub partition_key_field: Option<String>,
    /// The JSON field whose value is the explicit hash key (a decimal string or number); a line
    /// without it (or with null) has none, as in the KPL API. Implies --json.
    #[arg(long, value_name = "FIELD")]
    pub explicit_hash_key_field: Option<String>,
    /// Send this JSON field's value (a string as its text, anything else as JSON) instead of the
    /// whole line; implies --json.
    #[arg(long, value_name = "FIELD")]
    pub data_field: Option<String>,
}

fn text_of(v: Value) -> String {
    match v {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

fn random_key() -> String {
    format!("{:032x}", fastrand::u128(..))
}

impl LineArgs {
    /// Whether lines are read as JSON: asked for, or implied by a field flag.
    pub fn is_json(&self) -> bool {
        self.json
            || self.partition_key_field.is_some()
            || self.explicit_hash_key_field.is_some()
            || self.data_field.is_some()
    }

    /// The record a line (without its line ending) stands for, or why it is not one.
    pub fn record(&self, line: &[u8]) -> Result<UserRecord, String> {
        if !self.is_json() {
            return UserRecord::new(random_key(), line.to_vec()).map_err(|e| e.to_string());
        }
        let wanted = Wanted {
            key: self.partition_key_field.as_deref(),
            hash_key: self.explicit_hash_key_field.as_deref(),
            data: self.data_field.as_deref(),
        };
        let picked = match pick(line, wanted) {
            Some(picked) => picked,
            None => {
                // Not one JSON object: read the general way, for the same outcome and error.
                let value: Value =
                    serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
                let get = |name: Option<&str>| name.and_then(|n| value.get(n)).cloned();
                Picked {
                    key: get(wanted.key),
                    hash_key: get(wanted.hash_key),
                    data: get(wanted.data),
                }
            }
        };
        let field = |value: Option<Value>, name: &str| {
            value
                .map(text_of)
                .ok_or_else(|| format!("no field {name:?}"))
        };
        let key = match &self.partition_key_field {
            Some(f) => field(picked.key, f)?,
            None => random_key(),
        };
        let data = match &self.data_field {
            Some(f) => field(picked.data, f)?.into_bytes(),
            None => line.to_vec(),
        };
        let record = UserRecord::new(key, data).map_err(|e| e.to_string())?;
        // An absent (or null) explicit hash key field means "none": routed by the partition key.
        match picked.hash_key.filter(|v| !v.is_null()) {
            Some(v) => {
                let key: HashKey = text_of(v)
                    .parse()
                    .map_err(|e: kinesis_producer::RecordError| e.to_string())?;
                Ok(record.with_explicit_hash_key(key))
            }
            None => Ok(record),
        }
    }
}

/// Records that could not be put, as JSON Lines (the record as `kpl put --replay` and
/// `kpl aggregate` read it, with the error); the file is created at the first failure.
pub struct DeadLetter {
    pub path: PathBuf,
    out: Option<BufWriter<File>>,
    /// Records written.
    pub written: u64,
}

impl DeadLetter {
    pub fn new(path: PathBuf) -> DeadLetter {
        DeadLetter {
            path,
            out: None,
            written: 0,
        }
    }

    /// Appends a failed record (to an existing file too: `kpl tail` restarts add to it).
    pub fn write(&mut self, e: &PutError) -> std::io::Result<()> {
        if self.out.is_none() {
            let file = File::options()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|err| {
                    std::io::Error::new(err.kind(), format!("{}: {err}", self.path.display()))
                })?;
            self.out = Some(BufWriter::new(file));
        }
        let mut line = serde_json::json!({
            "partition_key": e.record.partition_key(),
            "data_base64": b64(e.record.data()),
            "error": e.kind.to_string(),
            "attempts": e.attempts.count(),
        });
        if let Some(k) = e.record.explicit_hash_key() {
            line["explicit_hash_key"] = k.to_string().into();
        }
        let out = self.out.as_mut().expect("just opened");
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")?;
        self.written += 1;
        Ok(())
    }

    /// Writes what is buffered through to the disk, so a checkpoint that counts these records
    /// as handled never runs ahead of them.
    pub fn sync(&mut self) -> std::io::Result<()> {
        if let Some(out) = self.out.as_mut() {
            out.flush()?;
            out.get_ref().sync_data()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pk: Option<&str>, ehk: Option<&str>, data: Option<&str>) -> LineArgs {
        LineArgs {
            json: false,
            partition_key_field: pk.map(Into::into),
            explicit_hash_key_field: ehk.map(Into::into),
            data_field: data.map(Into::into),
        }
    }

    #[test]
    fn an_absent_or_null_explicit_hash_key_field_means_none() {
        let a = args(Some("user"), Some("h"), None);
        let r = a.record(br#"{"user":"u1","v":1}"#).unwrap();
        assert_eq!((r.partition_key(), r.explicit_hash_key()), ("u1", None));
        let r = a.record(br#"{"user":"u1","h":null}"#).unwrap();
        assert_eq!(r.explicit_hash_key(), None);
        let r = a.record(br#"{"user":"u1","h":"42"}"#).unwrap();
        assert_eq!(r.explicit_hash_key(), Some(HashKey(42)));
        let r = a.record(br#"{"user":"u1","h":42}"#).unwrap();
        assert_eq!(r.explicit_hash_key(), Some(HashKey(42)));
        // A present but invalid one is still an error that says why.
        let e = a.record(br#"{"user":"u1","h":"-1"}"#).unwrap_err();
        assert!(e.contains("-1"), "{e}");
    }

    #[test]
    fn a_field_option_implies_json() {
        let r = args(Some("user"), None, Some("msg"))
            .record(br#"{"user":"u7","msg":"hi"}"#)
            .unwrap();
        assert_eq!((r.partition_key(), &r.data()[..]), ("u7", &b"hi"[..]));
        let e = args(Some("user"), None, None)
            .record(b"not json")
            .unwrap_err();
        assert!(e.starts_with("not JSON"), "{e}");
        // Without a field option and without --json, a line is raw data.
        let r = args(None, None, None).record(b"not json").unwrap();
        assert_eq!(&r.data()[..], b"not json");
    }
}
