//! Who acts: principals, roles, role bindings per zone, permissions, API tokens and client
//! certificates.
//!
//! A principal holds role bindings: a role over a zone, inherited by every zone below it (a binding
//! on `/` covers the whole tree). Each role grants a fixed set of [`Permission`]s; cluster-wide
//! permissions (cluster operations, tokens, issuers, audit) need the binding on `/`. Deny by default:
//! a permission not granted by a binding that covers the zone is refused.
//!
//! Older records carry `roles` and `zones` (every role over every listed zone, none meaning all);
//! they read as the equivalent bindings.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including cluster membership, tokens and issuers.
    Admin,
    /// Owns zones: policy, inventory, key export, webhooks, approvals in those zones.
    ZoneOwner,
    /// May approve or reject requests in the bound zones (never their own).
    Approver,
    /// May request and import certificates in the bound zones.
    Requester,
    /// Read-only access to inventory, policy and the audit trail (including export).
    Auditor,
    /// Cluster operations: membership, leader transfer, snapshots.
    Operator,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Admin,
        Role::ZoneOwner,
        Role::Approver,
        Role::Requester,
        Role::Auditor,
        Role::Operator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::ZoneOwner => "zone_owner",
            Role::Approver => "approver",
            Role::Requester => "requester",
            Role::Auditor => "auditor",
            Role::Operator => "operator",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// What the role grants wherever it is bound.
    pub fn grants(self, permission: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Admin => true,
            Role::Operator => matches!(permission, ClusterRead | ClusterManage),
            Role::Auditor => matches!(
                permission,
                ClusterRead | ZoneRead | InventoryRead | AuditRead
            ),
            Role::ZoneOwner => matches!(
                permission,
                ZoneRead
                    | ZoneWrite
                    | InventoryRead
                    | CertificateImport
                    | CertificateManage
                    | CertificateRequest
                    | KeyExport
                    | Approve
                    | WebhookManage
            ),
            Role::Requester => matches!(
                permission,
                ZoneRead | InventoryRead | CertificateImport | CertificateRequest
            ),
            Role::Approver => matches!(permission, ZoneRead | InventoryRead | Approve),
        }
    }
}

/// What a route or a command needs. Zone permissions are checked against the zone the object lives
/// in; cluster permissions against `/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Node and cluster status.
    ClusterRead,
    /// Membership changes, leader transfer, snapshots.
    ClusterManage,
    /// Tokens and client-certificate principals.
    PrincipalManage,
    /// Registering issuers.
    IssuerManage,
    /// Reading, verifying and exporting the audit trail.
    AuditRead,
    /// Reading zone policy and dry-run evaluation.
    ZoneRead,
    /// Changing zone policy.
    ZoneWrite,
    /// Reading certificates, requests and issuers.
    InventoryRead,
    /// Importing existing certificates.
    CertificateImport,
    /// Retiring and revoking certificates.
    CertificateManage,
    /// Requesting and renewing certificates.
    CertificateRequest,
    /// Receiving a certificate's private key.
    KeyExport,
    /// Deciding approval stages.
    Approve,
    /// Webhook subscriptions.
    WebhookManage,
}

impl Permission {
    pub const ALL: [Permission; 14] = [
        Permission::ClusterRead,
        Permission::ClusterManage,
        Permission::PrincipalManage,
        Permission::IssuerManage,
        Permission::AuditRead,
        Permission::ZoneRead,
        Permission::ZoneWrite,
        Permission::InventoryRead,
        Permission::CertificateImport,
        Permission::CertificateManage,
        Permission::CertificateRequest,
        Permission::KeyExport,
        Permission::Approve,
        Permission::WebhookManage,
    ];

    /// Cluster-wide permissions are only granted by bindings on `/`.
    pub fn is_cluster_wide(self) -> bool {
        matches!(
            self,
            Permission::ClusterRead
                | Permission::ClusterManage
                | Permission::PrincipalManage
                | Permission::IssuerManage
                | Permission::AuditRead
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::ClusterRead => "cluster_read",
            Permission::ClusterManage => "cluster_manage",
            Permission::PrincipalManage => "principal_manage",
            Permission::IssuerManage => "issuer_manage",
            Permission::AuditRead => "audit_read",
            Permission::ZoneRead => "zone_read",
            Permission::ZoneWrite => "zone_write",
            Permission::InventoryRead => "inventory_read",
            Permission::CertificateImport => "certificate_import",
            Permission::CertificateManage => "certificate_manage",
            Permission::CertificateRequest => "certificate_request",
            Permission::KeyExport => "key_export",
            Permission::Approve => "approve",
            Permission::WebhookManage => "webhook_manage",
        }
    }
}

/// A role over a zone and everything below it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RoleBinding {
    pub role: Role,
    /// Canonical zone path (`/`, `/prod`, `/prod/payments`).
    pub zone: String,
}

impl RoleBinding {
    pub fn new(role: Role, zone: &str) -> Self {
        RoleBinding {
            role,
            zone: zone.to_string(),
        }
    }
}

/// True when `zone` is `scope` or below it. Both are `/`-separated paths; `""` and `/` mean the root.
pub fn zone_within(zone: &str, scope: &str) -> bool {
    let scope = scope.trim_end_matches('/');
    scope.is_empty()
        || zone == scope
        || zone
            .strip_prefix(scope)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The acting identity recorded on every command and audit record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// Stable id of the token, client certificate or system worker that acted, e.g. `tok_…`,
    /// `cert_…` or `system:issuance`.
    pub id: String,
    /// Human-readable name given when the principal was created.
    pub name: String,
    /// Older form: these roles over each of `zones` (all zones when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Role>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings: Vec<RoleBinding>,
    /// Approval groups the principal belongs to (e.g. `security`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

impl Principal {
    /// The identity of the unauthenticated, one-time cluster initialisation.
    pub fn bootstrap() -> Self {
        Principal::system("system:init", "cluster initialisation")
    }

    /// A leader worker: an admin over every zone, recorded under its own id.
    pub fn system(id: &str, name: &str) -> Self {
        Principal {
            id: id.into(),
            name: name.into(),
            bindings: vec![RoleBinding::new(Role::Admin, "/")],
            ..Principal::default()
        }
    }

    pub fn is_system(&self) -> bool {
        self.id.starts_with("system:")
    }

    /// Every binding, the older `roles` x `zones` form included.
    pub fn all_bindings(&self) -> Vec<RoleBinding> {
        let mut out = self.bindings.clone();
        let scopes: Vec<&str> = if self.zones.is_empty() {
            vec!["/"]
        } else {
            self.zones.iter().map(String::as_str).collect()
        };
        for role in &self.roles {
            for scope in &scopes {
                out.push(RoleBinding::new(*role, scope));
            }
        }
        out
    }

    /// The roles bound on `zone` or above it, sorted and without repeats.
    pub fn roles_in(&self, zone: &str) -> Vec<Role> {
        let mut roles: Vec<Role> = self
            .all_bindings()
            .into_iter()
            .filter(|b| zone_within(zone, &b.zone))
            .map(|b| b.role)
            .collect();
        roles.sort();
        roles.dedup();
        roles
    }

    /// Every role the principal holds anywhere, sorted and without repeats (for the audit record).
    pub fn role_names(&self) -> Vec<String> {
        let mut roles: Vec<Role> = self.all_bindings().into_iter().map(|b| b.role).collect();
        roles.sort();
        roles.dedup();
        roles.into_iter().map(|r| r.as_str().to_string()).collect()
    }

    /// May the principal use `permission` on `zone`? Cluster-wide permissions ignore `zone` and
    /// need a binding on `/`.
    pub fn allows(&self, permission: Permission, zone: &str) -> bool {
        let zone = if permission.is_cluster_wide() {
            "/"
        } else {
            zone
        };
        self.all_bindings()
            .iter()
            .any(|b| b.role.grants(permission) && zone_within(zone, &b.zone))
    }

    /// May the principal use `permission` in at least one zone? (The route-level check; the handler
    /// then checks the object's zone.)
    pub fn allows_somewhere(&self, permission: Permission) -> bool {
        if permission.is_cluster_wide() {
            return self.allows(permission, "/");
        }
        self.all_bindings()
            .iter()
            .any(|b| b.role.grants(permission))
    }

    /// Kept for callers that ask about a role regardless of zone (admin implies every role).
    pub fn has_role(&self, role: Role) -> bool {
        self.all_bindings()
            .iter()
            .any(|b| b.role == Role::Admin || b.role == role)
    }

    /// True when the principal holds a binding on `zone` or above it.
    pub fn covers_zone(&self, zone: &str) -> bool {
        self.all_bindings()
            .iter()
            .any(|b| zone_within(zone, &b.zone))
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// How a principal authenticates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// A bearer token; only the SHA-256 of the secret is kept.
    #[default]
    Token,
    /// A client certificate over mutual TLS, matched by its subject.
    ClientCertificate,
}

/// A stored principal: an API token (secret shown once at creation, kept as its SHA-256) or a
/// client-certificate subject mapped to bindings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub kind: CredentialKind,
    /// Hex SHA-256 of the bearer secret; for a client certificate, of its subject.
    pub secret_sha256: String,
    /// The certificate subject (RFC 4514 form) of a client-certificate principal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Role>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings: Vec<RoleBinding>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    pub created_at: Timestamp,
    pub created_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

impl TokenRecord {
    pub fn principal(&self) -> Principal {
        Principal {
            id: self.id.clone(),
            name: self.name.clone(),
            roles: self.roles.clone(),
            zones: self.zones.clone(),
            bindings: self.bindings.clone(),
            groups: self.groups.clone(),
        }
    }

    /// Usable at `now`: neither revoked nor expired.
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(bindings: &[(Role, &str)]) -> Principal {
        Principal {
            id: "tok_x".into(),
            bindings: bindings
                .iter()
                .map(|(r, z)| RoleBinding::new(*r, z))
                .collect(),
            ..Principal::default()
        }
    }

    #[test]
    fn bindings_are_inherited_by_sub_zones_only() {
        let p = with(&[(Role::Requester, "/dev"), (Role::Approver, "/prod/a")]);
        assert!(p.allows(Permission::CertificateRequest, "/dev"));
        assert!(p.allows(Permission::CertificateRequest, "/dev/team"));
        assert!(!p.allows(Permission::CertificateRequest, "/prod"));
        assert!(!p.allows(Permission::CertificateRequest, "/devices"));
        assert!(p.allows(Permission::Approve, "/prod/a/x"));
        assert!(!p.allows(Permission::Approve, "/prod/b"));
        assert!(!p.allows(Permission::Approve, "/dev"));
    }

    #[test]
    fn cluster_permissions_need_a_root_binding() {
        let zoned_admin = with(&[(Role::Admin, "/prod")]);
        assert!(zoned_admin.allows(Permission::ZoneWrite, "/prod/x"));
        assert!(!zoned_admin.allows(Permission::PrincipalManage, "/prod"));
        assert!(!zoned_admin.allows_somewhere(Permission::AuditRead));
        let auditor = with(&[(Role::Auditor, "/")]);
        assert!(auditor.allows(Permission::AuditRead, "/anything"));
        assert!(!auditor.allows(Permission::ZoneWrite, "/"));
    }

    #[test]
    fn older_roles_and_zones_read_as_bindings() {
        let p = Principal {
            id: "tok_old".into(),
            roles: vec![Role::ZoneOwner],
            zones: vec!["/team".into()],
            ..Principal::default()
        };
        assert!(p.allows(Permission::ZoneWrite, "/team/x"));
        assert!(!p.allows(Permission::ZoneWrite, "/other"));
        let everywhere = Principal {
            id: "tok_old".into(),
            roles: vec![Role::Auditor],
            ..Principal::default()
        };
        assert!(everywhere.allows(Permission::AuditRead, "/"));
        let json = r#"{"id":"tok_1","name":"n","roles":["admin"],"zones":[]}"#;
        let old: Principal = serde_json::from_str(json).unwrap();
        assert!(old.allows(Permission::PrincipalManage, "/"));
    }

    #[test]
    fn every_permission_is_granted_by_admin_and_denied_by_default() {
        let nobody = with(&[]);
        for p in Permission::ALL {
            assert!(with(&[(Role::Admin, "/")]).allows(p, "/x"));
            assert!(!nobody.allows(p, "/x"));
            assert!(!nobody.allows_somewhere(p));
        }
    }
}
