//! Reading back what an earlier producer left in a spool directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::frame::{self, Damage, Stored};
use super::{CORRUPT, Segment, Shared, segment_name};

/// A record found in the spool, to send again; its segment is released once it is put.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) stored: Stored,
    pub(crate) segment: Arc<Segment>,
}

/// What a spool directory held.
pub(super) struct Found {
    /// Records in segments kept as they are.
    pub(super) recovered: Vec<Recovered>,
    /// Whole records of damaged segments (moved aside): to write again in a new segment.
    pub(super) rescued: Vec<Stored>,
    pub(super) next_id: u64,
    /// Bytes of the segments kept.
    pub(super) used: u64,
}

/// The id in a segment's file name.
fn segment_id(name: &str) -> Option<u64> {
    name.strip_prefix("segment-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

/// Reads every segment in `dir`, in order: cuts torn tails, moves damaged segments to
/// `corrupt/` (keeping their whole records), deletes empty ones. Nothing in a segment can make
/// it panic: every frame is checked before it is trusted.
pub(super) fn scan(shared: &Arc<Shared>, dir: &Path) -> std::io::Result<Found> {
    let mut ids: Vec<(u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(id) = entry.file_name().to_str().and_then(segment_id)
            && entry.file_type()?.is_file()
        {
            ids.push((id, entry.path()));
        }
    }
    ids.sort();
    let mut found = Found {
        recovered: Vec::new(),
        rescued: Vec::new(),
        next_id: ids.last().map_or(0, |(id, _)| id + 1),
        used: 0,
    };
    let stats = &shared.stats;
    for (id, path) in ids {
        let bytes = std::fs::read(&path)?;
        let read = frame::read_segment(&bytes);
        match read.damage {
            None | Some(Damage::Torn { .. }) => {
                if let Some(Damage::Torn { offset }) = read.damage {
                    tracing::warn!(
                        path = %path.display(),
                        offset,
                        cut = bytes.len() - read.whole,
                        "spool segment {} ends in a write cut short at byte {offset} (a crash while appending): {} bytes cut, its {} whole records kept",
                        path.display(),
                        bytes.len() - read.whole,
                        read.records.len()
                    );
                    stats.torn_tails.fetch_add(1, Ordering::Relaxed);
                    let file = std::fs::OpenOptions::new().write(true).open(&path)?;
                    file.set_len(read.whole as u64)?;
                    file.sync_data()?;
                }
                if read.records.is_empty() {
                    std::fs::remove_file(&path)?;
                    continue;
                }
                let segment = Arc::new(Segment {
                    id,
                    live: AtomicUsize::new(read.records.len()),
                    bytes: AtomicU64::new(read.whole as u64),
                    shared: Arc::downgrade(shared),
                });
                found.used += read.whole as u64;
                found
                    .recovered
                    .extend(read.records.into_iter().map(|stored| Recovered {
                        stored,
                        segment: Arc::clone(&segment),
                    }));
            }
            Some(damage) => {
                let aside = dir.join(CORRUPT);
                std::fs::create_dir_all(&aside)?;
                let moved = aside.join(segment_name(id));
                std::fs::rename(&path, &moved)?;
                let offset = match damage {
                    Damage::Corrupt { offset } | Damage::Torn { offset } => offset,
                    Damage::NotASegment => 0,
                };
                tracing::error!(
                    path = %path.display(),
                    offset,
                    records = read.records.len(),
                    unreadable_bytes = bytes.len() - offset,
                    moved_to = %moved.display(),
                    "spool segment {} is damaged at byte {offset}: its {} whole records before it are sent again, the {} bytes from there cannot be read; the segment was moved to {}",
                    path.display(),
                    read.records.len(),
                    bytes.len() - offset,
                    moved.display()
                );
                stats.corrupt_segments.fetch_add(1, Ordering::Relaxed);
                found.rescued.extend(read.records);
            }
        }
    }
    Ok(found)
}
