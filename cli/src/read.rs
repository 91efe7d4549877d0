//! `kpl read`: read a stream, shard by shard in lineage order, and print its user records.

use std::collections::HashSet;
use std::io::{BufWriter, Write};
use std::process::ExitCode;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::{Shard, ShardIteratorType};
use bytes::Bytes;
use kinesis_producer::aggregation::deaggregate;
use kinesis_producer::sink::SinkError;
use kinesis_producer::sink::aws::{AwsSink, is_stream_arn};

use crate::conn::ConnArgs;
use crate::io::b64;
use crate::retry::{FIRST_CONTACT_ATTEMPTS, MAX_ATTEMPTS, retrying};

pub const EXAMPLES: &str = "\
Examples:
  kpl read --stream events                         # everything, from TRIM_HORIZON
  kpl read --stream events --count
  kpl read --stream events --from at-timestamp=2026-11-21T10:00:00Z
  kpl read --stream events --shard-id shardId-000000000001 --from at-sequence-number=4968...
  kpl read --stream events --endpoint-url http://127.0.0.1:4567 --base64
  kpl read --stream events --limit 100000 > sample.jsonl   # a sample for kpl bench --input
Prints one JSON line per user record: shard_id, sequence_number, sub_sequence_number,
partition_key, explicit_hash_key (only in aggregates, where one was set), aggregated,
arrival_timestamp (the Kinesis record's approximate arrival, epoch seconds), and data (UTF-8) or
data_base64. Shards are read parents first, each to its end (an open shard: until
caught up), so records of one partition key come out in order across resharding.";

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    conn: ConnArgs,
    /// Read only this shard.
    #[arg(long, value_name = "ID")]
    shard_id: Option<String>,
    /// Where to start: trim-horizon, latest, at-timestamp=<RFC 3339 or epoch seconds>,
    /// at-sequence-number=<sequence number> (with --shard-id).
    #[arg(long, default_value = "trim-horizon", value_name = "POSITION")]
    from: String,
    /// Print counts only.
    #[arg(long)]
    count: bool,
    /// Print data as base64 always (by default, as text when it is valid UTF-8).
    #[arg(long)]
    base64: bool,
    /// Stop after this many user records (counted with --count too).
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
}

enum From {
    TrimHorizon,
    Latest,
    AtTimestamp(DateTime),
    AtSequence(String),
}

fn parse_from(text: &str) -> Result<From, String> {
    match text.split_once('=') {
        None if text == "trim-horizon" => Ok(From::TrimHorizon),
        None if text == "latest" => Ok(From::Latest),
        Some(("at-timestamp", t)) => t
            .parse::<f64>()
            .map(DateTime::from_secs_f64)
            .or_else(|_| {
                DateTime::from_str(t, aws_sdk_kinesis::primitives::DateTimeFormat::DateTime)
            })
            .map(From::AtTimestamp)
            .map_err(|_| format!("--from at-timestamp={t}: not an RFC 3339 time or epoch seconds")),
        Some(("at-sequence-number", s)) => Ok(From::AtSequence(s.to_owned())),
        _ => Err(format!(
            "--from {text:?}: use trim-horizon, latest, at-timestamp=<time> or at-sequence-number=<number>"
        )),
    }
}

/// Shards in an order where every parent comes before its children.
fn lineage_order(mut shards: Vec<Shard>) -> Vec<Shard> {
    let ids: HashSet<String> = shards.iter().map(|s| s.shard_id.clone()).collect();
    let mut done: HashSet<String> = HashSet::new();
    let mut ordered = Vec::with_capacity(shards.len());
    while !shards.is_empty() {
        let ready = |s: &Shard| {
            [
                s.parent_shard_id.as_deref(),
                s.adjacent_parent_shard_id.as_deref(),
            ]
            .into_iter()
            .flatten()
            .all(|p| done.contains(p) || !ids.contains(p))
        };
        let (now, later): (Vec<Shard>, Vec<Shard>) = shards.into_iter().partition(|s| ready(s));
        if now.is_empty() {
            // A cycle cannot happen in Kinesis; read the rest as listed rather than loop.
            ordered.extend(later);
            break;
        }
        done.extend(now.iter().map(|s| s.shard_id.clone()));
        ordered.extend(now);
        shards = later;
    }
    ordered
}

/// The error code of an iterator older than 5 minutes.
const EXPIRED: &str = "ExpiredIteratorException";

/// An iterator for `shard` of `stream`: at `from`, or right after sequence number `after` (an
/// expired iterator renewed); throttling and transient failures retried.
async fn shard_iterator(
    sink: &AwsSink,
    stream: &str,
    shard: &str,
    from: &From,
    after: Option<&str>,
    rng: &mut fastrand::Rng,
) -> Result<Option<String>, SinkError> {
    let mut request = sink.client().get_shard_iterator().shard_id(shard);
    request = if is_stream_arn(stream) {
        request.stream_arn(stream)
    } else {
        request.stream_name(stream)
    };
    request = match (after, from) {
        (Some(seq), _) => request
            .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
            .starting_sequence_number(seq),
        (None, From::TrimHorizon) => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        (None, From::Latest) => request.shard_iterator_type(ShardIteratorType::Latest),
        (None, From::AtTimestamp(t)) => request
            .shard_iterator_type(ShardIteratorType::AtTimestamp)
            .timestamp(*t),
        (None, From::AtSequence(s)) => request
            .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
            .starting_sequence_number(s),
    };
    let out = retrying(sink, "GetShardIterator", &[], MAX_ATTEMPTS, rng, || {
        request.clone().send()
    })
    .await?;
    Ok(out.shard_iterator)
}

pub fn run(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let from = parse_from(&args.from)?;
    if matches!(from, From::AtSequence(_)) && args.shard_id.is_none() {
        return Err(
            "--from at-sequence-number needs --shard-id (sequence numbers belong to a shard)"
                .into(),
        );
    }
    let config = args.conn.config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(read(args, from, config))
}

async fn read(
    args: Args,
    from: From,
    config: kinesis_producer::Config,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let sink = AwsSink::new(&config).await;
    let client: Client = sink.client().clone();
    let stream = &args.conn.stream;
    let mut rng = fastrand::Rng::new();
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    // Bounded: a stream has at most a few thousand shards in its listing.
    for _ in 0..1000 {
        let request = match &token {
            None if is_stream_arn(stream) => client.list_shards().stream_arn(stream),
            None => client.list_shards().stream_name(stream),
            Some(t) => client.list_shards().next_token(t),
        };
        let request = request.max_results(1000);
        let attempts = if token.is_none() {
            FIRST_CONTACT_ATTEMPTS
        } else {
            MAX_ATTEMPTS
        };
        let out = retrying(&sink, "ListShards", &[], attempts, &mut rng, || {
            request.clone().send()
        })
        .await?;
        let before = shards.len();
        for s in out.shards.unwrap_or_default() {
            if !shards.iter().any(|k: &Shard| k.shard_id == s.shard_id) {
                shards.push(s);
            }
        }
        token = out.next_token;
        if token.is_none() || shards.len() == before {
            break;
        }
    }
    if let Some(id) = &args.shard_id {
        shards.retain(|s| &s.shard_id == id);
        if shards.is_empty() {
            return Err(format!("stream {stream} has no shard {id}").into());
        }
    }
    let mut out = BufWriter::new(std::io::stdout().lock());
    let (mut kinesis_records, mut user_records) = (0u64, 0u64);
    let order = lineage_order(shards);
    let mut progress = crate::progress::Progress::new("read", None);
    let shard_count = order.len();
    let limit = args.limit.unwrap_or(u64::MAX);
    'shards: for (n, shard) in order.into_iter().enumerate() {
        if user_records >= limit {
            break;
        }
        let closed = shard
            .sequence_number_range
            .as_ref()
            .is_some_and(|r| r.ending_sequence_number.is_some());
        if matches!(from, From::Latest) && closed {
            continue; // nothing new will ever arrive on a closed shard
        }
        let mut iterator =
            shard_iterator(&sink, stream, &shard.shard_id, &from, None, &mut rng).await?;
        // The last Kinesis record read from this shard: an expired iterator is renewed after it.
        let mut last: Option<String> = None;
        // Bounded: pages of up to 10,000 records; a shard holds at most a day or a week of them.
        for _ in 0..1_000_000 {
            let Some(it) = iterator.take() else { break };
            let request = client.get_records().shard_iterator(it).limit(10_000);
            let page = match retrying(
                &sink,
                "GetRecords",
                &[EXPIRED],
                MAX_ATTEMPTS,
                &mut rng,
                || request.clone().send(),
            )
            .await
            {
                Ok(page) => page,
                // An iterator lives 5 minutes (a slow writer of our output, a long backoff):
                // a new one starts right after the last record read, as the KCL renews it,
                // so nothing is printed twice or skipped.
                Err(e) if e.code == EXPIRED => {
                    tracing::debug!(shard = %shard.shard_id, "shard iterator expired; renewing it");
                    iterator = shard_iterator(
                        &sink,
                        stream,
                        &shard.shard_id,
                        &from,
                        last.as_deref(),
                        &mut rng,
                    )
                    .await?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let empty = page.records.is_empty();
            progress.update(user_records, || {
                format!(
                    "shard {} of {shard_count}: {kinesis_records} Kinesis records, {user_records} user records",
                    n + 1
                )
            });
            for r in page.records {
                kinesis_records += 1;
                last = Some(r.sequence_number.clone());
                let arrival = r.approximate_arrival_timestamp.map(|t| t.as_secs_f64());
                for u in deaggregate(&r.partition_key, Bytes::from(r.data.into_inner())) {
                    if user_records >= limit {
                        break 'shards;
                    }
                    user_records += 1;
                    if args.count {
                        continue;
                    }
                    let mut line = serde_json::json!({
                        "shard_id": shard.shard_id,
                        "sequence_number": r.sequence_number,
                        "sub_sequence_number": u.sub_sequence_number,
                        "partition_key": u.partition_key,
                        "aggregated": u.aggregated,
                    });
                    if let Some(k) = &u.explicit_hash_key {
                        line["explicit_hash_key"] = k.clone().into();
                    }
                    if let Some(t) = arrival {
                        line["arrival_timestamp"] = t.into();
                    }
                    match std::str::from_utf8(&u.data) {
                        Ok(text) if !args.base64 => line["data"] = text.into(),
                        _ => line["data_base64"] = b64(&u.data).into(),
                    }
                    serde_json::to_writer(&mut out, &line)?;
                    out.write_all(b"\n")?;
                }
            }
            let caught_up = page.millis_behind_latest.unwrap_or(0) == 0;
            iterator = page.next_shard_iterator;
            if empty && (caught_up || iterator.is_none()) {
                break;
            }
        }
    }
    out.flush()?;
    progress.finish();
    if args.count {
        println!("{kinesis_records} Kinesis records, {user_records} user records");
    }
    eprintln!(
        "kpl read: {kinesis_records} Kinesis records, {user_records} user records from stream {stream}"
    );
    Ok(ExitCode::SUCCESS)
}
