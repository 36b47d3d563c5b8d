//! The peer's Outdated mark in the lease item, against a real moto server (pinned venv from
//! tests/support/moto-venv.sh): the conditional mark and clear, the gate, and the promotion check on what was read.

#[path = "support/lease_table.rs"]
mod lease_table;
#[path = "support/moto.rs"]
mod moto;

use lease_table::{TABLE, client, create_table, me};

use moto::Moto;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use tandem_runtime::membership::lease::{Acquire, Lease, LeaseStore, OutdatedMark};
use tandem_runtime::mirror::generations::GenState;
use tandem_runtime::mirror::meta::{DEFAULT_GRANULARITY, Meta, SharedMeta};
use tandem_runtime::mirror::outdated::{LeaseOutdatedGate, TokenSource, promotion_check};
use tandem_runtime::mirror::replication::{PeerLossGate, ReplicatedStore, ReplicationConfig};
use tandem_runtime::mirror::store::{BlockStore, FileStore};
use tandem_runtime::mirror::superblock::{DiskState, Role};

const TTL: Duration = Duration::from_millis(1000);
/// Resource names may contain `-` and `.`: they travel as expression attribute names.
const RES: &str = "db-disk.v1";

async fn acquire(store: &LeaseStore, group: &str, node: &str) -> Lease {
    match store.acquire(group, &me(node), TTL).await.expect("acquire") {
        Acquire::Acquired(l) => l,
        other => panic!("expected Acquired, got {other:?}"),
    }
}

async fn moto_store() -> (Moto, Client, Arc<LeaseStore>) {
    let moto = Moto::start();
    let c = client(&moto.endpoint()).await;
    create_table(&c).await;
    let store = Arc::new(LeaseStore::new(c.clone(), TABLE));
    (moto, c, store)
}

fn uptodate(current: u64) -> GenState {
    GenState { current, history: [0x11, 0, 0, 0], bitmap_uuid: 0x11, disk: DiskState::UpToDate, role: Role::Secondary }
}

// Generations used below differ in their high bits, so a store that compared them as floating-point numbers
// would still tell them apart; the store keeps them as exact hex strings anyway.
const G1: u64 = 0xfedc_ba98_7654_3210;
const G2: u64 = 0x0123_4567_89ab_cdef;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holder_marks_the_peer_and_a_deposed_holder_cannot() {
    let (_moto, _c, store) = moto_store().await;
    let lease = acquire(&store, "g1", "a").await;
    let before = store.read("g1").await.expect("read").expect("item");
    assert!(before.outdated.is_empty(), "no marks before any");

    // The holder marks b: read back; marking again is idempotent; a second resource gets its own key.
    store.mark_outdated("g1", RES, "b", G1, "a", lease.token).await.expect("mark");
    store.mark_outdated("g1", RES, "b", G1, "a", lease.token).await.expect("mark again");
    store.mark_outdated("g1", "logs", "b", G2, "a", lease.token).await.expect("mark another resource");
    let rec = store.read("g1").await.expect("read").expect("item");
    let want = OutdatedMark { node: "b".into(), generation: G1, by: "a".into(), token: lease.token };
    assert_eq!(rec.outdated_mark(RES), Some(&want));
    assert_eq!(rec.outdated_mark("logs").map(|m| m.generation), Some(G2));
    assert_eq!(rec.outdated.len(), 2);
    assert!(rec.version > before.version, "marks bump the version like every write");
    assert_eq!(rec.holder.as_ref().map(|h| h.node.as_str()), Some("a"), "the mark leaves the lease alone");
    assert_eq!(rec.token, lease.token);
    // The renewal still works and returns the marks.
    let renewed = store.renew("g1", "a", lease.token).await.expect("renew");
    assert_eq!(renewed.outdated_mark(RES), Some(&want));

    // A wrong token, another node, or a group nobody holds: refused, nothing written.
    let e = store.mark_outdated("g1", RES, "b", G2, "a", lease.token + 1).await.expect_err("wrong token");
    assert_eq!(e.code(), "TDM-LEASE-002", "{e}");
    let e = store.mark_outdated("g1", RES, "a", G2, "b", lease.token).await.expect_err("not the holder");
    assert_eq!(e.code(), "TDM-LEASE-002", "{e}");
    let e = store.mark_outdated("nobody", RES, "b", G2, "a", 1).await.expect_err("no item");
    assert_eq!(e.code(), "TDM-LEASE-002", "{e}");
    assert!(store.read("nobody").await.expect("read").is_none(), "a refused mark creates no item");
    let e = store.mark_outdated("g1", RES, "a", G2, "a", lease.token).await.expect_err("self");
    assert_eq!(e.code(), "TDM-LEASE-011", "{e}");
    let e = store.mark_outdated("g1", "", "b", G2, "a", lease.token).await.expect_err("empty resource");
    assert_eq!(e.code(), "TDM-LEASE-011", "{e}");
    assert_eq!(store.read("g1").await.expect("read").expect("item").outdated_mark(RES), Some(&want));

    // b takes the lease over (a released it): a, deposed, can no longer mark with its old token.
    store.release("g1", "a", lease.token).await.expect("release");
    let b_lease = acquire(&store, "g1", "b").await;
    assert!(b_lease.token > lease.token);
    let e = store.mark_outdated("g1", RES, "b", G2, "a", lease.token).await.expect_err("deposed");
    assert_eq!(e.code(), "TDM-LEASE-002", "{e}");
    let rec = store.read("g1").await.expect("read").expect("item");
    assert_eq!(rec.outdated_mark(RES), Some(&want), "the takeover keeps the marks; the deposed write changed nothing");
    // The new holder's promotion check on what it read: b has not caught up to G1 → refused; a would be allowed.
    let refused = promotion_check(Some(&rec), RES, "b", &uptodate(G2)).expect_err("b is outdated");
    assert_eq!(refused.code(), "TDM-MIR-060");
    assert!(refused.to_string().contains("node b"), "{refused}");
    promotion_check(Some(&rec), RES, "a", &uptodate(G2)).expect("a is not marked");
    // b, resynced to G1 (a sync target adopts the source's current generation), may promote.
    promotion_check(Some(&rec), RES, "b", &uptodate(G1)).expect("b caught up");
    // The new holder can mark the deposed one.
    store.mark_outdated("g1", RES, "a", G2, "b", b_lease.token).await.expect("new holder marks a");
    let rec = store.read("g1").await.expect("read").expect("item");
    assert_eq!(
        rec.outdated_mark(RES).map(|m| (m.node.as_str(), m.by.as_str(), m.token)),
        Some(("a", "b", b_lease.token))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_needs_the_matching_node_and_generation() {
    let (_moto, _c, store) = moto_store().await;
    let lease = acquire(&store, "g2", "a").await;
    store.mark_outdated("g2", RES, "b", G1, "a", lease.token).await.expect("mark");

    let e = store.clear_outdated("g2", RES, "b", G2).await.expect_err("other generation");
    assert_eq!(e.code(), "TDM-LEASE-010", "{e}");
    assert!(e.to_string().contains(&format!("{G1:#018x}")), "names the current mark: {e}");
    let e = store.clear_outdated("g2", RES, "a", G1).await.expect_err("other node");
    assert_eq!(e.code(), "TDM-LEASE-010", "{e}");
    assert!(store.read("g2").await.expect("read").expect("item").outdated_mark(RES).is_some(), "still marked");

    store.clear_outdated("g2", RES, "b", G1).await.expect("clear");
    let rec = store.read("g2").await.expect("read").expect("item");
    assert!(rec.outdated_mark(RES).is_none());
    promotion_check(Some(&rec), RES, "b", &uptodate(G2)).expect("no mark, UpToDate: promotable");
    // Clearing what is gone is success (idempotent), on an item without marks and on no item at all.
    store.clear_outdated("g2", RES, "b", G1).await.expect("clear again");
    store.clear_outdated("none", RES, "b", G1).await.expect("clear without item");
    // The map survives an emptied resource: marking again sets the key inside it.
    store.mark_outdated("g2", RES, "b", G2, "a", lease.token).await.expect("mark after clear");
    let rec = store.read("g2").await.expect("read").expect("item");
    assert_eq!(rec.outdated_mark(RES).map(|m| m.generation), Some(G2));
}

/// A token source the test can change: 0 = no lease.
struct Tokens(AtomicU64);

impl TokenSource for Tokens {
    fn lease_token(&self) -> Option<u64> {
        Some(self.0.load(Ordering::SeqCst)).filter(|t| *t != 0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_holds_while_the_store_is_unreachable_and_passes_once_it_is_reachable() {
    let (_moto, _c, store) = moto_store().await;
    let lease = acquire(&store, "g3", "a").await;
    let tokens = Arc::new(Tokens(AtomicU64::new(lease.token)));

    // A closed local port stands for DynamoDB being unreachable.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let down = Arc::new(LeaseStore::new(client(&format!("http://127.0.0.1:{port}")).await, TABLE));
    let gate = LeaseOutdatedGate::new(down, "g3", RES, "a", "b", tokens.clone());
    for _ in 0..2 {
        let e = gate.mark_peer_outdated(G1).await.expect_err("unreachable store");
        assert!(e.starts_with("TDM-LEASE-005"), "{e}");
    }
    assert!(store.read("g3").await.expect("read").expect("item").outdated.is_empty(), "nothing written");

    let gate = LeaseOutdatedGate::new(store.clone(), "g3", RES, "a", "b", tokens.clone());
    // Without a token (the lease is not held), the gate holds too.
    tokens.0.store(0, Ordering::SeqCst);
    let e = gate.mark_peer_outdated(G1).await.expect_err("no token");
    assert!(e.starts_with("TDM-MIR-063"), "{e}");
    tokens.0.store(lease.token, Ordering::SeqCst);

    // Reachable, holding: passes, and the mark is what the peer will read before it could promote.
    gate.mark_peer_outdated(G1).await.expect("gate passes");
    let rec = store.read("g3").await.expect("read").expect("item");
    let want = OutdatedMark { node: "b".into(), generation: G1, by: "a".into(), token: lease.token };
    assert_eq!(rec.outdated_mark(RES), Some(&want));
    assert_eq!(promotion_check(Some(&rec), RES, "b", &uptodate(0x11)).map_err(|e| e.code()), Err("TDM-MIR-060"));
    promotion_check(Some(&rec), RES, "a", &uptodate(G1)).expect("the writer stays promotable");

    // A stale token (another node took over meanwhile): the gate holds, with the lease's NotHolder code.
    tokens.0.store(lease.token + 1, Ordering::SeqCst);
    let e = gate.mark_peer_outdated(G1).await.expect_err("stale token");
    assert!(e.starts_with("TDM-LEASE-002"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mark_names_the_generation_the_degraded_primary_writes_in() {
    let (_moto, _c, store) = moto_store().await;
    let lease = acquire(&store, "g4", "a").await;
    let tokens = Arc::new(Tokens(AtomicU64::new(lease.token)));
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, meta) = (dir.path().join("a.img"), dir.path().join("a.meta"));
    std::fs::write(&data, vec![0u8; 1 << 20]).expect("backing file");
    let m = Meta::create(&meta, 1 << 20, "a", DEFAULT_GRANULARITY).expect("meta");
    let before = m.superblock().current;
    let gate = Arc::new(LeaseOutdatedGate::new(store.clone(), "g4", RES, "a", "b", tokens));
    let local = Arc::new(FileStore::open(&data).expect("open")) as Arc<dyn BlockStore>;
    let cfg = ReplicationConfig { node: "a".into(), ..ReplicationConfig::default() };
    let primary = ReplicatedStore::standalone_with_meta(local, cfg, gate, SharedMeta::new(m)).expect("primary");
    primary.write_at(4096, Arc::new(vec![7; 512]), false).await.expect("first degraded write");
    primary.write_at(900_000, Arc::new(vec![8; 512]), false).await.expect("second degraded write");
    primary.shutdown();

    let sb = Meta::open(&meta).expect("open meta").superblock().clone();
    assert_ne!(sb.current, before, "a new generation for the degraded period");
    assert_eq!(sb.history[0], before);
    let rec = store.read("g4").await.expect("read").expect("item");
    let mark = rec.outdated_mark(RES).expect("the peer is marked");
    assert_eq!((mark.node.as_str(), mark.by.as_str(), mark.token), ("b", "a", lease.token));
    assert_eq!(mark.generation, sb.current, "the mark names exactly the generation the primary writes in");
    // So the peer, which never got that generation, is refused; the writer is not.
    let peer = uptodate(before);
    assert_eq!(promotion_check(Some(&rec), RES, "b", &peer).map_err(|e| e.code()), Err("TDM-MIR-060"));
    promotion_check(Some(&rec), RES, "b", &uptodate(sb.current)).expect("b once resynced to that generation");
}
