//! Per-node overrides, the guides' "Set Up Individually" tab: inside a resource (or an `ip` monitor),
//! `override "<node>" { <attribute> = <value> }` replaces the common value of an attribute on that node.
//! Which attributes may be overridden is decided by each kind (`device` of aws_vip, `ip` of aws_dns, the devices
//! of mirror_disk, `env` of exec, `targets` of an ip monitor); each kind stores its overrides as
//! `per_node: BTreeMap<node, KindNode>` and offers `*_for(node)` accessors that apply them.

use std::collections::BTreeMap;

use hcl::edit::Span;

use super::error::{ConfigPath, ErrorCode};
use super::parse::{Cx, Reader, label_span};
use super::render::HclBlock;
use super::validate::Validator;

/// The path of the override block for `node` under `parent`.
pub(crate) fn path(parent: &ConfigPath, node: &str) -> ConfigPath {
    parent.block("override", node, 0)
}

/// Reads every `override "<node>" { }` block of `r` with `read_one`.
pub(crate) fn read<T>(
    cx: &mut Cx,
    r: &mut Reader,
    read_one: impl Fn(&mut Cx, &mut Reader) -> Option<T>,
) -> Option<BTreeMap<String, T>> {
    let parent = r.path.clone();
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (index, block) in r.blocks("override").into_iter().enumerate() {
        let [label] = block.labels.as_slice() else {
            let at = parent.block("override", "", index);
            cx.mark(&at, block.ident.span());
            cx.error(ErrorCode::WrongType, &at, format!("{at}: an override block takes one label: the node name"));
            ok = false;
            continue;
        };
        let node = label.as_str();
        let duplicate = out.contains_key(node);
        let at = if duplicate { parent.block("override", node, index.max(1)) } else { path(&parent, node) };
        cx.mark(&at, label_span(label));
        if duplicate {
            cx.error(ErrorCode::Duplicate, &at, format!("{at}: node {node:?} is overridden twice"));
            ok = false;
            continue;
        }
        let mut br = Reader::new(&block.body, at);
        let value = read_one(cx, &mut br);
        br.finish(cx);
        match value {
            Some(v) => {
                out.insert(node.to_string(), v);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// For kinds with nothing to set per node: any override block is an error.
pub(crate) fn reject(cx: &mut Cx, r: &mut Reader, kind: &str) -> bool {
    let parent = r.path.clone();
    let blocks = r.blocks("override");
    for block in &blocks {
        let at = parent.block("override", "", 0);
        cx.mark(&at, block.ident.span());
        cx.error(
            ErrorCode::NotApplicable,
            &at,
            format!("{parent}: a {kind} resource has no attribute to set per node"),
        );
    }
    blocks.is_empty()
}

pub(crate) fn render<T>(b: &mut HclBlock, per_node: &BTreeMap<String, T>, render_one: impl Fn(&mut HclBlock, &T)) {
    for (node, value) in per_node {
        b.child("override", &[node], |ob| render_one(ob, value));
    }
}

/// Each overridden node must exist and be one of `servers`.
pub(crate) fn validate_nodes<T>(
    v: &mut Validator,
    parent: &ConfigPath,
    per_node: &BTreeMap<String, T>,
    servers: &[String],
) {
    for node in per_node.keys() {
        let at = path(parent, node);
        if v.node_ref(&at, node) && !servers.iter().any(|s| s == node) {
            v.error(ErrorCode::UnknownNode, &at, format!("{at}: node {node:?} is not a server of this group"));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::parse_codes;

    const HEAD: &str =
        "cluster \"c\" {}\nnode \"a\" {\n  private_ip = \"10.0.0.1\"\n  availability_zone = \"us-east-1a\"\n}\n";

    fn group(resource: &str) -> String {
        format!("{HEAD}group \"g\" {{\n  servers = [\"a\"]\n{resource}\n}}\n")
    }

    #[test]
    fn override_needs_one_label() {
        let src =
            group("resource \"aws_vip\" \"v\" {\n ip = \"10.9.0.1\"\n vpc_id = \"vpc-12345678\"\n override {}\n}");
        assert_eq!(parse_codes(&src), vec!["TDM-CFG-004"]);
    }

    #[test]
    fn only_overridable_attributes_are_accepted() {
        let src = group(
            "resource \"aws_vip\" \"v\" {\n ip = \"10.9.0.1\"\n vpc_id = \"vpc-12345678\"\n override \"a\" {\n  ip = \"10.9.0.2\"\n }\n}",
        );
        assert_eq!(parse_codes(&src), vec!["TDM-CFG-002"]);
    }

    #[test]
    fn overrides_for_unknown_nodes_are_rejected() {
        let src =
            group("resource \"exec\" \"x\" {\n start = \"true\"\n override \"zz\" {\n  env = { A = \"1\" }\n }\n}");
        assert_eq!(parse_codes(&src), vec!["TDM-CFG-011"]);
    }
}
