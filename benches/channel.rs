//! The path from senders into the engine, alone: tokio's unbounded mpsc channel (what the
//! producer uses) against crossbeam-channel's unbounded channel (what the design card names for
//! the synchronous `send`), carrying 200,000 messages the size of the engine's `Msg::Record`
//! from one plain thread to a task on a two-worker tokio runtime that takes them in batches of
//! up to 1,024, as the engine does.
//!
//! A crossbeam receiver cannot wake an async task by itself: the task says it is about to sleep
//! (a flag), looks once more, and waits on a `tokio::sync::Notify`; a sender that finds the flag
//! set clears it and notifies. That is the least an engine on crossbeam would need, and it is
//! counted here.
//!
//! Run: `cargo bench --bench channel`; figures go in docs/architecture.md.
#![allow(clippy::disallowed_methods)] // a benchmark times what it runs

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const MESSAGES: usize = 200_000;
const RECV_BATCH: usize = 1_024;

/// As large as the engine's `Msg::Record` (a stream id and a pending entry).
#[derive(Clone, Copy)]
#[allow(dead_code)] // carried, not read
struct Message([u64; 12]);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn tokio_mpsc(rt: &tokio::runtime::Runtime) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Message>();
    let consumer = rt.spawn(async move {
        let mut buf = Vec::with_capacity(RECV_BATCH);
        let mut got = 0;
        while got < MESSAGES {
            got += rx.recv_many(&mut buf, RECV_BATCH).await;
            black_box(&buf);
            buf.clear();
        }
    });
    for i in 0..MESSAGES {
        tx.send(Message([i as u64; 12])).unwrap();
    }
    rt.block_on(consumer).unwrap();
}

/// Crossbeam's channel, with the flag and `Notify` an async receiver needs.
struct Waking {
    parked: AtomicBool,
    notify: tokio::sync::Notify,
}

fn crossbeam(rt: &tokio::runtime::Runtime) {
    let (tx, rx) = crossbeam_channel::unbounded::<Message>();
    let waking = Arc::new(Waking {
        parked: AtomicBool::new(false),
        notify: tokio::sync::Notify::new(),
    });
    let consumer = {
        let waking = Arc::clone(&waking);
        rt.spawn(async move {
            let mut buf = Vec::with_capacity(RECV_BATCH);
            let mut got = 0;
            while got < MESSAGES {
                buf.extend(rx.try_iter().take(RECV_BATCH));
                if buf.is_empty() {
                    let notified = waking.notify.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    waking.parked.store(true, Ordering::Relaxed);
                    std::sync::atomic::fence(Ordering::SeqCst);
                    // Looked at again after saying so: a send in between notifies.
                    if rx.is_empty() {
                        notified.await;
                    }
                    waking.parked.store(false, Ordering::SeqCst);
                    continue;
                }
                got += buf.len();
                black_box(&buf);
                buf.clear();
            }
        })
    };
    for i in 0..MESSAGES {
        tx.send(Message([i as u64; 12])).unwrap();
        // Ordered after the send, so the receiver either sees the message or is seen parked.
        std::sync::atomic::fence(Ordering::SeqCst);
        if waking.parked.load(Ordering::Relaxed) && waking.parked.swap(false, Ordering::AcqRel) {
            waking.notify.notify_one();
        }
    }
    rt.block_on(consumer).unwrap();
}

fn channels(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("channel/200k-messages");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    group.sample_size(30);
    group.bench_function("tokio_unbounded_mpsc", |b| b.iter(|| tokio_mpsc(&rt)));
    group.bench_function("crossbeam_unbounded_with_notify", |b| {
        b.iter(|| crossbeam(&rt))
    });
    group.finish();
}

criterion_group!(benches, channels);
criterion_main!(benches);
