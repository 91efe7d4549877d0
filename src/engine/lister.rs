//! One listing at a time per stream for all of a producer's engine cores.
//!
//! Each core keeps its own shard map and asks for listings on its own schedule. Asked by N
//! cores at once, N listings would cost N ListShards and N DescribeStreamSummary calls, and
//! DescribeStreamSummary allows 20 a second per account: a producer on a 64-CPU machine would
//! throttle itself at its first listing. So a core that asks while a listing of the same stream
//! is under way waits for that one's answer instead of making its own. That answer may predate
//! what made the core ask; the core judges a listing as it judges any (a listing is always a
//! little old by the time it arrives) and asks again if Kinesis shows the map still stale.
//!
//! When records are routed by shard (no per-key ordering), each listing also makes the
//! stream's table of which core owns which shard (`part::Table`), which the producer's sends
//! read: routing follows the latest map any core has asked for.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use hashbrown::HashMap;
use tokio::sync::oneshot;

use super::core::{Listed, Table};

/// Each stream's table of shard owners, as the producer's sends read it.
pub(crate) type TableCell = Arc<ArcSwapOption<Table>>;

/// The streams being listed, each with the cores waiting for its answer.
pub(crate) struct Lister {
    listing: Mutex<HashMap<Arc<str>, Vec<oneshot::Sender<Listed>>>>,
    /// How many engine cores there are.
    of: usize,
    /// Each stream's table, when records are routed by shard.
    tables: Option<Mutex<HashMap<Arc<str>, TableCell>>>,
}

/// What a core asking for a listing does.
pub(crate) enum Turn {
    /// Make it, and hand the answer to [`Leading::finish`].
    Lead(Leading),
    /// Wait for the one under way (an error if its maker stopped without an answer).
    Follow(oneshot::Receiver<Listed>),
}

/// The right and the duty to answer the cores waiting on a stream's listing. Dropped without
/// [`finish`](Self::finish) (the engine stopped mid-listing), it lets them go with nothing, and
/// each retries as after a failed listing.
pub(crate) struct Leading {
    lister: Arc<Lister>,
    stream: Arc<str>,
    /// Answered: the waiting list is gone, and whatever stands under the stream's name now is
    /// a later listing's, not to be touched.
    finished: bool,
}

impl Lister {
    /// The lister of `of` engine cores; `by_shard`: records are routed by shard, and each
    /// listing updates its stream's table.
    pub(crate) fn new(of: usize, by_shard: bool) -> Self {
        Lister {
            listing: Mutex::new(HashMap::new()),
            of,
            tables: by_shard.then(|| Mutex::new(HashMap::new())),
        }
    }

    /// The table of `stream`'s shard owners (empty until its first listing), when records are
    /// routed by shard.
    pub(crate) fn table_for(&self, stream: &Arc<str>) -> Option<TableCell> {
        let tables = self.tables.as_ref()?;
        let mut tables = tables.lock().unwrap_or_else(|e| e.into_inner());
        Some(Arc::clone(tables.entry(Arc::clone(stream)).or_default()))
    }

    /// A listing of `stream` answered: its table follows the shards it found.
    fn publish(&self, stream: &Arc<str>, listed: &Listed) {
        let (Some(cell), Ok(shards)) = (self.table_for(stream), &listed.shards) else {
            return;
        };
        if let Some(table) = Table::from_listing(shards, self.of) {
            cell.store(Some(Arc::new(table)));
        }
    }

    /// Joins the listing of `stream` under way, or starts one.
    pub(crate) fn join(self: &Arc<Self>, stream: &Arc<str>) -> Turn {
        let mut listing = self.listing.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(waiting) = listing.get_mut(stream) {
            let (tx, rx) = oneshot::channel();
            waiting.push(tx);
            return Turn::Follow(rx);
        }
        listing.insert(Arc::clone(stream), Vec::new());
        Turn::Lead(Leading {
            lister: Arc::clone(self),
            stream: Arc::clone(stream),
            finished: false,
        })
    }

    fn take(&self, stream: &str) -> Vec<oneshot::Sender<Listed>> {
        let mut listing = self.listing.lock().unwrap_or_else(|e| e.into_inner());
        listing.remove(stream).unwrap_or_default()
    }
}

impl Leading {
    /// Hands `listed` to every core that waited for it (and the stream's table), and gives it
    /// back.
    pub(crate) fn finish(mut self, listed: Listed) -> Listed {
        self.finished = true;
        self.lister.publish(&self.stream, &listed);
        for tx in self.lister.take(&self.stream) {
            let _ = tx.send(listed.clone());
        }
        listed
    }
}

impl Drop for Leading {
    fn drop(&mut self) {
        // Not finished: the waiting senders are dropped, and each waiting core hears that the
        // listing ended without an answer. (Finished, the list was taken then; a listing
        // started since by another core stands under the name and is left alone.)
        if !self.finished {
            drop(self.lister.take(&self.stream));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(n: usize) -> Listed {
        Listed {
            shards: Ok(vec![
                crate::shard_map::Shard {
                    shard_id: format!("shardId-{n:012}"),
                    start: crate::hash_key::HashKey(0),
                    end: crate::hash_key::HashKey(u128::MAX),
                    closed: false,
                };
                1
            ]),
            record_limit: None,
        }
    }

    fn lead(t: Turn) -> Leading {
        match t {
            Turn::Lead(l) => l,
            Turn::Follow(_) => panic!("expected to lead"),
        }
    }

    fn follow(t: Turn) -> oneshot::Receiver<Listed> {
        match t {
            Turn::Follow(rx) => rx,
            Turn::Lead(_) => panic!("expected to follow"),
        }
    }

    #[test]
    fn cores_asking_together_share_one_listing() {
        let lister = Arc::new(Lister::new(2, false));
        let s: Arc<str> = Arc::from("s");
        let other: Arc<str> = Arc::from("other");
        let leader = lead(lister.join(&s));
        let mut a = follow(lister.join(&s));
        let mut b = follow(lister.join(&s));
        // Another stream is listed on its own.
        drop(lead(lister.join(&other)));
        let answer = leader.finish(listed(3));
        assert!(answer.shards.is_ok());
        for rx in [&mut a, &mut b] {
            let got = rx.try_recv().expect("the leader's answer");
            assert_eq!(got.shards.unwrap()[0].shard_id, "shardId-000000000003");
        }
        // Done: the next to ask leads a new listing.
        drop(lead(lister.join(&s)));
    }

    #[test]
    fn listings_one_after_another_each_answer_their_own_followers() {
        let lister = Arc::new(Lister::new(2, false));
        let s: Arc<str> = Arc::from("s");
        let first = lead(lister.join(&s));
        let answered = first.finish(listed(1));
        // A core starts the next listing, and another waits for it.
        let second = lead(lister.join(&s));
        let mut rx = follow(lister.join(&s));
        drop(answered);
        let _ = second.finish(listed(2));
        let got = rx.try_recv().expect("the second listing's answer");
        assert_eq!(got.shards.unwrap()[0].shard_id, "shardId-000000000002");
    }

    #[test]
    fn each_listing_makes_its_streams_table_of_shard_owners() {
        let lister = Arc::new(Lister::new(2, true));
        let s: Arc<str> = Arc::from("s");
        let cell = lister.table_for(&s).expect("routed by shard");
        assert!(cell.load().is_none(), "no table before the first listing");
        let q = 1u128 << 126;
        let shards = (0..4u128)
            .map(|i| crate::shard_map::Shard {
                shard_id: format!("shardId-{i:012}"),
                start: crate::hash_key::HashKey(i * q),
                end: crate::hash_key::HashKey(if i == 3 { u128::MAX } else { (i + 1) * q - 1 }),
                closed: false,
            })
            .collect();
        let leader = lead(lister.join(&s));
        let _ = leader.finish(Listed {
            shards: Ok(shards),
            record_limit: None,
        });
        let table = cell.load_full().expect("a table from the listing");
        let owners: Vec<usize> = (0..4).map(|i| table.core_of(i * q)).collect();
        assert_eq!(owners, [0, 0, 1, 1]);
        // A failed listing leaves the table as it was; keyed by part, there is none.
        let leader = lead(lister.join(&s));
        let _ = leader.finish(Listed {
            shards: Err(crate::sink::SinkError::new(
                "ListShards",
                "LimitExceededException",
                "slow down",
            )),
            record_limit: None,
        });
        assert_eq!(cell.load_full(), Some(table));
        assert!(Lister::new(2, false).table_for(&s).is_none());
    }

    #[test]
    fn followers_of_a_listing_dropped_unanswered_are_let_go() {
        let lister = Arc::new(Lister::new(2, false));
        let s: Arc<str> = Arc::from("s");
        let leader = lead(lister.join(&s));
        let mut rx = follow(lister.join(&s));
        drop(leader);
        assert!(matches!(
            rx.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        drop(lead(lister.join(&s)));
    }
}
