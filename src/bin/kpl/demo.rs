//! `kpl demo`: the codec end to end on a synthetic workload, checked, with what it saves.
//!
//! Until the producer engine lands this is the codec's self-check: it aggregates, deaggregates,
//! verifies every record and reports the packing.

use std::process::ExitCode;
use std::time::Instant;

use kinesis_producer::aggregation::{
    AggregationLimits, Aggregator, deaggregate_strict, put_payload_units,
};
use kinesis_producer::{HashKey, UserRecord};

pub const EXAMPLES: &str = "\
Examples:
  kpl demo
  kpl demo --records 100000 --data-size 500 --keys 10 --max-size 1048576";

#[derive(clap::Args)]
pub struct Args {
    /// User records to generate.
    #[arg(long, default_value_t = 100_000)]
    records: usize,
    /// Bytes of data per record.
    #[arg(long, default_value_t = 100)]
    data_size: usize,
    /// Distinct partition keys (16 characters each).
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// AggregationMaxSize in bytes.
    #[arg(long, default_value_t = kinesis_producer::aggregation::DEFAULT_AGGREGATION_MAX_SIZE)]
    max_size: usize,
}

/// A cheap deterministic generator: the demo must give the same figures on every run.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

pub fn run(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let limits = AggregationLimits::new(
        args.max_size,
        kinesis_producer::aggregation::DEFAULT_AGGREGATION_MAX_COUNT,
    )
    .map_err(crate::flag_error)?;
    let keys = args.keys.max(1);
    let mut rng = SplitMix(42);
    let records: Vec<UserRecord> = (0..args.records)
        .map(|i| {
            let data: Vec<u8> = (0..args.data_size).map(|_| rng.next() as u8).collect();
            let r = UserRecord::new(format!("partition-{:06}", rng.next() as usize % keys), data)?;
            Ok(if i % 10 == 0 {
                r.with_explicit_hash_key(HashKey(rng.next() as u128))
            } else {
                r
            })
        })
        .collect::<Result<_, kinesis_producer::RecordError>>()?;

    println!("kpl demo: the KPL aggregation codec end to end (the producer engine comes next)");
    println!(
        "  workload: {} user records of {} bytes, {} distinct 16-character partition keys, every 10th with an explicit hash key",
        records.len(),
        args.data_size,
        keys
    );

    let start = Instant::now();
    let mut agg = Aggregator::new(limits);
    let mut sent = Vec::new();
    for r in records.iter().cloned() {
        sent.extend(
            agg.push(r, (), start)
                .map_err(|r| r.error)?
                .map(|a| a.record),
        );
    }
    sent.extend(agg.flush().map(|a| a.record));
    let encode_time = start.elapsed();

    let start = Instant::now();
    let mut back = Vec::with_capacity(records.len());
    for k in &sent {
        back.extend(deaggregate_strict(&k.partition_key, k.data.clone())?);
    }
    let decode_time = start.elapsed();

    let mismatches = back.len().abs_diff(records.len())
        + back
            .iter()
            .zip(&records)
            .filter(|(b, r)| {
                b.partition_key != r.partition_key()
                    || b.data != r.data()
                    // Kinesis keeps no explicit hash key for a plain record: compare in aggregates.
                    || (b.aggregated && b.explicit_hash_key != r.explicit_hash_key().map(|k| k.to_string()))
            })
            .count();

    let user_bytes: usize = records.iter().map(UserRecord::size).sum();
    let sent_bytes: usize = sent.iter().map(|k| k.size()).sum();
    let plain_units: u64 = records.iter().map(|r| put_payload_units(r.size())).sum();
    let sent_units: u64 = sent.iter().map(|k| put_payload_units(k.size())).sum();
    let largest = sent.iter().map(|k| k.size()).max().unwrap_or(0);
    let per = records.len() as f64 / sent.len().max(1) as f64;
    println!(
        "  aggregated: {} Kinesis records ({per:.1} user records each), largest {largest} of {} bytes allowed",
        sent.len(),
        limits.max_size()
    );
    println!(
        "  bytes: {user_bytes} of user data and keys -> {sent_bytes} sent ({:+.1}% framing)",
        (sent_bytes as f64 / user_bytes.max(1) as f64 - 1.0) * 100.0
    );
    println!(
        "  PUT payload units: {plain_units} unaggregated -> {sent_units} aggregated ({:.1}% fewer); PutRecords entries: {} -> {}",
        (1.0 - sent_units as f64 / plain_units.max(1) as f64) * 100.0,
        records.len(),
        sent.len()
    );
    println!(
        "  speed (this build): encode {:.2} M user records/s, decode {:.2} M user records/s",
        records.len() as f64 / encode_time.as_secs_f64() / 1e6,
        records.len() as f64 / decode_time.as_secs_f64() / 1e6
    );
    if mismatches == 0 {
        println!(
            "  round trip: all {} user records read back exactly (keys, explicit hash keys, data, order)",
            records.len()
        );
        println!("self-check passed");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("  round trip: {mismatches} records differ");
        println!("self-check FAILED");
        Ok(ExitCode::FAILURE)
    }
}
