// Shared by the fuzz targets: the provider's value layer and a few fixed types.

#[allow(dead_code)]
#[path = "framework.rs"]
pub mod framework;

use framework::cty::Type;

/// Types shaped like real resource schemas, plus the fully dynamic ones.
pub fn fixed_types() -> Vec<Type> {
    let rule = Type::object([
        ("from_port", Type::Number),
        ("cidr_blocks", Type::set(Type::String)),
        ("description", Type::String),
    ]);
    vec![
        Type::object([
            ("id", Type::String),
            ("cidr_block", Type::String),
            ("enable_dns_support", Type::Bool),
            ("tags", Type::map(Type::String)),
            ("ingress", Type::list(rule.clone())),
            ("egress", Type::set(rule)),
            ("pair", Type::Tuple(vec![Type::String, Type::Number])),
            ("extra", Type::Dynamic),
        ]),
        Type::Dynamic,
        Type::list(Type::Dynamic),
        Type::map(Type::Number),
        Type::Tuple(vec![Type::Bool, Type::String, Type::set(Type::Number)]),
    ]
}
