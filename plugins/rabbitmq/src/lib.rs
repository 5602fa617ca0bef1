//! The RabbitMQ adapter: broker-neutral `broker` calls in RabbitMQ's terms.
//!
//! - `stats` takes ready messages and consumers from a passive declare (live) and rates,
//!   unacknowledged counts and the dead-letter target from `/api/queues/{vhost}/{queue}` in the
//!   management API (through the connection's `http_url`), whose figures lag by its refresh
//!   interval. Without the API it says so in the stats (`extra` holds
//!   `source.passive-declare = 1`).
//! - `receive` consumes with a prefetch of the batch size; messages stay unacknowledged until
//!   `settle`. Each message carries its AMQP properties, typed headers included, in the
//!   `amqp.properties` header, and its string headers as plain headers.
//! - `publish` sends to the default exchange with the destination queue as routing key, as
//!   mandatory, and returns once RabbitMQ confirmed every message. Properties come from
//!   `amqp.properties` when present, so a redriven message keeps them; other headers are set
//!   as strings.
//! - `settle`: ack, requeue (nack with requeue) or dead-letter (nack without requeue, which
//!   RabbitMQ routes to the queue's dead-letter exchange).
//! - `origin` of a dead-lettered message is the queue named by the newest `x-death` entry:
//!   publishing there through the default exchange reaches that queue alone, where going back
//!   through the original exchange would copy the message to every other queue bound to it.
//!   The entry's exchange and routing keys are in the `x-death.exchange` and
//!   `x-death.routing-keys` headers.
//! - `set-limit` sets server-side queue limits (`max-length`, `max-length-bytes`,
//!   `delivery-limit`, `message-ttl`, `expires`) with a policy named `qmedic.<queue>` that copies
//!   the policy already in effect and outranks it, so existing settings (dead-lettering, ...)
//!   are kept.
//!
//! Queues are on the default virtual host `/`.

use qmedic_plugin_sdk::amqp::{self, Publishing};
use qmedic_plugin_sdk::http::{Request, send};
use qmedic_plugin_sdk::{
    Adapter, Error, Message, Outgoing, QueueStats, Settlement, export_adapter, glob, log,
};
use serde_json::{Map, Value, json};

/// The header carrying a message's full AMQP properties as JSON.
const PROPERTIES_HEADER: &str = "amqp.properties";

/// Queue limits RabbitMQ enforces on the server, settable by policy.
const LIMITS: &[&str] = &[
    "max-length",
    "max-length-bytes",
    "delivery-limit",
    "message-ttl",
    "expires",
];

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

/// The connection's virtual host, encoded for a management API path (`/` is `%2F`).
fn vhost(conn: &str) -> Result<String, Error> {
    Ok(percent_encode(&amqp::vhost(conn)?))
}

/// GET a management API path as JSON; `None` when the API cannot be reached at all.
fn management(conn: &str, path: &str) -> Result<Option<Value>, Error> {
    call_management(conn, "GET", path, None)
}

/// Call the management API; `None` when it cannot be reached at all.
fn call_management(
    conn: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Option<Value>, Error> {
    let request = Request {
        method: method.into(),
        path: path.into(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
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
        201 | 204 => Ok(Some(Value::Null)),
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

/// Decode a tagged AMQP value from the properties JSON: strings and numbers as JSON.
fn plain(value: &Value) -> Value {
    match value {
        Value::Object(tagged) if tagged.len() == 1 => match tagged.iter().next() {
            Some((kind, inner)) if kind == "FieldArray" => {
                Value::Array(inner.as_array().into_iter().flatten().map(plain).collect())
            }
            Some((kind, inner)) if kind == "FieldTable" => plain_table(inner),
            Some((kind, Value::Array(_))) if kind == "LongString" || kind == "ByteArray" => {
                Value::String(header_text(value))
            }
            Some((_, inner)) => inner.clone(),
            None => Value::Null,
        },
        other => other.clone(),
    }
}

fn plain_table(table: &Value) -> Value {
    Value::Object(
        table
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), plain(v)))
            .collect(),
    )
}

/// The newest `x-death` entry of a message's headers, decoded.
fn last_death(properties: &Value) -> Option<Value> {
    let deaths = plain(properties.pointer("/headers/x-death")?);
    deaths.as_array()?.first().cloned()
}

fn escape_regex(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

struct RabbitMq;

impl Adapter for RabbitMq {
    fn stats(conn: String, queue: String) -> Result<QueueStats, Error> {
        // The passive declare is live; the management API's figures lag by its refresh
        // interval (5 s by default), so ready messages and consumers come from the declare,
        // rates and unacknowledged counts from the API.
        let live = match amqp::declare_passive(&conn, &queue) {
            Ok(info) => Some(info),
            Err(Error::Unavailable(e)) => {
                log::warn(&format!(
                    "AMQP not usable on `{conn}` ({e}); stats from the management API only"
                ));
                None
            }
            Err(e) => return Err(e),
        };
        let managed = management(
            &conn,
            &format!("/queues/{}/{}", vhost(&conn)?, percent_encode(&queue)),
        )?;
        match (managed, live) {
            (Some(q), live) => {
                let dead_letter = q
                    .pointer("/arguments/x-dead-letter-routing-key")
                    .or_else(|| q.pointer("/arguments/x-dead-letter-exchange"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                Ok(QueueStats {
                    depth: live.as_ref().map_or_else(
                        || number(&q, &["messages_ready"]).unwrap_or(0.0) as u64,
                        |l| u64::from(l.messages),
                    ),
                    in_flight: number(&q, &["messages_unacknowledged"]).unwrap_or(0.0) as u64,
                    consumers: live
                        .as_ref()
                        .map(|l| l.consumers)
                        .or_else(|| number(&q, &["consumers"]).map(|c| c as u32)),
                    oldest_age_ms: None,
                    publish_rate: number(&q, &["message_stats", "publish_details", "rate"]),
                    ack_rate: number(&q, &["message_stats", "ack_details", "rate"]),
                    redelivered: number(&q, &["message_stats", "redeliver"]).map(|r| r as u64),
                    dead_letter,
                    trend: None,
                    extra: vec![("messages".into(), number(&q, &["messages"]).unwrap_or(0.0))],
                })
            }
            (None, Some(info)) => Ok(QueueStats {
                consumers: Some(info.consumers),
                extra: vec![("source.passive-declare".into(), 1.0)],
                ..QueueStats::with_depth(u64::from(info.messages))
            }),
            (None, None) => Err(Error::Unavailable(format!(
                "neither AMQP nor the management API answered for `{queue}` on `{conn}`"
            ))),
        }
    }

    fn list(conn: String, pattern: String) -> Result<Vec<String>, Error> {
        let Some(queues) = management(&conn, &format!("/queues/{}?columns=name", vhost(&conn)?))?
        else {
            return Err(Error::Unavailable(format!(
                "listing queues on `{conn}` needs the management API; set the connection's http_url"
            )));
        };
        let mut names: Vec<String> = queues
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|q| q.get("name")?.as_str().map(str::to_string))
            .filter(|n| glob(&pattern, n))
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
                let death = last_death(&props);
                if let Some(death) = &death {
                    for (key, field) in [
                        ("x-death.exchange", "exchange"),
                        ("x-death.routing-keys", "routing-keys"),
                    ] {
                        if let Some(v) = death.get(field) {
                            headers.push((
                                key.into(),
                                v.as_str().map_or_else(|| v.to_string(), str::to_string),
                            ));
                        }
                    }
                }
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
                    origin: death
                        .as_ref()
                        .and_then(|x| x.get("queue")?.as_str().map(str::to_string)),
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
                    if k == PROPERTIES_HEADER || k.starts_with("x-death.") || k.starts_with("x-") {
                        // x- headers are RabbitMQ's; 4.x ignores client-set ones anyway.
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

    fn set_limit(conn: String, queue: String, name: String, value: u64) -> Result<(), Error> {
        if !LIMITS.contains(&name.as_str()) {
            let hint = if name == "prefetch" {
                "prefetch is set by each consumer (basic.qos), not by the server; "
            } else {
                ""
            };
            return Err(Error::invalid(format!(
                "RabbitMQ has no server-side limit `{name}`; {hint}it has {}",
                LIMITS.join(", ")
            )));
        }
        let encoded = percent_encode(&queue);
        let Some(q) = management(&conn, &format!("/queues/{}/{encoded}", vhost(&conn)?))? else {
            return Err(Error::Unavailable(format!(
                "setting `{name}` on `{queue}` needs the management API on `{conn}`; set its http_url"
            )));
        };
        // Only one policy applies to a queue: copy the one in effect and outrank it.
        let mut definition = q
            .get("effective_policy_definition")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let current = q
            .get("policy")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty() && !p.starts_with("qmedic."));
        let priority = match current {
            Some(policy) => {
                management(
                    &conn,
                    &format!("/policies/{}/{}", vhost(&conn)?, percent_encode(policy)),
                )?
                .and_then(|p| p.get("priority")?.as_i64())
                .unwrap_or(0)
                    + 1
            }
            None => 1,
        };
        definition.insert(name.clone(), json!(value));
        let policy = json!({
            "pattern": format!("^{}$", escape_regex(&queue)),
            "definition": definition,
            "priority": priority,
            "apply-to": "queues",
        });
        call_management(
            &conn,
            "PUT",
            &format!("/policies/{}/qmedic.{encoded}", vhost(&conn)?),
            Some(&policy),
        )?
        .ok_or_else(|| {
            Error::Unavailable(format!(
                "the management API on `{conn}` did not take the policy"
            ))
        })?;
        log::info(&format!(
            "policy qmedic.{queue}: {name} = {value} (priority {priority})"
        ));
        Ok(())
    }
}

export_adapter!(RabbitMq);
