//! An in-memory broker for routing tests. Queues live in the plugin's host `state`, so they
//! outlive one action call; received messages stay in flight until settled in the same call.

use std::cell::RefCell;
use std::collections::HashMap;

use qmedic_plugin_sdk::{
    Adapter, Error, Message, Outgoing, QueueStats, Settlement, export_adapter, glob, state,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// The knobs this broker has.
const LIMITS: &[&str] = &["prefetch", "max-length"];

#[derive(Clone, Serialize, Deserialize)]
struct Stored {
    id: u64,
    body: Vec<u8>,
    headers: Vec<(String, String)>,
    deliveries: u32,
}

thread_local! {
    /// Handles received in this call, with the queue each came from.
    static IN_FLIGHT: RefCell<HashMap<u64, (String, String, Stored)>> = RefCell::new(HashMap::new());
}

fn load<T: DeserializeOwned + Default>(key: &str) -> Result<T, Error> {
    match state::get(key)? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::internal(format!("state `{key}`: {e}"))),
        None => Ok(T::default()),
    }
}

fn save<T: Serialize>(key: &str, value: &T) -> Result<(), Error> {
    let bytes = serde_json::to_vec(value).map_err(|e| Error::internal(e.to_string()))?;
    state::set(key, &bytes)
}

fn queue_key(conn: &str, queue: &str) -> String {
    format!("queue/{conn}/{queue}")
}

fn push(conn: &str, queue: &str, msgs: Vec<Stored>) -> Result<(), Error> {
    let mut names: Vec<String> = load(&format!("queues/{conn}"))?;
    if !names.iter().any(|n| n == queue) {
        names.push(queue.to_string());
        save(&format!("queues/{conn}"), &names)?;
    }
    let mut stored: Vec<Stored> = load(&queue_key(conn, queue))?;
    stored.extend(msgs);
    save(&queue_key(conn, queue), &stored)
}

struct MemoryAdapter;

impl Adapter for MemoryAdapter {
    fn stats(conn: String, queue: String) -> Result<QueueStats, Error> {
        let names: Vec<String> = load(&format!("queues/{conn}"))?;
        if !names.contains(&queue) {
            return Err(Error::NotFound(format!(
                "queue `{queue}` does not exist on `{conn}`"
            )));
        }
        let stored: Vec<Stored> = load(&queue_key(&conn, &queue))?;
        let in_flight = IN_FLIGHT.with(|f| {
            f.borrow()
                .values()
                .filter(|(c, q, _)| *c == conn && *q == queue)
                .count()
        });
        let mut extra = Vec::new();
        for limit in LIMITS {
            if let Some(v) = load::<Option<u64>>(&format!("limit/{conn}/{queue}/{limit}"))? {
                extra.push((format!("limit.{limit}"), v as f64));
            }
        }
        Ok(QueueStats {
            in_flight: in_flight as u64,
            consumers: Some(1),
            dead_letter: Some(format!("{queue}.dlq")),
            extra,
            ..QueueStats::with_depth(stored.len() as u64)
        })
    }

    fn list(conn: String, pattern: String) -> Result<Vec<String>, Error> {
        let names: Vec<String> = load(&format!("queues/{conn}"))?;
        Ok(names.into_iter().filter(|n| glob(&pattern, n)).collect())
    }

    fn receive(
        conn: String,
        queue: String,
        max: u32,
        _wait_ms: u32,
    ) -> Result<Vec<Message>, Error> {
        let mut stored: Vec<Stored> = load(&queue_key(&conn, &queue))?;
        let take = stored.len().min(max as usize);
        let taken: Vec<Stored> = stored.drain(..take).collect();
        save(&queue_key(&conn, &queue), &stored)?;
        Ok(IN_FLIGHT.with(|f| {
            let mut f = f.borrow_mut();
            taken
                .into_iter()
                .map(|mut m| {
                    m.deliveries += 1;
                    f.insert(m.id, (conn.clone(), queue.clone(), m.clone()));
                    Message {
                        handle: m.id,
                        id: Some(m.id.to_string()),
                        body: m.body,
                        headers: m.headers,
                        deliveries: m.deliveries,
                        origin: None,
                    }
                })
                .collect()
        }))
    }

    fn publish(conn: String, msgs: Vec<Outgoing>) -> Result<(), Error> {
        let mut next: u64 = load(&format!("next-id/{conn}"))?;
        let mut by_queue: HashMap<String, Vec<Stored>> = HashMap::new();
        for m in msgs {
            next += 1;
            by_queue.entry(m.destination).or_default().push(Stored {
                id: next,
                body: m.body,
                headers: m.headers,
                deliveries: 0,
            });
        }
        save(&format!("next-id/{conn}"), &next)?;
        for (queue, msgs) in by_queue {
            push(&conn, &queue, msgs)?;
        }
        Ok(())
    }

    fn settle(conn: String, handles: Vec<u64>, how: Settlement) -> Result<(), Error> {
        for handle in handles {
            let Some((c, queue, msg)) = IN_FLIGHT.with(|f| f.borrow_mut().remove(&handle)) else {
                return Err(Error::NotFound(format!("handle {handle} is not in flight")));
            };
            debug_assert_eq!(c, conn);
            match how {
                Settlement::Ack => {}
                Settlement::Requeue => push(&conn, &queue, vec![msg])?,
                Settlement::DeadLetter => push(&conn, &format!("{queue}.dlq"), vec![msg])?,
            }
        }
        Ok(())
    }

    fn set_limit(conn: String, queue: String, name: String, value: u64) -> Result<(), Error> {
        if !LIMITS.contains(&name.as_str()) {
            return Err(Error::invalid(format!(
                "the memory broker has no limit `{name}`; it has {}",
                LIMITS.join(", ")
            )));
        }
        save(&format!("limit/{conn}/{queue}/{name}"), &Some(value))
    }
}

export_adapter!(MemoryAdapter);
