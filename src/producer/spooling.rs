//! The spool as the producer uses it: appending what is sent, syncing, and what the task that
//! sends again what an earlier producer left needs of the producer.

use std::sync::Arc;

use super::{Inner, Producer};
use crate::config::Config;
use crate::outcome::PutErrorKind;
use crate::record::UserRecord;
use crate::spool::{Recovered, Spool, SpoolError, SpoolStats, Tag};

impl Producer {
    /// Appends `records` to the spool, if there is one: their tags (`None` without a spool),
    /// as many as it took, and why it refused the rest.
    pub(super) fn spool_many(
        &self,
        stream: &str,
        records: &[UserRecord],
    ) -> (Option<Vec<Tag>>, Option<PutErrorKind>) {
        if let Some(e) = &self.inner.spool_failed {
            return (Some(Vec::new()), Some(PutErrorKind::Spool(e.clone())));
        }
        match &self.inner.spool {
            None => (None, None),
            Some(spool) => {
                let (tags, refused) = spool.append(stream, records);
                (Some(tags), refused.map(PutErrorKind::Spool))
            }
        }
    }

    /// Appends one record to the spool, if there is one.
    pub(super) fn spool_one(
        &self,
        stream: &str,
        record: &UserRecord,
    ) -> Result<Option<Tag>, PutErrorKind> {
        if let Some(e) = &self.inner.spool_failed {
            return Err(PutErrorKind::Spool(e.clone()));
        }
        match &self.inner.spool {
            None => Ok(None),
            Some(spool) => spool
                .append_one(stream, record)
                .map(Some)
                .map_err(PutErrorKind::Spool),
        }
    }

    /// Waits until every record sent before this call is durable in the spool: from then on it
    /// survives `kill -9` of the process, a panic, or power loss of a machine whose disk
    /// honours `fdatasync` (see `docs/delivery.md`, "The spool"). Without waiting for this,
    /// a record is made durable within `SpoolSyncInterval`.
    ///
    /// # Errors
    /// [`SpoolError::NotConfigured`] without a spool; the spool's error if writing it fails
    /// meanwhile (the records sent before are then not known to be durable) or it could not be
    /// opened; [`SpoolError::Closed`] after shutdown.
    ///
    /// # Cancellation
    /// Dropping the future stops the waiting only: the records are made durable regardless.
    pub async fn sync_spool(&self) -> Result<(), SpoolError> {
        match (&self.inner.spool, &self.inner.spool_failed) {
            (Some(spool), _) => spool.sync().await,
            (None, Some(e)) => Err(e.clone()),
            (None, None) => Err(SpoolError::NotConfigured),
        }
    }

    /// As [`sync_spool`](Self::sync_spool), blocking the calling thread: for callers outside an
    /// async runtime (do not call it from an async task).
    ///
    /// # Errors
    /// As [`sync_spool`](Self::sync_spool).
    pub fn sync_spool_blocking(&self) -> Result<(), SpoolError> {
        match (&self.inner.spool, &self.inner.spool_failed) {
            (Some(spool), _) => spool.sync_blocking(),
            (None, Some(e)) => Err(e.clone()),
            (None, None) => Err(SpoolError::NotConfigured),
        }
    }

    /// What the spool has done since it was opened (records recovered and put again, bytes
    /// written, syncs, segments deleted or found damaged); `None` without a spool.
    pub fn spool_stats(&self) -> Option<SpoolStats> {
        self.inner.spool.as_ref().map(|s| s.stats())
    }

    /// The spool, for the task that sends again what it held.
    pub(crate) fn spool(&self) -> Option<&Arc<Spool>> {
        self.inner.spool.as_ref()
    }

    /// A handle that does not keep the producer alive.
    pub(crate) fn downgrade(&self) -> std::sync::Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    /// The producer of a handle from [`downgrade`](Self::downgrade), if it is still alive.
    pub(crate) fn upgrade(weak: &std::sync::Weak<Inner>) -> Option<Producer> {
        weak.upgrade().map(|inner| Producer { inner })
    }

    /// The runtime the producer's tasks run on.
    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        &self.inner.handle
    }
}

/// Whether a refusal is the spool being full, which a waiting send waits out.
pub(super) fn is_spool_full(kind: &PutErrorKind) -> bool {
    matches!(kind, PutErrorKind::Spool(SpoolError::Full { .. }))
}

/// Opens the spool `config` asks for, if any.
pub(super) fn open_spool(config: &Config) -> Option<Result<(Spool, Vec<Recovered>), SpoolError>> {
    config.spool.clone().map(crate::spool::open)
}
