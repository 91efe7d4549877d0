//! `kpl tail`'s files: identity across renames (device and inode, plus a fingerprint of the
//! first bytes across restarts), reading new lines in bounded chunks, and sending each line.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use kinesis_producer::Producer;
use md5::{Digest, Md5};

use tokio::task::JoinHandle;

use super::settle::{Incarnation, Shared, new_incarnation};
use crate::lines::LineArgs;

/// A file's identity, stable across renames: (device, inode).
pub(super) type FileId = (u64, u64);

#[cfg(unix)]
pub(super) fn file_id(meta: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
pub(super) fn file_id(meta: &std::fs::Metadata) -> FileId {
    // No inodes: the creation time, which a rename keeps, stands in for one.
    let created = meta
        .created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64);
    (0, created)
}

/// Bytes at the start of a file that identify it, with its inode, across restarts (an inode
/// can be reused by a new file once the old one is deleted).
pub(super) const FINGERPRINT_LEN: u64 = 256;
/// At most this much is read from one file per poll, so one huge file cannot starve the others
/// or fill memory.
pub(super) const READ_CHUNK: usize = 4 << 20;
/// How long one poll may keep reading one file that has more.
pub(super) const READ_BUDGET: Duration = Duration::from_millis(500);

pub(super) fn fingerprint(file: &mut File, len: u64) -> std::io::Result<String> {
    let mut head = vec![0u8; len as usize];
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(&mut head)?;
    Ok(Md5::digest(&head)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

pub(super) struct Tracked {
    pub(super) path: PathBuf,
    pub(super) file: File,
    /// Bytes consumed: complete lines plus `partial`.
    pub(super) read_to: u64,
    /// Bytes after the last newline, waiting for the rest of their line.
    pub(super) partial: Vec<u8>,
    /// Where the last line sent ends.
    pub(super) sent_to: u64,
    pub(super) fingerprint_len: u64,
    pub(super) fingerprint: String,
    /// Matched by a pattern in the latest scan; a file that is not is read to its end, then
    /// dropped once its lines are settled.
    pub(super) matched: bool,
    pub(super) idle_polls: u32,
    pub(super) incarnation: Incarnation,
    /// Earlier incarnations whose lines are still being settled.
    pub(super) retired: Vec<JoinHandle<()>>,
}

/// Where lines go.
pub(super) struct Out<'a> {
    pub(super) producer: &'a Producer,
    pub(super) stream: &'a str,
    pub(super) lines: &'a LineArgs,
    pub(super) shared: &'a Arc<Shared>,
}

/// A file with identity `id` in the directory `was` was in (renamed by rotation).
pub(super) fn find_by_id(was: &Path, id: FileId) -> Option<PathBuf> {
    if std::fs::metadata(was).is_ok_and(|m| file_id(&m) == id) {
        return Some(was.to_path_buf());
    }
    let dir = match was.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && file_id(&m) == id))
}

/// Reads what `t` gained since the last poll and sends its complete lines. A file shorter than
/// what was read, or whose first bytes changed, was truncated: it is followed again from 0.
pub(super) async fn read_new_lines(t: &mut Tracked, out: &Out<'_>) -> std::io::Result<usize> {
    if t.incarnation.tx.is_none() {
        return Ok(0);
    }
    let len = t.file.metadata()?.len();
    let rewritten = len >= t.fingerprint_len
        && len != t.read_to
        && fingerprint(&mut t.file, t.fingerprint_len)? != t.fingerprint;
    if len < t.read_to || rewritten {
        eprintln!(
            "kpl tail: {} was truncated; following it from the start",
            t.path.display()
        );
        let old = std::mem::replace(&mut t.incarnation, new_incarnation(out.shared, 0));
        t.retired.push(old.settler);
        t.retired.retain(|h| !h.is_finished());
        t.read_to = 0;
        t.sent_to = 0;
        t.partial.clear();
    }
    // A file shorter than the fingerprint when first seen: its fingerprint grows with it.
    if t.fingerprint_len < FINGERPRINT_LEN && len > t.fingerprint_len {
        t.fingerprint_len = len.min(FINGERPRINT_LEN);
        t.fingerprint = fingerprint(&mut t.file, t.fingerprint_len)?;
    }
    if len == t.read_to {
        return Ok(0);
    }
    let want = ((len - t.read_to) as usize).min(READ_CHUNK);
    let mut chunk = vec![0u8; want];
    t.file.seek(SeekFrom::Start(t.read_to))?;
    let got = t.file.read(&mut chunk)?;
    chunk.truncate(got);
    let base = t.read_to - t.partial.len() as u64;
    t.read_to += got as u64;
    let mut buf = std::mem::take(&mut t.partial);
    buf.extend_from_slice(&chunk);
    let mut line_start = 0;
    while let Some(nl) = buf[line_start..].iter().position(|b| *b == b'\n') {
        let end = line_start + nl;
        let mut line = &buf[line_start..end];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        send_line(t, line, base + end as u64 + 1, out).await;
        line_start = end + 1;
    }
    t.partial = buf[line_start..].to_vec();
    Ok(got)
}

/// Sends one line (blank lines are skipped, bad ones reported) and queues its outcome.
pub(super) async fn send_line(t: &mut Tracked, line: &[u8], end: u64, out: &Out<'_>) {
    let shared = out.shared;
    let future = if line.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        shared.tally.lines.fetch_add(1, Relaxed);
        match out.lines.record(line) {
            Ok(record) => Some(out.producer.send_wait(out.stream, record).await),
            Err(reason) => {
                shared.tally.bad.fetch_add(1, Relaxed);
                eprintln!(
                    "kpl tail: {} byte {}: {reason}; skipped",
                    t.path.display(),
                    end - line.len() as u64 - 1
                );
                None
            }
        }
    };
    t.sent_to = end;
    if let Some(tx) = &t.incarnation.tx {
        let _ = tx.send((end, future));
    }
}
