//! `kafka`: offsets, group-less consumers, an idempotent producer and commits, for adapters.

use std::sync::Arc;
use std::time::Duration;

use super::bindings::adapter::qmedic::plugin::kafka::{
    GroupInfo, Host, KafkaRecord, PartitionOffsets, Producing,
};
use super::{Access, HostState, WitError};
use crate::connections::Reader;
use crate::runtime::Env;

impl HostState {
    /// The agent's connections, once the sandbox allows this plugin Kafka on `conn`. Taken
    /// before a call awaits anything, so no borrow of the store's state lives across an await.
    fn kafka_env(&self, conn: &str) -> Result<Arc<Env>, WitError> {
        self.check(Access::Kafka(conn))?;
        Ok(self.env.clone())
    }
}

/// `$env`: the connections once the sandbox allowed Kafka on `$conn`, or the call's error.
macro_rules! allowed {
    ($self:ident, $conn:expr) => {
        match $self.kafka_env($conn) {
            Ok(env) => env,
            Err(e) => return Ok(Err(e)),
        }
    };
}

impl Host for HostState {
    async fn topics(&mut self, conn: String) -> wasmtime::Result<Result<Vec<String>, WitError>> {
        let env = allowed!(self, &conn);
        let left = self.remaining();
        Ok(async move { env.connection(&conn)?.kafka.topics(&conn, left).await }.await)
    }

    async fn offsets(
        &mut self,
        conn: String,
        topic: String,
        group: Option<String>,
    ) -> wasmtime::Result<Result<Vec<PartitionOffsets>, WitError>> {
        let env = allowed!(self, &conn);
        let left = self.remaining();
        Ok(async move {
            let pool = &env.connection(&conn)?.kafka;
            pool.offsets(&conn, &topic, group.as_deref(), left).await
        }
        .await)
    }

    async fn describe_group(
        &mut self,
        conn: String,
        group: String,
    ) -> wasmtime::Result<Result<GroupInfo, WitError>> {
        let env = allowed!(self, &conn);
        let left = self.remaining();
        Ok(async move {
            let pool = &env.connection(&conn)?.kafka;
            pool.describe_group(&conn, &group, left).await
        }
        .await)
    }

    async fn consume(
        &mut self,
        conn: String,
        topic: String,
        group: String,
        max: u32,
        wait_ms: u32,
    ) -> wasmtime::Result<Result<Vec<KafkaRecord>, WitError>> {
        let env = allowed!(self, &conn);
        let left = self.remaining();
        let wait = Duration::from_millis(u64::from(wait_ms)).min(left);
        let pool = match env.connection(&conn) {
            Ok(c) => &c.kafka,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self
            .kafka
            .consume(
                pool,
                Reader {
                    conn: &conn,
                    topic: &topic,
                    group: &group,
                },
                max,
                wait,
                left,
            )
            .await)
    }

    async fn produce(
        &mut self,
        conn: String,
        records: Vec<Producing>,
    ) -> wasmtime::Result<Result<(), WitError>> {
        let env = allowed!(self, &conn);
        let left = self.remaining();
        Ok(async move {
            let pool = &env.connection(&conn)?.kafka;
            pool.produce(&conn, records, left).await
        }
        .await)
    }

    async fn commit(
        &mut self,
        conn: String,
        topic: String,
        group: String,
        offsets: Vec<(u32, u64)>,
    ) -> wasmtime::Result<Result<(), WitError>> {
        let env = allowed!(self, &conn);
        let left = self.remaining();
        Ok(async move {
            let pool = &env.connection(&conn)?.kafka;
            pool.commit(&conn, &topic, &group, offsets, left).await
        }
        .await)
    }
}
