//! `http`: requests to a connection's base URL, with the connection's credentials added here.

use super::bindings::adapter::qmedic::plugin::http::{Host, Request, Response};
use super::{Access, HostState, WitError};

impl Host for HostState {
    async fn send(
        &mut self,
        conn: String,
        req: Request,
    ) -> wasmtime::Result<Result<Response, WitError>> {
        if let Err(e) = self.check(Access::Http(&conn)) {
            return Ok(Err(e));
        }
        let remaining = self.remaining();
        let max_body = self.plugin.limits.output;
        let connection = match self.env.connection(&conn) {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        Ok(connection.send(&conn, req, remaining, max_body).await)
    }
}
