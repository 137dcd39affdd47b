//! Identity (docs/design.md §7, SECURITY.md): who a caller is, from a signed
//! JWT in the `authorization: Bearer` metadata, and what each RPC lets each
//! role do. [`tokens`] verifies and mints tokens, [`access`] is the roles
//! table, [`gate`] is the one tower layer every server runs them in, and
//! [`credentials`] is how a service presents its own identity to its
//! peers. Tokens are never logged, traced or echoed in an error.

pub mod access;
pub mod bootstrap;
pub mod credentials;
pub mod gate;
pub mod tokens;

use purple_api::common::v1::Role;
use tonic::Status;

/// The authenticated caller of a request, as the gate puts it in the
/// request's extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The token's subject: a user id, or `service:<name>` for a peer.
    pub subject: String,
    /// A display name from the token (the subject when it carries none).
    pub name: String,
    /// Every Purple role the token grants, most privileged first.
    pub roles: Vec<Role>,
}

impl Caller {
    /// Whether the caller holds `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Whether the caller holds any of `roles`.
    pub fn has_any(&self, roles: &[Role]) -> bool {
        self.roles.iter().any(|r| roles.contains(r))
    }

    /// The role a user record keeps for this caller: the first it holds.
    pub fn primary_role(&self) -> Role {
        self.roles.first().copied().unwrap_or(Role::Unspecified)
    }

    /// Whether this is another Purple service.
    pub fn is_service(&self) -> bool {
        self.has(Role::Service)
    }
}

/// The caller of a request that passed the gate.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no authenticated caller"))
}
