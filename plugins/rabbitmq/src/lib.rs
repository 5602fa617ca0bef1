//! The RabbitMQ adapter: broker-neutral `broker` calls in RabbitMQ's terms.
//!
//! - `stats` reads `/api/queues/%2F/{queue}` from the management API through the connection's
//!   `http_url`; when that is unreachable it falls back to a passive declare and says so in the
//!   stats (`extra` holds `source.passive-declare = 1`).
//! - `receive` consumes with a prefetch of the batch size; messages stay unacknowledged until
//!   `settle`. Each message carries its AMQP properties, typed headers included, in the
//!   `amqp.properties` header, and its string headers as plain headers.
//! - `publish` sends to the default exchange with the destination queue as routing key, as
//!   mandatory, and returns once RabbitMQ confirmed every message. Properties come from
//!   `amqp.properties` when present, so a redriven message keeps them; other headers are set
//!   as strings.
//! - `settle`: ack, requeue (nack with requeue) or dead-letter (nack without requeue, which
//!   RabbitMQ routes to the queue's dead-letter exchange).
//!
//! Queues are on the default virtual host `/`.

use qmedic_plugin_sdk::amqp::{self, Publishing};
use qmedic_plugin_sdk::http::{Request, send};
use qmedic_plugin_sdk::{
    Adapter, Error, Message, Outgoing, QueueStats, Settlement, export_adapter, log,
};
use serde_json::{Map, Value, json};

/// The header carrying a message's full AMQP properties as JSON.
const PROPERTIES_HEADER: &str = "amqp.properties";

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// GET a management API path as JSON; `None` when the API cannot be reached at all.
fn management(conn: &str, path: &str) -> Result<Option<Value>, Error> {
    let request = Request {
        method: "GET".into(),
        path: path.into(),
        headers: vec![],
        body: vec![],
    };
    let response = match send(conn, &request) {
        Ok(r) => r,
        Err(Error::Unavailable(e)) | Err(Error::Invalid(e)) => {
            log::warn(&format!(
                "management API not usable on `{conn}` ({e}); falling back to AMQP"
            ));
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    match response.status {
        200 => serde_json::from_slice(&response.body)
            .map(Some)
            .map_err(|e| {
                Error::internal(format!(
                    "management API answered {path} with invalid JSON: {e}"
                ))
            }),
        404 => Err(Error::NotFound(format!(
            "{path} does not exist on `{conn}`"
        ))),
        401 | 403 => Err(Error::Denied(format!(
            "the management API refused {path} on `{conn}` ({}); check the connection's credentials and tags",
            response.status
        ))),
        status => {
            log::warn(&format!(
                "management API answered {path} with {status}; falling back to AMQP"
            ));
            Ok(None)
        }
    }
}

fn number(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_f64()
}

fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob(&pattern[1..], name) || (!name.is_empty() && glob(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => glob(&pattern[1..], &name[1..]),
        (Some(a), Some(b)) if a == b => glob(&pattern[1..], &name[1..]),
        _ => false,
    }
}

/// A header value as text: strings as they are, anything else as its tagged JSON.
fn header_text(value: &Value) -> String {
    match value {
        Value::Object(tagged) if tagged.len() == 1 => match tagged.iter().next() {
            Some((_, Value::String(s))) => s.clone(),
            Some((_, Value::Array(bytes))) if bytes.iter().all(Value::is_u64) => {
                let bytes: Vec<u8> = bytes
                    .iter()
                    .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                    .collect();
                String::from_utf8(bytes).unwrap_or_else(|_| value.to_string())
            }
            _ => value.to_string(),
        },
        other => other.to_string(),
    }
}

struct RabbitMq;

impl Adapter for RabbitMq {
    fn stats(conn: String, queue: String) -> Result<QueueStats, Error> {
        if let Some(q) = management(&conn, &format!("/queues/%2F/{}", percent_encode(&queue)))? {
            let dead_letter = q
                .pointer("/arguments/x-dead-letter-routing-key")
                .or_else(|| q.pointer("/arguments/x-dead-letter-exchange"))
                .and_then(Value::as_str)
                .map(str::to_string);
            return Ok(QueueStats {
                depth: number(&q, &["messages_ready"]).unwrap_or(0.0) as u64,
                in_flight: number(&q, &["messages_unacknowledged"]).unwrap_or(0.0) as u64,
                consumers: number(&q, &["consumers"]).map(|c| c as u32),
                oldest_age_ms: None,
                publish_rate: number(&q, &["message_stats", "publish_details", "rate"]),
                ack_rate: number(&q, &["message_stats", "ack_details", "rate"]),
                redelivered: number(&q, &["message_stats", "redeliver"]).map(|r| r as u64),
                dead_letter,
                extra: vec![("messages".into(), number(&q, &["messages"]).unwrap_or(0.0))],
            });
        }
        let info = amqp::declare_passive(&conn, &queue)?;
        Ok(QueueStats {
            depth: u64::from(info.messages),
            in_flight: 0,
            consumers: Some(info.consumers),
            oldest_age_ms: None,
            publish_rate: None,
            ack_rate: None,
            redelivered: None,
            dead_letter: None,
            extra: vec![("source.passive-declare".into(), 1.0)],
        })
    }

    fn list(conn: String, pattern: String) -> Result<Vec<String>, Error> {
        let Some(queues) = management(&conn, "/queues/%2F?columns=name")? else {
            return Err(Error::Unavailable(format!(
                "listing queues on `{conn}` needs the management API; set the connection's http_url"
            )));
        };
        let mut names: Vec<String> = queues
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|q| q.get("name")?.as_str().map(str::to_string))
            .filter(|n| glob(pattern.as_bytes(), n.as_bytes()))
            .collect();
        names.sort();
        Ok(names)
    }

    fn receive(conn: String, queue: String, max: u32, wait_ms: u32) -> Result<Vec<Message>, Error> {
        let deliveries = amqp::consume(&conn, &queue, max, wait_ms)?;
        Ok(deliveries
            .into_iter()
            .map(|d| {
                let props: Value = serde_json::from_str(&d.properties).unwrap_or(Value::Null);
                let mut headers: Vec<(String, String)> = props
                    .get("headers")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), header_text(v)))
                    .collect();
                headers.push((PROPERTIES_HEADER.into(), d.properties.clone()));
                Message {
                    handle: d.tag,
                    id: props
                        .get("message_id")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    body: d.body,
                    headers,
                    deliveries: 1 + u32::from(d.redelivered),
                    origin: None,
                }
            })
            .collect())
    }

    fn publish(conn: String, msgs: Vec<Outgoing>) -> Result<(), Error> {
        let publishings = msgs
            .into_iter()
            .map(|m| {
                let mut props: Map<String, Value> = m
                    .headers
                    .iter()
                    .find(|(k, _)| k == PROPERTIES_HEADER)
                    .map(|(_, v)| serde_json::from_str(v))
                    .transpose()
                    .map_err(|e| {
                        Error::invalid(format!(
                            "{PROPERTIES_HEADER} is not AMQP properties JSON: {e}"
                        ))
                    })?
                    .unwrap_or_default();
                let mut table: Map<String, Value> = props
                    .get("headers")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                for (k, v) in &m.headers {
                    if k == PROPERTIES_HEADER {
                        continue;
                    }
                    // Keep a header's original AMQP type unless the action changed its value.
                    if table.get(k).map(header_text).as_deref() != Some(v.as_str()) {
                        table.insert(k.clone(), json!({ "LongString": v.as_bytes() }));
                    }
                }
                props.insert("headers".into(), Value::Object(table));
                Ok(Publishing {
                    exchange: String::new(),
                    routing_key: m.destination,
                    properties: Value::Object(props).to_string(),
                    body: m.body,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        amqp::publish(&conn, &publishings)
    }

    fn settle(conn: String, handles: Vec<u64>, how: Settlement) -> Result<(), Error> {
        match how {
            Settlement::Ack => amqp::ack(&conn, &handles),
            Settlement::Requeue => amqp::nack(&conn, &handles, true),
            Settlement::DeadLetter => amqp::nack(&conn, &handles, false),
        }
    }

    fn set_limit(_conn: String, _queue: String, name: String, _value: u64) -> Result<(), Error> {
        Err(Error::invalid(format!(
            "RabbitMQ has no server-side knob `{name}` that this adapter sets yet; prefetch is set by \
             the consumer (basic.qos)"
        )))
    }
}

export_adapter!(RabbitMq);
