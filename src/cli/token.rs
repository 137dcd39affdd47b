//! `purple token mint`: signs a bearer token with the deployment's key —
//! the first admin token of a production deployment, a service token to
//! mount, or a token for a test. It prints the token and nothing else, so
//! `TOKEN=$(purple token mint ...)` works.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use purple_api::common::v1::Role;
use purple_runtime::{
    auth::{bootstrap, tokens},
    settings::AuthSettings,
};

/// Token commands.
#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Signs a token with the configured key (or the data directory's
    /// secret) and prints it.
    Mint(MintArgs),
}

/// A role, as tokens and the API spell it.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RoleArg {
    #[value(name = "admin")]
    Admin,
    #[value(name = "purple_lead", alias = "purple-lead")]
    PurpleLead,
    #[value(name = "red_tech", alias = "red-tech")]
    RedTech,
    #[value(name = "blue_tech", alias = "blue-tech")]
    BlueTech,
    #[value(name = "viewer")]
    Viewer,
    #[value(name = "service")]
    Service,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Admin => Role::Admin,
            RoleArg::PurpleLead => Role::PurpleLead,
            RoleArg::RedTech => Role::RedTech,
            RoleArg::BlueTech => Role::BlueTech,
            RoleArg::Viewer => Role::Viewer,
            RoleArg::Service => Role::Service,
        }
    }
}

/// What to sign.
#[derive(Args, Debug)]
pub struct MintArgs {
    /// Who the token names: a user id (the id CreateUsers returned, or the
    /// id an identity provider issues), or `service:<name>`.
    #[arg(long)]
    subject: String,
    /// The role it grants.
    #[arg(long, value_enum)]
    role: RoleArg,
    /// How long it is valid: 90s, 15m, 12h, 30d.
    #[arg(long, default_value = "1h", value_parser = tokens::parse_ttl)]
    ttl: Duration,
    /// A display name (the user's name when it first acts).
    #[arg(long, default_value = "")]
    name: String,
    /// The embedded server's data directory, whose secret signs when no
    /// key is configured.
    #[arg(long, env = "PURPLE_DATA_DIR", default_value = "./purple-data")]
    data_dir: PathBuf,
    #[command(flatten)]
    auth: Box<AuthSettings>,
}

/// Runs a token command.
pub fn run(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Mint(args) => {
            let embedded = bootstrap::secret_path(&args.data_dir);
            let minter = tokens::Minter::new(&args.auth, Some(&embedded))
                .with_context(|| {
                    format!(
                        "no signing key: set --jwt-secret-file or --jwt-private-key-file, or start the server once to create {}",
                        embedded.display()
                    )
                })?
                .context("this deployment only verifies tokens: set --jwt-private-key-file to sign")?;
            let name = if args.name.is_empty() {
                args.subject.clone()
            } else {
                args.name
            };
            println!(
                "{}",
                minter.mint(&args.subject, args.role.into(), &name, args.ttl)
            );
            Ok(())
        }
    }
}
