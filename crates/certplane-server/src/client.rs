//! The HTTP client the CLI (and `--join`) use: the API is the only interface, exactly as a script
//! would use it.

use std::fmt;
use std::time::Duration;

use serde_json::Value;

#[derive(Debug)]
pub struct ClientError {
    /// HTTP status, or `None` when the server could not be reached.
    pub status: Option<u16>,
    pub code: String,
    pub message: String,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(s) => write!(f, "{} ({}): {}", self.code, s, self.message),
            None => write!(f, "{}: {}", self.code, self.message),
        }
    }
}

impl std::error::Error for ClientError {}

impl ClientError {
    pub fn retryable(&self) -> bool {
        matches!(
            self.status,
            None | Some(429) | Some(502) | Some(503) | Some(504)
        )
    }

    /// The CLI's exit code for this failure (documented in `certplane --help`).
    pub fn exit_code(&self) -> i32 {
        match self.status {
            None => 6,
            Some(400) | Some(413) | Some(422) => 7,
            Some(401) | Some(403) => 4,
            Some(404) => 3,
            Some(409) => 5,
            Some(429) | Some(503) => 6,
            _ => 1,
        }
    }
}

#[derive(Clone)]
pub struct ApiClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl ApiClient {
    pub fn new(base: &str, token: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(3))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        ApiClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        }
    }

    /// A client for an https:// API: trust `ca_pem` (besides nothing else), and present
    /// `identity_pem` (certificate then key, PEM) for mutual TLS. Unreadable material falls back to
    /// a client without it, whose requests then fail with a clear TLS or 401 error.
    pub fn with_tls(
        base: &str,
        token: Option<String>,
        ca_pem: Option<Vec<u8>>,
        identity_pem: Option<Vec<u8>>,
    ) -> Self {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(3));
        if let Some(ca) = ca_pem.and_then(|pem| reqwest::Certificate::from_pem(&pem).ok()) {
            builder = builder.tls_certs_only([ca]);
        }
        if let Some(identity) = identity_pem.and_then(|pem| reqwest::Identity::from_pem(&pem).ok())
        {
            builder = builder.identity(identity);
        }
        ApiClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            http: builder.build().unwrap_or_else(|_| reqwest::Client::new()),
        }
    }

    /// The same client (credentials, TLS settings) for another node's API.
    pub fn at(&self, base: &str) -> ApiClient {
        ApiClient {
            base: base.trim_end_matches('/').to_string(),
            token: self.token.clone(),
            http: self.http.clone(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let resp = req.send().await.map_err(|e| ClientError {
            status: None,
            code: "unreachable".into(),
            message: format!("cannot reach {}: {e}", self.base),
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let code = body["error"]["code"]
            .as_str()
            .unwrap_or("http_error")
            .to_string();
        let mut message = body["error"]["message"]
            .as_str()
            .unwrap_or("the server returned an error")
            .to_string();
        // Policy violations and lock conflicts: one line each, with the zone that set the rule.
        for d in body["error"]["details"].as_array().into_iter().flatten() {
            if let (Some(rule), Some(text)) = (d["rule"].as_str(), d["message"].as_str()) {
                message.push_str(&format!(
                    "\n  {rule} (set by {}): {text}",
                    d["zone"].as_str().unwrap_or("?")
                ));
            }
        }
        Err(ClientError {
            status: Some(status),
            code,
            message,
        })
    }

    async fn json(&self, req: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let resp = self.send(req).await?;
        resp.json().await.map_err(|e| ClientError {
            status: None,
            code: "bad_response".into(),
            message: e.to_string(),
        })
    }

    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClientError> {
        self.json(self.request(reqwest::Method::GET, path).query(query))
            .await
    }

    pub async fn post(
        &self,
        path: &str,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<Value, ClientError> {
        let mut req = self.request(reqwest::Method::POST, path).json(body);
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        self.json(req).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.json(self.request(reqwest::Method::PUT, path).json(body))
            .await
    }

    /// POST with query parameters (e.g. `?wait=5s`).
    pub async fn post_query(
        &self,
        path: &str,
        query: &[(&str, String)],
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<Value, ClientError> {
        let mut req = self
            .request(reqwest::Method::POST, path)
            .query(query)
            .json(body);
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        self.json(req).await
    }

    /// A GET whose answer is not JSON (a CRL, say).
    pub async fn get_bytes(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Vec<u8>, ClientError> {
        let resp = self
            .send(self.request(reqwest::Method::GET, path).query(query))
            .await?;
        resp.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| ClientError {
                status: None,
                code: "download_failed".into(),
                message: e.to_string(),
            })
    }

    pub async fn delete(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClientError> {
        self.json(self.request(reqwest::Method::DELETE, path).query(query))
            .await
    }

    /// Stream a download to `dest`; returns the bytes written.
    pub async fn download(&self, path: &str, dest: &std::path::Path) -> Result<u64, ClientError> {
        use tokio::io::AsyncWriteExt;
        let io = |e: std::io::Error| ClientError {
            status: None,
            code: "io_error".into(),
            message: e.to_string(),
        };
        let mut resp = self.send(self.request(reqwest::Method::GET, path)).await?;
        let tmp = dest.with_extension("partial");
        let mut file = tokio::fs::File::create(&tmp).await.map_err(io)?;
        let mut written = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(|e| ClientError {
            status: None,
            code: "download_failed".into(),
            message: e.to_string(),
        })? {
            file.write_all(&chunk).await.map_err(io)?;
            written += chunk.len() as u64;
        }
        file.sync_all().await.map_err(io)?;
        tokio::fs::rename(&tmp, dest).await.map_err(io)?;
        Ok(written)
    }
}
