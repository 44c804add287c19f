//! `Verifier::verify` over arbitrary headers, body, clock and configured secrets.
//!
//! Property: it never panics, and an `Ok` only ever comes with a signature header entry equal to
//! the correct `v1` signature (recomputed with `SigningSecret::sign`) of one of the configured
//! secrets, for the delivery's id, a canonical timestamp within 300 s of `now`, and its body.
#![no_main]

use arbitrary::Arbitrary;
use clerk_sync::verify::{SigningSecret, Unverified, Verifier};
use clerk_sync_fuzz::{
    Name, Pad, Separator, SignatureEntry, Signing, Stats, append_header, carries_valid_signature, secret,
};
use lambda_http::http::HeaderMap;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    /// Which of `SECRETS` the verifier holds (bit i = secret i; none set means secret 0).
    configured: u8,
    now: Clock,
    /// The id and timestamp the generated signatures sign over (and headers may carry).
    signing_id: Id,
    signing_offset: i16,
    headers: Vec<(Name, Value)>,
    body: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
enum Clock {
    /// Around the present (2020 to 2040).
    Realistic(u32),
    Any(i64),
}

impl Clock {
    fn now(&self) -> i64 {
        match self {
            Clock::Realistic(offset) => 1_577_836_800 + (*offset % 631_152_000) as i64,
            Clock::Any(now) => *now,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Id {
    Svix,
    Text(String),
}

impl Id {
    fn text(&self) -> &str {
        match self {
            Id::Svix => "msg_2pQAPA35fRi2hj0gUisAgkya7T4",
            Id::Text(text) => text,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Value {
    /// The signing id / timestamp, as text, padded.
    SigningId(Pad),
    SigningTimestamp(Pad),
    /// A timestamp text in some other spelling: `+ts`, `0ts`, `ts.0`, `-ts`, ...
    TimestampSpelling {
        prefix: String,
        delta: i16,
        suffix: String,
    },
    Signatures {
        entries: Vec<SignatureEntry>,
        separators: Vec<Separator>,
        pad: Pad,
    },
    Text(String),
    Bytes(Vec<u8>),
}

static STATS: Stats = Stats::new();

fuzz_target!(|input: Input| {
    let configured: Vec<SigningSecret> =
        (0..clerk_sync_fuzz::SECRETS.len()).filter(|i| input.configured >> i & 1 == 1).map(secret).collect();
    let configured = if configured.is_empty() { vec![secret(0)] } else { configured };
    let now = input.now.now();
    let signing_timestamp = now.saturating_add(input.signing_offset as i64);
    let signing = Signing { id: input.signing_id.text(), timestamp: signing_timestamp, body: &input.body };

    let mut headers = HeaderMap::new();
    for (name, value) in input.headers.iter().take(12) {
        let value = match value {
            Value::SigningId(pad) => pad.apply(signing.id).into_bytes(),
            Value::SigningTimestamp(pad) => pad.apply(&signing_timestamp.to_string()).into_bytes(),
            Value::TimestampSpelling { prefix, delta, suffix } => {
                format!("{prefix}{}{suffix}", signing_timestamp.saturating_add(*delta as i64)).into_bytes()
            }
            Value::Signatures { entries, separators, pad } => {
                let entries = &entries[..entries.len().min(24)];
                pad.apply(&clerk_sync_fuzz::signature_header(entries, separators, &signing)).into_bytes()
            }
            Value::Text(text) => text.clone().into_bytes(),
            Value::Bytes(bytes) => bytes.clone(),
        };
        append_header(&mut headers, &name.text(), &value);
    }

    let verifier = Verifier::new(configured.clone());
    let result = verifier.verify(Unverified::new(&headers, &input.body), now);
    STATS.record(|| result.as_ref().map_or_else(|e| format!("{e:?}"), |_| "Ok".into()));
    if std::env::var_os("FUZZ_DEBUG").is_some() {
        eprintln!("headers: {headers:?}\nnow: {now}\nresult: {result:?}");
    }
    if let Ok(verified) = result {
        assert!(
            carries_valid_signature(&headers, &input.body, &configured, now),
            "verify accepted a delivery without a valid signature: headers {headers:?}, now {now}"
        );
        assert_eq!(verified.body(), &input.body[..], "the verified body is not the body received");
        let id_values: Vec<_> = clerk_sync_fuzz::ID_NAMES
            .iter()
            .flat_map(|name| headers.get_all(*name).iter())
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .collect();
        assert!(
            id_values.contains(&verified.id()),
            "the verified id {:?} is not one the delivery carried",
            verified.id()
        );
    }
});
