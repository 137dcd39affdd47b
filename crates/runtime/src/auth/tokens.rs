//! Signed JWTs: verification (HS256 with a shared secret, RS256 or ES256
//! with a public key or a JWKS file) with issuer, audience, expiry and
//! clock-skew checks, and minting (for operators, tests and service
//! identities). Claim names are settings, so an organisation's OIDC
//! provider (Keycloak, Dex, Entra ID) can issue the tokens.

use std::{path::Path, time::Duration};

use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, decode_header, encode,
    jwk::JwkSet,
};
use purple_api::common::v1::Role;
use serde_json::{Map, Value, json};

use super::Caller;
use crate::{settings::AuthSettings, time::Micros};

/// Why a token was refused. The message never contains the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// No `authorization: Bearer` metadata.
    #[error("missing bearer token: send `authorization: Bearer <token>`")]
    Missing,
    /// Not a token these keys signed, expired, or for another issuer or
    /// audience.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// A valid token that names no Purple role.
    #[error("the token grants no Purple role")]
    NoRole,
}

/// A key and configuration problem at start-up.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A key file is not a key of a supported kind.
    #[error("{path}: {reason}")]
    Bad { path: String, reason: String },
    /// No key is configured where one is needed.
    #[error("{0}")]
    Missing(String),
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn bad(path: &Path, reason: impl std::fmt::Display) -> KeyError {
    KeyError::Bad {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// A shared HS256 secret: the file's bytes, trimmed; at least 32.
fn secret(path: &Path) -> Result<Vec<u8>, KeyError> {
    let bytes = read(path)?;
    let trimmed = bytes.trim_ascii().to_vec();
    if trimmed.len() < 32 {
        return Err(bad(path, "an HS256 secret needs at least 32 bytes"));
    }
    Ok(trimmed)
}

/// One verification key and the algorithms it accepts.
struct VerifyingKey {
    kid: Option<String>,
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

/// Claim names and checks common to verification and minting.
#[derive(Clone, Debug)]
struct Claims {
    issuer: String,
    audience: String,
    leeway: u64,
    subject: String,
    role: String,
    name: String,
    role_prefix: String,
}

impl Claims {
    fn of(settings: &AuthSettings) -> Self {
        Self {
            issuer: settings.jwt_issuer.clone(),
            audience: settings.jwt_audience.clone(),
            leeway: settings.jwt_leeway_secs,
            subject: settings.jwt_subject_claim.clone(),
            role: settings.jwt_role_claim.clone(),
            name: settings.jwt_name_claim.clone(),
            role_prefix: settings.jwt_role_prefix.clone(),
        }
    }
}

/// A claim by dotted path (`realm_access.roles`).
fn claim<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(claims, |v, k| v.get(k))
}

/// Verifies bearer tokens.
pub struct Verifier {
    keys: Vec<VerifyingKey>,
    claims: Claims,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys.len())
            .field("claims", &self.claims)
            .finish()
    }
}

/// The longest token accepted: far more than any real JWT, little enough
/// that a hostile header costs nothing to refuse.
const MAX_TOKEN_LEN: usize = 16 * 1024;

impl Verifier {
    /// The verifier of the configured keys: an HS256 secret file, a PEM
    /// public key (RSA: RS256/384/512; EC: ES256/384), or a JWKS file (keys
    /// chosen by `kid`). `embedded_secret` is the data directory's secret,
    /// used when none is configured.
    pub fn new(settings: &AuthSettings, embedded_secret: Option<&Path>) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        let secret_file =
            settings
                .jwt_secret_file
                .as_deref()
                .or(if settings.has_verification_key() {
                    None
                } else {
                    embedded_secret
                });
        if let Some(path) = secret_file {
            keys.push(VerifyingKey {
                kid: None,
                key: DecodingKey::from_secret(&secret(path)?).map_err(|e| bad(path, e))?,
                algorithms: vec![Algorithm::HS256],
            });
        }
        if let Some(path) = &settings.jwt_public_key_file {
            let pem = read(path)?;
            let key = if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                VerifyingKey {
                    kid: None,
                    key,
                    algorithms: vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
                }
            } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
                VerifyingKey {
                    kid: None,
                    key,
                    algorithms: vec![Algorithm::ES256, Algorithm::ES384],
                }
            } else {
                return Err(bad(path, "not an RSA or EC public key in PEM"));
            };
            keys.push(key);
        }
        if let Some(path) = &settings.jwt_jwks_file {
            let set: JwkSet = serde_json::from_slice(&read(path)?).map_err(|e| bad(path, e))?;
            for jwk in &set.keys {
                let algorithms = match jwk.common.key_algorithm {
                    Some(alg) => vec![
                        alg.to_string()
                            .parse::<Algorithm>()
                            .map_err(|_| bad(path, format!("unsupported algorithm {alg}")))?,
                    ],
                    None => match &jwk.algorithm {
                        jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => {
                            vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512]
                        }
                        jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => {
                            vec![Algorithm::ES256, Algorithm::ES384]
                        }
                        _ => continue,
                    },
                };
                keys.push(VerifyingKey {
                    kid: jwk.common.key_id.clone(),
                    key: DecodingKey::from_jwk(jwk).map_err(|e| bad(path, e))?,
                    algorithms,
                });
            }
        }
        if keys.is_empty() {
            return Err(KeyError::Missing(
                "no token verification key: set --jwt-secret-file, --jwt-public-key-file or --jwt-jwks-file".into(),
            ));
        }
        Ok(Self {
            keys,
            claims: Claims::of(settings),
        })
    }

    /// The caller a bearer token names.
    pub fn verify(&self, token: &str) -> Result<Caller, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Invalid("too long".into()));
        }
        let header = decode_header(token).map_err(|_| TokenError::Invalid("not a JWT".into()))?;
        let candidates = self.keys.iter().filter(|k| {
            k.algorithms.contains(&header.alg)
                && (header.kid.is_none() || k.kid.is_none() || k.kid == header.kid)
        });
        let mut last = TokenError::Invalid(format!("no key for algorithm {:?}", header.alg));
        for key in candidates {
            let mut validation = Validation::new(header.alg);
            validation.set_issuer(&[&self.claims.issuer]);
            validation.set_audience(&[&self.claims.audience]);
            validation.leeway = self.claims.leeway;
            validation.set_required_spec_claims(&["exp", "iss", "aud"]);
            validation.validate_nbf = true;
            match decode::<Value>(token, &key.key, &validation) {
                Ok(data) => return self.caller(&data.claims),
                Err(e) => last = TokenError::Invalid(describe(&e)),
            }
        }
        Err(last)
    }

    fn caller(&self, claims: &Value) -> Result<Caller, TokenError> {
        let subject = claim(claims, &self.claims.subject)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 256 && !s.contains('\0'))
            .ok_or_else(|| TokenError::Invalid("no usable subject claim".into()))?
            .to_owned();
        let names: Vec<&str> = match claim(claims, &self.claims.role) {
            Some(Value::String(s)) => s.split_whitespace().collect(),
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let mut roles: Vec<Role> = names
            .iter()
            .filter_map(|n| n.strip_prefix(self.claims.role_prefix.as_str()))
            .filter_map(Role::from_key)
            .collect();
        roles.sort_by_key(|r| *r as i32);
        roles.dedup();
        if roles.is_empty() {
            return Err(TokenError::NoRole);
        }
        let name = claim(claims, &self.claims.name)
            .and_then(Value::as_str)
            .filter(|n| !n.trim().is_empty() && n.len() <= 200 && !n.contains('\0'))
            .unwrap_or(&subject)
            .to_owned();
        Ok(Caller {
            subject,
            name,
            roles,
        })
    }
}

/// What went wrong, in words that say nothing of the token.
fn describe(err: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match err.kind() {
        K::ExpiredSignature => "expired".into(),
        K::ImmatureSignature => "not valid yet".into(),
        K::InvalidIssuer => "wrong issuer".into(),
        K::InvalidAudience => "wrong audience".into(),
        K::InvalidSignature => "bad signature".into(),
        K::MissingRequiredClaim(c) => format!("missing claim {c}"),
        K::InvalidAlgorithm => "algorithm not allowed".into(),
        _ => "malformed".into(),
    }
}

/// Signs tokens with the configured private key or shared secret.
pub struct Minter {
    key: EncodingKey,
    algorithm: Algorithm,
    claims: Claims,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter")
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

impl Minter {
    /// The minter of the configured signing key: a PEM private key (RSA →
    /// RS256, EC → ES256) or the HS256 secret (configured, or the data
    /// directory's when nothing is configured). None when the deployment
    /// only verifies (a public key or JWKS and no private key).
    pub fn new(
        settings: &AuthSettings,
        embedded_secret: Option<&Path>,
    ) -> Result<Option<Self>, KeyError> {
        let claims = Claims::of(settings);
        if let Some(path) = &settings.jwt_private_key_file {
            let pem = read(path)?;
            let (key, algorithm) = if let Ok(key) = EncodingKey::from_rsa_pem(&pem) {
                (key, Algorithm::RS256)
            } else if let Ok(key) = EncodingKey::from_ec_pem(&pem) {
                (key, Algorithm::ES256)
            } else {
                return Err(bad(path, "not an RSA or EC private key in PEM"));
            };
            return Ok(Some(Self {
                key,
                algorithm,
                claims,
            }));
        }
        let secret_file =
            settings
                .jwt_secret_file
                .as_deref()
                .or(if settings.has_verification_key() {
                    None
                } else {
                    embedded_secret
                });
        Ok(match secret_file {
            Some(path) => Some(Self {
                key: EncodingKey::from_secret(&secret(path)?).map_err(|e| bad(path, e))?,
                algorithm: Algorithm::HS256,
                claims,
            }),
            None => None,
        })
    }

    /// A token for `subject` with `role`, valid for `ttl`.
    pub fn mint(&self, subject: &str, role: Role, name: &str, ttl: Duration) -> String {
        self.mint_roles(subject, &[role], name, ttl)
    }

    /// A token for `subject` with several roles (the role claim a list, as
    /// identity providers issue it), valid for `ttl`.
    pub fn mint_roles(&self, subject: &str, roles: &[Role], name: &str, ttl: Duration) -> String {
        let now = Micros::now().as_micros() / 1_000_000;
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(self.claims.issuer));
        claims.insert("aud".into(), json!(self.claims.audience));
        claims.insert("iat".into(), json!(now));
        claims.insert("nbf".into(), json!(now));
        claims.insert(
            "exp".into(),
            json!(now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2))),
        );
        claims.insert("jti".into(), json!(uuid::Uuid::new_v4().to_string()));
        set_path(&mut claims, &self.claims.subject, json!(subject));
        let roles: Vec<String> = roles
            .iter()
            .map(|r| format!("{}{}", self.claims.role_prefix, r.key().unwrap_or("")))
            .collect();
        let role_claim = match roles.as_slice() {
            [one] => json!(one),
            many => json!(many),
        };
        set_path(&mut claims, &self.claims.role, role_claim);
        if !name.is_empty() {
            set_path(&mut claims, &self.claims.name, json!(name));
        }
        encode(
            &Header::new(self.algorithm),
            &Value::Object(claims),
            &self.key,
        )
        .expect("claims of strings and numbers encode")
    }
}

/// Sets a claim by dotted path, making the objects on the way.
fn set_path(claims: &mut Map<String, Value>, path: &str, value: Value) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().unwrap_or(path);
    let mut node = claims;
    for part in parts {
        node = node
            .entry(part)
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .expect("a claim path through objects");
    }
    node.insert(last.to_owned(), value);
}

/// Parses a TTL like `90s`, `15m`, `12h`, `30d` (or plain seconds).
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 90s, 15m, 12h or 30d"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit is s, m, h or d")),
    };
    Ok(Duration::from_secs(n.saturating_mul(seconds)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> AuthSettings {
        let path = dir.join("secret");
        std::fs::write(&path, "0123456789abcdef0123456789abcdef").unwrap();
        AuthSettings {
            jwt_secret_file: Some(path),
            ..AuthSettings::default()
        }
    }

    #[test]
    fn a_minted_token_verifies_and_names_its_caller() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let minter = Minter::new(&s, None).unwrap().unwrap();
        let verifier = Verifier::new(&s, None).unwrap();
        let token = minter.mint("u1", Role::RedTech, "Rex", Duration::from_secs(60));
        let caller = verifier.verify(&token).unwrap();
        assert_eq!(
            (caller.subject.as_str(), caller.name.as_str(), caller.roles),
            ("u1", "Rex", vec![Role::RedTech])
        );
    }

    #[test]
    fn expired_foreign_and_roleless_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let verifier = Verifier::new(&s, None).unwrap();
        let minter = Minter::new(&s, None).unwrap().unwrap();
        // Expired beyond the leeway.
        let mut old = s.clone();
        old.jwt_leeway_secs = 0;
        let strict = Verifier::new(&old, None).unwrap();
        let token = minter.mint("u1", Role::Admin, "", Duration::from_secs(0));
        std::thread::sleep(Duration::from_millis(1_100));
        assert!(matches!(strict.verify(&token), Err(TokenError::Invalid(m)) if m == "expired"));
        // Another issuer.
        let mut other = s.clone();
        other.jwt_issuer = "someone-else".into();
        let foreign = Minter::new(&other, None).unwrap().unwrap().mint(
            "u1",
            Role::Admin,
            "",
            Duration::from_secs(60),
        );
        assert!(
            matches!(verifier.verify(&foreign), Err(TokenError::Invalid(m)) if m == "wrong issuer")
        );
        // Another key.
        let dir2 = tempfile::tempdir().unwrap();
        std::fs::write(
            dir2.path().join("secret"),
            "ffffffffffffffffffffffffffffffff",
        )
        .unwrap();
        let wrong = Minter::new(
            &AuthSettings {
                jwt_secret_file: Some(dir2.path().join("secret")),
                ..AuthSettings::default()
            },
            None,
        )
        .unwrap()
        .unwrap()
        .mint("u1", Role::Admin, "", Duration::from_secs(60));
        assert!(
            matches!(verifier.verify(&wrong), Err(TokenError::Invalid(m)) if m == "bad signature")
        );
        assert_eq!(verifier.verify(""), Err(TokenError::Missing));
        assert!(verifier.verify("not.a.token").is_err());
        // A role Purple does not know.
        let mut prefixed = s.clone();
        prefixed.jwt_role_prefix = "purple-".into();
        let token = minter.mint("u1", Role::Admin, "", Duration::from_secs(60));
        assert_eq!(
            Verifier::new(&prefixed, None).unwrap().verify(&token),
            Err(TokenError::NoRole)
        );
    }

    #[test]
    fn claim_names_follow_an_oidc_provider() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        s.jwt_role_claim = "realm_access.roles".into();
        s.jwt_subject_claim = "preferred_username".into();
        let minter = Minter::new(&s, None).unwrap().unwrap();
        let token = minter.mint("alice", Role::PurpleLead, "", Duration::from_secs(60));
        let caller = Verifier::new(&s, None).unwrap().verify(&token).unwrap();
        assert_eq!(
            (caller.subject.as_str(), caller.roles),
            ("alice", vec![Role::PurpleLead])
        );
    }

    #[test]
    fn ttls_read_as_people_write_them() {
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_ttl("30d"), Ok(Duration::from_secs(2_592_000)));
        assert_eq!(parse_ttl("600"), Ok(Duration::from_secs(600)));
        assert!(parse_ttl("soon").is_err());
        assert!(parse_ttl("5y").is_err());
    }
}
