//! Terraform's value model (cty): types, values, numbers, paths into values, and the codec error
//! shared by `msgpack` (DynamicValue) and `json` (schemas, raw state).
//!
//! Values come from outside (Terraform), so everything here is total: no panics, and the codecs bound
//! nesting by [`MAX_DEPTH`].

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

/// Deepest nesting of containers (list, set, map, object, tuple, dynamic) the codecs accept.
/// Real schemas nest a handful of levels; this bounds recursion on untrusted input.
pub const MAX_DEPTH: usize = 64;

/// A Terraform type constraint, as a schema declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Type {
    String,
    Number,
    Bool,
    List(Box<Type>),
    Set(Box<Type>),
    Map(Box<Type>),
    Object(BTreeMap<String, Type>),
    Tuple(Vec<Type>),
    /// Decided at run time: values carry their concrete type ([`Value::Dynamic`]).
    Dynamic,
}

impl Type {
    pub fn list(element: Type) -> Type {
        Type::List(Box::new(element))
    }

    pub fn set(element: Type) -> Type {
        Type::Set(Box::new(element))
    }

    pub fn map(element: Type) -> Type {
        Type::Map(Box::new(element))
    }

    pub fn object<K: Into<String>>(attrs: impl IntoIterator<Item = (K, Type)>) -> Type {
        Type::Object(attrs.into_iter().map(|(k, t)| (k.into(), t)).collect())
    }

    /// The kind's name as Terraform spells it: `string`, `list`, `object`, `dynamic`, ...
    pub fn kind_name(&self) -> &'static str {
        match self {
            Type::String => "string",
            Type::Number => "number",
            Type::Bool => "bool",
            Type::List(_) => "list",
            Type::Set(_) => "set",
            Type::Map(_) => "map",
            Type::Object(_) => "object",
            Type::Tuple(_) => "tuple",
            Type::Dynamic => "dynamic",
        }
    }

    /// How many container levels the type nests (a primitive is 0).
    pub fn depth(&self) -> usize {
        match self {
            Type::String | Type::Number | Type::Bool | Type::Dynamic => 0,
            Type::List(t) | Type::Set(t) | Type::Map(t) => 1 + t.depth(),
            Type::Object(attrs) => 1 + attrs.values().map(Type::depth).max().unwrap_or(0),
            Type::Tuple(elems) => 1 + elems.iter().map(Type::depth).max().unwrap_or(0),
        }
    }
}

/// Terraform's type-expression syntax: `list(string)`, `object({id=string})`.
impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::String | Type::Number | Type::Bool | Type::Dynamic => f.write_str(self.kind_name()),
            Type::List(t) => write!(f, "list({t})"),
            Type::Set(t) => write!(f, "set({t})"),
            Type::Map(t) => write!(f, "map({t})"),
            Type::Object(attrs) => {
                f.write_str("object({")?;
                for (i, (name, t)) in attrs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{name}={t}")?;
                }
                f.write_str("})")
            }
            Type::Tuple(elems) => {
                f.write_str("tuple([")?;
                for (i, t) in elems.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{t}")?;
                }
                f.write_str("])")
            }
        }
    }
}

/// An arbitrary-precision decimal number (or an infinity, which Terraform can produce).
///
/// Kept in a canonical form, so equality is numeric: `1`, `1.0` and `1e0` are equal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Number(Repr);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Repr {
    /// `(-1)^negative × digits × 10^exp`; `digits` has no leading or trailing zeros, and is empty for zero
    /// (zero is never negative and has `exp` 0).
    Finite {
        negative: bool,
        digits: String,
        exp: i64,
    },
    Infinity {
        negative: bool,
    },
}

/// Exponents beyond this are refused when parsing, which keeps all exponent arithmetic far from overflow.
const MAX_EXPONENT: i64 = 1_000_000_000;

impl Number {
    pub fn zero() -> Number {
        Number(Repr::Finite { negative: false, digits: String::new(), exp: 0 })
    }

    pub fn from_i64(i: i64) -> Number {
        Number::from_int_parts(i < 0, i.unsigned_abs())
    }

    pub fn from_u64(u: u64) -> Number {
        Number::from_int_parts(false, u)
    }

    fn from_int_parts(negative: bool, magnitude: u64) -> Number {
        Number::canonical(negative, magnitude.to_string(), 0)
    }

    /// The shortest decimal that reads back as `f` (`0.1` gives `0.1`); `None` for NaN.
    /// Use this for numbers an API hands over as floats.
    pub fn from_f64(f: f64) -> Option<Number> {
        if f.is_nan() {
            return None;
        }
        if f.is_infinite() {
            return Some(Number(Repr::Infinity { negative: f < 0.0 }));
        }
        Number::parse(&format!("{f:e}"))
    }

    /// The exact value of `f` (`0.1` gives `0.1000000000000000055511151231257827021181583404541015625`);
    /// `None` for NaN. Decoding uses this, so a float Terraform sends is answered with the same float.
    pub fn from_f64_exact(f: f64) -> Option<Number> {
        if f.is_nan() {
            return None;
        }
        if f.is_infinite() {
            return Some(Number(Repr::Infinity { negative: f < 0.0 }));
        }
        // Every finite f64 has a terminating decimal expansion of at most 767 significant digits;
        // Rust's exact formatting mode prints it (padding with zeros, which `parse` strips).
        Number::parse(&format!("{f:.800e}"))
    }

    /// Parses decimal text: `-12`, `3.25`, `.5`, `1e-7`, `+4E+2`, `inf`, `-Infinity`.
    /// `None` for anything else (including NaN and absurd exponents beyond ±10^9).
    pub fn parse(text: &str) -> Option<Number> {
        let bytes = text.as_bytes();
        let (negative, rest) = match bytes.first() {
            Some(b'-') => (true, &bytes[1..]),
            Some(b'+') => (false, &bytes[1..]),
            _ => (false, bytes),
        };
        if rest.eq_ignore_ascii_case(b"inf") || rest.eq_ignore_ascii_case(b"infinity") {
            return Some(Number(Repr::Infinity { negative }));
        }
        let mut i = 0;
        let mut digits = String::new();
        let mut int_digits = 0usize;
        while let Some(&b) = rest.get(i) {
            if !b.is_ascii_digit() {
                break;
            }
            digits.push(char::from(b));
            int_digits += 1;
            i += 1;
        }
        let mut frac_digits = 0usize;
        if rest.get(i) == Some(&b'.') {
            i += 1;
            while let Some(&b) = rest.get(i) {
                if !b.is_ascii_digit() {
                    break;
                }
                digits.push(char::from(b));
                frac_digits += 1;
                i += 1;
            }
        }
        if int_digits + frac_digits == 0 {
            return None;
        }
        let mut exp: i64 = 0;
        if matches!(rest.get(i), Some(b'e' | b'E')) {
            i += 1;
            let exp_negative = match rest.get(i) {
                Some(b'-') => {
                    i += 1;
                    true
                }
                Some(b'+') => {
                    i += 1;
                    false
                }
                _ => false,
            };
            let start = i;
            while let Some(&b) = rest.get(i) {
                if !b.is_ascii_digit() {
                    break;
                }
                exp = exp.saturating_mul(10).saturating_add(i64::from(b - b'0'));
                i += 1;
            }
            if i == start || exp > MAX_EXPONENT {
                return None;
            }
            if exp_negative {
                exp = -exp;
            }
        }
        if i != rest.len() {
            return None;
        }
        // The text's length bounds frac_digits, far below i64::MAX.
        let frac = i64::try_from(frac_digits).ok()?;
        Some(Number::canonical(negative, digits, exp - frac))
    }

    /// Strips leading and trailing zeros; `digits` are ASCII digits.
    fn canonical(negative: bool, digits: String, exp: i64) -> Number {
        let trimmed = digits.trim_start_matches('0');
        let without_trailing = trimmed.trim_end_matches('0');
        if without_trailing.is_empty() {
            return Number::zero();
        }
        let trailing = trimmed.len() - without_trailing.len();
        let exp = exp.saturating_add(i64::try_from(trailing).unwrap_or(i64::MAX));
        Number(Repr::Finite { negative, digits: without_trailing.to_string(), exp })
    }

    pub fn is_infinite(&self) -> bool {
        matches!(self.0, Repr::Infinity { .. })
    }

    pub fn is_integer(&self) -> bool {
        matches!(self.0, Repr::Finite { exp, .. } if exp >= 0)
    }

    /// The value as i64 when it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        let (negative, magnitude) = self.integer_parts()?;
        if negative {
            if magnitude == i64::MIN.unsigned_abs() {
                Some(i64::MIN)
            } else {
                i64::try_from(magnitude).ok().map(|m| -m)
            }
        } else {
            i64::try_from(magnitude).ok()
        }
    }

    /// The value as u64 when it is a non-negative integer that fits.
    pub fn as_u64(&self) -> Option<u64> {
        match self.integer_parts()? {
            (false, magnitude) => Some(magnitude),
            (true, _) => None,
        }
    }

    fn integer_parts(&self) -> Option<(bool, u64)> {
        let Repr::Finite { negative, digits, exp } = &self.0 else {
            return None;
        };
        if *exp < 0 {
            return None;
        }
        let exp = usize::try_from(*exp).ok()?;
        if digits.len().checked_add(exp)? > 20 {
            return None;
        }
        let mut magnitude: u64 = 0;
        for b in digits.bytes() {
            magnitude = magnitude.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        }
        for _ in 0..exp {
            magnitude = magnitude.checked_mul(10)?;
        }
        Some((*negative, magnitude))
    }

    /// The nearest f64 (correctly rounded; huge values give ±infinity).
    pub fn as_f64(&self) -> f64 {
        match &self.0 {
            Repr::Infinity { negative: false } => f64::INFINITY,
            Repr::Infinity { negative: true } => f64::NEG_INFINITY,
            Repr::Finite { digits, .. } if digits.is_empty() => 0.0,
            Repr::Finite { negative, digits, exp } => {
                let sign = if *negative { "-" } else { "" };
                format!("{sign}{digits}e{exp}").parse::<f64>().unwrap_or(f64::NAN)
            }
        }
    }

    /// The f64 with exactly this value, if there is one (0.5 yes, 0.1 no, 2^70 yes).
    pub fn as_exact_f64(&self) -> Option<f64> {
        let f = self.as_f64();
        if self.is_infinite() {
            return Some(f);
        }
        if !f.is_finite() {
            return None;
        }
        match Number::from_f64_exact(f) {
            Some(back) if back == *self => Some(f),
            _ => None,
        }
    }

    fn sign_rank(&self) -> i8 {
        match &self.0 {
            Repr::Infinity { negative: true } => -2,
            Repr::Finite { negative: true, .. } => -1,
            Repr::Finite { digits, .. } if digits.is_empty() => 0,
            Repr::Finite { .. } => 1,
            Repr::Infinity { negative: false } => 2,
        }
    }
}

impl PartialOrd for Number {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Number {
    fn cmp(&self, other: &Self) -> Ordering {
        let by_sign = self.sign_rank().cmp(&other.sign_rank());
        if by_sign != Ordering::Equal {
            return by_sign;
        }
        let (Repr::Finite { negative, digits: da, exp: ea }, Repr::Finite { digits: db, exp: eb, .. }) =
            (&self.0, &other.0)
        else {
            return Ordering::Equal; // same infinity
        };
        if da.is_empty() {
            return Ordering::Equal; // both zero
        }
        // Compare magnitudes: first by the position of the leading digit, then digit by digit.
        let len_a = i64::try_from(da.len()).unwrap_or(i64::MAX);
        let len_b = i64::try_from(db.len()).unwrap_or(i64::MAX);
        let magnitude =
            (ea.saturating_add(len_a)).cmp(&eb.saturating_add(len_b)).then_with(|| da.as_bytes().cmp(db.as_bytes()));
        if *negative { magnitude.reverse() } else { magnitude }
    }
}

/// Plain decimal for ordinary magnitudes (`42`, `-0.5`), scientific otherwise (`1.5e+300`);
/// always valid JSON number text, except for infinities (`+Inf`, `-Inf`).
impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (negative, digits, exp) = match &self.0 {
            Repr::Infinity { negative } => {
                return f.write_str(if *negative { "-Inf" } else { "+Inf" });
            }
            Repr::Finite { digits, .. } if digits.is_empty() => return f.write_str("0"),
            Repr::Finite { negative, digits, exp } => (*negative, digits.as_str(), *exp),
        };
        if negative {
            f.write_str("-")?;
        }
        let len = i64::try_from(digits.len()).unwrap_or(i64::MAX);
        if exp >= 0 && len.saturating_add(exp) <= 21 {
            f.write_str(digits)?;
            for _ in 0..exp {
                f.write_str("0")?;
            }
            Ok(())
        } else if exp < 0 && exp >= -len {
            let point = usize::try_from(len + exp).unwrap_or(0);
            let (int_part, frac_part) = digits.split_at(point.min(digits.len()));
            let int_part = if int_part.is_empty() { "0" } else { int_part };
            write!(f, "{int_part}.{frac_part}")
        } else if exp < 0 && exp >= -len - 6 {
            f.write_str("0.")?;
            for _ in 0..(-exp - len) {
                f.write_str("0")?;
            }
            f.write_str(digits)
        } else {
            // d.ddd × 10^(exp + len - 1)
            let (first, rest) = digits.split_at(1);
            let sci_exp = exp.saturating_add(len - 1);
            let sign = if sci_exp < 0 { '-' } else { '+' };
            if rest.is_empty() {
                write!(f, "{first}e{sign}{}", sci_exp.unsigned_abs())
            } else {
                write!(f, "{first}.{rest}e{sign}{}", sci_exp.unsigned_abs())
            }
        }
    }
}

impl From<i64> for Number {
    fn from(i: i64) -> Number {
        Number::from_i64(i)
    }
}

/// One step of a path into a value. Indexes are element positions (for sets: wire order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Attr(String),
    Key(String),
    Index(i64),
}

/// Where inside a value something went wrong: `.tags["Name"]`, `.ingress[2].port`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Path(pub Vec<Step>);

impl Path {
    pub fn root() -> Path {
        Path(Vec::new())
    }

    pub fn steps(&self) -> &[Step] {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn push_attr(&mut self, name: &str) {
        self.0.push(Step::Attr(name.to_string()));
    }

    pub fn push_key(&mut self, key: &str) {
        self.0.push(Step::Key(key.to_string()));
    }

    pub fn push_index(&mut self, index: usize) {
        self.0.push(Step::Index(i64::try_from(index).unwrap_or(i64::MAX)));
    }

    pub fn pop(&mut self) {
        self.0.pop();
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(root)");
        }
        for step in &self.0 {
            match step {
                Step::Attr(name) => write!(f, ".{name}")?,
                Step::Key(key) => write!(f, "[{key:?}]")?,
                Step::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

/// Why a value could not be decoded or encoded. Every variant has a stable [`CodecError::code`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("at {path}: the value ends unexpectedly")]
    Truncated { path: Path },
    #[error("at {path}: expected {expected}, found {found}")]
    TypeMismatch { path: Path, expected: String, found: String },
    #[error("at {path}: unsupported attribute {name:?}")]
    UnsupportedAttribute { path: Path, name: String },
    #[error("at {path}: duplicate key {key:?}")]
    DuplicateKey { path: Path, key: String },
    #[error("at {path}: nested deeper than {limit} levels")]
    TooDeep { path: Path, limit: usize },
    #[error("at {path}: tuple needs {expected} elements, found {found}")]
    TupleLength { path: Path, expected: usize, found: u64 },
    #[error("at {path}: invalid number {text:?}")]
    InvalidNumber { path: Path, text: String },
    #[error("at {path}: text is not valid UTF-8")]
    InvalidUtf8 { path: Path },
    #[error("at {path}: invalid type description: {reason}")]
    InvalidType { path: Path, reason: String },
    #[error("{count} unexpected bytes after the value")]
    TrailingBytes { count: usize },
    #[error("invalid JSON at byte {offset}: {reason}")]
    Json { offset: usize, reason: String },
    #[error("at {path}: the value is unknown, which JSON cannot represent")]
    UnknownInJson { path: Path },
    #[error("at {path}: declared length {declared} exceeds the {remaining} bytes left")]
    LengthExceedsInput { path: Path, declared: u64, remaining: usize },
    #[error("at {path}: a value of dynamic type needs its concrete type (wrap it in Value::Dynamic)")]
    DynamicWithoutType { path: Path },
    #[error("at {path}: the number {text} cannot be written as JSON")]
    NumberNotJson { path: Path, text: String },
    #[error("at {path}: {len} items or bytes are more than msgpack can frame")]
    TooLong { path: Path, len: usize },
}

impl CodecError {
    /// Stable code for operators and docs/troubleshooting.md; never renumbered.
    pub fn code(&self) -> &'static str {
        match self {
            CodecError::Truncated { .. } => "TDM-CTY-001",
            CodecError::TypeMismatch { .. } => "TDM-CTY-002",
            CodecError::UnsupportedAttribute { .. } => "TDM-CTY-003",
            CodecError::DuplicateKey { .. } => "TDM-CTY-004",
            CodecError::TooDeep { .. } => "TDM-CTY-005",
            CodecError::TupleLength { .. } => "TDM-CTY-006",
            CodecError::InvalidNumber { .. } => "TDM-CTY-007",
            CodecError::InvalidUtf8 { .. } => "TDM-CTY-008",
            CodecError::InvalidType { .. } => "TDM-CTY-009",
            CodecError::TrailingBytes { .. } => "TDM-CTY-010",
            CodecError::Json { .. } => "TDM-CTY-011",
            CodecError::UnknownInJson { .. } => "TDM-CTY-012",
            CodecError::LengthExceedsInput { .. } => "TDM-CTY-013",
            CodecError::DynamicWithoutType { .. } => "TDM-CTY-014",
            CodecError::NumberNotJson { .. } => "TDM-CTY-015",
            CodecError::TooLong { .. } => "TDM-CTY-016",
        }
    }

    /// The path inside the value where it failed, when the error has one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            CodecError::Truncated { path }
            | CodecError::TypeMismatch { path, .. }
            | CodecError::UnsupportedAttribute { path, .. }
            | CodecError::DuplicateKey { path, .. }
            | CodecError::TooDeep { path, .. }
            | CodecError::TupleLength { path, .. }
            | CodecError::InvalidNumber { path, .. }
            | CodecError::InvalidUtf8 { path }
            | CodecError::InvalidType { path, .. }
            | CodecError::UnknownInJson { path }
            | CodecError::LengthExceedsInput { path, .. }
            | CodecError::DynamicWithoutType { path }
            | CodecError::NumberNotJson { path, .. }
            | CodecError::TooLong { path, .. } => Some(path),
            CodecError::TrailingBytes { .. } | CodecError::Json { .. } => None,
        }
    }
}

/// Shortens text quoted in error messages (it may be megabytes of hostile input).
pub(crate) fn excerpt(text: &str) -> String {
    const LIMIT: usize = 64;
    match text.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

/// A Terraform value. Null and unknown are typeless here: the schema supplies the type.
#[derive(Clone, Debug)]
pub enum Value {
    Null,
    Unknown,
    Bool(bool),
    Number(Number),
    String(String),
    List(Vec<Value>),
    /// Elements in no particular order; equality ignores order.
    Set(Vec<Value>),
    Map(BTreeMap<String, Value>),
    Object(BTreeMap<String, Value>),
    Tuple(Vec<Value>),
    /// A value of a `dynamic` attribute carries its concrete type.
    Dynamic(Type, Box<Value>),
}

static NULL: Value = Value::Null;

impl Value {
    pub fn string(s: impl Into<String>) -> Value {
        Value::String(s.into())
    }

    pub fn number(n: impl Into<Number>) -> Value {
        Value::Number(n.into())
    }

    pub fn object<K: Into<String>>(attrs: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Object(attrs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// A `dynamic` value of the given concrete type.
    pub fn dynamic(ty: Type, value: Value) -> Value {
        Value::Dynamic(ty, Box::new(value))
    }

    /// The null of any type (typeless here; objects are `Null` too).
    pub fn null_of(_ty: &Type) -> Value {
        Value::Null
    }

    /// Looks through a `Dynamic` wrapper to the value inside.
    pub fn unwrap_dynamic(&self) -> &Value {
        let mut v = self;
        while let Value::Dynamic(_, inner) = v {
            v = inner;
        }
        v
    }

    pub fn is_null(&self) -> bool {
        matches!(self.unwrap_dynamic(), Value::Null)
    }

    pub fn is_unknown(&self) -> bool {
        matches!(self.unwrap_dynamic(), Value::Unknown)
    }

    /// True when no `Unknown` appears anywhere inside.
    pub fn is_wholly_known(&self) -> bool {
        match self {
            Value::Unknown => false,
            Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => true,
            Value::List(items) | Value::Set(items) | Value::Tuple(items) => items.iter().all(Value::is_wholly_known),
            Value::Map(entries) | Value::Object(entries) => entries.values().all(Value::is_wholly_known),
            Value::Dynamic(_, inner) => inner.is_wholly_known(),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self.unwrap_dynamic() {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self.unwrap_dynamic() {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_number(&self) -> Option<&Number> {
        match self.unwrap_dynamic() {
            Value::Number(n) => Some(n),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        self.as_number().and_then(Number::as_i64)
    }

    /// An object's attribute; `&Value::Null` when absent or when this is not an object.
    pub fn attr(&self, name: &str) -> &Value {
        match self.unwrap_dynamic() {
            Value::Object(attrs) => attrs.get(name).unwrap_or(&NULL),
            _ => &NULL,
        }
    }

    pub fn attrs(&self) -> Option<&BTreeMap<String, Value>> {
        match self.unwrap_dynamic() {
            Value::Object(attrs) => Some(attrs),
            _ => None,
        }
    }

    pub fn attrs_mut(&mut self) -> Option<&mut BTreeMap<String, Value>> {
        match self {
            Value::Object(attrs) => Some(attrs),
            Value::Dynamic(_, inner) => inner.attrs_mut(),
            _ => None,
        }
    }

    /// A map's entries, `None` for anything else.
    pub fn entries(&self) -> Option<&BTreeMap<String, Value>> {
        match self.unwrap_dynamic() {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// List, set or tuple elements; an empty slice for anything else (null and unknown included).
    pub fn elements(&self) -> &[Value] {
        match self.unwrap_dynamic() {
            Value::List(items) | Value::Set(items) | Value::Tuple(items) => items,
            _ => &[],
        }
    }

    /// The kind of value, for messages: `null`, `unknown`, `string`, `list`, ...
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Unknown => "unknown",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::List(_) => "list",
            Value::Set(_) => "set",
            Value::Map(_) => "map",
            Value::Object(_) => "object",
            Value::Tuple(_) => "tuple",
            Value::Dynamic(..) => "dynamic",
        }
    }

    /// The type this value evidently has, for encoding an unwrapped value into a `dynamic` slot:
    /// primitives, objects and tuples always; lists, sets and maps from their first element that has a type
    /// (an empty one is a collection of `dynamic`). `None` for null, unknown, or mixed element types.
    pub fn implied_type(&self) -> Option<Type> {
        self.implied_type_at(0)
    }

    fn implied_type_at(&self, depth: usize) -> Option<Type> {
        if depth > MAX_DEPTH {
            return None;
        }
        let element_type = |items: &mut dyn Iterator<Item = &Value>| -> Option<Type> {
            let mut found: Option<Type> = None;
            for item in items {
                if item.is_null() || item.is_unknown() {
                    continue;
                }
                let t = item.implied_type_at(depth + 1)?;
                match &found {
                    Some(prev) if *prev != t => return None,
                    Some(_) => {}
                    None => found = Some(t),
                }
            }
            Some(found.unwrap_or(Type::Dynamic))
        };
        match self {
            Value::Null | Value::Unknown => None,
            Value::Bool(_) => Some(Type::Bool),
            Value::Number(_) => Some(Type::Number),
            Value::String(_) => Some(Type::String),
            Value::List(items) => element_type(&mut items.iter()).map(Type::list),
            Value::Set(items) => element_type(&mut items.iter()).map(Type::set),
            Value::Map(entries) => element_type(&mut entries.values()).map(Type::map),
            Value::Object(attrs) => {
                let mut types = BTreeMap::new();
                for (name, v) in attrs {
                    types.insert(name.clone(), v.implied_type_at(depth + 1).unwrap_or(Type::Dynamic));
                }
                Some(Type::Object(types))
            }
            Value::Tuple(items) => {
                let types = items.iter().map(|v| v.implied_type_at(depth + 1).unwrap_or(Type::Dynamic));
                Some(Type::Tuple(types.collect()))
            }
            Value::Dynamic(ty, _) => Some(ty.clone()),
        }
    }
}

/// Structural equality, except that sets compare as sets (order-insensitive, as multisets), numbers
/// compare numerically, and a `Dynamic` wrapper around null or unknown equals the bare null or unknown.
impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Dynamic(ta, a), Value::Dynamic(tb, b)) => {
                (ta == tb && a == b) || (a.is_null() && b.is_null()) || (a.is_unknown() && b.is_unknown())
            }
            (Value::Dynamic(_, inner), bare @ (Value::Null | Value::Unknown))
            | (bare @ (Value::Null | Value::Unknown), Value::Dynamic(_, inner)) => **inner == *bare,
            (Value::Null, Value::Null) | (Value::Unknown, Value::Unknown) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Number(a), Value::Number(b)) => a == b,
            (Value::String(a), Value::String(b)) => a == b,
            (Value::List(a), Value::List(b)) | (Value::Tuple(a), Value::Tuple(b)) => a == b,
            (Value::Set(a), Value::Set(b)) => set_eq(a, b),
            (Value::Map(a), Value::Map(b)) | (Value::Object(a), Value::Object(b)) => a == b,
            _ => false,
        }
    }
}

/// Multiset equality; quadratic, which is fine for the sizes Terraform sets have.
fn set_eq(a: &[Value], b: &[Value]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    if a == b {
        return true;
    }
    let mut used = vec![false; b.len()];
    'outer: for x in a {
        for (j, y) in b.iter().enumerate() {
            if !used[j] && x == y {
                used[j] = true;
                continue 'outer;
            }
        }
        return false;
    }
    true
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::String(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::String(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Number(Number::from_i64(i))
    }
}

impl From<i32> for Value {
    fn from(i: i32) -> Value {
        Value::Number(Number::from_i64(i64::from(i)))
    }
}

impl From<Number> for Value {
    fn from(n: Number) -> Value {
        Value::Number(n)
    }
}

/// `None` becomes null.
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn num(s: &str) -> Number {
        Number::parse(s).unwrap()
    }

    #[test]
    fn numbers_compare_numerically_across_forms() {
        assert_eq!(num("1"), num("1.0"));
        assert_eq!(num("1"), num("1e0"));
        assert_eq!(num("100"), num("1e2"));
        assert_eq!(num("0.5"), num(".5"));
        assert_eq!(num("-0"), num("0"));
        assert_eq!(num("+4E+2"), Number::from_i64(400));
        assert_ne!(num("1"), num("1.0000000000000000000000001"));
        assert_eq!(Number::from_f64(0.5).unwrap(), num("0.5"));
    }

    #[test]
    fn number_parse_rejects_garbage() {
        for bad in ["", "-", ".", "e5", "1e", "1e+", "1.2.3", "0x10", "NaN", "1 ", " 1", "1e9999999999", "١"] {
            assert!(Number::parse(bad).is_none(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn number_integers_convert_when_they_fit() {
        assert_eq!(num("42").as_i64(), Some(42));
        assert_eq!(num("-9223372036854775808").as_i64(), Some(i64::MIN));
        assert_eq!(num("9223372036854775807").as_i64(), Some(i64::MAX));
        assert_eq!(num("9223372036854775808").as_i64(), None);
        assert_eq!(num("9223372036854775808").as_u64(), Some(1 << 63));
        assert_eq!(num("1.5").as_i64(), None);
        assert_eq!(num("1e30").as_i64(), None);
        assert_eq!(num("1e18").as_i64(), Some(1_000_000_000_000_000_000));
    }

    #[test]
    fn number_f64_conversions() {
        assert_eq!(num("0.1").as_f64(), 0.1);
        assert_eq!(num("1e400").as_f64(), f64::INFINITY);
        assert_eq!(num("0.5").as_exact_f64(), Some(0.5));
        assert_eq!(num("0.1").as_exact_f64(), None);
        assert_eq!(Number::from_f64(0.1).unwrap().to_string(), "0.1");
        assert_eq!(
            Number::from_f64_exact(0.1).unwrap().to_string(),
            "0.1000000000000000055511151231257827021181583404541015625"
        );
        assert_eq!(Number::from_f64_exact(0.1).unwrap().as_exact_f64(), Some(0.1));
        assert!(Number::from_f64(f64::NAN).is_none());
        assert!(Number::from_f64(f64::INFINITY).unwrap().is_infinite());
    }

    #[test]
    fn number_display_is_plain_or_scientific() {
        assert_eq!(num("42").to_string(), "42");
        assert_eq!(num("-1.50").to_string(), "-1.5");
        assert_eq!(num("0.001").to_string(), "0.001");
        assert_eq!(num("1e20").to_string(), "100000000000000000000");
        assert_eq!(num("1e21").to_string(), "1e+21");
        assert_eq!(num("1.5e-10").to_string(), "1.5e-10");
        assert_eq!(num("123456789012345678901234567890").to_string(), "1.2345678901234567890123456789e+29");
        assert_eq!(num("0").to_string(), "0");
        assert_eq!(num("-inf").to_string(), "-Inf");
        // Display output parses back to the same number.
        for s in ["3.25", "-0.000001", "1e-7", "7e100", "123.456e3"] {
            assert_eq!(num(&num(s).to_string()), num(s), "{s}");
        }
    }

    #[test]
    fn numbers_order_numerically() {
        let mut v = [num("10"), num("-inf"), num("2.5"), num("-3"), num("0"), num("1e3"), num("-0.5"), num("inf")];
        v.sort();
        let shown: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["-Inf", "-3", "-0.5", "0", "2.5", "10", "1000", "+Inf"]);
    }

    #[test]
    fn set_equality_ignores_order_but_counts_duplicates() {
        let a = Value::Set(vec!["a".into(), "b".into(), "c".into()]);
        let b = Value::Set(vec!["c".into(), "a".into(), "b".into()]);
        assert_eq!(a, b);
        let c = Value::Set(vec!["a".into(), "a".into(), "b".into()]);
        let d = Value::Set(vec!["a".into(), "b".into(), "b".into()]);
        assert_ne!(c, d);
        assert_ne!(Value::List(vec!["a".into(), "b".into()]), Value::List(vec!["b".into(), "a".into()]));
    }

    #[test]
    fn value_accessors_are_total() {
        let v = Value::object([("id", Value::from("vpc-1")), ("n", Value::from(3i64))]);
        assert_eq!(v.attr("id").as_str(), Some("vpc-1"));
        assert_eq!(v.attr("n").as_i64(), Some(3));
        assert!(v.attr("missing").is_null());
        assert!(Value::Null.attr("x").is_null());
        assert!(Value::from("s").elements().is_empty());
        assert!(v.is_wholly_known());
        let mut w = v.clone();
        w.attrs_mut().unwrap().insert("arn".into(), Value::Unknown);
        assert!(!w.is_wholly_known());
        assert!(Value::List(vec![Value::Unknown]).elements()[0].is_unknown());
    }

    #[test]
    fn dynamic_null_equals_bare_null() {
        assert_eq!(Value::dynamic(Type::String, Value::Null), Value::Null);
        assert_eq!(Value::dynamic(Type::String, Value::Unknown), Value::Unknown);
        assert_ne!(Value::dynamic(Type::String, "a".into()), Value::from("a"));
        assert_eq!(Value::dynamic(Type::String, "a".into()).as_str(), Some("a"));
    }

    #[test]
    fn implied_type_of_values() {
        let v = Value::object([("tags", Value::Map([("a".to_string(), Value::from("x"))].into())), ("n", 1i64.into())]);
        assert_eq!(v.implied_type(), Some(Type::object([("tags", Type::map(Type::String)), ("n", Type::Number)])));
        assert_eq!(Value::List(vec![]).implied_type(), Some(Type::list(Type::Dynamic)));
        assert_eq!(Value::List(vec!["a".into(), 1i64.into()]).implied_type(), None);
    }

    #[test]
    fn paths_render_like_terraform() {
        let mut p = Path::root();
        assert_eq!(p.to_string(), "(root)");
        p.push_attr("ingress");
        p.push_index(2);
        p.push_attr("port");
        assert_eq!(p.to_string(), ".ingress[2].port");
        let mut q = Path::root();
        q.push_attr("tags");
        q.push_key("Name");
        assert_eq!(q.to_string(), ".tags[\"Name\"]");
    }

    #[test]
    fn type_display_uses_type_expressions() {
        let t = Type::object([("a", Type::list(Type::String)), ("b", Type::Tuple(vec![Type::Bool, Type::Dynamic]))]);
        assert_eq!(t.to_string(), "object({a=list(string),b=tuple([bool,dynamic])})");
        assert_eq!(t.depth(), 2);
    }

    #[test]
    fn error_codes_are_stable() {
        let e = CodecError::TypeMismatch { path: Path::root(), expected: "string".into(), found: "integer".into() };
        assert_eq!(e.code(), "TDM-CTY-002");
        assert_eq!(e.to_string(), "at (root): expected string, found integer");
    }
}
