//! `kpl aggregate`: JSON Lines user records in, JSON Lines Kinesis records out.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use kinesis_producer::aggregation::{
    AggregationLimits, Aggregator, DEFAULT_AGGREGATION_MAX_COUNT, DEFAULT_AGGREGATION_MAX_SIZE,
    KinesisRecord, MAX_RECORD_SIZE, put_payload_units,
};

use crate::io::{InputRecord, KinesisRecordLine, b64, for_each_line};

pub const EXAMPLES: &str = "\
Input, one JSON object a line:
  {\"partition_key\": \"user-1\", \"data\": \"hello\"}
  {\"partition_key\": \"user-2\", \"explicit_hash_key\": \"42\", \"data_base64\": \"AAEC\"}
Output, one JSON object a Kinesis record:
  {\"partition_key\":\"a\",\"explicit_hash_key\":\"...\",\"data_base64\":\"84mawg...\",\"user_records\":2}

Examples:
  kpl aggregate < records.jsonl > kinesis-records.jsonl
  kpl aggregate --max-size 1048576 records.jsonl | kpl inspect --json
A line that is not a valid record is reported on stderr with its line number and skipped; the
exit status is then 1. A summary goes to stderr.";

#[derive(clap::Args)]
pub struct Args {
    /// Files of JSON Lines user records; stdin when none.
    files: Vec<PathBuf>,
    /// AggregationMaxSize: the largest aggregate in bytes, data plus partition key (64..=1048576,
    /// or up to --max-record-size).
    #[arg(long, default_value_t = DEFAULT_AGGREGATION_MAX_SIZE, value_name = "BYTES")]
    max_size: usize,
    /// AggregationMaxCount: the most user records in one aggregate (1..=4294967295; 1 turns
    /// aggregation off).
    #[arg(long, default_value_t = DEFAULT_AGGREGATION_MAX_COUNT, value_name = "N")]
    max_count: usize,
    /// The stream's per-record limit in bytes, for streams whose MaxRecordSizeInKiB is raised
    /// (1048576..=10485760).
    #[arg(long, default_value_t = MAX_RECORD_SIZE, value_name = "BYTES")]
    max_record_size: usize,
}

#[derive(Default)]
struct Totals {
    user_records: u64,
    rejected: u64,
    kinesis_records: u64,
    bytes: u64,
    payload_units: u64,
    unaggregated_payload_units: u64,
}

fn emit(out: &mut impl Write, totals: &mut Totals, record: KinesisRecord) -> io::Result<()> {
    totals.kinesis_records += 1;
    totals.bytes += record.size() as u64;
    totals.payload_units += put_payload_units(record.size());
    let line = KinesisRecordLine {
        partition_key: Some(record.partition_key),
        explicit_hash_key: record.explicit_hash_key.map(|k| k.to_string()),
        data_base64: b64(&record.data),
        user_records: Some(record.user_records),
    };
    serde_json::to_writer(&mut *out, &line)?;
    out.write_all(b"\n")
}

pub fn run(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let limits = AggregationLimits::with_max_record_size(
        args.max_size,
        args.max_count,
        args.max_record_size,
    )
    .map_err(crate::flag_error)?;
    let mut agg = Aggregator::new(limits);
    let mut out = BufWriter::new(io::stdout().lock());
    let mut totals = Totals::default();
    // No deadlines on the command line: everything is flushed by size, count or end of input.
    let now = Instant::now();
    for_each_line(&args.files, |source, number, line| {
        let record = serde_json::from_slice::<InputRecord>(line)
            .map_err(|e| format!("not a JSON user record: {e}"))
            .and_then(InputRecord::into_user_record);
        let record = match record {
            Ok(r) => r,
            Err(reason) => {
                totals.rejected += 1;
                eprintln!("kpl aggregate: {source} line {number}: {reason}; skipped");
                return Ok(());
            }
        };
        let size = record.size();
        match agg.push(record, now) {
            Ok(full) => {
                totals.user_records += 1;
                totals.unaggregated_payload_units += put_payload_units(size);
                if let Some(full) = full {
                    emit(&mut out, &mut totals, full.record)?;
                }
            }
            Err(rejected) => {
                totals.rejected += 1;
                eprintln!(
                    "kpl aggregate: {source} line {number}: {}; skipped",
                    rejected.error
                );
            }
        }
        Ok(())
    })?;
    if let Some(rest) = agg.flush() {
        emit(&mut out, &mut totals, rest.record)?;
    }
    out.flush()?;
    let per = if totals.kinesis_records == 0 {
        0.0
    } else {
        totals.user_records as f64 / totals.kinesis_records as f64
    };
    eprintln!(
        "kpl aggregate: {} user records into {} Kinesis records ({per:.1} each), {} bytes, {} PUT payload units (unaggregated: {}){}",
        totals.user_records,
        totals.kinesis_records,
        totals.bytes,
        totals.payload_units,
        totals.unaggregated_payload_units,
        if totals.rejected > 0 {
            format!("; {} lines rejected", totals.rejected)
        } else {
            String::new()
        },
    );
    Ok(if totals.rejected > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
