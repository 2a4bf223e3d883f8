//! The one place where errors become HTTP statuses.
//!
//! Every error leaves as `{"error": {"code", "message", "details"}}` with the status DESIGN.md section 5
//! gives. Nothing a client sends can turn into a 500: internal failures are answered 503 with
//! `Retry-After` (the write did not commit, or the node cannot serve right now) and logged.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use certplane_core::{RejectCode, Rejection};
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Vec<Value>,
    pub retry_after_secs: Option<u64>,
    /// The object the error concerns when one was recorded anyway (a rejected request's id).
    pub object_id: Option<String>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorInner<'a>,
}

#[derive(Serialize)]
struct ErrorInner<'a> {
    code: &'a str,
    message: &'a str,
    details: &'a [Value],
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            retry_after_secs: None,
            object_id: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body exceeds {limit} bytes"),
        )
    }

    /// The node cannot serve this now (no leader, shutting down, storage trouble); try again.
    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
        e.retry_after_secs = Some(1);
        e
    }

    pub fn with_details(mut self, details: Vec<Value>) -> Self {
        self.details = details;
        self
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        let status = match r.code {
            RejectCode::NotFound => StatusCode::NOT_FOUND,
            RejectCode::AlreadyInitialized
            | RejectCode::Conflict
            | RejectCode::IdempotencyKeyReused
            | RejectCode::StaleGeneration => StatusCode::CONFLICT,
            RejectCode::NotInitialized => StatusCode::CONFLICT,
            RejectCode::Forbidden => StatusCode::FORBIDDEN,
            RejectCode::InvalidArgument => StatusCode::BAD_REQUEST,
            RejectCode::PolicyViolation => StatusCode::UNPROCESSABLE_ENTITY,
        };
        let mut e = ApiError::new(status, r.code.as_str(), r.message).with_details(
            r.violations
                .iter()
                .map(|v| serde_json::to_value(v).unwrap_or_default())
                .collect(),
        );
        e.object_id = r.object_id;
        e
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, message = %self.message, "request failed");
        }
        let body = ErrorBody {
            error: ErrorInner {
                code: self.code,
                message: &self.message,
                details: &self.details,
                id: self.object_id.as_deref(),
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
