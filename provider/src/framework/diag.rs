//! Diagnostics: what the provider tells Terraform, each optionally anchored to an attribute path so that
//! Terraform underlines the right line of the user's configuration.

use std::fmt;

use tandem_proto::tfplugin6 as pb;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathStep {
    Attr(String),
    Key(String),
    Index(i64),
}

/// A path into a resource's object value, e.g. `ingress[2].from_port`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttrPath(pub Vec<PathStep>);

impl AttrPath {
    pub fn root(attr: &str) -> Self {
        AttrPath(vec![PathStep::Attr(attr.to_string())])
    }

    pub fn attr(mut self, name: &str) -> Self {
        self.0.push(PathStep::Attr(name.to_string()));
        self
    }

    pub fn key(mut self, key: &str) -> Self {
        self.0.push(PathStep::Key(key.to_string()));
        self
    }

    pub fn index(mut self, index: usize) -> Self {
        self.0.push(PathStep::Index(i64::try_from(index).unwrap_or(i64::MAX)));
        self
    }

    pub fn to_proto(&self) -> pb::AttributePath {
        let steps = self
            .0
            .iter()
            .map(|step| {
                let selector = match step {
                    PathStep::Attr(name) => pb::attribute_path::step::Selector::AttributeName(name.clone()),
                    PathStep::Key(key) => pb::attribute_path::step::Selector::ElementKeyString(key.clone()),
                    PathStep::Index(i) => pb::attribute_path::step::Selector::ElementKeyInt(*i),
                };
                pb::attribute_path::Step { selector: Some(selector) }
            })
            .collect();
        pb::AttributePath { steps }
    }
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.0.iter().enumerate() {
            match step {
                PathStep::Attr(name) if i == 0 => write!(f, "{name}")?,
                PathStep::Attr(name) => write!(f, ".{name}")?,
                PathStep::Key(key) => write!(f, "[{key:?}]")?,
                PathStep::Index(idx) => write!(f, "[{idx}]")?,
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub summary: String,
    pub detail: String,
    pub path: Option<AttrPath>,
}

/// Diagnostics accumulate: validation reports every bad attribute at once instead of stopping at the first.
#[derive(Clone, Debug, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn new() -> Self {
        Self::default()
    }

    /// An error with a stable code, e.g. `error("TDM-EC2-010", "subnet CIDR … is outside VPC …", detail)`.
    pub fn error(&mut self, code: &str, summary: impl fmt::Display, detail: impl Into<String>) {
        self.push(Severity::Error, code, summary, detail, None);
    }

    pub fn error_at(&mut self, path: AttrPath, code: &str, summary: impl fmt::Display, detail: impl Into<String>) {
        self.push(Severity::Error, code, summary, detail, Some(path));
    }

    pub fn warning(&mut self, code: &str, summary: impl fmt::Display, detail: impl Into<String>) {
        self.push(Severity::Warning, code, summary, detail, None);
    }

    fn push(
        &mut self,
        severity: Severity,
        code: &str,
        summary: impl fmt::Display,
        detail: impl Into<String>,
        path: Option<AttrPath>,
    ) {
        self.0.push(Diagnostic { severity, summary: format!("[{code}] {summary}"), detail: detail.into(), path });
    }

    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }

    pub fn to_proto(&self) -> Vec<pb::Diagnostic> {
        self.0
            .iter()
            .map(|d| pb::Diagnostic {
                severity: match d.severity {
                    Severity::Error => pb::diagnostic::Severity::Error as i32,
                    Severity::Warning => pb::diagnostic::Severity::Warning as i32,
                },
                summary: d.summary.clone(),
                detail: d.detail.clone(),
                attribute: d.path.as_ref().map(AttrPath::to_proto),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_displays_like_terraform_addresses() {
        let p = AttrPath::root("ingress").index(2).attr("cidr_blocks").key("x");
        assert_eq!(p.to_string(), "ingress[2].cidr_blocks[\"x\"]");
    }

    #[test]
    fn errors_carry_code_and_path_to_proto() {
        let mut d = Diagnostics::new();
        d.warning("TDM-X-002", "just so", "");
        assert!(!d.has_errors());
        d.error_at(AttrPath::root("cidr_block"), "TDM-X-001", "bad CIDR", "10.0.0.0/33 is not a CIDR");
        assert!(d.has_errors());
        let p = d.to_proto();
        assert_eq!(p[1].summary, "[TDM-X-001] bad CIDR");
        let steps = &p[1].attribute.as_ref().map(|a| a.steps.len());
        assert_eq!(*steps, Some(1));
    }
}
