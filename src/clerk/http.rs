//! The HTTPS transport under the Backend API client: the AWS SDK's own connector (hyper, rustls on
//! aws-lc, the proxy settings of the environment), which the DynamoDB client already links, so
//! `/sync` adds no second HTTP or TLS stack to the function. Clerk's certificates are checked
//! against the system's roots (or `SSL_CERT_FILE` / `SSL_CERT_DIR`), loaded at the first connection.

use std::time::Duration;

use aws_smithy_async::rt::sleep::TokioSleep;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
use aws_smithy_http_client::{Connector, ConnectorBuilder};
use aws_smithy_runtime_api::client::http::{HttpConnector, HttpConnectorSettings};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::byte_stream::ByteStream;
use lambda_http::http::{self, HeaderValue, header};

/// An answer, read whole.
pub struct Answer {
    pub status: u16,
    /// `Retry-After` in seconds, when present and a number (Clerk sends seconds).
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

/// Why no answer came, in words that carry no URL, body or header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    TimedOut,
    ConnectionFailed,
    CutOff,
    TooLarge,
    Failed,
}

/// The largest answer read: a page of 500 memberships, each embedding its organization, is about
/// 1 MB; a user at Clerk's metadata limits, well under 100 KB. Anything larger is not Clerk's.
pub const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

impl Transport {
    pub fn detail(self) -> &'static str {
        match self {
            Transport::TimedOut => "timed out",
            Transport::ConnectionFailed => "connection failed",
            Transport::CutOff => "the answer was cut off",
            Transport::TooLarge => "the answer was larger than any of Clerk's",
            Transport::Failed => "the request failed",
        }
    }
}

pub struct Http {
    connector: Connector,
    authorization: HeaderValue,
    user_agent: &'static str,
    request_timeout: Duration,
}

impl Http {
    pub fn new(
        authorization: HeaderValue,
        user_agent: &'static str,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Self {
        let context = TlsContext::builder()
            .with_trust_store(TrustStore::default())
            .build()
            .expect("a TLS context with a trust store and no extra server names always builds");
        let settings =
            HttpConnectorSettings::builder().connect_timeout(connect_timeout).read_timeout(request_timeout).build();
        let connector = ConnectorBuilder::default()
            .connector_settings(settings)
            .sleep_impl(TokioSleep::new())
            .proxy_config(ProxyConfig::from_env())
            .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
            .tls_context(context)
            .build();
        Self { connector, authorization, user_agent, request_timeout }
    }

    /// One `GET`, its answer read whole within the request timeout.
    pub async fn get(&self, url: &str, api_version: &'static str) -> Result<Answer, Transport> {
        let request = http::Request::get(url)
            .header(header::AUTHORIZATION, self.authorization.clone())
            .header("Clerk-API-Version", api_version)
            .header(header::USER_AGENT, self.user_agent)
            .header(header::ACCEPT, "application/json")
            .body(SdkBody::empty())
            .map_err(|_| Transport::Failed)?;
        let request = HttpRequest::try_from(request).map_err(|_| Transport::Failed)?;
        let exchange = async {
            let response = self.connector.call(request).await.map_err(|e| {
                if e.is_timeout() {
                    Transport::TimedOut
                } else if e.is_io() {
                    Transport::ConnectionFailed
                } else {
                    Transport::Failed
                }
            })?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER.as_str())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let mut stream = ByteStream::new(response.into_body());
            let mut body = Vec::new();
            while let Some(chunk) = stream.next().await {
                body.extend_from_slice(&chunk.map_err(|_| Transport::CutOff)?);
                if body.len() > MAX_ANSWER_BYTES {
                    return Err(Transport::TooLarge);
                }
            }
            Ok(Answer { status, retry_after, body })
        };
        tokio::time::timeout(self.request_timeout, exchange).await.unwrap_or(Err(Transport::TimedOut))
    }
}
