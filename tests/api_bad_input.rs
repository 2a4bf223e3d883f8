//! Bad input gets a clear 4xx JSON error, loses nothing and never stops the node.

mod support;

use base64::Engine;
use serde_json::{json, Value};
use support::{Certs, TestCluster};

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("status {status}: body is not JSON: {text:?}"));
    (status, body)
}

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_refused_clearly_and_loses_nothing() {
    let cluster = TestCluster::start(1, |_| {}).await;
    let url = cluster.node(1).url();
    let http = &cluster.http;
    let token = &cluster.token;
    let certs = Certs::new();
    let import = format!("{url}/v1/certificates/import");

    // A good certificate first, to check nothing is lost afterwards.
    let good = certs.import_body("good.example.com", 90, "team-a", "web");
    let (status, kept) = send(http.post(&import).bearer_auth(token).json(&good)).await;
    assert_eq!(status, 201, "{kept}");

    let cases: Vec<(&str, Value)> = vec![
        (
            "not PEM at all",
            json!({ "chain_pem": "hello", "owner": "o", "zone": "web" }),
        ),
        (
            "PEM armour around non-base64",
            json!({ "chain_pem": "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n", "owner": "o", "zone": "web" }),
        ),
        (
            "PEM around DER garbage",
            json!({
                "chain_pem": format!(
                    "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                    base64::engine::general_purpose::STANDARD.encode((0..600u32).map(|i| (i * 7919 % 251) as u8).collect::<Vec<_>>())
                ),
                "owner": "o", "zone": "web"
            }),
        ),
        (
            "empty chain",
            json!({ "chain_pem": "", "owner": "o", "zone": "web" }),
        ),
    ];
    for (what, body) in cases {
        let (status, v) = send(http.post(&import).bearer_auth(token).json(&body)).await;
        assert_error(status, &v, 400, "invalid_certificate");
        eprintln!("{what}: {}", v["error"]["message"]);
    }

    // A chain whose leaf is not signed by the next certificate.
    let other = Certs::new();
    let (leaf_chain, _) = certs.chain("link.example.com", 30);
    let (other_chain, _) = other.chain("other.example.com", 30);
    let leaf_only = leaf_chain
        .split_inclusive("-----END CERTIFICATE-----\n")
        .next()
        .expect("leaf")
        .to_string();
    let other_intermediate = other_chain
        .split_inclusive("-----END CERTIFICATE-----\n")
        .nth(1)
        .expect("intermediate")
        .to_string();
    let broken = json!({ "chain_pem": format!("{leaf_only}{other_intermediate}"), "owner": "o", "zone": "web" });
    let (status, v) = send(http.post(&import).bearer_auth(token).json(&broken)).await;
    assert_error(status, &v, 400, "invalid_certificate");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("chain"),
        "{v}"
    );

    // Malformed and mistyped JSON.
    let (status, v) = send(
        http.post(&import)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body("{\"chain_pem\": "),
    )
    .await;
    assert_error(status, &v, 400, "malformed_json");
    let (status, v) = send(
        http.post(&import)
            .bearer_auth(token)
            .json(&json!({ "chain_pem": 5 })),
    )
    .await;
    assert_error(status, &v, 400, "malformed_json");
    let (status, v) = send(
        http.post(&import)
            .bearer_auth(token)
            .json(&json!({ "chain_pem": "x", "owner": "o", "zone": "Bad Zone!" })),
    )
    .await;
    assert_error(status, &v, 400, "invalid_argument");

    // A 50 MB body.
    let huge = vec![b'a'; 50 * 1024 * 1024];
    let (status, v) = send(
        http.post(&import)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(huge),
    )
    .await;
    assert_error(status, &v, 413, "payload_too_large");

    // Unknown ids and routes.
    let (status, v) = send(
        http.get(format!("{url}/v1/certificates/crt_doesnotexist"))
            .bearer_auth(token),
    )
    .await;
    assert_error(status, &v, 404, "not_found");
    let (status, v) = send(
        http.delete(format!("{url}/v1/certificates/crt_doesnotexist"))
            .bearer_auth(token),
    )
    .await;
    assert_error(status, &v, 404, "not_found");
    let (status, v) = send(
        http.get(format!("{url}/v1/certificates/..%2F..%2Fetc"))
            .bearer_auth(token),
    )
    .await;
    assert_error(status, &v, 404, "not_found");
    let (status, v) = send(
        http.get(format!("{url}/v1/nothing-here"))
            .bearer_auth(token),
    )
    .await;
    assert_error(status, &v, 404, "not_found");
    let (status, v) = send(
        http.put(format!("{url}/v1/certificates/import"))
            .bearer_auth(token),
    )
    .await;
    assert_error(status, &v, 405, "method_not_allowed");
    let (status, v) = send(
        http.delete(format!("{url}/v1/sys/cluster/members/99"))
            .bearer_auth(token),
    )
    .await;
    assert_error(status, &v, 404, "not_found");

    // Wrong or missing tokens.
    let (status, v) = send(http.get(format!("{url}/v1/certificates"))).await;
    assert_error(status, &v, 401, "unauthenticated");
    let (status, v) = send(
        http.get(format!("{url}/v1/certificates"))
            .bearer_auth("cpt_wrong"),
    )
    .await;
    assert_error(status, &v, 401, "unauthenticated");
    let (status, v) = send(
        http.get(format!("{url}/v1/certificates"))
            .header("authorization", "Basic abc"),
    )
    .await;
    assert_error(status, &v, 401, "unauthenticated");

    // Bad queries.
    let (status, v) = send(
        http.get(format!("{url}/v1/certificates?expiring_within=soon"))
            .bearer_auth(token),
    )
    .await;
    assert_error(status, &v, 400, "invalid_query");
    let (status, v) = send(
        http.get(format!("{url}/v1/certificates?cursor=zzz"))
            .bearer_auth(token),
    )
    .await;
    assert_error(status, &v, 400, "invalid_query");
    let (status, v) = send(
        http.get(format!("{url}/v1/certificates?limit=-1"))
            .bearer_auth(token),
    )
    .await;
    assert_error(status, &v, 400, "invalid_query");
    let (status, v) = send(
        http.get(format!("{url}/v1/certificates?consistency=maybe"))
            .bearer_auth(token),
    )
    .await;
    assert_error(status, &v, 400, "invalid_query");

    // Corrupt and reused Idempotency-Keys.
    let fresh = certs.import_body("idem.example.com", 30, "team-a", "web");
    for bad_key in ["has spaces", "", &"k".repeat(200), "ünïcode"] {
        let req = http
            .post(&import)
            .bearer_auth(token)
            .header("idempotency-key", bad_key)
            .json(&fresh);
        let (status, v) = send(req).await;
        assert_error(status, &v, 400, "invalid_idempotency_key");
    }
    let first = send(
        http.post(&import)
            .bearer_auth(token)
            .header("idempotency-key", "req-1")
            .json(&fresh),
    )
    .await;
    assert_eq!(first.0, 201);
    let retry = send(
        http.post(&import)
            .bearer_auth(token)
            .header("idempotency-key", "req-1")
            .json(&fresh),
    )
    .await;
    assert_eq!(retry, first, "a retry returns the first answer");
    let other_body = certs.import_body("idem2.example.com", 30, "team-a", "web");
    let (status, v) = send(
        http.post(&import)
            .bearer_auth(token)
            .header("idempotency-key", "req-1")
            .json(&other_body),
    )
    .await;
    assert_error(status, &v, 409, "idempotency_key_reused");
    let (_, audit) = send(
        http.get(format!(
            "{url}/v1/audit?object=certificate/{}",
            first.1["id"].as_str().unwrap_or("")
        ))
        .bearer_auth(token),
    )
    .await;
    assert_eq!(
        audit["items"].as_array().map(Vec::len),
        Some(1),
        "the retry did nothing twice: {audit}"
    );

    // Init twice.
    let (status, v) = send(http.post(format!("{url}/v1/sys/init")).json(&json!({}))).await;
    assert_error(status, &v, 409, "already_initialized");

    // Random bytes at every mutating endpoint never produce a 5xx.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for round in 0..60 {
        let len = (round * 97) % 3000;
        let body: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        for path in [
            "/v1/certificates/import",
            "/v1/sys/cluster/members",
            "/v1/sys/cluster/transfer-leader",
            "/v1/sys/init",
            "/v1/certificate-requests",
            "/v1/zones/evaluate",
            "/v1/issuers",
            "/v1/aws/pca-issuers",
            "/v1/certificates/crt_0/renew",
            "/v1/certificates/crt_0/revoke",
        ] {
            let resp = http
                .post(format!("{url}{path}"))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .expect("request");
            assert!(
                resp.status().as_u16() < 500,
                "{path} answered {} to random bytes",
                resp.status()
            );
        }
    }

    // The OpenAPI document is served and describes the endpoints.
    let (status, doc) = send(
        http.get(format!("{url}/v1/openapi.json"))
            .bearer_auth(token),
    )
    .await;
    assert_eq!(status, 200);
    for path in [
        "/v1/certificates/import",
        "/v1/certificates",
        "/v1/audit/verify",
        "/v1/sys/cluster/transfer-leader",
        "/v1/certificates/{id}/renew",
        "/v1/certificates/{id}/revoke",
        "/v1/certificates/{id}/private-key",
        "/v1/certificate-requests",
        "/v1/certificate-requests/{id}",
        "/v1/zones",
        "/v1/zones/{path}",
        "/v1/zones/{path}/evaluate",
        "/v1/issuers",
        "/v1/issuers/{name}",
        "/v1/issuers/{name}/crl",
        "/v1/issuers/{name}/issued",
        "/v1/aws/pca-issuers",
    ] {
        assert!(doc["paths"][path].is_object(), "openapi lacks {path}");
    }
    assert!(doc["components"]["schemas"]["ErrorResponse"].is_object());

    // The node still serves, and nothing was lost.
    let (status, v) = send(
        http.get(format!(
            "{url}/v1/certificates/{}",
            kept["id"].as_str().unwrap_or("")
        ))
        .bearer_auth(token),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (status, _) = send(http.get(format!("{url}/healthz"))).await;
    assert_eq!(status, 200);
    let (_, verify) = send(
        http.get(format!("{url}/v1/audit/verify"))
            .bearer_auth(token),
    )
    .await;
    assert_eq!(verify["ok"], true);
    cluster.shutdown().await;
}
