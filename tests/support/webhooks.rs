//! A local webhook receiver for tests: verifies certplane's signature, fails the first three
//! attempts of every delivery, then accepts each delivery id once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct Receiver {
    /// Attempts seen per delivery id (every POST).
    pub attempts: HashMap<String, u32>,
    /// Deliveries accepted (answered 2xx the first time a valid attempt got through).
    pub accepted: BTreeMap<String, String>,
    /// Valid attempts for an id already accepted (a leader died before recording the outcome).
    pub duplicates: u32,
    pub bad_signatures: u32,
}

pub fn verify_signature(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => v1 = hex::decode(value).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if (now - t).abs() > 300 {
        return false;
    }
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    ring::hmac::verify(&key, &signed, &v1).is_ok()
}

/// A local receiver that fails the first three attempts of every delivery, then accepts.
pub async fn start_receiver(secret: Arc<Mutex<String>>, state: Arc<Mutex<Receiver>>) -> String {
    use axum::http::{HeaderMap, StatusCode};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let secret = secret.clone();
            let state = state.clone();
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string()
                };
                let id = header("certplane-delivery");
                let signature = header("certplane-signature");
                let secret = secret.lock().expect("lock").clone();
                let mut s = state.lock().expect("lock");
                let n = {
                    let n = s.attempts.entry(id.clone()).or_default();
                    *n += 1;
                    *n
                };
                if !verify_signature(&secret, &signature, &body) {
                    s.bad_signatures += 1;
                    return StatusCode::UNAUTHORIZED;
                }
                if n <= 3 {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                match s.accepted.entry(id) {
                    std::collections::btree_map::Entry::Occupied(_) => s.duplicates += 1,
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        slot.insert(header("certplane-event"));
                    }
                }
                StatusCode::NO_CONTENT
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/hook")
}
