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

/// Bytes read at a time from a file or stdin: lines are handed over from these blocks as they
/// are, copied only when one spans two blocks.
const READ_BLOCK: usize = 256 * 1024;

/// Input lines from the files named, or from stdin when none are; each as raw bytes, with its
/// source name and 1-based line number. Invalid UTF-8 is the caller's to report, per line.
pub fn for_each_line(
    files: &[PathBuf],
    f: impl FnMut(&str, usize, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    for_each_line_or_pause(files, f, || Ok(()))
}

/// As [`for_each_line`], and calls `pause` each time every line read so far has been handed
/// over and the next read may wait for input (a pipe, a terminal, `tail -f`): a caller that
/// gathers lines into batches sends what it holds then, so a slow input is not held back.
pub fn for_each_line_or_pause(
    files: &[PathBuf],
    mut f: impl FnMut(&str, usize, &[u8]) -> io::Result<()>,
    mut pause: impl FnMut() -> io::Result<()>,
) -> io::Result<()> {
    if files.is_empty() {
        let mut stdin = BufReader::with_capacity(READ_BLOCK, io::stdin().lock());
        each_line("stdin", &mut stdin, &mut f, &mut pause)
    } else {
        for path in files {
            let file = File::open(path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            let mut file = BufReader::with_capacity(READ_BLOCK, file);
            each_line(&path.display().to_string(), &mut file, &mut f, &mut pause)?;
        }
        Ok(())
    }
}

/// The lines of one input, handed over from the reader's blocks (see [`for_each_line_or_pause`]).
fn each_line(
    name: &str,
    reader: &mut impl BufRead,
    f: &mut impl FnMut(&str, usize, &[u8]) -> io::Result<()>,
    pause: &mut impl FnMut() -> io::Result<()>,
) -> io::Result<()> {
    let mut number = 0;
    let mut emit = |line: &[u8]| {
        number += 1;
        let end = line
            .iter()
            .rposition(|b| *b != b'\n' && *b != b'\r')
            .map_or(0, |i| i + 1);
        let line = &line[..end];
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        f(name, number, line)
    };
    // The start of a line whose end is in a later block.
    let mut partial = Vec::new();
    loop {
        let block = reader.fill_buf()?;
        if block.is_empty() {
            if !partial.is_empty() {
                emit(&partial)?;
            }
            return Ok(());
        }
        let len = block.len();
        let mut rest = block;
        while let Some(at) = memchr::memchr(b'\n', rest) {
            if partial.is_empty() {
                emit(&rest[..at])?;
            } else {
                partial.extend_from_slice(&rest[..at]);
                emit(&partial)?;
                partial.clear();
            }
            rest = &rest[at + 1..];
        }
        partial.extend_from_slice(rest);
        reader.consume(len);
        pause()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line of `input` read through blocks of `block` bytes: (number, line), and how many
    /// times the reader paused.
    fn lines(input: &[u8], block: usize) -> (Vec<(usize, String)>, usize) {
        let mut reader = BufReader::with_capacity(block, input);
        let mut out = Vec::new();
        let mut pauses = 0;
        each_line(
            "t",
            &mut reader,
            &mut |_, n, line| {
                out.push((n, String::from_utf8(line.to_vec()).unwrap()));
                Ok(())
            },
            &mut || {
                pauses += 1;
                Ok(())
            },
        )
        .unwrap();
        (out, pauses)
    }

    #[test]
    fn lines_are_the_same_whatever_the_block_size() {
        let input = b"first\r\nsecond line\n\n   \nfourth is long enough to span blocks\nlast";
        let want = vec![
            (1, "first".to_string()),
            (2, "second line".to_string()),
            (5, "fourth is long enough to span blocks".to_string()),
            (6, "last".to_string()),
        ];
        for block in [1, 2, 3, 7, 16, 1024] {
            let (got, pauses) = lines(input, block);
            assert_eq!(got, want, "blocks of {block} bytes");
            assert_eq!(
                pauses,
                input.len().div_ceil(block),
                "a pause after each block"
            );
        }
        assert_eq!(lines(b"", 8).0, vec![]);
        assert_eq!(lines(b"only\n", 8).0, vec![(1, "only".to_string())]);
    }
}
