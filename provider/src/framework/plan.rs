//! The generic part of PlanResourceChange: defaults, "known after apply", `use_state_for_unknown` and
//! `requires_replace`, driven by the schema. Resources add their own rules afterwards through
//! [`super::resource::Resource::plan`].

use super::cty::Value;
use super::diag::AttrPath;
use super::schema::{Block, Nesting, PlanModifier};

/// The plan under construction, handed to a resource's own plan hook.
#[derive(Debug)]
pub struct Plan<'a> {
    /// Null when the object is to be created.
    pub prior: &'a Value,
    pub config: &'a Value,
    pub planned: Value,
    pub requires_replace: Vec<AttrPath>,
}

impl Plan<'_> {
    pub fn is_create(&self) -> bool {
        self.prior.is_null()
    }

    /// Sets a top-level attribute of the planned object.
    pub fn set(&mut self, name: &str, value: Value) {
        if let Some(attrs) = self.planned.attrs_mut() {
            attrs.insert(name.to_string(), value);
        }
    }

    pub fn get(&self, name: &str) -> &Value {
        self.planned.attr(name)
    }

    /// True when the planned value of `name` differs from the prior state (always true on create).
    pub fn changes(&self, name: &str) -> bool {
        self.is_create() || self.planned.attr(name) != self.prior.attr(name)
    }

    pub fn replace_if_changed(&mut self, name: &str) {
        if !self.is_create() && self.changes(name) && !self.requires_replace.contains(&AttrPath::root(name)) {
            self.requires_replace.push(AttrPath::root(name));
        }
    }
}

/// Builds the plan from Terraform's proposed new state (config merged with prior state).
pub fn plan_from_schema<'a>(block: &Block, prior: &'a Value, config: &'a Value, proposed: Value) -> Plan<'a> {
    let mut plan = Plan { prior, config, planned: proposed, requires_replace: Vec::new() };
    let creating = prior.is_null();
    let mut volatile = Vec::new();
    for attr in &block.attributes {
        let configured = !config.attr(attr.name).is_null();
        if attr.computed && !configured {
            if let Some(default) = &attr.default {
                plan.set(attr.name, default.clone());
            } else if creating {
                plan.set(attr.name, Value::Unknown);
            } else if !attr.has(PlanModifier::UseStateForUnknown) {
                volatile.push(attr.name);
            }
        }
    }
    plan_nested_blocks(block, &mut plan.planned, config, prior);
    if !creating {
        for attr in &block.attributes {
            if attr.has(PlanModifier::RequiresReplace) {
                plan.replace_if_changed(attr.name);
            }
        }
        for nested in &block.blocks {
            if nested.block.attributes.iter().any(|a| a.has(PlanModifier::RequiresReplace)) {
                plan.replace_if_changed(nested.name);
            }
        }
        // A change anywhere may change what AWS computes for attributes without a stable value.
        if plan.planned != *prior {
            for name in volatile {
                plan.set(name, Value::Unknown);
            }
        }
    }
    plan
}

/// Defaults and "known after apply" for computed attributes inside nested blocks. List and single blocks
/// are matched with the prior state by position; set elements have no identity, so they count as new.
fn plan_nested_blocks(block: &Block, planned: &mut Value, config: &Value, prior: &Value) {
    let Some(attrs) = planned.attrs_mut() else { return };
    for nested in &block.blocks {
        let Some(value) = attrs.get_mut(nested.name) else { continue };
        let (cfg, old) = (config.attr(nested.name), prior.attr(nested.name));
        match (nested.nesting, value) {
            (Nesting::Single, v @ Value::Object(_)) => plan_nested_object(&nested.block, v, cfg, old),
            (Nesting::List, Value::List(items)) => {
                for (i, item) in items.iter_mut().enumerate() {
                    let c = cfg.elements().get(i).unwrap_or(&Value::Null);
                    let o = old.elements().get(i).unwrap_or(&Value::Null);
                    plan_nested_object(&nested.block, item, c, o);
                }
            }
            (Nesting::Set, Value::Set(items)) => {
                for item in items.iter_mut() {
                    let c = item.clone();
                    plan_nested_object(&nested.block, item, &c, &Value::Null);
                }
            }
            _ => {}
        }
    }
}

fn plan_nested_object(block: &Block, item: &mut Value, config: &Value, prior: &Value) {
    if let Some(attrs) = item.attrs_mut() {
        for attr in block.attributes.iter().filter(|a| a.computed) {
            if !config.attr(attr.name).is_null() {
                continue;
            }
            if let Some(default) = &attr.default {
                attrs.insert(attr.name.to_string(), default.clone());
            } else if prior.is_null() {
                attrs.insert(attr.name.to_string(), Value::Unknown);
            } else {
                attrs.insert(attr.name.to_string(), prior.attr(attr.name).clone());
            }
        }
    }
    plan_nested_blocks(block, item, config, prior);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use super::super::cty::Type;
    use super::super::schema::Attribute;
    use super::*;

    fn block() -> Block {
        Block::new("test")
            .attr(Attribute::computed("id", Type::String))
            .attr(Attribute::required("cidr_block", Type::String).replace())
            .attr(Attribute::with_default("enable_dns_support", Value::Bool(true)))
            .attr(Attribute::optional("name", Type::String))
            .attr(Attribute::computed_volatile("etag", Type::String))
    }

    fn obj(pairs: &[(&str, Value)]) -> Value {
        let mut m: BTreeMap<String, Value> = ["id", "cidr_block", "enable_dns_support", "name", "etag"]
            .iter()
            .map(|k| (k.to_string(), Value::Null))
            .collect();
        for (k, v) in pairs {
            m.insert(k.to_string(), v.clone());
        }
        Value::Object(m)
    }

    #[test]
    fn create_marks_computed_unknown_and_applies_defaults() {
        let config = obj(&[("cidr_block", "10.0.0.0/16".into())]);
        let plan = plan_from_schema(&block(), &Value::Null, &config, config.clone());
        assert!(plan.get("id").is_unknown());
        assert_eq!(plan.get("enable_dns_support"), &Value::Bool(true));
        assert!(plan.requires_replace.is_empty());
    }

    #[test]
    fn no_change_plans_prior_state_exactly() {
        let prior = obj(&[
            ("id", "vpc-1".into()),
            ("cidr_block", "10.0.0.0/16".into()),
            ("enable_dns_support", true.into()),
            ("etag", "e1".into()),
        ]);
        let config = obj(&[("cidr_block", "10.0.0.0/16".into())]);
        let plan = plan_from_schema(&block(), &prior, &config, prior.clone());
        assert_eq!(plan.planned, prior);
    }

    #[test]
    fn changed_replace_attribute_requires_replacement() {
        let prior = obj(&[("id", "vpc-1".into()), ("cidr_block", "10.0.0.0/16".into()), ("etag", "e1".into())]);
        let config = obj(&[("cidr_block", "10.1.0.0/16".into())]);
        let proposed = obj(&[("id", "vpc-1".into()), ("cidr_block", "10.1.0.0/16".into()), ("etag", "e1".into())]);
        let plan = plan_from_schema(&block(), &prior, &config, proposed);
        assert_eq!(plan.requires_replace, vec![AttrPath::root("cidr_block")]);
        assert_eq!(plan.get("id"), &Value::from("vpc-1"), "use_state_for_unknown keeps the id");
        assert!(plan.get("etag").is_unknown(), "volatile computed becomes unknown on change");
    }

    #[test]
    fn nested_block_defaults_and_unknowns_are_planned() {
        let b = Block::new("t").block(
            "metadata_options",
            Nesting::List,
            1,
            Block::new("m")
                .attr(Attribute::with_default("http_tokens", Value::from("required")))
                .attr(Attribute::computed("instance_metadata_tags", Type::String)),
        );
        let item = Value::object([("http_tokens", Value::Null), ("instance_metadata_tags", Value::Null)]);
        let config = Value::object([("metadata_options", Value::List(vec![item.clone()]))]);
        let plan = plan_from_schema(&b, &Value::Null, &config, config.clone());
        let planned = &plan.get("metadata_options").elements()[0];
        assert_eq!(planned.attr("http_tokens"), &Value::from("required"));
        assert!(planned.attr("instance_metadata_tags").is_unknown());
    }

    #[test]
    fn in_place_change_does_not_replace() {
        let prior = obj(&[("id", "vpc-1".into()), ("cidr_block", "10.0.0.0/16".into())]);
        let config = obj(&[("cidr_block", "10.0.0.0/16".into()), ("name", "x".into())]);
        let proposed = obj(&[("id", "vpc-1".into()), ("cidr_block", "10.0.0.0/16".into()), ("name", "x".into())]);
        let plan = plan_from_schema(&block(), &prior, &config, proposed);
        assert!(plan.requires_replace.is_empty());
        assert!(plan.changes("name") && !plan.changes("cidr_block"));
    }
}
