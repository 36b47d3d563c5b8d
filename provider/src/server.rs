//! The tfplugin6 Provider service: decodes Terraform's wire values, dispatches to the registered resources
//! and data sources, and encodes the answers. The only place that knows both protobuf and our framework.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, RwLock};

use tandem_proto::tfplugin6 as pb;
use tandem_proto::tfplugin6::provider_server::Provider;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::aws::{self, AwsContext, ProviderSettings};
use crate::framework::plan::plan_from_schema;
use crate::framework::schema::Block;
use crate::framework::{AttrPath, DataSource, Diagnostics, Resource, Schema, Type, Value, json, msgpack};
use crate::{provider_schema, resources};

type Rpc<T> = Result<Response<T>, Status>;

/// Stable codes of protocol-level failures (docs/troubleshooting.md).
mod code {
    pub const NOT_CONFIGURED: &str = "TDM-PRV-001";
    pub const BAD_VALUE: &str = "TDM-PRV-002";
    pub const UNKNOWN_TYPE: &str = "TDM-PRV-003";
    pub const NOT_SUPPORTED: &str = "TDM-PRV-004";
    pub const INTERRUPTED: &str = "TDM-PRV-005";
    pub const INVALID_ATTRIBUTE: &str = "TDM-PRV-006";
    pub const UNKNOWN_PROVIDER_CONFIG: &str = "TDM-PRV-007";
}

struct Registered<T: ?Sized> {
    imp: Box<T>,
    schema: Schema,
    ty: Type,
}

pub struct TandemProvider {
    resources: BTreeMap<&'static str, Registered<dyn Resource>>,
    data_sources: BTreeMap<&'static str, Registered<dyn DataSource>>,
    provider: Schema,
    /// Built once: the schema is static (capability get_provider_schema_optional).
    schema_response: pb::get_provider_schema::Response,
    ctx: RwLock<Option<Arc<AwsContext>>>,
    stop: watch::Sender<bool>,
}

impl Default for TandemProvider {
    fn default() -> Self {
        Self::new()
    }
}

fn capabilities() -> pb::ServerCapabilities {
    pb::ServerCapabilities { plan_destroy: true, get_provider_schema_optional: true, move_resource_state: false }
}

impl TandemProvider {
    pub fn new() -> Self {
        Self::with(resources::resources(), resources::data_sources())
    }

    /// A provider serving exactly these kinds (the registry's in production; test kinds in unit tests).
    pub fn with(resources: Vec<Box<dyn Resource>>, data_sources: Vec<Box<dyn DataSource>>) -> Self {
        let resources: BTreeMap<_, _> = resources
            .into_iter()
            .map(|r| {
                let schema = r.schema();
                (r.type_name(), Registered { ty: schema.ty(), schema, imp: r })
            })
            .collect();
        let data_sources: BTreeMap<_, _> = data_sources
            .into_iter()
            .map(|d| {
                let schema = d.schema();
                (d.type_name(), Registered { ty: schema.ty(), schema, imp: d })
            })
            .collect();
        let provider = provider_schema::schema();
        let schema_response = pb::get_provider_schema::Response {
            provider: Some(provider.to_proto()),
            resource_schemas: resources.iter().map(|(k, r)| (k.to_string(), r.schema.to_proto())).collect(),
            data_source_schemas: data_sources.iter().map(|(k, d)| (k.to_string(), d.schema.to_proto())).collect(),
            server_capabilities: Some(capabilities()),
            ..Default::default()
        };
        TandemProvider {
            resources,
            data_sources,
            provider,
            schema_response,
            ctx: RwLock::new(None),
            stop: watch::channel(false).0,
        }
    }

    fn resource(&self, name: &str, diags: &mut Diagnostics) -> Option<&Registered<dyn Resource>> {
        let r = self.resources.get(name);
        if r.is_none() {
            diags.error(
                code::UNKNOWN_TYPE,
                format!("unknown resource type {name:?}"),
                "This provider has no such resource type.",
            );
        }
        r
    }

    fn data_source(&self, name: &str, diags: &mut Diagnostics) -> Option<&Registered<dyn DataSource>> {
        let d = self.data_sources.get(name);
        if d.is_none() {
            diags.error(
                code::UNKNOWN_TYPE,
                format!("unknown data source {name:?}"),
                "This provider has no such data source.",
            );
        }
        d
    }

    fn context(&self, diags: &mut Diagnostics) -> Option<Arc<AwsContext>> {
        let ctx = self.ctx.read().ok().and_then(|g| g.clone());
        if ctx.is_none() {
            diags.error(
                code::NOT_CONFIGURED,
                "the tandem provider is not configured",
                "ConfigureProvider has not succeeded.",
            );
        }
        ctx
    }

    /// Runs a long AWS operation, abandoning it when Terraform asks the provider to stop (Ctrl-C).
    async fn interruptible<T>(&self, diags: &mut Diagnostics, fut: impl Future<Output = T>) -> Option<T> {
        let mut stop = self.stop.subscribe();
        tokio::select! {
            v = fut => Some(v),
            _ = stop.wait_for(|stopped| *stopped) => {
                diags.error(code::INTERRUPTED, "interrupted", "Terraform asked the provider to stop; the operation was abandoned.");
                None
            }
        }
    }
}

fn decode(dv: Option<&pb::DynamicValue>, ty: &Type, what: &str, diags: &mut Diagnostics) -> Option<Value> {
    let Some(dv) = dv else { return Some(Value::Null) };
    let result = if !dv.msgpack.is_empty() {
        msgpack::decode(&dv.msgpack, ty)
    } else if !dv.json.is_empty() {
        json::decode_value(&dv.json, ty)
    } else {
        Ok(Value::Null)
    };
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            diags.error(
                e.code(),
                format!("decoding the {what}: {e}"),
                "Terraform sent a value that does not fit the schema.",
            );
            None
        }
    }
}

fn encode(v: &Value, ty: &Type, diags: &mut Diagnostics) -> Option<pb::DynamicValue> {
    match msgpack::encode(v, ty) {
        Ok(msgpack) => Some(pb::DynamicValue { msgpack, json: Vec::new() }),
        Err(e) => {
            diags.error(code::BAD_VALUE, format!("encoding a value: {e}"), "This is a bug in the provider.");
            None
        }
    }
}

fn null_value() -> Option<pb::DynamicValue> {
    // msgpack nil
    Some(pb::DynamicValue { msgpack: vec![0xc0], json: Vec::new() })
}

/// Runs every attribute validator of `block` (and of its nested blocks) on the known, non-null values.
fn validate_block(block: &Block, value: &Value, path: &AttrPath, diags: &mut Diagnostics) {
    for attr in &block.attributes {
        let v = value.attr(attr.name);
        if v.is_null() || !v.is_wholly_known() {
            continue;
        }
        for check in &attr.validators {
            if let Err(msg) = check(v) {
                let at = AttrPath(path.0.iter().cloned().chain(AttrPath::root(attr.name).0).collect());
                diags.error_at(at.clone(), code::INVALID_ATTRIBUTE, format!("invalid value for {at}"), msg);
            }
        }
    }
    for nested in &block.blocks {
        let v = value.attr(nested.name);
        let base = AttrPath(path.0.iter().cloned().chain(AttrPath::root(nested.name).0).collect());
        match v {
            Value::List(items) | Value::Set(items) => {
                for (i, item) in items.iter().enumerate() {
                    validate_block(&nested.block, item, &base.clone().index(i), diags);
                }
            }
            Value::Object(_) => validate_block(&nested.block, v, &base, diags),
            _ => {}
        }
    }
}

/// Attributes a resource's read-back does not know (e.g. the `timeouts` block, which only configures the
/// provider) keep the value Terraform planned or had in state.
fn carry_missing(result: &mut Value, from: &Value) {
    if let (Some(attrs), Some(source)) = (result.attrs_mut(), from.attrs()) {
        for (k, v) in source {
            attrs.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
}

/// Drops attributes the current schema no longer has from a raw JSON state (as Terraform's SDKs do).
fn prune_json(v: &mut serde_json::Value, ty: &Type) {
    match (v, ty) {
        (serde_json::Value::Object(map), Type::Object(attrs)) => {
            map.retain(|k, _| attrs.contains_key(k));
            for (k, t) in attrs {
                if let Some(inner) = map.get_mut(k) {
                    prune_json(inner, t);
                }
            }
        }
        (serde_json::Value::Array(items), Type::List(t) | Type::Set(t)) => {
            items.iter_mut().for_each(|i| prune_json(i, t))
        }
        (serde_json::Value::Object(map), Type::Map(t)) => map.values_mut().for_each(|i| prune_json(i, t)),
        _ => {}
    }
}

#[tonic::async_trait]
impl Provider for TandemProvider {
    async fn get_metadata(&self, _: Request<pb::get_metadata::Request>) -> Rpc<pb::get_metadata::Response> {
        Ok(Response::new(pb::get_metadata::Response {
            server_capabilities: Some(capabilities()),
            resources: self
                .resources
                .keys()
                .map(|k| pb::get_metadata::ResourceMetadata { type_name: k.to_string() })
                .collect(),
            data_sources: self
                .data_sources
                .keys()
                .map(|k| pb::get_metadata::DataSourceMetadata { type_name: k.to_string() })
                .collect(),
            ..Default::default()
        }))
    }

    async fn get_provider_schema(
        &self,
        _: Request<pb::get_provider_schema::Request>,
    ) -> Rpc<pb::get_provider_schema::Response> {
        Ok(Response::new(self.schema_response.clone()))
    }

    async fn validate_provider_config(
        &self,
        req: Request<pb::validate_provider_config::Request>,
    ) -> Rpc<pb::validate_provider_config::Response> {
        let req = req.into_inner();
        let mut diags = Diagnostics::new();
        if let Some(config) = decode(req.config.as_ref(), &self.provider.ty(), "provider configuration", &mut diags) {
            validate_block(&self.provider.block, &config, &AttrPath::default(), &mut diags);
        }
        Ok(Response::new(pb::validate_provider_config::Response { diagnostics: diags.to_proto() }))
    }

    async fn validate_resource_config(
        &self,
        req: Request<pb::validate_resource_config::Request>,
    ) -> Rpc<pb::validate_resource_config::Response> {
        let req = req.into_inner();
        let mut diags = Diagnostics::new();
        if let Some(r) = self.resource(&req.type_name, &mut diags)
            && let Some(config) = decode(req.config.as_ref(), &r.ty, "resource configuration", &mut diags)
        {
            validate_block(&r.schema.block, &config, &AttrPath::default(), &mut diags);
            r.imp.validate(&config, &mut diags);
        }
        Ok(Response::new(pb::validate_resource_config::Response { diagnostics: diags.to_proto() }))
    }

    async fn validate_data_resource_config(
        &self,
        req: Request<pb::validate_data_resource_config::Request>,
    ) -> Rpc<pb::validate_data_resource_config::Response> {
        let req = req.into_inner();
        let mut diags = Diagnostics::new();
        if let Some(d) = self.data_source(&req.type_name, &mut diags)
            && let Some(config) = decode(req.config.as_ref(), &d.ty, "data source configuration", &mut diags)
        {
            validate_block(&d.schema.block, &config, &AttrPath::default(), &mut diags);
            d.imp.validate(&config, &mut diags);
        }
        Ok(Response::new(pb::validate_data_resource_config::Response { diagnostics: diags.to_proto() }))
    }

    async fn upgrade_resource_state(
        &self,
        req: Request<pb::upgrade_resource_state::Request>,
    ) -> Rpc<pb::upgrade_resource_state::Response> {
        let req = req.into_inner();
        let mut diags = Diagnostics::new();
        let mut upgraded_state = None;
        if let Some(r) = self.resource(&req.type_name, &mut diags) {
            let raw = req.raw_state.map(|s| s.json).unwrap_or_default();
            let parsed = if raw.is_empty() {
                Ok(serde_json::Value::Null)
            } else {
                serde_json::from_slice::<serde_json::Value>(&raw).map_err(|e| e.to_string())
            };
            let upgraded = parsed.and_then(|state| {
                if req.version < r.schema.version { r.imp.upgrade_state(req.version, state) } else { Ok(state) }
            });
            match upgraded {
                Ok(mut state) => {
                    prune_json(&mut state, &r.ty);
                    let bytes = serde_json::to_vec(&state).unwrap_or_default();
                    if let Some(v) = decode(
                        Some(&pb::DynamicValue { msgpack: Vec::new(), json: bytes }),
                        &r.ty,
                        "stored state",
                        &mut diags,
                    ) {
                        upgraded_state = encode(&v, &r.ty, &mut diags);
                    }
                }
                Err(e) => diags.error(
                    code::BAD_VALUE,
                    format!("upgrading the stored state of {} from schema version {}: {e}", req.type_name, req.version),
                    "",
                ),
            }
        }
        Ok(Response::new(pb::upgrade_resource_state::Response { upgraded_state, diagnostics: diags.to_proto() }))
    }

    async fn configure_provider(
        &self,
        req: Request<pb::configure_provider::Request>,
    ) -> Rpc<pb::configure_provider::Response> {
        let req = req.into_inner();
        let mut diags = Diagnostics::new();
        if let Some(config) = decode(req.config.as_ref(), &self.provider.ty(), "provider configuration", &mut diags) {
            if !config.is_wholly_known() {
                diags.error(
                    code::UNKNOWN_PROVIDER_CONFIG,
                    "the provider configuration depends on values known only after apply",
                    "Configure the tandem provider from variables or literals, not from resources created in the same run.",
                );
            } else {
                let settings = ProviderSettings::from_value(&config);
                match aws::config::connect(&settings).await {
                    Ok(ctx) => {
                        if let Ok(mut slot) = self.ctx.write() {
                            *slot = Some(Arc::new(ctx));
                        }
                    }
                    Err(e) => diags.error(e.code(), &e, e.hint()),
                }
            }
        }
        Ok(Response::new(pb::configure_provider::Response { diagnostics: diags.to_proto() }))
    }

    async fn read_resource(&self, req: Request<pb::read_resource::Request>) -> Rpc<pb::read_resource::Response> {
        let req = req.into_inner();
        let mut diags = Diagnostics::new();
        let mut new_state = None;
        if let (Some(r), Some(ctx)) = (self.resource(&req.type_name, &mut diags), self.context(&mut diags))
            && let Some(state) = decode(req.current_state.as_ref(), &r.ty, "current state", &mut diags)
        {
            let read = async {
                let mut d = Diagnostics::new();
                let v = r.imp.read(&ctx, &state, &mut d).await;
                (v, d)
            };
            match self.interruptible(&mut diags, read).await {
                Some((Some(mut v), d)) => {
                    diags.extend(d);
                    carry_missing(&mut v, &state);
                    new_state = encode(&v, &r.ty, &mut diags);
                }
                Some((None, d)) => {
                    diags.extend(d);
                    new_state = null_value();
                }
                None => {}
            }
        }
        Ok(Response::new(pb::read_resource::Response {
            new_state,
            diagnostics: diags.to_proto(),
            private: req.private,
            deferred: None,
        }))
    }

    async fn plan_resource_change(
        &self,
        req: Request<pb::plan_resource_change::Request>,
    ) -> Rpc<pb::plan_resource_change::Response> {
        let req = req.into_inner();
        let mut diags = Diagnostics::new();
        let mut response =
            pb::plan_resource_change::Response { planned_private: req.prior_private.clone(), ..Default::default() };
        if let Some(r) = self.resource(&req.type_name, &mut diags) {
            let prior = decode(req.prior_state.as_ref(), &r.ty, "prior state", &mut diags);
            let proposed = decode(req.proposed_new_state.as_ref(), &r.ty, "proposed new state", &mut diags);
            let config = decode(req.config.as_ref(), &r.ty, "configuration", &mut diags);
            if let (Some(prior), Some(proposed), Some(config)) = (prior, proposed, config) {
                if proposed.is_null() {
                    // Destroy: nothing to plan but the absence.
                    response.planned_state = null_value();
                } else if let Some(ctx) = self.context(&mut diags) {
                    let mut plan = plan_from_schema(&r.schema.block, &prior, &config, proposed);
                    r.imp.plan(&ctx, &mut plan, &mut diags).await;
                    response.planned_state = encode(&plan.planned, &r.ty, &mut diags);
                    response.requires_replace = plan.requires_replace.iter().map(AttrPath::to_proto).collect();
                }
            }
        }
        response.diagnostics = diags.to_proto();
        Ok(Response::new(response))
    }

    async fn apply_resource_change(
        &self,
        req: Request<pb::apply_resource_change::Request>,
    ) -> Rpc<pb::apply_resource_change::Response> {
        let req = req.into_inner();
        let mut diags = Diagnostics::new();
        let mut new_state = None;
        if let (Some(r), Some(ctx)) = (self.resource(&req.type_name, &mut diags), self.context(&mut diags)) {
            let prior = decode(req.prior_state.as_ref(), &r.ty, "prior state", &mut diags);
            let planned = decode(req.planned_state.as_ref(), &r.ty, "planned state", &mut diags);
            if let (Some(prior), Some(planned)) = (prior, planned) {
                let op = async {
                    let mut d = Diagnostics::new();
                    let state = if planned.is_null() {
                        r.imp.delete(&ctx, &prior, &mut d).await;
                        // A failed delete keeps the object in state.
                        if d.has_errors() { Some(prior.clone()) } else { None }
                    } else if prior.is_null() {
                        r.imp.create(&ctx, &planned, &mut d).await
                    } else {
                        r.imp.update(&ctx, &prior, &planned, &mut d).await
                    };
                    (state, d)
                };
                // Not interruptible: abandoning a create would leave an object AWS made but Terraform never
                // learns of. Waiters are bounded; Terraform kills the process on a second interrupt.
                let (state, d) = op.await;
                diags.extend(d);
                new_state = match state {
                    Some(mut v) => {
                        carry_missing(&mut v, &planned);
                        encode(&v, &r.ty, &mut diags)
                    }
                    None => null_value(),
                };
            }
        }
        Ok(Response::new(pb::apply_resource_change::Response {
            new_state,
            private: req.planned_private,
            diagnostics: diags.to_proto(),
            legacy_type_system: false,
        }))
    }

    async fn import_resource_state(
        &self,
        req: Request<pb::import_resource_state::Request>,
    ) -> Rpc<pb::import_resource_state::Response> {
        let req = req.into_inner();
        let mut diags = Diagnostics::new();
        let mut imported_resources = Vec::new();
        if let Some(r) = self.resource(&req.type_name, &mut diags) {
            if req.id.trim().is_empty() {
                diags.error(
                    code::INVALID_ATTRIBUTE,
                    "importing needs an ID",
                    "Give the AWS ID, e.g. vpc-0123456789abcdef0.",
                );
            } else if let Some(state) = encode(&r.imp.import_state(&req.id), &r.ty, &mut diags) {
                imported_resources.push(pb::import_resource_state::ImportedResource {
                    type_name: req.type_name.clone(),
                    state: Some(state),
                    private: Vec::new(),
                });
            }
        }
        Ok(Response::new(pb::import_resource_state::Response {
            imported_resources,
            diagnostics: diags.to_proto(),
            deferred: None,
        }))
    }

    async fn move_resource_state(
        &self,
        req: Request<pb::move_resource_state::Request>,
    ) -> Rpc<pb::move_resource_state::Response> {
        let req = req.into_inner();
        let mut diags = Diagnostics::new();
        diags.error(
            code::NOT_SUPPORTED,
            format!("moving state from {} to {} is not supported", req.source_type_name, req.target_type_name),
            "Import the object into the new resource type instead.",
        );
        Ok(Response::new(pb::move_resource_state::Response { diagnostics: diags.to_proto(), ..Default::default() }))
    }

    async fn read_data_source(
        &self,
        req: Request<pb::read_data_source::Request>,
    ) -> Rpc<pb::read_data_source::Response> {
        let req = req.into_inner();
        let mut diags = Diagnostics::new();
        let mut state = None;
        if let (Some(d), Some(ctx)) = (self.data_source(&req.type_name, &mut diags), self.context(&mut diags))
            && let Some(config) = decode(req.config.as_ref(), &d.ty, "data source configuration", &mut diags)
        {
            let read = async {
                let mut dd = Diagnostics::new();
                let v = d.imp.read(&ctx, &config, &mut dd).await;
                (v, dd)
            };
            if let Some((v, dd)) = self.interruptible(&mut diags, read).await {
                diags.extend(dd);
                if let Some(v) = v {
                    state = encode(&v, &d.ty, &mut diags);
                }
            }
        }
        Ok(Response::new(pb::read_data_source::Response { state, diagnostics: diags.to_proto(), deferred: None }))
    }

    async fn validate_ephemeral_resource_config(
        &self,
        req: Request<pb::validate_ephemeral_resource_config::Request>,
    ) -> Rpc<pb::validate_ephemeral_resource_config::Response> {
        let mut diags = Diagnostics::new();
        diags.error(
            code::NOT_SUPPORTED,
            format!("unknown ephemeral resource {:?}", req.into_inner().type_name),
            "This provider has no ephemeral resources.",
        );
        Ok(Response::new(pb::validate_ephemeral_resource_config::Response { diagnostics: diags.to_proto() }))
    }

    async fn open_ephemeral_resource(
        &self,
        req: Request<pb::open_ephemeral_resource::Request>,
    ) -> Rpc<pb::open_ephemeral_resource::Response> {
        let mut diags = Diagnostics::new();
        diags.error(
            code::NOT_SUPPORTED,
            format!("unknown ephemeral resource {:?}", req.into_inner().type_name),
            "This provider has no ephemeral resources.",
        );
        Ok(Response::new(pb::open_ephemeral_resource::Response { diagnostics: diags.to_proto(), ..Default::default() }))
    }

    async fn get_functions(&self, _: Request<pb::get_functions::Request>) -> Rpc<pb::get_functions::Response> {
        Ok(Response::new(pb::get_functions::Response::default()))
    }

    async fn call_function(&self, req: Request<pb::call_function::Request>) -> Rpc<pb::call_function::Response> {
        Ok(Response::new(pb::call_function::Response {
            error: Some(pb::FunctionError {
                text: format!(
                    "[{}] this provider defines no function {:?}",
                    code::NOT_SUPPORTED,
                    req.into_inner().name
                ),
                function_argument: None,
            }),
            ..Default::default()
        }))
    }

    async fn stop_provider(&self, _: Request<pb::stop_provider::Request>) -> Rpc<pb::stop_provider::Response> {
        self.stop.send_replace(true);
        Ok(Response::new(pb::stop_provider::Response { error: String::new() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn schema_lists_every_resource_and_capabilities() {
        let p = TandemProvider::new();
        let s = p.get_provider_schema(Request::new(pb::get_provider_schema::Request {})).await.unwrap().into_inner();
        assert!(s.resource_schemas.contains_key("tandem_vpc"));
        assert!(s.data_source_schemas.contains_key("tandem_availability_zones"));
        let caps = s.server_capabilities.unwrap();
        assert!(caps.plan_destroy && caps.get_provider_schema_optional);
    }

    #[tokio::test]
    async fn invalid_cidr_is_reported_on_the_attribute() {
        let p = TandemProvider::new();
        let ty = &p.resources["tandem_vpc"].ty;
        let mut cfg = crate::framework::resource::empty_object(&p.resources["tandem_vpc"].schema);
        cfg.attrs_mut().unwrap().insert("cidr_block".into(), Value::from("10.0.0.0/33"));
        let req = pb::validate_resource_config::Request {
            type_name: "tandem_vpc".into(),
            config: encode(&cfg, ty, &mut Diagnostics::new()),
            client_capabilities: None,
        };
        let out = p.validate_resource_config(Request::new(req)).await.unwrap().into_inner();
        assert_eq!(out.diagnostics.len(), 1);
        let path = out.diagnostics[0].attribute.as_ref().unwrap();
        assert_eq!(path.steps.len(), 1);
        assert!(out.diagnostics[0].summary.contains("TDM-PRV-006"));
    }

    #[tokio::test]
    async fn resource_calls_before_configure_say_so() {
        let p = TandemProvider::new();
        let req = pb::read_resource::Request { type_name: "tandem_vpc".into(), ..Default::default() };
        let out = p.read_resource(Request::new(req)).await.unwrap().into_inner();
        assert!(out.diagnostics[0].summary.contains(code::NOT_CONFIGURED));
    }

    #[tokio::test]
    async fn unknown_type_names_are_errors_not_panics() {
        let p = TandemProvider::new();
        let req = pb::import_resource_state::Request {
            type_name: "tandem_nope".into(),
            id: "x".into(),
            client_capabilities: None,
        };
        let out = p.import_resource_state(Request::new(req)).await.unwrap().into_inner();
        assert!(out.diagnostics[0].summary.contains(code::UNKNOWN_TYPE));
    }

    /// A kind at schema version 1 whose version 0 called `name` what is now `title`.
    struct Renamed;

    #[async_trait::async_trait]
    impl Resource for Renamed {
        fn type_name(&self) -> &'static str {
            "tandem_renamed"
        }
        fn schema(&self) -> Schema {
            use crate::framework::{Attribute, Block};
            Schema::new(
                1,
                Block::new("t")
                    .attr(Attribute::computed("id", Type::String))
                    .attr(Attribute::optional("title", Type::String)),
            )
        }
        fn upgrade_state(&self, from: i64, mut state: serde_json::Value) -> Result<serde_json::Value, String> {
            if from == 0 {
                let obj = state.as_object_mut().ok_or("not an object")?;
                let name = obj.remove("name").unwrap_or(serde_json::Value::Null);
                obj.insert("title".into(), name);
            }
            Ok(state)
        }
        async fn create(&self, _: &AwsContext, _: &Value, _: &mut Diagnostics) -> Option<Value> {
            None
        }
        async fn read(&self, _: &AwsContext, s: &Value, _: &mut Diagnostics) -> Option<Value> {
            Some(s.clone())
        }
        async fn update(&self, _: &AwsContext, _: &Value, p: &Value, _: &mut Diagnostics) -> Option<Value> {
            Some(p.clone())
        }
        async fn delete(&self, _: &AwsContext, _: &Value, _: &mut Diagnostics) {}
    }

    #[tokio::test]
    async fn old_state_versions_are_upgraded_and_unknown_attributes_dropped() {
        let p = TandemProvider::with(vec![Box::new(Renamed)], Vec::new());
        let req = pb::upgrade_resource_state::Request {
            type_name: "tandem_renamed".into(),
            version: 0,
            raw_state: Some(pb::RawState {
                json: br#"{"id":"x-1","name":"old","legacy":true}"#.to_vec(),
                ..Default::default()
            }),
        };
        let out = p.upgrade_resource_state(Request::new(req)).await.unwrap().into_inner();
        assert!(out.diagnostics.is_empty(), "{:?}", out.diagnostics);
        let ty = &p.resources["tandem_renamed"].ty;
        let v = msgpack::decode(&out.upgraded_state.unwrap().msgpack, ty).unwrap();
        assert_eq!(v.attr("title"), &Value::from("old"));
        assert_eq!(v.attr("id"), &Value::from("x-1"));
    }

    #[tokio::test]
    async fn private_state_round_trips_through_plan_and_read() {
        let p = TandemProvider::with(vec![Box::new(Renamed)], Vec::new());
        let req = pb::read_resource::Request {
            type_name: "tandem_renamed".into(),
            private: b"opaque".to_vec(),
            ..Default::default()
        };
        // Not configured: an error, but the private bytes still come back untouched.
        let out = p.read_resource(Request::new(req)).await.unwrap().into_inner();
        assert_eq!(out.private, b"opaque".to_vec());
    }

    #[test]
    fn read_back_keeps_config_only_blocks() {
        let mut read = Value::object([("id", Value::from("vpc-1"))]);
        let prior =
            Value::object([("id", Value::from("old")), ("timeouts", Value::object([("create", Value::from("1m"))]))]);
        carry_missing(&mut read, &prior);
        assert_eq!(read.attr("id"), &Value::from("vpc-1"));
        assert_eq!(read.attr("timeouts").attr("create"), &Value::from("1m"));
    }

    #[test]
    fn prune_drops_attributes_the_schema_no_longer_has() {
        let mut v = serde_json::json!({"id": "vpc-1", "gone": 1, "tags": {"a": "b"}});
        let ty = Type::Object(
            [("id".to_string(), Type::String), ("tags".to_string(), Type::Map(Box::new(Type::String)))].into(),
        );
        prune_json(&mut v, &ty);
        assert_eq!(v, serde_json::json!({"id": "vpc-1", "tags": {"a": "b"}}));
    }
}
