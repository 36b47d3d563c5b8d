//! DynamicValue's MessagePack encoding (hashicorp/terraform docs/plugin-protocol/object-wire-format.md).
//!
//! The bytes come from outside: every length is checked against what is left before anything is read or
//! allocated, nesting is bounded by [`MAX_DEPTH`], and nothing panics. Decoding checks the value
//! against the type and reports where it failed (`.ingress[2].port`).

use std::collections::BTreeMap;

pub use super::cty::CodecError;
use super::cty::{MAX_DEPTH, Number, Path, Type, Value, excerpt};

/// Terraform's unrefined unknown: fixext1, extension type 0, one ignored byte.
pub const UNKNOWN: [u8; 3] = [0xd4, 0x00, 0x00];

/// Decodes a DynamicValue's msgpack bytes as a value of type `ty`.
///
/// Null is msgpack nil; any extension is unknown (type 12's refinements are dropped); object attributes
/// that are absent decode as null, attributes the type lacks are errors; numbers may be integers, floats
/// or decimal strings.
pub fn decode(bytes: &[u8], ty: &Type) -> Result<Value, CodecError> {
    let mut reader = Reader { bytes, pos: 0, path: Path::root() };
    let value = reader.value(ty, 0)?;
    let rest = bytes.len().saturating_sub(reader.pos);
    if rest > 0 {
        return Err(CodecError::TrailingBytes { count: rest });
    }
    Ok(value)
}

/// Encodes a value of type `ty` as msgpack. Unknown is written as `d4 00 00`; integers that fit i64 as
/// msgpack integers, numbers an f64 holds exactly as float64, all others as decimal strings.
pub fn encode(value: &Value, ty: &Type) -> Result<Vec<u8>, CodecError> {
    let mut writer = Writer { out: Vec::new(), path: Path::root() };
    writer.value(value, ty, 0)?;
    Ok(writer.out)
}

/// What a msgpack marker (and its length field) announces.
#[derive(Clone, Copy, Debug)]
enum Head {
    Nil,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(usize),
    Bin(usize),
    Array(usize),
    Map(usize),
    /// Payload length; the extension type byte has been read already.
    Ext(usize, i8),
    Reserved,
}

impl Head {
    fn describe(self) -> String {
        match self {
            Head::Nil => "nil".into(),
            Head::Bool(_) => "bool".into(),
            Head::Int(_) | Head::UInt(_) => "integer".into(),
            Head::Float(_) => "float".into(),
            Head::Str(_) => "string".into(),
            Head::Bin(_) => "binary".into(),
            Head::Array(n) => format!("array of {n}"),
            Head::Map(_) => "map".into(),
            Head::Ext(..) => "extension".into(),
            Head::Reserved => "the reserved byte 0xc1".into(),
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Where the value being decoded sits; errors carry a copy.
    path: Path,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self.pos.checked_add(n).filter(|end| *end <= self.bytes.len());
        match end.and_then(|end| self.bytes.get(self.pos..end)) {
            Some(slice) => {
                self.pos += n;
                Ok(slice)
            }
            None => Err(CodecError::Truncated { path: self.path.clone() }),
        }
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let slice = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take_array::<1>()?[0])
    }

    fn len8(&mut self) -> Result<usize, CodecError> {
        Ok(usize::from(self.u8()?))
    }

    fn len16(&mut self) -> Result<usize, CodecError> {
        Ok(usize::from(u16::from_be_bytes(self.take_array()?)))
    }

    fn len32(&mut self) -> Result<usize, CodecError> {
        let n = u32::from_be_bytes(self.take_array()?);
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn head(&mut self) -> Result<Head, CodecError> {
        let marker = self.u8()?;
        Ok(match marker {
            0x00..=0x7f => Head::Int(i64::from(marker)),
            0x80..=0x8f => Head::Map(usize::from(marker & 0x0f)),
            0x90..=0x9f => Head::Array(usize::from(marker & 0x0f)),
            0xa0..=0xbf => Head::Str(usize::from(marker & 0x1f)),
            0xc0 => Head::Nil,
            0xc1 => Head::Reserved,
            0xc2 => Head::Bool(false),
            0xc3 => Head::Bool(true),
            0xc4 => Head::Bin(self.len8()?),
            0xc5 => Head::Bin(self.len16()?),
            0xc6 => Head::Bin(self.len32()?),
            0xc7 => {
                let n = self.len8()?;
                Head::Ext(n, self.ext_type()?)
            }
            0xc8 => {
                let n = self.len16()?;
                Head::Ext(n, self.ext_type()?)
            }
            0xc9 => {
                let n = self.len32()?;
                Head::Ext(n, self.ext_type()?)
            }
            0xca => Head::Float(f64::from(f32::from_be_bytes(self.take_array()?))),
            0xcb => Head::Float(f64::from_be_bytes(self.take_array()?)),
            0xcc => Head::UInt(u64::from(self.u8()?)),
            0xcd => Head::UInt(u64::from(u16::from_be_bytes(self.take_array()?))),
            0xce => Head::UInt(u64::from(u32::from_be_bytes(self.take_array()?))),
            0xcf => Head::UInt(u64::from_be_bytes(self.take_array()?)),
            0xd0 => Head::Int(i64::from(i8::from_be_bytes(self.take_array()?))),
            0xd1 => Head::Int(i64::from(i16::from_be_bytes(self.take_array()?))),
            0xd2 => Head::Int(i64::from(i32::from_be_bytes(self.take_array()?))),
            0xd3 => Head::Int(i64::from_be_bytes(self.take_array()?)),
            0xd4 => Head::Ext(1, self.ext_type()?),
            0xd5 => Head::Ext(2, self.ext_type()?),
            0xd6 => Head::Ext(4, self.ext_type()?),
            0xd7 => Head::Ext(8, self.ext_type()?),
            0xd8 => Head::Ext(16, self.ext_type()?),
            0xd9 => Head::Str(self.len8()?),
            0xda => Head::Str(self.len16()?),
            0xdb => Head::Str(self.len32()?),
            0xdc => Head::Array(self.len16()?),
            0xdd => Head::Array(self.len32()?),
            0xde => Head::Map(self.len16()?),
            0xdf => Head::Map(self.len32()?),
            0xe0..=0xff => Head::Int(i64::from(i8::from_be_bytes([marker]))),
        })
    }

    fn ext_type(&mut self) -> Result<i8, CodecError> {
        Ok(i8::from_be_bytes(self.take_array()?))
    }

    /// Checks a declared length against the bytes left, each item needing at least `min_item_bytes`,
    /// before anything is read or allocated for it.
    fn check_len(&self, declared: usize, min_item_bytes: usize) -> Result<(), CodecError> {
        let remaining = self.remaining();
        if declared.saturating_mul(min_item_bytes) > remaining {
            return Err(CodecError::LengthExceedsInput {
                path: self.path.clone(),
                declared: u64::try_from(declared).unwrap_or(u64::MAX),
                remaining,
            });
        }
        Ok(())
    }

    fn bytes_of(&mut self, len: usize) -> Result<&'a [u8], CodecError> {
        self.check_len(len, 1)?;
        self.take(len)
    }

    fn text(&mut self, len: usize) -> Result<&'a str, CodecError> {
        let raw = self.bytes_of(len)?;
        std::str::from_utf8(raw).map_err(|_| CodecError::InvalidUtf8 { path: self.path.clone() })
    }

    fn mismatch(&self, expected: &str, found: Head) -> CodecError {
        CodecError::TypeMismatch { path: self.path.clone(), expected: expected.to_string(), found: found.describe() }
    }

    fn value(&mut self, ty: &Type, depth: usize) -> Result<Value, CodecError> {
        if depth > MAX_DEPTH {
            return Err(CodecError::TooDeep { path: self.path.clone(), limit: MAX_DEPTH });
        }
        let head = self.head()?;
        match head {
            Head::Nil => return Ok(Value::Null),
            Head::Ext(len, _ext_type) => {
                // Type 0 is plain unknown, type 12 carries refinements; any other type is unknown too.
                // Refinements only narrow the range, so dropping them is always safe.
                self.bytes_of(len)?;
                return Ok(Value::Unknown);
            }
            _ => {}
        }
        match ty {
            Type::String => match head {
                Head::Str(len) | Head::Bin(len) => Ok(Value::String(self.text(len)?.to_string())),
                _ => Err(self.mismatch("string", head)),
            },
            Type::Number => self.number(head).map(Value::Number),
            Type::Bool => match head {
                Head::Bool(b) => Ok(Value::Bool(b)),
                _ => Err(self.mismatch("bool", head)),
            },
            Type::List(element) | Type::Set(element) => {
                let Head::Array(len) = head else {
                    return Err(self.mismatch(ty.kind_name(), head));
                };
                let items = self.sequence(len, |_| Some(element), depth)?;
                Ok(if matches!(ty, Type::Set(_)) { Value::Set(items) } else { Value::List(items) })
            }
            Type::Tuple(types) => {
                let Head::Array(len) = head else {
                    return Err(self.mismatch("tuple", head));
                };
                if len != types.len() {
                    return Err(CodecError::TupleLength {
                        path: self.path.clone(),
                        expected: types.len(),
                        found: u64::try_from(len).unwrap_or(u64::MAX),
                    });
                }
                Ok(Value::Tuple(self.sequence(len, |i| types.get(i), depth)?))
            }
            Type::Map(element) => {
                let Head::Map(len) = head else {
                    return Err(self.mismatch("map", head));
                };
                Ok(Value::Map(self.entries(len, false, |_| Some(element), depth)?))
            }
            Type::Object(attrs) => {
                let Head::Map(len) = head else {
                    return Err(self.mismatch("object", head));
                };
                let mut values = self.entries(len, true, |name| attrs.get(name), depth)?;
                for name in attrs.keys() {
                    if !values.contains_key(name) {
                        values.insert(name.clone(), Value::Null);
                    }
                }
                Ok(Value::Object(values))
            }
            Type::Dynamic => self.dynamic(head, depth),
        }
    }

    fn number(&mut self, head: Head) -> Result<Number, CodecError> {
        match head {
            Head::Int(i) => Ok(Number::from_i64(i)),
            Head::UInt(u) => Ok(Number::from_u64(u)),
            Head::Float(f) => Number::from_f64_exact(f)
                .ok_or_else(|| CodecError::InvalidNumber { path: self.path.clone(), text: "NaN".into() }),
            Head::Str(len) => {
                let text = self.text(len)?;
                Number::parse(text)
                    .ok_or_else(|| CodecError::InvalidNumber { path: self.path.clone(), text: excerpt(text) })
            }
            _ => Err(self.mismatch("number", head)),
        }
    }

    fn sequence<'t>(
        &mut self,
        len: usize,
        type_of: impl Fn(usize) -> Option<&'t Type>,
        depth: usize,
    ) -> Result<Vec<Value>, CodecError> {
        self.check_len(len, 1)?;
        let mut items = Vec::new();
        for i in 0..len {
            self.path.push_index(i);
            let element_type = type_of(i).unwrap_or(&Type::Dynamic);
            let item = self.value(element_type, depth + 1)?;
            self.path.pop();
            items.push(item);
        }
        Ok(items)
    }

    /// A msgpack map keyed by strings; `type_of` answers the type of a key's value, `None` for
    /// an attribute the object type lacks. `object` picks the path step: `.name` or `["key"]`.
    fn entries<'t>(
        &mut self,
        len: usize,
        object: bool,
        type_of: impl Fn(&str) -> Option<&'t Type>,
        depth: usize,
    ) -> Result<BTreeMap<String, Value>, CodecError> {
        self.check_len(len, 2)?;
        let mut entries = BTreeMap::new();
        for _ in 0..len {
            let key_head = self.head()?;
            let key = match key_head {
                Head::Str(n) => self.text(n)?.to_string(),
                _ => return Err(self.mismatch("a string key", key_head)),
            };
            let Some(value_type) = type_of(&key) else {
                return Err(CodecError::UnsupportedAttribute { path: self.path.clone(), name: excerpt(&key) });
            };
            if entries.contains_key(&key) {
                return Err(CodecError::DuplicateKey { path: self.path.clone(), key: excerpt(&key) });
            }
            if object {
                self.path.push_attr(&key);
            } else {
                self.path.push_key(&key);
            }
            let value = self.value(value_type, depth + 1)?;
            self.path.pop();
            entries.insert(key, value);
        }
        Ok(entries)
    }

    /// `[type-json, value]`: the concrete type as JSON (binary or string), then the value of that type.
    fn dynamic(&mut self, head: Head, depth: usize) -> Result<Value, CodecError> {
        let Head::Array(2) = head else {
            return Err(self.mismatch("dynamic value [type, value]", head));
        };
        let type_head = self.head()?;
        let type_json = match type_head {
            Head::Bin(len) | Head::Str(len) => self.bytes_of(len)?,
            _ => return Err(self.mismatch("type description (JSON bytes)", type_head)),
        };
        let ty = super::json::type_from_json(type_json)
            .map_err(|e| CodecError::InvalidType { path: self.path.clone(), reason: e.to_string() })?;
        let value = self.value(&ty, depth + 1)?;
        Ok(Value::Dynamic(ty, Box::new(value)))
    }
}

struct Writer {
    out: Vec<u8>,
    path: Path,
}

impl Writer {
    fn mismatch(&self, ty: &Type, value: &Value) -> CodecError {
        CodecError::TypeMismatch {
            path: self.path.clone(),
            expected: ty.to_string(),
            found: value.kind_name().to_string(),
        }
    }

    fn len32(&self, len: usize) -> Result<u32, CodecError> {
        u32::try_from(len).map_err(|_| CodecError::TooLong { path: self.path.clone(), len })
    }

    fn nil(&mut self) {
        self.out.push(0xc0);
    }

    fn int(&mut self, i: i64) {
        match i {
            0..=127 => self.out.push(i.to_be_bytes()[7]),
            -32..=-1 => self.out.push(i.to_be_bytes()[7]),
            _ => {
                if let Ok(v) = u8::try_from(i) {
                    self.out.push(0xcc);
                    self.out.push(v);
                } else if let Ok(v) = u16::try_from(i) {
                    self.out.push(0xcd);
                    self.out.extend_from_slice(&v.to_be_bytes());
                } else if let Ok(v) = u32::try_from(i) {
                    self.out.push(0xce);
                    self.out.extend_from_slice(&v.to_be_bytes());
                } else if let Ok(v) = i8::try_from(i) {
                    self.out.push(0xd0);
                    self.out.extend_from_slice(&v.to_be_bytes());
                } else if let Ok(v) = i16::try_from(i) {
                    self.out.push(0xd1);
                    self.out.extend_from_slice(&v.to_be_bytes());
                } else if let Ok(v) = i32::try_from(i) {
                    self.out.push(0xd2);
                    self.out.extend_from_slice(&v.to_be_bytes());
                } else if i > 0 {
                    self.out.push(0xcf);
                    self.out.extend_from_slice(&i.to_be_bytes());
                } else {
                    self.out.push(0xd3);
                    self.out.extend_from_slice(&i.to_be_bytes());
                }
            }
        }
    }

    fn f64(&mut self, f: f64) {
        self.out.push(0xcb);
        self.out.extend_from_slice(&f.to_be_bytes());
    }

    /// A length-prefixed item: `fix` (with its bit mask) when the length fits, else the 8/16/32-bit forms.
    fn head(&mut self, len: usize, fix: Option<(u8, usize)>, markers: [Option<u8>; 3]) -> Result<(), CodecError> {
        let len32 = self.len32(len)?;
        if let Some((base, limit)) = fix
            && len < limit
        {
            self.out.push(base | u8::try_from(len).unwrap_or(0));
            return Ok(());
        }
        if let (Some(m), Ok(n)) = (markers[0], u8::try_from(len32)) {
            self.out.push(m);
            self.out.push(n);
        } else if let (Some(m), Ok(n)) = (markers[1], u16::try_from(len32)) {
            self.out.push(m);
            self.out.extend_from_slice(&n.to_be_bytes());
        } else if let Some(m) = markers[2] {
            self.out.push(m);
            self.out.extend_from_slice(&len32.to_be_bytes());
        }
        Ok(())
    }

    fn str(&mut self, s: &str) -> Result<(), CodecError> {
        self.head(s.len(), Some((0xa0, 32)), [Some(0xd9), Some(0xda), Some(0xdb)])?;
        self.out.extend_from_slice(s.as_bytes());
        Ok(())
    }

    fn bin(&mut self, b: &[u8]) -> Result<(), CodecError> {
        self.head(b.len(), None, [Some(0xc4), Some(0xc5), Some(0xc6)])?;
        self.out.extend_from_slice(b);
        Ok(())
    }

    fn array_len(&mut self, len: usize) -> Result<(), CodecError> {
        self.head(len, Some((0x90, 16)), [None, Some(0xdc), Some(0xdd)])
    }

    fn map_len(&mut self, len: usize) -> Result<(), CodecError> {
        self.head(len, Some((0x80, 16)), [None, Some(0xde), Some(0xdf)])
    }

    fn number(&mut self, n: &Number) -> Result<(), CodecError> {
        if let Some(i) = n.as_i64() {
            self.int(i);
        } else if let Some(f) = n.as_exact_f64() {
            self.f64(f);
        } else {
            self.str(&n.to_string())?;
        }
        Ok(())
    }

    fn value(&mut self, value: &Value, ty: &Type, depth: usize) -> Result<(), CodecError> {
        if depth > MAX_DEPTH {
            return Err(CodecError::TooDeep { path: self.path.clone(), limit: MAX_DEPTH });
        }
        match (value, ty) {
            (Value::Null, _) => self.nil(),
            (Value::Unknown, _) => self.out.extend_from_slice(&UNKNOWN),
            (Value::Dynamic(_, inner), _) if inner.is_null() => self.nil(),
            (Value::Dynamic(_, inner), _) if inner.is_unknown() => self.out.extend_from_slice(&UNKNOWN),
            (Value::Dynamic(concrete, inner), Type::Dynamic) => self.dynamic(inner, concrete, depth)?,
            (Value::Dynamic(concrete, inner), _) if concrete == ty => self.value(inner, ty, depth + 1)?,
            (_, Type::Dynamic) => match value.implied_type() {
                Some(concrete) => self.dynamic(value, &concrete, depth)?,
                None => {
                    return Err(CodecError::DynamicWithoutType { path: self.path.clone() });
                }
            },
            (Value::String(s), Type::String) => self.str(s)?,
            (Value::Number(n), Type::Number) => self.number(n)?,
            (Value::Bool(b), Type::Bool) => self.out.push(if *b { 0xc3 } else { 0xc2 }),
            (
                Value::List(items) | Value::Set(items) | Value::Tuple(items),
                Type::List(element) | Type::Set(element),
            ) => {
                self.array_len(items.len())?;
                for (i, item) in items.iter().enumerate() {
                    self.path.push_index(i);
                    self.value(item, element, depth + 1)?;
                    self.path.pop();
                }
            }
            (Value::Tuple(items) | Value::List(items), Type::Tuple(types)) => {
                if items.len() != types.len() {
                    return Err(CodecError::TupleLength {
                        path: self.path.clone(),
                        expected: types.len(),
                        found: u64::try_from(items.len()).unwrap_or(u64::MAX),
                    });
                }
                self.array_len(items.len())?;
                for (i, (item, item_type)) in items.iter().zip(types).enumerate() {
                    self.path.push_index(i);
                    self.value(item, item_type, depth + 1)?;
                    self.path.pop();
                }
            }
            (Value::Map(entries) | Value::Object(entries), Type::Map(element)) => {
                self.map_len(entries.len())?;
                for (key, item) in entries {
                    self.str(key)?;
                    self.path.push_key(key);
                    self.value(item, element, depth + 1)?;
                    self.path.pop();
                }
            }
            (Value::Object(values) | Value::Map(values), Type::Object(attrs)) => {
                if let Some(extra) = values.keys().find(|name| !attrs.contains_key(*name)) {
                    return Err(CodecError::UnsupportedAttribute { path: self.path.clone(), name: extra.clone() });
                }
                self.map_len(attrs.len())?;
                for (name, attr_type) in attrs {
                    self.str(name)?;
                    self.path.push_attr(name);
                    self.value(values.get(name).unwrap_or(&Value::Null), attr_type, depth + 1)?;
                    self.path.pop();
                }
            }
            _ => return Err(self.mismatch(ty, value)),
        }
        Ok(())
    }

    fn dynamic(&mut self, inner: &Value, concrete: &Type, depth: usize) -> Result<(), CodecError> {
        self.array_len(2)?;
        self.bin(&super::json::type_to_json(concrete))?;
        self.value(inner, concrete, depth + 1)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn obj(attrs: &[(&str, Value)]) -> Value {
        Value::object(attrs.iter().map(|(k, v)| (*k, v.clone())))
    }

    fn vpc_type() -> Type {
        Type::object([
            ("id", Type::String),
            ("cidr_block", Type::String),
            ("enable_dns", Type::Bool),
            ("tags", Type::map(Type::String)),
            (
                "ingress",
                Type::list(Type::object([
                    ("port", Type::Number),
                    ("cidr_blocks", Type::set(Type::String)),
                    ("description", Type::String),
                ])),
            ),
            ("pair", Type::Tuple(vec![Type::String, Type::Number])),
            ("extra", Type::Dynamic),
        ])
    }

    fn vpc_value() -> Value {
        let rule = |port: i64, cidrs: &[&str]| {
            obj(&[
                ("port", Value::from(port)),
                ("cidr_blocks", Value::Set(cidrs.iter().map(|c| Value::from(*c)).collect())),
                ("description", Value::Null),
            ])
        };
        obj(&[
            ("id", Value::Unknown),
            ("cidr_block", Value::from("10.0.0.0/16")),
            ("enable_dns", Value::Bool(true)),
            ("tags", Value::Map([("Name".to_string(), Value::from("main")), ("Env".into(), Value::Unknown)].into())),
            (
                "ingress",
                Value::List(vec![rule(22, &["10.0.0.0/8"]), rule(443, &["0.0.0.0/0", "::/0"]), Value::Unknown]),
            ),
            ("pair", Value::Tuple(vec![Value::from("a"), Value::Null])),
            ("extra", Value::dynamic(Type::list(Type::Number), Value::List(vec![1i64.into(), Value::Unknown]))),
        ])
    }

    fn round_trip(value: &Value, ty: &Type) -> Value {
        let bytes = encode(value, ty).unwrap();
        decode(&bytes, ty).unwrap()
    }

    #[test]
    fn object_with_unknown_encodes_to_exact_bytes() {
        let ty = Type::object([("id", Type::String), ("cidr_block", Type::String)]);
        let value = obj(&[("id", Value::Unknown), ("cidr_block", "10.0.0.0/16".into())]);
        let mut expected = vec![0x82, 0xaa];
        expected.extend_from_slice(b"cidr_block");
        expected.push(0xab);
        expected.extend_from_slice(b"10.0.0.0/16");
        expected.extend_from_slice(&[0xa2, b'i', b'd', 0xd4, 0x00, 0x00]);
        assert_eq!(encode(&value, &ty).unwrap(), expected);
        assert_eq!(decode(&expected, &ty).unwrap(), value);
    }

    #[test]
    fn hand_written_msgpack_decodes_in_any_key_order() {
        let ty = Type::object([("id", Type::String), ("cidr_block", Type::String), ("n", Type::Number)]);
        let mut bytes = vec![0x82, 0xa2, b'i', b'd', 0xd4, 0x00, 0x00, 0xaa];
        bytes.extend_from_slice(b"cidr_block");
        bytes.push(0xc0);
        let v = decode(&bytes, &ty).unwrap();
        assert!(v.attr("id").is_unknown());
        assert!(v.attr("cidr_block").is_null());
        assert!(v.attr("n").is_null(), "an absent attribute decodes as null");
        assert_eq!(v.attrs().unwrap().len(), 3);
    }

    #[test]
    fn nested_object_with_unknowns_and_nulls_round_trips() {
        let v = vpc_value();
        assert_eq!(round_trip(&v, &vpc_type()), v);
        assert!(!v.is_wholly_known());
    }

    #[test]
    fn every_type_round_trips() {
        let cases: Vec<(Type, Value)> = vec![
            (Type::String, "héllo".into()),
            (Type::String, "x".repeat(70_000).into()),
            (Type::String, Value::Null),
            (Type::String, Value::Unknown),
            (Type::Number, 42i64.into()),
            (Type::Number, Value::Number(Number::parse("-1.25").unwrap())),
            (Type::Bool, false.into()),
            (Type::list(Type::String), Value::List(vec!["a".into(), Value::Null, Value::Unknown])),
            (Type::list(Type::Number), Value::List((0..70_000i64).map(Value::from).collect())),
            (Type::set(Type::Number), Value::Set(vec![1i64.into(), 2i64.into()])),
            (Type::map(Type::Bool), Value::Map([("k".to_string(), true.into())].into())),
            (Type::map(Type::String), Value::Map(BTreeMap::new())),
            (Type::Tuple(vec![Type::String, Type::Bool]), Value::Tuple(vec!["a".into(), true.into()])),
            (Type::Tuple(vec![]), Value::Tuple(vec![])),
            (Type::object([("a", Type::object([("b", Type::list(Type::String))]))]), {
                obj(&[("a", obj(&[("b", Value::List(vec!["x".into()]))]))])
            }),
            (Type::Dynamic, Value::dynamic(Type::String, "s".into())),
            (
                Type::Dynamic,
                Value::dynamic(Type::object([("a", Type::Dynamic)]), {
                    obj(&[("a", Value::dynamic(Type::Bool, true.into()))])
                }),
            ),
            (Type::Dynamic, Value::Unknown),
            (Type::Dynamic, Value::Null),
        ];
        for (ty, v) in cases {
            assert_eq!(round_trip(&v, &ty), v, "{ty}");
        }
    }

    #[test]
    fn numbers_decode_from_int_float_and_string_forms() {
        let n = |bytes: &[u8]| decode(bytes, &Type::Number).unwrap().as_number().unwrap().to_string();
        assert_eq!(n(&[0x2a]), "42");
        assert_eq!(n(&[0xff]), "-1");
        assert_eq!(n(&[0xd0, 0x80]), "-128");
        assert_eq!(n(&[0xcd, 0x01, 0x00]), "256");
        assert_eq!(n(&[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), "18446744073709551615");
        assert_eq!(n(&[0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0]), "-9223372036854775808");
        assert_eq!(n(&[0xcb, 0x3f, 0xe0, 0, 0, 0, 0, 0, 0]), "0.5");
        assert_eq!(n(&[0xca, 0x3f, 0xc0, 0, 0]), "1.5");
        let mut big = vec![0xbe];
        big.extend_from_slice(b"123456789012345678901234567890");
        assert_eq!(n(&big), "1.2345678901234567890123456789e+29");
        assert_eq!(n(&[0xa4, b'1', b'e', b'-', b'3']), "0.001");
    }

    #[test]
    fn numbers_encode_as_int_float_or_string() {
        let e = |s: &str| encode(&Value::Number(Number::parse(s).unwrap()), &Type::Number).unwrap();
        assert_eq!(e("42"), [0x2a]);
        assert_eq!(e("-1"), [0xff]);
        assert_eq!(e("200"), [0xcc, 200]);
        assert_eq!(e("-200"), [0xd1, 0xff, 0x38]);
        assert_eq!(e("70000"), [0xce, 0x00, 0x01, 0x11, 0x70]);
        assert_eq!(e("5000000000"), [0xcf, 0, 0, 0, 0x01, 0x2a, 0x05, 0xf2, 0x00]);
        assert_eq!(e("-9223372036854775808"), [0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(e("0.5"), [0xcb, 0x3f, 0xe0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(e("1e20"), [0xcb, 0x44, 0x15, 0xaf, 0x1d, 0x78, 0xb5, 0x8c, 0x40]);
        let mut tenth = vec![0xa3];
        tenth.extend_from_slice(b"0.1");
        assert_eq!(e("0.1"), tenth, "0.1 has no exact f64, so it travels as text");
        let big = e("123456789012345678901234567890");
        assert_eq!(big[..2], [0xd9, 34], "str8 of 34 bytes");
        assert_eq!(&big[2..], b"1.2345678901234567890123456789e+29");
        assert_eq!(e("inf"), [0xcb, 0x7f, 0xf0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn float_from_terraform_is_answered_with_the_same_float() {
        let bytes = [0xcb, 0x3f, 0xb9, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9a]; // 0.1 as f64
        let v = decode(&bytes, &Type::Number).unwrap();
        assert_eq!(encode(&v, &Type::Number).unwrap(), bytes);
    }

    #[test]
    fn refined_unknown_ext_12_decodes_as_unknown() {
        // ext8, 3 bytes, type 12: {1: false} ("definitely not null")
        let v = decode(&[0xc7, 0x03, 0x0c, 0x81, 0x01, 0xc2], &Type::String).unwrap();
        assert!(v.is_unknown());
        // fixext2 type 12 inside a list, and an unknown with some other extension type.
        let v = decode(&[0x92, 0xd5, 0x0c, 0x81, 0x05, 0xd4, 0x07, 0x00], &Type::list(Type::Number)).unwrap();
        assert_eq!(v, Value::List(vec![Value::Unknown, Value::Unknown]));
        assert_eq!(encode(&Value::Unknown, &Type::String).unwrap(), UNKNOWN);
    }

    #[test]
    fn set_equality_ignores_order() {
        let ty = Type::set(Type::String);
        let a = decode(&[0x92, 0xa1, b'a', 0xa1, b'b'], &ty).unwrap();
        let b = decode(&[0x92, 0xa1, b'b', 0xa1, b'a'], &ty).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn dynamic_decodes_type_as_bin_or_str() {
        let mut bin = vec![0x92, 0xc4, 0x08];
        bin.extend_from_slice(b"\"string\"");
        bin.extend_from_slice(&[0xa2, b'h', b'i']);
        let v = decode(&bin, &Type::Dynamic).unwrap();
        assert_eq!(v, Value::dynamic(Type::String, "hi".into()));
        assert_eq!(encode(&v, &Type::Dynamic).unwrap(), bin);
        let mut text = vec![0x92, 0xa8];
        text.extend_from_slice(b"\"string\"");
        text.extend_from_slice(&[0xa2, b'h', b'i']);
        assert_eq!(decode(&text, &Type::Dynamic).unwrap(), v);
        assert!(decode(&UNKNOWN, &Type::Dynamic).unwrap().is_unknown());
    }

    #[test]
    fn unwrapped_value_in_dynamic_slot_uses_its_implied_type() {
        let v = Value::List(vec!["a".into()]);
        let bytes = encode(&v, &Type::Dynamic).unwrap();
        assert_eq!(decode(&bytes, &Type::Dynamic).unwrap(), Value::dynamic(Type::list(Type::String), v));
        let mixed = Value::List(vec!["a".into(), 1i64.into()]);
        let err = encode(&mixed, &Type::Dynamic).unwrap_err();
        assert_eq!(err.code(), "TDM-CTY-014");
    }

    #[test]
    fn wrong_type_reports_the_attribute_path() {
        let ty = vpc_type();
        let mut v = vpc_value();
        let attrs = v.attrs_mut().unwrap();
        attrs.insert("tags".into(), Value::Map([("Name".to_string(), Value::from(5i64))].into()));
        // Encoding checks the value against the type too.
        let err = encode(&v, &ty).unwrap_err();
        assert_eq!(err.path().unwrap().to_string(), ".tags[\"Name\"]");

        // A non-numeric string where a number belongs, hand-written: {"ingress": [nil, nil, {"port": "abc"}]}
        let mut bytes = vec![0x81, 0xa7];
        bytes.extend_from_slice(b"ingress");
        bytes.extend_from_slice(&[0x93, 0xc0, 0xc0, 0x81, 0xa4]);
        bytes.extend_from_slice(b"port");
        bytes.extend_from_slice(&[0xa3, b'a', b'b', b'c']);
        let err = decode(&bytes, &ty).unwrap_err();
        assert_eq!(err.code(), "TDM-CTY-007");
        assert_eq!(err.path().unwrap().to_string(), ".ingress[2].port");
        assert_eq!(err.to_string(), "at .ingress[2].port: invalid number \"abc\"");

        // A number where a string belongs.
        let mut bytes = vec![0x81, 0xa4];
        bytes.extend_from_slice(b"tags");
        bytes.extend_from_slice(&[0x81, 0xa4]);
        bytes.extend_from_slice(b"Name");
        bytes.push(0x05);
        let err = decode(&bytes, &ty).unwrap_err();
        assert_eq!(err.code(), "TDM-CTY-002");
        assert_eq!(err.to_string(), "at .tags[\"Name\"]: expected string, found integer");
    }

    #[test]
    fn unsupported_and_duplicate_attributes_are_errors() {
        let ty = Type::object([("id", Type::String)]);
        let err = decode(&[0x81, 0xa1, b'x', 0xc0], &ty).unwrap_err();
        assert_eq!(err, CodecError::UnsupportedAttribute { path: Path::root(), name: "x".into() });
        let err = decode(&[0x82, 0xa2, b'i', b'd', 0xc0, 0xa2, b'i', b'd', 0xc0], &ty).unwrap_err();
        assert_eq!(err.code(), "TDM-CTY-004");
        let err = encode(&obj(&[("x", Value::Null)]), &ty).unwrap_err();
        assert_eq!(err.code(), "TDM-CTY-003");
        let err = decode(&[0x81, 0x01, 0xc0], &Type::map(Type::String)).unwrap_err();
        assert_eq!(err.code(), "TDM-CTY-002", "map keys must be strings");
    }

    #[test]
    fn every_truncation_of_a_valid_value_is_an_error() {
        let bytes = encode(&vpc_value(), &vpc_type()).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], &vpc_type()).is_err(), "prefix of {cut} bytes");
        }
        let mut extra = bytes.clone();
        extra.push(0xc0);
        assert_eq!(decode(&extra, &vpc_type()).unwrap_err(), CodecError::TrailingBytes { count: 1 });
    }

    #[test]
    fn huge_declared_lengths_fail_before_allocating() {
        let ty = Type::list(Type::String);
        let err = decode(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0], &ty).unwrap_err();
        assert_eq!(err.code(), "TDM-CTY-013");
        let err = decode(&[0xdf, 0xff, 0xff, 0xff, 0xff], &Type::map(Type::String)).unwrap_err();
        assert_eq!(err.code(), "TDM-CTY-013");
        let err = decode(&[0xdb, 0xff, 0xff, 0xff, 0xff, b'a'], &Type::String).unwrap_err();
        assert_eq!(err.code(), "TDM-CTY-013");
        let err = decode(&[0xc9, 0xff, 0xff, 0xff, 0xff, 0x00], &Type::String).unwrap_err();
        assert_eq!(err.code(), "TDM-CTY-013");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut ty = Type::String;
        for _ in 0..200 {
            ty = Type::list(ty);
        }
        let mut bytes = vec![0x91; 200];
        bytes.push(0xa0);
        assert_eq!(decode(&bytes, &ty).unwrap_err().code(), "TDM-CTY-005");

        // Dynamic inside dynamic inside ...: the type comes from the input itself.
        let mut bytes = Vec::new();
        for _ in 0..200 {
            bytes.extend_from_slice(&[0x92, 0xa9]);
            bytes.extend_from_slice(b"\"dynamic\"");
        }
        bytes.push(0xc0);
        assert_eq!(decode(&bytes, &Type::Dynamic).unwrap_err().code(), "TDM-CTY-005");

        // A type description nested too deeply.
        let deep_type = format!("{}\"string\"{}", "[\"list\",".repeat(100), "]".repeat(100));
        let mut bytes = vec![0x92, 0xc5];
        bytes.extend_from_slice(&u16::try_from(deep_type.len()).unwrap().to_be_bytes());
        bytes.extend_from_slice(deep_type.as_bytes());
        bytes.push(0xc0);
        assert_eq!(decode(&bytes, &Type::Dynamic).unwrap_err().code(), "TDM-CTY-009");
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let cases: &[(&[u8], Type, &str)] = &[
            (&[], Type::String, "TDM-CTY-001"),
            (&[0xc1], Type::String, "TDM-CTY-002"),
            (&[0xa2, 0xff, 0xfe], Type::String, "TDM-CTY-008"),
            (&[0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0], Type::Number, "TDM-CTY-007"),
            (&[0xc3], Type::Number, "TDM-CTY-002"),
            (&[0x2a], Type::Bool, "TDM-CTY-002"),
            (&[0x81, 0xa0, 0xc0], Type::list(Type::String), "TDM-CTY-002"),
            (&[0x91, 0xc0], Type::Tuple(vec![]), "TDM-CTY-006"),
            (&[0x93, 0xc4, 0x00, 0xc0, 0xc0], Type::Dynamic, "TDM-CTY-002"),
            (&[0x92, 0xc4, 0x01, b'[', 0xc0], Type::Dynamic, "TDM-CTY-009"),
            (&[0x92, 0x01, 0xc0], Type::Dynamic, "TDM-CTY-002"),
        ];
        for (bytes, ty, code) in cases {
            assert_eq!(decode(bytes, ty).unwrap_err().code(), *code, "{bytes:02x?} as {ty}");
        }
    }

    #[test]
    fn pseudo_random_bytes_never_panic() {
        let types = [vpc_type(), Type::Dynamic, Type::list(Type::Dynamic), Type::map(Type::Number)];
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seed = encode(&vpc_value(), &vpc_type()).unwrap();
        for round in 0..20_000 {
            let mut bytes = seed.clone();
            for _ in 0..(next() % 8) {
                let i = usize::try_from(next() % u64::try_from(bytes.len()).unwrap()).unwrap();
                bytes[i] = next().to_le_bytes()[0];
            }
            if round % 3 == 0 {
                bytes.truncate(usize::try_from(next() % 64).unwrap());
            }
            for ty in &types {
                if let Ok(v) = decode(&bytes, ty) {
                    let again = encode(&v, ty).unwrap();
                    assert_eq!(decode(&again, ty).unwrap(), v);
                }
            }
        }
    }
}
