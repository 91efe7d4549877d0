//! Turning input lines into user records, and the dead-letter file: shared by `kpl put` and
//! `kpl tail`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use kinesis_producer::{HashKey, PutError, UserRecord};
use serde_json::Value;

use crate::io::b64;

/// How a line becomes a record.
#[derive(clap::Args, Debug, Clone)]
pub struct LineArgs {
    /// Read each line as a JSON object (for --partition-key-field and the like).
    #[arg(long)]
    pub json: bool,
    /// With --json: the field whose value is the partition key (otherwise a random key).
    #[arg(long, value_name = "FIELD", requires = "json")]
    pub partition_key_field: Option<String>,
    /// With --json: the field whose value is the explicit hash key (a decimal string or number).
    #[arg(long, value_name = "FIELD", requires = "json")]
    pub explicit_hash_key_field: Option<String>,
    /// With --json: send this field's value (a string as its text, anything else as JSON)
    /// instead of the whole line.
    #[arg(long, value_name = "FIELD", requires = "json")]
    pub data_field: Option<String>,
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn random_key() -> String {
    format!("{:032x}", fastrand::u128(..))
}

impl LineArgs {
    /// The record a line (without its line ending) stands for, or why it is not one.
    pub fn record(&self, line: &[u8]) -> Result<UserRecord, String> {
        if !self.json {
            return UserRecord::new(random_key(), line.to_vec()).map_err(|e| e.to_string());
        }
        let value: Value = serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
        let field = |name: &str| value.get(name).ok_or_else(|| format!("no field {name:?}"));
        let key = match &self.partition_key_field {
            Some(f) => text_of(field(f)?),
            None => random_key(),
        };
        let data = match &self.data_field {
            Some(f) => text_of(field(f)?).into_bytes(),
            None => line.to_vec(),
        };
        let record = UserRecord::new(key, data).map_err(|e| e.to_string())?;
        match &self.explicit_hash_key_field {
            Some(f) => {
                let key: HashKey = text_of(field(f)?)
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
            "attempts": e.attempts.len(),
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
