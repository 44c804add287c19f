//! Shared pieces of the fuzz targets: the secrets, header vocabulary and the independent
//! "was this delivery really signed?" oracle that every target checks an acceptance against.

use arbitrary::{Arbitrary, Unstructured};
use clerk_sync::verify::{SigningSecret, TIMESTAMP_TOLERANCE_SECS};
use lambda_http::http::{HeaderMap, HeaderName, HeaderValue};

/// The local test secret the sample events under `events/` are signed with (events/env.json).
pub const LOCAL_SECRET: &str = "whsec_2tWs72OsXRkrpdRXGBkaaQOrR9iPYDghRtNqgMfaqt4=";
/// The timestamp the sample events under `events/` are signed at.
pub const SAMPLE_EVENTS_TIMESTAMP: i64 = 1795721611;

/// Secrets the targets configure or sign with: the local test secret and the official Standard
/// Webhooks test-vector secrets (an 18-byte key, a 24-byte one without padding).
pub const SECRETS: [&str; 4] = [
    LOCAL_SECRET,
    "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "whsec_plJ3nmyCDGBKInavdOK15jsl",
];

pub fn secret(index: usize) -> SigningSecret {
    SigningSecret::parse(SECRETS[index % SECRETS.len()]).expect("the fuzz secrets are valid")
}

/// The header names the verifier reads, under both their Svix and Standard Webhooks names.
pub const ID_NAMES: [&str; 2] = ["svix-id", "webhook-id"];
pub const TIMESTAMP_NAMES: [&str; 2] = ["svix-timestamp", "webhook-timestamp"];
pub const SIGNATURE_NAMES: [&str; 2] = ["svix-signature", "webhook-signature"];

/// A header name, biased towards the ones that matter.
#[derive(Arbitrary, Debug, Clone)]
pub enum Name {
    SvixId,
    SvixTimestamp,
    SvixSignature,
    WebhookId,
    WebhookTimestamp,
    WebhookSignature,
    /// One of the above with its letters' case flipped by the bits of the `u16`.
    Cased(u8, u16),
    ContentType,
    Other(String),
}

impl Name {
    pub fn text(&self) -> String {
        const KNOWN: [&str; 6] =
            ["svix-id", "svix-timestamp", "svix-signature", "webhook-id", "webhook-timestamp", "webhook-signature"];
        match self {
            Name::SvixId => KNOWN[0].into(),
            Name::SvixTimestamp => KNOWN[1].into(),
            Name::SvixSignature => KNOWN[2].into(),
            Name::WebhookId => KNOWN[3].into(),
            Name::WebhookTimestamp => KNOWN[4].into(),
            Name::WebhookSignature => KNOWN[5].into(),
            Name::Cased(which, bits) => KNOWN[*which as usize % KNOWN.len()]
                .chars()
                .enumerate()
                .map(|(i, c)| if bits >> (i % 16) & 1 == 1 { c.to_ascii_uppercase() } else { c })
                .collect(),
            Name::ContentType => "content-type".into(),
            Name::Other(name) => name.clone(),
        }
    }
}

/// Arbitrary whitespace around a value (the verifier trims; `HeaderValue` refuses newlines).
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Pad {
    None,
    Spaces(u8, u8),
    Tabs(u8, u8),
}

impl Pad {
    pub fn apply(self, value: &str) -> String {
        let (c, before, after) = match self {
            Pad::None => return value.to_owned(),
            Pad::Spaces(b, a) => (' ', b % 4, a % 4),
            Pad::Tabs(b, a) => ('\t', b % 4, a % 4),
        };
        let pad = |n: u8| std::iter::repeat_n(c, n as usize).collect::<String>();
        format!("{}{value}{}", pad(before), pad(after))
    }
}

/// One entry of a signature header: a correct one, or a near miss of it, or anything.
#[derive(Arbitrary, Debug, Clone)]
pub enum SignatureEntry {
    /// `v1,<tag>` for the delivery's id, timestamp and body, under `SECRETS[secret]`.
    Correct {
        secret: u8,
    },
    /// The correct one without its `=` padding (the verifier decodes padding-indifferently).
    Unpadded {
        secret: u8,
    },
    /// The correct tag under another version prefix (`v1a,`, `v2,`, `V1,`, `v1`, `,`...).
    OtherVersion {
        secret: u8,
        prefix: String,
    },
    /// The correct one cut to `len` characters, or with one character changed.
    Truncated {
        secret: u8,
        len: u8,
    },
    Flipped {
        secret: u8,
        at: u8,
        to: char,
    },
    /// The tag of a different message: another timestamp, id or body.
    OtherTimestamp {
        secret: u8,
        delta: i16,
    },
    OtherId {
        secret: u8,
        id: String,
    },
    OtherBody {
        secret: u8,
        body: Vec<u8>,
    },
    /// The raw tag bytes, base64'd: lets the fuzzer play with tag lengths and encodings.
    Tag {
        bytes: Vec<u8>,
        url_safe: bool,
    },
    Text(String),
}

/// What an entry signs over, when it is derived from the correct signature.
pub struct Signing<'a> {
    pub id: &'a str,
    pub timestamp: i64,
    pub body: &'a [u8],
}

impl SignatureEntry {
    pub fn render(&self, signing: &Signing<'_>) -> String {
        use base64::Engine as _;
        let sign = |secret: &u8, id: &str, ts: i64, body: &[u8]| self::secret(*secret as usize).sign(id, ts, body);
        let correct = |secret: &u8| sign(secret, signing.id, signing.timestamp, signing.body);
        match self {
            SignatureEntry::Correct { secret } => correct(secret),
            SignatureEntry::Unpadded { secret } => correct(secret).trim_end_matches('=').to_owned(),
            SignatureEntry::OtherVersion { secret, prefix } => {
                format!("{prefix}{}", correct(secret).strip_prefix("v1,").unwrap_or_default())
            }
            SignatureEntry::Truncated { secret, len } => correct(secret).chars().take(*len as usize).collect(),
            SignatureEntry::Flipped { secret, at, to } => {
                let mut chars: Vec<char> = correct(secret).chars().collect();
                let at = *at as usize % chars.len();
                chars[at] = *to;
                chars.into_iter().collect()
            }
            SignatureEntry::OtherTimestamp { secret, delta } => {
                sign(secret, signing.id, signing.timestamp.saturating_add(*delta as i64), signing.body)
            }
            SignatureEntry::OtherId { secret, id } => sign(secret, id, signing.timestamp, signing.body),
            SignatureEntry::OtherBody { secret, body } => sign(secret, signing.id, signing.timestamp, body),
            SignatureEntry::Tag { bytes, url_safe } => {
                let engine = if *url_safe {
                    base64::engine::general_purpose::URL_SAFE
                } else {
                    base64::engine::general_purpose::STANDARD
                };
                format!("v1,{}", engine.encode(bytes))
            }
            SignatureEntry::Text(text) => text.clone(),
        }
    }
}

/// A space-separated signature header value from entries.
pub fn signature_header(entries: &[SignatureEntry], separators: &[Separator], signing: &Signing<'_>) -> String {
    let mut out = String::new();
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 {
            out.push_str(separators.get(i).map_or(" ", |s| s.text()));
        }
        out.push_str(&entry.render(signing));
    }
    out
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Separator {
    Space,
    Spaces,
    Tab,
    Comma,
    CommaSpace,
}

impl Separator {
    pub fn text(self) -> &'static str {
        match self {
            Separator::Space => " ",
            Separator::Spaces => "   ",
            Separator::Tab => "\t",
            Separator::Comma => ",",
            Separator::CommaSpace => ", ",
        }
    }
}

/// Inserts a header if both name and value are valid HTTP; returns whether it was inserted.
pub fn append_header(headers: &mut HeaderMap, name: &str, value: &[u8]) -> bool {
    match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(value)) {
        (Ok(name), Ok(value)) => {
            headers.append(name, value);
            true
        }
        _ => false,
    }
}

/// The oracle: does this delivery carry, in some id, timestamp and signature header value it
/// holds, a `v1` signature that one of `secrets` really made over its body, at a timestamp within
/// the tolerance of `now`? It looks at every value of every header the protocol names (not only
/// the first, as the verifier does), so it only ever errs towards "signed": an acceptance it
/// calls unsigned is a forgery the verifier let through.
///
/// Deliberately written without the verifier's code: signatures are recomputed with
/// [`SigningSecret::sign`] and compared as text, in their padded and unpadded base64 forms.
pub fn carries_valid_signature(headers: &HeaderMap, body: &[u8], secrets: &[SigningSecret], now: i64) -> bool {
    let values = |names: [&str; 2]| -> Vec<&str> {
        names
            .iter()
            .flat_map(|name| headers.get_all(*name).iter())
            .filter_map(|value| value.to_str().ok())
            .map(str::trim)
            .collect()
    };
    let ids = values(ID_NAMES);
    let timestamps: Vec<i64> = values(TIMESTAMP_NAMES)
        .into_iter()
        .filter_map(|text| text.parse::<i64>().ok().filter(|ts| ts.to_string() == text))
        // Only the canonical decimal text is what `sign` signs over: "+5", "05" or " 5" never count.
        .filter(|ts| (*ts as i128 - now as i128).abs() <= TIMESTAMP_TOLERANCE_SECS as i128)
        .filter(|ts| *ts >= 0)
        .collect();
    let entries: Vec<&str> = values(SIGNATURE_NAMES).into_iter().flat_map(str::split_ascii_whitespace).collect();
    if ids.is_empty() || timestamps.is_empty() || entries.is_empty() {
        return false;
    }
    for secret in secrets {
        for id in &ids {
            for ts in &timestamps {
                let expected = secret.sign(id, *ts, body);
                let unpadded = expected.trim_end_matches('=');
                if entries.iter().any(|entry| *entry == expected || *entry == unpadded) {
                    return true;
                }
            }
        }
    }
    false
}

/// Builds a `T` from the input, or `None` when the input is too short to say anything.
pub fn structured<'a, T: Arbitrary<'a>>(data: &'a [u8]) -> Option<T> {
    T::arbitrary_take_rest(Unstructured::new(data)).ok()
}

/// Counts outcomes and prints them every `every` calls when `FUZZ_STATS` is set, so a run shows
/// how deep its inputs get (e.g. how many reach DynamoDB) without a coverage report.
pub struct Stats {
    counts: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    total: std::sync::atomic::AtomicU64,
    enabled: std::sync::OnceLock<bool>,
}

impl Stats {
    pub const fn new() -> Self {
        Self {
            counts: std::sync::Mutex::new(std::collections::BTreeMap::new()),
            total: std::sync::atomic::AtomicU64::new(0),
            enabled: std::sync::OnceLock::new(),
        }
    }

    pub fn record(&self, what: impl FnOnce() -> String) {
        if !*self.enabled.get_or_init(|| std::env::var_os("FUZZ_STATS").is_some()) {
            return;
        }
        *self.counts.lock().unwrap().entry(what()).or_default() += 1;
        let total = self.total.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if total.is_power_of_two() && total >= 1024 {
            eprintln!("FUZZ_STATS after {total}: {:?}", self.counts.lock().unwrap());
        }
    }
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}
