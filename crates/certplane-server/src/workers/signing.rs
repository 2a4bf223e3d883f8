//! Signing with the built-in CA, shared by the leader's issuance worker (requests in the queue) and
//! by the proposers that sign ahead (decision 0015): the API node for a request its dry run finds
//! approved at once, and the renewal worker for a renewal that needs no approval.
//!
//! ```text
//!  dry run on the local state (policy, approval, issuer) ─► approved at once, built-in issuer?
//!      yes ─► sign here ─► SubmitRequest { presigned } ─► apply: submission, then the outcome
//!      no  ─► SubmitRequest ─► queue ─► issuance worker signs ─► CompleteIssuance
//! ```
//!
//! A certificate signed ahead is only an effect once its entry commits: if the proposal is lost, or
//! `apply` does not approve the request, nobody ever received it and it is in no record.

use certplane_core::apply::{evaluate_request, get_issuer};
use certplane_core::command::CompleteIssuance;
use certplane_core::issuer::IssuerRecord;
use certplane_core::request::{KeySource, RequestSpec};
use certplane_core::store::StateRead;
use certplane_pki::Kek;

use super::issuance::{details_of, from_sealed, SignerCache};
use crate::api::requests::pki_key_spec;

/// Sign request `request_id` (at `generation`) as `spec` asks with the built-in `issuer`: the key
/// from the CSR or generated and sealed here, a fresh random serial, the approved names, and a
/// validity from the current second. CPU-bound: call it on a blocking thread. The error says why the
/// request cannot be issued at all.
pub fn sign(
    request_id: &str,
    generation: u64,
    spec: &RequestSpec,
    issuer: &IssuerRecord,
    signers: &SignerCache,
    kek: Option<&Kek>,
    now_ms: i64,
) -> Result<Box<CompleteIssuance>, String> {
    let signer = signers.get(issuer, kek)?;
    let (spki_der, generated) = match &spec.key {
        KeySource::Csr { csr_pem } => {
            let csr = certplane_pki::csr::parse_csr(csr_pem)
                .map_err(|e| format!("the CSR cannot be used: {e}"))?;
            (csr.spki_der, None)
        }
        KeySource::Generate { spec } => {
            let key = certplane_pki::keys::generate_key(&pki_key_spec(*spec))
                .map_err(|e| format!("key generation failed: {e}"))?;
            (key.spki_der.clone(), Some(key))
        }
    };
    // X.509 times have one-second resolution: start on a whole second so the validity the state
    // machine reads back from the certificate is exactly what was approved, never more.
    let not_before = now_ms - now_ms.rem_euclid(1000);
    let not_after =
        (not_before + spec.validity.0.saturating_mul(1000)).min(issuer.not_after.millis());
    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    for san in &spec.sans {
        match san {
            certplane_core::names::San::Dns(name) => dns_names.push(name.clone()),
            certplane_core::names::San::Ip(ip) => ip_addresses.push(*ip),
        }
    }
    let serial =
        certplane_pki::ca::new_serial().map_err(|e| format!("no randomness for a serial: {e}"))?;
    let profile = certplane_pki::ca::LeafProfile {
        serial,
        common_name: spec.common_name.clone(),
        dns_names,
        ip_addresses,
        not_before_ms: not_before,
        not_after_ms: not_after,
        spki_der,
    };
    let issued = signer
        .issue(&profile)
        .map_err(|e| format!("the issuer refused to sign: {e}"))?;
    let info = certplane_pki::inspect_certificate_der(&issued.cert_der)
        .map_err(|e| format!("the signed certificate does not parse: {e}"))?;
    let private_key = match generated {
        None => None,
        Some(key) => {
            let kek = kek.ok_or("no key-encryption key to seal the generated key")?;
            let sealed =
                certplane_pki::seal(kek, &key.pkcs8_der, info.fingerprint_sha256.as_bytes())
                    .map_err(|e| format!("cannot seal the generated key: {e}"))?;
            Some(from_sealed(sealed))
        }
    };
    let details = details_of(info);
    Ok(Box::new(CompleteIssuance {
        request_id: request_id.to_string(),
        generation,
        certificate_id: crate::api::certificates::record_id(&details.fingerprint_sha256),
        chain_pem: format!("{}{}", issued.cert_pem, issuer.chain_pem),
        details,
        private_key,
        aws_request_id: None,
    }))
}

/// The certificate for new request `request_id`, signed ahead, when this node's view of the state
/// says `apply` will approve the request at once with a built-in issuer whose key this node can open.
/// `None` in every other case (a policy violation, an approval to wait for, an AWS issuer, no
/// key-encryption key, any failure): the request then goes through the issuance queue as before.
/// Policy is evaluated before anything is signed, so nothing non-compliant is ever signed.
pub fn presign(
    view: &impl StateRead,
    request_id: &str,
    spec: &RequestSpec,
    signers: &SignerCache,
    kek: Option<&Kek>,
    now_ms: i64,
) -> Option<Box<CompleteIssuance>> {
    let kek = kek?;
    let (issuer_name, violations, _, approval) = evaluate_request(view, spec).ok()?;
    if !violations.is_empty() || approval.required {
        return None;
    }
    let issuer = get_issuer(view, &issuer_name).ok()??;
    if issuer.acm_pca.is_some() || issuer.key.is_none() {
        return None;
    }
    match sign(request_id, 1, spec, &issuer, signers, Some(kek), now_ms) {
        Ok(done) => Some(done),
        Err(e) => {
            tracing::debug!(request = %request_id, error = %e, "not signed ahead; the issuance worker will sign");
            None
        }
    }
}
