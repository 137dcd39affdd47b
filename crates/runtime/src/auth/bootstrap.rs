//! The embedded default's identity, made on first start with no setup: a
//! random HS256 signing secret and an admin token, each a file of mode
//! 0600 in the data directory. The log names the token's path once; the
//! token itself is never logged. Client subcommands pick it up from there.
//! A production deployment configures its own keys and mints its first
//! admin token with `purple token mint` instead.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use purple_api::common::v1::Role;

use super::tokens::{KeyError, Minter};
use crate::settings::AuthSettings;

/// The signing secret's file in the data directory.
pub fn secret_path(data_dir: &Path) -> PathBuf {
    data_dir.join("jwt-secret")
}

/// The admin token's file in the data directory.
pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.token")
}

/// How long the bootstrap admin token lives.
const ADMIN_TOKEN_TTL: Duration = Duration::from_secs(365 * 86_400);

/// Writes `contents` to a new file readable by its owner only; an existing
/// file is left alone (false). The file appears whole or not at all (a
/// temporary file, synced, then linked into place): a crash mid-write
/// never leaves a truncated secret that would refuse every token.
fn create_private(path: &Path, contents: &str) -> std::io::Result<bool> {
    if path.exists() {
        return Ok(false);
    }
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    // tempfile creates it with mode 0600 on Unix.
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(contents.as_bytes())?;
    file.as_file().sync_all()?;
    match file.persist_noclobber(path) {
        Ok(_) => Ok(true),
        Err(err) if err.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(err) => Err(err.error),
    }
}

/// When no verification key is configured, makes sure the data directory
/// holds a signing secret and an admin token signed with it. Returns the
/// embedded secret's path (None when keys are configured).
pub fn ensure(settings: &AuthSettings, data_dir: &Path) -> Result<Option<PathBuf>, KeyError> {
    if settings.has_verification_key() {
        return Ok(None);
    }
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| KeyError::Read { path, source }
    };
    std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    let secret = secret_path(data_dir);
    let mut bytes = [0_u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| KeyError::Missing(format!("no randomness: {e}")))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    if create_private(&secret, &hex).map_err(io(&secret))? {
        tracing::info!(path = %secret.display(), "created the token signing secret");
    }
    let token_path = admin_token_path(data_dir);
    if !token_path.exists() {
        let minter = Minter::new(settings, Some(&secret))?
            .ok_or_else(|| KeyError::Missing("no signing key".into()))?;
        let token = minter.mint("admin", Role::Admin, "Administrator", ADMIN_TOKEN_TTL);
        if create_private(&token_path, &token).map_err(io(&token_path))? {
            tracing::warn!(
                path = %token_path.display(),
                "created an admin token; give it to the first administrator (it is valid for a year)"
            );
        }
    }
    Ok(Some(secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::tokens::Verifier;

    #[test]
    fn first_start_makes_a_private_secret_and_an_admin_token_once() {
        let dir = tempfile::tempdir().unwrap();
        let settings = AuthSettings::default();
        let secret = ensure(&settings, dir.path()).unwrap().unwrap();
        let token = std::fs::read_to_string(admin_token_path(dir.path())).unwrap();
        let caller = Verifier::new(&settings, Some(&secret))
            .unwrap()
            .verify(&token)
            .unwrap();
        assert_eq!(caller.roles, vec![Role::Admin]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for path in [secret.clone(), admin_token_path(dir.path())] {
                let mode = std::fs::metadata(&path).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{}", path.display());
            }
        }
        // A second start keeps both.
        ensure(&settings, dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(admin_token_path(dir.path())).unwrap(),
            token
        );
    }
}
