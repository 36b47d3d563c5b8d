//! The overlap checker of failover tests. Each node's test `exec` resource appends `<unix_nanos> <node> start` and
//! `<unix_nanos> <node> stop` to one shared journal (`date +%s%N`; short O_APPEND writes are atomic); the harness
//! appends `<unix_nanos> <node> died` when it kills a node. Two nodes' active intervals must never intersect.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// What a journal line records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Start,
    Stop,
    /// The harness killed the node: its active interval (if any) ends here.
    Died,
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub nanos: u128,
    pub node: String,
    pub kind: Kind,
}

/// The time a node's resource was active; `end` is `None` while it still runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    pub node: String,
    pub start: u128,
    pub end: Option<u128>,
}

impl Interval {
    fn intersects(&self, other: &Interval) -> bool {
        let before = |a: &Interval, b: &Interval| a.end.is_some_and(|end| end <= b.start);
        !before(self, other) && !before(other, self)
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.end {
            Some(end) => write!(f, "{} [{}, {}] ({} ms)", self.node, self.start, end, (end - self.start) / 1_000_000),
            None => write!(f, "{} [{}, still running)", self.node, self.start),
        }
    }
}

/// Parses a journal; empty lines are skipped, anything else malformed is an error naming the line.
pub fn parse(text: &str) -> Result<Vec<Event>, String> {
    let mut events = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let bad = |why: &str| format!("journal line {}: {why}: {line:?}", n + 1);
        let [nanos, node, kind] = fields.as_slice() else {
            return Err(bad("expected `<unix_nanos> <node> start|stop|died`"));
        };
        let nanos = nanos.parse::<u128>().map_err(|_| bad("bad timestamp"))?;
        let kind = match *kind {
            "start" => Kind::Start,
            "stop" => Kind::Stop,
            "died" => Kind::Died,
            _ => return Err(bad("unknown event")),
        };
        events.push(Event { nanos, node: node.to_string(), kind });
    }
    Ok(events)
}

/// Each node's active intervals, ordered by start. Events are taken in time order (stable for equal times). A start
/// while the node is already started is an error; a stop or died without a start is fine (stop is idempotent).
pub fn intervals(events: &[Event]) -> Result<Vec<Interval>, String> {
    let mut sorted: Vec<&Event> = events.iter().collect();
    sorted.sort_by_key(|e| e.nanos);
    let mut open: Vec<Interval> = Vec::new();
    let mut closed = Vec::new();
    for e in sorted {
        let current = open.iter().position(|i| i.node == e.node);
        match (e.kind, current) {
            (Kind::Start, Some(at)) => {
                let since = open.get(at).map(|i| i.start).unwrap_or_default();
                return Err(format!("node {} started at {} while already started at {since}", e.node, e.nanos));
            }
            (Kind::Start, None) => open.push(Interval { node: e.node.clone(), start: e.nanos, end: None }),
            (Kind::Stop | Kind::Died, Some(at)) => {
                let mut interval = open.remove(at);
                interval.end = Some(e.nanos);
                closed.push(interval);
            }
            (Kind::Stop | Kind::Died, None) => {}
        }
    }
    closed.extend(open);
    closed.sort_by_key(|i| i.start);
    Ok(closed)
}

/// Every pair of intervals of different nodes that intersect (touching ends do not).
pub fn overlaps(intervals: &[Interval]) -> Vec<(Interval, Interval)> {
    let mut found = Vec::new();
    for (n, a) in intervals.iter().enumerate() {
        for b in intervals.iter().skip(n + 1) {
            if a.node != b.node && a.intersects(b) {
                found.push((a.clone(), b.clone()));
            }
        }
    }
    found
}

/// Panics with the overlapping intervals and the whole journal (times relative to its first line) when two nodes
/// were active at once, or when the journal cannot be read or is malformed.
pub fn assert_no_overlap(path: &Path) {
    if let Some(report) = overlap_report(path) {
        panic!("{report}");
    }
}

/// `None` when no two nodes were ever active at once; otherwise the overlapping intervals and the whole journal
/// (times relative to its first line), or why the journal cannot be read.
pub fn overlap_report(path: &Path) -> Option<String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => return Some(format!("reading journal {}: {e}", path.display())),
    };
    let result = parse(&text).and_then(|events| intervals(&events).map(|iv| (events, iv)));
    let (events, intervals) = match result {
        Ok(parsed) => parsed,
        Err(e) => return Some(format!("journal {}: {e}\n{text}", path.display())),
    };
    let found = overlaps(&intervals);
    if found.is_empty() {
        return None;
    }
    let pairs: Vec<String> = found.iter().map(|(a, b)| format!("  {a}\n  overlaps {b}")).collect();
    Some(format!(
        "two nodes were active at the same time (journal {}):\n{}\njournal (ms since first event):\n{}",
        path.display(),
        pairs.join("\n"),
        listing(&events)
    ))
}

/// The journal with times in ms relative to its first event, in time order.
pub fn listing(events: &[Event]) -> String {
    let mut sorted: Vec<&Event> = events.iter().collect();
    sorted.sort_by_key(|e| e.nanos);
    let t0 = sorted.first().map(|e| e.nanos).unwrap_or_default();
    sorted
        .iter()
        .map(|e| format!("  {:>10.3} {} {:?}", (e.nanos - t0) as f64 / 1e6, e.node, e.kind))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Appends `<now> <node> died` (call it right after killing the node).
pub fn append_died(path: &Path, node: &str) {
    append_died_at(path, node, SystemTime::now());
}

/// Appends `<at> <node> died`, e.g. with the time `NodeProcess::kill` returned. Panics if the journal cannot be
/// written (a harness failure).
pub fn append_died_at(path: &Path, node: &str, at: SystemTime) {
    let nanos = at.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    let line = format!("{nanos} {node} died\n");
    let written =
        std::fs::OpenOptions::new().create(true).append(true).open(path).and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        panic!("appending to journal {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Vec<(Interval, Interval)> {
        let events = parse(text).unwrap_or_else(|e| panic!("{e}"));
        overlaps(&intervals(&events).unwrap_or_else(|e| panic!("{e}")))
    }

    #[test]
    fn overlap_of_two_nodes_is_found() {
        let found = check("100 a start\n150 b start\n200 a stop\n300 b stop\n");
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].0.node.as_str(), found[0].1.node.as_str()), ("a", "b"));
    }

    #[test]
    fn touching_intervals_do_not_overlap() {
        assert!(check("100 a start\n200 a stop\n200 b start\n300 b stop\n").is_empty());
    }

    #[test]
    fn open_interval_overlaps_a_later_start() {
        let found = check("100 a start\n500 b start\n600 b stop\n");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0.end, None);
    }

    #[test]
    fn died_closes_the_interval() {
        assert!(check("100 a start\n200 a died\n300 b start\n").is_empty());
    }

    #[test]
    fn same_node_intervals_never_overlap_each_other() {
        assert!(check("100 a start\n200 a stop\n300 a start\n").is_empty());
    }

    #[test]
    fn start_while_started_is_an_error() {
        let events = parse("100 a start\n200 a start\n").unwrap_or_default();
        assert!(intervals(&events).is_err());
    }

    #[test]
    fn stop_without_start_is_fine() {
        let events = parse("100 a stop\n200 a start\n300 a stop\n400 a stop\n").unwrap_or_default();
        assert_eq!(intervals(&events), Ok(vec![Interval { node: "a".into(), start: 200, end: Some(300) }]));
    }

    #[test]
    fn events_are_taken_in_time_order() {
        // b's lines were appended late but carry earlier times.
        assert!(check("300 a start\n100 b start\n200 b stop\n").is_empty());
    }

    #[test]
    fn malformed_line_is_an_error_naming_it() {
        let err = parse("100 a start\nnonsense\n").err().unwrap_or_default();
        assert!(err.contains("line 2"), "{err}");
        assert!(parse("x a start\n").is_err());
        assert!(parse("1 a jump\n").is_err());
    }

    #[test]
    fn append_died_closes_the_interval_in_the_file() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("journal");
        std::fs::write(&path, "1 a start\n")?;
        append_died(&path, "a");
        let events = parse(&std::fs::read_to_string(&path)?).unwrap_or_default();
        assert_eq!(events.last().map(|e| e.kind), Some(Kind::Died));
        assert_no_overlap(&path);
        Ok(())
    }

    #[test]
    #[should_panic(expected = "two nodes were active at the same time")]
    fn assert_no_overlap_panics_on_overlap() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("journal");
        std::fs::write(&path, "1 a start\n2 b start\n").unwrap_or_else(|e| panic!("{e}"));
        assert_no_overlap(&path);
    }
}
