//! HCL text -> [`Config`].
//!
//! How positions are found: the text is parsed with `hcl::edit` (hcl-edit, re-exported by hcl-rs), which keeps
//! the byte span of every block, label, attribute key, value, list element and object key. Syntax errors
//! come with hcl-edit's own line and column. While reading the syntax tree into the typed model, the reader
//! records, for every [`ConfigPath`] it visits (a block, an attribute, a list element, a map key), the byte
//! offset where it starts. Semantic validation ([`super::validate`]) works on the typed model only and reports
//! a `ConfigPath`; the parser then looks that path up (or its nearest recorded ancestor) to get line and
//! column. So the provider, which builds a `Config` without any text, gets the same errors with paths only.
//!
//! Semantic validation runs only when the text was structurally sound (every block readable, every value of
//! the right type); otherwise the structural errors are reported alone, so that one typo does not cascade
//! into "unknown node" errors elsewhere.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hcl::edit::Span;
use hcl::edit::expr::{Expression, ObjectKey};
use hcl::edit::structure::{Attribute, Block, BlockLabel, Body};
use hcl::edit::template::{Element, Template};

use super::choice::Choice;
use super::duration::parse_duration;
use super::error::{ConfigError, ConfigErrors, ConfigPath, ErrorCode, Location};
use super::shape::did_you_mean;
use super::{Config, validate};

/// Parses and validates a cluster config; errors name `<input>` as the file.
pub fn parse(src: &str) -> Result<Config, ConfigErrors> {
    parse_named("<input>", src)
}

/// Parses and validates a cluster config read from `file` (the name is used in error lines only).
pub fn parse_named(file: &str, src: &str) -> Result<Config, ConfigErrors> {
    let body = match hcl::edit::parser::parse_body(src) {
        Ok(body) => body,
        Err(e) => {
            let mut error = ConfigError::new(ErrorCode::Syntax, ConfigPath::root(), format!("HCL: {}", e.message()));
            error.location = Some(Location { line: e.location().line(), column: e.location().column() });
            return Err(ConfigErrors::single(file, error));
        }
    };
    let mut cx = Cx::new(src);
    let config = Config::read(&mut cx, &body);
    let mut errors = std::mem::take(&mut cx.errors);
    if errors.is_empty()
        && let Some(mut config) = config
    {
        config.fill_implied();
        errors = validate::check(&config);
        if errors.is_empty() {
            return Ok(config);
        }
    }
    for error in &mut errors {
        error.location = cx.locate(&error.path);
    }
    // Source order; errors without a position (rare: implied objects) last, each group in discovery order.
    errors.sort_by_key(|e| e.location.map_or((usize::MAX, usize::MAX), |l| (l.line, l.column)));
    Err(ConfigErrors { file: file.to_string(), errors })
}

/// Reads, parses and validates the cluster config at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(src) => parse_named(&file, &src),
        Err(e) => Err(ConfigErrors::single(
            &file,
            ConfigError::new(ErrorCode::Io, ConfigPath::root(), format!("cannot read the config: {e}")),
        )),
    }
}

/// The reading context: the source, the errors so far, and where each visited path starts.
pub(crate) struct Cx<'s> {
    src: &'s str,
    pub(crate) errors: Vec<ConfigError>,
    starts: HashMap<ConfigPath, usize>,
}

impl<'s> Cx<'s> {
    pub(crate) fn new(src: &'s str) -> Cx<'s> {
        Cx { src, errors: Vec::new(), starts: HashMap::new() }
    }

    /// Records where `path` starts in the source.
    pub(crate) fn mark(&mut self, path: &ConfigPath, span: Option<Range<usize>>) {
        if let Some(span) = span {
            self.starts.entry(path.clone()).or_insert(span.start);
        }
    }

    pub(crate) fn error(&mut self, code: ErrorCode, path: &ConfigPath, message: impl Into<String>) {
        self.errors.push(ConfigError::new(code, path.clone(), message));
    }

    pub(crate) fn push(&mut self, error: ConfigError) {
        self.errors.push(error);
    }

    /// The position of `path`, or of its nearest recorded ancestor.
    fn locate(&self, path: &ConfigPath) -> Option<Location> {
        let mut current = Some(path.clone());
        while let Some(p) = current {
            if let Some(offset) = self.starts.get(&p) {
                return Some(Location::of_offset(self.src, *offset));
            }
            current = p.parent();
        }
        None
    }
}

/// An attribute's value as read: absent, present but invalid (already reported), or valid.
pub(crate) enum Got<T> {
    Absent,
    Invalid,
    Value(T),
}

/// Reads one block body: typed getters that record positions and report type errors, and `finish` to report
/// every attribute or block nobody asked for.
pub(crate) struct Reader<'b> {
    pub(crate) path: ConfigPath,
    attrs: Vec<(&'b Attribute, bool)>,
    blocks: Vec<(&'b Block, bool)>,
    known_attrs: Vec<&'static str>,
    known_blocks: Vec<&'static str>,
}

impl<'b> Reader<'b> {
    pub(crate) fn new(body: &'b Body, path: ConfigPath) -> Reader<'b> {
        Reader {
            path,
            attrs: body.attributes().map(|a| (a, false)).collect(),
            blocks: body.blocks().map(|b| (b, false)).collect(),
            known_attrs: Vec::new(),
            known_blocks: Vec::new(),
        }
    }

    pub(crate) fn get<T>(
        &mut self,
        cx: &mut Cx,
        key: &'static str,
        conv: impl FnOnce(&mut Cx, &ConfigPath, &Expression) -> Option<T>,
    ) -> Got<T> {
        self.known_attrs.push(key);
        let Some((attr, taken)) = self.attrs.iter_mut().find(|(a, _)| a.key.as_str() == key) else {
            return Got::Absent;
        };
        *taken = true;
        let path = self.path.attr(key);
        cx.mark(&path, attr.value.span());
        match conv(cx, &path, &attr.value) {
            Some(v) => Got::Value(v),
            None => Got::Invalid,
        }
    }

    /// A required attribute: absent is an error at the block.
    pub(crate) fn req<T>(
        &mut self,
        cx: &mut Cx,
        key: &'static str,
        conv: impl FnOnce(&mut Cx, &ConfigPath, &Expression) -> Option<T>,
    ) -> Option<T> {
        match self.get(cx, key, conv) {
            Got::Value(v) => Some(v),
            Got::Invalid => None,
            Got::Absent => {
                let path = self.path.clone();
                cx.error(ErrorCode::Missing, &path, format!("{path}: the attribute {key:?} is required"));
                None
            }
        }
    }

    pub(crate) fn opt<T>(
        &mut self,
        cx: &mut Cx,
        key: &'static str,
        conv: impl FnOnce(&mut Cx, &ConfigPath, &Expression) -> Option<T>,
    ) -> Option<T> {
        match self.get(cx, key, conv) {
            Got::Value(v) => Some(v),
            Got::Invalid | Got::Absent => None,
        }
    }

    /// An optional attribute with a default (an invalid value is reported, and the default stands in).
    pub(crate) fn or<T>(
        &mut self,
        cx: &mut Cx,
        key: &'static str,
        conv: impl FnOnce(&mut Cx, &ConfigPath, &Expression) -> Option<T>,
        default: T,
    ) -> T {
        self.opt(cx, key, conv).unwrap_or(default)
    }

    /// An attribute an earlier version had and this one removed: when the block still sets it, it is reported as
    /// unknown (TDM-CFG-002) with `why` (what replaces it) and `hint` instead of the spelling message. A removed
    /// name is not offered as a spelling fix for other unknown attributes.
    pub(crate) fn removed(&mut self, cx: &mut Cx, key: &'static str, why: &str, hint: &str) {
        let Some((attr, taken)) = self.attrs.iter_mut().find(|(a, _)| a.key.as_str() == key) else {
            return;
        };
        *taken = true;
        let path = self.path.attr(key);
        cx.mark(&path, attr.key.span());
        cx.push(ConfigError::new(ErrorCode::UnknownName, path.clone(), format!("{path}: {why}")).with_hint(hint));
    }

    /// All blocks `ident` of this body, in order.
    pub(crate) fn blocks(&mut self, ident: &'static str) -> Vec<&'b Block> {
        self.known_blocks.push(ident);
        let mut found = Vec::new();
        for (block, taken) in &mut self.blocks {
            if block.ident.as_str() == ident {
                *taken = true;
                found.push(*block);
            }
        }
        found
    }

    /// All blocks whose identifier is one of `idents`, in declaration order, each with its identifier and its
    /// index among the blocks of that identifier.
    pub(crate) fn blocks_of(&mut self, idents: &[&'static str]) -> Vec<(&'static str, usize, &'b Block)> {
        self.known_blocks.extend_from_slice(idents);
        let mut counts = vec![0usize; idents.len()];
        let mut found = Vec::new();
        for (block, taken) in &mut self.blocks {
            if let Some(k) = idents.iter().position(|i| *i == block.ident.as_str()) {
                *taken = true;
                found.push((idents[k], counts[k], *block));
                counts[k] += 1;
            }
        }
        found
    }

    /// The block `ident`, which may appear at most once.
    pub(crate) fn single_block(&mut self, cx: &mut Cx, ident: &'static str) -> Option<&'b Block> {
        let found = self.blocks(ident);
        for (index, extra) in found.iter().enumerate().skip(1) {
            let path = self.path.block(ident, "", index);
            cx.mark(&path, extra.ident.span());
            cx.error(ErrorCode::Duplicate, &path, format!("{path}: only one {ident:?} block is allowed here"));
        }
        found.first().copied()
    }

    /// Marks everything as read (after an error that makes the rest of the block meaningless).
    pub(crate) fn skip_rest(&mut self) {
        self.attrs.iter_mut().for_each(|(_, taken)| *taken = true);
        self.blocks.iter_mut().for_each(|(_, taken)| *taken = true);
    }

    /// Reports every attribute and block that no getter asked for.
    pub(crate) fn finish(self, cx: &mut Cx) {
        for (attr, taken) in &self.attrs {
            if *taken {
                continue;
            }
            let key = attr.key.as_str();
            let path = self.path.attr(key);
            cx.mark(&path, attr.key.span());
            let hint = unknown_hint(key, &self.known_attrs, "attributes");
            cx.push(
                ConfigError::new(ErrorCode::UnknownName, path.clone(), format!("{path}: unknown attribute {key:?}"))
                    .with_hint(hint),
            );
        }
        for (block, taken) in &self.blocks {
            if *taken {
                continue;
            }
            let ident = block.ident.as_str();
            let path = self.path.block(ident, "", 0);
            cx.mark(&path, block.ident.span());
            let what = if self.path.0.is_empty() { "(top level)".to_string() } else { self.path.to_string() };
            let hint = unknown_hint(ident, &self.known_blocks, "blocks");
            cx.push(
                ConfigError::new(ErrorCode::UnknownName, path, format!("{what}: unknown block {ident:?}"))
                    .with_hint(hint),
            );
        }
    }
}

fn unknown_hint(word: &str, known: &[&'static str], kind: &str) -> String {
    let mut known: Vec<&str> = known.to_vec();
    known.sort_unstable();
    known.dedup();
    let allowed = if known.is_empty() { "none".to_string() } else { known.join(", ") };
    match did_you_mean(word, known.iter().copied()) {
        Some(close) => format!("did you mean {close:?}? {kind} allowed here: {allowed}"),
        None => format!("remove it or fix its spelling; {kind} allowed here: {allowed}"),
    }
}

/// Opens a block whose labels are named `label_names` (e.g. `["kind", "name"]`): checks the label count,
/// records the position (at the last label, else the identifier) and returns a reader for its body plus the
/// labels. The block's path carries its last label and its `index` among same-named siblings.
pub(crate) fn open_block<'b>(
    cx: &mut Cx,
    parent: &ConfigPath,
    block: &'b Block,
    index: usize,
    label_names: &[&str],
) -> Option<(Reader<'b>, Vec<String>)> {
    let ident = block.ident.as_str();
    let labels: Vec<String> = block.labels.iter().map(|l| l.as_str().to_string()).collect();
    let last_label = labels.last().cloned().unwrap_or_default();
    let path = parent.block(ident, if labels.len() == label_names.len() { &last_label } else { "" }, index);
    let span = block.labels.last().map_or_else(|| block.ident.span(), label_span);
    cx.mark(&path, span);
    if labels.len() != label_names.len() {
        let expected = if label_names.is_empty() {
            "no labels".to_string()
        } else {
            let quoted: Vec<String> = label_names.iter().map(|n| format!("<{n}>")).collect();
            format!("the labels {}", quoted.join(" "))
        };
        cx.push(
            ConfigError::new(
                ErrorCode::WrongType,
                path.clone(),
                format!("{path}: a {ident:?} block takes {expected}, found {} label(s)", labels.len()),
            )
            .with_hint(format!(
                "write it as: {ident} {} {{ ... }}",
                label_names.iter().map(|n| format!("\"<{n}>\"")).collect::<Vec<_>>().join(" ")
            )),
        );
        return None;
    }
    Some((Reader::new(&block.body, path), labels))
}

pub(crate) fn label_span(label: &BlockLabel) -> Option<Range<usize>> {
    match label {
        BlockLabel::Ident(ident) => ident.span(),
        BlockLabel::String(string) => string.span(),
    }
}

// ---- value converters: each reports its own error at `path` and returns None on failure ----

fn describe(e: &Expression) -> &'static str {
    match e {
        Expression::Null(_) => "null",
        Expression::Bool(_) => "a bool",
        Expression::Number(_) => "a number",
        Expression::String(_) => "a string",
        Expression::Array(_) => "a list",
        Expression::Object(_) => "an object",
        Expression::StringTemplate(_) | Expression::HeredocTemplate(_) => {
            "a string with ${...} or %{...} (the cluster config has no variables; escape a literal as $${)"
        }
        Expression::Variable(_) | Expression::Traversal(_) => "a reference (the cluster config has no variables)",
        _ => "an expression (the cluster config takes literal values only)",
    }
}

fn wrong_type(cx: &mut Cx, path: &ConfigPath, expected: &str, e: &Expression) {
    cx.error(ErrorCode::WrongType, path, format!("{path}: expected {expected}, found {}", describe(e)));
}

fn template_literal(template: &Template) -> Option<String> {
    // hcl-edit has already dedented `<<-` heredocs.
    let mut out = String::new();
    for element in template.iter() {
        match element {
            Element::Literal(text) => out.push_str(text.value()),
            Element::Interpolation(_) | Element::Directive(_) => return None,
        }
    }
    Some(out)
}

/// The literal string of `e`: a quoted string, or a template / heredoc without interpolations.
fn literal_string(e: &Expression) -> Option<String> {
    match e {
        Expression::String(s) => Some(s.value().clone()),
        Expression::StringTemplate(t) => template_literal(t),
        Expression::HeredocTemplate(h) => template_literal(&h.template),
        _ => None,
    }
}

pub(crate) fn string(cx: &mut Cx, path: &ConfigPath, e: &Expression) -> Option<String> {
    let s = literal_string(e);
    if s.is_none() {
        wrong_type(cx, path, "a string", e);
    }
    s
}

pub(crate) fn boolean(cx: &mut Cx, path: &ConfigPath, e: &Expression) -> Option<bool> {
    let b = e.as_bool();
    if b.is_none() {
        wrong_type(cx, path, "true or false", e);
    }
    b
}

fn whole_number(cx: &mut Cx, path: &ConfigPath, e: &Expression) -> Option<u64> {
    match e.as_number() {
        Some(n) => match n.as_u64() {
            Some(v) => Some(v),
            None => {
                cx.error(ErrorCode::OutOfRange, path, format!("{path}: {n} is not a whole number >= 0"));
                None
            }
        },
        None => {
            wrong_type(cx, path, "a number", e);
            None
        }
    }
}

pub(crate) fn port(cx: &mut Cx, path: &ConfigPath, e: &Expression) -> Option<u16> {
    let n = whole_number(cx, path, e)?;
    match u16::try_from(n) {
        Ok(p) if p > 0 => Some(p),
        _ => {
            cx.error(ErrorCode::OutOfRange, path, format!("{path}: port {n} is outside 1-65535"));
            None
        }
    }
}

pub(crate) fn count(cx: &mut Cx, path: &ConfigPath, e: &Expression) -> Option<u32> {
    let n = whole_number(cx, path, e)?;
    match u32::try_from(n) {
        Ok(v) => Some(v),
        Err(_) => {
            cx.error(ErrorCode::OutOfRange, path, format!("{path}: {n} is larger than {}", u32::MAX));
            None
        }
    }
}

pub(crate) fn duration(cx: &mut Cx, path: &ConfigPath, e: &Expression) -> Option<Duration> {
    let text = string(cx, path, e)?;
    match parse_duration(&text) {
        Ok(d) => Some(d),
        Err(message) => {
            cx.error(ErrorCode::BadDuration, path, format!("{path}: {message}"));
            None
        }
    }
}

pub(crate) fn ipv4(cx: &mut Cx, path: &ConfigPath, e: &Expression) -> Option<Ipv4Addr> {
    let text = string(cx, path, e)?;
    match crate::net::parse_ipv4(&text) {
        Ok(ip) => Some(ip),
        Err(err) => {
            cx.error(ErrorCode::BadAddress, path, format!("{path}: {err}"));
            None
        }
    }
}

pub(crate) fn cidr(cx: &mut Cx, path: &ConfigPath, e: &Expression) -> Option<ipnet::Ipv4Net> {
    let text = string(cx, path, e)?;
    match crate::net::parse_ipv4_cidr(&text) {
        Ok(net) => Some(net),
        Err(err) => {
            cx.error(ErrorCode::BadAddress, path, format!("{path}: {err} ({})", err.code()));
            None
        }
    }
}

pub(crate) fn path_buf(cx: &mut Cx, path: &ConfigPath, e: &Expression) -> Option<PathBuf> {
    string(cx, path, e).map(PathBuf::from)
}

pub(crate) fn choice<T: Choice>(cx: &mut Cx, path: &ConfigPath, e: &Expression) -> Option<T> {
    let text = string(cx, path, e)?;
    let value = T::from_str_exact(&text);
    if value.is_none() {
        cx.error(ErrorCode::BadChoice, path, format!("{path}: {text:?} is not one of {}", T::choices()));
    }
    value
}

/// A list whose elements each convert with `conv`; each element's position is recorded.
pub(crate) fn list_of<T>(
    cx: &mut Cx,
    path: &ConfigPath,
    e: &Expression,
    conv: impl Fn(&mut Cx, &ConfigPath, &Expression) -> Option<T>,
) -> Option<Vec<T>> {
    let Some(array) = e.as_array() else {
        wrong_type(cx, path, "a list", e);
        return None;
    };
    let mut out = Vec::new();
    let mut ok = true;
    for (i, item) in array.iter().enumerate() {
        let item_path = path.index(i);
        cx.mark(&item_path, item.span());
        match conv(cx, &item_path, item) {
            Some(v) => out.push(v),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

pub(crate) fn string_list(cx: &mut Cx, path: &ConfigPath, e: &Expression) -> Option<Vec<String>> {
    list_of(cx, path, e, string)
}

/// An object `{ key = value, "key" = value }` whose values convert with `conv`; each key's position is recorded.
pub(crate) fn map_of<T>(
    cx: &mut Cx,
    path: &ConfigPath,
    e: &Expression,
    conv: impl Fn(&mut Cx, &ConfigPath, &Expression) -> Option<T>,
) -> Option<BTreeMap<String, T>> {
    let Some(object) = e.as_object() else {
        wrong_type(cx, path, "an object such as { \"node-a\" = \"...\" }", e);
        return None;
    };
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (key, value) in object.iter() {
        let (name, span) = match key {
            ObjectKey::Ident(ident) => (Some(ident.as_str().to_string()), ident.span()),
            ObjectKey::Expression(expr) => (literal_string(expr), expr.span()),
        };
        let Some(name) = name else {
            cx.mark(path, span);
            cx.error(ErrorCode::WrongType, path, format!("{path}: object keys must be names or literal strings"));
            ok = false;
            continue;
        };
        let key_path = path.key(&name);
        cx.mark(&key_path, span);
        if out.contains_key(&name) {
            cx.error(ErrorCode::Duplicate, &key_path, format!("{path}: the key {name:?} appears twice"));
            ok = false;
            continue;
        }
        match conv(cx, &key_path, value.expr()) {
            Some(v) => {
                out.insert(name, v);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

pub(crate) fn string_map(cx: &mut Cx, path: &ConfigPath, e: &Expression) -> Option<BTreeMap<String, String>> {
    map_of(cx, path, e, string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expr(text: &str) -> Expression {
        hcl::edit::parser::parse_expr(text).unwrap()
    }

    #[test]
    fn strings_accept_literals_and_plain_heredocs_only() {
        let mut cx = Cx::new("");
        let p = ConfigPath::root().attr("x");
        assert_eq!(string(&mut cx, &p, &expr("\"a$${b}\"")).as_deref(), Some("a${b}"));
        assert_eq!(string(&mut cx, &p, &expr("<<EOT\nline\nEOT")).as_deref(), Some("line\n"));
        assert_eq!(string(&mut cx, &p, &expr("<<-EOT\n    a\n      b\n    EOT")).as_deref(), Some("a\n  b\n"));
        assert!(cx.errors.is_empty());
        assert_eq!(string(&mut cx, &p, &expr("\"${var.x}\"")), None);
        assert_eq!(string(&mut cx, &p, &expr("12")), None);
        assert_eq!(cx.errors.len(), 2);
        assert!(cx.errors.iter().all(|e| e.code == ErrorCode::WrongType));
        assert!(cx.errors[0].message.contains("no variables"));
    }

    #[test]
    fn numbers_are_range_checked() {
        let mut cx = Cx::new("");
        let p = ConfigPath::root().attr("port");
        assert_eq!(port(&mut cx, &p, &expr("7400")), Some(7400));
        assert_eq!(port(&mut cx, &p, &expr("0")), None);
        assert_eq!(port(&mut cx, &p, &expr("70000")), None);
        assert_eq!(port(&mut cx, &p, &expr("1.5")), None);
        assert_eq!(cx.errors.iter().map(|e| e.code).collect::<Vec<_>>(), vec![ErrorCode::OutOfRange; 3]);
    }

    #[test]
    fn maps_record_key_positions_and_reject_duplicates() {
        let src = "{ \"a\" = \"x\", b = \"y\" }";
        let mut cx = Cx::new(src);
        let p = ConfigPath::root().attr("m");
        let m = string_map(&mut cx, &p, &expr(src)).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(cx.locate(&p.key("b")), Some(Location { line: 1, column: 14 }));
    }

    #[test]
    fn reader_reports_unknown_attributes_with_a_suggestion() {
        let body = hcl::edit::parser::parse_body("privte_ip = \"1\"\n").unwrap();
        let mut cx = Cx::new("");
        let mut r = Reader::new(&body, ConfigPath::root().block("node", "a", 0));
        assert!(matches!(r.get(&mut cx, "private_ip", string), Got::Absent));
        r.finish(&mut cx);
        assert_eq!(cx.errors.len(), 1);
        assert_eq!(cx.errors[0].code, ErrorCode::UnknownName);
        assert!(cx.errors[0].hint.contains("did you mean \"private_ip\""), "{}", cx.errors[0].hint);
    }
}
