//! Memory within `MaxBufferedBytes` through an outage: `MaxBufferedBytes` = 32 MiB,
//! RecordTtl = 120 s, 300,000 records of about 90 bytes offered (senders waiting for room)
//! while the endpoint refuses connections for the first 20 s. Everything must be delivered
//! when it comes back, and the process's peak resident memory must stay within
//! MaxBufferedBytes + 64 MiB. The Kinesis (the embedded one, in a second copy of this
//! program started with `KPL_OUTAGE_SERVE_PORT`) runs in its own process, so the peak is the
//! producer's; a TCP proxy on 127.0.0.1 in this process stops listening for the outage
//! (connections are refused, and open ones are cut).
//!
//! Run: `cargo bench --bench outage` (KPL_OUTAGE_RECORDS changes the 300,000).
#![allow(clippy::disallowed_methods)] // a benchmark times what it runs (clippy.toml keeps the library's stages off the clock)

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kinesis_producer::local::{LocalKinesis, LocalOptions};
use kinesis_producer::{Config, Producer, UserRecord};
use tokio::net::{TcpListener, TcpStream};

/// This process's peak resident set size, in bytes (VmHWM).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Set in the child copy of this program that serves the local Kinesis on that port.
const SERVE_PORT: &str = "KPL_OUTAGE_SERVE_PORT";

/// The child's whole job: the embedded Kinesis on 127.0.0.1:`port` with the stream "outage" of
/// 4 shards, until its stdin closes (the parent dropped it, or died: no orphan is left).
fn serve_local(port: u16) {
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let options = LocalOptions {
            port,
            ..LocalOptions::default()
        };
        let kinesis = LocalKinesis::start(options)
            .await
            .expect("start the local Kinesis");
        kinesis
            .create_stream("outage", 4)
            .await
            .expect("create the stream");
        std::future::pending::<()>().await;
    });
}

/// The child process serving the local Kinesis; killed when dropped.
struct Local(Child);

impl Drop for Local {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Forwards 127.0.0.1:`port` to `upstream`, except while `down`: then nothing listens there
/// (connecting is refused) and open connections are cut.
async fn proxy(port: u16, upstream: u16, down: Arc<AtomicBool>) {
    loop {
        while down.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((mut client, _)) = accepted else { break };
                    let down = Arc::clone(&down);
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                            return;
                        };
                        let cut = async {
                            while !down.load(Ordering::Relaxed) {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            () = cut => {}
                        }
                    });
                }
                () = tokio::time::sleep(Duration::from_millis(10)) => {
                    if down.load(Ordering::Relaxed) {
                        break; // drop the listener: refuse connections
                    }
                }
            }
        }
    }
}

fn main() {
    if let Some(port) = std::env::var(SERVE_PORT).ok().and_then(|p| p.parse().ok()) {
        return serve_local(port);
    }
    let bench = std::env::args().any(|a| a == "--bench");
    // `cargo test --all-targets` runs benches once as tests: keep that quick.
    let (n, outage) = if bench {
        let n = std::env::var("KPL_OUTAGE_RECORDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(300_000);
        (n, Duration::from_secs(20))
    } else {
        (20_000, Duration::from_secs(2))
    };
    let max_bytes: usize = 32 << 20;
    let kinesis_port = free_port();
    let _local = Local(
        Command::new(std::env::current_exe().expect("this program's path"))
            .env(SERVE_PORT, kinesis_port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the local Kinesis"),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Wait until the stream exists (bounded).
        let direct = Config::builder()
            .endpoint(format!("http://127.0.0.1:{kinesis_port}"))
            .region("us-east-1")
            .credentials("local", "local");
        let probe = Producer::new(direct.clone().build().unwrap()).await;
        let mut ready = false;
        for _ in 0..100 {
            if probe
                .send("outage", UserRecord::new("probe", "x").unwrap())
                .await
                .is_ok()
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "the local Kinesis did not come up");
        probe.shutdown().await;

        let port = free_port();
        let down = Arc::new(AtomicBool::new(true));
        tokio::spawn(proxy(port, kinesis_port, Arc::clone(&down)));
        let config = direct
            .endpoint(format!("http://127.0.0.1:{port}"))
            .max_buffered_bytes(max_bytes as u64)
            .record_ttl(Duration::from_secs(120))
            .build()
            .unwrap();
        let producer = Producer::new(config).await;
        let start = Instant::now();
        let back = {
            let down = Arc::clone(&down);
            tokio::spawn(async move {
                tokio::time::sleep(outage).await;
                down.store(false, Ordering::Relaxed);
            })
        };
        let base_rss = peak_rss();
        // Outcomes are counted as they come (not in order), so that resolved futures do not
        // pile up here behind one still waiting: what stays is the producer's own memory.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<kinesis_producer::RecordFuture>(1_000);
        let counter = tokio::spawn(async move {
            use futures_util::StreamExt;
            let mut waiting = futures_util::stream::FuturesUnordered::new();
            let (mut ok, mut failed, mut attempts_max) = (0usize, 0usize, 0usize);
            let mut open = true;
            while open || !waiting.is_empty() {
                tokio::select! {
                    f = rx.recv(), if open => match f {
                        Some(f) => waiting.push(f),
                        None => open = false,
                    },
                    Some(outcome) = waiting.next(), if !waiting.is_empty() => match outcome {
                        Ok(r) => {
                            ok += 1;
                            attempts_max = attempts_max.max(r.attempts.count());
                        }
                        Err(e) => {
                            if failed == 0 {
                                eprintln!("first failure: {e}");
                            }
                            failed += 1;
                        }
                    },
                }
            }
            (ok, failed, attempts_max)
        });
        let mut peak_buffered = 0;
        for i in 0..n {
            let data = format!(
                "{{\"n\":{i},\"user\":\"u{}\",\"event\":\"click\",\"path\":\"/a/b/c/{}\"}}",
                i % 1000,
                i % 97
            );
            let r = UserRecord::new(format!("u{}", i % 1000), data).unwrap();
            tx.send(producer.send_wait("outage", r).await)
                .await
                .unwrap();
            if i % 1000 == 0 {
                peak_buffered = peak_buffered.max(producer.buffered().bytes);
            }
        }
        drop(tx);
        let (ok, failed, attempts_max) = counter.await.unwrap();
        back.await.unwrap();
        let secs = start.elapsed().as_secs_f64();
        producer.shutdown().await;
        let peak = peak_rss();
        println!(
            "outage/{n}-records-{}s-down: {ok} delivered, {failed} failed in {secs:.1} s; \
             attempts max {attempts_max}; peak RSS {:.1} MiB (before sending {:.1} MiB) against \
             MaxBufferedBytes {} MiB + 64 MiB = {} MiB; buffered at most {:.1} MiB",
            outage.as_secs(),
            peak as f64 / 1048576.0,
            base_rss as f64 / 1048576.0,
            max_bytes >> 20,
            (max_bytes >> 20) + 64,
            peak_buffered as f64 / 1048576.0
        );
        assert_eq!(failed, 0, "nothing may fail");
        assert!(
            peak <= (max_bytes + (64 << 20)) as u64,
            "peak RSS over the bound"
        );
    });
}
