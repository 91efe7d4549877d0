//! Helpers of the CLI's tests: the library tests' shared helpers (records as JSON, the
//! interop workload), and running the `kpl` binary this package builds.
#![allow(dead_code)] // each test binary uses its own subset

use std::io::Write;
use std::process::{Command, Stdio};

#[path = "../../../tests/common/mod.rs"]
mod shared;
#[allow(unused_imports)] // each test binary uses its own subset
pub use shared::*;

/// Runs the `kpl` binary with `args`, `stdin` fed from another thread (a large input must not
/// deadlock against a full stdout pipe), without AWS credentials from the environment.
pub fn kpl(args: &[&str], stdin: &[u8]) -> std::process::Output {
    kpl_with(args, stdin, &[])
}

/// As [`kpl`], with `env` set (after the AWS credentials of the environment are removed).
pub fn kpl_with(args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kpl"))
        .args(args)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SESSION_TOKEN")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || pipe.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    out
}

/// Bytes as text, for messages.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The JSON a successful `kpl ... --json` printed; panics with its output otherwise.
pub fn json_report(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
}

/// Runs `kpl` with `args` and checks it refused them as a usage error (exit status 2) with
/// `message` in what it printed.
pub fn assert_refused(args: &[&str], message: &str) {
    let out = kpl(args, b"");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(
        err.contains(message),
        "{args:?}: wanted {message:?} in {err}"
    );
}

/// `kpl local` on a free port serving one stream (`name:shards`), stopped when dropped.
pub struct KplLocal {
    server: std::process::Child,
    /// Its URL, as it printed it.
    pub endpoint: String,
    /// What it printed after its address: the streams it created, one line each.
    pub created: Vec<String>,
}

impl KplLocal {
    pub fn start(stream: &str) -> KplLocal {
        use std::io::BufRead;
        let mut server = Command::new(env!("CARGO_BIN_EXE_kpl"))
            .args(["local", "--port", "0", "--create-stream", stream])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(server.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        let endpoint = first
            .strip_prefix("local Kinesis listening on ")
            .expect(&first)
            .to_owned();
        let created = vec![lines.next().unwrap().unwrap()];
        // Keep reading (and dropping) what it prints, so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        KplLocal {
            server,
            endpoint,
            created,
        }
    }
}

impl Drop for KplLocal {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}
