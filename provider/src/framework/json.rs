//! JSON forms of cty types and values (hashicorp/terraform docs/plugin-protocol/object-wire-format.md):
//! the compact type syntax schemas use (`["list","string"]`), and values as raw state holds them
//! (UpgradeResourceState).
//!
//! A small parser of our own rather than serde_json: numbers keep their exact decimal text (raw state can
//! hold numbers no f64 represents), nesting is bounded, and duplicate keys are seen.

use std::collections::BTreeMap;
use std::fmt::Write as _;

pub use super::cty::CodecError;
use super::cty::{MAX_DEPTH, Number, Path, Type, Value, excerpt};

/// JSON nesting allowed while parsing: a type of depth [`MAX_DEPTH`] takes two JSON levels per level
/// (`["list", ...]`), and each dynamic value adds `{"value": ...}`.
const JSON_MAX_DEPTH: usize = 2 * MAX_DEPTH + 2;

/// The compact JSON of a type: `"string"`, `["list","string"]`, `["object",{"a":"string"}]`,
/// `["tuple",["string","number"]]`, `"dynamic"`.
pub fn type_to_json(ty: &Type) -> Vec<u8> {
    let mut out = String::new();
    write_type(&mut out, ty);
    out.into_bytes()
}

/// Parses the compact JSON of a type. Refuses types nested deeper than [`MAX_DEPTH`].
pub fn type_from_json(bytes: &[u8]) -> Result<Type, CodecError> {
    let json = parse(bytes)?;
    json_to_type(&json, &mut Path::root(), 0)
}

/// Decodes raw state JSON (UpgradeResourceState's `raw_state.json`) as a value of type `ty`.
///
/// Absent attributes and JSON null are null. Attributes the type lacks are ignored (they belong to an
/// older schema), as terraform-plugin-framework does. Primitives convert like cty's JSON decoder: a
/// string type accepts numbers and bools (their text), a number accepts numeric strings, a bool accepts
/// `"true"`/`"false"`. Dynamic values are `{"value": ..., "type": ...}`.
pub fn decode_value(bytes: &[u8], ty: &Type) -> Result<Value, CodecError> {
    decode_with(bytes, ty, UndefinedAttributes::Ignore)
}

/// Like [`decode_value`], but an attribute the type lacks is an error.
pub fn decode_value_strict(bytes: &[u8], ty: &Type) -> Result<Value, CodecError> {
    decode_with(bytes, ty, UndefinedAttributes::Refuse)
}

/// The JSON of a wholly known value of type `ty`; an unknown anywhere is an error.
pub fn encode_value(value: &Value, ty: &Type) -> Result<Vec<u8>, CodecError> {
    let mut writer = Writer { out: String::new(), path: Path::root() };
    writer.value(value, ty, 0)?;
    Ok(writer.out.into_bytes())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum UndefinedAttributes {
    Ignore,
    Refuse,
}

fn decode_with(bytes: &[u8], ty: &Type, undefined: UndefinedAttributes) -> Result<Value, CodecError> {
    let json = parse(bytes)?;
    let mut decoder = Decoder { path: Path::root(), undefined };
    decoder.value(&json, ty, 0)
}

// ---------------------------------------------------------------------------------------------------
// Types

fn write_type(out: &mut String, ty: &Type) {
    match ty {
        Type::String | Type::Number | Type::Bool | Type::Dynamic => {
            out.push('"');
            out.push_str(ty.kind_name());
            out.push('"');
        }
        Type::List(t) | Type::Set(t) | Type::Map(t) => {
            out.push_str("[\"");
            out.push_str(ty.kind_name());
            out.push_str("\",");
            write_type(out, t);
            out.push(']');
        }
        Type::Object(attrs) => {
            out.push_str("[\"object\",{");
            for (i, (name, t)) in attrs.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, name);
                out.push(':');
                write_type(out, t);
            }
            out.push_str("}]");
        }
        Type::Tuple(types) => {
            out.push_str("[\"tuple\",[");
            for (i, t) in types.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_type(out, t);
            }
            out.push_str("]]");
        }
    }
}

fn json_to_type(json: &Json, path: &mut Path, depth: usize) -> Result<Type, CodecError> {
    let invalid = |path: &Path, reason: String| CodecError::InvalidType { path: path.clone(), reason };
    if depth > MAX_DEPTH {
        return Err(CodecError::TooDeep { path: path.clone(), limit: MAX_DEPTH });
    }
    match json {
        Json::String(name) => match name.as_str() {
            "string" => Ok(Type::String),
            "number" => Ok(Type::Number),
            "bool" => Ok(Type::Bool),
            "dynamic" => Ok(Type::Dynamic),
            other => Err(invalid(path, format!("unknown type {:?}", excerpt(other)))),
        },
        Json::Array(parts) => {
            let [Json::String(kind), argument] = parts.as_slice() else {
                return Err(invalid(path, "expected [kind, argument]".into()));
            };
            match (kind.as_str(), argument) {
                ("list", arg) => Ok(Type::list(json_to_type(arg, path, depth + 1)?)),
                ("set", arg) => Ok(Type::set(json_to_type(arg, path, depth + 1)?)),
                ("map", arg) => Ok(Type::map(json_to_type(arg, path, depth + 1)?)),
                ("object", Json::Object(members)) => {
                    let mut attrs = BTreeMap::new();
                    for (name, member) in members {
                        path.push_attr(name);
                        let t = json_to_type(member, path, depth + 1)?;
                        path.pop();
                        if attrs.insert(name.clone(), t).is_some() {
                            return Err(CodecError::DuplicateKey { path: path.clone(), key: excerpt(name) });
                        }
                    }
                    Ok(Type::Object(attrs))
                }
                ("tuple", Json::Array(elements)) => {
                    let mut types = Vec::new();
                    for (i, element) in elements.iter().enumerate() {
                        path.push_index(i);
                        types.push(json_to_type(element, path, depth + 1)?);
                        path.pop();
                    }
                    Ok(Type::Tuple(types))
                }
                ("object", _) => Err(invalid(path, "an object type needs an object of attribute types".into())),
                ("tuple", _) => Err(invalid(path, "a tuple type needs an array of element types".into())),
                (other, _) => Err(invalid(path, format!("unknown type kind {:?}", excerpt(other)))),
            }
        }
        _ => Err(invalid(path, format!("expected a type name or [kind, argument], found {}", json.kind()))),
    }
}

// ---------------------------------------------------------------------------------------------------
// Values

struct Decoder {
    path: Path,
    undefined: UndefinedAttributes,
}

impl Decoder {
    fn mismatch(&self, expected: &str, found: &Json) -> CodecError {
        CodecError::TypeMismatch { path: self.path.clone(), expected: expected.into(), found: found.kind().into() }
    }

    fn number(&self, text: &str) -> Result<Number, CodecError> {
        Number::parse(text).ok_or_else(|| CodecError::InvalidNumber { path: self.path.clone(), text: excerpt(text) })
    }

    fn value(&mut self, json: &Json, ty: &Type, depth: usize) -> Result<Value, CodecError> {
        if depth > MAX_DEPTH {
            return Err(CodecError::TooDeep { path: self.path.clone(), limit: MAX_DEPTH });
        }
        if let Json::Null = json {
            return Ok(Value::Null);
        }
        match ty {
            Type::String => match json {
                Json::String(s) => Ok(Value::String(s.clone())),
                Json::Number(text) => Ok(Value::String(text.clone())),
                Json::Bool(b) => Ok(Value::String(b.to_string())),
                _ => Err(self.mismatch("string", json)),
            },
            Type::Number => match json {
                Json::Number(text) | Json::String(text) => Ok(Value::Number(self.number(text)?)),
                _ => Err(self.mismatch("number", json)),
            },
            Type::Bool => match json {
                Json::Bool(b) => Ok(Value::Bool(*b)),
                Json::String(s) if s == "true" => Ok(Value::Bool(true)),
                Json::String(s) if s == "false" => Ok(Value::Bool(false)),
                _ => Err(self.mismatch("bool", json)),
            },
            Type::List(element) | Type::Set(element) => {
                let Json::Array(items) = json else {
                    return Err(self.mismatch(ty.kind_name(), json));
                };
                let mut values = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    self.path.push_index(i);
                    values.push(self.value(item, element, depth + 1)?);
                    self.path.pop();
                }
                Ok(if matches!(ty, Type::Set(_)) { Value::Set(values) } else { Value::List(values) })
            }
            Type::Tuple(types) => {
                let Json::Array(items) = json else {
                    return Err(self.mismatch("tuple", json));
                };
                if items.len() != types.len() {
                    return Err(CodecError::TupleLength {
                        path: self.path.clone(),
                        expected: types.len(),
                        found: u64::try_from(items.len()).unwrap_or(u64::MAX),
                    });
                }
                let mut values = Vec::new();
                for (i, (item, item_type)) in items.iter().zip(types).enumerate() {
                    self.path.push_index(i);
                    values.push(self.value(item, item_type, depth + 1)?);
                    self.path.pop();
                }
                Ok(Value::Tuple(values))
            }
            Type::Map(element) => {
                let Json::Object(members) = json else {
                    return Err(self.mismatch("map", json));
                };
                let mut entries = BTreeMap::new();
                for (key, member) in members {
                    if entries.contains_key(key) {
                        return Err(CodecError::DuplicateKey { path: self.path.clone(), key: excerpt(key) });
                    }
                    self.path.push_key(key);
                    let v = self.value(member, element, depth + 1)?;
                    self.path.pop();
                    entries.insert(key.clone(), v);
                }
                Ok(Value::Map(entries))
            }
            Type::Object(attrs) => {
                let Json::Object(members) = json else {
                    return Err(self.mismatch("object", json));
                };
                let mut values = BTreeMap::new();
                for (name, member) in members {
                    let Some(attr_type) = attrs.get(name) else {
                        if self.undefined == UndefinedAttributes::Refuse {
                            return Err(CodecError::UnsupportedAttribute {
                                path: self.path.clone(),
                                name: excerpt(name),
                            });
                        }
                        continue;
                    };
                    if values.contains_key(name) {
                        return Err(CodecError::DuplicateKey { path: self.path.clone(), key: excerpt(name) });
                    }
                    self.path.push_attr(name);
                    let v = self.value(member, attr_type, depth + 1)?;
                    self.path.pop();
                    values.insert(name.clone(), v);
                }
                for name in attrs.keys() {
                    if !values.contains_key(name) {
                        values.insert(name.clone(), Value::Null);
                    }
                }
                Ok(Value::Object(values))
            }
            Type::Dynamic => {
                let Json::Object(members) = json else {
                    return Err(self.mismatch("dynamic value {\"value\": ..., \"type\": ...}", json));
                };
                let mut type_json = None;
                let mut value_json = None;
                for (name, member) in members {
                    let slot = match name.as_str() {
                        "type" => &mut type_json,
                        "value" => &mut value_json,
                        other => {
                            return Err(CodecError::UnsupportedAttribute {
                                path: self.path.clone(),
                                name: excerpt(other),
                            });
                        }
                    };
                    if slot.replace(member).is_some() {
                        return Err(CodecError::DuplicateKey { path: self.path.clone(), key: name.clone() });
                    }
                }
                let (Some(type_json), Some(value_json)) = (type_json, value_json) else {
                    return Err(self.mismatch("dynamic value {\"value\": ..., \"type\": ...}", json));
                };
                let concrete = json_to_type(type_json, &mut self.path.clone(), 0)?;
                let inner = self.value(value_json, &concrete, depth + 1)?;
                Ok(Value::Dynamic(concrete, Box::new(inner)))
            }
        }
    }
}

struct Writer {
    out: String,
    path: Path,
}

impl Writer {
    fn value(&mut self, value: &Value, ty: &Type, depth: usize) -> Result<(), CodecError> {
        if depth > MAX_DEPTH {
            return Err(CodecError::TooDeep { path: self.path.clone(), limit: MAX_DEPTH });
        }
        match (value, ty) {
            (Value::Unknown, _) => {
                return Err(CodecError::UnknownInJson { path: self.path.clone() });
            }
            (Value::Null, _) => self.out.push_str("null"),
            (Value::Dynamic(_, inner), _) if inner.is_unknown() => {
                return Err(CodecError::UnknownInJson { path: self.path.clone() });
            }
            (Value::Dynamic(_, inner), _) if inner.is_null() => self.out.push_str("null"),
            (Value::Dynamic(concrete, inner), Type::Dynamic) => self.dynamic(inner, concrete, depth)?,
            (Value::Dynamic(concrete, inner), _) if concrete == ty => self.value(inner, ty, depth + 1)?,
            (_, Type::Dynamic) => match value.implied_type() {
                Some(concrete) => self.dynamic(value, &concrete, depth)?,
                None => {
                    return Err(CodecError::DynamicWithoutType { path: self.path.clone() });
                }
            },
            (Value::String(s), Type::String) => write_string(&mut self.out, s),
            (Value::Number(n), Type::Number) => {
                if n.is_infinite() {
                    return Err(CodecError::NumberNotJson { path: self.path.clone(), text: n.to_string() });
                }
                let _ = write!(self.out, "{n}");
            }
            (Value::Bool(b), Type::Bool) => self.out.push_str(if *b { "true" } else { "false" }),
            (
                Value::List(items) | Value::Set(items) | Value::Tuple(items),
                Type::List(element) | Type::Set(element),
            ) => {
                self.out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.path.push_index(i);
                    self.value(item, element, depth + 1)?;
                    self.path.pop();
                }
                self.out.push(']');
            }
            (Value::Tuple(items) | Value::List(items), Type::Tuple(types)) => {
                if items.len() != types.len() {
                    return Err(CodecError::TupleLength {
                        path: self.path.clone(),
                        expected: types.len(),
                        found: u64::try_from(items.len()).unwrap_or(u64::MAX),
                    });
                }
                self.out.push('[');
                for (i, (item, item_type)) in items.iter().zip(types).enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.path.push_index(i);
                    self.value(item, item_type, depth + 1)?;
                    self.path.pop();
                }
                self.out.push(']');
            }
            (Value::Map(entries) | Value::Object(entries), Type::Map(element)) => {
                self.out.push('{');
                for (i, (key, item)) in entries.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    write_string(&mut self.out, key);
                    self.out.push(':');
                    self.path.push_key(key);
                    self.value(item, element, depth + 1)?;
                    self.path.pop();
                }
                self.out.push('}');
            }
            (Value::Object(values) | Value::Map(values), Type::Object(attrs)) => {
                if let Some(extra) = values.keys().find(|name| !attrs.contains_key(*name)) {
                    return Err(CodecError::UnsupportedAttribute { path: self.path.clone(), name: extra.clone() });
                }
                self.out.push('{');
                for (i, (name, attr_type)) in attrs.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    write_string(&mut self.out, name);
                    self.out.push(':');
                    self.path.push_attr(name);
                    self.value(values.get(name).unwrap_or(&Value::Null), attr_type, depth + 1)?;
                    self.path.pop();
                }
                self.out.push('}');
            }
            _ => {
                return Err(CodecError::TypeMismatch {
                    path: self.path.clone(),
                    expected: ty.to_string(),
                    found: value.kind_name().to_string(),
                });
            }
        }
        Ok(())
    }

    /// `{"value": ..., "type": ...}`, in the order cty writes them.
    fn dynamic(&mut self, inner: &Value, concrete: &Type, depth: usize) -> Result<(), CodecError> {
        self.out.push_str("{\"value\":");
        self.value(inner, concrete, depth + 1)?;
        self.out.push_str(",\"type\":");
        write_type(&mut self.out, concrete);
        self.out.push('}');
        Ok(())
    }
}

/// A JSON string literal: quotes, backslashes and control characters escaped, the rest as UTF-8.
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

// ---------------------------------------------------------------------------------------------------
// Parsing

/// A parsed JSON document; numbers keep their text, objects their member order and duplicates.
#[derive(Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "bool",
            Json::Number(_) => "number",
            Json::String(_) => "string",
            Json::Array(_) => "array",
            Json::Object(_) => "object",
        }
    }
}

fn parse(bytes: &[u8]) -> Result<Json, CodecError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| CodecError::Json { offset: e.valid_up_to(), reason: "not valid UTF-8".into() })?;
    let mut parser = Parser { text, pos: 0 };
    let json = parser.value(0)?;
    parser.skip_whitespace();
    if parser.pos < text.len() {
        return Err(parser.error("unexpected text after the value"));
    }
    Ok(json)
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, reason: &str) -> CodecError {
        CodecError::Json { offset: self.pos, reason: reason.into() }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expect_literal(&mut self, literal: &str, json: Json) -> Result<Json, CodecError> {
        if self.text.get(self.pos..).is_some_and(|rest| rest.starts_with(literal)) {
            self.pos += literal.len();
            Ok(json)
        } else {
            Err(self.error("invalid literal"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, CodecError> {
        self.skip_whitespace();
        match self.peek() {
            None => Err(self.error("unexpected end of input")),
            Some(b'n') => self.expect_literal("null", Json::Null),
            Some(b't') => self.expect_literal("true", Json::Bool(true)),
            Some(b'f') => self.expect_literal("false", Json::Bool(false)),
            Some(b'"') => Ok(Json::String(self.string()?)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'[') => {
                let depth = self.enter(depth)?;
                let mut items = Vec::new();
                self.skip_whitespace();
                if self.peek() == Some(b']') {
                    self.pos += 1;
                    return Ok(Json::Array(items));
                }
                loop {
                    items.push(self.value(depth)?);
                    self.skip_whitespace();
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(Json::Array(items));
                        }
                        _ => return Err(self.error("expected ',' or ']'")),
                    }
                }
            }
            Some(b'{') => {
                let depth = self.enter(depth)?;
                let mut members = Vec::new();
                self.skip_whitespace();
                if self.peek() == Some(b'}') {
                    self.pos += 1;
                    return Ok(Json::Object(members));
                }
                loop {
                    self.skip_whitespace();
                    if self.peek() != Some(b'"') {
                        return Err(self.error("expected a string key"));
                    }
                    let key = self.string()?;
                    self.skip_whitespace();
                    if self.peek() != Some(b':') {
                        return Err(self.error("expected ':'"));
                    }
                    self.pos += 1;
                    members.push((key, self.value(depth)?));
                    self.skip_whitespace();
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {
                            self.pos += 1;
                            return Ok(Json::Object(members));
                        }
                        _ => return Err(self.error("expected ',' or '}'")),
                    }
                }
            }
            Some(_) => Err(self.error("expected a value")),
        }
    }

    /// Consumes the opening bracket and returns the depth inside it.
    fn enter(&mut self, depth: usize) -> Result<usize, CodecError> {
        if depth >= JSON_MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        self.pos += 1;
        Ok(depth + 1)
    }

    /// Strict JSON number syntax; the text is kept as is.
    fn number(&mut self) -> Result<Json, CodecError> {
        let start = self.pos;
        let bytes = self.text.as_bytes();
        let digits = |pos: &mut usize| {
            let from = *pos;
            while bytes.get(*pos).is_some_and(u8::is_ascii_digit) {
                *pos += 1;
            }
            *pos - from
        };
        let mut pos = self.pos;
        if bytes.get(pos) == Some(&b'-') {
            pos += 1;
        }
        let int_start = pos;
        let int_digits = digits(&mut pos);
        if int_digits == 0 || (int_digits > 1 && bytes.get(int_start) == Some(&b'0')) {
            self.pos = pos;
            return Err(self.error("invalid number"));
        }
        if bytes.get(pos) == Some(&b'.') {
            pos += 1;
            if digits(&mut pos) == 0 {
                self.pos = pos;
                return Err(self.error("invalid number"));
            }
        }
        if matches!(bytes.get(pos), Some(b'e' | b'E')) {
            pos += 1;
            if matches!(bytes.get(pos), Some(b'+' | b'-')) {
                pos += 1;
            }
            if digits(&mut pos) == 0 {
                self.pos = pos;
                return Err(self.error("invalid number"));
            }
        }
        self.pos = pos;
        let text = self.text.get(start..pos).ok_or_else(|| self.error("invalid number"))?;
        Ok(Json::Number(text.to_string()))
    }

    fn string(&mut self) -> Result<String, CodecError> {
        self.pos += 1; // the opening quote
        let mut out = String::new();
        loop {
            let run_start = self.pos;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            // The run ends at an ASCII byte or the end, so it lies on character boundaries.
            out.push_str(self.text.get(run_start..self.pos).unwrap_or_default());
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let escaped = self.peek().ok_or_else(|| self.error("unterminated string"))?;
                    self.pos += 1;
                    match escaped {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => out.push(self.unicode_escape()?),
                        _ => return Err(self.error("invalid escape")),
                    }
                }
                Some(_) => return Err(self.error("control character in string")),
            }
        }
    }

    /// After `\u`: four hex digits, or a surrogate pair `\uD83D\uDE00`.
    fn unicode_escape(&mut self) -> Result<char, CodecError> {
        let first = self.hex4()?;
        let code = if (0xd800..0xdc00).contains(&first) {
            if self.text.get(self.pos..).is_some_and(|rest| rest.starts_with("\\u")) {
                self.pos += 2;
            } else {
                return Err(self.error("lone surrogate in \\u escape"));
            }
            let second = self.hex4()?;
            if !(0xdc00..0xe000).contains(&second) {
                return Err(self.error("invalid surrogate pair in \\u escape"));
            }
            0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00)
        } else {
            first
        };
        char::from_u32(code).ok_or_else(|| self.error("lone surrogate in \\u escape"))
    }

    fn hex4(&mut self) -> Result<u32, CodecError> {
        let digits = self.text.get(self.pos..self.pos + 4).ok_or_else(|| self.error("short \\u escape"))?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(self.error("invalid \\u escape"));
        }
        let code = u32::from_str_radix(digits, 16).map_err(|_| self.error("invalid \\u escape"))?;
        self.pos += 4;
        Ok(code)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn obj(attrs: &[(&str, Value)]) -> Value {
        Value::object(attrs.iter().map(|(k, v)| (*k, v.clone())))
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn types_have_their_compact_json() {
        assert_eq!(text(type_to_json(&Type::String)), r#""string""#);
        assert_eq!(text(type_to_json(&Type::Dynamic)), r#""dynamic""#);
        assert_eq!(text(type_to_json(&Type::list(Type::String))), r#"["list","string"]"#);
        assert_eq!(text(type_to_json(&Type::set(Type::Number))), r#"["set","number"]"#);
        assert_eq!(text(type_to_json(&Type::map(Type::Bool))), r#"["map","bool"]"#);
        assert_eq!(
            text(type_to_json(&Type::object([("b", Type::Number), ("a", Type::String)]))),
            r#"["object",{"a":"string","b":"number"}]"#
        );
        assert_eq!(
            text(type_to_json(&Type::Tuple(vec![Type::String, Type::list(Type::Dynamic)]))),
            r#"["tuple",["string",["list","dynamic"]]]"#
        );
    }

    #[test]
    fn types_round_trip_through_json() {
        let types = [
            Type::String,
            Type::Number,
            Type::Bool,
            Type::Dynamic,
            Type::object([
                ("tags", Type::map(Type::String)),
                ("rules", Type::set(Type::object([("p", Type::Number)]))),
            ]),
            Type::Tuple(vec![]),
            Type::Object(BTreeMap::new()),
        ];
        for ty in types {
            assert_eq!(type_from_json(&type_to_json(&ty)).unwrap(), ty);
        }
        assert_eq!(
            type_from_json(b" [ \"list\" , \"string\" ] ").unwrap(),
            Type::list(Type::String),
            "whitespace is fine"
        );
    }

    #[test]
    fn invalid_types_are_errors() {
        for bad in [
            &br#""str""#[..],
            br#"["list"]"#,
            br#"["list","string","x"]"#,
            br#"["object",["a"]]"#,
            br#"["tuple",{}]"#,
            br#"["frob","string"]"#,
            br#"["object",{"a":"string","a":"number"}]"#,
            br#"42"#,
            br#"["list","string"] x"#,
        ] {
            assert!(type_from_json(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let deep = format!("{}\"string\"{}", "[\"list\",".repeat(65), "]".repeat(65));
        assert_eq!(type_from_json(deep.as_bytes()).unwrap_err().code(), "TDM-CTY-005");
    }

    fn state_type() -> Type {
        Type::object([
            ("id", Type::String),
            ("cidr_block", Type::String),
            ("count", Type::Number),
            ("enabled", Type::Bool),
            ("tags", Type::map(Type::String)),
            ("zones", Type::set(Type::String)),
            ("ingress", Type::list(Type::object([("port", Type::Number)]))),
            ("pair", Type::Tuple(vec![Type::String, Type::Number])),
            ("extra", Type::Dynamic),
        ])
    }

    #[test]
    fn raw_state_decodes_per_type() {
        let raw = br#"{
            "id": "vpc-1", "cidr_block": null, "count": 123456789012345678901234567890.5,
            "tags": {"Name": "main"}, "zones": ["b", "a"], "ingress": [{"port": 22}],
            "pair": ["x", 1e3], "extra": {"value": ["a"], "type": ["list", "string"]},
            "removed_in_v2": "ignored"
        }"#;
        let v = decode_value(raw, &state_type()).unwrap();
        assert_eq!(v.attr("id").as_str(), Some("vpc-1"));
        assert!(v.attr("cidr_block").is_null());
        assert!(v.attr("enabled").is_null(), "absent attribute is null");
        assert_eq!(v.attr("count").as_number().unwrap().to_string(), "123456789012345678901234567890.5");
        assert_eq!(v.attr("tags").entries().unwrap()["Name"], Value::from("main"));
        assert_eq!(*v.attr("zones"), Value::Set(vec!["a".into(), "b".into()]));
        assert_eq!(v.attr("ingress").elements()[0].attr("port").as_i64(), Some(22));
        assert_eq!(v.attr("pair").elements()[1].as_i64(), Some(1000));
        assert_eq!(*v.attr("extra"), Value::dynamic(Type::list(Type::String), Value::List(vec!["a".into()])));
        assert!(v.attrs().unwrap().get("removed_in_v2").is_none());
        assert_eq!(decode_value(b"null", &state_type()).unwrap(), Value::Null);

        let err = decode_value_strict(raw, &state_type()).unwrap_err();
        assert_eq!(err, CodecError::UnsupportedAttribute { path: Path::root(), name: "removed_in_v2".into() });
    }

    #[test]
    fn primitives_convert_like_cty() {
        assert_eq!(decode_value(b"12", &Type::String).unwrap(), Value::from("12"));
        assert_eq!(decode_value(b"true", &Type::String).unwrap(), Value::from("true"));
        assert_eq!(decode_value(br#""12""#, &Type::Number).unwrap(), Value::from(12i64));
        assert_eq!(decode_value(br#""false""#, &Type::Bool).unwrap(), Value::from(false));
        assert_eq!(decode_value(br#""yes""#, &Type::Bool).unwrap_err().code(), "TDM-CTY-002");
    }

    #[test]
    fn wrong_types_report_the_attribute_path() {
        let err = decode_value(br#"{"ingress": [{}, {}, {"port": "abc"}]}"#, &state_type()).unwrap_err();
        assert_eq!(err.to_string(), "at .ingress[2].port: invalid number \"abc\"");
        let err = decode_value(br#"{"tags": {"Name": ["x"]}}"#, &state_type()).unwrap_err();
        assert_eq!(err.to_string(), "at .tags[\"Name\"]: expected string, found array");
        let err = decode_value(br#"{"pair": ["x"]}"#, &state_type()).unwrap_err();
        assert_eq!(err.code(), "TDM-CTY-006");
        let err = decode_value(br#"{"extra": {"value": 1}}"#, &state_type()).unwrap_err();
        assert_eq!(err.code(), "TDM-CTY-002");
    }

    #[test]
    fn values_encode_to_exact_json() {
        let ty = Type::object([
            ("id", Type::String),
            ("n", Type::Number),
            ("tags", Type::map(Type::String)),
            ("zones", Type::set(Type::String)),
            ("extra", Type::Dynamic),
        ]);
        let v = obj(&[
            ("id", "a\"b\\c\n\u{1}é".into()),
            ("n", Value::Number(Number::parse("0.1").unwrap())),
            ("tags", Value::Map([("z".to_string(), "1".into()), ("a".to_string(), "2".into())].into())),
            ("zones", Value::Set(vec!["x".into()])),
            ("extra", Value::dynamic(Type::Bool, true.into())),
        ]);
        let json = text(encode_value(&v, &ty).unwrap());
        assert_eq!(
            json,
            r#"{"extra":{"value":true,"type":"bool"},"id":"a\"b\\c\n\u0001é","n":0.1,"tags":{"a":"2","z":"1"},"zones":["x"]}"#
        );
        assert_eq!(decode_value(json.as_bytes(), &ty).unwrap(), v);
        // serde_json agrees that it is JSON.
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["id"], "a\"b\\c\n\u{1}é");
    }

    #[test]
    fn encoding_unknowns_or_infinity_is_an_error() {
        let ty = Type::object([("a", Type::list(Type::String))]);
        let err = encode_value(&obj(&[("a", Value::List(vec![Value::Unknown]))]), &ty).unwrap_err();
        assert_eq!(err.to_string(), "at .a[0]: the value is unknown, which JSON cannot represent");
        let inf = Value::Number(Number::parse("inf").unwrap());
        assert_eq!(encode_value(&inf, &Type::Number).unwrap_err().code(), "TDM-CTY-015");
    }

    #[test]
    fn strings_with_escapes_and_surrogates_parse() {
        let v = decode_value(br#""a\u00e9\ud83d\ude00\/\t""#, &Type::String).unwrap();
        assert_eq!(v.as_str(), Some("aé😀/\t"));
        let weird = "\u{7f}\u{2028}😀\0";
        let json = encode_value(&Value::from(weird), &Type::String).unwrap();
        assert_eq!(decode_value(&json, &Type::String).unwrap().as_str(), Some(weird));
    }

    #[test]
    fn malformed_json_is_an_error() {
        for bad in [
            &b""[..],
            b"{",
            b"[1,]",
            b"{\"a\" 1}",
            b"01",
            b"1.",
            b"-",
            b"1e",
            b"\"abc",
            b"\"\\x\"",
            b"\"\\ud800\"",
            b"\"\\udc00\"",
            b"\"\\u12\"",
            b"\"a\nb\"",
            b"tru",
            b"nul",
            b"\xff",
            b"[] []",
            b"{\"a\":1,}",
        ] {
            assert!(decode_value(bad, &Type::list(Type::Dynamic)).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn deep_json_nesting_is_refused() {
        let deep = "[".repeat(100_000);
        assert_eq!(decode_value(deep.as_bytes(), &Type::Dynamic).unwrap_err().code(), "TDM-CTY-011");
        let mut ty = Type::String;
        for _ in 0..100 {
            ty = Type::list(ty);
        }
        let nested = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(decode_value(nested.as_bytes(), &ty).unwrap_err().code(), "TDM-CTY-005");
    }

    #[test]
    fn every_truncation_of_valid_state_is_an_error() {
        let raw = br#"{"id":"vpc-1","tags":{"a":"b"},"zones":["a"],"extra":{"value":1,"type":"number"}}"#;
        assert!(decode_value(raw, &state_type()).is_ok());
        for cut in 0..raw.len() {
            assert!(decode_value(&raw[..cut], &state_type()).is_err(), "prefix of {cut} bytes");
        }
    }
}
