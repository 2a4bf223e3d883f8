//! The OpenAPI document served at `/v1/openapi.json`, generated from the handlers' annotations.

use axum::Json;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::{
    approvals, audit, certificates, issuers, ops, renewals, requests, sys, tokens, webhooks, zones,
};

/// The shape of every error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable, e.g. `invalid_certificate`, `not_found`, `idempotency_key_reused`.
    pub code: String,
    pub message: String,
    #[schema(value_type = Vec<Object>)]
    pub details: Vec<serde_json::Value>,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "certplane", description = "Highly available control plane for TLS certificates."),
    paths(
        ops::healthz,
        ops::readyz,
        ops::metrics,
        sys::init,
        sys::node_status,
        sys::cluster,
        sys::add_member,
        sys::remove_member,
        sys::transfer_leader,
        sys::snapshot,
        sys::probe_write,
        sys::probe_read,
        tokens::whoami,
        tokens::create,
        tokens::create_certificate_principal,
        tokens::list,
        tokens::get_one,
        tokens::revoke,
        certificates::import,
        certificates::list,
        certificates::get_one,
        certificates::retire,
        certificates::renew,
        certificates::revoke,
        certificates::private_key,
        requests::create,
        requests::get_one,
        requests::list,
        approvals::approve,
        approvals::reject,
        approvals::list,
        zones::list,
        zones::get,
        zones::put,
        zones::evaluate,
        issuers::list,
        issuers::get_one,
        issuers::import,
        issuers::create_acm_pca,
        issuers::crl,
        issuers::issued,
        webhooks::create,
        webhooks::list,
        webhooks::get_one,
        webhooks::delete,
        webhooks::deliveries,
        audit::list,
        audit::verify,
        audit::export,
        renewals::plan,
        renewals::iam_policy,
    ),
    components(schemas(
        ErrorResponse,
        ErrorDetail,
        approvals::DecisionBody,
        sys::ProbeBody,
        sys::ProbeView,
        webhooks::CreateWebhookBody,
        webhooks::WebhookView,
        webhooks::CreatedWebhook,
        webhooks::DeliveryView,
        tokens::CreateTokenBody,
        tokens::BindingBody,
        tokens::TokenView,
        tokens::CreatedToken,
        tokens::WhoAmI,
        certificates::ImportRequest,
        super::view::CertificateView,
        super::view::AwsIssuedView,
        super::view::DeploymentView,
        super::view::RenewalView,
        renewals::RenewalPlan,
        renewals::PlannedRenewal,
        renewals::PlannedDeployment,
        sys::InitResponse,
        sys::InitRequest,
        sys::BuiltinCaSettings,
        certificates::RenewBody,
        certificates::RevokeBody,
        certificates::PrivateKeyView,
        requests::RequestBody,
        requests::RequestView,
        zones::ZoneView,
        zones::PutZoneBody,
        zones::EffectiveView,
        zones::EvaluateView,
        issuers::IssuerView,
        issuers::ImportIssuerBody,
        issuers::AcmPcaIssuerBody,
        issuers::AcmPcaView,
        issuers::IssuedSerialView,
        sys::AddMemberRequest,
        sys::TransferRequest,
        sys::TransferResponse,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "certificates", description = "The certificate inventory: import, renew, revoke, key export"),
        (name = "requests", description = "Certificate requests, checked against zone policy and issued by the leader"),
        (name = "zones", description = "Policy zones: inherited defaults and locks, dry-run evaluation"),
        (name = "issuers", description = "certplane's CAs and their CRLs"),
        (name = "renewals", description = "Automatic renewal and ACM deployment: the plan, the IAM policy"),
        (name = "audit", description = "The hash-chained audit trail"),
        (name = "sys", description = "Initialisation, cluster membership and snapshots"),
        (name = "ops", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
