//! `kpl tail` and rotation by copy (logrotate's `copytruncate`): the file is copied to a new
//! name (`app.log.1`, a new inode that a pattern like `app.log*` matches) and then emptied in
//! place. Read from its start, the copy would send again every line already read from the
//! original. As the Kinesis Agent does (`TrackedFileRotationAnalyzer`: after a truncation, the
//! rotated file that could have been the one followed is followed on from the same offset),
//! a new file whose first bytes are those of a followed file is its copy: once the original is
//! seen truncated, the copy is read from where the original had been read to (what was written
//! between the last read and the copy is there), and the original from its new start. A copy
//! whose original is not truncated within [`COPY_WAIT`] is a copy of lines already read from
//! the original (rotation by copy alone): it is followed from its end.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::Tail;
use super::files::{FileId, compressed, fingerprint};

/// How long a copy waits for its original to be truncated before it is taken for a plain copy.
pub(super) const COPY_WAIT: Duration = Duration::from_secs(3);

/// A followed file's content before it was truncated: how far it was read, the partial line
/// then, and its fingerprint, kept for [`COPY_WAIT`] for a copy that appears late.
pub(super) struct Cut {
    pub(super) read_to: u64,
    pub(super) partial: Vec<u8>,
    pub(super) fingerprint_len: u64,
    pub(super) fingerprint: String,
    pub(super) at: Instant,
}

/// A new file that is a copy of a followed one whose truncation has not been seen yet.
pub(super) struct PendingCopy {
    pub(super) path: PathBuf,
    pub(super) original: FileId,
    pub(super) since: Instant,
}

/// What a file new to `kpl tail` is.
pub(super) enum NewFile {
    /// Compressed (by name or magic bytes): not followed.
    Compressed(&'static str),
    /// A copy of a followed file that was truncated.
    CopyOfCut(FileId),
    /// A copy of a followed file not (yet) seen truncated.
    CopyOf(FileId),
    /// Anything else.
    Plain,
}

impl Tail {
    /// What the new file at `path` is, against the files followed now.
    pub(super) fn classify(&self, path: &Path, id: FileId) -> NewFile {
        let Ok(mut file) = File::open(path) else {
            return NewFile::Plain;
        };
        if let Some(kind) = compressed(path, &mut file) {
            return NewFile::Compressed(kind);
        }
        let len = file.metadata().map_or(0, |m| m.len());
        let mut same = |fingerprint_len: u64, want: &str| {
            fingerprint_len > 0
                && len >= fingerprint_len
                && fingerprint(&mut file, fingerprint_len).is_ok_and(|f| f == want)
        };
        for (other, t) in &self.files {
            if *other == id {
                continue;
            }
            if let Some(cut) = &t.cut
                && same(cut.fingerprint_len, &cut.fingerprint)
            {
                return NewFile::CopyOfCut(*other);
            }
            if same(t.fingerprint_len, &t.fingerprint) {
                return NewFile::CopyOf(*other);
            }
        }
        NewFile::Plain
    }

    /// Opens the copy at `path` of the followed file `original`, which was truncated: from
    /// where the original had been read to (the start of its partial line), or from its end if
    /// it is shorter than that.
    pub(super) fn open_copy(&mut self, path: &Path, id: FileId, original: FileId) {
        let Some(cut) = self.files.get_mut(&original).and_then(|t| t.cut.take()) else {
            return;
        };
        let len = std::fs::metadata(path).map_or(0, |m| m.len());
        // The partial line is read again from the copy: it starts where that line starts.
        let start = (cut.read_to - cut.partial.len() as u64).min(len);
        match self.open(path, start) {
            Ok(t) => {
                eprintln!(
                    "kpl tail: {} is a copy of {} before it was truncated; following it from byte {start}",
                    path.display(),
                    self.files[&original].path.display()
                );
                self.files.insert(id, t);
            }
            Err(e) => eprintln!("kpl tail: {}: {e}", path.display()),
        }
    }

    /// Settles the pending copies: those whose original was truncated are followed on from
    /// where it was; those past [`COPY_WAIT`] without that, from their end. Cuts no copy
    /// claimed within [`COPY_WAIT`] are forgotten.
    pub(super) fn settle_copies(&mut self) {
        let ids: Vec<FileId> = self.copies.keys().copied().collect();
        for id in ids {
            let p = &self.copies[&id];
            let original = p.original;
            let truncated = self.files.get(&original).is_some_and(|t| t.cut.is_some());
            if truncated {
                let p = self.copies.remove(&id).expect("listed");
                self.open_copy(&p.path, id, original);
            } else if p.since.elapsed() >= COPY_WAIT || !self.files.contains_key(&original) {
                let p = self.copies.remove(&id).expect("listed");
                let len = std::fs::metadata(&p.path).map_or(0, |m| m.len());
                if let Ok(t) = self.open(&p.path, len) {
                    eprintln!(
                        "kpl tail: {} is a copy of lines already read; following it from its end",
                        p.path.display()
                    );
                    self.files.insert(id, t);
                }
            }
        }
        for t in self.files.values_mut() {
            if t.cut.as_ref().is_some_and(|c| c.at.elapsed() >= COPY_WAIT) {
                t.cut = None;
            }
        }
    }
}
