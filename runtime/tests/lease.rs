//! The lease store against a real moto server (pinned venv from tests/support/moto-venv.sh).

#[path = "support/lease_table.rs"]
mod lease_table;
#[path = "support/moto.rs"]
mod moto;

use lease_table::{TABLE, client, create_table, me};

use moto::Moto;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_dynamodb::types::AttributeValue;
use tandem_runtime::membership::lease::{
    Acquire, Holder, Lease, LeaseKeeper, LeaseState, LeaseStore, LeaseTiming, MIN_TTL, contender_wait,
};

fn acquired(a: Acquire) -> Lease {
    match a {
        Acquire::Acquired(l) => l,
        other => panic!("expected Acquired, got {other:?}"),
    }
}

/// This machine's Unix time in milliseconds.
fn unix_ms() -> u64 {
    let since = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("the clock is after 1970");
    u64::try_from(since.as_millis()).expect("milliseconds fit in u64")
}

/// Acquires `group` for `me`, waiting out another holder that no longer renews.
async fn take_over(store: &LeaseStore, group: &str, me: &Holder, ttl: Duration) -> Lease {
    loop {
        match store.acquire(group, me, ttl).await.expect("acquire") {
            Acquire::Acquired(l) => return l,
            Acquire::Busy { retry_in, .. } => tokio::time::sleep(retry_in.min(Duration::from_millis(20))).await,
        }
    }
}

const TTL: Duration = Duration::from_millis(1000);
const RENEW: Duration = Duration::from_millis(200);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_protocol_against_moto() {
    let moto = Moto::start();
    let c = client(&moto.endpoint()).await;
    create_table(&c).await;
    let a = Arc::new(LeaseStore::new(c.clone(), TABLE));
    let b = Arc::new(LeaseStore::new(c.clone(), TABLE));
    let timing = LeaseTiming::new(TTL, RENEW).expect("timing");

    // Table missing → its own code.
    let missing = LeaseStore::new(c.clone(), "no-such-table");
    assert_eq!(missing.read("g").await.err().map(|e| e.code()), Some("TDM-LEASE-003"));

    // Two contenders race for a free lease: exactly one wins.
    let (me_a, me_b) = (me("a"), me("b"));
    let before_ms = unix_ms();
    let (ra, rb) = tokio::join!(a.acquire("g1", &me_a, TTL), b.acquire("g1", &me_b, TTL));
    let after_ms = unix_ms();
    let wins = [&ra, &rb].iter().filter(|r| matches!(r, Ok(Acquire::Acquired(_)))).count();
    assert_eq!(wins, 1, "a: {ra:?}, b: {rb:?}");
    let first = [&ra, &rb]
        .iter()
        .find_map(|r| match r {
            Ok(Acquire::Acquired(l)) => Some(l.token),
            _ => None,
        })
        .expect("a winner");
    // A new item's first token is the Unix time in milliseconds of its creation (so it never restarts low).
    assert!((before_ms..=after_ms).contains(&first), "token {first} outside {before_ms}..={after_ms}");
    for r in [&ra, &rb] {
        match r {
            Ok(Acquire::Acquired(l)) => assert_eq!(l.token, first),
            Ok(Acquire::Busy { token, .. }) => assert_eq!(*token, first),
            Err(e) => assert_eq!(e.code(), "TDM-LEASE-001"),
        }
    }
    let (holder, holder_name, other, other_name, lease) = match ra {
        Ok(Acquire::Acquired(l)) => (a.clone(), "a", b.clone(), "b", l),
        _ => (b.clone(), "b", a.clone(), "a", acquired(rb.expect("b acquired"))),
    };

    // The holder renews; the other cannot take over while it does, for well over a ttl.
    let keeper = LeaseKeeper::start(holder.clone(), "g1".into(), holder_name.into(), lease, timing);
    let watch_start = Instant::now();
    while watch_start.elapsed() < TTL * 3 {
        match other.acquire("g1", &me(other_name), TTL).await.expect("acquire while held") {
            Acquire::Busy { holder: h, token, .. } => {
                assert_eq!(h.node, holder_name);
                assert_eq!(token, first);
            }
            Acquire::Acquired(l) => panic!("took over a renewed lease: {l:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let LeaseState::Held { valid_until: renewed_until, .. } = keeper.state() else { panic!("keeper lost the lease") };
    assert!(renewed_until > lease.valid_until, "renewals extend the deadline");

    // The holder stops renewing: the other may take over only after ttl + margin of its own observation.
    let final_state = keeper.subscribe();
    keeper.stop();
    let mut first_busy: Option<Instant> = None;
    let taken = loop {
        let before = Instant::now();
        match other.acquire("g1", &me(other_name), TTL).await.expect("acquire after stop") {
            Acquire::Busy { .. } => {
                first_busy.get_or_insert(before);
            }
            Acquire::Acquired(l) => break (Instant::now(), l),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (taken_at, new_lease) = taken;
    let first_busy = first_busy.expect("the other was busy at least once");
    assert!(taken_at.duration_since(first_busy) >= contender_wait(TTL) - Duration::from_millis(250));
    assert!(taken_at.duration_since(first_busy) < contender_wait(TTL) + TTL);
    // Safety on one machine's clock: the takeover happened after the old holder's last self-fencing deadline.
    let LeaseState::Held { valid_until: last_deadline, .. } = *final_state.borrow() else { panic!("keeper state") };
    assert!(last_deadline >= renewed_until);
    assert!(taken_at > last_deadline, "takeover before the holder's deadline");
    assert_eq!(new_lease.token, first + 1, "the fencing token grows on takeover");

    // A stale holder's renew and release with the old token fail.
    let e = holder.renew("g1", holder_name, first).await.expect_err("stale renew");
    assert_eq!(e.code(), "TDM-LEASE-002");
    let e = holder.release("g1", holder_name, first).await.expect_err("stale release");
    assert_eq!(e.code(), "TDM-LEASE-002");
    let rec = holder.read("g1").await.expect("read").expect("item");
    assert_eq!(rec.holder.map(|h| h.node).as_deref(), Some(other_name));
    assert_eq!(rec.token, first + 1);
    assert_eq!(rec.ttl, TTL);

    // The old holder now waits; after the new holder releases, it acquires at once with a higher token.
    assert!(matches!(holder.acquire("g1", &me(holder_name), TTL).await, Ok(Acquire::Busy { .. })));
    other.renew("g1", other_name, first + 1).await.expect("renew by the new holder");
    other.release("g1", other_name, first + 1).await.expect("release");
    let back = acquired(holder.acquire("g1", &me(holder_name), TTL).await.expect("acquire after release"));
    assert_eq!(back.token, first + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_store_fails_renewals_and_the_deadline_still_passes_on_time() {
    let moto = Moto::start();
    let c = client(&moto.endpoint()).await;
    create_table(&c).await;
    let store = LeaseStore::new(c, TABLE);
    let lease = acquired(store.acquire("g2", &me("a"), TTL).await.expect("acquire"));

    // A closed local port stands for DynamoDB being unreachable.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let down = Arc::new(LeaseStore::new(client(&format!("http://127.0.0.1:{port}")).await, TABLE));
    let e = down.renew("g2", "a", lease.token).await.expect_err("renew against a closed port");
    assert_eq!(e.code(), "TDM-LEASE-005", "{e}");

    let timing = LeaseTiming::new(TTL, RENEW).expect("timing");
    let keeper = LeaseKeeper::start(down, "g2".into(), "a".into(), lease, timing);
    let mut rx = keeper.subscribe();
    let lost = tokio::time::timeout(TTL * 2, rx.wait_for(|s| matches!(s, LeaseState::Lost { .. })))
        .await
        .expect("keeper reports the loss")
        .expect("watch")
        .clone();
    let at = Instant::now();
    assert_eq!(lost, LeaseState::Lost { token: lease.token, code: "deadline" });
    assert!(at >= lease.valid_until, "no early loss");
    assert!(at < lease.valid_until + Duration::from_millis(150), "lost late: {:?}", at - lease.valid_until);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_lease_item_never_restarts_tokens() {
    let moto = Moto::start();
    let c = client(&moto.endpoint()).await;
    create_table(&c).await;
    let (a, b) = (LeaseStore::new(c.clone(), TABLE), LeaseStore::new(c.clone(), TABLE));
    let (me_a, me_b) = (me("a"), me("b"));
    // The shortest ttl: each takeover below waits contender_wait(100 ms) = 112 ms.
    let mut tokens = vec![acquired(a.acquire("g3", &me_a, MIN_TTL).await.expect("first acquire")).token];
    // Takeovers back and forth, nobody renewing or releasing: each one takes token + 1.
    for (store, who) in [(&b, &me_b), (&a, &me_a), (&b, &me_b)] {
        let lease = take_over(store, "g3", who, MIN_TTL).await;
        assert_eq!(lease.token, tokens[tokens.len() - 1] + 1, "{tokens:?}");
        tokens.push(lease.token);
    }

    // The item vanishes (deleted by hand, or a table restored from a backup without it)...
    c.delete_item().table_name(TABLE).key("group", AttributeValue::S("g3".into())).send().await.expect("DeleteItem");
    assert_eq!(a.read("g3").await.expect("read after the delete"), None);

    // ...and the next acquisition creates it with a token above every one handed out before.
    let again = acquired(a.acquire("g3", &me_a, MIN_TTL).await.expect("acquire the re-created item"));
    let highest = tokens.iter().copied().max().unwrap_or_default();
    assert!(again.token > highest, "token {} after the delete; before: {tokens:?}", again.token);
    let rec = a.read("g3").await.expect("read").expect("the item again");
    assert_eq!((rec.token, rec.holder.map(|h| h.node)), (again.token, Some("a".to_string())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_recreated_by_an_operator_request_never_restarts_tokens() {
    let moto = Moto::start();
    let c = client(&moto.endpoint()).await;
    create_table(&c).await;
    let (a, b) = (LeaseStore::new(c.clone(), TABLE), LeaseStore::new(c.clone(), TABLE));
    let first = acquired(a.acquire("g4", &me("a"), TTL).await.expect("acquire")).token;
    a.release("g4", "a", first).await.expect("release");
    let second = acquired(b.acquire("g4", &me("b"), TTL).await.expect("acquire after release")).token;
    assert_eq!(second, first + 1);

    // Deleted, then `tandemctl group start` (an operator request) re-creates the item before anyone acquires:
    // it carries a version but no holder and no token.
    c.delete_item().table_name(TABLE).key("group", AttributeValue::S("g4".into())).send().await.expect("DeleteItem");
    a.set_stopped("g4", false).await.expect("operator request on a missing item");
    let rec = a.read("g4").await.expect("read").expect("re-created by the request");
    assert_eq!((rec.holder, rec.token), (None, 0));

    let again = acquired(a.acquire("g4", &me("a"), TTL).await.expect("acquire the token-less item")).token;
    assert!(again > second, "token {again} after the re-creation; before: {first}, {second}");
}
