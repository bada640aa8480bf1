//! Admission of connections that have not authenticated yet, so that idle or slow peers
//! cannot lock real clients out (issue 20, robustness case 39).
//!
//! Every accepted connection holds a [`Ticket`] in one table until its client's proof is
//! checked. A new connection from source S (an IPv4 address or an IPv6 /64) is handled so:
//!
//! 1. S has `max_unauthenticated_per_source` connections in the table: S's oldest connection
//!    whose hello has not been answered is evicted (told `Busy`, closed) and the new one takes
//!    its place; if every one of S's is past its hello, the new one is refused `Busy`.
//!    A connection whose client's bytes wait unread in its socket is not evicted: its client
//!    is not idle, the server is behind (a burst of connects accepted before any of their
//!    hellos was read). While such connections stand in the way, the new one is admitted over
//!    the cap; their hellos are answered within moments, and the cap holds again. The same
//!    holds for the table's cap below.
//! 2. The table holds `max_unauthenticated`: one connection whose hello has not been answered
//!    is evicted, from the source with the most strikes (its connections missed a handshake
//!    deadline or sent a malformed hello lately, [`strikes`]), then from the source with the
//!    most connections in the table, then the oldest; if every one is past its hello, the new
//!    one is refused `Busy`.
//! 3. Otherwise it is admitted.
//!
//! Each client step has a deadline (`hello_timeout`: the hello after the accept, the proof
//! after the hello's answer), so a connection past its hello holds its place only briefly.
//! Together: a flood from another source fills only its own per-source share; a flood from
//! the real client's own source is evicted oldest first, and the real client, whose hello is
//! answered within a round trip of its connect, is then never evicted; an attacker that
//! reconnects fast only churns its own source's places. Only failed proofs get a source
//! refused (`penalty.rs`).

mod progress;
mod source;
mod strikes;

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use async_channel::{Receiver, Sender};
use async_io::Async;
use futures_lite::future;

pub(crate) use self::progress::{HelloWatch, Progress, Stall};
use self::source::Source;
use self::strikes::Strikes;
use crate::stats::ServerStats;

/// The table of unauthenticated connections and its caps.
#[derive(Debug)]
pub(crate) struct Admission {
    /// `max_unauthenticated`.
    max: usize,
    /// `max_unauthenticated_per_source`.
    per_source: usize,
    /// Its `unauthenticated` gauge is the table's size; `evicted` counts evictions.
    stats: Arc<ServerStats>,
    /// The connections and the strikes.
    table: Mutex<Table>,
}

/// What becomes of a new connection.
#[derive(Debug)]
pub(crate) enum Admit {
    /// Admitted; it took the place of `evicted`, if that is set.
    Admitted {
        /// Held by the connection until its proof is checked.
        ticket: Ticket,
        /// The peer of the connection evicted to make room.
        evicted: Option<SocketAddr>,
    },
    /// Refused: this cap is full of connections past their hello.
    Refused(Cap),
}

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cap {
    /// `max_unauthenticated_per_source`.
    PerSource,
    /// `max_unauthenticated`.
    Total,
}

/// A connection in the table.
#[derive(Debug)]
struct Entry {
    /// Its peer, for the log.
    peer: SocketAddr,
    /// Its source.
    source: Source,
    /// How far its handshake has got.
    progress: Arc<Progress>,
    /// Sending on it evicts the connection.
    evict: Sender<()>,
    /// Its socket, to see whether its client's bytes wait unread (`None` in unit tests).
    socket: Option<Arc<Async<TcpStream>>>,
}

impl Entry {
    /// Whether it may be evicted: its hello is not answered yet, and no bytes from its client
    /// wait unread. A connection whose hello arrived while the server was busy accepting
    /// others (a burst of connects from one client) is making progress, not idling.
    fn evictable(&self) -> bool {
        !self.progress.hello_answered() && !self.has_unread_input()
    }

    /// Whether its client's bytes wait in the socket, not read yet.
    fn has_unread_input(&self) -> bool {
        self.socket
            .as_ref()
            .is_some_and(|s| matches!(s.get_ref().peek(&mut [0u8; 1]), Ok(n) if n > 0))
    }
}

/// The unauthenticated connections, oldest first, and the strikes.
#[derive(Debug, Default)]
struct Table {
    /// Connections by admission number: iteration goes oldest first.
    entries: BTreeMap<u64, Entry>,
    /// Connections in `entries` by source.
    per_source: HashMap<Source, usize>,
    /// Admission number of the next connection.
    next: u64,
    /// Recent handshake failures by source.
    strikes: Strikes,
}

impl Table {
    fn count(&self, source: Source) -> usize {
        self.per_source.get(&source).copied().unwrap_or(0)
    }

    /// The connection to evict for a new one from `source`: `Ok(None)` if there is room.
    fn victim(
        &self,
        source: Source,
        max: usize,
        per_source: usize,
        now: Instant,
    ) -> Result<Option<u64>, Cap> {
        let unanswered = self
            .entries
            .iter()
            .filter(|(_, e)| !e.progress.hello_answered());
        if self.count(source) >= per_source {
            let mut backlog = false;
            for (id, entry) in unanswered.filter(|(_, e)| e.source == source) {
                if !entry.has_unread_input() {
                    return Ok(Some(*id));
                }
                backlog = true;
            }
            // Hellos wait unread: the server is behind, not the clients. They are answered
            // within moments, after which the cap holds again.
            return if backlog {
                Ok(None)
            } else {
                Err(Cap::PerSource)
            };
        }
        if self.entries.len() >= max {
            let mut candidates: Vec<_> = unanswered
                .map(|(id, e)| {
                    let strikes = self.strikes.get(e.source, now);
                    ((strikes, self.count(e.source), Reverse(*id)), e)
                })
                .collect();
            candidates.sort_unstable_by_key(|(rank, _)| Reverse(*rank));
            let backlog = !candidates.is_empty();
            return match candidates.into_iter().find(|(_, e)| e.evictable()) {
                Some(((_, _, Reverse(id)), _)) => Ok(Some(id)),
                None if backlog => Ok(None),
                None => Err(Cap::Total),
            };
        }
        Ok(None)
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.entries.remove(&id)?;
        if let Some(n) = self.per_source.get_mut(&entry.source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&entry.source);
            }
        }
        Some(entry)
    }

    fn insert(&mut self, entry: Entry) -> u64 {
        let id = self.next;
        self.next += 1;
        *self.per_source.entry(entry.source).or_insert(0) += 1;
        self.entries.insert(id, entry);
        id
    }
}

impl Admission {
    /// An empty table with these caps, counting into `stats`.
    pub(crate) fn new(max: usize, per_source: usize, stats: Arc<ServerStats>) -> Self {
        Admission {
            max,
            per_source,
            stats,
            table: Mutex::new(Table::default()),
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // A panic while holding this lock leaves only counts behind: keep using them.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a connection from `peer` at `now`, evicting another if a cap is full (see the
    /// module doc), or refuses it.
    pub(crate) fn admit(
        self: &Arc<Self>,
        peer: SocketAddr,
        socket: Option<Arc<Async<TcpStream>>>,
        now: Instant,
    ) -> Admit {
        let source = Source::of(peer.ip());
        let mut table = self.table();
        let evicted = match table.victim(source, self.max, self.per_source, now) {
            Err(cap) => return Admit::Refused(cap),
            Ok(None) => None,
            Ok(Some(id)) => table.remove(id).map(|victim| {
                // Never fails: the connection holds the receiver, and this is the one send.
                let _ = victim.evict.try_send(());
                self.stats.unauthenticated.fetch_sub(1, Ordering::Relaxed);
                self.stats.evicted.fetch_add(1, Ordering::Relaxed);
                victim.peer
            }),
        };
        let progress = Arc::new(Progress::new(now));
        let (evict, evicted_rx) = async_channel::bounded(1);
        let id = table.insert(Entry {
            peer,
            source,
            progress: progress.clone(),
            evict,
            socket,
        });
        self.stats.unauthenticated.fetch_add(1, Ordering::Relaxed);
        let ticket = Ticket {
            admission: self.clone(),
            id,
            progress,
            evicted: evicted_rx,
        };
        Admit::Admitted { ticket, evicted }
    }

    /// Counts a strike against the source of `peer`: one of its connections missed a
    /// handshake deadline or sent a malformed hello.
    pub(crate) fn strike(&self, peer: SocketAddr, now: Instant) {
        self.table().strikes.record(Source::of(peer.ip()), now);
    }

    fn leave(&self, id: u64) {
        if self.table().remove(id).is_some() {
            self.stats.unauthenticated.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A connection's place in the table; dropping it (once the proof is checked, or when the
/// handshake ends) gives the place up.
#[derive(Debug)]
pub(crate) struct Ticket {
    /// The table.
    admission: Arc<Admission>,
    /// Admission number.
    id: u64,
    /// How far the handshake has got, shared with the table.
    pub(crate) progress: Arc<Progress>,
    /// Receives once if the connection is evicted.
    evicted: Receiver<()>,
}

impl Ticket {
    /// Completes if the connection is evicted; never, once it has left the table otherwise.
    pub(crate) fn evicted(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let evicted = self.evicted.clone();
        async move {
            if evicted.recv().await.is_err() {
                future::pending::<()>().await;
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.leave(self.id);
    }
}

#[cfg(test)]
mod tests;
