//! `/v1/webhooks`: subscriptions per zone and event type, and their delivery records.
//!
//! The signing secret is generated here, returned once, and stored sealed with the key-encryption
//! key; the leader's delivery worker opens it to sign each delivery (docs/webhooks.md has the
//! header format and a verification example).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use base64::Engine;
use certplane_core::apply::{get_delivery, get_webhook, list_webhooks};
use certplane_core::keys::index_prefix;
use certplane_core::policy::normalize_zone_path;
use certplane_core::store::{prefix_end, Keyspace, StateRead};
use certplane_core::webhook::{DeliveryRecord, EventKind, WebhookRecord};
use certplane_core::{Applied, Command, Permission, Proposal, Timestamp};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::access::require_in;
use super::certificates::read_barrier;
use super::error::{ApiError, ApiResult};
use super::extract::{request_hash, ApiJson, ApiQuery, Auth, Consistency, IdempotencyKey};
use super::openapi::ErrorResponse;
use super::sys::random_hex;
use super::view::rfc3339;
use super::{blocking, now_ms, AppState};

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookBody {
    /// Events in this zone and every zone below it.
    pub zone: String,
    /// Where to POST deliveries (http:// or https://).
    pub url: String,
    /// e.g. `["request.pending_approval", "request.issued"]`; `["*"]` for every event type.
    pub events: Vec<String>,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookView {
    pub id: String,
    pub zone: String,
    pub url: String,
    pub events: Vec<String>,
    pub description: String,
    pub created_at: String,
    pub created_by: String,
}

impl From<WebhookRecord> for WebhookView {
    fn from(w: WebhookRecord) -> Self {
        WebhookView {
            id: w.id,
            zone: w.zone,
            url: w.url,
            events: w.events.iter().map(|e| e.as_str().to_string()).collect(),
            description: w.description,
            created_at: rfc3339(w.created_at),
            created_by: w.created_by,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedWebhook {
    /// The HMAC-SHA256 signing secret, shown only in this answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub webhook: WebhookView,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliveryView {
    pub id: String,
    pub webhook_id: String,
    pub event: String,
    pub zone: String,
    /// pending, delivered or failed
    pub state: String,
    pub attempts: u32,
    pub next_attempt_at: String,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub delivered_at: Option<String>,
}

impl From<DeliveryRecord> for DeliveryView {
    fn from(d: DeliveryRecord) -> Self {
        DeliveryView {
            id: d.id,
            webhook_id: d.webhook_id,
            event: d.event.as_str().to_string(),
            zone: d.zone,
            state: serde_json::to_value(d.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            attempts: d.attempts,
            next_attempt_at: rfc3339(d.next_attempt_at),
            last_status: d.last_status,
            last_error: d.last_error,
            created_at: rfc3339(d.created_at),
            delivered_at: d.delivered_at.map(rfc3339),
        }
    }
}

fn new_webhook_secret() -> String {
    let mut buf = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
    )
}

#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", security(("bearer" = [])), request_body = CreateWebhookBody, responses((status = 201, description = "Created; `secret` is shown once", body = CreatedWebhook), (status = 400, description = "Invalid zone, URL or events; or no key-encryption key on this node", body = ErrorResponse), (status = 401, description = "Missing or invalid credentials", body = ErrorResponse), (status = 403, description = "Needs webhook_manage on the zone", body = ErrorResponse), (status = 503, description = "No leader; retry", body = ErrorResponse)))]
pub async fn create(
    State(state): State<AppState>,
    Auth(principal): Auth,
    IdempotencyKey(idem): IdempotencyKey,
    ApiJson(body, bytes): ApiJson<CreateWebhookBody>,
) -> ApiResult<(StatusCode, Json<CreatedWebhook>)> {
    let zone = normalize_zone_path(&body.zone)
        .map_err(|e| ApiError::bad_request("invalid_argument", format!("zone: {e}")))?;
    require_in(&principal, Permission::WebhookManage, &zone)?;
    let mut events = Vec::new();
    for name in &body.events {
        if name == "*" {
            events.extend(EventKind::ALL);
            continue;
        }
        events.push(EventKind::parse(name).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_argument",
                format!(
                    "unknown event {name:?}; known: {}",
                    EventKind::ALL.map(|e| e.as_str()).join(", ")
                ),
            )
        })?);
    }
    if body.description.len() > 500 {
        return Err(ApiError::bad_request(
            "invalid_argument",
            "description is at most 500 characters",
        ));
    }
    let kek = state.kek.clone().ok_or_else(|| {
        ApiError::bad_request(
            "no_key_encryption_key",
            "this node was started without --kek-file and cannot seal a webhook secret",
        )
    })?;
    let id = format!("wh_{}", random_hex(8));
    let secret = new_webhook_secret();
    let sealed = certplane_pki::seal(
        &kek,
        secret.as_bytes(),
        WebhookRecord::secret_aad(&id).as_bytes(),
    )
    .map_err(|e| ApiError::unavailable(format!("cannot seal the secret: {e}")))?;
    let record = WebhookRecord {
        id,
        zone,
        url: body.url.trim().to_string(),
        events,
        secret: crate::workers::issuance::from_sealed(sealed),
        description: body.description.clone(),
        created_at: Timestamp(now_ms()),
        created_by: String::new(),
    };
    let hash = idem
        .as_ref()
        .map(|_| request_hash("POST /v1/webhooks", &bytes));
    let proposal = Proposal::new(
        Timestamp(now_ms()),
        principal,
        Command::CreateWebhook(Box::new(record)),
    )
    .with_idempotency(idem, hash);
    let outcome = state.node.write(proposal).await?;
    let replayed = outcome.replayed;
    match outcome.result.map_err(ApiError::from)? {
        Applied::WebhookStored { webhook } => Ok((
            StatusCode::CREATED,
            Json(CreatedWebhook {
                secret: (!replayed).then_some(secret),
                webhook: WebhookView::from(*webhook),
            }),
        )),
        other => Err(ApiError::unavailable(format!(
            "unexpected outcome {other:?}"
        ))),
    }
}

#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", security(("bearer" = [])), responses((status = 200, description = "Subscriptions in zones the caller manages", body = Vec<WebhookView>), (status = 401, description = "Missing or invalid credentials", body = ErrorResponse), (status = 403, description = "Needs webhook_manage", body = ErrorResponse), (status = 503, description = "Unavailable; retry", body = ErrorResponse)))]
pub async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
    consistency: Consistency,
) -> ApiResult<Json<Vec<WebhookView>>> {
    read_barrier(&state, consistency).await?;
    let view = state.node.view();
    let hooks =
        blocking(move || list_webhooks(&view).map_err(|e| ApiError::unavailable(e.to_string())))
            .await?;
    Ok(Json(
        hooks
            .into_iter()
            .filter(|w| principal.allows(Permission::WebhookManage, &w.zone))
            .map(WebhookView::from)
            .collect(),
    ))
}

fn check_webhook_id(id: &str) -> ApiResult<()> {
    let ok =
        id.len() <= 64 && id.starts_with("wh_") && id[3..].bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("no webhook with id {id:?}")))
    }
}

async fn load(
    state: &AppState,
    principal: &certplane_core::Principal,
    id: &str,
) -> ApiResult<WebhookRecord> {
    check_webhook_id(id)?;
    let view = state.node.view();
    let lookup = id.to_string();
    let hook = blocking(move || {
        get_webhook(&view, &lookup).map_err(|e| ApiError::unavailable(e.to_string()))
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no webhook with id {id}")))?;
    require_in(principal, Permission::WebhookManage, &hook.zone)?;
    Ok(hook)
}

#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks", security(("bearer" = [])), params(("id" = String, Path)), responses((status = 200, description = "The subscription", body = WebhookView), (status = 404, description = "Unknown id", body = ErrorResponse), (status = 401, description = "Missing or invalid credentials", body = ErrorResponse), (status = 403, description = "Needs webhook_manage on its zone", body = ErrorResponse), (status = 503, description = "Unavailable; retry", body = ErrorResponse)))]
pub async fn get_one(
    State(state): State<AppState>,
    Auth(principal): Auth,
    consistency: Consistency,
    Path(id): Path<String>,
) -> ApiResult<Json<WebhookView>> {
    read_barrier(&state, consistency).await?;
    Ok(Json(WebhookView::from(
        load(&state, &principal, &id).await?,
    )))
}

#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", security(("bearer" = [])), params(("id" = String, Path)), responses((status = 200, description = "Deleted; its queued deliveries are recorded as failed"), (status = 404, description = "Unknown id", body = ErrorResponse), (status = 401, description = "Missing or invalid credentials", body = ErrorResponse), (status = 403, description = "Needs webhook_manage on its zone", body = ErrorResponse), (status = 503, description = "No leader; retry", body = ErrorResponse)))]
pub async fn delete(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    check_webhook_id(&id)?;
    let proposal = Proposal::new(
        Timestamp(now_ms()),
        principal,
        Command::DeleteWebhook { id: id.clone() },
    );
    let outcome = state.node.write(proposal).await?;
    outcome.result.map_err(ApiError::from)?;
    Ok(Json(serde_json::json!({ "id": id, "deleted": true })))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    pub limit: Option<usize>,
    pub cursor: Option<String>,
    pub consistency: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DeliveryPage {
    pub items: Vec<DeliveryView>,
    pub next_cursor: Option<String>,
}

/// Every delivery of a subscription, oldest first, with its attempts and outcome.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks", security(("bearer" = [])), params(("id" = String, Path), ("limit" = Option<usize>, Query), ("cursor" = Option<String>, Query)), responses((status = 200, description = "Deliveries with `next_cursor`"), (status = 404, description = "Unknown id", body = ErrorResponse), (status = 401, description = "Missing or invalid credentials", body = ErrorResponse), (status = 403, description = "Needs webhook_manage on its zone", body = ErrorResponse), (status = 503, description = "Unavailable; retry", body = ErrorResponse)))]
pub async fn deliveries(
    State(state): State<AppState>,
    Auth(principal): Auth,
    consistency: Consistency,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> ApiResult<Json<DeliveryPage>> {
    read_barrier(&state, consistency).await?;
    let hook = load(&state, &principal, &id).await?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    if let Some(c) = &q.cursor {
        if !c.starts_with("dlv_") || c.len() > 64 {
            return Err(ApiError::bad_request("invalid_query", "bad cursor"));
        }
    }
    let view = state.node.view();
    let cursor = q.cursor.clone();
    let page = blocking(move || {
        let prefix = index_prefix(&hook.id);
        let end = prefix_end(&prefix);
        let mut from = prefix.clone();
        if let Some(c) = &cursor {
            from.extend_from_slice(c.as_bytes());
            from.push(0);
        }
        let rows = view
            .scan(Keyspace::DeliveriesByWebhook, &from, &end, limit)
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        let mut items = Vec::new();
        for (key, _) in &rows {
            let did = String::from_utf8_lossy(&key[prefix.len()..]).to_string();
            if let Some(d) =
                get_delivery(&view, &did).map_err(|e| ApiError::unavailable(e.to_string()))?
            {
                items.push(DeliveryView::from(d));
            }
        }
        let next_cursor = (rows.len() == limit)
            .then(|| items.last().map(|d| d.id.clone()))
            .flatten();
        Ok(DeliveryPage { items, next_cursor })
    })
    .await?;
    Ok(Json(page))
}
