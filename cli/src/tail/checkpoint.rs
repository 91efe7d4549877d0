//! `kpl tail`'s checkpoint: per file, the offset up to which every line is settled, replaced
//! atomically (write, fsync, rename, directory fsync) after the dead-letter file is synced, so
//! it can lag delivery (duplicates after a crash) but never lead it (loss).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;

use serde::{Deserialize, Serialize};

use super::Tail;
use super::files::fingerprint;

#[derive(Serialize, Deserialize, Clone, Debug)]
pub(super) struct CheckpointFile {
    pub(super) version: u32,
    pub(super) files: Vec<CheckpointEntry>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(super) struct CheckpointEntry {
    pub(super) path: PathBuf,
    pub(super) dev: u64,
    pub(super) ino: u64,
    /// Every line ending at or before this offset is settled.
    pub(super) offset: u64,
    pub(super) fingerprint_len: u64,
    pub(super) fingerprint: String,
}

impl Tail {
    /// Where to start a file the checkpoint knows, if `entry` still describes it.
    pub(super) fn resume_offset(path: &Path, entry: &CheckpointEntry) -> Option<u64> {
        let mut file = File::open(path).ok()?;
        let len = file.metadata().ok()?.len();
        if len < entry.fingerprint_len || len < entry.offset {
            return None; // truncated, or another file with a reused inode
        }
        (fingerprint(&mut file, entry.fingerprint_len).ok()? == entry.fingerprint)
            .then_some(entry.offset)
    }

    pub(super) fn checkpoint(&self) -> CheckpointFile {
        let mut files: Vec<CheckpointEntry> = self
            .files
            .iter()
            .map(|(id, t)| CheckpointEntry {
                path: t.path.clone(),
                dev: id.0,
                ino: id.1,
                offset: t.incarnation.delivered.load(Relaxed),
                fingerprint_len: t.fingerprint_len,
                fingerprint: t.fingerprint.clone(),
            })
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        CheckpointFile { version: 1, files }
    }

    /// Writes the checkpoint if it moved: offsets first, then the dead-letter records behind
    /// them are synced, then the file is replaced atomically.
    pub(super) fn save_checkpoint(&mut self) -> Result<(), String> {
        let checkpoint = self.checkpoint();
        if self
            .last_checkpoint
            .as_ref()
            .is_some_and(|c| c.files == checkpoint.files)
        {
            return Ok(());
        }
        self.shared
            .dead
            .lock()
            .expect("not poisoned")
            .sync()
            .map_err(|e| format!("dead-letter file: {e}"))?;
        let path = &self.args.checkpoint;
        let tmp = PathBuf::from(format!("{}.tmp", path.display()));
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            serde_json::to_writer_pretty(&mut f, &checkpoint)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            // The rename itself is durable once the directory is synced.
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| format!("checkpoint {}: {e}", path.display()))?;
        self.last_checkpoint = Some(checkpoint);
        Ok(())
    }
}
