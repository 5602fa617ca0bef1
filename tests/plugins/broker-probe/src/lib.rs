//! Runs a list of broker, state and scale operations through the host and reports each result.
//! The first error is returned as the call's error, unchanged, so tests can assert its kind.

use qmedic_plugin_sdk::{Action, Error, Outgoing, Settlement, broker, scale, state};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
enum Op {
    Stats {
        connection: String,
        queue: String,
    },
    List {
        connection: String,
        pattern: String,
    },
    Publish {
        connection: String,
        queue: String,
        bodies: Vec<String>,
        #[serde(default)]
        headers: Vec<(String, String)>,
    },
    /// Receive up to `max` and settle them all in the same call.
    /// Receive up to `max` (waiting up to a second for the first), settle them all, and
    /// report their bodies, or with `detail` their id, origin, deliveries and headers too.
    ReceiveSettle {
        connection: String,
        queue: String,
        max: u32,
        how: String,
        #[serde(default)]
        detail: bool,
    },
    SetLimit {
        connection: String,
        queue: String,
        name: String,
        value: u64,
    },
    /// Receive up to `max` from `from`, publish them unchanged to `to`, then ack them.
    Move {
        connection: String,
        from: String,
        to: String,
        max: u32,
    },
    StateSet {
        key: String,
        value: String,
    },
    StateGet {
        key: String,
    },
    Replicas {
        scaler: String,
        target: String,
    },
    SetReplicas {
        scaler: String,
        target: String,
        replicas: u32,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    steps: Vec<Op>,
}

#[derive(Serialize)]
struct Report {
    results: Vec<Value>,
}

fn run_op(op: Op) -> Result<Value, Error> {
    Ok(match op {
        Op::Stats { connection, queue } => {
            let s = broker::stats(&connection, &queue)?;
            json!({ "depth": s.depth, "in_flight": s.in_flight, "consumers": s.consumers, "extra": s.extra })
        }
        Op::List {
            connection,
            pattern,
        } => json!(broker::list(&connection, &pattern)?),
        Op::Publish {
            connection,
            queue,
            bodies,
            headers,
        } => {
            let msgs: Vec<Outgoing> = bodies
                .into_iter()
                .map(|b| Outgoing {
                    destination: queue.clone(),
                    key: None,
                    body: b.into_bytes(),
                    headers: headers.clone(),
                })
                .collect();
            let n = msgs.len();
            broker::publish(&connection, &msgs)?;
            json!(n)
        }
        Op::ReceiveSettle {
            connection,
            queue,
            max,
            how,
            detail,
        } => {
            let msgs = broker::receive(&connection, &queue, max, 1_000)?;
            let how = match how.as_str() {
                "ack" => Settlement::Ack,
                "requeue" => Settlement::Requeue,
                "dead-letter" => Settlement::DeadLetter,
                other => return Err(Error::invalid(format!("unknown settlement `{other}`"))),
            };
            let handles: Vec<u64> = msgs.iter().map(|m| m.handle).collect();
            broker::settle(&connection, &handles, how)?;
            let reported: Vec<Value> = msgs
                .iter()
                .map(|m| {
                    let body = String::from_utf8_lossy(&m.body).into_owned();
                    if detail {
                        json!({ "id": m.id, "body": body, "origin": m.origin,
                                "deliveries": m.deliveries, "headers": m.headers })
                    } else {
                        json!(body)
                    }
                })
                .collect();
            json!(reported)
        }
        Op::Move {
            connection,
            from,
            to,
            max,
        } => {
            let msgs = broker::receive(&connection, &from, max, 1_000)?;
            let out: Vec<Outgoing> = msgs
                .iter()
                .map(|m| Outgoing {
                    destination: to.clone(),
                    key: None,
                    body: m.body.clone(),
                    headers: m.headers.clone(),
                })
                .collect();
            broker::publish(&connection, &out)?;
            let handles: Vec<u64> = msgs.iter().map(|m| m.handle).collect();
            broker::settle(&connection, &handles, Settlement::Ack)?;
            json!(msgs.len())
        }
        Op::SetLimit {
            connection,
            queue,
            name,
            value,
        } => {
            broker::set_limit(&connection, &queue, &name, value)?;
            json!(value)
        }
        Op::StateSet { key, value } => {
            state::set(&key, value.as_bytes())?;
            Value::Null
        }
        Op::StateGet { key } => {
            json!(state::get(&key)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
        }
        Op::Replicas { scaler, target } => json!(scale::replicas(&scaler, &target)?),
        Op::SetReplicas {
            scaler,
            target,
            replicas,
        } => {
            scale::set_replicas(&scaler, &target, replicas)?;
            json!(replicas)
        }
    })
}

struct BrokerProbe;

impl Action for BrokerProbe {
    type Params = Params;
    type Report = Report;

    fn run(p: Params) -> Result<Report, Error> {
        let results = p.steps.into_iter().map(run_op).collect::<Result<_, _>>()?;
        Ok(Report { results })
    }
}

qmedic_plugin_sdk::export_action!(BrokerProbe);
