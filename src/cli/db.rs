//! `purple db bootstrap`: prints (or applies) the SQL that creates each
//! service's PostgreSQL schema, migration role and runtime role
//! (`purple_runtime::roles`), the step before the first `purple migrate`
//! of a least-privilege deployment.

use anyhow::Context;
use clap::{Args, Subcommand};
use purple_runtime::{ServiceName, roles};
use sqlx::{Connection, Executor};

/// Database administration commands.
#[derive(Subcommand, Debug)]
pub enum DbCommand {
    /// Prints the SQL that creates the schemas and the owner (migration)
    /// and runtime roles of every service, or applies it with --apply.
    Bootstrap(BootstrapArgs),
}

/// What to bootstrap.
#[derive(Args, Debug)]
pub struct BootstrapArgs {
    /// Only this service.
    #[arg(long, value_enum)]
    service: Option<ServiceName>,
    /// Prefix of schema and role names (as --schema-prefix of serve).
    #[arg(long, env = "PURPLE_SCHEMA_PREFIX", default_value = "purple_")]
    schema_prefix: String,
    /// Apply the SQL to this PostgreSQL URL (a role with CREATEROLE and
    /// CREATE on the database) instead of printing it.
    #[arg(long, value_name = "ADMIN_DATABASE_URL")]
    apply: Option<String>,
}

/// Runs a database command.
pub async fn run(command: DbCommand) -> anyhow::Result<()> {
    match command {
        DbCommand::Bootstrap(args) => {
            let services = args
                .service
                .map_or_else(|| ServiceName::ALL.to_vec(), |s| vec![s]);
            let sql = roles::bootstrap_sql(&args.schema_prefix, &services)
                .map_err(|e| anyhow::anyhow!("--schema-prefix: {e}"))?;
            let Some(url) = args.apply else {
                print!("{sql}");
                return Ok(());
            };
            let mut conn = sqlx::PgConnection::connect(&url)
                .await
                .context("connecting with the admin URL")?;
            conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(sql)))
                .await
                .context("applying the bootstrap SQL")?;
            conn.close().await?;
            eprintln!("bootstrapped {} service(s)", services.len());
            Ok(())
        }
    }
}
