//! [`Config`] -> canonical HCL.
//!
//! Canonical means: blocks in a fixed order (cluster, secrets, heartbeat, interconnects, mirror_connect,
//! np_resolution, arbitration, nodes, groups, monitors), every field that has a default written out explicitly
//! (so a node reads exactly what the provider meant, whatever defaults a later tandemd has), optional fields
//! without a value and empty lists/maps left out, implied monitors written as ordinary monitors, `=` aligned
//! within a run of one-line attributes. `parse(&render(&c)) == Ok(c)` for every valid, filled-in `c`.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use super::Config;
use super::choice::Choice;
use super::duration::format_duration;

/// Renders `config` as canonical HCL. Call [`Config::fill_implied`] first for a config built in code (the
/// parser has already done it).
pub fn render(config: &Config) -> String {
    let mut top = HclBlock::top();
    config.render_into(&mut top);
    let mut out = String::from("# tandem cluster config (canonical form; see docs/runtime-config.md)\n\n");
    top.write_body(&mut out, 0);
    out
}

/// An HCL string literal with HCL's escapes (quotes, backslashes, control characters, `${` and `%{`).
pub(crate) fn quote(text: &str) -> String {
    hcl::edit::expr::Expression::from(text.to_string()).to_string()
}

enum Item {
    Attr(String, String),
    Map(String, Vec<(String, String)>),
    Block(HclBlock),
}

/// A block being rendered.
pub(crate) struct HclBlock {
    header: String,
    items: Vec<Item>,
}

impl HclBlock {
    fn top() -> HclBlock {
        HclBlock { header: String::new(), items: Vec::new() }
    }

    /// A block `ident "label1" "label2" { }`.
    pub(crate) fn new(ident: &str, labels: &[&str]) -> HclBlock {
        let mut header = ident.to_string();
        for label in labels {
            header.push(' ');
            header.push_str(&quote(label));
        }
        HclBlock { header, items: Vec::new() }
    }

    pub(crate) fn block(&mut self, block: HclBlock) {
        self.items.push(Item::Block(block));
    }

    fn raw(&mut self, key: &str, value: String) {
        self.items.push(Item::Attr(key.to_string(), value));
    }

    pub(crate) fn str(&mut self, key: &str, value: &str) {
        self.raw(key, quote(value));
    }

    pub(crate) fn opt_str(&mut self, key: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.str(key, value);
        }
    }

    pub(crate) fn display(&mut self, key: &str, value: impl Display) {
        self.str(key, &value.to_string());
    }

    pub(crate) fn opt_display(&mut self, key: &str, value: Option<impl Display>) {
        if let Some(value) = value {
            self.display(key, value);
        }
    }

    pub(crate) fn path(&mut self, key: &str, value: &Path) {
        self.str(key, &value.to_string_lossy());
    }

    pub(crate) fn opt_path(&mut self, key: &str, value: Option<&Path>) {
        if let Some(value) = value {
            self.path(key, value);
        }
    }

    pub(crate) fn number(&mut self, key: &str, value: impl Into<u64>) {
        self.raw(key, value.into().to_string());
    }

    pub(crate) fn boolean(&mut self, key: &str, value: bool) {
        self.raw(key, value.to_string());
    }

    pub(crate) fn duration(&mut self, key: &str, value: Duration) {
        self.str(key, &format_duration(value));
    }

    pub(crate) fn choice(&mut self, key: &str, value: impl Choice) {
        self.str(key, value.as_str());
    }

    pub(crate) fn opt_choice(&mut self, key: &str, value: Option<impl Choice>) {
        if let Some(value) = value {
            self.choice(key, value);
        }
    }

    /// A list of strings on one line; left out when empty.
    pub(crate) fn list<T: AsRef<str>>(&mut self, key: &str, values: &[T]) {
        if !values.is_empty() {
            let items: Vec<String> = values.iter().map(|v| quote(v.as_ref())).collect();
            self.raw(key, format!("[{}]", items.join(", ")));
        }
    }

    pub(crate) fn display_list(&mut self, key: &str, values: &[impl Display]) {
        let texts: Vec<String> = values.iter().map(ToString::to_string).collect();
        self.list(key, &texts);
    }

    /// A map as a multi-line object with quoted keys; left out when empty.
    pub(crate) fn map<V: Display>(&mut self, key: &str, values: &BTreeMap<String, V>) {
        if !values.is_empty() {
            let entries = values.iter().map(|(k, v)| (quote(k), quote(&v.to_string()))).collect();
            self.items.push(Item::Map(key.to_string(), entries));
        }
    }

    pub(crate) fn ip_map(&mut self, key: &str, values: &BTreeMap<String, Ipv4Addr>) {
        self.map(key, values);
    }

    fn write_body(&self, out: &mut String, indent: usize) {
        let pad = "  ".repeat(indent);
        let mut i = 0;
        let mut previous_was_block = false;
        while i < self.items.len() {
            match &self.items[i] {
                Item::Attr(..) => {
                    let run_end = self.items[i..]
                        .iter()
                        .position(|item| !matches!(item, Item::Attr(..)))
                        .map_or(self.items.len(), |n| i + n);
                    let width = self.items[i..run_end]
                        .iter()
                        .map(|item| if let Item::Attr(k, _) = item { k.len() } else { 0 })
                        .max()
                        .unwrap_or(0);
                    if previous_was_block {
                        out.push('\n');
                    }
                    for item in &self.items[i..run_end] {
                        if let Item::Attr(key, value) = item {
                            out.push_str(&format!("{pad}{key:<width$} = {value}\n"));
                        }
                    }
                    i = run_end;
                    previous_was_block = false;
                }
                Item::Map(key, entries) => {
                    if previous_was_block {
                        out.push('\n');
                    }
                    out.push_str(&format!("{pad}{key} = {{\n"));
                    let width = entries.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
                    for (k, v) in entries {
                        out.push_str(&format!("{pad}  {k:<width$} = {v}\n"));
                    }
                    out.push_str(&format!("{pad}}}\n"));
                    i += 1;
                    previous_was_block = false;
                }
                Item::Block(block) => {
                    if i > 0 {
                        out.push('\n');
                    }
                    if block.items.is_empty() {
                        out.push_str(&format!("{pad}{} {{}}\n", block.header));
                    } else {
                        out.push_str(&format!("{pad}{} {{\n", block.header));
                        block.write_body(out, indent + 1);
                        out.push_str(&format!("{pad}}}\n"));
                    }
                    i += 1;
                    previous_was_block = true;
                }
            }
        }
    }
}

impl HclBlock {
    /// Adds a child block built by `f`.
    pub(crate) fn child(&mut self, ident: &str, labels: &[&str], f: impl FnOnce(&mut HclBlock)) {
        let mut block = HclBlock::new(ident, labels);
        f(&mut block);
        self.block(block);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_escapes_what_hcl_needs() {
        assert_eq!(quote("plain"), "\"plain\"");
        assert_eq!(quote("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
        assert_eq!(quote("${x} %{y}"), "\"$${x} %%{y}\"");
    }

    #[test]
    fn attributes_align_and_blocks_are_separated() {
        let mut top = HclBlock::top();
        top.child("node", &["a"], |b| {
            b.str("private_ip", "10.0.1.10");
            b.str("availability_zone", "us-east-1a");
            b.child("override", &["x"], |_| {});
        });
        top.child("heartbeat", &[], |b| b.number("n", 1u32));
        let mut out = String::new();
        top.write_body(&mut out, 0);
        let expected = "node \"a\" {\n  private_ip        = \"10.0.1.10\"\n  availability_zone = \"us-east-1a\"\n\n  \
                        override \"x\" {}\n}\n\nheartbeat {\n  n = 1\n}\n";
        assert_eq!(out, expected);
    }
}
