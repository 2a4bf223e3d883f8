//! Request extractors whose every failure is a JSON [`ApiError`]: bodies, queries, the bearer token,
//! the `Idempotency-Key` header and the read consistency.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::AppState;
use certplane_core::principal::CredentialKind;
use certplane_core::Principal;

/// A JSON body, size-limited by the router, parsed with clear errors.
pub struct ApiJson<T>(pub T, pub Bytes);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.max_body_bytes;
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(limit)
            } else {
                ApiError::bad_request(
                    "malformed_body",
                    format!("cannot read the request body: {e}"),
                )
            }
        })?;
        let value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::bad_request(
                "malformed_json",
                format!("the body is not valid JSON for this request: {e}"),
            )
        })?;
        Ok(ApiJson(value, bytes))
    }
}

/// Query parameters with clear errors.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

/// The authenticated caller, from `Authorization: Bearer <token>`.
pub struct Auth(pub Principal);

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(done) = parts
            .extensions
            .get::<super::access::AuthenticatedPrincipal>()
        {
            return Ok(Auth(done.0.clone()));
        }
        authenticate(&parts.headers, &parts.extensions, state)
            .await
            .map(Auth)
    }
}

/// The verified subject of the client certificate the connection presented (mutual TLS), put on
/// each request by the TLS listener.
#[derive(Debug, Clone)]
pub struct ClientSubject(pub String);

/// What identifies a client-certificate principal in the secret index: never equal to the hash of a
/// bearer secret, which has no `subject:` prefix.
pub fn subject_hash(subject: &str) -> String {
    hash_secret(&format!("subject:{subject}"))
}

/// Who is calling: the bearer token if one is sent, else the verified client certificate.
pub async fn authenticate(
    headers: &axum::http::HeaderMap,
    extensions: &axum::http::Extensions,
    state: &AppState,
) -> Result<Principal, ApiError> {
    let (hash, kind) = match headers.get(axum::http::header::AUTHORIZATION) {
        Some(header) => {
            let value = header
                .to_str()
                .map_err(|_| ApiError::unauthorized("the Authorization header is not ASCII"))?;
            let secret = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .map(str::trim)
                .filter(|s| !s.is_empty() && s.len() <= 256)
                .ok_or_else(|| {
                    ApiError::unauthorized("the Authorization header must be `Bearer <token>`")
                })?;
            (hash_secret(secret), CredentialKind::Token)
        }
        None => match extensions.get::<ClientSubject>() {
            Some(subject) => (subject_hash(&subject.0), CredentialKind::ClientCertificate),
            None => return Err(ApiError::unauthorized(
                "missing credentials: send Authorization: Bearer <token> or a client certificate",
            )),
        },
    };
    let lookup = || {
        certplane_core::apply::token_by_secret_hash(&state.node.view(), &hash)
            .map_err(|e| ApiError::unavailable(format!("cannot read tokens: {e}")))
    };
    let mut token = lookup()?;
    if token.is_none() {
        // A principal created a moment ago may not have reached this node yet: catch up with the
        // leader once before refusing it.
        if state.node.read_barrier().await.is_ok() {
            token = lookup()?;
        }
    }
    let now = certplane_core::Timestamp(super::now_ms());
    let token = token
        .filter(|t| t.kind == kind && t.is_active(now))
        .ok_or_else(|| match kind {
            CredentialKind::Token => ApiError::unauthorized(
                "the bearer token is not valid (unknown, revoked or expired)",
            ),
            CredentialKind::ClientCertificate => ApiError::unauthorized(
                "the client certificate's subject is not mapped to an active principal",
            ),
        })?;
    Ok(token.principal())
}

/// The optional `Idempotency-Key` header: 1 to 128 characters of `A-Z a-z 0-9 - _ . :`.
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(IdempotencyKey(None));
        };
        let bad = || {
            ApiError::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 128 characters of A-Z, a-z, 0-9, '-', '_', '.', ':'",
            )
        };
        let key = value.to_str().map_err(|_| bad())?;
        let valid = !key.is_empty()
            && key.len() <= 128
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if !valid {
            return Err(bad());
        }
        Ok(IdempotencyKey(Some(key.to_string())))
    }
}

/// `?consistency=linearizable` (default) or `?consistency=stale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    Linearizable,
    Stale,
}

impl<S: Send + Sync> FromRequestParts<S> for Consistency {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        for pair in query.split('&') {
            if let Some(value) = pair.strip_prefix("consistency=") {
                return match value {
                    "linearizable" | "" => Ok(Consistency::Linearizable),
                    "stale" => Ok(Consistency::Stale),
                    other => Err(ApiError::bad_request(
                        "invalid_query",
                        format!("consistency must be `linearizable` or `stale`, not {other:?}"),
                    )),
                };
            }
        }
        Ok(Consistency::Linearizable)
    }
}

/// Hash of what identifies a request, to tell a retry from a different request under the same key.
pub fn request_hash(route: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(route.as_bytes());
    h.update([0]);
    h.update(body);
    hex::encode(h.finalize())
}
