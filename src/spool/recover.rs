//! Reading back what an earlier producer left in a spool directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use super::acks::{self, ack_name};
use super::frame::{self, Damage, Stored};
use super::{CORRUPT, Segment, Shared, Tag, segment_name};

/// A record found in the spool, to send again; its place there is released once it is put.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) stored: Stored,
    pub(crate) tag: Tag,
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
    let mut ack_files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !entry.file_type()?.is_file() {
            continue;
        }
        if let Some(id) = segment_id(name) {
            ids.push((id, entry.path()));
        } else if name.starts_with("segment-") && name.ends_with(".acks") {
            ack_files.push(entry.path());
        }
    }
    ids.sort();
    // Ack files whose segment is gone (deleted between the two removals) go too.
    for path in ack_files {
        let id = path.file_name().and_then(|n| n.to_str()).and_then(|n| {
            n.strip_prefix("segment-")?
                .strip_suffix(".acks")?
                .parse::<u64>()
                .ok()
        });
        if !id.is_some_and(|id| ids.iter().any(|(i, _)| *i == id)) {
            std::fs::remove_file(&path)?;
        }
    }
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
                // Records whose resolution was acked are not sent again.
                let ack_path = dir.join(ack_name(id));
                let acked = match std::fs::read(&ack_path) {
                    Ok(bytes) => acks::read(&bytes),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
                    Err(e) => return Err(e),
                };
                let count = read.records.len();
                let left: Vec<(u32, Stored)> = (0u32..)
                    .zip(read.records)
                    .filter(|(i, _)| !acked.contains(i))
                    .collect();
                if left.is_empty() {
                    std::fs::remove_file(&path)?;
                    let _ = std::fs::remove_file(&ack_path);
                    continue;
                }
                let segment = Arc::new(Segment {
                    id,
                    live: AtomicUsize::new(left.len()),
                    bytes: AtomicU64::new(read.whole as u64),
                    records: AtomicU32::new(count as u32),
                    recovered: true,
                    shared: Arc::downgrade(shared),
                });
                found.used += read.whole as u64;
                found
                    .recovered
                    .extend(left.into_iter().map(|(index, stored)| Recovered {
                        stored,
                        tag: Tag {
                            segment: Arc::clone(&segment),
                            index,
                        },
                    }));
            }
            Some(damage) => {
                let aside = dir.join(CORRUPT);
                std::fs::create_dir_all(&aside)?;
                let moved = aside.join(segment_name(id));
                std::fs::rename(&path, &moved)?;
                // Its acks are moved with it: what was put already is not rescued again.
                let ack_path = dir.join(ack_name(id));
                let acked = std::fs::read(&ack_path)
                    .map(|bytes| acks::read(&bytes))
                    .unwrap_or_default();
                if ack_path.exists() {
                    std::fs::rename(&ack_path, aside.join(ack_name(id)))?;
                }
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
                found.rescued.extend(
                    (0u32..)
                        .zip(read.records)
                        .filter(|(i, _)| !acked.contains(i))
                        .map(|(_, stored)| stored),
                );
            }
        }
    }
    Ok(found)
}
