//! `resource "aws_eip"`: an Elastic IP, associated with the active node's ENI.

use crate::config::error::ConfigPath;
use crate::config::overrides;
use crate::config::parse::{self, Cx, Reader};
use crate::config::render::HclBlock;
use crate::config::validate::Validator;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsEip {
    /// The EIP's allocation ID (`eipalloc-...`), known before the instances exist.
    pub allocation_id: String,
}

impl AwsEip {
    pub fn new(allocation_id: &str) -> AwsEip {
        AwsEip { allocation_id: allocation_id.to_string() }
    }

    pub(crate) fn read(cx: &mut Cx, r: &mut Reader) -> Option<AwsEip> {
        let allocation_id = r.req(cx, "allocation_id", parse::string);
        let no_overrides = overrides::reject(cx, r, "aws_eip");
        no_overrides.then_some(())?;
        Some(AwsEip { allocation_id: allocation_id? })
    }

    pub(crate) fn render(&self, b: &mut HclBlock) {
        b.str("allocation_id", &self.allocation_id);
    }

    pub(crate) fn validate(&self, v: &mut Validator, path: &ConfigPath) {
        v.aws_id(&path.attr("allocation_id"), &self.allocation_id, "eipalloc");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{codes, two_nodes};
    use crate::config::{Resource, ResourceKind};

    #[test]
    fn allocation_id_shape_is_checked() {
        let mut c = two_nodes();
        c.groups[0].resources.push(Resource::new("e", ResourceKind::AwsEip(AwsEip::new("eipalloc-12345678"))));
        c.fill_implied();
        assert!(codes(&c).is_empty());
        c.groups[0].resources[0].kind = ResourceKind::AwsEip(AwsEip::new("54.1.2.3"));
        assert_eq!(codes(&c), vec!["TDM-CFG-025"]);
    }
}
