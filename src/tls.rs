//! Which certificate authorities the DynamoDB client trusts (part of step 5's set-up, at init).
//!
//! The SDK's default HTTPS client loads the system's roots at the first connection: on Amazon
//! Linux that is reading and parsing every certificate of the system bundle, each more than once
//! (the bundle file, then the certificate directory holding it). Here that took 2 to 3 ms of a
//! 10 ms init (`scripts/bench`, BENCHMARKS.md). DynamoDB's endpoints in the `aws` partition present
//! certificates issued by Amazon Trust Services, so for them the client trusts exactly its five
//! roots, compiled in, and reads no file.
//!
//! Anywhere else the system's roots stay: an `https` endpoint URL set in the environment, a region
//! of another partition (China, GovCloud, the isolated and sovereign regions), or `SSL_CERT_FILE` /
//! `SSL_CERT_DIR` set, which is how an operator names their own trust store. A plain `http`
//! endpoint (a local DynamoDB) checks no certificate at all, so it too gets the compiled-in set,
//! which costs nothing to load: local runs and benchmarks then do the same init work as Lambda.

use aws_sdk_dynamodb::config::SharedHttpClient;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
use aws_smithy_http_client::{Builder, ConnectorBuilder};

/// Amazon Root CA 1 to 4 and Starfield Services Root Certificate Authority - G2, in PEM.
pub const AMAZON_TRUST_SERVICES_PEM: &[u8] = include_bytes!("amazon-trust-services.pem");

/// Where an operator names their own trust store.
const TRUST_STORE_VARS: [&str; 2] = ["SSL_CERT_FILE", "SSL_CERT_DIR"];
/// Where the SDK reads an endpoint URL for DynamoDB, the first set one winning.
const ENDPOINT_VARS: [&str; 2] = ["AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// The roots of Amazon Trust Services only.
    AmazonTrustServices,
    /// The system's roots (the SDK's default).
    System,
}

impl Trust {
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Chooses through `get` (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let value = |name: &str| get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        if TRUST_STORE_VARS.iter().any(|name| value(name).is_some()) {
            return Trust::System;
        }
        if let Some(endpoint) = ENDPOINT_VARS.iter().find_map(|name| value(name)) {
            let plain_http = endpoint.get(..7).is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"));
            return if plain_http { Trust::AmazonTrustServices } else { Trust::System };
        }
        let region = get("AWS_REGION").or_else(|| get("AWS_DEFAULT_REGION")).unwrap_or_default();
        if in_aws_partition(region.trim()) { Trust::AmazonTrustServices } else { Trust::System }
    }

    /// The name the init log line gives it.
    pub fn name(self) -> &'static str {
        match self {
            Trust::AmazonTrustServices => "amazon-trust-services",
            Trust::System => "system",
        }
    }

    fn trust_store(self) -> TrustStore {
        match self {
            Trust::AmazonTrustServices => TrustStore::empty().with_pem_certificate(AMAZON_TRUST_SERVICES_PEM),
            Trust::System => TrustStore::default(),
        }
    }
}

/// Whether `region` belongs to the `aws` partition, by the partition's own pattern in the SDK's
/// endpoint rules: `^(us|eu|ap|sa|ca|me|af|il|mx)-\w+-\d+$` (so `us-east-1`, not `us-gov-west-1`,
/// `us-iso-east-1`, `cn-north-1` or `eusc-de-east-1`).
pub fn in_aws_partition(region: &str) -> bool {
    let mut parts = region.split('-');
    let (Some(area), Some(place), Some(number), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    ["us", "eu", "ap", "sa", "ca", "me", "af", "il", "mx"].contains(&area)
        && !place.is_empty()
        && place.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !number.is_empty()
        && number.chars().all(|c| c.is_ascii_digit())
}

/// The SDK's default HTTPS client (rustls on aws-lc, the proxy settings of the environment, the
/// SDK's connector settings and sleep) with `trust` as its roots.
pub fn https_client(trust: Trust) -> SharedHttpClient {
    let context = TlsContext::builder()
        .with_trust_store(trust.trust_store())
        .build()
        .expect("a TLS context with a trust store and no extra server names always builds");
    Builder::new().build_with_connector_fn(move |settings, components| {
        let mut builder = ConnectorBuilder::default()
            .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
            .tls_context(context.clone());
        builder.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            builder.set_sleep_impl(components.sleep_impl());
        }
        builder.set_proxy_config(Some(ProxyConfig::from_env()));
        builder.build()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use sha2::{Digest, Sha256};
    use std::collections::HashMap;

    fn choose(vars: &[(&str, &str)]) -> Trust {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Trust::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn aws_partition_regions_trust_amazon_trust_services() {
        for region in ["us-east-1", "eu-central-2", "ap-southeast-7", "il-central-1", "mx-central-1", "ca-west-1"] {
            assert_eq!(choose(&[("AWS_REGION", region)]), Trust::AmazonTrustServices, "{region}");
        }
        assert_eq!(choose(&[("AWS_DEFAULT_REGION", "sa-east-1")]), Trust::AmazonTrustServices);
    }

    #[test]
    fn other_partitions_and_unknown_regions_keep_the_system_roots() {
        for region in ["cn-north-1", "us-gov-west-1", "us-iso-east-1", "us-isob-east-1", "eu-isoe-west-1"] {
            assert_eq!(choose(&[("AWS_REGION", region)]), Trust::System, "{region}");
        }
        for region in ["eusc-de-east-1", "us-east", "us-east-1a", "us--1", "", "local"] {
            assert_eq!(choose(&[("AWS_REGION", region)]), Trust::System, "{region:?}");
        }
        assert_eq!(choose(&[]), Trust::System);
    }

    #[test]
    fn a_trust_store_named_in_the_environment_is_used() {
        for name in TRUST_STORE_VARS {
            assert_eq!(choose(&[("AWS_REGION", "us-east-1"), (name, "/etc/my-roots")]), Trust::System, "{name}");
            let local = [("AWS_ENDPOINT_URL", "http://127.0.0.1:8000"), (name, "/etc/my-roots")];
            assert_eq!(choose(&local), Trust::System, "{name}");
        }
        assert_eq!(choose(&[("AWS_REGION", "us-east-1"), ("SSL_CERT_FILE", " ")]), Trust::AmazonTrustServices);
    }

    #[test]
    fn an_https_endpoint_in_the_environment_keeps_the_system_roots() {
        for name in ENDPOINT_VARS {
            let vars = [("AWS_REGION", "us-east-1"), (name, "https://dynamodb.example.internal")];
            assert_eq!(choose(&vars), Trust::System, "{name}");
        }
        // The DynamoDB-specific variable wins, as in the SDK.
        let vars = [("AWS_ENDPOINT_URL_DYNAMODB", "https://proxy.internal"), ("AWS_ENDPOINT_URL", "http://localhost")];
        assert_eq!(choose(&vars), Trust::System);
    }

    #[test]
    fn a_plain_http_endpoint_loads_no_roots() {
        for name in ENDPOINT_VARS {
            for url in ["http://127.0.0.1:8000", "HTTP://localhost:4566"] {
                assert_eq!(choose(&[(name, url)]), Trust::AmazonTrustServices, "{name}={url}");
                assert_eq!(choose(&[("AWS_REGION", "cn-north-1"), (name, url)]), Trust::AmazonTrustServices);
            }
        }
        let vars = [("AWS_ENDPOINT_URL_DYNAMODB", "http://localhost:8000"), ("AWS_ENDPOINT_URL", "https://x")];
        assert_eq!(choose(&vars), Trust::AmazonTrustServices);
    }

    /// The compiled-in roots are exactly the five Amazon Trust Services publishes, by SHA-256.
    #[test]
    fn the_pinned_roots_are_amazon_trust_services() {
        let published = [
            "8ecde6884f3d87b1125ba31ac3fcb13d7016de7f57cc904fe1cb97c6ae98196e", // Amazon Root CA 1
            "1ba5b2aa8c65401a82960118f80bec4f62304d83cec4713a19c39c011ea46db4", // Amazon Root CA 2
            "18ce6cfe7bf14e60b2e347b8dfe868cb31d02ebb3ada271569f50343b46db3a4", // Amazon Root CA 3
            "e35d28419ed02025cfa69038cd623962458da5c695fbdea3c22b0bfb25897092", // Amazon Root CA 4
            "568d6905a2c88708a4b3025190edcfedb1974a606a13c6e5290fcb2ae63edab5", // Starfield Services G2
        ];
        let pem = std::str::from_utf8(AMAZON_TRUST_SERVICES_PEM).unwrap();
        let fingerprints: Vec<String> = pem
            .split("-----BEGIN CERTIFICATE-----")
            .skip(1)
            .map(|block| {
                let body = block.split("-----END CERTIFICATE-----").next().unwrap();
                let base64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
                let der = base64::engine::general_purpose::STANDARD.decode(base64).unwrap();
                Sha256::digest(der).iter().map(|b| format!("{b:02x}")).collect()
            })
            .collect();
        assert_eq!(fingerprints, published);
    }
}
