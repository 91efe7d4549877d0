//! JSON Lines shapes and input helpers shared by the commands.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use kinesis_producer::{HashKey, UserRecord};
use serde::{Deserialize, Serialize};

/// A user record as `kpl aggregate` reads it. Unknown fields are ignored, so the user-record
/// lines `kpl inspect --json` prints can be fed back in.
#[derive(Debug, Deserialize)]
pub struct InputRecord {
    pub partition_key: String,
    #[serde(default)]
    pub explicit_hash_key: Option<String>,
    /// Data as UTF-8 text.
    #[serde(default)]
    pub data: Option<String>,
    /// Data as base64, for binary payloads.
    #[serde(default)]
    pub data_base64: Option<String>,
}

impl InputRecord {
    pub fn into_user_record(self) -> Result<UserRecord, String> {
        let data = match (self.data, self.data_base64) {
            (Some(text), None) => text.into_bytes(),
            (None, Some(b64)) => B64
                .decode(b64.trim())
                .map_err(|e| format!("data_base64 is not valid base64: {e}"))?,
            (Some(_), Some(_)) => return Err("give \"data\" or \"data_base64\", not both".into()),
            (None, None) => return Err("missing \"data\" (UTF-8 text) or \"data_base64\"".into()),
        };
        let record = UserRecord::new(self.partition_key, data).map_err(|e| e.to_string())?;
        Ok(match self.explicit_hash_key {
            Some(k) => {
                record.with_explicit_hash_key(k.parse::<HashKey>().map_err(|e| e.to_string())?)
            }
            None => record,
        })
    }
}

/// A Kinesis record as `kpl aggregate` prints it and `kpl inspect` reads it.
#[derive(Debug, Serialize, Deserialize)]
pub struct KinesisRecordLine {
    pub partition_key: Option<String>,
    #[serde(default)]
    pub explicit_hash_key: Option<String>,
    pub data_base64: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_records: Option<usize>,
}

pub fn b64(data: &[u8]) -> String {
    B64.encode(data)
}

pub fn unb64(text: &str) -> Result<Vec<u8>, String> {
    B64.decode(text.trim())
        .map_err(|e| format!("not valid base64: {e}"))
}

/// Input lines from the files named, or from stdin when none are; each as raw bytes, with its
/// source name and 1-based line number. Invalid UTF-8 is the caller's to report, per line.
pub fn for_each_line(
    files: &[PathBuf],
    mut f: impl FnMut(&str, usize, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut each = |name: &str, reader: &mut dyn BufRead| -> io::Result<()> {
        let mut line = Vec::new();
        let mut number = 0;
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                return Ok(());
            }
            number += 1;
            while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                line.pop();
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                f(name, number, &line)?;
            }
        }
    };
    if files.is_empty() {
        each("stdin", &mut io::stdin().lock())
    } else {
        for path in files {
            let file = File::open(path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            each(&path.display().to_string(), &mut BufReader::new(file))?;
        }
        Ok(())
    }
}

/// A whole file's bytes.
pub fn read_file(path: &PathBuf) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    Ok(data)
}
