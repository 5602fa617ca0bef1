//! Reads queue depth over the host's `http` interface, to test base-URL confinement and
//! credential injection. `list` sends a GET to the pattern as a raw path and returns
//! `[status, body]`.

use qmedic_plugin_sdk::http::{Request, send};
use qmedic_plugin_sdk::{
    Adapter, Error, Message, Outgoing, QueueStats, Settlement, export_adapter,
};

fn get(conn: &str, path: &str) -> Result<(u16, String), Error> {
    let response = send(
        conn,
        &Request {
            method: "GET".into(),
            path: path.into(),
            headers: vec![("authorization".into(), "Basic forged".into())],
            body: vec![],
        },
    )?;
    Ok((
        response.status,
        String::from_utf8_lossy(&response.body).into_owned(),
    ))
}

fn unsupported<T>() -> Result<T, Error> {
    Err(Error::invalid(
        "the http-probe adapter only has stats and list",
    ))
}

struct HttpAdapter;

impl Adapter for HttpAdapter {
    fn stats(conn: String, queue: String) -> Result<QueueStats, Error> {
        let (status, body) = get(&conn, &format!("/queues/{queue}"))?;
        if status != 200 {
            return Err(Error::Unavailable(format!("status {status}: {body}")));
        }
        let depth = body
            .trim()
            .parse()
            .map_err(|_| Error::internal(format!("`{body}` is not a depth")))?;
        Ok(QueueStats {
            extra: vec![("status".into(), f64::from(status))],
            ..QueueStats::with_depth(depth)
        })
    }

    fn list(conn: String, pattern: String) -> Result<Vec<String>, Error> {
        let (status, body) = get(&conn, &pattern)?;
        Ok(vec![status.to_string(), body])
    }

    fn receive(_: String, _: String, _: u32, _: u32) -> Result<Vec<Message>, Error> {
        unsupported()
    }

    fn publish(_: String, _: Vec<Outgoing>) -> Result<(), Error> {
        unsupported()
    }

    fn settle(_: String, _: Vec<u64>, _: Settlement) -> Result<(), Error> {
        unsupported()
    }

    fn set_limit(_: String, _: String, _: String, _: u64) -> Result<(), Error> {
        unsupported()
    }
}

export_adapter!(HttpAdapter);
