//! The cluster's admin event stream in Redis: every node of a cluster appends its rooms'
//! events here, in order, and every node reads them all back, so that the admin event
//! stream of any node shows every room of the cluster with the same sequence numbers.
//!
//! Keys (all in the slot of the hash tag `{admin}`, so the append script is atomic on a
//! Redis Cluster too): `P:{admin}:events`, the stream, trimmed to about the admin event
//! log's size; `P:{admin}:seq`, the last sequence number given; and
//! `P:{admin}:writer:<node>`, `<run>:<n>` of the last entry a node's run appended (so that
//! an append retried after a lost answer is not appended twice).
//!
//! An entry has the fields `seq` (its sequence number for an event; for anything else the
//! last one given before it), `node` (who appended it) and `body` (JSON, read by
//! `admin::cluster`).

use super::StoreError;
use super::conn::Redis;
use std::sync::Arc;
use std::time::Duration;

/// One entry as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Its id in the stream (where the next read starts after).
    pub id: String,
    pub seq: u64,
    pub node: String,
    pub body: String,
}

pub struct AdminLog {
    redis: Arc<Redis>,
    max_len: usize,
    /// Tells this process's appends from those of an earlier run of the same node id.
    run: String,
    append: redis::Script,
    position: redis::Script,
}

impl AdminLog {
    /// The stream, trimmed to about `max_len` entries.
    pub fn new(redis: Arc<Redis>, max_len: usize) -> Self {
        Self {
            redis,
            max_len: max_len.max(1),
            run: uuid::Uuid::new_v4().to_string(),
            // KEYS: events, seq, writer. ARGV: node, body, numbered (1/0), max length, run,
            // n. Answers the entry's seq, or -1 when this run's entry n is in already.
            append: redis::Script::new(
                "local mark = redis.call('GET', KEYS[3])
                 if mark then
                   local run, n = string.match(mark, '^(.*):(%d+)$')
                   if run == ARGV[5] and tonumber(n) >= tonumber(ARGV[6]) then return -1 end
                 end
                 local seq
                 if ARGV[3] == '1' then
                   seq = redis.call('INCR', KEYS[2])
                 else
                   seq = tonumber(redis.call('GET', KEYS[2]) or '0')
                 end
                 redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*',
                            'seq', seq, 'node', ARGV[1], 'body', ARGV[2])
                 redis.call('SET', KEYS[3], ARGV[5] .. ':' .. ARGV[6], 'PX', 86400000)
                 return seq",
            ),
            // KEYS: events, seq. Answers the last seq given and the last entry's id.
            position: redis::Script::new(
                "local seq = redis.call('GET', KEYS[2]) or '0'
                 local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
                 local id = '0-0'
                 if #last > 0 then id = last[1][1] end
                 return {seq, id}",
            ),
        }
    }

    /// Appends this node's `n`th entry (`n` grows by one per entry of this process),
    /// numbered when `numbered`; answers its seq (`None` when it was in already).
    pub async fn append(
        &self,
        node: &str,
        n: u64,
        numbered: bool,
        body: &str,
    ) -> Result<Option<u64>, StoreError> {
        let keys = &self.redis.keys;
        let seq: i64 = self
            .redis
            .eval(
                &self.append,
                &[
                    &keys.admin("events"),
                    &keys.admin("seq"),
                    &keys.admin(&format!("writer:{node}")),
                ],
                &[
                    node.to_string(),
                    body.to_string(),
                    if numbered { "1" } else { "0" }.to_string(),
                    self.max_len.to_string(),
                    self.run.clone(),
                    n.to_string(),
                ],
            )
            .await?;
        Ok(u64::try_from(seq).ok())
    }

    /// The last sequence number given and the id of the stream's last entry ("0-0" when
    /// empty): where a reader that starts now starts.
    pub async fn position(&self) -> Result<(u64, String), StoreError> {
        let keys = &self.redis.keys;
        let (seq, id): (String, String) = self
            .redis
            .eval(
                &self.position,
                &[&keys.admin("events"), &keys.admin("seq")],
                &[],
            )
            .await?;
        Ok((seq.parse().unwrap_or(0), id))
    }

    /// Up to `count` entries after the id `after`, waiting up to `block` for the first
    /// (none when nothing came). Blocks the connection it runs on: call it from a thread
    /// of its own (each thread has its own connection). Entries that do not parse are
    /// answered with seq 0 and an empty body, so that the reader moves past them.
    pub async fn read(
        &self,
        after: &str,
        block: Duration,
        count: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        type Reply = Option<Vec<(String, Vec<(String, Vec<String>)>)>>;
        let reply: Reply = self
            .redis
            .query(
                redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(count)
                    .arg("BLOCK")
                    .arg(block.as_millis() as u64)
                    .arg("STREAMS")
                    .arg(self.redis.keys.admin("events"))
                    .arg(after),
            )
            .await?;
        Ok(reply
            .into_iter()
            .flatten()
            .flat_map(|(_, entries)| entries)
            .map(|(id, fields)| entry(id, &fields))
            .collect())
    }
}

/// An entry from its id and fields (names and values alternating).
fn entry(id: String, fields: &[String]) -> LogEntry {
    let get = |name: &str| {
        fields
            .chunks(2)
            .find(|pair| pair.len() == 2 && pair[0] == name)
            .map(|pair| pair[1].clone())
    };
    LogEntry {
        id,
        seq: get("seq").and_then(|s| s.parse().ok()).unwrap_or(0),
        node: get("node").unwrap_or_default(),
        body: get("body").unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_from_their_fields() {
        let fields: Vec<String> = ["seq", "7", "node", "a", "body", "{}"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            entry("1-0".into(), &fields),
            LogEntry {
                id: "1-0".into(),
                seq: 7,
                node: "a".into(),
                body: "{}".into()
            }
        );
        assert_eq!(entry("2-0".into(), &fields[..2]).body, "");
    }
}
