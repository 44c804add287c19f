//! Step 2 of a delivery: Standard Webhooks signature verification, as Svix signs Clerk's webhooks.
//!
//! The signed content is `{id}.{timestamp}.{body}` over the raw body bytes exactly as received, so
//! nothing here ever parses or re-serializes the body. A [`Verified`] delivery can only be made by
//! [`Verifier::verify`]; the event parser takes nothing else, so an unverified body is never read.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, KeyInit, Mac};
use lambda_http::http::HeaderMap;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How far the signed timestamp may be from our clock, in either direction (boundary inclusive).
pub const TIMESTAMP_TOLERANCE_SECS: i64 = 300;
/// At most this many entries of the signature header are looked at: a sender rotating keys sends
/// two or three, so a header with thousands costs no more than one with a few.
pub const MAX_SIGNATURES: usize = 16;

/// Length of a `v1` signature: an HMAC-SHA256 tag.
const TAG_LEN: usize = 32;
/// Longest base64 text of a 32-byte tag (44 characters); anything longer is not a `v1` tag.
const MAX_TAG_B64_LEN: usize = 44;
/// The longest message id we accept; Svix ids are about 30 characters.
const MAX_ID_LEN: usize = 256;

/// Accepts keys and signatures with or without `=` padding; Svix sends padded base64.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

type HmacSha256 = Hmac<Sha256>;

/// One receiver secret (`whsec_` + base64 of the key). Its `Debug` and `Display` never show the key.
#[derive(Clone)]
pub struct SigningSecret {
    key: Vec<u8>,
}

impl SigningSecret {
    /// Parses a secret as Clerk's dashboard shows it, with or without the `whsec_` prefix.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let text = text.trim();
        let encoded = text.strip_prefix("whsec_").unwrap_or(text);
        if encoded.is_empty() {
            return Err(SecretError::Empty);
        }
        let key = LENIENT_BASE64.decode(encoded).map_err(|_| SecretError::NotBase64)?;
        if key.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self { key })
    }

    /// Parses one or more secrets separated by whitespace or commas (several during a rotation).
    pub fn parse_list(text: &str) -> Result<Vec<Self>, SecretError> {
        let secrets = text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|part| !part.is_empty())
            .map(Self::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if secrets.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(secrets)
    }

    fn tag(&self, id: &str, timestamp: &str, body: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC accepts keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// Signs content the way Svix does; used by the tools that re-sign sample events and by tests.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.tag(id, &timestamp.to_string(), body);
        format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(tag))
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

impl fmt::Display for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a configured secret was refused. Never carries any part of the secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("the signing secret is empty")]
    Empty,
    #[error("the signing secret is not `whsec_` followed by base64")]
    NotBase64,
}

/// Why a delivery failed verification. The caller only ever sees a generic 401; this goes to the logs.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum VerifyError {
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("the id header is longer than {MAX_ID_LEN} bytes")]
    IdTooLong,
    #[error("the timestamp header is not a non-negative integer")]
    InvalidTimestamp,
    #[error("the timestamp is more than {TIMESTAMP_TOLERANCE_SECS} s in the past")]
    TimestampTooOld,
    #[error("the timestamp is more than {TIMESTAMP_TOLERANCE_SECS} s in the future")]
    TimestampTooNew,
    #[error("the signature header holds no v1 signature")]
    NoV1Signature,
    #[error("no v1 signature matches any configured secret")]
    NoMatchingSignature,
}

/// A delivery as it arrived: headers and the raw body. Nothing reads the body in this state.
pub struct Unverified<'a> {
    headers: &'a HeaderMap,
    body: &'a [u8],
}

impl<'a> Unverified<'a> {
    pub fn new(headers: &'a HeaderMap, body: &'a [u8]) -> Self {
        Self { headers, body }
    }

    /// The delivery's message id, for logging before verification. It is not trusted yet.
    pub fn claimed_id(&self) -> Option<&'a str> {
        header(self.headers, "svix-id", "webhook-id")
    }
}

/// A delivery whose signature matched one of our secrets within the timestamp tolerance.
#[derive(Debug)]
pub struct Verified<'a> {
    id: &'a str,
    body: &'a [u8],
}

impl<'a> Verified<'a> {
    /// The message id (`svix-id`): the same across retries of one message.
    pub fn id(&self) -> &'a str {
        self.id
    }

    pub fn body(&self) -> &'a [u8] {
        self.body
    }
}

/// Checks deliveries against one or more receiver secrets.
#[derive(Clone, Debug)]
pub struct Verifier {
    secrets: Vec<SigningSecret>,
}

impl Verifier {
    /// `secrets` must not be empty; [`SigningSecret::parse_list`] guarantees it.
    pub fn new(secrets: Vec<SigningSecret>) -> Self {
        assert!(!secrets.is_empty(), "a verifier needs at least one secret");
        Self { secrets }
    }

    /// Verifies a delivery at `now` (unix seconds).
    pub fn verify<'a>(&self, delivery: Unverified<'a>, now: i64) -> Result<Verified<'a>, VerifyError> {
        let headers = delivery.headers;
        let id = header(headers, "svix-id", "webhook-id").ok_or(VerifyError::MissingHeader("svix-id"))?;
        let timestamp = header(headers, "svix-timestamp", "webhook-timestamp")
            .ok_or(VerifyError::MissingHeader("svix-timestamp"))?;
        let signatures = header(headers, "svix-signature", "webhook-signature")
            .ok_or(VerifyError::MissingHeader("svix-signature"))?;
        if id.len() > MAX_ID_LEN {
            return Err(VerifyError::IdTooLong);
        }
        check_timestamp(timestamp, now)?;

        let candidates = v1_tags(signatures);
        if candidates.is_empty() {
            return Err(VerifyError::NoV1Signature);
        }
        for secret in &self.secrets {
            let expected = secret.tag(id, timestamp, delivery.body);
            // Every candidate is compared, so the time taken does not depend on which one matches.
            let matched =
                candidates.iter().fold(subtle::Choice::from(0), |any, candidate| any | candidate.ct_eq(&expected));
            if bool::from(matched) {
                return Ok(Verified { id, body: delivery.body });
            }
        }
        Err(VerifyError::NoMatchingSignature)
    }
}

/// Reads a header by its Svix name, falling back to its Standard Webhooks name; values are trimmed
/// and an empty or non-UTF-8 value counts as missing, as in Clerk's own verifier.
fn header<'a>(headers: &'a HeaderMap, svix_name: &str, webhook_name: &str) -> Option<&'a str> {
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
    value(svix_name).or_else(|| value(webhook_name))
}

fn check_timestamp(text: &str, now: i64) -> Result<(), VerifyError> {
    // Digits only: the header text is signed as sent, so "+5" or " 5" must not pass as 5.
    if text.is_empty() || text.len() > 18 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::InvalidTimestamp);
    }
    let ts: i64 = text.parse().map_err(|_| VerifyError::InvalidTimestamp)?;
    if ts + TIMESTAMP_TOLERANCE_SECS < now {
        return Err(VerifyError::TimestampTooOld);
    }
    if ts > now + TIMESTAMP_TOLERANCE_SECS {
        return Err(VerifyError::TimestampTooNew);
    }
    Ok(())
}

/// The decoded `v1` tags of a space-separated signature list. Other versions, malformed entries
/// and anything that is not exactly 32 bytes (a bare `v1,`, a truncated tag) are dropped.
fn v1_tags(header: &str) -> Vec<[u8; TAG_LEN]> {
    header
        .split_ascii_whitespace()
        .take(MAX_SIGNATURES)
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter(|b64| b64.len() <= MAX_TAG_B64_LEN)
        .filter_map(|b64| LENIENT_BASE64.decode(b64).ok())
        .filter_map(|bytes| <[u8; TAG_LEN]>::try_from(bytes).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::http::{self, HeaderValue};

    struct Vector {
        secret: &'static str,
        id: &'static str,
        timestamp: i64,
        payload: &'static str,
        signature: &'static str,
    }

    // The official Standard Webhooks / Svix test vectors (see shared/clerk-webhooks.md).
    const A: Vector = Vector {
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        id: "msg_p5jXN8AQM9LWM0D4loKWxJek",
        timestamp: 1614265330,
        payload: r#"{"test": 2432232314}"#,
        signature: "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    };
    const B: Vector = Vector {
        secret: "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        id: "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
        timestamp: 1649367553,
        payload: r#"{"email":"test@example.com","username":"test_user"}"#,
        signature: "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
    };
    const C: Vector = Vector {
        secret: "whsec_plJ3nmyCDGBKInavdOK15jsl",
        id: "msg_loFOjxBNrRLzqYUf",
        timestamp: 1731705121,
        payload: r#"{"event_type":"ping","data":{"success":true}}"#,
        signature: "v1,rAvfW3dJ/X/qxhsaXPOyyCGmRKsaKWcsNccKXlIktD0=",
    };

    fn headers(id: &str, timestamp: &str, signature: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("svix-id", HeaderValue::from_str(id).unwrap());
        h.insert("svix-timestamp", HeaderValue::from_str(timestamp).unwrap());
        h.insert("svix-signature", HeaderValue::from_str(signature).unwrap());
        h
    }

    fn verifier(secret: &str) -> Verifier {
        Verifier::new(vec![SigningSecret::parse(secret).unwrap()])
    }

    fn check(v: &Vector, h: &HeaderMap, now: i64) -> Result<(), VerifyError> {
        verifier(v.secret).verify(Unverified::new(h, v.payload.as_bytes()), now).map(|_| ())
    }

    fn check_signature(v: &Vector, signature: &str) -> Result<(), VerifyError> {
        check(v, &headers(v.id, &v.timestamp.to_string(), signature), v.timestamp)
    }

    #[test]
    fn official_vectors_verify() {
        for v in [A, B, C] {
            assert_eq!(check_signature(&v, v.signature), Ok(()), "vector {}", v.id);
        }
    }

    #[test]
    fn verified_delivery_exposes_id_and_exact_body() {
        let h = headers(A.id, &A.timestamp.to_string(), A.signature);
        let verified = verifier(A.secret).verify(Unverified::new(&h, A.payload.as_bytes()), A.timestamp).unwrap();
        assert_eq!(verified.id(), A.id);
        assert_eq!(verified.body(), A.payload.as_bytes());
    }

    #[test]
    fn signing_reproduces_official_vectors() {
        for v in [A, B, C] {
            let secret = SigningSecret::parse(v.secret).unwrap();
            assert_eq!(secret.sign(v.id, v.timestamp, v.payload.as_bytes()), v.signature);
        }
    }

    #[test]
    fn secret_without_prefix_verifies() {
        let bare = A.secret.strip_prefix("whsec_").unwrap();
        let h = headers(A.id, &A.timestamp.to_string(), A.signature);
        let result = verifier(bare).verify(Unverified::new(&h, A.payload.as_bytes()), A.timestamp);
        assert!(result.is_ok());
    }

    #[test]
    fn empty_secret_is_rejected() {
        assert_eq!(SigningSecret::parse("").unwrap_err(), SecretError::Empty);
        assert_eq!(SigningSecret::parse("whsec_").unwrap_err(), SecretError::Empty);
        assert_eq!(SigningSecret::parse_list(" , ").unwrap_err(), SecretError::Empty);
    }

    #[test]
    fn secret_that_is_not_base64_is_rejected() {
        assert_eq!(SigningSecret::parse("whsec_not*base64!").unwrap_err(), SecretError::NotBase64);
    }

    #[test]
    fn secret_list_splits_on_whitespace_and_commas() {
        let list = format!("{}, {}\n{}", A.secret, B.secret, C.secret);
        assert_eq!(SigningSecret::parse_list(&list).unwrap().len(), 3);
    }

    #[test]
    fn any_configured_secret_may_match() {
        let secrets = SigningSecret::parse_list(&format!("{} {}", B.secret, A.secret)).unwrap();
        let h = headers(A.id, &A.timestamp.to_string(), A.signature);
        let result = Verifier::new(secrets).verify(Unverified::new(&h, A.payload.as_bytes()), A.timestamp);
        assert!(result.is_ok());
    }

    #[test]
    fn secret_debug_and_display_are_redacted() {
        let secret = SigningSecret::parse(A.secret).unwrap();
        let key_b64 = A.secret.strip_prefix("whsec_").unwrap();
        for shown in [format!("{secret:?}"), format!("{secret}"), format!("{:?}", verifier(A.secret))] {
            assert!(!shown.contains(key_b64), "{shown}");
            assert!(!shown.contains("77"), "raw key bytes leaked: {shown}");
        }
    }

    #[test]
    fn each_missing_header_fails() {
        let ts = A.timestamp.to_string();
        for missing in ["svix-id", "svix-timestamp", "svix-signature"] {
            let mut h = headers(A.id, &ts, A.signature);
            h.remove(missing);
            assert_eq!(check(&A, &h, A.timestamp), Err(VerifyError::MissingHeader(missing)));
        }
    }

    #[test]
    fn empty_or_blank_header_counts_as_missing() {
        let ts = A.timestamp.to_string();
        for blank in ["", "   "] {
            let h = headers(blank, &ts, A.signature);
            assert_eq!(check(&A, &h, A.timestamp), Err(VerifyError::MissingHeader("svix-id")));
        }
    }

    #[test]
    fn header_values_are_trimmed() {
        let h = headers(&format!(" {} ", A.id), &format!(" {} ", A.timestamp), &format!(" {} ", A.signature));
        assert_eq!(check(&A, &h, A.timestamp), Ok(()));
    }

    #[test]
    fn webhook_prefixed_headers_are_accepted() {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", HeaderValue::from_static(A.id));
        h.insert("webhook-timestamp", HeaderValue::from_str(&A.timestamp.to_string()).unwrap());
        h.insert("webhook-signature", HeaderValue::from_static(A.signature));
        assert_eq!(check(&A, &h, A.timestamp), Ok(()));
    }

    #[test]
    fn header_names_match_in_any_case() {
        let mut h = HeaderMap::new();
        // http's HeaderMap stores names lowercased, as API Gateway's HTTP API delivers them.
        h.insert(http::HeaderName::from_bytes(b"SVIX-ID").unwrap(), HeaderValue::from_static(A.id));
        h.insert(
            http::HeaderName::from_bytes(b"Svix-Timestamp").unwrap(),
            HeaderValue::from_str(&A.timestamp.to_string()).unwrap(),
        );
        h.insert(http::HeaderName::from_bytes(b"Svix-Signature").unwrap(), HeaderValue::from_static(A.signature));
        assert_eq!(check(&A, &h, A.timestamp), Ok(()));
    }

    #[test]
    fn non_integer_timestamps_fail() {
        for ts in ["hello", "-1", "+1614265330", "1614265330.0", "1e9", "99999999999999999999"] {
            let h = headers(A.id, ts, A.signature);
            assert_eq!(check(&A, &h, A.timestamp), Err(VerifyError::InvalidTimestamp), "{ts}");
        }
    }

    #[test]
    fn timestamp_tolerance_is_inclusive_both_ways() {
        let h = headers(A.id, &A.timestamp.to_string(), A.signature);
        assert_eq!(check(&A, &h, A.timestamp + 300), Ok(()));
        assert_eq!(check(&A, &h, A.timestamp - 300), Ok(()));
        assert_eq!(check(&A, &h, A.timestamp + 301), Err(VerifyError::TimestampTooOld));
        assert_eq!(check(&A, &h, A.timestamp - 301), Err(VerifyError::TimestampTooNew));
    }

    #[test]
    fn timestamp_off_by_one_from_the_signed_one_fails() {
        for ts in [A.timestamp - 1, A.timestamp + 1] {
            let h = headers(A.id, &ts.to_string(), A.signature);
            assert_eq!(check(&A, &h, A.timestamp), Err(VerifyError::NoMatchingSignature));
        }
    }

    #[test]
    fn wrong_signatures_fail() {
        let cases = [
            ("v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=", VerifyError::NoMatchingSignature),
            ("v1,dawfeoifkpqwoekfpqoekf", VerifyError::NoV1Signature),
            ("v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=", VerifyError::NoV1Signature),
        ];
        for (signature, error) in cases {
            assert_eq!(check_signature(&A, signature), Err(error), "{signature}");
        }
    }

    #[test]
    fn partial_signatures_never_pass() {
        assert_eq!(check_signature(&A, "v1,"), Err(VerifyError::NoV1Signature));
        assert_eq!(check_signature(&A, &A.signature[..8]), Err(VerifyError::NoV1Signature));
        let truncated = &A.signature[..A.signature.len() - 4];
        assert_eq!(check_signature(&A, truncated), Err(VerifyError::NoV1Signature));
    }

    #[test]
    fn one_valid_signature_among_several_passes() {
        let list = format!("v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,abc {}", A.signature);
        assert_eq!(check_signature(&A, &list), Ok(()));
    }

    #[test]
    fn several_signatures_none_valid_fail() {
        let list = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v1,dawfeoifkpqwoekfpqoekf";
        assert_eq!(check_signature(&A, list), Err(VerifyError::NoMatchingSignature));
    }

    #[test]
    fn v2_entry_with_the_valid_tag_is_ignored() {
        let v2 = A.signature.replacen("v1,", "v2,", 1);
        assert_eq!(check_signature(&A, &v2), Err(VerifyError::NoV1Signature));
    }

    #[test]
    fn signature_for_another_body_fails() {
        let h = headers(A.id, &A.timestamp.to_string(), A.signature);
        let result = verifier(A.secret).verify(Unverified::new(&h, br#"{"test":2432232314}"#), A.timestamp);
        assert_eq!(result.unwrap_err(), VerifyError::NoMatchingSignature);
    }

    #[test]
    fn only_the_first_signatures_are_considered() {
        let filler = vec!["v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="; MAX_SIGNATURES].join(" ");
        let list = format!("{filler} {}", A.signature);
        assert_eq!(check_signature(&A, &list), Err(VerifyError::NoMatchingSignature));
    }

    #[test]
    fn overlong_id_fails() {
        let id = "m".repeat(MAX_ID_LEN + 1);
        let h = headers(&id, &A.timestamp.to_string(), A.signature);
        assert_eq!(check(&A, &h, A.timestamp), Err(VerifyError::IdTooLong));
    }
}
