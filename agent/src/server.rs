//! `qmedic serve`'s HTTP side: `/healthz`, `/metrics`, `/api/plugins`, `/api/playbooks`,
//! `/api/runs` and `/api/runs/{id}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::playbook::{Executor, Playbook};
use crate::runtime::Runtime;
use crate::store::RunQuery;

/// What the handlers read.
#[derive(Clone)]
pub struct Api {
    /// Plugins, for `/api/plugins`.
    pub runtime: Runtime,
    /// Store and metrics.
    pub executor: Executor,
    /// The loaded playbooks.
    pub playbooks: Arc<Vec<Arc<Playbook>>>,
}

/// The HTTP routes.
pub fn router(api: Api) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/api/plugins", get(plugins))
        .route("/api/playbooks", get(playbooks))
        .route("/api/runs", get(runs))
        .route("/api/runs/{id}", get(run))
        .with_state(api)
}

async fn metrics(State(api): State<Api>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        api.executor.metrics().encode(),
    )
        .into_response()
}

async fn plugins(State(api): State<Api>) -> Response {
    let infos: Vec<_> = api.runtime.plugins().iter().map(|p| p.info()).collect();
    Json(infos).into_response()
}

async fn playbooks(State(api): State<Api>) -> Response {
    let list: Vec<_> = api
        .playbooks
        .iter()
        .map(|p| {
            serde_json::json!({
                "name": p.name,
                "description": p.description,
                "path": p.path,
                "schedule": p.on.schedule.as_ref().map(|s| &s.text),
                "alert": p.on.alert,
                "chat": p.on.chat,
                "params": p.params.iter().map(|(k, v)| (k.clone(), serde_json::json!({
                    "type": v.ty, "default": v.default, "description": v.description,
                }))).collect::<serde_json::Map<_, _>>(),
                "steps": p.steps.len(),
            })
        })
        .collect();
    Json(list).into_response()
}

#[derive(Deserialize)]
struct RunsQuery {
    playbook: Option<String>,
    limit: Option<u32>,
}

async fn runs(State(api): State<Api>, Query(q): Query<RunsQuery>) -> Response {
    let query = RunQuery {
        playbook: q.playbook,
        limit: q.limit.unwrap_or(50).min(1_000),
    };
    match api.executor.store().runs(&query).await {
        Ok(runs) => Json(runs).into_response(),
        Err(e) => unavailable(e),
    }
}

async fn run(State(api): State<Api>, Path(id): Path<i64>) -> Response {
    match api.executor.store().run(id).await {
        Ok(Some(run)) => Json(run).into_response(),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": format!("no run {id}") })),
        )
            .into_response(),
        Err(e) => unavailable(e),
    }
}

fn unavailable(e: crate::store::StoreError) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({ "error": e.to_string() })),
    )
        .into_response()
}
