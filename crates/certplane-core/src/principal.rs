//! Who acts: principals, roles and API tokens.
//!
//! Roles and zone scopes are carried now so that the policy and approval work can check them per zone
//! without changing the stored format; today every valid token may use every `/v1` endpoint its roles
//! allow, and the root token created at initialisation is an admin over all zones.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including cluster membership and token management.
    Admin,
    /// Owns the zones listed on the principal: policy, inventory in those zones.
    ZoneOwner,
    /// May approve requests in the zones listed on the principal (never their own).
    Approver,
    /// May request and import certificates in the zones listed on the principal.
    Requester,
    /// Read-only access to inventory and audit.
    Auditor,
    /// Cluster operations: membership, leader transfer, snapshots.
    Operator,
}

/// The acting identity recorded on every command and audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// Stable id of the token (or system worker) that acted, e.g. `tok_…` or `system:renewal`.
    pub id: String,
    /// Human-readable name given when the token was created.
    pub name: String,
    pub roles: Vec<Role>,
    /// Zone path prefixes the principal is scoped to; empty means all zones.
    pub zones: Vec<String>,
}

impl Principal {
    /// The identity of the unauthenticated, one-time cluster initialisation.
    pub fn bootstrap() -> Self {
        Principal {
            id: "system:init".into(),
            name: "cluster initialisation".into(),
            roles: vec![Role::Admin],
            zones: vec![],
        }
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&Role::Admin) || self.roles.contains(&role)
    }

    /// True when the principal's zone scope covers `zone` (a `/`-separated path).
    pub fn covers_zone(&self, zone: &str) -> bool {
        self.zones.is_empty()
            || self.zones.iter().any(|z| {
                let z = z.trim_end_matches('/');
                z.is_empty()
                    || zone == z
                    || zone
                        .strip_prefix(z)
                        .is_some_and(|rest| rest.starts_with('/'))
            })
    }
}

/// A stored API token. Only the SHA-256 of the secret is kept; the secret is shown once at creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    /// Hex SHA-256 of the bearer secret.
    pub secret_sha256: String,
    pub roles: Vec<Role>,
    pub zones: Vec<String>,
    pub created_at: Timestamp,
    pub created_by: String,
    pub revoked_at: Option<Timestamp>,
}

impl TokenRecord {
    pub fn principal(&self) -> Principal {
        Principal {
            id: self.id.clone(),
            name: self.name.clone(),
            roles: self.roles.clone(),
            zones: self.zones.clone(),
        }
    }
}
