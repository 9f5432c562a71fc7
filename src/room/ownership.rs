//! One owner per room (with `cluster`): a room's actor runs only on the node that holds the
//! room's lease. The registry claims the lease before it starts an actor; the actor renews
//! it every third of the lease time and writes the room only through the fenced calls, and
//! stops at once when a renewal fails or a write is refused as stale. Without `cluster` there
//! is no `Ownership`, and rooms behave as on a single node.

use crate::model::{Owner, RoomRecord, Seat, StoreError};
use crate::store::{FencedError, Lease, Leases, NodeInfo, Nodes, RedisStore, Seated, Store};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// This node's load as it is now: (active rooms, seated participants).
pub type LoadNow = Box<dyn Fn() -> (u64, u64) + Send + Sync>;

/// What a node needs to own rooms: its leases, the fenced store, and the node list (to
/// find where the holder of a lease is reached).
pub struct Ownership {
    pub leases: Leases,
    pub store: Arc<RedisStore>,
    pub nodes: Arc<Nodes>,
    /// How long a lease lasts without renewal (`room_lease_ms`).
    pub lease_time: Duration,
    /// `node_max_rooms` and `node_max_participants` (0: no limit).
    pub max_rooms: u64,
    pub max_participants: u64,
    /// This node's current load (the admin hub's live count, not the last heartbeat's).
    pub load: LoadNow,
    /// Set at SIGTERM: the node hands its rooms to others and takes none (it counts as
    /// full, and a lease it still holds is not used to start a room again).
    pub draining: Arc<AtomicBool>,
    /// The index of rooms with seats by owner, from which the nodes take a dead node's
    /// rooms over at once.
    pub seated: Seated,
}

/// Where a room that nobody runs should go.
#[derive(Debug)]
pub enum Placement {
    /// This node: it has the least load, or shares it with others.
    Here,
    /// Other live nodes under their limits and less loaded than this one, least loaded
    /// first (their load is as of their last heartbeat, so the first may have filled up
    /// since: the caller tries the next).
    There(Vec<Owner>),
    /// Every live node is at one of its limits.
    Full,
}

/// Why no node can take a room.
pub const FULL: &str =
    "every live node is at its load limit (node_max_rooms, node_max_participants)";

/// Who may run a room's actor.
pub enum Claim {
    /// This node: it holds the lease.
    Mine(Lease),
    /// Another node holds the lease.
    Elsewhere(Owner),
}

/// Why a write of an owned room did not happen.
pub enum WriteError {
    /// The room's fence is no longer this lease's: another node owns the room now.
    Stale,
    Store(StoreError),
}

impl From<FencedError> for WriteError {
    fn from(e: FencedError) -> Self {
        match e {
            FencedError::Stale { .. } => Self::Stale,
            FencedError::Store(e) => Self::Store(e),
        }
    }
}

impl Ownership {
    /// How often an owner renews its leases: a third of the lease time.
    pub fn renew_every(&self) -> Duration {
        self.lease_time / 3
    }

    /// Takes the room's lease, or tells which node holds it. A lease that this node
    /// already holds (a lost answer of an earlier acquisition, or an actor that stopped
    /// without releasing) is this node's to use.
    /// A node at one of its limits (`node_max_rooms`, `node_max_participants`) takes no
    /// free lease: the room goes to the node [`Ownership::place`] finds.
    pub async fn claim(&self, room: &str) -> Result<Claim, StoreError> {
        if self.is_draining() {
            return self.claim_when_draining(room).await;
        }
        if self.me().is_full() {
            return self.claim_when_full(room).await;
        }
        self.claim_placed(room).await
    }

    /// [`Ownership::claim`] for a room already placed here (a room this node just created
    /// after [`Ownership::place`] chose it), so the room itself does not count against it.
    pub async fn claim_placed(&self, room: &str) -> Result<Claim, StoreError> {
        // Twice: a lease that expires between the acquisition and the look at its holder.
        for _ in 0..2 {
            if let Some(lease) = self.leases.acquire(room).await? {
                return Ok(Claim::Mine(lease));
            }
            let Some(holder) = self.leases.holder(room).await? else {
                continue;
            };
            return self.held(holder).await;
        }
        Err(StoreError(format!(
            "the lease of room {room} changes hands too fast"
        )))
    }

    /// A node at its limit takes no room: a lease it holds is still its own (the room runs
    /// here already, or its answer was lost), one held elsewhere is that node's, and a free
    /// one is for the least-loaded node with room to spare.
    async fn claim_when_full(&self, room: &str) -> Result<Claim, StoreError> {
        if let Some(holder) = self.leases.holder(room).await? {
            return self.held(holder).await;
        }
        match self.place().await? {
            Placement::There(mut owners) => Ok(Claim::Elsewhere(owners.swap_remove(0))),
            Placement::Here | Placement::Full => Err(StoreError(FULL.to_string())),
        }
    }

    /// A draining node starts no room: a lease it still holds (a room handed over whose
    /// release failed) is released first, and the room goes where a full node sends it.
    async fn claim_when_draining(&self, room: &str) -> Result<Claim, StoreError> {
        if let Some(holder) = self.leases.holder(room).await?
            && holder.node == self.leases.node()
        {
            self.leases.release(&holder).await?;
        }
        self.claim_when_full(room).await
    }

    /// Whether this node, as it is now, is at one of its limits or draining.
    pub fn is_full_now(&self) -> bool {
        self.me().is_full()
    }

    /// Whether this node is draining (see [`Ownership::draining`]).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Marks this node draining: from now on it takes no room.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// A lease that is held: this node's to use, or the holder's (with its `httpAddr` from
    /// the live nodes).
    async fn held(&self, holder: Lease) -> Result<Claim, StoreError> {
        if holder.node == self.leases.node() {
            return Ok(Claim::Mine(holder));
        }
        let http_addr = self
            .nodes
            .live()
            .await?
            .into_iter()
            .find(|n| n.id == holder.node)
            .map(|n| n.http_addr);
        Ok(Claim::Elsewhere(Owner {
            node: holder.node,
            http_addr,
        }))
    }

    /// This node as placement sees it: its limits and its load right now.
    fn me(&self) -> NodeInfo {
        let (rooms, participants) = (self.load)();
        NodeInfo {
            id: self.leases.node().to_string(),
            http_addr: String::new(),
            media_addr: String::new(),
            rooms,
            participants,
            cpu: 0.0,
            started_at: 0,
            version: String::new(),
            secret_id: String::new(),
            max_rooms: self.max_rooms,
            max_participants: self.max_participants,
            draining: self.is_draining(),
        }
    }

    /// Chooses the node for a room that nobody runs: among the live nodes under their
    /// limits, the one with the least load (active rooms + participants; other nodes' load
    /// as of their last heartbeat, this node's as it is now); on a tie, this node (no hop),
    /// then the smallest id.
    pub async fn place(&self) -> Result<Placement, StoreError> {
        let me = self.me();
        let live = self.nodes.live().await?;
        let others = live.into_iter().filter(|n| n.id != me.id);
        let mut open: Vec<NodeInfo> = std::iter::once(me.clone())
            .chain(others)
            .filter(|n| !n.is_full())
            .collect();
        open.sort_by(|a, b| {
            (a.load(), a.id != me.id, &a.id).cmp(&(b.load(), b.id != me.id, &b.id))
        });
        Ok(match open.first() {
            None => Placement::Full,
            Some(n) if n.id == me.id => Placement::Here,
            Some(_) => Placement::There(
                open.into_iter()
                    .filter(|n| n.id != me.id)
                    .map(|n| Owner {
                        node: n.id,
                        http_addr: Some(n.http_addr),
                    })
                    .collect(),
            ),
        })
    }

    pub async fn update(&self, room: &RoomRecord, lease: &Lease) -> Result<(), WriteError> {
        Ok(self.store.update_fenced(room, lease).await?)
    }

    /// Writes the room's seats, fenced like the record, so that a node taking the room
    /// over gives them back to their participants' resumes; then lists the room (or, with
    /// no seats, unlists it) among this node's rooms with seats. A failure of the latter is
    /// logged only: the list is a hint (see `store::Seated`).
    pub async fn save_seats(
        &self,
        room: &RoomRecord,
        seats: &[Seat],
        lease: &Lease,
    ) -> Result<(), WriteError> {
        self.store.save_seats_fenced(room, seats, lease).await?;
        self.list_seated(&room.id, !seats.is_empty()).await;
        Ok(())
    }

    /// Lists the room among this node's rooms with seats, or unlists it.
    pub async fn list_seated(&self, room: &str, seated: bool) {
        let node = self.leases.node();
        let listed = if seated {
            self.seated.mark(node, room).await
        } else {
            self.seated.unmark(node, room).await
        };
        if let Err(e) = listed {
            tracing::warn!(%room, error = %e, "could not update the list of rooms with seats");
        }
    }

    /// The seats the room's previous owner last wrote.
    pub async fn seats(&self, id: &str) -> Result<Vec<Seat>, StoreError> {
        self.store.seats(id).await
    }

    pub async fn delete(&self, room: &RoomRecord, lease: &Lease) -> Result<(), WriteError> {
        self.store.delete_fenced(room, lease).await?;
        self.list_seated(&room.id, false).await;
        Ok(())
    }

    /// Removes the room at its expiry, fenced like [`Self::delete`]; the index entries go
    /// before the lease (see `RedisStore::delete_expired_fenced`).
    pub async fn delete_expired(&self, room: &RoomRecord, lease: &Lease) -> Result<(), WriteError> {
        Ok(self.store.delete_expired_fenced(room, lease).await?)
    }

    /// Reads the room as stored (after the lease is taken: the latest the previous owner
    /// could write).
    pub async fn get(&self, id: &str, now_ms: u64) -> Result<Option<RoomRecord>, StoreError> {
        self.store.get(id, now_ms).await
    }
}
