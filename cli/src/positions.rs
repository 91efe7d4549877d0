//! How far `kpl put --spool` has read each input file: saved in the spool directory once the
//! lines before it are durable in the spool, so that the same command run again after a crash
//! goes on from there (the spool sends what it held; the file gives the rest).
//!
//! A file is known by its identity on disk (device and inode), found by the path it was given
//! or, named otherwise (another working directory), by that identity: a different file at the
//! same path (rotated, replaced) is read from its start, with a message.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file the positions are kept in, in the spool directory.
pub const FILE: &str = "kpl-put-positions.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Position {
    dev: u64,
    ino: u64,
    /// The MD5 (hex) of the file's first `head_len` bytes when the position was saved: an inode
    /// number is reused as soon as a file is deleted, its first bytes are not.
    head: String,
    head_len: usize,
    /// Lines read and durable in the spool (blank and bad lines included).
    lines: usize,
}

/// How many of a file's first bytes tell it apart (as `kpl tail`'s fingerprints).
const HEAD: usize = 256;

/// The MD5 (hex) of the first `len` bytes of `path`, or `None` when it has fewer.
fn head(path: &Path, len: usize) -> std::io::Result<Option<String>> {
    use md5::{Digest, Md5};
    use std::io::Read;
    let mut bytes = Vec::with_capacity(len);
    std::fs::File::open(path)?
        .take(len as u64)
        .read_to_end(&mut bytes)?;
    Ok((bytes.len() == len).then(|| {
        Md5::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }))
}

/// The positions of a run's input files.
#[derive(Debug, Default)]
pub struct Positions {
    path: PathBuf,
    /// By the name `for_each_line_or_pause` gives a file (its path as written).
    saved: BTreeMap<String, Position>,
    /// What this run has read and handed to the spool, not yet saved.
    read: BTreeMap<String, Position>,
    /// The positions of files this run does not read: kept as they were.
    others: BTreeMap<String, Position>,
    /// Each file's path, by name.
    paths: BTreeMap<String, PathBuf>,
}

impl Positions {
    /// The positions saved in `spool` for `files`. A file whose identity changed starts over.
    ///
    /// # Errors
    /// A positions file that cannot be read or parsed, or an input file that cannot be
    /// looked at.
    pub fn load(spool: &Path, files: &[PathBuf]) -> Result<Positions, String> {
        let path = spool.join(FILE);
        let saved: BTreeMap<String, Position> = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let mut positions = Positions {
            path,
            saved: BTreeMap::new(),
            read: BTreeMap::new(),
            others: BTreeMap::new(),
            paths: BTreeMap::new(),
        };
        for file in files {
            let name = file.display().to_string();
            let meta = std::fs::metadata(file).map_err(|e| format!("{name}: {e}"))?;
            let here = Position {
                dev: meta.dev(),
                ino: meta.ino(),
                head: String::new(),
                head_len: 0,
                lines: 0,
            };
            let same = |p: &&Position| {
                (p.dev, p.ino) == (here.dev, here.ino)
                    && head(file, p.head_len).ok().flatten().as_deref() == Some(p.head.as_str())
            };
            // By its name, or by its identity when named otherwise (another working directory,
            // a link): the same file goes on where it stopped.
            let position = match saved.get(&name) {
                Some(p) if same(&p) => p.clone(),
                found => match saved.values().find(same) {
                    Some(p) => p.clone(),
                    None => {
                        if found.is_some() {
                            eprintln!(
                                "kpl put: {name} is not the file read before; reading it from its start"
                            );
                        }
                        here
                    }
                },
            };
            if position.lines > 0 {
                eprintln!(
                    "kpl put: {name}: going on after line {} (read by an earlier run)",
                    position.lines
                );
            }
            positions.saved.insert(name.clone(), position.clone());
            positions.read.insert(name.clone(), position);
            positions.paths.insert(name, file.clone());
        }
        positions.others = saved
            .into_iter()
            .filter(|(name, _)| !positions.read.contains_key(name))
            .collect();
        Ok(positions)
    }

    /// Whether line `number` (from 1) of `source` was read by an earlier run.
    pub fn done(&self, source: &str, number: usize) -> bool {
        self.saved.get(source).is_some_and(|p| number <= p.lines)
    }

    /// Lines of `source` up to `number` are handed to the spool.
    pub fn read(&mut self, source: &str, number: usize) {
        if let Some(p) = self.read.get_mut(source) {
            p.lines = p.lines.max(number);
        }
    }

    /// Whether there is something read and not saved.
    pub fn unsaved(&self) -> bool {
        self.read != self.saved
    }

    /// Saves what was read, once the spool has made it durable (the caller syncs first):
    /// written to a temporary file, synced, renamed over the old one, and the directory synced.
    ///
    /// # Errors
    /// Writing fails.
    pub fn save(&mut self) -> std::io::Result<()> {
        for (name, position) in &mut self.read {
            if position.lines > 0
                && position.head_len < HEAD
                && let Some(path) = self.paths.get(name)
            {
                // The first bytes as far as they go now (up to HEAD), taken once they are there.
                let len = std::fs::metadata(path)?.len().min(HEAD as u64) as usize;
                if len > position.head_len
                    && let Some(h) = head(path, len)?
                {
                    position.head = h;
                    position.head_len = len;
                }
            }
        }
        let tmp = self.path.with_extension("json.tmp");
        let mut all = self.others.clone();
        all.extend(self.read.iter().map(|(k, v)| (k.clone(), v.clone())));
        let bytes = serde_json::to_vec_pretty(&all).map_err(std::io::Error::other)?;
        let mut file = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut file, &bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        self.saved = self.read.clone();
        Ok(())
    }
}
