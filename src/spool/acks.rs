//! Which records of a segment have resolved, kept beside it (`segment-N.acks`: the records'
//! indices in the segment, 4 bytes each, little-endian), so that a producer opened after a crash
//! does not send again what was put already.
//!
//! Acks are appended by the writer at each of its turns, never synced: the page cache outlives
//! a killed process, and an ack lost with the machine only means its record is sent twice (at
//! least once, as promised). A segment is deleted with its ack file once all its records
//! resolved; the ack file is what keeps the duplicates a crash makes to about the records in
//! flight, instead of whole segments.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

/// The ack file of segment `id`.
pub(crate) fn ack_name(id: u64) -> String {
    format!("segment-{id:020}.acks")
}

/// The indices in an ack file's bytes; a last entry cut short by a crash is ignored.
pub(crate) fn read(bytes: &[u8]) -> HashSet<u32> {
    bytes
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect()
}

/// The writer's open ack files.
pub(crate) struct AckFiles {
    dir: PathBuf,
    open: HashMap<u64, File>,
    /// Whether a failure to write one was logged (once: it costs duplicates, not records).
    warned: bool,
}

impl AckFiles {
    pub(crate) fn new(dir: PathBuf) -> AckFiles {
        AckFiles {
            dir,
            open: HashMap::new(),
            warned: false,
        }
    }

    /// Appends `acks` (segment id, record index) to their segments' ack files.
    pub(crate) fn write(&mut self, mut acks: Vec<(u64, u32)>) {
        acks.sort_unstable();
        let mut bytes = Vec::new();
        for run in acks.chunk_by(|a, b| a.0 == b.0) {
            let id = run[0].0;
            bytes.clear();
            for (_, index) in run {
                bytes.extend_from_slice(&index.to_le_bytes());
            }
            if let Err(e) = self.file(id).and_then(|f| f.write_all(&bytes)) {
                self.open.remove(&id);
                if !std::mem::replace(&mut self.warned, true) {
                    tracing::warn!(
                        "writing the spool's ack file {} failed: {e}; after a crash, records put already may be sent again",
                        self.dir.join(ack_name(id)).display()
                    );
                }
            }
        }
    }

    fn file(&mut self, id: u64) -> std::io::Result<&mut File> {
        if !self.open.contains_key(&id) {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(ack_name(id)))?;
            self.open.insert(id, file);
        }
        Ok(self.open.get_mut(&id).expect("just opened"))
    }

    /// Segment `id` is deleted: so is its ack file.
    pub(crate) fn remove(&mut self, id: u64) {
        self.open.remove(&id);
        match std::fs::remove_file(self.dir.join(ack_name(id))) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("deleting a spool ack file failed: {e}"),
        }
    }
}
