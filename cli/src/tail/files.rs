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

use super::copies::Cut;
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
/// The longest line kept while its end is awaited: a line longer than the largest record
/// Kinesis takes (10 MiB) cannot be sent, so it is reported and skipped to its newline instead
/// of held in memory without bound.
pub(super) const MAX_LINE: usize = 10 << 20;

/// What compression a rotated file carries (logrotate's `compress`: `app.log.2.gz`), by its
/// name or its first bytes: its bytes are not lines, and are not sent.
pub(super) fn compressed(path: &Path, file: &mut File) -> Option<&'static str> {
    let by_name = path
        .extension()
        .and_then(|e| e.to_str())
        .and_then(|e| match e {
            "gz" | "tgz" => Some("gzip"),
            "bz2" => Some("bzip2"),
            "xz" | "lzma" => Some("xz"),
            "zst" => Some("zstd"),
            "lz4" => Some("lz4"),
            "zip" => Some("zip"),
            "Z" => Some("compress"),
            _ => None,
        });
    if by_name.is_some() {
        return by_name;
    }
    let mut head = [0u8; 6];
    let n = file.read(&mut head).ok()?;
    file.seek(SeekFrom::Start(0)).ok()?;
    let head = &head[..n];
    if head.starts_with(&[0x1f, 0x8b]) {
        Some("gzip")
    } else if head.starts_with(b"BZh") {
        Some("bzip2")
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some("xz")
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some("zstd")
    } else {
        None
    }
}

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
    /// Bytes after the last newline, waiting for the rest of their line (at most
    /// [`MAX_LINE`]).
    pub(super) partial: Vec<u8>,
    /// A line longer than [`MAX_LINE`] is being skipped to its newline.
    pub(super) skipping: bool,
    /// Set when the file was found truncated: what it was, for a copy of it (copytruncate)
    /// to go on from there (see `copies.rs`).
    pub(super) cut: Option<Cut>,
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
        t.cut = Some(Cut {
            read_to: t.read_to,
            partial: std::mem::take(&mut t.partial),
            fingerprint_len: t.fingerprint_len,
            fingerprint: std::mem::take(&mut t.fingerprint),
            at: std::time::Instant::now(),
        });
        t.read_to = 0;
        t.sent_to = 0;
        t.skipping = false;
        // The content is new: so is its fingerprint, taken again as it grows (a stale one
        // made every later poll look like another truncation, and a restart distrust the
        // checkpoint).
        t.fingerprint_len = 0;
        t.fingerprint = fingerprint(&mut t.file, 0)?;
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
    let base = t.read_to;
    t.read_to += got as u64;
    // The line begun in an earlier poll is completed first; each byte is copied into
    // `partial` at most once (copying it again at every poll made a long line quadratic).
    let mut line_start = 0;
    if !t.partial.is_empty() || t.skipping {
        match memchr::memchr(b'\n', &chunk) {
            Some(nl) => {
                let end = base + nl as u64 + 1;
                if std::mem::take(&mut t.skipping) {
                    // Counted as bad when it passed MAX_LINE; settled as a skipped line.
                    t.sent_to = end;
                    if let Some(tx) = &t.incarnation.tx {
                        let _ = tx.send((end, None));
                    }
                } else if t.partial.len() + nl > MAX_LINE {
                    // Too long with its end: reported, then settled as a skipped line.
                    t.partial.extend_from_slice(&chunk[..nl]);
                    too_long(t, out);
                    t.skipping = false;
                    t.sent_to = end;
                    if let Some(tx) = &t.incarnation.tx {
                        let _ = tx.send((end, None));
                    }
                } else {
                    let mut line = std::mem::take(&mut t.partial);
                    line.extend_from_slice(&chunk[..nl]);
                    send_line(t, trim_cr(&line), end, out).await;
                }
                line_start = nl + 1;
            }
            None => {
                if !t.skipping {
                    t.partial.extend_from_slice(&chunk);
                    too_long(t, out);
                }
                return Ok(got);
            }
        }
    }
    while let Some(nl) = memchr::memchr(b'\n', &chunk[line_start..]) {
        let end = line_start + nl;
        send_line(
            t,
            trim_cr(&chunk[line_start..end]),
            base + end as u64 + 1,
            out,
        )
        .await;
        line_start = end + 1;
    }
    t.partial = chunk[line_start..].to_vec();
    too_long(t, out);
    Ok(got)
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A partial line past [`MAX_LINE`] is reported as bad and skipped to its newline.
fn too_long(t: &mut Tracked, out: &Out<'_>) {
    if t.partial.len() <= MAX_LINE {
        return;
    }
    let start = t.sent_to;
    out.shared.tally.lines.fetch_add(1, Relaxed);
    out.shared.tally.bad.fetch_add(1, Relaxed);
    eprintln!(
        "kpl tail: {} byte {start}: a line longer than {MAX_LINE} bytes (more than a record may hold); skipped",
        t.path.display()
    );
    t.partial = Vec::new();
    t.skipping = true;
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
