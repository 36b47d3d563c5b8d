//! Group resources: `resource "<kind>" "<name>" { }` inside a group. The kinds are a closed set: one struct per
//! kind, in its own file (config, reading, rendering, validation, tests), and one enum to `match` on.

pub mod aws_dns;
pub mod aws_eip;
pub mod aws_vip;
pub mod exec;
pub mod mirror_disk;

use super::choice::{Choice, choice};
use super::error::{ConfigPath, ErrorCode};
use super::group::Group;
use super::monitor::FinalAction;
use super::parse::{self, Cx, Reader};
use super::render::HclBlock;
use super::validate::Validator;

pub use self::aws_dns::AwsDns;
pub use self::aws_eip::AwsEip;
pub use self::aws_vip::AwsVip;
pub use self::exec::Exec;
pub use self::mirror_disk::{Filesystem, MirrorDisk};

pub const DEFAULT_ACTIVATION_FINAL_ACTION: FinalAction = FinalAction::None;
pub const DEFAULT_DEACTIVATION_FINAL_ACTION: FinalAction = FinalAction::Shutdown;

choice!(
    /// The resource kinds, as written in the block's first label.
    pub enum ResourceType {
        AwsVip = "aws_vip",
        AwsEip = "aws_eip",
        AwsDns = "aws_dns",
        MirrorDisk = "mirror_disk",
        Exec = "exec",
    }
);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceKind {
    AwsVip(AwsVip),
    AwsEip(AwsEip),
    AwsDns(AwsDns),
    MirrorDisk(MirrorDisk),
    Exec(Exec),
}

impl ResourceKind {
    pub fn resource_type(&self) -> ResourceType {
        match self {
            ResourceKind::AwsVip(_) => ResourceType::AwsVip,
            ResourceKind::AwsEip(_) => ResourceType::AwsEip,
            ResourceKind::AwsDns(_) => ResourceType::AwsDns,
            ResourceKind::MirrorDisk(_) => ResourceType::MirrorDisk,
            ResourceKind::Exec(_) => ResourceType::Exec,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        self.resource_type().as_str()
    }
}

/// One resource of a failover group: the settings every kind has, and the kind.
///
/// Activation: start; on failure retry `activation_retries` times, then fail the group over (once), then
/// `activation_final_action`. Deactivation: stop; on failure retry `deactivation_retries` times, then
/// `deactivation_final_action` (a resource that cannot be stopped must not stay half-active: the default shuts
/// the node down, which also ends its lease renewals).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub name: String,
    /// Resources of the same group that must be active before this one starts (and stop after it). Default [].
    pub depends_on: Vec<String>,
    /// Default 0.
    pub activation_retries: u32,
    /// Default 0.
    pub deactivation_retries: u32,
    /// Default none.
    pub activation_final_action: FinalAction,
    /// Default shutdown.
    pub deactivation_final_action: FinalAction,
    pub kind: ResourceKind,
}

impl Resource {
    /// A resource with the default common settings.
    pub fn new(name: &str, kind: ResourceKind) -> Resource {
        Resource {
            name: name.to_string(),
            depends_on: Vec::new(),
            activation_retries: 0,
            deactivation_retries: 0,
            activation_final_action: DEFAULT_ACTIVATION_FINAL_ACTION,
            deactivation_final_action: DEFAULT_DEACTIVATION_FINAL_ACTION,
            kind,
        }
    }

    pub(crate) fn read(cx: &mut Cx, r: &mut Reader, kind_label: &str, name: &str) -> Option<Resource> {
        let Some(resource_type) = ResourceType::from_str_exact(kind_label) else {
            let path = r.path.clone();
            cx.error(
                ErrorCode::BadChoice,
                &path,
                format!("{path}: {kind_label:?} is not a resource kind: {}", ResourceType::choices()),
            );
            r.skip_rest();
            return None;
        };
        let depends_on = r.or(cx, "depends_on", parse::string_list, Vec::new());
        let activation_retries = r.or(cx, "activation_retries", parse::count, 0);
        let deactivation_retries = r.or(cx, "deactivation_retries", parse::count, 0);
        let activation_final_action =
            r.or(cx, "activation_final_action", parse::choice::<FinalAction>, DEFAULT_ACTIVATION_FINAL_ACTION);
        let deactivation_final_action =
            r.or(cx, "deactivation_final_action", parse::choice::<FinalAction>, DEFAULT_DEACTIVATION_FINAL_ACTION);
        let kind = match resource_type {
            ResourceType::AwsVip => AwsVip::read(cx, r).map(ResourceKind::AwsVip),
            ResourceType::AwsEip => AwsEip::read(cx, r).map(ResourceKind::AwsEip),
            ResourceType::AwsDns => AwsDns::read(cx, r).map(ResourceKind::AwsDns),
            ResourceType::MirrorDisk => MirrorDisk::read(cx, r).map(ResourceKind::MirrorDisk),
            ResourceType::Exec => Exec::read(cx, r).map(ResourceKind::Exec),
        }?;
        Some(Resource {
            name: name.to_string(),
            depends_on,
            activation_retries,
            deactivation_retries,
            activation_final_action,
            deactivation_final_action,
            kind,
        })
    }

    pub(crate) fn render(&self, b: &mut HclBlock) {
        match &self.kind {
            ResourceKind::AwsVip(k) => k.render(b),
            ResourceKind::AwsEip(k) => k.render(b),
            ResourceKind::AwsDns(k) => k.render(b),
            ResourceKind::MirrorDisk(k) => k.render(b),
            ResourceKind::Exec(k) => k.render(b),
        }
        b.list("depends_on", &self.depends_on);
        b.number("activation_retries", self.activation_retries);
        b.number("deactivation_retries", self.deactivation_retries);
        b.choice("activation_final_action", self.activation_final_action);
        b.choice("deactivation_final_action", self.deactivation_final_action);
        match &self.kind {
            ResourceKind::AwsVip(k) => k.render_overrides(b),
            ResourceKind::AwsDns(k) => k.render_overrides(b),
            ResourceKind::MirrorDisk(k) => k.render_overrides(b),
            ResourceKind::Exec(k) => k.render_overrides(b),
            ResourceKind::AwsEip(_) => {}
        }
    }

    pub(crate) fn validate(&self, v: &mut Validator, path: &ConfigPath, group: &Group) {
        v.name(path, &self.name, "resource");
        match &self.kind {
            ResourceKind::AwsVip(k) => k.validate(v, path, group),
            ResourceKind::AwsEip(k) => k.validate(v, path),
            ResourceKind::AwsDns(k) => k.validate(v, path, group),
            ResourceKind::MirrorDisk(k) => k.validate(v, path, group),
            ResourceKind::Exec(k) => k.validate(v, path, group),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::parse_codes;

    #[test]
    fn unknown_resource_kind_is_reported_once() {
        let src = "cluster \"c\" {}\nnode \"a\" {\n  private_ip = \"10.0.0.1\"\n  availability_zone = \"us-east-1a\"\n}\n\
                   group \"g\" {\n  servers = [\"a\"]\n  resource \"nfs\" \"x\" {\n    path = \"/x\"\n  }\n}\n";
        assert_eq!(parse_codes(src), vec!["TDM-CFG-006"]);
    }

    #[test]
    fn new_resources_have_the_documented_defaults() {
        let r = Resource::new("x", ResourceKind::Exec(Exec::new("true")));
        assert_eq!((r.activation_retries, r.deactivation_retries), (0, 0));
        assert_eq!(r.activation_final_action, FinalAction::None);
        assert_eq!(r.deactivation_final_action, FinalAction::Shutdown);
        assert_eq!(r.kind.kind_name(), "exec");
    }
}
