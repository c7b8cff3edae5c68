//! Property tests for the input parsers and the cursor codec.
//!
//! Every property compares a parser against an oracle written here from the
//! SPEC §3 wording ("Precise rules"), not from the parser's code: the limits
//! are restated as literals and character classes as explicit code-point
//! ranges, so a change to a parser that drifts from the SPEC fails here.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::{ClientMessageId, Content, Cursor, MessageId, Metadata, OrderKey, ThreadId, Timestamp, UserId};

// ---------------------------------------------------------------- oracles

/// Unicode general category Cc: C0 controls, DEL and C1 controls.
fn is_cc(c: char) -> bool {
    matches!(c as u32, 0x00..=0x1F | 0x7F..=0x9F)
}

fn content_ok(s: &str) -> bool {
    (1..=32_768).contains(&s.len()) && !s.chars().any(|c| is_cc(c) && !matches!(c, '\t' | '\n' | '\r'))
}

fn thread_id_ok(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes().all(|b| matches!(b, b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b':' | b'-'))
}

fn client_message_id_ok(s: &str) -> bool {
    (1..=128).contains(&s.chars().count()) && s.chars().all(|c| ('!'..='~').contains(&c))
}

/// Same rule as a JWT `sub` (src/auth/jwt.rs): any principal that can
/// authenticate must be nameable as a member. The limit counts bytes.
fn user_id_ok(s: &str) -> bool {
    (1..=256).contains(&s.len()) && !s.chars().any(is_cc)
}

/// What the metadata oracle reads off the compact serialisation text.
struct JsonFacts {
    is_object: bool,
    depth: usize,
    has_nul: bool,
    bytes: usize,
}

/// Scans compact JSON text: bracket nesting outside strings is the depth
/// (top-level object = 1), and a `\u0000` escape inside a string (key or
/// value) is a NUL. Independent of the tree walk the parser does.
fn json_facts(v: &Value) -> JsonFacts {
    let text = serde_json::to_string(v).expect("a Value always serialises");
    let b = text.as_bytes();
    let (mut depth, mut max, mut in_str, mut has_nul, mut i) = (0usize, 0usize, false, false, 0usize);
    while i < b.len() {
        match (in_str, b[i]) {
            (_, b'"') => in_str = !in_str,
            (false, b'{' | b'[') => {
                depth += 1;
                max = max.max(depth);
            }
            (false, b'}' | b']') => depth -= 1,
            (true, b'\\') => {
                if b[i + 1] == b'u' {
                    has_nul |= &b[i + 2..i + 6] == b"0000";
                    i += 5;
                } else {
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    JsonFacts { is_object: b[0] == b'{', depth: max, has_nul, bytes: b.len() }
}

// ------------------------------------------------------------- strategies

/// Characters weighted towards the interesting classes: every Cc, the three
/// allowed controls, the characters each id grammar admits, multi-byte UTF-8.
fn any_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => proptest::char::range('!', '~'),
        2 => proptest::char::range('\u{0}', '\u{1f}'),
        1 => proptest::char::range('\u{7f}', '\u{9f}'),
        1 => prop::sample::select(vec!['\t', '\n', '\r', ' ', '\u{a0}', '\u{ad}', '\u{2028}', '\u{feff}']),
        1 => prop::sample::select(vec!['.', '_', ':', '-', 'é', '€', '😀', '\u{10ffff}']),
        2 => any::<char>(),
    ]
}

fn short_string(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any_char(), 0..=max).prop_map(|v| v.into_iter().collect())
}

/// Strings whose byte length is within 3 of `limit`: a filler repeated, an
/// optional arbitrary character, then `pad` (a one-byte character the
/// grammar accepts) up to the exact target length.
fn near_limit(limit: usize, fill: &'static [&'static str], pad: char) -> impl Strategy<Value = String> {
    let target = (limit - 3)..=(limit + 3);
    (target, prop::sample::select(fill.to_vec()), prop::option::of(any_char())).prop_map(move |(target, f, odd)| {
        let odd_len = odd.map_or(0, char::len_utf8);
        let mut s = f.repeat(target.saturating_sub(odd_len) / f.len());
        s.extend(odd);
        while s.len() < target {
            s.push(pad);
        }
        s
    })
}

/// A printable string with one character from the edges of the Cc ranges
/// (and the three allowed controls) spliced in, so that character alone
/// decides the verdict.
fn one_edge_char() -> impl Strategy<Value = String> {
    let edges =
        vec!['\u{0}', '\t', '\n', '\u{b}', '\u{c}', '\r', '\u{1f}', ' ', '~', '\u{7f}', '\u{80}', '\u{9f}', '\u{a0}'];
    (id_like(PRINTABLE, 8), prop::sample::select(edges), id_like(PRINTABLE, 8))
        .prop_map(|(a, c, b)| format!("{a}{c}{b}"))
}

/// Strings drawn from only the id alphabets, so acceptance is common.
fn id_like(alphabet: &'static str, max: usize) -> impl Strategy<Value = String> {
    let chars: Vec<char> = alphabet.chars().collect();
    prop::collection::vec(prop::sample::select(chars), 0..=max).prop_map(|v| v.into_iter().collect())
}

const THREAD_ALPHABET: &str = "ABCXYZabcxyz0189._:-";
const PRINTABLE: &str = "!\"#$%&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~";

fn json_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e300f64..1e300).prop_map(Value::from),
        short_string(12).prop_map(Value::String),
    ]
}

/// Arbitrary JSON trees up to about 11 levels: around the depth limit.
fn json_tree() -> impl Strategy<Value = Value> {
    json_scalar().prop_recursive(11, 96, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((short_string(6), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A chain of exactly `depth` containers (objects or arrays, chosen per
/// level) around a string leaf; the outermost is an object when `obj_top`.
fn chain(depth: usize, kinds: Vec<bool>, leaf: String, obj_top: bool) -> Value {
    let mut v = Value::String(leaf);
    for (level, is_obj) in kinds.into_iter().take(depth).enumerate() {
        let outermost = level + 1 == depth;
        v = if (outermost && obj_top) || (!outermost && is_obj) { json!({ "k": v }) } else { json!([v]) };
    }
    v
}

fn json_chain() -> impl Strategy<Value = Value> {
    (1usize..=11, prop::collection::vec(any::<bool>(), 11), short_string(6), prop::bool::weighted(0.9))
        .prop_map(|(d, kinds, leaf, obj_top)| chain(d, kinds, leaf, obj_top))
}

/// `{"a": <string>}` whose compact size is within a few bytes of 16384;
/// the string mixes characters that serialise to more bytes than they hold.
fn json_near_size_limit() -> impl Strategy<Value = Value> {
    (prop::sample::select(vec!["x", "é", "\"", "\u{1}", "😀"]), 0usize..=24, short_string(3)).prop_map(
        |(fill, back, tail)| {
            let escaped = serde_json::to_string(fill).unwrap().len() - 2;
            let n = (16_384 - 8 - back) / escaped;
            json!({ "a": format!("{}{}", fill.repeat(n), tail) })
        },
    )
}

fn any_metadata() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => json_tree(),
        3 => json_chain(),
        2 => json_near_size_limit(),
        1 => (short_string(4), short_string(4)).prop_map(|(k, v)| json!({ k: v })),
    ]
}

fn order_key() -> impl Strategy<Value = OrderKey> {
    (any::<i64>(), any::<u128>()).prop_map(|(us, id)| OrderKey {
        created_at: Timestamp::from_micros(us),
        id: MessageId::from_uuid(Uuid::from_u128(id)),
    })
}

/// Raw cursor payloads close to the issued form, with the spellings
/// `str::parse::<i64>` and `Uuid::try_parse` also accept.
fn cursor_payload() -> impl Strategy<Value = String> {
    let micros = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| format!("+{}", n.unsigned_abs())),
        (any::<u32>(), 1usize..4).prop_map(|(n, z)| format!("{}{n}", "0".repeat(z))),
        short_string(6),
    ];
    let id = prop_oneof![
        any::<u128>().prop_map(|u| Uuid::from_u128(u).simple().to_string()),
        any::<u128>().prop_map(|u| Uuid::from_u128(u).hyphenated().to_string().to_uppercase()),
        any::<u128>().prop_map(|u| Uuid::from_u128(u).braced().to_string()),
        any::<u128>().prop_map(|u| Uuid::from_u128(u).urn().to_string()),
        short_string(8),
    ];
    let version = prop::sample::select(vec!["v1", "v1", "v1", "v2", "V1", ""]);
    (version, micros, id).prop_map(|(v, m, i)| format!("{v}:{m}:{i}"))
}

// ------------------------------------------------------------- properties

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn content_accepts_exactly_the_spec_and_is_byte_exact(
        s in prop_oneof![
            4 => short_string(40),
            2 => one_edge_char(),
            1 => near_limit(32_768, &["a", "é", "€", "😀", "\r\n", "\u{85}"], 'a'),
        ]
    ) {
        let expected = content_ok(&s);
        match Content::parse(s.clone()) {
            Ok(c) => {
                prop_assert!(expected, "accepted {} bytes that the SPEC rejects", s.len());
                prop_assert_eq!(c.as_str().as_bytes(), s.as_bytes());
            }
            Err(e) => {
                prop_assert!(!expected, "rejected valid content ({} bytes): {}", s.len(), e);
                prop_assert_eq!(e.field, "content");
            }
        }
    }

    #[test]
    fn thread_id_accepts_exactly_the_spec(
        s in prop_oneof![
            2 => short_string(12),
            2 => id_like(THREAD_ALPHABET, 140),
            1 => near_limit(128, &["a", "Z9", ".:_-"], 'a'),
        ]
    ) {
        let expected = thread_id_ok(&s);
        match ThreadId::parse(&s) {
            Ok(t) => { prop_assert!(expected, "accepted {:?}", s); prop_assert_eq!(t.as_str(), s.as_str()); }
            Err(e) => { prop_assert!(!expected, "rejected {:?}: {}", s, e); prop_assert_eq!(e.field, "threadId"); }
        }
    }

    #[test]
    fn client_message_id_accepts_exactly_the_spec(
        s in prop_oneof![
            2 => short_string(12),
            2 => id_like(PRINTABLE, 140),
            1 => near_limit(128, &["k", "~!", "é"], 'k'),
        ]
    ) {
        let expected = client_message_id_ok(&s);
        match ClientMessageId::parse(&s) {
            Ok(k) => { prop_assert!(expected, "accepted {:?}", s); prop_assert_eq!(k.as_str(), s.as_str()); }
            Err(e) => { prop_assert!(!expected, "rejected {:?}: {}", s, e); prop_assert_eq!(e.field, "clientMessageId"); }
        }
    }

    #[test]
    fn user_id_accepts_exactly_the_rule(
        s in prop_oneof![
            3 => short_string(24),
            2 => one_edge_char(),
            1 => near_limit(256, &["u", "é", "😀", " "], 'u'),
        ]
    ) {
        let expected = user_id_ok(&s);
        match UserId::parse(&s) {
            Ok(u) => { prop_assert!(expected, "accepted {:?}", s); prop_assert_eq!(u.as_str(), s.as_str()); }
            Err(e) => { prop_assert!(!expected, "rejected {:?}: {}", s, e); prop_assert_eq!(e.field, "userId"); }
        }
    }

    #[test]
    fn metadata_accepts_exactly_the_spec(v in any_metadata()) {
        let f = json_facts(&v);
        let expected = f.is_object && f.depth <= 8 && !f.has_nul && f.bytes <= 16_384;
        match Metadata::parse(v.clone()) {
            Ok(m) => {
                prop_assert!(expected, "accepted: object={} depth={} nul={} bytes={}", f.is_object, f.depth, f.has_nul, f.bytes);
                prop_assert_eq!(m.as_value(), &v);
            }
            Err(e) => {
                prop_assert!(!expected, "rejected valid metadata (depth={} bytes={}): {}", f.depth, f.bytes, e);
                prop_assert_eq!(e.field, "metadata");
            }
        }
    }

    #[test]
    fn metadata_rejects_nul_in_any_key_or_value(
        tree in json_chain(),
        at_key in any::<bool>(),
        before in short_string(3),
        after in short_string(3),
    ) {
        let poisoned = format!("{before}\u{0}{after}");
        let v = if at_key { json!({ poisoned: tree }) } else { json!({ "k": tree, "n": poisoned }) };
        prop_assert!(Metadata::parse(v).is_err());
    }

    #[test]
    fn metadata_rejects_non_objects(v in json_tree().prop_filter("not an object", |v| !v.is_object())) {
        prop_assert!(Metadata::parse(v).is_err());
    }

    #[test]
    fn cursor_round_trips(key in order_key()) {
        let c = Cursor(key);
        let s = c.encode();
        prop_assert!(s.len() <= 128, "issued cursor longer than decode accepts: {}", s.len());
        prop_assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        prop_assert_eq!(Cursor::decode(&s), Ok(c));
        // A stable function of the message (SPEC §3): same key, same text.
        prop_assert_eq!(Cursor(key).encode(), s);
    }

    #[test]
    fn cursor_decode_of_any_text_is_total_and_canonicalises(
        s in prop_oneof![
            2 => short_string(140),
            2 => cursor_payload().prop_map(|p| URL_SAFE_NO_PAD.encode(p)),
            1 => prop::collection::vec(any::<u8>(), 0..100).prop_map(|b| URL_SAFE_NO_PAD.encode(b)),
        ]
    ) {
        // What decode guarantees: every accepted text names one position,
        // and that position's canonical encoding decodes back to it. It does
        // not guarantee `decode(s).encode() == s`: aliases ("+5", "005",
        // hyphenated/braced/urn UUIDs) are accepted and name the same message.
        if let Ok(c) = Cursor::decode(&s) {
            let canonical = c.encode();
            prop_assert_eq!(Cursor::decode(&canonical), Ok(c));
            prop_assert_eq!(Cursor::decode(&canonical).unwrap().encode(), canonical);
        }
    }

    #[test]
    fn cursor_decode_reads_the_payload_it_was_given(key in order_key(), plus in any::<bool>(), upper in any::<bool>()) {
        // The payload spellings the parsers allow must name the same key as
        // the issued one, never a different message.
        let us = key.created_at.micros();
        let micros = if plus && us >= 0 { format!("+{us}") } else { us.to_string() };
        let id = key.id.as_uuid();
        let id = if upper { id.hyphenated().to_string().to_uppercase() } else { id.simple().to_string() };
        let s = URL_SAFE_NO_PAD.encode(format!("v1:{micros}:{id}"));
        prop_assert_eq!(Cursor::decode(&s), Ok(Cursor(key)));
    }
}
