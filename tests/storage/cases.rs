//! The storage cases, each on a fresh key prefix of the same Redis (or Redis Cluster).

use convene::storage::{
    Bus, BusEvent, ConferenceType, Cursor, ExpiredRoom, FencedError, Lease, Leases, NodeInfo,
    Nodes, Redis, RedisStore, RoomRecord, Store,
};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(2);
/// How long a test waits for something that takes a lease time or a node expiry.
const WAIT: Duration = Duration::from_secs(15);

/// A Redis handle with a key prefix of its own, and the store over it.
pub struct Fixture {
    pub redis: Arc<Redis>,
    pub store: RedisStore,
    pub prefix: String,
    urls: Vec<String>,
}

impl Fixture {
    pub fn new(urls: &[String], cluster: bool) -> Self {
        let prefix = format!("t-{}", uuid::Uuid::new_v4());
        let redis = Arc::new(Redis::open(urls, cluster, &prefix, TIMEOUT).unwrap());
        Self {
            store: RedisStore::over(redis.clone()),
            redis,
            prefix,
            urls: urls.to_vec(),
        }
    }

    fn leases(&self, node: &str, ttl: Duration) -> Leases {
        Leases::new(self.redis.clone(), node, ttl)
    }

    /// A plain connection to the first node, for writing junk the service must survive
    /// (on a cluster, only to keys this node serves: see `owner_of`).
    fn raw(&self, key: &str) -> redis::Connection {
        let url = if self.redis.is_cluster() {
            self.owner_of(key)
        } else {
            self.urls[0].clone()
        };
        redis::Client::open(url).unwrap().get_connection().unwrap()
    }

    /// The URL of the cluster node that serves `key`'s slot.
    fn owner_of(&self, key: &str) -> String {
        let mut conn = redis::Client::open(self.urls[0].clone())
            .unwrap()
            .get_connection()
            .unwrap();
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut conn)
            .unwrap();
        let slots: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query(&mut conn).unwrap();
        for range in slots {
            let redis::Value::Array(parts) = range else {
                continue;
            };
            let (Some(redis::Value::Int(from)), Some(redis::Value::Int(to))) =
                (parts.first(), parts.get(1))
            else {
                continue;
            };
            if (*from..=*to).contains(&slot)
                && let Some(redis::Value::Array(master)) = parts.get(2)
                && let Some(redis::Value::Int(port)) = master.get(1)
            {
                return format!("redis://127.0.0.1:{port}/");
            }
        }
        panic!("no node serves slot {slot}");
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn room(id: &str, creation_time: u64, ttl_seconds: u64) -> RoomRecord {
    RoomRecord {
        id: id.to_string(),
        name: Some(format!("room {id}")),
        description: None,
        creation_time,
        modification_time: creation_time,
        conference_type: ConferenceType::Mesh,
        auto_upgrade_participant_count: None,
        room_token_ttl_seconds: 3600,
        room_ttl_seconds: ttl_seconds,
        endpoint_ttl_seconds: 3600,
        nonce: "nonce".into(),
        token: "token".into(),
        token_expires_at: creation_time + 3_600_000,
        participant_count: 0,
        access: Default::default(),
    }
}

/// Polls `check` until it holds; panics naming `what` after `WAIT`.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Acquires the room's lease for `leases`' node as soon as it is free; panics after `WAIT`.
async fn acquire_when_free(leases: &Leases, room: &str) -> Lease {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(lease) = leases.acquire(room).await.unwrap() {
            return lease;
        }
        assert!(Instant::now() < deadline, "{room} never became free");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs every case, each on a fresh prefix, naming the one that fails.
pub async fn run_all(urls: &[String], cluster: bool) {
    macro_rules! case {
        ($name:ident) => {
            eprintln!("case {} (cluster: {cluster})", stringify!($name));
            $name(Fixture::new(urls, cluster)).await;
        };
    }
    case!(store_round_trip);
    case!(pages_walk_rooms_across_slots_and_drop_vanished_ones);
    case!(sweep_drops_expired_rooms);
    case!(an_expired_room_is_finished_by_one_caller);
    case!(a_lease_is_held_renewed_and_released);
    case!(an_expired_lease_is_taken_over_with_a_higher_fence);
    case!(the_fence_never_goes_back);
    case!(stale_fenced_writes_are_refused);
    case!(deleting_a_room_removes_its_lease_and_fence);
    case!(nodes_register_list_expire_and_leave);
    case!(junk_in_redis_never_panics);
    case!(every_connection_sends_commands_at_once);
    if cluster {
        // One seed node is enough: the client finds the others.
        eprintln!("case store_round_trip, one seed node");
        store_round_trip(Fixture::new(&urls[..1], true)).await;
    }
}

/// The store's and the bus's connections to Redis have `TCP_NODELAY` (redis-rs's default
/// is Nagle's algorithm, which holds a command back while an earlier one is unanswered).
pub async fn every_connection_sends_commands_at_once(f: Fixture) {
    use redis::IntoConnectionInfo;
    let mut ports = Vec::new();
    for url in &f.urls {
        match url.as_str().into_connection_info().unwrap().addr() {
            redis::ConnectionAddr::Tcp(host, port) if host == "127.0.0.1" => ports.push(*port),
            // The sockets are found by their IPv4 loopback address.
            other => return eprintln!("skipped: Redis is not at 127.0.0.1 ({other:?})"),
        }
    }
    f.store.ping().await.unwrap();
    let store = sockets_to(&ports);
    // The bus: a message to itself, once it is back, has been through both of its
    // connections (the publisher's is made by the first message).
    let (bus, mut events) = Bus::start(&f.urls, &f.prefix, "nodelay", TIMEOUT)
        .await
        .unwrap();
    assert!(bus.send("nodelay", b"hello".to_vec()).await);
    match tokio::time::timeout(WAIT, events.recv()).await {
        Ok(Some(BusEvent::Message(payload))) => assert_eq!(payload, b"hello"),
        other => panic!("{other:?}"),
    }
    let all = sockets_to(&ports);
    let of_bus: Vec<_> = (all.iter())
        .filter(|(inode, _)| !store.contains_key(inode))
        .collect();
    assert!(!store.is_empty(), "no socket of the store found");
    assert!(
        of_bus.len() >= 2,
        "the bus's two connections not found: {of_bus:?}"
    );
    assert!(all.values().all(|on| *on), "{all:?}");
}

/// The sockets of this process connected to one of `ports` on the loopback, by inode, and
/// whether each has `TCP_NODELAY` on.
fn sockets_to(ports: &[u16]) -> HashMap<u64, bool> {
    // The loopback connections to those ports (of every process: ours are picked below).
    let wanted: Vec<String> = ports.iter().map(|p| format!("0100007F:{p:04X}")).collect();
    let tcp = std::fs::read_to_string("/proc/self/net/tcp").unwrap();
    let connected: HashSet<u64> = (tcp.lines().skip(1))
        .filter_map(|row| {
            let fields: Vec<&str> = row.split_whitespace().collect();
            let (remote, state, inode) = (fields.get(2)?, fields.get(3)?, fields.get(9)?);
            // 01: established.
            (*state == "01" && wanted.iter().any(|w| w == remote))
                .then(|| inode.parse().ok())
                .flatten()
        })
        .collect();
    let socket_of = |fd: &std::path::Path| -> Option<u64> {
        let target = std::fs::read_link(fd).ok()?;
        let target = target.to_str()?;
        target
            .strip_prefix("socket:[")?
            .strip_suffix(']')?
            .parse()
            .ok()
    };
    let mut found = HashMap::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Some(inode) = socket_of(&entry.path()).filter(|i| connected.contains(i)) else {
            continue;
        };
        // Another test thread may close the descriptor meanwhile, or reuse its number:
        // the option counts only when the number still names that socket afterwards.
        if let Some(on) = tcp_nodelay(fd)
            && socket_of(&entry.path()) == Some(inode)
        {
            found.insert(inode, on);
        }
    }
    found
}

/// `TCP_NODELAY` of descriptor `fd` (`None` when it is no TCP socket, or closed).
fn tcp_nodelay(fd: i32) -> Option<bool> {
    let mut on: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a system call on a descriptor number that writes at most `len` bytes into
    // `on`; a descriptor closed meanwhile makes it fail (EBADF), nothing else.
    let done = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&mut on as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (done == 0).then_some(on != 0)
}

pub async fn store_round_trip(f: Fixture) {
    let store = &f.store;
    store.ping().await.unwrap();
    let now = now_ms();
    let a = room("RO-a", now, 3600);
    store.create(&a).await.unwrap();
    assert_eq!(store.get("RO-a", now).await.unwrap(), Some(a.clone()));
    assert_eq!(store.get("RO-missing", now).await.unwrap(), None);
    let changed = RoomRecord {
        participant_count: 3,
        ..a.clone()
    };
    store.update(&changed).await.unwrap();
    assert_eq!(store.get("RO-a", now).await.unwrap(), Some(changed.clone()));
    assert_eq!(
        store.page(None, 10, now).await.unwrap(),
        std::slice::from_ref(&changed)
    );
    store.delete(&changed).await.unwrap();
    assert_eq!(store.get("RO-a", now).await.unwrap(), None);
    assert_eq!(store.page(None, 10, now).await.unwrap(), []);
    // A room already gone stays gone.
    store.update(&changed).await.unwrap();
    assert_eq!(store.get("RO-a", now).await.unwrap(), None);
}

pub async fn pages_walk_rooms_across_slots_and_drop_vanished_ones(f: Fixture) {
    let store = &f.store;
    let now = now_ms();
    // Twenty rooms, whose keys spread over the cluster's slots.
    let rooms: Vec<RoomRecord> = (0..20)
        .map(|i| room(&format!("RO-{i:02}"), now - 100 + i, 3600))
        .collect();
    for r in &rooms {
        store.create(r).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut after: Option<Cursor> = None;
    loop {
        let page = store.page(after.as_ref(), 6, now).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = Some(Cursor::of(page.last().unwrap()));
        seen.extend(page.into_iter().map(|r| r.id));
    }
    let newest_first: Vec<String> = rooms.iter().rev().map(|r| r.id.clone()).collect();
    assert_eq!(seen, newest_first);
    // A record that vanished behind the store's back (its key deleted) is dropped from
    // the index by the page that meets it.
    let key = format!("{}:{{room:RO-05}}", f.prefix);
    let _: () = redis::cmd("DEL").arg(&key).query(&mut f.raw(&key)).unwrap();
    let page = store.page(None, 100, now).await.unwrap();
    assert_eq!(page.len(), 19);
    assert!(page.iter().all(|r| r.id != "RO-05"));
    let index = format!("{}:{{rooms}}", f.prefix);
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(&index)
        .arg(0)
        .arg(-1)
        .query(&mut f.raw(&index))
        .unwrap();
    assert_eq!(members.len(), 19);
}

/// A page leaves an expired room's entry for the sweep; `expired` lists it, and of two
/// callers of `finish_expired` at once exactly one takes it.
pub async fn an_expired_room_is_finished_by_one_caller(f: Fixture) {
    let store = &f.store;
    let (now, after) = short_and_long_rooms(store).await;
    assert_eq!(page_ids(store, after).await, ["RO-long"]);
    let expired = store.expired(after, 10).await.unwrap();
    assert_eq!(
        expired,
        [ExpiredRoom {
            id: "RO-short".into(),
            creation_time: now
        }],
        "still there after the page"
    );
    let (a, b) = tokio::join!(
        store.finish_expired(&expired[0]),
        store.finish_expired(&expired[0])
    );
    assert!(a.unwrap() ^ b.unwrap(), "exactly one caller finishes it");
    assert!(store.expired(after, 10).await.unwrap().is_empty());
    assert!(!store.finish_expired(&expired[0]).await.unwrap());
    assert_eq!(store.sweep(after).await.unwrap(), 0);
}

pub async fn sweep_drops_expired_rooms(f: Fixture) {
    let store = &f.store;
    let (_, after) = short_and_long_rooms(store).await;
    assert_eq!(store.sweep(after).await.unwrap(), 1);
    assert_eq!(store.sweep(after).await.unwrap(), 0);
    assert_eq!(page_ids(store, after).await, ["RO-long"]);
}

/// Stores `RO-short` (a second to live) and `RO-long` (an hour), both created now, and
/// waits for the short one to expire; answers their creation time and a time past the
/// short one's end.
async fn short_and_long_rooms(store: &RedisStore) -> (u64, u64) {
    let now = now_ms();
    store.create(&room("RO-short", now, 1)).await.unwrap();
    store.create(&room("RO-long", now, 3600)).await.unwrap();
    until("the short room expires", || async {
        store.get("RO-short", now_ms()).await.unwrap().is_none()
    })
    .await;
    (now, now + 1000)
}

/// The ids of the first page of rooms at `now`.
async fn page_ids(store: &RedisStore, now: u64) -> Vec<String> {
    let page = store.page(None, 10, now).await.unwrap();
    page.into_iter().map(|r| r.id).collect()
}

pub async fn a_lease_is_held_renewed_and_released(f: Fixture) {
    let a = f.leases("node-a", Duration::from_secs(30));
    let b = f.leases("node-b", Duration::from_secs(30));
    assert_eq!(a.holder("RO-1").await.unwrap(), None);
    let lease = a.acquire("RO-1").await.unwrap().expect("a free room");
    assert_eq!(
        lease,
        Lease {
            room: "RO-1".into(),
            node: "node-a".into(),
            fence: 1
        }
    );
    // Held: nobody acquires it, not even its holder.
    assert_eq!(b.acquire("RO-1").await.unwrap(), None);
    assert_eq!(a.acquire("RO-1").await.unwrap(), None);
    assert_eq!(b.holder("RO-1").await.unwrap(), Some(lease.clone()));
    assert!(a.renew(&lease).await.unwrap());
    // Only the holder renews or releases, under its own fence.
    let forged = Lease {
        node: "node-b".into(),
        ..lease.clone()
    };
    assert!(!b.renew(&forged).await.unwrap());
    assert!(!b.release(&forged).await.unwrap());
    let wrong_fence = Lease {
        fence: 2,
        ..lease.clone()
    };
    assert!(!a.renew(&wrong_fence).await.unwrap());
    assert_eq!(a.holder("RO-1").await.unwrap(), Some(lease.clone()));
    assert!(a.release(&lease).await.unwrap());
    assert!(!a.release(&lease).await.unwrap());
    assert_eq!(a.holder("RO-1").await.unwrap(), None);
    // Released: the next acquisition, by anyone, gets a higher fence.
    let next = b.acquire("RO-1").await.unwrap().unwrap();
    assert_eq!((next.node.as_str(), next.fence), ("node-b", 2));
    // Other rooms have fences of their own.
    assert_eq!(a.acquire("RO-2").await.unwrap().unwrap().fence, 1);
}

pub async fn an_expired_lease_is_taken_over_with_a_higher_fence(f: Fixture) {
    let a = f.leases("node-a", Duration::from_millis(300));
    let b = f.leases("node-b", Duration::from_secs(30));
    let first = a.acquire("RO-1").await.unwrap().unwrap();
    // Node a stops renewing; node b gets the room once the lease expired.
    let second = acquire_when_free(&b, "RO-1").await;
    assert_eq!(second.node, "node-b");
    assert!(second.fence > first.fence, "{second:?} after {first:?}");
    // The old holder can neither renew nor release the new holder's lease.
    assert!(!a.renew(&first).await.unwrap());
    assert!(!a.release(&first).await.unwrap());
    assert_eq!(a.holder("RO-1").await.unwrap(), Some(second));
}

pub async fn the_fence_never_goes_back(f: Fixture) {
    let a = f.leases("node-a", Duration::from_millis(200));
    let mut last = 0;
    for _ in 0..3 {
        let lease = acquire_when_free(&a, "RO-1").await;
        assert!(lease.fence > last, "{} after {last}", lease.fence);
        last = lease.fence;
        // Left to expire, not released: the fence key outlives the lease key.
    }
    assert_eq!(last, 3);
}

pub async fn stale_fenced_writes_are_refused(f: Fixture) {
    let store = &f.store;
    let now = now_ms();
    let original = room("RO-1", now, 3600);
    store.create(&original).await.unwrap();
    let a = f.leases("node-a", Duration::from_millis(300));
    let b = f.leases("node-b", Duration::from_secs(30));
    let old = a.acquire("RO-1").await.unwrap().unwrap();
    let by_a = RoomRecord {
        participant_count: 1,
        ..original.clone()
    };
    store.update_fenced(&by_a, &old).await.unwrap();
    assert_eq!(store.get("RO-1", now).await.unwrap(), Some(by_a.clone()));

    // Node a's lease expires and node b takes the room over.
    let new = acquire_when_free(&b, "RO-1").await;
    assert!(!a.renew(&old).await.unwrap());

    // Node a's writes are refused, with the stale error, and change nothing.
    let stale = RoomRecord {
        participant_count: 99,
        ..original.clone()
    };
    match store.update_fenced(&stale, &old).await {
        Err(FencedError::Stale { room, fence }) => {
            assert_eq!((room.as_str(), fence), ("RO-1", old.fence));
        }
        other => panic!("a stale update went through: {other:?}"),
    }
    assert!(matches!(
        store.delete_fenced(&stale, &old).await,
        Err(FencedError::Stale { .. })
    ));
    assert_eq!(store.get("RO-1", now).await.unwrap(), Some(by_a.clone()));
    // A lease of another room is no lease of this one.
    let other = Lease {
        room: "RO-2".into(),
        ..new.clone()
    };
    assert!(matches!(
        store.update_fenced(&stale, &other).await,
        Err(FencedError::Stale { .. })
    ));

    // Node b's writes go through.
    let by_b = RoomRecord {
        participant_count: 2,
        ..original.clone()
    };
    store.update_fenced(&by_b, &new).await.unwrap();
    assert_eq!(store.get("RO-1", now).await.unwrap(), Some(by_b.clone()));
    // Unfenced writes (one node, no leases) behave as they always did.
    store.update(&by_a).await.unwrap();
    assert_eq!(store.get("RO-1", now).await.unwrap(), Some(by_a.clone()));
    store.delete_fenced(&by_a, &new).await.unwrap();
    assert_eq!(store.get("RO-1", now).await.unwrap(), None);
    assert_eq!(store.page(None, 10, now).await.unwrap(), []);
    // Once the room is gone, even its last holder's writes are refused.
    assert!(matches!(
        store.update_fenced(&by_b, &new).await,
        Err(FencedError::Stale { .. })
    ));
}

pub async fn deleting_a_room_removes_its_lease_and_fence(f: Fixture) {
    let store = &f.store;
    let now = now_ms();
    let r = room("RO-1", now, 3600);
    store.create(&r).await.unwrap();
    let a = f.leases("node-a", Duration::from_secs(30));
    a.acquire("RO-1").await.unwrap().unwrap();
    store.delete(&r).await.unwrap();
    assert_eq!(a.holder("RO-1").await.unwrap(), None);
    for key in ["lease", "fence"] {
        let key = format!("{}:{{room:RO-1}}:{key}", f.prefix);
        let exists: bool = redis::cmd("EXISTS")
            .arg(&key)
            .query(&mut f.raw(&key))
            .unwrap();
        assert!(!exists, "{key}");
    }
}

fn node(id: &str) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        http_addr: "10.0.0.1:8080".into(),
        media_addr: "10.0.0.1:7882".into(),
        rooms: 3,
        participants: 7,
        cpu: 0.25,
        started_at: now_ms(),
        version: "test".into(),
        secret_id: "0011223344556677".into(),
        max_rooms: 0,
        max_participants: 0,
        draining: false,
    }
}

pub async fn nodes_register_list_expire_and_leave(f: Fixture) {
    let short = Nodes::new(f.redis.clone(), Duration::from_millis(300));
    let long = Nodes::new(f.redis.clone(), Duration::from_secs(30));
    assert_eq!(long.live().await.unwrap(), []);
    let (a, b, c) = (node("node-a"), node("node-b"), node("node-c"));
    long.register(&b).await.unwrap();
    long.register(&a).await.unwrap();
    short.register(&c).await.unwrap();
    let ids = || async {
        long.live()
            .await
            .unwrap()
            .into_iter()
            .map(|n| n.id)
            .collect::<Vec<_>>()
    };
    let live = long.live().await.unwrap();
    assert!(live.len() == 3 || live.len() == 2, "{live:?}");
    assert_eq!(live[0], a);
    // A refresh keeps an entry and replaces what it says.
    let busier = NodeInfo {
        rooms: 10,
        ..a.clone()
    };
    long.register(&busier).await.unwrap();
    assert_eq!(long.live().await.unwrap()[0], busier);
    // Node c stops refreshing: it disappears after its expiry.
    until("node c expires", || async {
        ids().await == ["node-a", "node-b"]
    })
    .await;
    // A clean shutdown removes the entry at once.
    long.remove("node-a").await.unwrap();
    assert_eq!(ids().await, ["node-b"]);
    long.remove("node-a").await.unwrap();
}

pub async fn junk_in_redis_never_panics(f: Fixture) {
    let store = &f.store;
    let now = now_ms();
    let junk = |key: String, value: &str| {
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(value)
            .query(&mut f.raw(&key))
            .unwrap();
    };
    junk(format!("{}:{{room:RO-1}}", f.prefix), "not json");
    assert_eq!(store.get("RO-1", now).await.unwrap(), None);
    junk(format!("{}:{{room:RO-1}}:lease", f.prefix), "junk");
    let leases = f.leases("node-a", Duration::from_secs(30));
    assert!(leases.holder("RO-1").await.is_err());
    assert_eq!(leases.acquire("RO-1").await.unwrap(), None);
    junk(format!("{}:{{room:RO-2}}:fence", f.prefix), "not a number");
    assert!(leases.acquire("RO-2").await.is_err());
    // A node entry that does not parse is skipped.
    let nodes = Nodes::new(f.redis.clone(), Duration::from_secs(30));
    nodes.register(&node("node-a")).await.unwrap();
    junk(format!("{}:{{nodes}}:node-a", f.prefix), "{");
    assert_eq!(nodes.live().await.unwrap(), []);
    // Keys of odd room ids stay in one slot.
    let odd = "RO-}{odd";
    let r = room(odd, now, 3600);
    store.create(&r).await.unwrap();
    let lease = leases.acquire(odd).await.unwrap().unwrap();
    store.update_fenced(&r, &lease).await.unwrap();
    store.delete_fenced(&r, &lease).await.unwrap();
}
