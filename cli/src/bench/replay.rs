//! The user's own records as the workload (`kpl bench --input FILE`): read once, before the
//! clock starts, then sent as they are (sizes, partition keys, explicit hash keys), cycled or
//! cut to the run's length, optionally at their recorded pace.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use kinesis_producer::UserRecord;
use serde::Serialize;

use crate::io::{InputRecord, for_each_line};
use crate::lines::LineArgs;

/// How the input's lines are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// `read` when the first line is one `kpl read` prints, `jsonl` when a field flag is given,
    /// otherwise `lines`.
    Auto,
    /// Each line a record's data, with a random partition key (as `kpl put` without --json).
    Lines,
    /// JSON Lines as `kpl put --json` reads them, with the same field flags.
    Jsonl,
    /// The JSON lines `kpl read` prints (partition_key, explicit_hash_key, data or data_base64,
    /// arrival_timestamp): a captured sample of a live stream.
    Read,
}

/// How fast the records are offered.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// As fast as the producer takes them.
    AsFast,
    /// This many user records per second.
    Rate(f64),
    /// At the pace the input's arrival timestamps record.
    Original,
}

impl Pace {
    /// The offered records per second, when the pace is a rate.
    pub fn rate(self) -> Option<f64> {
        match self {
            Pace::Rate(r) => Some(r),
            _ => None,
        }
    }
}

impl std::str::FromStr for Pace {
    type Err = String;

    fn from_str(s: &str) -> Result<Pace, String> {
        match s {
            "as-fast" => Ok(Pace::AsFast),
            "original" => Ok(Pace::Original),
            _ => match s.parse::<f64>() {
                Ok(r) if r.is_finite() && r > 0.0 => Ok(Pace::Rate(r)),
                _ => Err(format!(
                    "--pace {s:?}: use original, as-fast or a number of records per second above 0"
                )),
            },
        }
    }
}

/// What was read from the input, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct InputSummary {
    pub path: PathBuf,
    pub format: InputFormat,
    /// User records in one pass over the input.
    pub records: u64,
    pub distinct_partition_keys: u64,
    pub with_explicit_hash_key: u64,
    /// Bytes of data: the median and the largest.
    pub data_bytes_p50: usize,
    pub data_bytes_max: usize,
    /// Seconds from the first arrival timestamp to the last, where the input has them.
    pub recorded_seconds: Option<f64>,
}

/// The input's records, and when each arrived relative to the first (where recorded).
pub struct Replay {
    records: Vec<UserRecord>,
    /// Seconds after the first record's arrival, ascending as the input has them; `None` when
    /// any line lacks a timestamp.
    offsets: Option<Vec<f64>>,
    pub summary: InputSummary,
}

impl Replay {
    /// Reads `path` as `format` says (`fields` for JSON Lines).
    ///
    /// # Errors
    /// The file cannot be read, a line is not a record (named by its number, with why), or
    /// the file holds no record.
    pub fn load(path: &Path, format: InputFormat, fields: &LineArgs) -> Result<Replay, String> {
        let any_field = fields.is_json();
        // JSON Lines read with the field flags, whether or not a flag implies JSON.
        let jsonl = LineArgs {
            json: true,
            ..fields.clone()
        };
        let mut format = format;
        let mut records = Vec::new();
        let mut offsets: Vec<Option<f64>> = Vec::new();
        let mut error = None;
        for_each_line(&[path.to_path_buf()], |source, n, line| {
            if format == InputFormat::Auto {
                format = detect(line, any_field);
            }
            let read = match format {
                InputFormat::Read => read_line(line),
                InputFormat::Jsonl => jsonl.record(line).map(|r| (r, None)),
                InputFormat::Lines | InputFormat::Auto => fields.record(line).map(|r| (r, None)),
            };
            match read {
                Ok((record, arrival)) => {
                    records.push(record);
                    offsets.push(arrival);
                    Ok(())
                }
                Err(e) => {
                    error = Some(format!("{source} line {n}: {e}"));
                    Err(std::io::Error::other("stop"))
                }
            }
        })
        .map_err(|e| error.take().unwrap_or_else(|| e.to_string()))?;
        if records.is_empty() {
            return Err(format!("{}: no records in it", path.display()));
        }
        let first = offsets.first().copied().flatten();
        let offsets: Option<Vec<f64>> = offsets
            .into_iter()
            .map(|a| Some(a? - first?))
            .collect::<Option<Vec<f64>>>()
            // Out of order input (shards read one after another) is paced in arrival order
            // only where it is ascending: a record never waits for an earlier time.
            .map(|o| running_max(&o));
        let summary = summarize(path, format, &records, offsets.as_deref());
        Ok(Replay {
            records,
            offsets,
            summary,
        })
    }

    /// Records in one pass.
    pub fn len(&self) -> u64 {
        self.records.len() as u64
    }

    /// The `i`-th record sent: the input's, cycled.
    pub fn record(&self, i: u64) -> UserRecord {
        self.records[(i % self.len()) as usize].clone()
    }

    /// When the `i`-th record is due after the start at the original pace: each pass takes the
    /// recorded span plus one mean gap, so a cycle does not send its first record with the last.
    pub fn due(&self, i: u64) -> Option<Duration> {
        let offsets = self.offsets.as_ref()?;
        let n = offsets.len() as u64;
        let span = offsets.last().copied().unwrap_or(0.0);
        let pass = span + span / (n.max(2) - 1) as f64;
        let at = (i / n) as f64 * pass + offsets[(i % n) as usize];
        Some(Duration::from_secs_f64(at.max(0.0)))
    }

    /// Whether the input recorded arrival times (what `--pace original` needs).
    pub fn has_timestamps(&self) -> bool {
        self.offsets.is_some()
    }

    /// An order-independent fingerprint of the first `sent` records' partition keys and data
    /// (the input cycled): what the stream must hold, read back, when all of them were put.
    pub fn fingerprint(&self, sent: u64) -> Fingerprint {
        let mut f = Fingerprint::default();
        for i in 0..sent {
            let r = &self.records[(i % self.len()) as usize];
            f.add(r.partition_key(), r.data());
        }
        f
    }
}

/// Counts and a wrapping sum of per-record hashes: equal for equal multisets of records.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
pub struct Fingerprint {
    pub records: u64,
    sum: u64,
}

impl Fingerprint {
    pub fn add(&mut self, partition_key: &str, data: &[u8]) {
        // SipHash with fixed keys: the same on both sides of the comparison.
        let mut h = std::hash::DefaultHasher::new();
        partition_key.hash(&mut h);
        data.hash(&mut h);
        self.records += 1;
        self.sum = self.sum.wrapping_add(h.finish());
    }
}

fn detect(line: &[u8], any_field: bool) -> InputFormat {
    if any_field {
        return InputFormat::Jsonl;
    }
    let read_line = serde_json::from_slice::<serde_json::Value>(line).is_ok_and(|v| {
        v.get("partition_key").is_some_and(|k| k.is_string())
            && (v.get("data").is_some() || v.get("data_base64").is_some())
    });
    if read_line {
        InputFormat::Read
    } else {
        InputFormat::Lines
    }
}

/// A line `kpl read` printed: the record as `kpl aggregate` reads it, and its arrival time.
#[derive(serde::Deserialize)]
struct ReadLine {
    #[serde(flatten)]
    record: InputRecord,
    arrival_timestamp: Option<f64>,
}

/// A line `kpl read` printed, as the record and its arrival time.
fn read_line(line: &[u8]) -> Result<(UserRecord, Option<f64>), String> {
    let read: ReadLine = serde_json::from_slice(line)
        .map_err(|e| format!("not a record as `kpl read` prints it: {e}"))?;
    Ok((read.record.into_user_record()?, read.arrival_timestamp))
}

fn running_max(offsets: &[f64]) -> Vec<f64> {
    let mut top = f64::MIN;
    offsets
        .iter()
        .map(|&o| {
            top = top.max(o);
            top
        })
        .collect()
}

fn summarize(
    path: &Path,
    format: InputFormat,
    records: &[UserRecord],
    offsets: Option<&[f64]>,
) -> InputSummary {
    let mut sizes: Vec<usize> = records.iter().map(|r| r.data().len()).collect();
    sizes.sort_unstable();
    let keys: std::collections::HashSet<&str> =
        records.iter().map(UserRecord::partition_key).collect();
    InputSummary {
        path: path.to_path_buf(),
        format,
        records: records.len() as u64,
        distinct_partition_keys: keys.len() as u64,
        with_explicit_hash_key: records
            .iter()
            .filter(|r| r.explicit_hash_key().is_some())
            .count() as u64,
        data_bytes_p50: sizes[sizes.len() / 2],
        data_bytes_max: sizes[sizes.len() - 1],
        recorded_seconds: offsets.and_then(|o| o.last().copied()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pk: Option<&str>) -> LineArgs {
        LineArgs {
            json: false,
            partition_key_field: pk.map(str::to_owned),
            explicit_hash_key_field: None,
            data_field: None,
        }
    }

    fn load(text: &str, format: InputFormat, pk: Option<&str>) -> Result<Replay, String> {
        let dir = std::env::temp_dir().join(format!("kpl-replay-{}", fastrand::u64(..)));
        std::fs::write(&dir, text).unwrap();
        let r = Replay::load(&dir, format, &fields(pk));
        std::fs::remove_file(&dir).unwrap();
        r
    }

    #[test]
    fn formats_are_detected_and_records_kept_as_they_are() {
        let r = load("a\nbb\n\nccc\n", InputFormat::Auto, None).unwrap();
        assert_eq!(r.summary.format, InputFormat::Lines);
        assert_eq!(r.len(), 3, "blank lines are not records");
        assert_eq!(&r.record(1).data()[..], b"bb");
        assert_eq!(&r.record(4).data()[..], b"bb", "cycled");
        assert_eq!(
            r.record(4).partition_key(),
            r.record(1).partition_key(),
            "a line's random key is drawn once, when the file is read"
        );
        assert!(!r.has_timestamps());

        let r = load(
            "{\"u\":\"k1\",\"v\":1}\n{\"u\":\"k2\"}\n",
            InputFormat::Auto,
            Some("u"),
        )
        .unwrap();
        assert_eq!(r.summary.format, InputFormat::Jsonl);
        assert_eq!(r.record(0).partition_key(), "k1");
        assert_eq!(&r.record(0).data()[..], b"{\"u\":\"k1\",\"v\":1}");

        let read = concat!(
            "{\"shard_id\":\"s\",\"partition_key\":\"p\",\"explicit_hash_key\":\"5\",\"data\":\"x\",\"arrival_timestamp\":100.5}\n",
            "{\"shard_id\":\"s\",\"partition_key\":\"q\",\"data_base64\":\"AAE=\",\"arrival_timestamp\":101.5}\n",
        );
        let r = load(read, InputFormat::Auto, None).unwrap();
        assert_eq!(r.summary.format, InputFormat::Read);
        assert_eq!(r.record(0).explicit_hash_key().map(|k| k.0), Some(5));
        assert_eq!(&r.record(1).data()[..], &[0, 1]);
        assert_eq!(r.summary.recorded_seconds, Some(1.0));
        assert_eq!(r.summary.with_explicit_hash_key, 1);
    }

    #[test]
    fn the_original_pace_repeats_the_recorded_gaps_pass_after_pass() {
        let read = (0..3)
            .map(|i| {
                format!(
                    "{{\"partition_key\":\"p\",\"data\":\"{i}\",\"arrival_timestamp\":{}}}\n",
                    10 + 2 * i
                )
            })
            .collect::<String>();
        let r = load(&read, InputFormat::Read, None).unwrap();
        let due: Vec<f64> = (0..6).map(|i| r.due(i).unwrap().as_secs_f64()).collect();
        // Gaps of 2 s; a pass takes its 4 s span plus one mean gap (2 s).
        assert_eq!(due, vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        // Out of order (shards read one after another): no record waits for an earlier time.
        let read = [10, 14, 12, 16]
            .map(|t| {
                format!("{{\"partition_key\":\"p\",\"data\":\"x\",\"arrival_timestamp\":{t}}}\n")
            })
            .concat();
        let r = load(&read, InputFormat::Read, None).unwrap();
        let due: Vec<f64> = (0..4).map(|i| r.due(i).unwrap().as_secs_f64()).collect();
        assert_eq!(due, vec![0.0, 4.0, 4.0, 6.0]);
    }

    #[test]
    fn a_bad_line_is_named_with_its_number_and_why() {
        let err = load("{\"u\":\"k\"}\n{\"v\":1}\n", InputFormat::Jsonl, Some("u"))
            .err()
            .unwrap();
        assert!(err.ends_with("line 2: no field \"u\""), "{err}");
        let err = load("\n\n", InputFormat::Auto, None).err().unwrap();
        assert!(err.ends_with(": no records in it"), "{err}");
        let err = "fast".parse::<Pace>().unwrap_err();
        assert!(err.contains("use original, as-fast or a number"), "{err}");
    }

    #[test]
    fn fingerprints_ignore_order_and_see_any_difference() {
        let mut a = Fingerprint::default();
        a.add("k1", b"x");
        a.add("k2", b"y");
        let mut b = Fingerprint::default();
        b.add("k2", b"y");
        b.add("k1", b"x");
        assert_eq!(a, b);
        let mut c = Fingerprint::default();
        c.add("k1", b"y");
        c.add("k2", b"x");
        assert_ne!(a, c);
    }
}
