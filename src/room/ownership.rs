//! One owner per room (with `cluster`): a room's actor runs only on the node that holds the
//! room's lease. The registry claims the lease before it starts an actor; the actor renews
//! it every third of the lease time and writes the room only through the fenced calls, and
//! stops at once when a renewal fails or a write is refused as stale. Without `cluster` there
//! is no `Ownership`, and rooms behave as on a single node.

use crate::model::{Owner, RoomRecord, Seat, StoreError};
use crate::store::{FencedError, Lease, Leases, Nodes, RedisStore, Store};
use std::sync::Arc;
use std::time::Duration;

/// What a node needs to own rooms: its leases, the fenced store, and the node list (to
/// find where the holder of a lease is reached).
pub struct Ownership {
    pub leases: Leases,
    pub store: Arc<RedisStore>,
    pub nodes: Arc<Nodes>,
    /// How long a lease lasts without renewal (`room_lease_ms`).
    pub lease_time: Duration,
}

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
    pub async fn claim(&self, room: &str) -> Result<Claim, StoreError> {
        // Twice: a lease that expires between the acquisition and the look at its holder.
        for _ in 0..2 {
            if let Some(lease) = self.leases.acquire(room).await? {
                return Ok(Claim::Mine(lease));
            }
            let Some(holder) = self.leases.holder(room).await? else {
                continue;
            };
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
            return Ok(Claim::Elsewhere(Owner {
                node: holder.node,
                http_addr,
            }));
        }
        Err(StoreError(format!(
            "the lease of room {room} changes hands too fast"
        )))
    }

    pub async fn update(&self, room: &RoomRecord, lease: &Lease) -> Result<(), WriteError> {
        Ok(self.store.update_fenced(room, lease).await?)
    }

    /// Writes the room's seats, fenced like the record, so that a node taking the room
    /// over gives them back to their participants' resumes.
    pub async fn save_seats(
        &self,
        room: &RoomRecord,
        seats: &[Seat],
        lease: &Lease,
    ) -> Result<(), WriteError> {
        Ok(self.store.save_seats_fenced(room, seats, lease).await?)
    }

    /// The seats the room's previous owner last wrote.
    pub async fn seats(&self, id: &str) -> Result<Vec<Seat>, StoreError> {
        self.store.seats(id).await
    }

    pub async fn delete(&self, room: &RoomRecord, lease: &Lease) -> Result<(), WriteError> {
        Ok(self.store.delete_fenced(room, lease).await?)
    }

    /// Reads the room as stored (after the lease is taken: the latest the previous owner
    /// could write).
    pub async fn get(&self, id: &str, now_ms: u64) -> Result<Option<RoomRecord>, StoreError> {
        self.store.get(id, now_ms).await
    }
}
