//! Send records through the producer to a local Kinesis and see where each landed.
//!
//! Run: `cargo run --example producer` (starts an embedded Kinesis on 127.0.0.1). To use your
//! own endpoint or AWS, build the `Config` with `.endpoint(...)`/`.region(...)` instead; with
//! neither, the standard AWS region and credential chains apply.

use std::time::Duration;

use kinesis_producer::local::{LocalKinesis, LocalOptions};
use kinesis_producer::{Config, Producer, PutErrorKind, UserRecord};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let kinesis = LocalKinesis::start(LocalOptions::default()).await?;
    kinesis.create_stream("orders", 2).await?;

    // KPL property names and defaults; here pointed at the local endpoint.
    let config: Config = kinesis
        .config()
        .record_max_buffered_time(Duration::from_millis(50))
        .build()?;
    let producer = Producer::new(config).await;

    // send() never blocks: buffer, aggregate per shard, send within RecordMaxBufferedTime.
    let futures: Vec<_> = (0..1_000)
        .map(|i| {
            let record =
                UserRecord::new(format!("customer-{}", i % 20), format!("order {i}")).unwrap();
            producer.send("orders", record)
        })
        .collect();

    for (i, f) in futures.into_iter().enumerate() {
        match f.await {
            Ok(receipt) if i % 250 == 0 => println!(
                "order {i}: shard {}, sequence number {}, sub-sequence {}, {} attempt(s)",
                receipt.shard_id,
                receipt.sequence_number,
                receipt.sub_sequence_number,
                receipt.attempts.len()
            ),
            Ok(_) => {}
            // A failed record comes back with the reason and every attempt.
            Err(e) => eprintln!(
                "not put: {e} (record handed back: {:?})",
                e.record.partition_key()
            ),
        }
    }

    // Bad input is refused with a typed error, and the producer keeps working.
    let too_big = UserRecord::new("k", vec![0u8; 2 << 20])?;
    let err = producer.send("orders", too_big).await.unwrap_err();
    assert!(matches!(err.kind, PutErrorKind::InvalidRecord(_)));
    println!("refused: {}", err.kind);

    // Send everything still buffered, wait for every future, stop.
    producer.shutdown().await;
    Ok(())
}
