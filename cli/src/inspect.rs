//! `kpl inspect`: decode Kinesis records and show what they carry.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use bytes::Bytes;
use kinesis_producer::aggregation::{Decoded, deaggregate, decode};
use serde::Serialize;

use crate::io::{KinesisRecordLine, b64, for_each_line, read_file, unb64};

pub const EXAMPLES: &str = "\
Each record is given as base64 (arguments, or stdin lines), as a JSON object with \"data_base64\"
(and \"partition_key\", \"explicit_hash_key\") such as `kpl aggregate` prints, or as a raw file
(--file).

Examples:
  kpl inspect 84mawgoBYQoBYhoFCAAaATEaBQgBGgEy4rjq5BZjjDSapTk35EpY+g==
  kpl aggregate < records.jsonl | kpl inspect
  kpl aggregate < records.jsonl | kpl inspect --json     # gives back the records fed in
  kpl inspect --file record.bin --strict
With --json, one line per user record: {record, sub_sequence_number, aggregated, md5_ok,
partition_key, explicit_hash_key (only where set), data_base64, ...}; these lines are valid
`kpl aggregate` input. Exit status 1 if any input could not be read, or with --strict if any
record has the magic but is not a valid aggregate.";

#[derive(clap::Args)]
pub struct Args {
    /// Kinesis records' data, base64; stdin lines are read when there are none and no --file.
    records: Vec<String>,
    /// A file holding one Kinesis record's raw bytes (repeatable).
    #[arg(long = "file", value_name = "PATH")]
    files: Vec<PathBuf>,
    /// Print JSON Lines, one per user record.
    #[arg(long)]
    json: bool,
    /// Treat a record that has the aggregation magic but is not a valid aggregate as an error,
    /// instead of reading it as one plain record the way the KCL does.
    #[arg(long)]
    strict: bool,
    /// The partition key to report for records given without one (base64 or --file).
    #[arg(long, value_name = "KEY")]
    partition_key: Option<String>,
}

/// One Kinesis record to inspect.
struct Input {
    source: String,
    partition_key: Option<String>,
    explicit_hash_key: Option<String>,
    data: Bytes,
}

#[derive(Serialize)]
struct UserRecordLine<'a> {
    record: usize,
    sub_sequence_number: u64,
    aggregated: bool,
    /// Whether the aggregate's MD5 checks; absent for a record without the magic.
    #[serde(skip_serializing_if = "Option::is_none")]
    md5_ok: Option<bool>,
    partition_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    explicit_hash_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    partition_key_index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    explicit_hash_key_index: Option<u64>,
    data_base64: String,
    /// Why a record with the magic was read as plain.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub fn run(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut inputs = Vec::new();
    let mut failed = 0usize;
    for (i, text) in args.records.iter().enumerate() {
        match unb64(text) {
            Ok(data) => inputs.push(Input {
                source: format!("argument {}", i + 1),
                partition_key: args.partition_key.clone(),
                explicit_hash_key: None,
                data: data.into(),
            }),
            Err(e) => {
                failed += 1;
                eprintln!("kpl inspect: argument {}: {e}", i + 1);
            }
        }
    }
    for path in &args.files {
        inputs.push(Input {
            source: path.display().to_string(),
            partition_key: args.partition_key.clone(),
            explicit_hash_key: None,
            data: read_file(path)?.into(),
        });
    }
    let mut out = BufWriter::new(io::stdout().lock());
    let mut index = 0;
    if args.records.is_empty() && args.files.is_empty() {
        // Stream stdin: show each record as it arrives rather than holding all input.
        for_each_line(&[], |source, number, line| {
            let input = match parse_line(line, &args) {
                Ok(input) => Input {
                    source: format!("{source} line {number}"),
                    ..input
                },
                Err(e) => {
                    failed += 1;
                    eprintln!("kpl inspect: {source} line {number}: {e}");
                    return Ok(());
                }
            };
            if !show(index, &input, &args, &mut out)? {
                failed += 1;
            }
            index += 1;
            Ok(())
        })?;
    } else {
        for input in inputs {
            if !show(index, &input, &args, &mut out)? {
                failed += 1;
            }
            index += 1;
        }
    }
    out.flush()?;
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn parse_line(line: &[u8], args: &Args) -> Result<Input, String> {
    let trimmed = line.trim_ascii();
    if trimmed.starts_with(b"{") {
        let rec: KinesisRecordLine = serde_json::from_slice(trimmed)
            .map_err(|e| format!("not a JSON Kinesis record: {e}"))?;
        Ok(Input {
            source: String::new(),
            partition_key: rec.partition_key.or_else(|| args.partition_key.clone()),
            explicit_hash_key: rec.explicit_hash_key,
            data: unb64(&rec.data_base64)
                .map_err(|e| format!("data_base64 is {e}"))?
                .into(),
        })
    } else {
        let text =
            std::str::from_utf8(trimmed).map_err(|_| "not base64 (not even UTF-8)".to_string())?;
        Ok(Input {
            source: String::new(),
            partition_key: args.partition_key.clone(),
            explicit_hash_key: None,
            data: unb64(text)?.into(),
        })
    }
}

/// Shows one Kinesis record; false if it counts as a failure (only with --strict).
fn show(index: usize, input: &Input, args: &Args, out: &mut dyn Write) -> io::Result<bool> {
    let decoded = decode(&input.data);
    if let (true, Err(e)) = (args.strict, &decoded) {
        eprintln!("kpl inspect: {} (record {index}): {e}", input.source);
        return Ok(false);
    }
    let pk = input.partition_key.as_deref();
    match &decoded {
        Ok(Decoded::Aggregated(agg)) => {
            if args.json {
                for (i, r) in agg.records.iter().enumerate() {
                    let line = UserRecordLine {
                        record: index,
                        sub_sequence_number: i as u64,
                        aggregated: true,
                        md5_ok: Some(true),
                        partition_key: Some(
                            agg.partition_key_table[r.partition_key_index as usize].as_str(),
                        ),
                        explicit_hash_key: r
                            .explicit_hash_key_index
                            .map(|k| agg.explicit_hash_key_table[k as usize].as_str()),
                        partition_key_index: Some(r.partition_key_index),
                        explicit_hash_key_index: r.explicit_hash_key_index,
                        data_base64: b64(&r.data),
                        error: None,
                    };
                    json_line(out, &line)?;
                }
            } else {
                writeln!(
                    out,
                    "record {index}: aggregated, {} user records, {} bytes, MD5 ok",
                    agg.records.len(),
                    input.data.len()
                )?;
                writeln!(
                    out,
                    "  partition key table ({}): {}",
                    agg.partition_key_table.len(),
                    list(&agg.partition_key_table)
                )?;
                writeln!(
                    out,
                    "  explicit hash key table ({}): {}",
                    agg.explicit_hash_key_table.len(),
                    list(&agg.explicit_hash_key_table)
                )?;
                for (i, r) in agg.records.iter().enumerate() {
                    let data = &r.data[..];
                    let pk_index = r.partition_key_index;
                    write!(
                        out,
                        "  user record {i}: partition key [{pk_index}] {:?}",
                        agg.partition_key_table[pk_index as usize]
                    )?;
                    if let Some(e) = r.explicit_hash_key_index {
                        write!(
                            out,
                            ", explicit hash key [{e}] {}",
                            agg.explicit_hash_key_table[e as usize]
                        )?;
                    }
                    writeln!(out, ", {} bytes: {}", data.len(), preview(data))?;
                }
            }
        }
        Ok(Decoded::Plain) | Err(_) => {
            let error = decoded.as_ref().err().map(|e| e.to_string());
            // A record with the magic and a digest that checks, but a bad body, still has MD5 ok.
            let md5_ok = error.as_ref().map(|_| {
                !matches!(
                    decoded,
                    Err(kinesis_producer::DeaggregationError::DigestMismatch { .. })
                        | Err(kinesis_producer::DeaggregationError::Truncated { .. })
                )
            });
            // deaggregate is what a KCL consumer gets: one plain record.
            let users = deaggregate(pk.unwrap_or_default(), input.data.clone());
            debug_assert_eq!(users.len(), 1);
            if args.json {
                let line = UserRecordLine {
                    record: index,
                    sub_sequence_number: 0,
                    aggregated: false,
                    md5_ok,
                    partition_key: pk,
                    explicit_hash_key: input.explicit_hash_key.as_deref(),
                    partition_key_index: None,
                    explicit_hash_key_index: None,
                    data_base64: b64(&input.data),
                    error,
                };
                json_line(out, &line)?;
            } else {
                match &error {
                    None => writeln!(
                        out,
                        "record {index}: not aggregated (no magic), 1 user record, {} bytes",
                        input.data.len()
                    )?,
                    Some(e) => writeln!(
                        out,
                        "record {index}: has the aggregation magic but is not a valid aggregate ({e}); read as 1 plain user record, as the KCL does"
                    )?,
                }
                write!(
                    out,
                    "  user record 0: partition key {}",
                    pk.map_or("(not given)".to_string(), |k| format!("{k:?}"))
                )?;
                if let Some(e) = &input.explicit_hash_key {
                    write!(out, ", explicit hash key {e}")?;
                }
                writeln!(
                    out,
                    ", {} bytes: {}",
                    input.data.len(),
                    preview(&input.data)
                )?;
            }
        }
    }
    Ok(true)
}

fn json_line(out: &mut dyn Write, line: &UserRecordLine<'_>) -> io::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    out.write_all(b"\n")
}

fn list(keys: &[String]) -> String {
    const SHOWN: usize = 20;
    let mut s = keys
        .iter()
        .take(SHOWN)
        .map(|k| format!("{k:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > SHOWN {
        s.push_str(&format!(", … ({} more)", keys.len() - SHOWN));
    }
    s
}

/// Data as text when it is printable UTF-8, else hex; cut at 64 characters or 32 bytes.
fn preview(data: &[u8]) -> String {
    match std::str::from_utf8(data) {
        Ok(text)
            if !text
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t') =>
        {
            let head: String = text.chars().take(64).collect();
            if head.len() < text.len() {
                format!("{head:?}…")
            } else {
                format!("{head:?}")
            }
        }
        _ => {
            let hex: String = data.iter().take(32).map(|b| format!("{b:02x}")).collect();
            if data.len() > 32 {
                format!("hex {hex}…")
            } else {
                format!("hex {hex}")
            }
        }
    }
}
