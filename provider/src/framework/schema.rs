//! Schemas: attributes, nested blocks, plan modifiers and validators, and their protocol form.

use std::collections::BTreeMap;

use tandem_proto::tfplugin6 as pb;

use super::cty::{Type, Value};
use super::json::type_to_json;

/// Checks a known, non-null value; the message becomes an error diagnostic on the attribute.
pub type Validator = fn(&Value) -> Result<(), String>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanModifier {
    /// A change to this attribute cannot be made in place: Terraform plans a replacement.
    RequiresReplace,
    /// A computed attribute keeps its prior value in the plan instead of becoming "known after apply".
    UseStateForUnknown,
}

#[derive(Clone, Debug)]
pub struct Attribute {
    pub name: &'static str,
    pub ty: Type,
    pub description: &'static str,
    pub required: bool,
    pub optional: bool,
    pub computed: bool,
    pub sensitive: bool,
    /// Planned when the configuration leaves the attribute null (optional + computed attributes only).
    pub default: Option<Value>,
    pub modifiers: Vec<PlanModifier>,
    pub validators: Vec<Validator>,
}

impl Attribute {
    fn new(name: &'static str, ty: Type) -> Self {
        Attribute {
            name,
            ty,
            description: "",
            required: false,
            optional: false,
            computed: false,
            sensitive: false,
            default: None,
            modifiers: Vec::new(),
            validators: Vec::new(),
        }
    }

    pub fn required(name: &'static str, ty: Type) -> Self {
        Attribute { required: true, ..Self::new(name, ty) }
    }

    pub fn optional(name: &'static str, ty: Type) -> Self {
        Attribute { optional: true, ..Self::new(name, ty) }
    }

    /// Set by the provider only (IDs, ARNs): keeps its prior value across plans.
    pub fn computed(name: &'static str, ty: Type) -> Self {
        Attribute { computed: true, ..Self::new(name, ty) }.modifier(PlanModifier::UseStateForUnknown)
    }

    /// Set by the provider only and may change on any update (tags_all, ...).
    pub fn computed_volatile(name: &'static str, ty: Type) -> Self {
        Attribute { computed: true, ..Self::new(name, ty) }
    }

    /// Optional; when left out, the provider decides (AWS picks an AZ, ...).
    pub fn optional_computed(name: &'static str, ty: Type) -> Self {
        Attribute { optional: true, computed: true, ..Self::new(name, ty) }.modifier(PlanModifier::UseStateForUnknown)
    }

    /// Optional with a default the provider plans when the configuration leaves it out.
    pub fn with_default(name: &'static str, default: Value) -> Self {
        let ty = match &default {
            Value::Bool(_) => Type::Bool,
            Value::Number(_) => Type::Number,
            _ => Type::String,
        };
        Attribute { optional: true, computed: true, default: Some(default), ..Self::new(name, ty) }
    }

    pub fn describe(mut self, description: &'static str) -> Self {
        self.description = description;
        self
    }

    pub fn sensitive(mut self) -> Self {
        self.sensitive = true;
        self
    }

    pub fn replace(self) -> Self {
        self.modifier(PlanModifier::RequiresReplace)
    }

    pub fn modifier(mut self, m: PlanModifier) -> Self {
        if !self.modifiers.contains(&m) {
            self.modifiers.push(m);
        }
        self
    }

    pub fn validate(mut self, v: Validator) -> Self {
        self.validators.push(v);
        self
    }

    pub fn has(&self, m: PlanModifier) -> bool {
        self.modifiers.contains(&m)
    }

    fn to_proto(&self) -> pb::schema::Attribute {
        pb::schema::Attribute {
            name: self.name.to_string(),
            r#type: type_to_json(&self.ty),
            description: self.description.to_string(),
            required: self.required,
            optional: self.optional,
            computed: self.computed,
            sensitive: self.sensitive,
            description_kind: pb::StringKind::Markdown as i32,
            ..Default::default()
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nesting {
    Single,
    List,
    Set,
}

#[derive(Clone, Debug)]
pub struct NestedBlock {
    pub name: &'static str,
    pub nesting: Nesting,
    pub block: Block,
    pub min_items: i64,
    pub max_items: i64,
}

impl NestedBlock {
    pub fn ty(&self) -> Type {
        let inner = self.block.ty();
        match self.nesting {
            Nesting::Single => inner,
            Nesting::List => Type::List(Box::new(inner)),
            Nesting::Set => Type::Set(Box::new(inner)),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Block {
    pub attributes: Vec<Attribute>,
    pub blocks: Vec<NestedBlock>,
    pub description: &'static str,
}

impl Block {
    pub fn new(description: &'static str) -> Self {
        Block { description, ..Default::default() }
    }

    pub fn attr(mut self, a: Attribute) -> Self {
        self.attributes.push(a);
        self
    }

    pub fn block(mut self, name: &'static str, nesting: Nesting, max_items: i64, block: Block) -> Self {
        self.blocks.push(NestedBlock { name, nesting, block, min_items: 0, max_items });
        self
    }

    /// The object type this block's values have on the wire.
    pub fn ty(&self) -> Type {
        let mut attrs: BTreeMap<String, Type> =
            self.attributes.iter().map(|a| (a.name.to_string(), a.ty.clone())).collect();
        for b in &self.blocks {
            attrs.insert(b.name.to_string(), b.ty());
        }
        Type::Object(attrs)
    }

    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.name == name)
    }

    fn to_proto(&self) -> pb::schema::Block {
        pb::schema::Block {
            version: 0,
            attributes: self.attributes.iter().map(Attribute::to_proto).collect(),
            block_types: self
                .blocks
                .iter()
                .map(|b| pb::schema::NestedBlock {
                    type_name: b.name.to_string(),
                    block: Some(b.block.to_proto()),
                    nesting: match b.nesting {
                        Nesting::Single => pb::schema::nested_block::NestingMode::Single,
                        Nesting::List => pb::schema::nested_block::NestingMode::List,
                        Nesting::Set => pb::schema::nested_block::NestingMode::Set,
                    } as i32,
                    min_items: b.min_items,
                    max_items: b.max_items,
                })
                .collect(),
            description: self.description.to_string(),
            description_kind: pb::StringKind::Markdown as i32,
            deprecated: false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Schema {
    /// Bumped when the stored state's shape changes; old states go through `upgrade_state`.
    pub version: i64,
    pub block: Block,
}

impl Schema {
    pub fn new(version: i64, block: Block) -> Self {
        Schema { version, block }
    }

    pub fn ty(&self) -> Type {
        self.block.ty()
    }

    pub fn to_proto(&self) -> pb::Schema {
        pb::Schema { version: self.version, block: Some(self.block.to_proto()) }
    }
}

/// The tags pair every taggable AWS resource has: `tags` from the user, `tags_all` with the provider's
/// `default_tags` merged in (as in the AWS provider).
pub fn tags_attributes() -> [Attribute; 2] {
    let map = Type::Map(Box::new(Type::String));
    [
        Attribute::optional("tags", map.clone()).describe(
            "Tags for the object. A key set here overrides the provider's `default_tags` entry with the same key.",
        ),
        Attribute::computed_volatile("tags_all", map)
            .describe("All tags of the object, including those inherited from the provider's `default_tags`."),
    ]
}

/// The `timeouts { create = "10m" ... }` block of resources AWS is slow with; read with
/// `crate::aws::wait::timeout_for`.
pub fn timeouts_block(ops: &[&'static str]) -> NestedBlock {
    let mut block = Block::new("How long to wait for each operation, e.g. `\"10m\"` or `\"90s\"`.");
    for op in ops {
        block = block.attr(
            Attribute::optional(op, Type::String)
                .validate(super::validators::duration)
                .describe("A duration such as `10m`, `90s` or `1h30m`."),
        );
    }
    NestedBlock { name: "timeouts", nesting: Nesting::Single, block, min_items: 0, max_items: 0 }
}

impl Block {
    pub fn nested(mut self, nested: NestedBlock) -> Self {
        self.blocks.push(nested);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_type_includes_nested_blocks() {
        let b = Block::new("x").attr(Attribute::required("a", Type::String)).block(
            "timeouts",
            Nesting::Single,
            1,
            Block::new("t").attr(Attribute::optional("create", Type::String)),
        );
        let Type::Object(attrs) = b.ty() else { panic!("object expected") };
        assert_eq!(attrs.get("a"), Some(&Type::String));
        assert!(matches!(attrs.get("timeouts"), Some(Type::Object(_))));
    }

    #[test]
    fn computed_ids_keep_state_and_replace_is_recorded() {
        let id = Attribute::computed("id", Type::String);
        assert!(id.has(PlanModifier::UseStateForUnknown));
        let cidr = Attribute::required("cidr_block", Type::String).replace();
        assert!(cidr.has(PlanModifier::RequiresReplace));
        let p = cidr.to_proto();
        assert_eq!(p.r#type, b"\"string\"".to_vec());
        assert!(p.required && !p.computed);
    }

    #[test]
    fn default_attribute_is_optional_and_computed() {
        let a = Attribute::with_default("enable_dns_support", Value::Bool(true));
        assert!(a.optional && a.computed && a.ty == Type::Bool);
    }
}
