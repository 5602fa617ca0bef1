//! The built-in RabbitMQ adapter against the real server on 127.0.0.1:5672 (management API on
//! :15672; `scripts/services.sh` enables it). Queues are set up and checked with lapin directly.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel};
use qmedic::Runtime;
use qmedic_tests::rabbit::{
    channel, connection_yaml, dead_lettering_queue, depth, fresh_queue, management, reject_all,
    watch,
};
use qmedic_tests::{failure, plugin_entry, runtime};
use serde_json::{Value, json};

fn agent(http_url: &str) -> Runtime {
    runtime(&format!(
        "{}plugins:\n{}",
        connection_yaml(http_url),
        plugin_entry("broker-probe", "connections: [rabbit]"),
    ))
}

/// A fresh, empty queue named for this test.
async fn queue(channel: &Channel, name: &str) -> String {
    fresh_queue(
        channel,
        &format!("qmedic-test.{name}"),
        FieldTable::default(),
    )
    .await
}

async fn probe(rt: &Runtime, steps: Value) -> Result<Vec<Value>, qmedic::CallError> {
    let report = rt
        .call_action("broker-probe", &json!({ "steps": steps }).to_string())
        .await
        .outcome?;
    Ok(
        serde_json::from_str::<Value>(&report).expect("JSON")["results"]
            .as_array()
            .expect("results")
            .clone(),
    )
}

/// The adapter's stats for `queue`, asked every 500 ms until `done` accepts them (15 s at most:
/// the management API refreshes its figures every few seconds).
async fn stats_until(rt: &Runtime, queue: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let r = probe(
            rt,
            json!([{ "op": "stats", "connection": "rabbit", "queue": queue }]),
        )
        .await
        .expect("stats");
        if done(&r[0]) {
            return r[0].clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the stats never got there: {}",
            r[0]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_stats_receive_and_settle_on_a_real_queue() {
    let (_conn, ch) = channel().await;
    let q = queue(&ch, "basic").await;
    let rt = agent("http://127.0.0.1:15672/api");

    let r = probe(&rt, json!([{ "op": "publish", "connection": "rabbit", "queue": q, "bodies": ["a", "b", "c", "d", "e"] }]))
        .await
        .expect("publish");
    assert_eq!(r[0], 5);
    assert_eq!(
        depth(&ch, &q).await,
        5,
        "confirmed publishes are in the queue"
    );

    // The management API refreshes its figures every few seconds.
    let stats = stats_until(&rt, &q, |s| s["depth"] == 5).await;
    assert_eq!(stats["consumers"], 0);

    let r = probe(
        &rt,
        json!([
            { "op": "receive-settle", "connection": "rabbit", "queue": q, "max": 2, "how": "requeue" },
            { "op": "receive-settle", "connection": "rabbit", "queue": q, "max": 10, "how": "ack" },
        ]),
    )
    .await
    .expect("receive");
    assert_eq!(r[0].as_array().expect("bodies").len(), 2);
    assert_eq!(
        r[1].as_array().expect("bodies").len(),
        5,
        "requeued messages come back in the same call"
    );
    assert_eq!(depth(&ch, &q).await, 0);

    let list = probe(
        &rt,
        json!([{ "op": "list", "connection": "rabbit", "pattern": "qmedic-test.bas*" }]),
    )
    .await
    .expect("list");
    assert_eq!(list[0], json!([q]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_fall_back_to_a_passive_declare_and_say_so() {
    let (_conn, ch) = channel().await;
    let q = queue(&ch, "fallback").await;
    ch.basic_publish(
        "".into(),
        q.as_str().into(),
        BasicPublishOptions::default(),
        b"x",
        BasicProperties::default(),
    )
    .await
    .expect("publish")
    .await
    .expect("confirm");
    // Nothing listens on port 1: the management API is unreachable.
    let rt = agent("http://127.0.0.1:1/api");
    let r = probe(
        &rt,
        json!([{ "op": "stats", "connection": "rabbit", "queue": q }]),
    )
    .await
    .expect("stats");
    assert_eq!(r[0]["depth"], 1);
    assert_eq!(r[0]["extra"], json!([["source.passive-declare", 1.0]]));

    let msg = failure(
        "not-found",
        probe(
            &rt,
            json!([{ "op": "stats", "connection": "rabbit", "queue": "qmedic-test.absent" }]),
        )
        .await,
    );
    assert!(msg.contains("qmedic-test.absent"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_message_keeps_its_body_properties_and_typed_headers() {
    let (_conn, ch) = channel().await;
    let from = queue(&ch, "move-from").await;
    let to = queue(&ch, "move-to").await;
    let mut inner = FieldTable::default();
    inner.insert(
        ShortString::from("reason"),
        AMQPValue::LongString(LongString::from("rejected")),
    );
    let mut headers = FieldTable::default();
    headers.insert(ShortString::from("attempt"), AMQPValue::LongInt(3));
    headers.insert(
        ShortString::from("trace"),
        AMQPValue::LongString(LongString::from("abc-123")),
    );
    headers.insert(
        ShortString::from("x-history"),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(inner)])),
    );
    let properties = BasicProperties::default()
        .with_message_id(ShortString::from("m-1"))
        .with_content_type(ShortString::from("application/json"))
        .with_priority(4)
        .with_delivery_mode(2)
        .with_headers(headers);
    ch.basic_publish(
        "".into(),
        from.as_str().into(),
        BasicPublishOptions::default(),
        b"{\"order\":42}",
        properties.clone(),
    )
    .await
    .expect("publish")
    .await
    .expect("confirm");

    let rt = agent("http://127.0.0.1:15672/api");
    let r = probe(
        &rt,
        json!([{ "op": "move", "connection": "rabbit", "from": from, "to": to, "max": 10 }]),
    )
    .await
    .expect("move");
    assert_eq!(r[0], 1);
    assert_eq!(depth(&ch, &from).await, 0);

    let mut consumer = watch(&ch, &to).await;
    let moved = tokio::time::timeout(Duration::from_secs(5), consumer.next())
        .await
        .expect("a message")
        .expect("stream")
        .expect("delivery");
    assert_eq!(moved.data, b"{\"order\":42}");
    assert_eq!(
        moved.properties, properties,
        "properties and typed headers survive the move"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_message_names_its_origin() {
    let (_conn, ch) = channel().await;
    let dlq = fresh_queue(&ch, "qmedic-test.orders.dlq", FieldTable::default()).await;
    let orders = dead_lettering_queue(&ch, "qmedic-test.orders", &dlq).await;
    for i in 0..3 {
        ch.basic_publish(
            "".into(),
            orders.as_str().into(),
            BasicPublishOptions::default(),
            format!("o{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await
        .expect("publish");
    }
    reject_all(&ch, &orders, 3, &dlq).await;

    let rt = agent("http://127.0.0.1:15672/api");
    let r = probe(&rt, json!([{ "op": "receive-settle", "connection": "rabbit", "queue": dlq, "max": 10, "how": "requeue", "detail": true }]))
        .await
        .expect("receive");
    let msgs = r[0].as_array().expect("messages");
    assert_eq!(msgs.len(), 3);
    for m in msgs {
        assert_eq!(m["origin"], json!(orders), "{m}");
        let headers: Vec<(String, String)> =
            serde_json::from_value(m["headers"].clone()).expect("headers");
        assert!(
            headers.contains(&("x-death.exchange".into(), String::new())),
            "{headers:?}"
        );
        assert!(
            headers.contains(&("x-death.routing-keys".into(), format!("[\"{orders}\"]"))),
            "{headers:?}"
        );
    }
    // Requeued messages the adapter's consumer had prefetched return when its channel closes.
    let started = Instant::now();
    while depth(&ch, &dlq).await != 3 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "requeued messages must all return"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_limit_adds_a_policy_that_keeps_the_one_in_effect() {
    let (_conn, ch) = channel().await;
    let q = fresh_queue(&ch, "qmedic-test.limited", FieldTable::default()).await;
    let ops_policy = json!({ "pattern": "^qmedic-test\\.limited$", "definition": { "message-ttl": 600000 }, "priority": 5, "apply-to": "queues" });
    management("PUT", "/policies/%2F/qmedic-test-ops", Some(&ops_policy));

    let rt = agent("http://127.0.0.1:15672/api");
    // The operator's policy must be in effect before qmedic copies it.
    let started = Instant::now();
    while !management("GET", &format!("/queues/%2F/{q}"), None)
        .contains("\"policy\":\"qmedic-test-ops\"")
    {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "operator policy never applied"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    probe(&rt, json!([{ "op": "set-limit", "connection": "rabbit", "queue": q, "name": "max-length", "value": 10 }]))
        .await
        .expect("set-limit");
    let started = Instant::now();
    loop {
        let info: Value =
            serde_json::from_str(&management("GET", &format!("/queues/%2F/{q}"), None))
                .expect("JSON");
        if info["policy"] == json!(format!("qmedic.{q}")) {
            assert_eq!(
                info["effective_policy_definition"],
                json!({ "message-ttl": 600000, "max-length": 10 })
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "qmedic policy never applied: {info}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for i in 0..15 {
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            format!("{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await
        .expect("publish");
    }
    let started = Instant::now();
    while depth(&ch, &q).await != 10 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "max-length 10 not enforced"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let msg = failure("invalid", probe(&rt, json!([{ "op": "set-limit", "connection": "rabbit", "queue": q, "name": "prefetch", "value": 5 }])).await);
    assert!(
        msg.contains("basic.qos") && msg.contains("max-length"),
        "{msg}"
    );

    management("DELETE", "/policies/%2F/qmedic-test-ops", None);
    management("DELETE", &format!("/policies/%2F/qmedic.{q}"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_on_another_vhost_reads_that_vhost() {
    let vhost = "qmedic-test-vhost";
    management("PUT", &format!("/vhosts/{vhost}"), None);
    let all = json!({ "configure": ".*", "write": ".*", "read": ".*" });
    management("PUT", &format!("/permissions/{vhost}/guest"), Some(&all));
    // The same queue name on both vhosts, empty on the default one and holding 3 on the other.
    let (_conn, ch) = channel().await;
    let q = queue(&ch, "vhost").await;
    let other = lapin::Connection::connect(
        &format!("amqp://guest:guest@127.0.0.1:5672/{vhost}"),
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("connect to the vhost");
    let och = other.create_channel().await.expect("channel");
    fresh_queue(&och, &q, FieldTable::default()).await;
    och.confirm_select(Default::default())
        .await
        .expect("confirms");
    for body in ["a", "b", "c"] {
        och.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            BasicProperties::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    }
    let rt = runtime(&format!(
        "connections:\n  rabbit:\n    kind: rabbitmq\n    url: amqp://127.0.0.1:5672/{vhost}\n    \
         http_url: http://127.0.0.1:15672/api\n    username: guest\n    password: guest\nplugins:\n{}",
        plugin_entry("broker-probe", "connections: [rabbit]"),
    ));
    // The management figures (here `extra.messages`) lag by its refresh interval; the live
    // depth is the vhost's from the start.
    stats_until(&rt, &q, |s| {
        assert_eq!(s["depth"], 3, "the live depth is the vhost's: {s}");
        s["extra"] == json!([["messages", 3.0]])
    })
    .await;
    let list = probe(
        &rt,
        json!([{ "op": "list", "connection": "rabbit", "pattern": "qmedic-test.vh*" }]),
    )
    .await
    .expect("list");
    assert_eq!(list[0], json!([q]));
    management("DELETE", &format!("/vhosts/{vhost}"), None);
}
