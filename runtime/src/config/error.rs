//! Config errors: a stable code, a one-line message naming the object, a fix hint, the logical path of the
//! offending block or attribute, and (when the config came from a file) its line and column.

use std::fmt;

/// Every way a cluster config can be wrong. The codes (`TDM-CFG-NNN`) are stable: never renumber, only append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorCode {
    Syntax,
    UnknownName,
    Missing,
    WrongType,
    Duplicate,
    BadChoice,
    BadDuration,
    BadAddress,
    BadName,
    DuplicateName,
    UnknownNode,
    UnknownReference,
    DependencyCycle,
    DuplicateAddress,
    VipNotSingleAddress,
    VipInsideVpc,
    BadRecordName,
    BadAvailabilityZone,
    HeartbeatTimeout,
    LeaseTtl,
    MonitorKindMismatch,
    NotApplicable,
    OutOfRange,
    Empty,
    BadAwsId,
    BadEndpoint,
    BadPath,
    AzOutsideRegion,
    PortConflict,
    Io,
    UnknownSelf,
    SelfNotFound,
    SelfAmbiguous,
}

impl ErrorCode {
    /// All codes, in code order (docs and tests iterate over it).
    pub const ALL: [ErrorCode; 33] = [
        ErrorCode::Syntax,
        ErrorCode::UnknownName,
        ErrorCode::Missing,
        ErrorCode::WrongType,
        ErrorCode::Duplicate,
        ErrorCode::BadChoice,
        ErrorCode::BadDuration,
        ErrorCode::BadAddress,
        ErrorCode::BadName,
        ErrorCode::DuplicateName,
        ErrorCode::UnknownNode,
        ErrorCode::UnknownReference,
        ErrorCode::DependencyCycle,
        ErrorCode::DuplicateAddress,
        ErrorCode::VipNotSingleAddress,
        ErrorCode::VipInsideVpc,
        ErrorCode::BadRecordName,
        ErrorCode::BadAvailabilityZone,
        ErrorCode::HeartbeatTimeout,
        ErrorCode::LeaseTtl,
        ErrorCode::MonitorKindMismatch,
        ErrorCode::NotApplicable,
        ErrorCode::OutOfRange,
        ErrorCode::Empty,
        ErrorCode::BadAwsId,
        ErrorCode::BadEndpoint,
        ErrorCode::BadPath,
        ErrorCode::AzOutsideRegion,
        ErrorCode::PortConflict,
        ErrorCode::Io,
        ErrorCode::UnknownSelf,
        ErrorCode::SelfNotFound,
        ErrorCode::SelfAmbiguous,
    ];

    pub fn code(self) -> &'static str {
        match self {
            ErrorCode::Syntax => "TDM-CFG-001",
            ErrorCode::UnknownName => "TDM-CFG-002",
            ErrorCode::Missing => "TDM-CFG-003",
            ErrorCode::WrongType => "TDM-CFG-004",
            ErrorCode::Duplicate => "TDM-CFG-005",
            ErrorCode::BadChoice => "TDM-CFG-006",
            ErrorCode::BadDuration => "TDM-CFG-007",
            ErrorCode::BadAddress => "TDM-CFG-008",
            ErrorCode::BadName => "TDM-CFG-009",
            ErrorCode::DuplicateName => "TDM-CFG-010",
            ErrorCode::UnknownNode => "TDM-CFG-011",
            ErrorCode::UnknownReference => "TDM-CFG-012",
            ErrorCode::DependencyCycle => "TDM-CFG-013",
            ErrorCode::DuplicateAddress => "TDM-CFG-014",
            ErrorCode::VipNotSingleAddress => "TDM-CFG-015",
            ErrorCode::VipInsideVpc => "TDM-CFG-016",
            ErrorCode::BadRecordName => "TDM-CFG-017",
            ErrorCode::BadAvailabilityZone => "TDM-CFG-018",
            ErrorCode::HeartbeatTimeout => "TDM-CFG-019",
            ErrorCode::LeaseTtl => "TDM-CFG-020",
            ErrorCode::MonitorKindMismatch => "TDM-CFG-021",
            ErrorCode::NotApplicable => "TDM-CFG-022",
            ErrorCode::OutOfRange => "TDM-CFG-023",
            ErrorCode::Empty => "TDM-CFG-024",
            ErrorCode::BadAwsId => "TDM-CFG-025",
            ErrorCode::BadEndpoint => "TDM-CFG-026",
            ErrorCode::BadPath => "TDM-CFG-027",
            ErrorCode::AzOutsideRegion => "TDM-CFG-028",
            ErrorCode::PortConflict => "TDM-CFG-029",
            ErrorCode::Io => "TDM-CFG-030",
            ErrorCode::UnknownSelf => "TDM-CFG-031",
            ErrorCode::SelfNotFound => "TDM-CFG-032",
            ErrorCode::SelfAmbiguous => "TDM-CFG-033",
        }
    }

    /// The generic fix hint; an error may carry a more specific one.
    pub fn hint(self) -> &'static str {
        match self {
            ErrorCode::Syntax => "fix the HCL syntax here: an unclosed brace or quote, or a missing `=`",
            ErrorCode::UnknownName => {
                "remove it or fix its spelling; docs/runtime-config.md lists every block and field"
            }
            ErrorCode::Missing => "add the required attribute or block",
            ErrorCode::WrongType => "write a literal of the expected type; the cluster config has no variables",
            ErrorCode::Duplicate => "keep only one of them",
            ErrorCode::BadChoice => "use one of the listed values",
            ErrorCode::BadDuration => {
                "write a whole number with a unit: \"500ms\", \"2s\", \"1m\", \"1h\" (or \"1m30s\")"
            }
            ErrorCode::BadAddress => {
                "write a dotted IPv4 address such as \"10.0.1.10\" (CIDR blocks as \"10.0.0.0/16\")"
            }
            ErrorCode::BadName => "use 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit",
            ErrorCode::DuplicateName => "give each one a distinct name",
            ErrorCode::UnknownNode => "declare the node with a `node` block or fix the name",
            ErrorCode::UnknownReference => "name an existing resource (in the same group) or group",
            ErrorCode::DependencyCycle => "remove one depends_on edge of the cycle",
            ErrorCode::DuplicateAddress => "give each node its own address",
            ErrorCode::VipNotSingleAddress => {
                "write the VIP as one address such as \"10.1.0.10\" (or \"10.1.0.10/32\")"
            }
            ErrorCode::VipInsideVpc => {
                "choose a VIP outside every CIDR block of the VPC, e.g. 10.1.0.10 for a 10.0.0.0/16 VPC"
            }
            ErrorCode::BadRecordName => {
                "write a lower-case fully qualified name with a trailing dot, e.g. \"app.example.com.\""
            }
            ErrorCode::BadAvailabilityZone => {
                "write a zone name such as \"us-east-1a\" (region + letter), not a zone ID"
            }
            ErrorCode::HeartbeatTimeout => "make the heartbeat timeout larger than the interval (e.g. 5x)",
            ErrorCode::LeaseTtl => {
                "make the lease ttl more than twice the renew interval (e.g. ttl \"5s\", renew \"1s\")"
            }
            ErrorCode::MonitorKindMismatch => "point the monitor at a resource of its own kind",
            ErrorCode::NotApplicable => "remove the attribute, or change the setting it depends on",
            ErrorCode::OutOfRange => "use a value inside the documented range",
            ErrorCode::Empty => "add at least one element",
            ErrorCode::BadAwsId => "copy the ID from the AWS console or API (e.g. \"vpc-0abc12de\"), not a name or ARN",
            ErrorCode::BadEndpoint => "write host:port (e.g. \"ec2.us-east-1.amazonaws.com:443\") or an http(s):// URL",
            ErrorCode::BadPath => "write an absolute path such as \"/dev/nvme1n1\" or \"/etc/tandem/ca.crt\"",
            ErrorCode::AzOutsideRegion => "put every node (and the lease table) in one region",
            ErrorCode::PortConflict => "give the control API, each interconnect and the mirror connect their own port",
            ErrorCode::Io => "check the path and the file's permissions",
            ErrorCode::UnknownSelf => "pass the name of a `node` block of this config to --node",
            ErrorCode::SelfNotFound => "pass --node NAME, or give this machine the private_ip of its node block",
            ErrorCode::SelfAmbiguous => "pass --node NAME to say which node this machine is",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// One step of a [`ConfigPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathSegment {
    /// A block: its identifier, its name label ("" for unlabeled blocks) and its index among the blocks with the
    /// same identifier in the parent body (in declaration order, as the model's `Vec`s are).
    Block { ident: String, label: String, index: usize },
    /// An attribute of a block.
    Attr(String),
    /// A key of a map-valued attribute (`addresses`, `env`).
    Key(String),
    /// An element of a list-valued attribute (`servers`, `depends_on`).
    Index(usize),
}

/// Where in the config an error is, independent of any source text: the provider maps it to a Terraform
/// attribute path, the file parser maps it to a line and column.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConfigPath(pub Vec<PathSegment>);

impl ConfigPath {
    pub fn root() -> ConfigPath {
        ConfigPath(Vec::new())
    }

    fn with(&self, segment: PathSegment) -> ConfigPath {
        let mut segments = self.0.clone();
        segments.push(segment);
        ConfigPath(segments)
    }

    pub fn block(&self, ident: &str, label: &str, index: usize) -> ConfigPath {
        self.with(PathSegment::Block { ident: ident.to_string(), label: label.to_string(), index })
    }

    pub fn attr(&self, name: &str) -> ConfigPath {
        self.with(PathSegment::Attr(name.to_string()))
    }

    pub fn key(&self, key: &str) -> ConfigPath {
        self.with(PathSegment::Key(key.to_string()))
    }

    pub fn index(&self, index: usize) -> ConfigPath {
        self.with(PathSegment::Index(index))
    }

    /// The path without its last segment (`None` at the root).
    pub fn parent(&self) -> Option<ConfigPath> {
        let (_, rest) = self.0.split_last()?;
        Some(ConfigPath(rest.to_vec()))
    }
}

impl fmt::Display for ConfigPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(config)");
        }
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                PathSegment::Block { ident, label, index } => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    if label.is_empty() {
                        if *index == 0 {
                            f.write_str(ident)?;
                        } else {
                            write!(f, "{ident}[{index}]")?;
                        }
                    } else {
                        write!(f, "{ident}.{label}")?;
                    }
                }
                PathSegment::Attr(name) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(name)?;
                }
                PathSegment::Key(key) => write!(f, "[{key:?}]")?,
                PathSegment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A position in the source text, 1-based, columns counted in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// The line and column of byte `offset` in `src`.
    pub fn of_offset(src: &str, offset: usize) -> Location {
        let offset = offset.min(src.len());
        let before = src.get(..offset).unwrap_or(src);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        Location { line, column }
    }
}

/// One problem in a cluster config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {message} ({hint})")]
pub struct ConfigError {
    pub code: ErrorCode,
    pub message: String,
    pub hint: String,
    /// The block or attribute at fault.
    pub path: ConfigPath,
    /// Its position, when the config was parsed from text.
    pub location: Option<Location>,
}

impl ConfigError {
    pub fn new(code: ErrorCode, path: ConfigPath, message: impl Into<String>) -> ConfigError {
        ConfigError { code, message: message.into(), hint: code.hint().to_string(), path, location: None }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> ConfigError {
        self.hint = hint.into();
        self
    }

    /// `FILE:LINE:COL: CODE message (hint)`, or `FILE: CODE message (hint)` without a position.
    pub fn display_in(&self, file: &str) -> String {
        match self.location {
            Some(Location { line, column }) => format!("{file}:{line}:{column}: {self}"),
            None => format!("{file}: {self}"),
        }
    }
}

/// All the problems found in one config, in source order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The file name used in messages (`<input>` for text not read from a file).
    pub file: String,
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    pub fn single(file: &str, error: ConfigError) -> ConfigErrors {
        ConfigErrors { file: file.to_string(), errors: vec![error] }
    }

    /// The codes of all errors, in order (handy in tests and for the provider's diagnostics).
    pub fn codes(&self) -> Vec<&'static str> {
        self.errors.iter().map(|e| e.code.code()).collect()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(&error.display_in(&self.file))?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_in_order() {
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(code.code(), format!("TDM-CFG-{:03}", i + 1));
            assert!(!code.hint().is_empty());
        }
    }

    #[test]
    fn location_counts_lines_and_characters() {
        let src = "a = 1\nbé = \"x\"\n";
        assert_eq!(Location::of_offset(src, 0), Location { line: 1, column: 1 });
        assert_eq!(Location::of_offset(src, 6), Location { line: 2, column: 1 });
        // 'é' is two bytes but one column.
        assert_eq!(Location::of_offset(src, 10), Location { line: 2, column: 4 });
    }

    #[test]
    fn error_line_names_file_position_code_and_hint() {
        let mut e = ConfigError::new(ErrorCode::BadAddress, ConfigPath::root(), "node \"a\": bad");
        assert_eq!(
            e.display_in("c.hcl"),
            format!("c.hcl: TDM-CFG-008 node \"a\": bad ({})", ErrorCode::BadAddress.hint())
        );
        e.location = Some(Location { line: 3, column: 7 });
        assert!(e.display_in("c.hcl").starts_with("c.hcl:3:7: TDM-CFG-008 node"));
    }

    #[test]
    fn paths_display_like_config_addresses() {
        let p = ConfigPath::root().block("group", "web", 0).block("resource", "vip", 2).attr("ip");
        assert_eq!(p.to_string(), "group.web.resource.vip.ip");
        let p = ConfigPath::root().block("np_resolution", "", 0).block("ping", "", 1).attr("nodes").index(0);
        assert_eq!(p.to_string(), "np_resolution.ping[1].nodes[0]");
        assert_eq!(ConfigPath::root().attr("x").key("n").to_string(), "x[\"n\"]");
    }
}
