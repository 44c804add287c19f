//! Step 5a: a planned item as DynamoDB takes it (pure: no I/O).
//!
//! JSON can say things DynamoDB refuses: numbers beyond 38 significant digits or outside
//! 1E-130 to 9.99E+125, maps and lists nested deeper than 32 levels, empty map keys, items above
//! 400 KB. A signed-in Clerk user writes their own `unsafe_metadata` from the browser, and an
//! administrator's tooling writes `public_metadata`, so none of that may make a write invalid: one
//! refused write would refuse every later change of that object too, a ban included.
//!
//! So the Clerk object itself (`data`) is kept as its JSON text, which DynamoDB always takes, and
//! `public_metadata` is lifted as a map, with every number exactly as sent, where DynamoDB can hold
//! it exactly, and as its JSON text otherwise. An item that would pass 400 KB leaves out `data`,
//! then stores `public_metadata` as text, then leaves it out, and lists what it left out in
//! `omitted`. What an item holds still depends only on the event.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::value::RawValue;

use crate::event::Members;

/// An item as the SDK sends it.
pub type Item = HashMap<String, AttributeValue>;

/// DynamoDB's item size limit: 400 KB, attribute names included.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;
/// What an item may fill before `omitted` is added: room for it (at most about 40 bytes).
const FILL_BYTES: usize = MAX_ITEM_BYTES - 64;
/// The most maps and lists DynamoDB nests around a value ("up to 32 levels deep" in its limits,
/// the value itself counting as a level), the lifted attribute being the first.
pub const MAX_DEPTH: usize = 31;
/// DynamoDB keeps up to 38 significant digits of a number.
const MAX_SIGNIFICANT_DIGITS: usize = 38;
/// The decimal exponents of a number's leading digit that DynamoDB takes: from 1E-130 up to
/// 9.9999999999999999999999999999999999999E+125.
const LEADING_EXPONENTS: std::ops::RangeInclusive<i64> = -130..=125;
/// DynamoDB's limit on an attribute name, map keys included, in UTF-8 bytes.
const MAX_NAME_BYTES: usize = 65_535;

pub const DATA: &str = "data";
pub const PUBLIC_METADATA: &str = "public_metadata";
/// The names of the attributes an item had to leave out (a list of strings), absent when none.
pub const OMITTED: &str = "omitted";

/// What an item gave up to be storable. Nearly every item gives up nothing.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fit {
    /// `public_metadata` is stored as its JSON text: it holds what a DynamoDB map cannot, or the
    /// map made the item too large.
    pub metadata_as_text: bool,
    /// `data` is left out: with it the item is above 400 KB.
    pub data_omitted: bool,
    /// `public_metadata` is left out too: even as text the item is above 400 KB.
    pub metadata_omitted: bool,
    /// DynamoDB refused the item anyway; only its keys, version and scalar attributes were written.
    pub refused: bool,
}

impl Fit {
    /// A short reason for the log line, `None` when nothing was given up.
    pub fn reason(&self) -> Option<&'static str> {
        Some(match *self {
            Fit { refused: true, .. } => "DynamoDB refused the item: stored without data and public_metadata",
            Fit { metadata_omitted: true, .. } => "item above 400 KB: stored without data and public_metadata",
            Fit { data_omitted: true, .. } => "item above 400 KB: stored without data",
            Fit { metadata_as_text: true, .. } => "public_metadata holds what a DynamoDB map cannot: stored as text",
            _ => return None,
        })
    }

    /// Whether something was left out (an operator should hear of it); `public_metadata` as text
    /// keeps everything and is only noted.
    pub fn lost_something(&self) -> bool {
        self.data_omitted || self.metadata_omitted || self.refused
    }
}

/// Completes a planned item (`fields`, as serialized) with its lifted `public_metadata` (JSON text)
/// and makes it fit DynamoDB's limits.
pub fn build(mut item: Item, public_metadata: Option<&str>) -> (Item, Fit) {
    let mut fit = Fit::default();
    if let Some(text) = public_metadata {
        let value = attribute(text).unwrap_or_else(|| {
            fit.metadata_as_text = true;
            AttributeValue::S(text.to_owned())
        });
        item.insert(PUBLIC_METADATA.to_owned(), value);
    }
    let mut omitted = Vec::new();
    if size(&item) > FILL_BYTES && item.remove(DATA).is_some() {
        fit.data_omitted = true;
        omitted.push(DATA);
    }
    if let (true, Some(text)) = (size(&item) > FILL_BYTES, public_metadata) {
        if !fit.metadata_as_text {
            fit.metadata_as_text = true;
            item.insert(PUBLIC_METADATA.to_owned(), AttributeValue::S(text.to_owned()));
        }
        if size(&item) > FILL_BYTES {
            item.remove(PUBLIC_METADATA);
            fit.metadata_omitted = true;
            omitted.push(PUBLIC_METADATA);
        }
    }
    mark_omitted(&mut item, &omitted);
    (item, fit)
}

/// What is written when DynamoDB refuses an item anyway (a limit this module does not know of):
/// the item without `data` and `public_metadata`, so the event's version, its precedence and
/// every lifted scalar (a user's `banned`, a membership's `role`) still land.
pub fn skeleton(item: &Item) -> Item {
    let mut skeleton = item.clone();
    let omitted: Vec<&str> =
        [DATA, PUBLIC_METADATA].into_iter().filter(|name| skeleton.remove(*name).is_some()).collect();
    mark_omitted(&mut skeleton, &omitted);
    skeleton
}

fn mark_omitted(item: &mut Item, omitted: &[&str]) {
    if !omitted.is_empty() {
        let names = omitted.iter().map(|name| AttributeValue::S((*name).to_owned())).collect();
        item.insert(OMITTED.to_owned(), AttributeValue::L(names));
    }
}

/// A JSON value as the DynamoDB attribute that holds it exactly: objects as maps, arrays as
/// lists, numbers with every digit. `None` where DynamoDB cannot hold it so (a number beyond its
/// precision or range, nesting deeper than [`MAX_DEPTH`], an empty or oversized key, a string
/// that is not Unicode).
pub fn attribute(json: &str) -> Option<AttributeValue> {
    let raw: &RawValue = serde_json::from_str(json).ok()?;
    convert(raw, 1)
}

fn convert(raw: &RawValue, depth: usize) -> Option<AttributeValue> {
    let text = raw.get();
    Some(match text.as_bytes().first()? {
        b'{' | b'[' if depth > MAX_DEPTH => return None,
        b'{' => {
            let members: Members<'_> = serde_json::from_str(text).ok()?;
            let mut map = HashMap::with_capacity(members.0.len());
            for (name, value) in members.0 {
                // DynamoDB's documentation does not say whether a map key may be empty: take no risk.
                if name.is_empty() || name.len() > MAX_NAME_BYTES {
                    return None;
                }
                // A repeated name: the last one counts, as in every JSON reader Clerk's SDKs use.
                map.insert(name.into_owned(), convert(value, depth + 1)?);
            }
            AttributeValue::M(map)
        }
        b'[' => {
            let elements: Vec<&RawValue> = serde_json::from_str(text).ok()?;
            AttributeValue::L(elements.into_iter().map(|e| convert(e, depth + 1)).collect::<Option<_>>()?)
        }
        b'"' => AttributeValue::S(serde_json::from_str(text).ok()?),
        b't' => AttributeValue::Bool(true),
        b'f' => AttributeValue::Bool(false),
        b'n' => AttributeValue::Null(true),
        _ => AttributeValue::N(number(text)?),
    })
}

/// A JSON number as DynamoDB's number text, every significant digit kept; `None` when DynamoDB
/// cannot hold it exactly (more than 38 significant digits, or beyond its range).
pub fn number(json: &str) -> Option<String> {
    let (negative, unsigned) = match json.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, json),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], &unsigned[at + 1..]),
        None => (unsigned, "0"),
    };
    let (integer, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let valid = |digits: &str| digits.bytes().all(|b| b.is_ascii_digit());
    if integer.is_empty() || !valid(integer) || !valid(fraction) {
        return None;
    }
    let digits = format!("{integer}{fraction}");
    let leading_zeros = digits.bytes().take_while(|b| *b == b'0').count();
    let significant = digits[leading_zeros..].trim_end_matches('0');
    if significant.is_empty() {
        return Some("0".to_owned());
    }
    if significant.len() > MAX_SIGNIFICANT_DIGITS {
        return None;
    }
    // An exponent too long for i64 is far outside DynamoDB's range either way.
    let exponent: i64 = exponent.strip_prefix('+').unwrap_or(exponent).parse().ok()?;
    let leading = (integer.len() as i64 - leading_zeros as i64 - 1).checked_add(exponent)?;
    if !LEADING_EXPONENTS.contains(&leading) {
        return None;
    }
    // d.ddd × 10^leading, written plainly where that is short, in E notation otherwise.
    let sign = if negative { "-" } else { "" };
    let scale = leading - (significant.len() as i64 - 1);
    Some(if (0..=20).contains(&scale) {
        format!("{sign}{significant}{}", "0".repeat(scale as usize))
    } else if scale < 0 && leading >= -20 {
        let point = leading + 1;
        if point > 0 {
            let (whole, part) = significant.split_at(point as usize);
            format!("{sign}{whole}.{part}")
        } else {
            format!("{sign}0.{}{significant}", "0".repeat((-point) as usize))
        }
    } else {
        let (first, rest) = significant.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        format!("{sign}{first}{dot}{rest}E{leading}")
    })
}

/// An upper bound of an item's size as DynamoDB counts it: names and values in UTF-8 bytes, a
/// number 1 byte per two characters of its text plus 2, 1 byte for a boolean or null, 3 bytes for
/// a map or list and 1 byte for each element.
pub fn size(item: &Item) -> usize {
    item.iter().map(|(name, value)| name.len() + value_size(value)).sum()
}

fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) => s.len(),
        // DynamoDB: 1 byte per two significant digits, plus 1 (and the sign); the text bounds the digits.
        AttributeValue::N(n) => n.len().div_ceil(2) + 2,
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::L(list) => 3 + list.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        AttributeValue::M(map) => 3 + map.iter().map(|(k, v)| 1 + k.len() + value_size(v)).sum::<usize>(),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Ss(set) | AttributeValue::Ns(set) => set.iter().map(String::len).sum(),
        AttributeValue::Bs(set) => set.iter().map(|b| b.as_ref().len()).sum(),
        // Types this crate never writes; count them as large so they are never under-counted.
        _ => MAX_ITEM_BYTES,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(text: &str) -> Option<String> {
        number(text)
    }

    #[test]
    fn numbers_keep_every_digit() {
        assert_eq!(n("0").as_deref(), Some("0"));
        assert_eq!(n("-0.000e12").as_deref(), Some("0"));
        assert_eq!(n("42").as_deref(), Some("42"));
        assert_eq!(n("-42").as_deref(), Some("-42"));
        assert_eq!(n("1.50").as_deref(), Some("1.5"));
        assert_eq!(n("0.001").as_deref(), Some("0.001"));
        assert_eq!(n("1e5").as_deref(), Some("100000"));
        assert_eq!(n("12.5E-1").as_deref(), Some("1.25"));
        assert_eq!(n("18446744073709551617").as_deref(), Some("18446744073709551617"), "2^64 + 1");
        assert_eq!(n("9007199254740993").as_deref(), Some("9007199254740993"), "2^53 + 1, not rounded");
        let digits38 = "12345678901234567890123456789012345678";
        assert_eq!(n(digits38).as_deref(), Some(digits38));
        assert_eq!(n("1e125").as_deref(), Some("1E125"));
        assert_eq!(n("-1E-130").as_deref(), Some("-1E-130"));
        assert_eq!(
            n("9.9999999999999999999999999999999999999E+125").as_deref(),
            Some("9.9999999999999999999999999999999999999E125")
        );
        assert_eq!(
            n("1000000000000000000000000000000000000000").as_deref(),
            Some("1E39"),
            "trailing zeros are not significant"
        );
    }

    #[test]
    fn numbers_dynamodb_cannot_hold_exactly_are_refused() {
        for text in [
            "123456789012345678901234567890123456789",
            "1.23456789012345678901234567890123456789",
            "1e126",
            "-1E126",
            "1E-131",
            "0.9E-130",
            "1e99999999999999999999",
            "1e-99999999999999999999",
        ] {
            assert_eq!(n(text), None, "{text}");
        }
    }

    #[test]
    fn json_becomes_maps_lists_and_exact_numbers() {
        let value = attribute(r#"{"plan":"pro","seats":18446744073709551617,"tags":["a",true,null],"x":{}}"#).unwrap();
        let AttributeValue::M(map) = value else { panic!("not a map") };
        assert_eq!(map["plan"], AttributeValue::S("pro".into()));
        assert_eq!(map["seats"], AttributeValue::N("18446744073709551617".into()));
        let tags = vec![AttributeValue::S("a".into()), AttributeValue::Bool(true), AttributeValue::Null(true)];
        assert_eq!(map["tags"], AttributeValue::L(tags));
        assert_eq!(map["x"], AttributeValue::M(HashMap::new()));
    }

    #[test]
    fn nesting_up_to_the_limit_is_a_map() {
        let nested = |levels: usize| format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
        assert!(attribute(&nested(MAX_DEPTH)).is_some());
        assert_eq!(attribute(&nested(MAX_DEPTH + 1)), None);
        let objects = |levels: usize| format!("{}1{}", r#"{"a":"#.repeat(levels), "}".repeat(levels));
        assert!(attribute(&objects(MAX_DEPTH)).is_some());
        assert_eq!(attribute(&objects(MAX_DEPTH + 1)), None);
    }

    #[test]
    fn what_a_map_cannot_hold_is_refused() {
        for json in [r#"{"":1}"#, r#"{"a":1e400}"#, r#"{"a":"\ud800"}"#, &format!(r#"{{"{}":1}}"#, "k".repeat(65_536))]
        {
            assert_eq!(attribute(json), None, "{}", &json[..json.len().min(40)]);
        }
    }

    #[test]
    fn metadata_dynamodb_cannot_hold_is_stored_as_text() {
        let text = r#"{"n":1e400}"#;
        let (item, fit) = build(Item::new(), Some(text));
        assert_eq!(item[PUBLIC_METADATA], AttributeValue::S(text.into()));
        assert!(fit.metadata_as_text && !fit.lost_something());
    }

    #[test]
    fn an_item_above_400_kb_leaves_out_data_then_metadata() {
        let big = "x".repeat(300 * 1024);
        let base = Item::from([("pk".to_owned(), AttributeValue::S("USER#user_1".into()))]);

        let mut item = base.clone();
        item.insert(DATA.into(), AttributeValue::S(big.clone()));
        let (built, fit) = build(item, Some(&format!(r#"{{"a":"{big}"}}"#)));
        assert_eq!(built.get(DATA), None);
        assert!(matches!(built[PUBLIC_METADATA], AttributeValue::M(_)));
        assert_eq!(built[OMITTED], AttributeValue::L(vec![AttributeValue::S(DATA.into())]));
        assert!(fit.data_omitted && !fit.metadata_omitted);
        assert!(size(&built) <= MAX_ITEM_BYTES);

        let huge = format!(r#"{{"a":"{}"}}"#, "x".repeat(MAX_ITEM_BYTES));
        let (built, fit) = build(base.clone(), Some(&huge));
        assert_eq!(built.get(PUBLIC_METADATA), None);
        assert_eq!(built[OMITTED], AttributeValue::L(vec![AttributeValue::S(PUBLIC_METADATA.into())]));
        assert!(fit.metadata_omitted);

        let (built, fit) = build(base.clone(), Some(r#"{"a":1}"#));
        assert_eq!(built.get(OMITTED), None);
        assert_eq!(fit, Fit::default());
    }

    #[test]
    fn a_skeleton_keeps_everything_but_data_and_metadata() {
        let item = Item::from([
            ("pk".to_owned(), AttributeValue::S("USER#user_1".into())),
            ("version".to_owned(), AttributeValue::N("5".into())),
            (DATA.to_owned(), AttributeValue::S("{}".into())),
            (PUBLIC_METADATA.to_owned(), AttributeValue::M(HashMap::new())),
        ]);
        let skeleton = skeleton(&item);
        assert_eq!(skeleton.len(), 3);
        assert_eq!(skeleton["version"], AttributeValue::N("5".into()));
        let omitted = vec![AttributeValue::S(DATA.into()), AttributeValue::S(PUBLIC_METADATA.into())];
        assert_eq!(skeleton[OMITTED], AttributeValue::L(omitted));
    }
}
