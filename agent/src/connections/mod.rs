//! Native clients the host owns on behalf of plugins: HTTP to a connection's API, AMQP, Kafka,
//! scalers.
//! Plugins name a connection; they never see its address's credentials.

mod amqp;
mod kafka;
mod scaler;

use std::time::Duration;

use reqwest::{Method, Url};

pub(crate) use amqp::{AmqpPool, AmqpSession};
pub(crate) use kafka::{KafkaPool, KafkaSession, Reader};
pub(crate) use scaler::Scaler;

use crate::config::ConnectionConfig;
use crate::host::WitError;
use crate::host::bindings::adapter::qmedic::plugin::http::{Request, Response};

/// Request headers a plugin may not set: credentials are the host's business, and the rest
/// belong to the HTTP client.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
];

/// How the host authenticates to a connection's HTTP API.
#[derive(Clone)]
enum Auth {
    None,
    Basic {
        username: String,
        password: Option<String>,
    },
    Bearer(String),
}

/// A configured connection, resolved for use.
pub(crate) struct Connection {
    pub(crate) kind: String,
    pub(crate) adapter: Option<String>,
    http_base: Option<Url>,
    auth: Auth,
    client: reqwest::Client,
    pub(crate) amqp: AmqpPool,
    pub(crate) kafka: KafkaPool,
}

impl Connection {
    pub(crate) fn new(config: &ConnectionConfig) -> Result<Connection, String> {
        let http_url = config.http_url.clone().or_else(|| {
            config
                .url
                .clone()
                .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        });
        let http_base = match http_url {
            None => None,
            Some(u) => {
                let mut url =
                    Url::parse(&u).map_err(|e| format!("http_url `{u}` is not a URL: {e}"))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(format!("http_url `{u}` must be http:// or https://"));
                }
                if !url.username().is_empty() || url.password().is_some() {
                    return Err("http_url must not carry credentials; set username and password (or password_file)".into());
                }
                if !url.path().ends_with('/') {
                    let path = format!("{}/", url.path());
                    url.set_path(&path);
                }
                Some(url)
            }
        };
        let auth = match (&config.token, &config.username) {
            (Some(token), _) => Auth::Bearer(token.expose().to_string()),
            (None, Some(username)) => Auth::Basic {
                username: username.clone(),
                password: config.password.as_ref().map(|p| p.expose().to_string()),
            },
            (None, None) => Auth::None,
        };
        let client = reqwest::Client::builder()
            // A redirect could carry the credentials elsewhere; adapters follow them by hand.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        let amqp = AmqpPool::new(
            config.url.as_deref(),
            config.username.as_deref(),
            config.password.as_ref().map(|p| p.expose()),
        )?;
        let kafka = KafkaPool::new(config.url.as_deref(), config.username.as_deref())?;
        Ok(Connection {
            kind: config.kind.clone(),
            adapter: config.adapter.clone(),
            http_base,
            auth,
            client,
            amqp,
            kafka,
        })
    }

    /// The URL `path` names under this connection's base URL, or `denied` if it leaves it.
    fn resolve(&self, conn: &str, path: &str) -> Result<Url, WitError> {
        let base = self.http_base.as_ref().ok_or_else(|| {
            WitError::Invalid(format!(
                "connection `{conn}` has no http_url; set one in the config to use HTTP"
            ))
        })?;
        let outside = || {
            WitError::Denied(format!(
                "`{path}` is outside connection `{conn}`'s base URL {base}; give a path under it, starting with `/`"
            ))
        };
        if !path.starts_with('/')
            || path.starts_with("//")
            || path.contains('\\')
            || path.chars().any(char::is_control)
        {
            return Err(outside());
        }
        let url = base.join(&path[1..]).map_err(|_| outside())?;
        let same_origin = url.scheme() == base.scheme()
            && url.host_str() == base.host_str()
            && url.port_or_known_default() == base.port_or_known_default();
        if !same_origin || !url.path().starts_with(base.path()) {
            return Err(outside());
        }
        Ok(url)
    }

    /// Send a plugin's request with this connection's credentials, reading at most `max_body`
    /// bytes of the answer.
    pub(crate) async fn send(
        &self,
        conn: &str,
        req: Request,
        timeout: Duration,
        max_body: u64,
    ) -> Result<Response, WitError> {
        let url = self.resolve(conn, &req.path)?;
        let method = Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
            .ok()
            .filter(|m| *m != Method::CONNECT && *m != Method::TRACE)
            .ok_or_else(|| {
                WitError::Invalid(format!(
                    "`{}` is not an HTTP method plugins may use",
                    req.method
                ))
            })?;
        let mut builder = self
            .client
            .request(method.clone(), url.clone())
            .timeout(timeout);
        for (name, value) in &req.headers {
            if !RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                builder = builder.header(name, value);
            }
        }
        builder = match &self.auth {
            Auth::None => builder,
            Auth::Basic { username, password } => builder.basic_auth(username, password.as_ref()),
            Auth::Bearer(token) => builder.bearer_auth(token),
        };
        if !req.body.is_empty() {
            builder = builder.body(req.body);
        }
        let failed = |e: reqwest::Error| {
            WitError::Unavailable(format!(
                "connection `{conn}`: {method} {url} failed: {}",
                without_url(e)
            ))
        };
        let mut response = builder.send().await.map_err(failed)?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if (body.len() + chunk.len()) as u64 > max_body {
                return Err(WitError::Invalid(format!(
                    "connection `{conn}`: the answer to {method} {url} is larger than the plugin's output cap of {max_body} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// A reqwest error's text without the URL it repeats.
fn without_url(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut parts = vec![e.to_string()];
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(http_url: &str) -> Connection {
        let config: ConnectionConfig =
            serde_saphyr::from_str(&format!("kind: test\nhttp_url: {http_url}\n")).expect("config");
        Connection::new(&config).expect("connection")
    }

    #[test]
    fn paths_stay_under_the_base_url() {
        let c = conn("http://127.0.0.1:15672/api");
        assert_eq!(
            c.resolve("c", "/queues/%2f/q").unwrap().as_str(),
            "http://127.0.0.1:15672/api/queues/%2f/q"
        );
        for escape in [
            "//evil.example/x",
            "/../x",
            "/%2e%2e/x",
            "http://evil/",
            "x",
            "/a\\b",
        ] {
            assert!(
                matches!(c.resolve("c", escape), Err(WitError::Denied(_))),
                "{escape} should be denied"
            );
        }
    }

    #[test]
    fn credentials_in_http_url_are_refused() {
        let config: ConnectionConfig =
            serde_saphyr::from_str("kind: test\nhttp_url: http://u:p@h/\n").expect("config");
        assert!(
            Connection::new(&config)
                .err()
                .unwrap()
                .contains("must not carry credentials")
        );
    }
}
