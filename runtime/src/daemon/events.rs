//! The event log: every state transition and its cause, kept in memory (the newest [`KEPT`]) for `tandemctl
//! events` and appended as one JSON line per event to `<state_dir>/events.log` for the operator's log tooling.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// How many events stay in memory.
pub const KEPT: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub unix_ms: u64,
    pub node: String,
    /// Empty for node-level events.
    pub group: String,
    /// A short, stable word: `role`, `lease`, `peer`, `witness`, `resource`, `recovery`, `fence`, `admin`, `daemon`.
    pub kind: &'static str,
    pub message: String,
    /// The error code of the cause, when there is one.
    pub code: String,
}

impl Event {
    pub fn to_json(&self) -> String {
        format!(
            "{{\"unix_ms\":{},\"node\":{},\"group\":{},\"kind\":{},\"message\":{},\"code\":{}}}",
            self.unix_ms,
            json_string(&self.node),
            json_string(&self.group),
            json_string(self.kind),
            json_string(&self.message),
            json_string(&self.code)
        )
    }
}

/// A JSON string literal (RFC 8259 escaping).
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub struct EventLog {
    node: String,
    ring: Mutex<VecDeque<Event>>,
    file: Option<Mutex<File>>,
}

impl EventLog {
    /// A log of `node`'s events; appends to `dir/events.log` when `dir` is given (creating it).
    pub fn new(node: &str, dir: Option<&Path>) -> std::io::Result<EventLog> {
        let file = match dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                Some(Mutex::new(OpenOptions::new().create(true).append(true).open(d.join("events.log"))?))
            }
            None => None,
        };
        Ok(EventLog { node: node.to_string(), ring: Mutex::new(VecDeque::with_capacity(KEPT)), file })
    }

    /// Records an event (and logs it through tracing).
    pub fn record(&self, group: &str, kind: &'static str, code: &str, message: impl Into<String>) {
        let message = message.into();
        if code.is_empty() {
            tracing::info!(group, kind, "{message}");
        } else {
            tracing::warn!(group, kind, code, "{message}");
        }
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let event =
            Event { unix_ms, node: self.node.clone(), group: group.to_string(), kind, message, code: code.to_string() };
        if let Some(f) = &self.file {
            let mut f = match f.lock() {
                Ok(f) => f,
                Err(poisoned) => poisoned.into_inner(),
            };
            // The log is best effort: a full disk must not stop failover.
            let _ = writeln!(f, "{}", event.to_json());
        }
        let mut ring = match self.ring.lock() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        if ring.len() == KEPT {
            ring.pop_front();
        }
        ring.push_back(event);
    }

    /// The newest `limit` events (all kept when 0), oldest first.
    pub fn newest(&self, limit: usize) -> Vec<Event> {
        let ring = match self.ring.lock() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        let skip = if limit == 0 { 0 } else { ring.len().saturating_sub(limit) };
        ring.iter().skip(skip).cloned().collect()
    }
}

/// The newest `limit` events as the control and peer APIs return them.
pub fn reply(log: &EventLog, limit: u32) -> tandem_proto::control::EventsReply {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let events = log
        .newest(limit)
        .into_iter()
        .map(|e| tandem_proto::control::Event {
            unix_ms: e.unix_ms,
            node: e.node,
            group: e.group,
            kind: e.kind.to_string(),
            message: e.message,
            code: e.code,
        })
        .collect();
    tandem_proto::control::EventsReply { events }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_and_appends_json_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EventLog::new("a", Some(dir.path())).expect("log");
        for i in 0..(KEPT + 5) {
            log.record("g", "role", "", format!("event {i}"));
        }
        let newest = log.newest(2);
        assert_eq!(newest.len(), 2);
        assert_eq!(newest[1].message, format!("event {}", KEPT + 4));
        assert_eq!(log.newest(0).len(), KEPT);
        let text = std::fs::read_to_string(dir.path().join("events.log")).expect("read");
        assert_eq!(text.lines().count(), KEPT + 5);
        assert!(text.lines().next().is_some_and(|l| l.contains("\"message\":\"event 0\"")));
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
    }
}
