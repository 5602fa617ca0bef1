//! The `http` host interface: requests go only under a connection's base URL, and the host adds
//! the connection's credentials, which the plugin cannot see or override.

use std::sync::{Arc, Mutex};

use qmedic::{CallError, Runtime};
use qmedic_tests::{failure, plugin_entry, runtime};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A tiny HTTP server on loopback that records each request head and answers `42` under
/// `/api/queues/orders`, 404 elsewhere.
async fn server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 << 10];
                let mut len = 0;
                while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf[len..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => len += n,
                    }
                }
                let head = String::from_utf8_lossy(&buf[..len]).to_lowercase();
                let found = head.starts_with("get /api/queues/orders ");
                log.lock().expect("log").push(head);
                let (status, body) = if found {
                    ("200 OK", "42")
                } else {
                    ("404 Not Found", "no")
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            });
        }
    });
    (port, seen)
}

fn agent(port: u16, auth: &str) -> Runtime {
    runtime(&format!(
        "connections:\n  web:\n    kind: http-probe\n    http_url: http://127.0.0.1:{port}/api\n{auth}\
         plugins:\n{}{}",
        plugin_entry("http-adapter", "connections: [web]"),
        plugin_entry("broker-probe", "connections: [web]"),
    ))
}

async fn list(rt: &Runtime, path: &str) -> Result<Value, CallError> {
    let steps = json!({ "steps": [{ "op": "list", "connection": "web", "pattern": path }] });
    let report = rt
        .call_action("broker-probe", &steps.to_string())
        .await
        .outcome?;
    Ok(serde_json::from_str::<Value>(&report).expect("JSON")["results"][0].clone())
}

#[tokio::test]
async fn the_host_adds_credentials_the_plugin_cannot_see_or_forge() {
    let (port, seen) = server().await;
    let secret = tempfile::NamedTempFile::new().expect("secret file");
    std::fs::write(secret.path(), "pa55word\n").expect("write secret");
    let rt = agent(
        port,
        &format!(
            "    username: monitor\n    password_file: {}\n",
            secret.path().display()
        ),
    );

    let steps = json!({ "steps": [{ "op": "stats", "connection": "web", "queue": "orders" }] });
    let report = rt
        .call_action("broker-probe", &steps.to_string())
        .await
        .outcome
        .expect("stats over http");
    let report: Value = serde_json::from_str(&report).expect("JSON");
    assert_eq!(report["results"][0]["depth"], 42);

    let heads = seen.lock().expect("log").clone();
    assert_eq!(heads.len(), 1);
    // base64("monitor:pa55word")
    assert!(
        heads[0].contains("authorization: basic bw9uaxrvcjpwytu1d29yza=="),
        "{}",
        heads[0]
    );
    assert!(
        !heads[0].contains("forged"),
        "the plugin's own authorization header must be dropped"
    );
}

#[tokio::test]
async fn bearer_tokens_are_sent_too() {
    let (port, seen) = server().await;
    let rt = agent(port, "    token: t0ken\n");
    assert_eq!(
        list(&rt, "/queues/orders").await.expect("list"),
        json!(["200", "42"])
    );
    assert!(seen.lock().expect("log")[0].contains("authorization: bearer t0ken"));
}

#[tokio::test]
async fn requests_cannot_leave_the_base_url() {
    let (port, seen) = server().await;
    let rt = agent(port, "");
    assert_eq!(
        list(&rt, "/missing").await.expect("inside the base"),
        json!(["404", "no"])
    );
    for escape in [
        "/../secret".to_string(),
        "/%2e%2e/secret".to_string(),
        "//example.com/x".to_string(),
        format!("http://127.0.0.1:{port}/other"),
        "queues/orders".to_string(),
    ] {
        let msg = failure("denied", list(&rt, &escape).await);
        assert!(
            msg.contains("outside connection `web`'s base URL"),
            "{escape}: {msg}"
        );
    }
    assert_eq!(
        seen.lock().expect("log").len(),
        1,
        "denied requests never reach the server"
    );
}

#[tokio::test]
async fn an_adapter_reaches_only_the_connections_it_is_granted() {
    let (port, seen) = server().await;
    let rt = runtime(&format!(
        "connections:\n  web:\n    kind: http-probe\n    http_url: http://127.0.0.1:{port}/api\nplugins:\n{}{}",
        plugin_entry("http-adapter", ""),
        plugin_entry("broker-probe", "connections: [web]"),
    ));
    let msg = failure("denied", list(&rt, "/queues/orders").await);
    assert!(
        msg.contains("plugin `http-adapter` is not granted connection `web`"),
        "{msg}"
    );
    assert!(seen.lock().expect("log").is_empty());
}
