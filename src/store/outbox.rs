//! The webhook outbox in Redis: one stream per webhook URL, holding every event not yet
//! delivered to that URL, in the order the events happened (so in order per room too).
//! An event is appended to every URL's stream at once (one script), read back by the node
//! that delivers webhooks, and removed (`XDEL`) once its URL answered 2xx or it was given
//! up. After a restart or a crash, whatever is still in a stream is delivered again: the
//! contract is at-least-once, with the event id for deduplication.
//!
//! Keys (all in the slot of the hash tag `{webhooks}`, so the append script is atomic on
//! a Redis Cluster too): `P:{webhooks}:<target>`, the stream of one URL (`<target>`: the
//! first 16 hex digits of the URL's SHA-256), and `P:{webhooks}:deliverer`, the id of the
//! node that delivers (with `cluster`, so that two nodes never deliver the same entries).

use super::StoreError;
use super::conn::Redis;
use std::sync::Arc;
use std::time::Duration;

/// One event as the outbox keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The event's id (also inside `body`).
    pub id: String,
    pub room: String,
    /// When it happened, ms since the epoch (also inside `body`).
    pub at: u64,
    /// The JSON that is POSTed.
    pub body: String,
}

pub struct Outbox {
    redis: Arc<Redis>,
    append: redis::Script,
    claim: redis::Script,
}

impl Outbox {
    pub fn new(redis: Arc<Redis>) -> Self {
        Self {
            redis,
            // KEYS: the streams. ARGV: id, room, at, body of each event, in order.
            append: redis::Script::new(
                "for k = 1, #KEYS do
                   for i = 1, #ARGV, 4 do
                     redis.call('XADD', KEYS[k], '*', 'id', ARGV[i], 'room', ARGV[i + 1],
                                'at', ARGV[i + 2], 'body', ARGV[i + 3])
                   end
                 end
                 return #ARGV / 4",
            ),
            // KEYS: deliverer. ARGV: node, ttl (ms). Takes or keeps the role.
            claim: redis::Script::new(
                "local holder = redis.call('GET', KEYS[1])
                 if not holder or holder == ARGV[1] then
                   redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
                   return 1
                 end
                 return 0",
            ),
        }
    }

    /// The stream of one target (see the module's key table).
    fn stream(&self, target: &str) -> String {
        self.redis.keys.webhooks(target)
    }

    /// Appends `events`, in order, to the stream of every target, in one script. A
    /// timed-out append may still have happened: appending again is safe (duplicates
    /// carry the same event id).
    pub async fn append(
        &self,
        targets: &[String],
        events: &[OutboxEntry],
    ) -> Result<(), StoreError> {
        let keys: Vec<String> = targets.iter().map(|t| self.stream(t)).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut args = Vec::with_capacity(events.len() * 4);
        for e in events {
            args.extend([
                e.id.clone(),
                e.room.clone(),
                e.at.to_string(),
                e.body.clone(),
            ]);
        }
        self.redis
            .eval::<i64>(&self.append, &keys, &args)
            .await
            .map(drop)
    }

    /// Up to `count` entries of a target's stream after the entry id `after` (all from the
    /// start with `None`), oldest first, with their stream ids. Entries that do not parse
    /// are answered as `None` so that the caller can remove them.
    pub async fn read(
        &self,
        target: &str,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<(String, Option<OutboxEntry>)>, StoreError> {
        let start = match after {
            Some(id) => format!("({id}"),
            None => "-".to_string(),
        };
        let rows: Vec<(String, Vec<String>)> = self
            .redis
            .query(
                redis::cmd("XRANGE")
                    .arg(self.stream(target))
                    .arg(start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(count),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|(stream_id, fields)| (stream_id, entry(&fields)))
            .collect())
    }

    /// Removes a delivered (or given-up) entry from a target's stream.
    pub async fn remove(&self, target: &str, stream_id: &str) -> Result<(), StoreError> {
        self.redis
            .query::<i64>(redis::cmd("XDEL").arg(self.stream(target)).arg(stream_id))
            .await
            .map(drop)
    }

    /// Takes the deliverer's role for `ttl`, or keeps it when `node` has it; answers
    /// whether `node` has it now.
    pub async fn claim(&self, node: &str, ttl: Duration) -> Result<bool, StoreError> {
        let key = self.redis.keys.webhooks("deliverer");
        self.redis
            .eval::<i64>(
                &self.claim,
                &[&key],
                &[node.to_string(), ttl.as_millis().max(1).to_string()],
            )
            .await
            .map(|held| held == 1)
    }
}

/// An entry's fields (`id`, `room`, `at`, `body`, as alternating names and values).
fn entry(fields: &[String]) -> Option<OutboxEntry> {
    let get = |name: &str| {
        fields
            .chunks(2)
            .find(|pair| pair.len() == 2 && pair[0] == name)
            .map(|pair| pair[1].clone())
    };
    Some(OutboxEntry {
        id: get("id")?,
        room: get("room")?,
        at: get("at")?.parse().ok()?,
        body: get("body")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_from_their_fields() {
        let fields: Vec<String> = ["id", "e1", "room", "r", "at", "12", "body", "{}"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            entry(&fields),
            Some(OutboxEntry {
                id: "e1".into(),
                room: "r".into(),
                at: 12,
                body: "{}".into()
            })
        );
        assert_eq!(entry(&fields[..6]), None);
    }
}
