//! The admission policy on the table alone: who is evicted, who is refused, and the counts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use futures_lite::future;
use futures_lite::io::AsyncWriteExt;

use super::*;

fn peer(host: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)), port)
}

fn admission(max: usize, per_source: usize) -> (Arc<Admission>, Arc<ServerStats>) {
    let stats = Arc::new(ServerStats::default());
    (
        Arc::new(Admission::new(max, per_source, stats.clone())),
        stats,
    )
}

/// Admits `peer`; returns its ticket and whom it evicted.
fn admit(a: &Arc<Admission>, peer: SocketAddr) -> (Ticket, Option<SocketAddr>) {
    match a.admit(peer, None, Instant::now()) {
        Admit::Admitted { ticket, evicted } => (ticket, evicted),
        Admit::Refused(cap) => panic!("{peer} refused by {cap:?}"),
    }
}

/// Answers the hello, as the handshake's first write does.
fn answer_hello(ticket: &Ticket) {
    let mut w = HelloWatch::new(futures_lite::io::sink(), ticket.progress.clone());
    future::block_on(w.write_all(b"server hello")).unwrap();
}

fn was_evicted(ticket: &Ticket) -> bool {
    future::block_on(future::poll_once(ticket.evicted())).is_some()
}

#[test]
fn a_source_at_its_cap_evicts_its_own_oldest_without_a_hello() {
    let (a, stats) = admission(100, 3);
    let (first, _) = admit(&a, peer(1, 1));
    let (second, _) = admit(&a, peer(1, 2));
    let (third, _) = admit(&a, peer(1, 3));
    answer_hello(&first);
    // The oldest has its hello answered: the next oldest goes.
    let (fourth, evicted) = admit(&a, peer(1, 4));
    assert_eq!(evicted, Some(peer(1, 2)));
    assert!(was_evicted(&second));
    assert!(!was_evicted(&first) && !was_evicted(&third));
    // Another source is not touched by this one's cap.
    let (_other, evicted) = admit(&a, peer(2, 1));
    assert_eq!(evicted, None);
    // Every one of the source's connections past its hello: the new one is refused.
    answer_hello(&third);
    answer_hello(&fourth);
    assert!(matches!(
        a.admit(peer(1, 5), None, Instant::now()),
        Admit::Refused(Cap::PerSource)
    ));
    let now = stats.snapshot();
    assert_eq!((now.unauthenticated, now.evicted), (4, 1));
    drop((first, second, third, fourth));
    assert_eq!(stats.snapshot().unauthenticated, 1);
}

#[test]
fn a_full_table_evicts_from_the_biggest_source_and_struck_sources_first() {
    let (a, stats) = admission(4, 4);
    let (f1, _) = admit(&a, peer(2, 1));
    let (c1, _) = admit(&a, peer(1, 1));
    let (f2, _) = admit(&a, peer(2, 2));
    let (f3, _) = admit(&a, peer(2, 3));
    // The flood's source holds three: its oldest goes, not the older client.
    let (n1, evicted) = admit(&a, peer(3, 1));
    assert_eq!(evicted, Some(peer(2, 1)));
    assert!(was_evicted(&f1) && !was_evicted(&c1));
    // A struck source goes first even when it holds fewer.
    a.strike(peer(3, 9), Instant::now());
    let (_n2, evicted) = admit(&a, peer(4, 1));
    assert_eq!(evicted, Some(peer(3, 1)));
    assert!(was_evicted(&n1));
    // Nothing evictable: refused.
    for t in [&c1, &f2, &f3, &_n2] {
        answer_hello(t);
    }
    assert!(matches!(
        a.admit(peer(5, 1), None, Instant::now()),
        Admit::Refused(Cap::Total)
    ));
    assert_eq!(stats.snapshot().evicted, 2);
}

#[test]
fn a_thousand_idle_from_one_source_leave_the_newest_and_the_client_stays() {
    let (a, stats) = admission(100, 16);
    let mut flood: Vec<Ticket> = (0..1000).map(|p| admit(&a, peer(1, p)).0).collect();
    let (client, _) = admit(&a, peer(1, 5000));
    answer_hello(&client);
    flood.extend((1000..2000).map(|p| admit(&a, peer(1, p)).0));
    assert!(!was_evicted(&client));
    assert_eq!(stats.snapshot().unauthenticated, 16);
    assert_eq!(flood.iter().filter(|t| !was_evicted(t)).count(), 15);
}
