//! `tandem_cluster`: the HA cluster definition. Its arguments mirror the runtime's cluster config model
//! (`tandem_runtime::config`); plan validates them with the model's own rules plus the checks that need AWS,
//! and the resource hands the result to the nodes: one rendered config, one `#cloud-config` user_data and
//! the least-privilege IAM policy, plus generated secrets (heartbeat key, cluster CA, node certificates).
//!
//! Nothing is created in AWS: the state is the rendered output. The cluster takes only values known before
//! the instances exist (private IPs, VIP, EIP allocation, zone ID, VPC and route table IDs); the instances
//! take their user_data from it, so there is no dependency cycle.

mod checks;
mod iam;
mod model;
mod schema;
mod secrets;
mod user_data;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use async_trait::async_trait;
use tandem_runtime::config::{Config, render};

use self::model::Built;
use self::user_data::Source;
use crate::aws::AwsContext;
use crate::framework::{AttrPath, Diagnostics, Plan, Resource, Schema, Value};

pub struct Cluster;

mod code {
    pub const BAD_SOURCE: &str = "TDM-CLU-012";
    pub const BAD_SHA256: &str = "TDM-CLU-013";
    // TDM-CLU-016 is retired (its warning was about stop_instance fencing, which was removed); never reuse it.
    pub const USER_DATA_TOO_LARGE: &str = "TDM-CLU-017";
    pub const SECRETS_FAILED: &str = "TDM-CLU-018";
    pub const UNKNOWN_AT_APPLY: &str = "TDM-CLU-019";
}

/// The secrets of a cluster as state holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Secrets {
    heartbeat_key: String,
    ca_cert_pem: String,
    ca_key_pem: String,
    node_cert_pem: BTreeMap<String, String>,
    node_key_pem: BTreeMap<String, String>,
}

impl Secrets {
    /// The secrets in `v`, when all of them are known.
    fn from_value(v: &Value) -> Option<Secrets> {
        let map = |name: &str| -> Option<BTreeMap<String, String>> {
            v.attr(name).entries()?.iter().map(|(k, x)| Some((k.clone(), x.as_str()?.to_string()))).collect()
        };
        Some(Secrets {
            heartbeat_key: v.attr("heartbeat_key").as_str()?.to_string(),
            ca_cert_pem: v.attr("ca_cert_pem").as_str()?.to_string(),
            ca_key_pem: v.attr("ca_key_pem").as_str()?.to_string(),
            node_cert_pem: map("node_cert_pem")?,
            node_key_pem: map("node_key_pem")?,
        })
    }

    fn set_into(&self, v: &mut Value) {
        let map = |m: &BTreeMap<String, String>| {
            Value::Map(m.iter().map(|(k, x)| (k.clone(), Value::from(x.as_str()))).collect())
        };
        if let Some(attrs) = v.attrs_mut() {
            attrs.insert("heartbeat_key".into(), Value::from(self.heartbeat_key.as_str()));
            attrs.insert("ca_cert_pem".into(), Value::from(self.ca_cert_pem.as_str()));
            attrs.insert("ca_key_pem".into(), Value::from(self.ca_key_pem.as_str()));
            attrs.insert("node_cert_pem".into(), map(&self.node_cert_pem));
            attrs.insert("node_key_pem".into(), map(&self.node_key_pem));
        }
    }
}

const SECRET_ATTRS: [&str; 5] = ["heartbeat_key", "ca_cert_pem", "ca_key_pem", "node_cert_pem", "node_key_pem"];
const OUTPUT_ATTRS: [&str; 5] = ["node_config", "user_data", "iam_policy_json", "lease_table", "ports"];

/// Each node's (name, private IP) as written in `v`, when all are known: what its certificate names.
fn node_identities(v: &Value) -> Option<BTreeMap<String, String>> {
    v.attr("node")
        .elements()
        .iter()
        .map(|n| Some((n.attr("name").as_str()?.to_string(), n.attr("private_ip").as_str()?.to_string())))
        .collect()
}

/// True when any user input differs between the prior state and the plan (rotate_secrets aside).
fn inputs_changed(prior: &Value, planned: &Value) -> bool {
    let (Some(p), Some(n)) = (prior.attrs(), planned.attrs()) else { return true };
    n.iter().any(|(k, v)| !schema::COMPUTED.contains(&k.as_str()) && k != "rotate_secrets" && p.get(k) != Some(v))
}

/// The install source and checksum, with diagnostics on their attributes.
fn read_source(v: &Value, diags: &mut Diagnostics) -> Option<(Source, Option<String>)> {
    let source = match v.attr("tandemd_source").as_str() {
        None if v.attr("tandemd_source").is_unknown() => None,
        None => Some(Source::Ami),
        Some(text) => match Source::parse(text) {
            Ok(s) => Some(s),
            Err(message) => {
                diags.error_at(
                    AttrPath::root("tandemd_source"),
                    code::BAD_SOURCE,
                    message,
                    "Use \"ami\" when the image already has /usr/local/bin/tandemd, else an https:// URL or an \
                     s3://bucket/key path of the binary.",
                );
                None
            }
        },
    };
    let sha = v.attr("tandemd_sha256");
    let sum = match sha.as_str() {
        None => None,
        Some(text) => match user_data::parse_sha256(text) {
            Ok(s) => Some(s),
            Err(message) => {
                diags.error_at(
                    AttrPath::root("tandemd_sha256"),
                    code::BAD_SHA256,
                    message,
                    "Write the digest as sha256sum prints it.",
                );
                None
            }
        },
    };
    if source == Some(Source::Ami) && !sha.is_null() {
        diags.error_at(
            AttrPath::root("tandemd_sha256"),
            code::BAD_SHA256,
            "tandemd_sha256 applies only to a downloaded tandemd",
            "Remove tandemd_sha256, or set tandemd_source to the URL it checks.",
        );
    }
    if sha.is_unknown() {
        return None;
    }
    source.map(|s| (s, sum))
}

/// Everything rendered from a valid model.
struct Outputs {
    node_config: BTreeMap<String, String>,
    iam_policy_json: String,
    lease_table: String,
    ports: Value,
}

fn outputs(ctx: &AwsContext, config: &Config, source: &Source) -> Outputs {
    let rendered = render(config);
    let node_config = config
        .nodes
        .iter()
        .map(|n| {
            let header = format!(
                "# tandem cluster {:?}: the config of node {:?} (tandemd --config {} --node {})\n",
                config.cluster.name,
                n.name,
                user_data::CONFIG_PATH,
                n.name
            );
            (n.name.clone(), format!("{header}{rendered}"))
        })
        .collect();
    let account = if ctx.account_id.is_empty() { "*" } else { ctx.account_id.as_str() };
    let scope = iam::Scope { partition: ctx.partition, region: &ctx.region, account };
    let ports = Value::List(
        config
            .ports()
            .into_iter()
            .map(|(what, protocol, port)| {
                Value::object([
                    ("description", Value::from(what)),
                    ("protocol", Value::from(protocol)),
                    ("port", Value::from(i64::from(port))),
                ])
            })
            .collect(),
    );
    Outputs {
        node_config,
        iam_policy_json: iam::policy(config, &scope, source),
        lease_table: config.lease_table(),
        ports,
    }
}

fn user_data_of(
    config: &Config,
    node_config: &BTreeMap<String, String>,
    secrets: &Secrets,
    source: &Source,
    sha: Option<&str>,
    diags: &mut Diagnostics,
) -> Value {
    let mut out = BTreeMap::new();
    for n in &config.nodes {
        let files = user_data::NodeFiles {
            cluster: &config.cluster.name,
            node: &n.name,
            config: node_config.get(&n.name).map_or("", String::as_str),
            heartbeat_key: &secrets.heartbeat_key,
            ca_cert_pem: &secrets.ca_cert_pem,
            node_cert_pem: secrets.node_cert_pem.get(&n.name).map_or("", String::as_str),
            node_key_pem: secrets.node_key_pem.get(&n.name).map_or("", String::as_str),
        };
        let doc = user_data::render(&files, source, sha);
        if doc.len() > user_data::MAX_USER_DATA {
            diags.warning(
                code::USER_DATA_TOO_LARGE,
                format!("the user_data of node {:?} is {} bytes, over EC2's limit of 16 KiB", n.name, doc.len()),
                "Shorten the cluster config (fewer monitors or resources), or deliver node_config another way.",
            );
        }
        out.insert(n.name.clone(), Value::from(doc));
    }
    Value::Map(out)
}

fn string_map(m: &BTreeMap<String, String>) -> Value {
    Value::Map(m.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect())
}

/// New or kept secrets for `config`'s nodes: everything new without `prior`; otherwise the heartbeat key and
/// CA kept, and each node's certificate kept when the node has the same private IP as before.
fn resolve_secrets(
    config: &Config,
    prior: Option<&Secrets>,
    prior_nodes: &BTreeMap<String, String>,
) -> Result<Secrets, secrets::SecretError> {
    let (heartbeat_key, ca_cert_pem, ca_key_pem) = match prior {
        Some(p) => (p.heartbeat_key.clone(), p.ca_cert_pem.clone(), p.ca_key_pem.clone()),
        None => {
            let (cert, key) = secrets::new_ca()?;
            (secrets::heartbeat_key()?, cert, key)
        }
    };
    let mut s = Secrets {
        heartbeat_key,
        ca_cert_pem,
        ca_key_pem,
        node_cert_pem: BTreeMap::new(),
        node_key_pem: BTreeMap::new(),
    };
    for n in &config.nodes {
        let same = prior_nodes.get(&n.name).is_some_and(|ip| ip.parse::<Ipv4Addr>().ok() == Some(n.private_ip));
        let kept =
            prior.filter(|_| same).and_then(|p| Some((p.node_cert_pem.get(&n.name)?, p.node_key_pem.get(&n.name)?)));
        let (cert, key) = match kept {
            Some((c, k)) => (c.clone(), k.clone()),
            None => secrets::node_cert(&s.ca_key_pem, &n.name, n.private_ip)?,
        };
        s.node_cert_pem.insert(n.name.clone(), cert);
        s.node_key_pem.insert(n.name.clone(), key);
    }
    Ok(s)
}

/// Builds and checks the model from the planned values (all known at apply), then fills in secrets and
/// outputs. `None` (with errors) when a check fails: nothing is rendered.
async fn apply(ctx: &AwsContext, prior: &Value, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
    let mut built: Built = model::build(planned, diags);
    let source = read_source(planned, diags);
    if !built.complete() {
        diags.error(
            code::UNKNOWN_AT_APPLY,
            "the cluster's configuration still has unknown values at apply",
            "Every argument of tandem_cluster must be known when it is applied; this is a provider bug if it happens.",
        );
    }
    checks::run(ctx, &mut built, diags).await;
    built.validate_into(diags);
    if diags.has_errors() {
        return None;
    }
    let (source, sha) = source?;

    let keep = Secrets::from_value(planned).or_else(|| {
        // Unknown in the plan: kept secrets (CA, key) come from the prior state unless they were rotated.
        let rotated = prior.is_null() || prior.attr("rotate_secrets") != planned.attr("rotate_secrets");
        if rotated { None } else { Secrets::from_value(prior) }
    });
    let secrets = match Secrets::from_value(planned) {
        Some(s) => s,
        None => {
            let prior_nodes = node_identities(prior).unwrap_or_default();
            match resolve_secrets(&built.config, keep.as_ref(), &prior_nodes) {
                Ok(s) => s,
                Err(e) => {
                    diags.error(
                        code::SECRETS_FAILED,
                        format!("generating the cluster's secrets: {e}"),
                        "Retry the apply.",
                    );
                    return None;
                }
            }
        }
    };

    let out = outputs(ctx, &built.config, &source);
    let mut state = planned.clone();
    secrets.set_into(&mut state);
    let node_config = match planned.attr("node_config") {
        v if v.is_wholly_known() && !v.is_null() => v.clone(),
        _ => string_map(&out.node_config),
    };
    let configs: BTreeMap<String, String> = node_config
        .entries()
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default();
    let user_data = user_data_of(&built.config, &configs, &secrets, &source, sha.as_deref(), diags);
    let known_or = |name: &str, computed: Value| -> Value {
        let v = planned.attr(name);
        if v.is_wholly_known() && !v.is_null() { v.clone() } else { computed }
    };
    let values = [
        ("id", known_or("id", Value::from(built.config.cluster.name.as_str()))),
        ("node_config", node_config.clone()),
        ("user_data", known_or("user_data", user_data)),
        ("iam_policy_json", known_or("iam_policy_json", Value::from(out.iam_policy_json))),
        ("lease_table", known_or("lease_table", Value::from(out.lease_table))),
        ("ports", known_or("ports", out.ports)),
    ];
    if let Some(attrs) = state.attrs_mut() {
        for (k, v) in values {
            attrs.insert(k.to_string(), v);
        }
    }
    Some(state)
}

#[async_trait]
impl Resource for Cluster {
    fn type_name(&self) -> &'static str {
        "tandem_cluster"
    }

    fn schema(&self) -> Schema {
        schema::schema()
    }

    fn validate(&self, config: &Value, diags: &mut Diagnostics) {
        let built = model::build(config, diags);
        built.validate_into(diags);
        read_source(config, diags);
    }

    async fn plan(&self, ctx: &AwsContext, plan: &mut Plan<'_>, diags: &mut Diagnostics) {
        let name = plan.config.attr("name").clone();
        plan.set("id", if name.is_unknown() { Value::Unknown } else { name });
        let rotating = !plan.is_create() && plan.changes("rotate_secrets");
        let fresh = plan.is_create() || rotating || Secrets::from_value(plan.prior).is_none();
        let changed = plan.is_create() || inputs_changed(plan.prior, &plan.planned);

        // Secrets: generated at apply when new; node certificates also when a node's name or IP changes.
        if fresh {
            for name in SECRET_ATTRS {
                plan.set(name, Value::Unknown);
            }
        } else {
            for name in SECRET_ATTRS {
                let prior = plan.prior.attr(name).clone();
                plan.set(name, prior);
            }
            let same_nodes =
                matches!((node_identities(plan.prior), node_identities(&plan.planned)), (Some(a), Some(b)) if a == b);
            if !same_nodes {
                plan.set("node_cert_pem", Value::Unknown);
                plan.set("node_key_pem", Value::Unknown);
            }
        }

        if !changed {
            for name in OUTPUT_ATTRS {
                let prior = plan.prior.attr(name).clone();
                plan.set(name, prior);
            }
            if fresh {
                plan.set("user_data", Value::Unknown);
            }
            return;
        }

        let config = plan.config.clone();
        let mut built = model::build(&config, diags);
        let source = read_source(&config, diags);
        checks::run(ctx, &mut built, diags).await;
        built.validate_into(diags);
        for name in OUTPUT_ATTRS {
            plan.set(name, Value::Unknown);
        }
        if diags.has_errors() || !built.complete() {
            return;
        }
        let Some((source, sha)) = source else { return };
        let out = outputs(ctx, &built.config, &source);
        if let Some(secrets) = Secrets::from_value(&plan.planned) {
            let user_data = user_data_of(&built.config, &out.node_config, &secrets, &source, sha.as_deref(), diags);
            plan.set("user_data", user_data);
        }
        plan.set("node_config", string_map(&out.node_config));
        plan.set("iam_policy_json", Value::from(out.iam_policy_json));
        plan.set("lease_table", Value::from(out.lease_table));
        plan.set("ports", out.ports);
    }

    async fn create(&self, ctx: &AwsContext, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        apply(ctx, &Value::Null, planned, diags).await
    }

    /// Nothing exists outside the state: the state is what it was.
    async fn read(&self, _ctx: &AwsContext, state: &Value, _diags: &mut Diagnostics) -> Option<Value> {
        Some(state.clone())
    }

    async fn update(&self, ctx: &AwsContext, prior: &Value, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        match apply(ctx, prior, planned, diags).await {
            Some(state) => Some(state),
            None => Some(prior.clone()),
        }
    }

    /// Nothing to delete in AWS: the cluster leaves the state.
    async fn delete(&self, _ctx: &AwsContext, _state: &Value, _diags: &mut Diagnostics) {}
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn node(name: &str, ip: &str) -> Value {
        Value::object([("name", Value::from(name)), ("private_ip", Value::from(ip))])
    }

    #[test]
    fn node_identity_changes_are_seen() {
        let a = Value::object([("node", Value::List(vec![node("a", "10.0.1.10"), node("b", "10.0.2.10")]))]);
        let b = Value::object([("node", Value::List(vec![node("a", "10.0.1.10"), node("b", "10.0.2.11")]))]);
        assert_ne!(node_identities(&a), node_identities(&b));
        let unknown = Value::object([(
            "node",
            Value::List(vec![Value::object([("name", Value::from("a")), ("private_ip", Value::Unknown)])]),
        )]);
        assert_eq!(node_identities(&unknown), None);
    }

    #[test]
    fn only_user_inputs_count_as_changes() {
        let prior = Value::object([
            ("name", Value::from("web")),
            ("user_data", Value::Unknown),
            ("rotate_secrets", Value::Null),
        ]);
        let mut planned = prior.clone();
        planned.attrs_mut().unwrap().insert("user_data".into(), Value::from("x"));
        planned.attrs_mut().unwrap().insert("rotate_secrets".into(), Value::from("1"));
        assert!(!inputs_changed(&prior, &planned));
        planned.attrs_mut().unwrap().insert("name".into(), Value::from("db"));
        assert!(inputs_changed(&prior, &planned));
    }

    #[test]
    fn secrets_are_kept_per_node_unless_its_address_changes() {
        let mut c = Config::new("web");
        c.nodes.push(tandem_runtime::config::Node::new("a", Ipv4Addr::new(10, 0, 1, 10), "us-east-1a"));
        c.nodes.push(tandem_runtime::config::Node::new("b", Ipv4Addr::new(10, 0, 2, 10), "us-east-1b"));
        let first = resolve_secrets(&c, None, &BTreeMap::new()).unwrap();
        let ids: BTreeMap<String, String> =
            [("a".to_string(), "10.0.1.10".to_string()), ("b".to_string(), "10.0.2.10".to_string())].into();
        let same = resolve_secrets(&c, Some(&first), &ids).unwrap();
        assert_eq!(same, first);
        c.nodes[1].private_ip = Ipv4Addr::new(10, 0, 2, 20);
        let moved = resolve_secrets(&c, Some(&first), &ids).unwrap();
        assert_eq!(moved.ca_cert_pem, first.ca_cert_pem);
        assert_eq!(moved.heartbeat_key, first.heartbeat_key);
        assert_eq!(moved.node_cert_pem["a"], first.node_cert_pem["a"]);
        assert_ne!(moved.node_cert_pem["b"], first.node_cert_pem["b"]);
    }

    #[test]
    fn schema_marks_keys_sensitive_and_outputs_computed() {
        let s = Cluster.schema();
        for name in ["heartbeat_key", "ca_key_pem", "node_key_pem", "user_data"] {
            assert!(s.block.attribute(name).unwrap().sensitive, "{name}");
        }
        for name in schema::COMPUTED {
            let a = s.block.attribute(name).unwrap();
            assert!(a.computed && !a.optional && !a.required, "{name}");
        }
    }
}
