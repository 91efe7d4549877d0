//! Many records at once: `send_all` and its waiting forms, and the admission of a batch into
//! the buffer, the spool and the engine as room allows.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Producer;
use super::StreamEntry;
use super::spooling::is_spool_full;
use crate::budget::charge;
use crate::engine::{Batch, BatchFuture, Pending};
use crate::outcome::PutErrorKind;
use crate::record::UserRecord;
use crate::spool::{Spool, Tag};

impl Producer {
    /// Sends many records to `stream` at once: as [`send`](Self::send) for each, in order,
    /// but the batch shares one message to the engine, one reservation of the buffer and one
    /// future, woken once, when the last record has resolved; the future gives each record's
    /// outcome in the order the records were given. For callers that have many records at
    /// hand (batch jobs, `kpl put`, the Python `put_many`). Never blocks and never waits.
    ///
    /// Records that do not fit in the buffer (`MaxBufferedRecords`, `MaxBufferedBytes`) are
    /// refused as [`PutErrorKind::BufferFull`], each with its record, and the others are sent:
    /// [`send_all_wait`](Self::send_all_wait) and
    /// [`send_all_blocking`](Self::send_all_blocking) wait for room instead.
    ///
    /// ```
    /// # use kinesis_producer::{Config, Producer, UserRecord};
    /// # use kinesis_producer::sink::memory::MemorySink;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let producer = Producer::with_sink(Config::default(), MemorySink::new().with_stream("s", 2));
    /// let records = (0..100).map(|i| UserRecord::new(format!("key-{i}"), format!("event {i}")).unwrap());
    /// let outcomes = producer.send_all("s", records).await;
    /// assert_eq!(outcomes.len(), 100);
    /// assert!(outcomes.iter().all(|o| o.is_ok()));
    /// # }
    /// ```
    pub fn send_all(
        &self,
        stream: &str,
        records: impl IntoIterator<Item = UserRecord>,
    ) -> BatchFuture {
        let mut batch = self.admitting(stream, records, Spooling::Append);
        // `None`: everything was taken, and nothing is left to refuse.
        let refusal = self.admit(&mut batch).unwrap_or(PutErrorKind::Closed);
        batch.future(refusal)
    }

    /// As [`send_all`](Self::send_all), but waits for room in the buffer for the records that do
    /// not fit at once, sending them as room is released (a batch larger than the whole buffer
    /// goes in as it drains).
    ///
    /// # Cancellation
    /// Dropping the future before it completes gives up the wait: the records accepted so far
    /// are sent (their outcomes are not reported), the others are dropped with the future.
    pub async fn send_all_wait(
        &self,
        stream: &str,
        records: impl IntoIterator<Item = UserRecord>,
    ) -> BatchFuture {
        self.send_all_waiting(self.admitting(stream, records, Spooling::Append))
            .await
    }

    /// Sends `batch`, waiting for room in the buffer and the spool.
    async fn send_all_waiting(&self, mut batch: Admitting) -> BatchFuture {
        let closed = || self.inner.closed.load(Ordering::Acquire);
        let refusal = loop {
            match self.admit_or_wait(&mut batch) {
                Wait::Done(kind) => break kind,
                Wait::Spool(spool, len) => spool.wait_room(len, closed).await,
                Wait::Budget(next) => {
                    let room = self.inner.budget.reserve(charge(&next), closed).await;
                    if !batch.waited(next, room) {
                        break PutErrorKind::Closed;
                    }
                }
            }
        };
        batch.future(refusal)
    }

    /// As [`send_all_wait`](Self::send_all_wait), blocking the calling thread while the buffer is
    /// full: for callers outside an async runtime (do not call it from an async task).
    pub fn send_all_blocking(
        &self,
        stream: &str,
        records: impl IntoIterator<Item = UserRecord>,
    ) -> BatchFuture {
        let closed = || self.inner.closed.load(Ordering::Acquire);
        let mut batch = self.admitting(stream, records, Spooling::Append);
        let refusal = loop {
            match self.admit_or_wait(&mut batch) {
                Wait::Done(kind) => break kind,
                Wait::Spool(spool, len) => spool.wait_room_blocking(len, closed),
                Wait::Budget(next) => {
                    let room = self.inner.budget.reserve_blocking(charge(&next), closed);
                    if !batch.waited(next, room) {
                        break PutErrorKind::Closed;
                    }
                }
            }
        };
        batch.future(refusal)
    }

    /// Admits what fits of `batch`, and says what to wait for before the rest.
    fn admit_or_wait(&self, batch: &mut Admitting) -> Wait {
        match self.admit(batch) {
            // Everything admitted: nothing is left for the refusal to apply to.
            None => Wait::Done(PutErrorKind::Closed),
            Some(kind) if is_spool_full(&kind) => {
                match (&self.inner.spool, batch.rest.as_slice().first()) {
                    _ if self.inner.closed.load(Ordering::Acquire) => {
                        Wait::Done(PutErrorKind::Closed)
                    }
                    (Some(spool), Some(next)) => {
                        Wait::Spool(Arc::clone(spool), spool.frame_len(&batch.stream, next))
                    }
                    _ => Wait::Done(kind),
                }
            }
            Some(PutErrorKind::BufferFull { .. }) => match batch.rest.next() {
                Some(next) => Wait::Budget(next),
                None => Wait::Done(PutErrorKind::Closed),
            },
            Some(kind) => Wait::Done(kind),
        }
    }

    /// Records found in the spool when it was opened, sent again: as `send_all_wait`, without
    /// appending them to the spool again (they are in it already, in `tags`' segments, one per
    /// record).
    pub(crate) async fn send_recovered(
        &self,
        stream: &str,
        records: Vec<UserRecord>,
        tags: Vec<Tag>,
    ) -> BatchFuture {
        let batch = self.admitting(stream, records, Spooling::Recovered(tags.into()));
        self.send_all_waiting(batch).await
    }

    /// As [`send_recovered`](Self::send_recovered), without waiting: what does not fit is
    /// refused as buffer full.
    pub(crate) fn send_recovered_now(
        &self,
        stream: &str,
        records: Vec<UserRecord>,
        tags: Vec<Tag>,
    ) -> BatchFuture {
        let mut batch = self.admitting(stream, records, Spooling::Recovered(tags.into()));
        let refusal = self.admit(&mut batch).unwrap_or(PutErrorKind::Closed);
        batch.future(refusal)
    }

    /// A batch to admit as room allows.
    fn admitting(
        &self,
        stream: &str,
        records: impl IntoIterator<Item = UserRecord>,
        spool: Spooling,
    ) -> Admitting {
        let entry = self.stream_entry(stream);
        let records: Vec<UserRecord> = records.into_iter().collect();
        Admitting {
            stream: Arc::clone(&entry.name),
            entry,
            batch: Batch::new(records.len()),
            rest: records.into_iter(),
            reserved: Vec::new(),
            spool,
        }
    }

    /// Hands the engine, in one message, the records whose room is reserved already and as
    /// many of the records not yet admitted as there is room for (in the buffer, then in the
    /// spool): the room of all of them at once when it is there, else of each in turn until
    /// one does not fit. Returns why the rest was not taken: the buffer or spool is full, the
    /// producer is closed, the spool fails; `None` when everything was. Entries the engine
    /// cannot take (it stopped) resolve as stopped.
    fn admit(&self, a: &mut Admitting) -> Option<PutErrorKind> {
        let Admitting {
            stream,
            entry,
            batch,
            rest,
            reserved,
            spool,
        } = a;
        if let Some(kind) = self.refusal() {
            if !reserved.is_empty() {
                let bytes = reserved.iter().map(charge).sum();
                self.inner.budget.release(reserved.len(), bytes);
                for record in reserved.drain(..) {
                    batch.refuse(kind.clone(), record);
                }
            }
            return Some(kind).filter(|_| rest.len() > 0);
        }
        let all: usize = rest.as_slice().iter().map(charge).sum();
        let mut fit = 0;
        let mut refusal = None;
        if self.inner.budget.try_reserve_many(rest.len(), all) {
            fit = rest.len();
        } else {
            while let Some(next) = rest.as_slice().get(fit)
                && self.inner.budget.try_reserve(charge(next))
            {
                fit += 1;
            }
            refusal = Some(self.full_kind());
        }
        let mut records = std::mem::take(reserved);
        records.extend(rest.by_ref().take(fit));
        let tags;
        if let Spooling::Recovered(recovered) = spool {
            // One tag a record, in the order they leave `rest`.
            tags = Some(
                records
                    .iter()
                    .map(|_| {
                        recovered
                            .pop_front()
                            .expect("a tag for each recovered record")
                    })
                    .collect(),
            );
        } else {
            let (appended, refused) = self.spool_many(stream, &records);
            if let Some(kind) = refused {
                // What the spool did not take goes back in front of the rest, its room given
                // back; the records before it go on.
                let taken = appended.as_ref().map_or(0, Vec::len);
                let back: Vec<UserRecord> = records.drain(taken..).collect();
                let bytes = back.iter().map(charge).sum();
                self.inner.budget.release(back.len(), bytes);
                let again: Vec<UserRecord> = back.into_iter().chain(rest.by_ref()).collect();
                *rest = again.into_iter();
                refusal = Some(kind);
            }
            tags = appended;
        }
        if !records.is_empty() {
            let entries: Vec<Pending> = match tags {
                Some(tags) => records
                    .into_iter()
                    .zip(tags)
                    .map(|(r, tag)| batch.entry(r).spooled(tag))
                    .collect(),
                None => records.into_iter().map(|r| batch.entry(r)).collect(),
            };
            self.inner.dispatch(entry, entries);
        }
        refusal.filter(|_| rest.len() > 0)
    }
}

/// A batch admitted as room is released: what is not admitted yet, and the entries whose room
/// is reserved, to go in the next message.
struct Admitting {
    stream: Arc<str>,
    entry: StreamEntry,
    batch: Batch,
    rest: std::vec::IntoIter<UserRecord>,
    /// Records whose room in the buffer is reserved, to go in the next message.
    reserved: Vec<UserRecord>,
    /// What the spool does with them.
    spool: Spooling,
}

/// What the spool does with a batch's records.
enum Spooling {
    /// Append them (when there is a spool).
    Append,
    /// Nothing: they come from it, each with its place there (in the order of the records).
    Recovered(std::collections::VecDeque<Tag>),
}

impl Admitting {
    /// After waiting for room for `next`: `room` says whether it was reserved (else the
    /// producer closed meanwhile and the record is refused). Returns whether to go on.
    fn waited(&mut self, next: UserRecord, room: bool) -> bool {
        if room {
            self.reserved.push(next);
        } else {
            self.batch.refuse(PutErrorKind::Closed, next);
        }
        room
    }

    /// The batch's future; what is left unadmitted is refused as `refusal`.
    fn future(mut self, refusal: PutErrorKind) -> BatchFuture {
        for record in self.rest {
            self.batch.refuse(refusal.clone(), record);
        }
        self.batch.future(self.stream)
    }
}

/// What a waiting batch waits for next.
enum Wait {
    /// Nothing: the rest is refused for this reason (or nothing is left).
    Done(PutErrorKind),
    /// Room for a frame of this many bytes in the spool.
    Spool(Arc<Spool>, u64),
    /// Room in the buffer for this record.
    Budget(UserRecord),
}
