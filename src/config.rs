//! Configuration, read once at init. A missing or invalid value stops the function from starting
//! with a message that names the variable (and never shows a secret).

use crate::clerk::{DEFAULT_API_URL, SecretKey};
use crate::verify::{SecretError, SigningSecret};

pub const SIGNING_SECRET_VAR: &str = "CLERK_WEBHOOK_SIGNING_SECRET";
pub const TABLE_NAME_VAR: &str = "TABLE_NAME";
pub const STORE_CLERK_DATA_VAR: &str = "STORE_CLERK_DATA";
/// `/sync` (src/sync.rs): on when the secret key is set.
pub const SECRET_KEY_VAR: &str = "CLERK_SECRET_KEY";
pub const API_URL_VAR: &str = "CLERK_API_URL";
pub const JWT_KEY_VAR: &str = "CLERK_JWT_KEY";
pub const AUTHORIZED_PARTIES_VAR: &str = "CLERK_AUTHORIZED_PARTIES";

#[derive(Debug)]
pub struct Config {
    /// One or more receiver secrets; several during a rotation.
    pub secrets: Vec<SigningSecret>,
    pub table_name: String,
    /// Keep the whole Clerk object under `data` (default true).
    pub store_clerk_data: bool,
    /// What `/sync` needs; `None` (the route answers 404) without `CLERK_SECRET_KEY`.
    pub sync: Option<SyncConfig>,
}

/// `/sync`'s configuration, as read: checked by `sync::Sync::new`, so that a mistake in it turns
/// off `/sync` (500, and an error at init) and never stops the webhooks.
#[derive(Debug)]
pub struct SyncConfig {
    pub secret_key: SecretKey,
    pub api_url: String,
    /// The instance's PEM public key, for verifying tokens with no network call.
    pub jwt_key: Option<String>,
    /// Origins a token's `azp` must be one of; empty for any.
    pub authorized_parties: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{SIGNING_SECRET_VAR} is invalid: {0}")]
    InvalidSecret(SecretError),
    #[error("{0} must be true or false")]
    NotABoolean(&'static str),
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `get` (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let required = |name: &'static str| {
            get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).ok_or(ConfigError::Missing(name))
        };
        let secrets = SigningSecret::parse_list(&required(SIGNING_SECRET_VAR)?).map_err(ConfigError::InvalidSecret)?;
        let table_name = required(TABLE_NAME_VAR)?;
        let store_clerk_data = match get(STORE_CLERK_DATA_VAR).as_deref().map(str::trim) {
            None | Some("") => true,
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(_) => return Err(ConfigError::NotABoolean(STORE_CLERK_DATA_VAR)),
        };
        let sync = get(SECRET_KEY_VAR).and_then(SecretKey::new).map(|secret_key| {
            let optional = |name| get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
            SyncConfig {
                secret_key,
                api_url: optional(API_URL_VAR).unwrap_or_else(|| DEFAULT_API_URL.to_owned()),
                jwt_key: optional(JWT_KEY_VAR),
                authorized_parties: optional(AUTHORIZED_PARTIES_VAR)
                    .map(|list| {
                        list.split(',')
                            .map(|o| o.trim().trim_end_matches('/').to_owned())
                            .filter(|o| !o.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        });
        Ok(Self { secrets, table_name, store_clerk_data, sync })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn minimal_configuration_keeps_clerk_data() {
        let config = load(&[(SIGNING_SECRET_VAR, SECRET), (TABLE_NAME_VAR, "clerk")]).unwrap();
        assert_eq!(config.secrets.len(), 1);
        assert_eq!(config.table_name, "clerk");
        assert!(config.store_clerk_data);
    }

    #[test]
    fn several_secrets_are_read_for_rotation() {
        let both = format!("{SECRET}, whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD");
        let config = load(&[(SIGNING_SECRET_VAR, &both), (TABLE_NAME_VAR, "t")]).unwrap();
        assert_eq!(config.secrets.len(), 2);
    }

    #[test]
    fn missing_values_are_named() {
        assert_eq!(load(&[(TABLE_NAME_VAR, "t")]).unwrap_err(), ConfigError::Missing(SIGNING_SECRET_VAR));
        assert_eq!(load(&[(SIGNING_SECRET_VAR, SECRET)]).unwrap_err(), ConfigError::Missing(TABLE_NAME_VAR));
        assert_eq!(
            load(&[(SIGNING_SECRET_VAR, " "), (TABLE_NAME_VAR, "t")]).unwrap_err(),
            ConfigError::Missing(SIGNING_SECRET_VAR)
        );
    }

    #[test]
    fn invalid_secret_is_refused_without_showing_it() {
        let error = load(&[(SIGNING_SECRET_VAR, "whsec_%%%secret%%%"), (TABLE_NAME_VAR, "t")]).unwrap_err();
        assert_eq!(error, ConfigError::InvalidSecret(SecretError::NotBase64));
        assert!(!error.to_string().contains("secret%%%"));
    }

    #[test]
    fn sync_is_off_without_a_secret_key() {
        let config = load(&[(SIGNING_SECRET_VAR, SECRET), (TABLE_NAME_VAR, "t"), (SECRET_KEY_VAR, " ")]).unwrap();
        assert!(config.sync.is_none());
    }

    #[test]
    fn sync_reads_its_options() {
        let vars = [
            (SIGNING_SECRET_VAR, SECRET),
            (TABLE_NAME_VAR, "t"),
            (SECRET_KEY_VAR, "sk_test_x"),
            (AUTHORIZED_PARTIES_VAR, "https://app.example.com/, https://admin.example.com,,"),
        ];
        let sync = load(&vars).unwrap().sync.unwrap();
        assert_eq!(sync.api_url, DEFAULT_API_URL);
        assert_eq!(sync.jwt_key, None);
        assert_eq!(sync.authorized_parties, ["https://app.example.com", "https://admin.example.com"]);
        assert!(!format!("{sync:?}").contains("sk_test_x"));
    }

    #[test]
    fn clerk_data_can_be_turned_off() {
        let config = load(&[(SIGNING_SECRET_VAR, SECRET), (TABLE_NAME_VAR, "t"), (STORE_CLERK_DATA_VAR, "FALSE")]);
        assert!(!config.unwrap().store_clerk_data);
        let config = load(&[(SIGNING_SECRET_VAR, SECRET), (TABLE_NAME_VAR, "t"), (STORE_CLERK_DATA_VAR, "no")]);
        assert_eq!(config.unwrap_err(), ConfigError::NotABoolean(STORE_CLERK_DATA_VAR));
    }
}
