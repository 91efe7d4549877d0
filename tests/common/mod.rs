//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses its own subset
//!
//! The one way in: `mod common;` in a test (`#[path = "../tests/common/mod.rs"] mod common;` in a
//! benchmark), then `common::harness`, `common::faultmix`, ... Each module is its own helper:
//! `harness` (test records, reading a stream back as its consumers do, receipt checks), `kcl` (the
//! KCL's reading of an aggregate, rule for rule), `faultmix` (a Kinesis with random faults),
//! `overload` (producers past a stream's capacity), `counting` (a counting allocator),
//! `kinesis_local` and `moto` (services started for a test), `log_buffer` (captured logs).

pub mod counting;
pub mod faultmix;
pub mod harness;
pub mod kcl;
pub mod kinesis_local;
pub mod log_buffer;
pub mod moto;
pub mod overload;
pub mod sim_model;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use kinesis_producer::{HashKey, UserRecord};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// A user record as JSON, in the shape `kpl aggregate` reads and the reference script speaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonRecord {
    pub partition_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explicit_hash_key: Option<String>,
    pub data_base64: String,
}

impl JsonRecord {
    pub fn from_user(r: &UserRecord) -> Self {
        JsonRecord {
            partition_key: r.partition_key().to_owned(),
            explicit_hash_key: r.explicit_hash_key().map(|k| k.to_string()),
            data_base64: B64.encode(r.data()),
        }
    }

    pub fn to_user(&self) -> UserRecord {
        let r = UserRecord::new(self.partition_key.clone(), self.data()).unwrap();
        match &self.explicit_hash_key {
            Some(k) => r.with_explicit_hash_key(k.parse().unwrap()),
            None => r,
        }
    }

    pub fn data(&self) -> Vec<u8> {
        B64.decode(&self.data_base64).unwrap()
    }
}

pub fn b64(data: &[u8]) -> String {
    B64.encode(data)
}

pub fn unb64(s: &str) -> Bytes {
    Bytes::from(B64.decode(s).unwrap())
}

/// The interop workload the issue names: `n` records, `keys` distinct partition keys (some
/// non-ASCII), data of 0..200 random bytes (empty included), every 10th with an explicit hash key.
pub fn workload(seed: u64, n: usize, keys: usize) -> Vec<UserRecord> {
    let mut rng = StdRng::seed_from_u64(seed);
    let prefixes = ["user", "ключ", "キー", "🔑", "é"];
    (0..n)
        .map(|i| {
            let k = rng.random_range(0..keys);
            let pk = format!("{}-{k}", prefixes[k % prefixes.len()]);
            let len = if i % 50 == 0 {
                0
            } else {
                rng.random_range(0..200)
            };
            let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let r = UserRecord::new(pk, data).unwrap();
            if i % 10 == 0 {
                r.with_explicit_hash_key(HashKey(rng.random()))
            } else {
                r
            }
        })
        .collect()
}

/// The engine benchmarks' workload (`benches/engine.rs`, `benches/spool.rs`): `n` records of 100
/// pseudo-random bytes, 16-byte partition keys of 10,000 distinct values, the same every run.
pub fn bench_workload(n: usize) -> Vec<UserRecord> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|_| {
            let key = format!("partition-{:06}", next() % 10_000);
            let data: Vec<u8> = (0..100).map(|_| next() as u8).collect();
            UserRecord::new(key, data).unwrap()
        })
        .collect()
}

/// The records' keys and data, for a benchmark to make its records from inside the measurement
/// (making one computes its partition key's MD5, which is the producer's work, on the caller's
/// thread).
pub fn bench_parts(records: &[UserRecord]) -> Vec<(std::sync::Arc<str>, bytes::Bytes)> {
    records
        .iter()
        .cloned()
        .map(|r| {
            let (key, _, data) = r.into_parts();
            (key, data)
        })
        .collect()
}

/// A port free on 127.0.0.1 now, for a server a test starts (it binds it at once).
/// A local service a test started (moto, tinyproxy, kinesis-local): stopped, killed and waited
/// for, when dropped, so that no test leaves one running.
pub struct Service(std::process::Child);

impl Service {
    /// Starts `command` with no input and its output discarded; `needs` says, when it cannot
    /// start, what the test needs and how to get it.
    pub fn start(mut command: Command, needs: &str) -> Service {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{needs} ({e})"));
        Service(child)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The Python that has the reference `aws-kinesis-agg` installed: `KPL_TEST_PYTHON` (set by
/// scripts/test.sh), else `python3`. Fails the test, never skips it, if the reference is missing.
pub fn python() -> String {
    let python = std::env::var("KPL_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import aws_kinesis_agg.aggregator"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the interop tests need the reference library aws-kinesis-agg for {python}: run \
         scripts/test.sh (it installs it), or set KPL_TEST_PYTHON to a python that has \
         tests/interop/requirements.txt installed"
    );
    python
}

/// Runs the reference script with `args`, `input` on stdin; returns its stdout.
pub fn reference(args: &[&str], input: &str) -> String {
    let mut child = Command::new(python())
        .arg(repo_path("tests/interop/agg_ref.py"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the reference script");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "reference script {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
