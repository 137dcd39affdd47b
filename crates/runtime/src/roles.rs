//! The PostgreSQL layout of a least-privilege deployment (deploy/README.md,
//! docs/adr/0007): per service one schema, one migration role that owns it
//! and runs `purple migrate`, and one runtime role that `serve` connects
//! as, with only SELECT/INSERT/UPDATE/DELETE on that schema's tables. No
//! role may create schemas or read another service's tables. The SQL is
//! idempotent, so running it again after an upgrade only fills gaps.

use crate::{db::is_identifier, settings::ServiceName};

/// One service's schema and roles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRoles {
    /// The schema: prefix + service.
    pub schema: String,
    /// Owns the schema; migrations run as it.
    pub owner: String,
    /// Reads and writes the schema's tables; the services run as it.
    pub runtime: String,
}

impl ServiceRoles {
    /// The names for `service` under `prefix` (the `--schema-prefix`):
    /// `purple_ingest`, `purple_ingest_owner`, `purple_ingest_app`.
    pub fn new(prefix: &str, service: ServiceName) -> Result<Self, String> {
        let schema = format!("{prefix}{}", service.as_str());
        let roles = Self {
            owner: format!("{schema}_owner"),
            runtime: format!("{schema}_app"),
            schema,
        };
        for name in [&roles.schema, &roles.owner, &roles.runtime] {
            if !is_identifier(name) {
                return Err(format!(
                    "{name:?} is not a plain identifier (lower-case letters, digits, _; at most 63 bytes)"
                ));
            }
        }
        Ok(roles)
    }

    /// The statements that create (or complete) this service's layout.
    /// Role passwords are not part of it: set them apart (`\password` in
    /// psql) so they never land in a file or a shell history.
    pub fn bootstrap_sql(&self) -> String {
        let Self {
            schema,
            owner,
            runtime,
        } = self;
        format!(
            "-- {schema}: owned by {owner} (migrations); {runtime} reads and writes its tables.
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{owner}') THEN
    CREATE ROLE {owner} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{runtime}') THEN
    CREATE ROLE {runtime} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
  END IF;
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO {owner}, {runtime}', current_database());
END
$$;
ALTER ROLE {owner} SET search_path = {schema};
ALTER ROLE {runtime} SET search_path = {schema};
CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {owner};
ALTER SCHEMA {schema} OWNER TO {owner};
REVOKE ALL ON SCHEMA {schema} FROM PUBLIC;
GRANT USAGE ON SCHEMA {schema} TO {runtime};
ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema}
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {runtime};
ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema}
  GRANT USAGE, SELECT ON SEQUENCES TO {runtime};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {runtime};
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {runtime};
"
        )
    }
}

/// The bootstrap SQL of several services, with a header that says how to
/// run it.
pub fn bootstrap_sql(prefix: &str, services: &[ServiceName]) -> Result<String, String> {
    let mut sql = String::from(
        "-- Purple: schemas and roles of a least-privilege PostgreSQL deployment.\n\
         -- Run once per database as a role with CREATEROLE and CREATE on the database\n\
         -- (e.g. psql -v ON_ERROR_STOP=1 -f bootstrap.sql); safe to run again.\n\
         -- Then set each role's password (\\password in psql) or use certificate auth.\n\n",
    );
    for &service in services {
        sql.push_str(&ServiceRoles::new(prefix, service)?.bootstrap_sql());
        sql.push('\n');
    }
    Ok(sql)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix_and_refuse_injection() {
        let roles = ServiceRoles::new("purple_", ServiceName::Scoring).unwrap();
        assert_eq!(roles.schema, "purple_scoring");
        assert_eq!(roles.owner, "purple_scoring_owner");
        assert_eq!(roles.runtime, "purple_scoring_app");
        assert!(ServiceRoles::new("x; DROP ROLE postgres; --", ServiceName::Scoring).is_err());
        assert!(ServiceRoles::new("Purple", ServiceName::Scoring).is_err());
    }

    #[test]
    fn the_runtime_role_gets_data_rights_only() {
        let sql = ServiceRoles::new("p_", ServiceName::Ingest)
            .unwrap()
            .bootstrap_sql();
        assert!(sql.contains("CREATE SCHEMA IF NOT EXISTS p_ingest AUTHORIZATION p_ingest_owner"));
        assert!(sql.contains("GRANT USAGE ON SCHEMA p_ingest TO p_ingest_app"));
        assert!(!sql.contains("GRANT CREATE"));
        assert!(!sql.contains("GRANT ALL"));
    }
}
