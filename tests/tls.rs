//! The DynamoDB client's trust store over a real TLS handshake (src/tls.rs), against a local
//! HTTPS server whose certificate (tests/fixtures/tls) chains to a test CA that no real trust
//! store holds:
//! - with the pinned Amazon Trust Services roots the handshake is refused (unknown issuer), so
//!   the pinned set really is the whole trust store and nothing else gets through;
//! - with the system roots and `SSL_CERT_FILE` naming the test CA, the request reaches the server
//!   and its DynamoDB error comes back, so the escape hatch works and the client speaks HTTPS.
//!
//! One test in its own binary: it sets `SSL_CERT_FILE`, which the SDK reads once per process.

use std::sync::Arc;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use clerk_sync::store::Store;
use clerk_sync::tls::{Trust, https_client};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls");

/// Serves HTTPS on 127.0.0.1, answering every request with DynamoDB's "table not found".
async fn https_server() -> u16 {
    let certs = CertificateDer::pem_file_iter(format!("{FIXTURES}/server.pem"))
        .unwrap()
        .chain(CertificateDer::pem_file_iter(format!("{FIXTURES}/ca.pem")).unwrap())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(format!("{FIXTURES}/server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A refused handshake ends here: that is the pinned case.
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let body = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ResourceNotFoundException","message":"Requested resource not found"}"#;
                let answer = format!(
                    "HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

fn client(trust: Trust, port: u16) -> Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(https_client(trust))
        .endpoint_url(format!("https://localhost:{port}"))
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "clerk-sync-tests"))
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
        .build();
    Client::from_conf(config)
}

#[test]
fn pinned_roots_refuse_other_issuers_and_ssl_cert_file_is_honoured() {
    // SAFETY: this binary's only test sets it before any other thread exists.
    unsafe { std::env::set_var("SSL_CERT_FILE", format!("{FIXTURES}/ca.pem")) };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let port = https_server().await;

        let pinned = client(Trust::AmazonTrustServices, port).describe_table().table_name("t").send().await;
        let error = pinned.expect_err("the test CA is not an Amazon Trust Services root");
        assert!(matches!(error, SdkError::DispatchFailure(_)), "{}", DisplayErrorContext(&error));
        let message = format!("{}", DisplayErrorContext(&error));
        assert!(message.contains("UnknownIssuer"), "not a certificate refusal: {message}");
        // The init log line names the refusal (README, "TLS to DynamoDB").
        let warm_up = Store::new(client(Trust::AmazonTrustServices, port), "t").warm_up().await;
        let logged = warm_up.expect_err("refused again").to_string();
        assert!(logged.contains("DescribeTable") && logged.contains("UnknownIssuer"), "{logged}");

        let system = client(Trust::System, port).describe_table().table_name("t").send().await;
        let error = system.expect_err("the server answers table not found");
        let service = error.into_service_error();
        assert!(service.is_resource_not_found_exception(), "{}", DisplayErrorContext(&service));
    });
}
