//! AMQP 0-9-1 over lapin: one connection per configured connection, shared by every call, and
//! one confirm-mode channel per adapter instance.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::Confirmation;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Consumer};
use reqwest::Url;

use crate::host::WitError;
use crate::host::bindings::adapter::qmedic::plugin::amqp::{Delivery, Publishing, QueueInfo};

/// After the first message of a batch, how long `consume` waits for each further one.
const BATCH_LINGER: Duration = Duration::from_millis(2);
/// Smallest prefetch of a consumer: a channel's unacknowledged messages count against it, so a
/// small first batch must not starve later, larger ones.
const MIN_PREFETCH: u16 = 1_000;

/// The AMQP side of a connection: its address with credentials, and the live connection.
pub(crate) struct AmqpPool {
    url: Option<String>,
    vhost: String,
    connection: tokio::sync::Mutex<Option<lapin::Connection>>,
}

impl AmqpPool {
    /// `url` is the connection's `amqp://` or `amqps://` address; credentials from the config are
    /// put into it here, never shown to plugins.
    pub(crate) fn new(
        url: Option<&str>,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Result<Self, String> {
        let url = match url {
            Some(u) if u.starts_with("amqp://") || u.starts_with("amqps://") => {
                let mut parsed =
                    Url::parse(u).map_err(|e| format!("url `{u}` is not a URL: {e}"))?;
                if let Some(user) = username {
                    parsed
                        .set_username(user)
                        .map_err(|()| format!("url `{u}` cannot carry a username"))?;
                    parsed
                        .set_password(password)
                        .map_err(|()| format!("url `{u}` cannot carry a password"))?;
                }
                Some(parsed.to_string())
            }
            _ => None,
        };
        let vhost = match &url {
            Some(u) => vhost_of(u)?,
            None => "/".to_string(),
        };
        Ok(AmqpPool {
            url,
            vhost,
            connection: tokio::sync::Mutex::new(None),
        })
    }

    /// The virtual host the connection's URL names.
    pub(crate) fn vhost(&self) -> &str {
        &self.vhost
    }

    /// A new channel in confirm mode, connecting (again) when needed.
    pub(crate) async fn channel(&self, conn: &str) -> Result<Channel, WitError> {
        let url = self.url.as_deref().ok_or_else(|| {
            WitError::Invalid(format!(
                "connection `{conn}` has no amqp:// url; set `url` in the config"
            ))
        })?;
        let mut guard = self.connection.lock().await;
        let usable = guard.as_ref().is_some_and(|c| c.status().connected());
        if !usable {
            let connection =
                lapin::Connection::connect(url, lapin::ConnectionProperties::default())
                    .await
                    .map_err(|e| unavailable(conn, "cannot connect", &e))?;
            *guard = Some(connection);
        }
        let Some(connection) = guard.as_ref() else {
            return Err(WitError::Internal(format!("connection `{conn}` vanished")));
        };
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| unavailable(conn, "cannot open a channel", &e))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| unavailable(conn, "cannot enable publisher confirms", &e))?;
        Ok(channel)
    }
}

/// One adapter instance's channel on one connection, with its consumers.
pub(crate) struct AmqpSession {
    channel: Channel,
    consumers: HashMap<String, Consumer>,
    /// Delivery tags handed out and not yet settled, so a batch can be settled with one
    /// `multiple` frame when no other unsettled message precedes it.
    unsettled: BTreeSet<u64>,
    /// Which channel of this instance this is. Handles carry it in their top bits, so a handle
    /// from a channel that has since closed is refused instead of settling whatever message
    /// has the same tag on the new channel.
    generation: u64,
    /// Opened on the first publish.
    publisher: Option<Channel>,
}

/// Bits of a handle that hold the delivery tag; the bits above hold the channel generation.
const TAG_BITS: u32 = 48;

impl AmqpSession {
    pub(crate) fn new(channel: Channel, generation: u64) -> Self {
        AmqpSession {
            channel,
            consumers: HashMap::new(),
            unsettled: BTreeSet::new(),
            generation,
            publisher: None,
        }
    }

    /// Whether the broker closed the channel (after an error such as a missing queue).
    pub(crate) fn is_closed(&self) -> bool {
        !self.channel.status().connected()
    }

    pub(crate) async fn declare_passive(
        &self,
        conn: &str,
        queue: &str,
    ) -> Result<QueueInfo, WitError> {
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let q = self
            .channel
            .queue_declare(queue.into(), options, FieldTable::default())
            .await
            .map_err(|e| broker_error(conn, &format!("queue `{queue}`"), &e))?;
        Ok(QueueInfo {
            messages: q.message_count(),
            consumers: q.consumer_count(),
        })
    }

    pub(crate) async fn consume(
        &mut self,
        conn: &str,
        queue: &str,
        max: u32,
        wait: Duration,
    ) -> Result<Vec<Delivery>, WitError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        if !self.consumers.contains_key(queue) {
            let prefetch = u16::try_from(max).unwrap_or(u16::MAX).max(MIN_PREFETCH);
            self.channel
                .basic_qos(prefetch, BasicQosOptions::default())
                .await
                .map_err(|e| broker_error(conn, "basic.qos", &e))?;
            let consumer = self
                .channel
                .basic_consume(
                    queue.into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| broker_error(conn, &format!("consuming from `{queue}`"), &e))?;
            self.consumers.insert(queue.to_string(), consumer);
        }
        let Some(consumer) = self.consumers.get_mut(queue) else {
            return Err(WitError::Internal(format!(
                "consumer for `{queue}` vanished"
            )));
        };
        let mut out = Vec::new();
        let mut linger = wait;
        while out.len() < max as usize {
            match tokio::time::timeout(linger, consumer.next()).await {
                Err(_) | Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(broker_error(conn, &format!("consuming from `{queue}`"), &e));
                }
                Ok(Some(Ok(d))) => {
                    self.unsettled.insert(d.delivery_tag);
                    out.push(Delivery {
                        tag: (self.generation << TAG_BITS) | d.delivery_tag,
                        exchange: d.exchange.to_string(),
                        routing_key: d.routing_key.to_string(),
                        redelivered: d.redelivered,
                        properties: serde_json::to_string(&d.properties)
                            .unwrap_or_else(|_| "{}".into()),
                        body: d.data,
                    });
                    linger = BATCH_LINGER;
                }
            }
        }
        Ok(out)
    }

    /// Publish on `channel` (a confirm-mode channel of this session's connection) and wait for
    /// the broker's confirmation of every message.
    pub(crate) async fn publish(
        channel: &Channel,
        conn: &str,
        msgs: Vec<Publishing>,
    ) -> Result<(), WitError> {
        let mut properties = Vec::with_capacity(msgs.len());
        for (i, m) in msgs.iter().enumerate() {
            properties.push(if m.properties.trim().is_empty() {
                BasicProperties::default()
            } else {
                serde_json::from_str(&m.properties).map_err(|e| {
                    WitError::Invalid(format!(
                        "message {i}: properties are not AMQP properties JSON: {e}"
                    ))
                })?
            });
        }
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        // Hand every message to the connection's writer before waiting for any: a publish
        // resolves once its frames are written, and awaiting them one by one would cost a
        // round through the I/O loop per message. They go out in order.
        let sends = msgs.iter().zip(properties).map(|(m, p)| {
            channel.basic_publish(
                m.exchange.as_str().into(),
                m.routing_key.as_str().into(),
                options,
                &m.body,
                p,
            )
        });
        let confirms = futures_util::future::try_join_all(sends)
            .await
            .map_err(|e| broker_error(conn, "basic.publish", &e))?;
        for (i, (m, confirm)) in msgs.iter().zip(confirms).enumerate() {
            let outcome = confirm
                .await
                .map_err(|e| broker_error(conn, "waiting for publisher confirms", &e))?;
            let target = format!(
                "exchange `{}` with routing key `{}`",
                m.exchange, m.routing_key
            );
            match outcome {
                Confirmation::Ack(None) => {}
                Confirmation::Ack(Some(_)) => {
                    return Err(WitError::Invalid(format!(
                        "message {i} to {target} was returned unroutable: no queue is bound for it"
                    )));
                }
                Confirmation::Nack(_) => {
                    return Err(WitError::Unavailable(format!(
                        "the broker refused to store message {i} to {target}"
                    )));
                }
                Confirmation::NotRequested => {
                    return Err(WitError::Internal(
                        "publisher confirms are not enabled on the channel".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The channel to publish on: a second one, so the broker handles this session's publishing
    /// and its deliveries in parallel (each channel is one process in RabbitMQ).
    pub(crate) fn publisher(&self) -> Option<&Channel> {
        self.publisher.as_ref().filter(|c| c.status().connected())
    }

    /// Keep `channel` as this session's publishing channel.
    pub(crate) fn set_publisher(&mut self, channel: Channel) {
        self.publisher = Some(channel);
    }

    pub(crate) async fn ack(&mut self, conn: &str, tags: &[u64]) -> Result<(), WitError> {
        self.settle(conn, tags, None).await
    }

    pub(crate) async fn nack(
        &mut self,
        conn: &str,
        tags: &[u64],
        requeue: bool,
    ) -> Result<(), WitError> {
        self.settle(conn, tags, Some(requeue)).await
    }

    /// Ack (`nack: None`) or nack `tags`. When they are exactly the oldest unsettled deliveries,
    /// one frame with `multiple` settles them all; otherwise one frame per tag.
    async fn settle(
        &mut self,
        conn: &str,
        handles: &[u64],
        nack: Option<bool>,
    ) -> Result<(), WitError> {
        if handles.iter().any(|h| h >> TAG_BITS != self.generation) {
            return Err(WitError::Unavailable(format!(
                "connection `{conn}`: these messages were received on a channel that has since \
                 closed; the broker has returned them to their queue, so they cannot be settled"
            )));
        }
        let wanted: BTreeSet<u64> = handles.iter().map(|h| h & ((1 << TAG_BITS) - 1)).collect();
        let Some(&last) = wanted.last() else {
            return Ok(());
        };
        let contiguous = self.unsettled.range(..=last).all(|t| wanted.contains(t));
        let frames: Vec<(u64, bool)> = if contiguous {
            vec![(last, true)]
        } else {
            wanted.iter().map(|t| (*t, false)).collect()
        };
        for (tag, multiple) in frames {
            let sent = match nack {
                None => {
                    self.channel
                        .basic_ack(tag, BasicAckOptions { multiple })
                        .await
                }
                Some(requeue) => {
                    self.channel
                        .basic_nack(tag, BasicNackOptions { multiple, requeue })
                        .await
                }
            };
            sent.map_err(|e| {
                broker_error(
                    conn,
                    if nack.is_some() {
                        "basic.nack"
                    } else {
                        "basic.ack"
                    },
                    &e,
                )
            })?;
        }
        for tag in &wanted {
            self.unsettled.remove(tag);
        }
        Ok(())
    }
}

/// The virtual host of an `amqp://` URL: its path without the leading `/`, percent-decoded;
/// `/` when the path is empty (`amqp://host` and `amqp://host/%2f` are both the default vhost).
fn vhost_of(url: &str) -> Result<String, String> {
    let parsed = Url::parse(url).map_err(|e| format!("url `{url}` is not a URL: {e}"))?;
    let path = parsed.path().strip_prefix('/').unwrap_or(parsed.path());
    if path.is_empty() {
        return Ok("/".into());
    }
    percent_decode(path).ok_or_else(|| format!("url `{url}`: the vhost is not valid UTF-8"))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn unavailable(conn: &str, what: &str, e: &lapin::Error) -> WitError {
    WitError::Unavailable(format!("connection `{conn}`: {what}: {e}"))
}

/// A broker error as the WIT error it means: a missing queue is `not-found`, access is
/// `denied`, a dropped connection `unavailable`.
fn broker_error(conn: &str, what: &str, e: &lapin::Error) -> WitError {
    let text = e.to_string();
    let message = format!("connection `{conn}`: {what}: {text}");
    if text.contains("NOT_FOUND") || text.contains("404") {
        WitError::NotFound(message)
    } else if text.contains("ACCESS_REFUSED") || text.contains("403") {
        WitError::Denied(message)
    } else {
        WitError::Unavailable(message)
    }
}

#[cfg(test)]
mod tests {
    use super::vhost_of;

    #[test]
    fn the_vhost_comes_from_the_url_path() {
        assert_eq!(vhost_of("amqp://h:5672/%2f").as_deref(), Ok("/"));
        assert_eq!(vhost_of("amqp://h:5672").as_deref(), Ok("/"));
        assert_eq!(
            vhost_of("amqp://h/orders%2Dprod").as_deref(),
            Ok("orders-prod")
        );
        assert_eq!(
            vhost_of("amqps://u:p@h:5671/team%2Fa").as_deref(),
            Ok("team/a")
        );
    }
}
