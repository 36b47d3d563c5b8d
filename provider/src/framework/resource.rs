//! The plug-in traits: one implementation per resource type / data source, registered in
//! `crate::resources`. A resource file holds its schema, its plan rules and its AWS calls; everything
//! type-erased (wire values, diagnostics, plan mechanics) stays in the framework.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::cty::Value;
use super::diag::Diagnostics;
use super::plan::Plan;
use super::schema::Schema;
use crate::aws::AwsContext;

#[async_trait]
pub trait Resource: Send + Sync {
    /// The Terraform type name, e.g. `tandem_vpc`.
    fn type_name(&self) -> &'static str;

    fn schema(&self) -> Schema;

    /// Offline checks of the configuration beyond the per-attribute validators (those run automatically).
    fn validate(&self, _config: &Value, _diags: &mut Diagnostics) {}

    /// Resource-specific plan rules, run after the schema-driven ones. May call AWS (the provider is
    /// configured by then) to validate values against the account, e.g. a subnet CIDR against its VPC.
    async fn plan(&self, _ctx: &AwsContext, _plan: &mut Plan<'_>, _diags: &mut Diagnostics) {}

    /// Creates the object and returns its state. Returning a state together with error diagnostics tells
    /// Terraform the object exists but is tainted (e.g. created, then failed to become available).
    async fn create(&self, ctx: &AwsContext, planned: &Value, diags: &mut Diagnostics) -> Option<Value>;

    /// Reads the object back; `None` when it no longer exists (Terraform then plans to re-create it).
    async fn read(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) -> Option<Value>;

    async fn update(&self, ctx: &AwsContext, prior: &Value, planned: &Value, diags: &mut Diagnostics) -> Option<Value>;

    /// Deletes the object; an object that is already gone counts as deleted.
    async fn delete(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics);

    /// The state an import by `id` starts from; Terraform reads the rest right after.
    fn import_state(&self, id: &str) -> Value {
        let mut state = empty_object(&self.schema());
        if let Some(attrs) = state.attrs_mut() {
            attrs.insert("id".to_string(), Value::from(id));
        }
        state
    }

    /// Rewrites a raw JSON state written by schema version `from_version` into the current shape.
    fn upgrade_state(&self, from_version: i64, state: serde_json::Value) -> Result<serde_json::Value, String> {
        let _ = from_version;
        Ok(state)
    }
}

#[async_trait]
pub trait DataSource: Send + Sync {
    fn type_name(&self) -> &'static str;

    fn schema(&self) -> Schema;

    fn validate(&self, _config: &Value, _diags: &mut Diagnostics) {}

    async fn read(&self, ctx: &AwsContext, config: &Value, diags: &mut Diagnostics) -> Option<Value>;
}

/// An object of the schema's type with every attribute null (nested blocks: empty or null as Terraform expects).
pub fn empty_object(schema: &Schema) -> Value {
    let mut attrs: BTreeMap<String, Value> =
        schema.block.attributes.iter().map(|a| (a.name.to_string(), Value::Null)).collect();
    for b in &schema.block.blocks {
        let empty = match b.nesting {
            super::schema::Nesting::Single => Value::Null,
            super::schema::Nesting::List => Value::List(Vec::new()),
            super::schema::Nesting::Set => Value::Set(Vec::new()),
        };
        attrs.insert(b.name.to_string(), empty);
    }
    Value::Object(attrs)
}
