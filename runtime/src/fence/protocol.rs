//! The fencer's wire protocol: one request line from tandemd, one or more reply lines from the fencer, over a Unix
//! stream socket that only root can reach. Text, so that an operator can talk to a fencer with `socat` while
//! debugging, and small enough to decode without allocation surprises (every line is bounded).
//!
//! ```text
//! ARM <group> <token> <deadline_ns> [<cgroup>...]   -> OK          run the group until deadline_ns (CLOCK_BOOTTIME)
//! DISARM <group>                                    -> OK          the group stopped cleanly: forget it
//! STATE                                             -> GROUP ... lines, then END
//! (anything else)                                   -> ERR <code> <message>
//! GROUP <group> <token> <deadline_ns> armed
//! GROUP <group> <token> <deadline_ns> fired <at_ns> <ok|failed>
//! ```
//!
//! Deadlines are absolute CLOCK_BOOTTIME nanoseconds: a request that tandemd wrote before it was frozen and that
//! arrives late can never move the deadline later than it was when tandemd computed it.

use std::fmt;

/// Longest line either side accepts, in bytes (a group name, a token, a deadline and a few cgroup paths).
pub const MAX_LINE: usize = 8192;
/// Most cgroups one group may name.
pub const MAX_CGROUPS: usize = 32;

/// A request to the fencer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Kill `cgroups` at `deadline_ns` unless a later ARM or a DISARM of `group` comes first.
    Arm {
        group: String,
        token: u64,
        deadline_ns: u64,
        cgroups: Vec<String>,
    },
    Disarm {
        group: String,
    },
    State,
}

/// What the fencer knows of one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    pub group: String,
    pub token: u64,
    pub deadline_ns: u64,
    /// None while armed; when the deadline passed: when the kill ran and whether every cgroup emptied.
    pub fired: Option<Fired>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fired {
    pub at_ns: u64,
    pub ok: bool,
}

/// A line the fencer answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok,
    Group(GroupState),
    End,
    Err { code: &'static str, message: String },
}

/// Why a line could not be decoded; `code()` is stable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("fencer protocol: line longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("fencer protocol: line is not ASCII text")]
    NotText,
    #[error("fencer protocol: unknown verb {0:?}")]
    UnknownVerb(String),
    #[error("fencer protocol: {verb}: expected {expected}")]
    Arguments { verb: &'static str, expected: &'static str },
    #[error("fencer protocol: {what} {value:?} is not a number")]
    Number { what: &'static str, value: String },
    #[error("fencer protocol: {0}")]
    Invalid(String),
}

impl ProtocolError {
    pub fn code(&self) -> &'static str {
        match self {
            ProtocolError::TooLong => "TDM-FNC-010",
            ProtocolError::NotText => "TDM-FNC-011",
            ProtocolError::UnknownVerb(_) => "TDM-FNC-012",
            ProtocolError::Arguments { .. } => "TDM-FNC-013",
            ProtocolError::Number { .. } => "TDM-FNC-014",
            ProtocolError::Invalid(_) => "TDM-FNC-015",
        }
    }
}

/// A group name or cgroup path as the protocol carries it: non-empty printable ASCII without spaces.
fn word_ok(w: &str) -> bool {
    !w.is_empty() && w.bytes().all(|b| b.is_ascii_graphic())
}

/// A cgroup path the fencer will write to: absolute, no `.`/`..` components, printable, no spaces.
pub fn cgroup_ok(path: &str) -> bool {
    word_ok(path) && path.starts_with('/') && path.split('/').skip(1).all(|c| !c.is_empty() && c != "." && c != "..")
}

fn number(what: &'static str, value: &str) -> Result<u64, ProtocolError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProtocolError::Number { what, value: value.to_string() });
    }
    value.parse().map_err(|_| ProtocolError::Number { what, value: value.to_string() })
}

fn split(line: &[u8]) -> Result<Vec<&str>, ProtocolError> {
    if line.len() > MAX_LINE {
        return Err(ProtocolError::TooLong);
    }
    let text = std::str::from_utf8(line).map_err(|_| ProtocolError::NotText)?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    if !text.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return Err(ProtocolError::NotText);
    }
    Ok(text.split(' ').filter(|w| !w.is_empty()).collect())
}

impl Request {
    /// Decodes one request line (with or without its newline).
    pub fn decode(line: &[u8]) -> Result<Request, ProtocolError> {
        let words = split(line)?;
        match words.as_slice() {
            ["ARM", group, token, deadline, cgroups @ ..] => {
                if !word_ok(group) {
                    return Err(ProtocolError::Invalid(format!("group name {group:?}")));
                }
                if cgroups.len() > MAX_CGROUPS {
                    return Err(ProtocolError::Invalid(format!("more than {MAX_CGROUPS} cgroups")));
                }
                if let Some(bad) = cgroups.iter().find(|c| !cgroup_ok(c)) {
                    return Err(ProtocolError::Invalid(format!("cgroup {bad:?} is not an absolute path")));
                }
                Ok(Request::Arm {
                    group: group.to_string(),
                    token: number("token", token)?,
                    deadline_ns: number("deadline", deadline)?,
                    cgroups: cgroups.iter().map(|c| c.to_string()).collect(),
                })
            }
            ["ARM", ..] => {
                Err(ProtocolError::Arguments { verb: "ARM", expected: "<group> <token> <deadline_ns> [<cgroup>...]" })
            }
            ["DISARM", group] if word_ok(group) => Ok(Request::Disarm { group: group.to_string() }),
            ["DISARM", ..] => Err(ProtocolError::Arguments { verb: "DISARM", expected: "<group>" }),
            ["STATE"] => Ok(Request::State),
            ["STATE", ..] => Err(ProtocolError::Arguments { verb: "STATE", expected: "no arguments" }),
            [verb, ..] => Err(ProtocolError::UnknownVerb(verb.chars().take(32).collect())),
            [] => Err(ProtocolError::Arguments { verb: "request", expected: "a verb" }),
        }
    }
}

impl fmt::Display for Request {
    /// The line, without its newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Arm { group, token, deadline_ns, cgroups } => {
                write!(f, "ARM {group} {token} {deadline_ns}")?;
                cgroups.iter().try_for_each(|c| write!(f, " {c}"))
            }
            Request::Disarm { group } => write!(f, "DISARM {group}"),
            Request::State => f.write_str("STATE"),
        }
    }
}

impl Reply {
    /// Decodes one reply line.
    pub fn decode(line: &[u8]) -> Result<Reply, ProtocolError> {
        let words = split(line)?;
        let group = |group: &str, token: &str, deadline: &str| -> Result<(String, u64, u64), ProtocolError> {
            if !word_ok(group) {
                return Err(ProtocolError::Invalid(format!("group name {group:?}")));
            }
            Ok((group.to_string(), number("token", token)?, number("deadline", deadline)?))
        };
        match words.as_slice() {
            ["OK"] => Ok(Reply::Ok),
            ["END"] => Ok(Reply::End),
            ["GROUP", g, t, d, "armed"] => {
                let (group, token, deadline_ns) = group(g, t, d)?;
                Ok(Reply::Group(GroupState { group, token, deadline_ns, fired: None }))
            }
            ["GROUP", g, t, d, "fired", at, result @ ("ok" | "failed")] => {
                let (group, token, deadline_ns) = group(g, t, d)?;
                let fired = Fired { at_ns: number("fired at", at)?, ok: *result == "ok" };
                Ok(Reply::Group(GroupState { group, token, deadline_ns, fired: Some(fired) }))
            }
            ["GROUP", ..] => Err(ProtocolError::Arguments {
                verb: "GROUP",
                expected: "<group> <token> <deadline_ns> armed|fired <at_ns> ok|failed",
            }),
            ["ERR", code, message @ ..] => Ok(Reply::Err { code: known_code(code), message: message.join(" ") }),
            [verb, ..] => Err(ProtocolError::UnknownVerb(verb.chars().take(32).collect())),
            [] => Err(ProtocolError::Arguments { verb: "reply", expected: "a verb" }),
        }
    }
}

/// Maps a code received in an ERR line back to one of ours ("TDM-FNC-015" for anything unknown).
fn known_code(code: &str) -> &'static str {
    const CODES: [&str; 6] = ["TDM-FNC-010", "TDM-FNC-011", "TDM-FNC-012", "TDM-FNC-013", "TDM-FNC-014", "TDM-FNC-015"];
    CODES.iter().find(|c| **c == code).copied().unwrap_or("TDM-FNC-015")
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Ok => f.write_str("OK"),
            Reply::End => f.write_str("END"),
            Reply::Group(g) => {
                write!(f, "GROUP {} {} {}", g.group, g.token, g.deadline_ns)?;
                match g.fired {
                    None => f.write_str(" armed"),
                    Some(x) => write!(f, " fired {} {}", x.at_ns, if x.ok { "ok" } else { "failed" }),
                }
            }
            Reply::Err { code, message } => {
                // One line, printable: the message may quote what the peer sent (bounded by the line it came in).
                let clean: String = message.chars().map(|c| if c.is_ascii_graphic() { c } else { ' ' }).collect();
                write!(f, "ERR {code} {clean}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let reqs = [
            Request::Arm { group: "g".into(), token: 7, deadline_ns: 123_456_789, cgroups: vec![] },
            Request::Arm {
                group: "web".into(),
                token: u64::MAX,
                deadline_ns: 1,
                cgroups: vec!["/sys/fs/cgroup/system.slice/app.service".into(), "/x/y".into()],
            },
            Request::Disarm { group: "web".into() },
            Request::State,
        ];
        for r in reqs {
            let line = format!("{r}\n");
            assert_eq!(Request::decode(line.as_bytes()), Ok(r.clone()), "{line}");
        }
    }

    #[test]
    fn replies_round_trip() {
        let replies = [
            Reply::Ok,
            Reply::End,
            Reply::Group(GroupState { group: "g".into(), token: 3, deadline_ns: 99, fired: None }),
            Reply::Group(GroupState {
                group: "g".into(),
                token: 3,
                deadline_ns: 99,
                fired: Some(Fired { at_ns: 100, ok: false }),
            }),
            Reply::Err { code: "TDM-FNC-012", message: "unknown verb \"X\"".into() },
        ];
        for r in replies {
            let line = r.to_string();
            assert_eq!(Reply::decode(line.as_bytes()), Ok(r.clone()), "{line}");
        }
    }

    #[test]
    fn bad_requests_get_stable_codes() {
        let cases: [(&[u8], &str); 9] = [
            (b"ARM g 1", "TDM-FNC-013"),
            (b"ARM g x 5", "TDM-FNC-014"),
            (b"ARM g 1 -5", "TDM-FNC-014"),
            (b"ARM g 1 99999999999999999999999", "TDM-FNC-014"),
            (b"ARM g 1 5 relative/path", "TDM-FNC-015"),
            (b"ARM g 1 5 /a/../b", "TDM-FNC-015"),
            (b"KILL everything", "TDM-FNC-012"),
            (b"STATE now\tplease", "TDM-FNC-011"),
            (b"\xff\xfe", "TDM-FNC-011"),
        ];
        for (line, code) in cases {
            let e = Request::decode(line).expect_err("must be refused");
            assert_eq!(e.code(), code, "{:?}: {e}", String::from_utf8_lossy(line));
        }
        assert_eq!(Request::decode(&vec![b'A'; MAX_LINE + 1]).map_err(|e| e.code()), Err("TDM-FNC-010"));
        let many = format!("ARM g 1 5{}", " /c".repeat(MAX_CGROUPS + 1));
        assert_eq!(Request::decode(many.as_bytes()).map_err(|e| e.code()), Err("TDM-FNC-015"));
    }

    #[test]
    fn cgroup_paths_must_be_absolute_and_plain() {
        assert!(cgroup_ok("/sys/fs/cgroup/system.slice/tandem-app.service"));
        for bad in ["", "/", "rel/x", "/a//b", "/a/./b", "/a/..", "/a b"] {
            assert!(!cgroup_ok(bad), "{bad:?}");
        }
    }

    #[test]
    fn an_error_reply_is_one_printable_line() {
        let r = Reply::Err { code: "TDM-FNC-012", message: "bad\nline\x07".into() };
        let line = r.to_string();
        assert!(!line.contains('\n') && line.bytes().all(|b| b == b' ' || b.is_ascii_graphic()), "{line:?}");
    }
}
