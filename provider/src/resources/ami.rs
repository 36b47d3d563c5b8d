//! data `tandem_ami`: one machine image chosen by owners, filters and a name pattern, as the AWS provider's
//! `aws_ami`. No match is an error; several matches are an error unless `most_recent = true`.

use async_trait::async_trait;
use aws_sdk_ec2::types::{Filter, Image};

use super::{object, opt_str, report};
use crate::aws::{AwsContext, AwsError, ErrorClass};
use crate::framework::schema::Nesting;
use crate::framework::{AttrPath, Attribute, Block, DataSource, Diagnostics, Schema, Type, Value};

pub struct Ami;

/// Finder: the image with this ID, or NotFound (also for a malformed ID, which cannot name an image).
pub(crate) async fn find_image_by_id(ctx: &AwsContext, id: &str) -> Result<Image, AwsError> {
    let out = match ctx.ec2.describe_images().image_ids(id).send().await.map_err(AwsError::from_sdk) {
        Ok(out) => out,
        Err(e) if e.has_code("InvalidAMIID.Malformed") => {
            return Err(AwsError { class: ErrorClass::NotFound, ..e });
        }
        Err(e) => return Err(e),
    };
    out.images()
        .iter()
        .find(|i| i.image_id() == Some(id))
        .cloned()
        .ok_or_else(|| AwsError::local(ErrorClass::NotFound, format!("image {id} not found")))
}

fn name_regex(v: &Value) -> Result<(), String> {
    let text = v.as_str().ok_or("expected a string")?;
    Regex::new(text).map(|_| ())
}

/// The order `most_recent` picks from: creation date, then name and ID so that ties are decided the same
/// way on every run.
fn newest(images: &[Image]) -> Option<&Image> {
    images
        .iter()
        .max_by(|a, b| (a.creation_date(), a.name(), a.image_id()).cmp(&(b.creation_date(), b.name(), b.image_id())))
}

/// "owners [amazon], filter name = [amzn2-*], name_regex "x"": what the query was, for error messages.
fn describe_query(config: &Value) -> String {
    let mut parts = Vec::new();
    let owners: Vec<&str> = config.attr("owners").elements().iter().filter_map(Value::as_str).collect();
    if !owners.is_empty() {
        parts.push(format!("owners [{}]", owners.join(", ")));
    }
    for f in config.attr("filter").elements() {
        let values: Vec<&str> = f.attr("values").elements().iter().filter_map(Value::as_str).collect();
        parts.push(format!("filter {} = [{}]", f.attr("name").as_str().unwrap_or_default(), values.join(", ")));
    }
    if let Some(re) = config.attr("name_regex").as_str() {
        parts.push(format!("name_regex {re:?}"));
    }
    parts.join(", ")
}

#[async_trait]
impl DataSource for Ami {
    fn type_name(&self) -> &'static str {
        "tandem_ami"
    }

    fn schema(&self) -> Schema {
        let strings = Type::List(Box::new(Type::String));
        Schema::new(
            0,
            Block::new("One machine image (AMI), e.g. the image for the cluster nodes.")
                .attr(Attribute::computed_volatile("id", Type::String).describe("The image ID."))
                .attr(Attribute::optional("owners", strings.clone()).describe(
                    "Account IDs or aliases (`self`, `amazon`, `aws-marketplace`) whose images are considered.",
                ))
                .attr(
                    Attribute::optional("most_recent", Type::Bool)
                        .describe("Pick the newest of several matching images instead of failing. Default `false`."),
                )
                .attr(Attribute::optional("name_regex", Type::String).validate(name_regex).describe(
                    "A regular expression the image name must contain a match of (unanchored; use `^…$` for all of \
                     it). Applied after the filters, in the provider.",
                ))
                .block(
                    "filter",
                    Nesting::List,
                    0,
                    Block::new("A DescribeImages filter, e.g. `name` = [`amzn2-ami-hvm-*-x86_64-gp2`].")
                        .attr(Attribute::required("name", Type::String).describe("The filter name, e.g. `name`."))
                        .attr(
                            Attribute::required("values", strings)
                                .describe("Accepted values; `*` and `?` are wildcards."),
                        ),
                )
                .attr(Attribute::computed_volatile("image_id", Type::String).describe("The image ID."))
                .attr(Attribute::computed_volatile("name", Type::String).describe("The image's name."))
                .attr(
                    Attribute::computed_volatile("architecture", Type::String).describe("`x86_64`, `arm64`, `i386`, …"),
                )
                .attr(
                    Attribute::computed_volatile("root_device_name", Type::String)
                        .describe("The root device, e.g. `/dev/xvda`."),
                )
                .attr(
                    Attribute::computed_volatile("creation_date", Type::String)
                        .describe("When the image was created (ISO 8601)."),
                )
                .attr(Attribute::computed_volatile("owner_id", Type::String).describe("The owning account.")),
        )
    }

    fn validate(&self, config: &Value, diags: &mut Diagnostics) {
        let owners = config.attr("owners");
        let filters = config.attr("filter");
        if owners.is_wholly_known()
            && filters.is_wholly_known()
            && owners.elements().is_empty()
            && filters.elements().is_empty()
        {
            diags.error_at(
                AttrPath::root("owners"),
                "TDM-EC2-177",
                "tandem_ami needs `owners` or at least one `filter` block",
                "Without them the query covers every public image of the region, which is slow and never \
                 unambiguous. Set e.g. owners = [\"amazon\"] and a filter on `name`.",
            );
        }
    }

    async fn read(&self, ctx: &AwsContext, config: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let owners: Vec<String> =
            config.attr("owners").elements().iter().filter_map(|v| v.as_str().map(str::to_string)).collect();
        let filters: Vec<Filter> = config
            .attr("filter")
            .elements()
            .iter()
            .map(|f| {
                let values = f.attr("values").elements().iter().filter_map(|v| v.as_str().map(str::to_string));
                Filter::builder()
                    .name(f.attr("name").as_str().unwrap_or_default())
                    .set_values(Some(values.collect()))
                    .build()
            })
            .collect();
        let out = ctx
            .ec2
            .describe_images()
            .set_owners((!owners.is_empty()).then_some(owners))
            .set_filters((!filters.is_empty()).then_some(filters))
            .send()
            .await
            .map_err(AwsError::from_sdk);
        let images: Vec<Image> = match out {
            Ok(out) => out.images().to_vec(),
            Err(e) => {
                report(diags, "reading", "EC2 AMIs", None, &e);
                return None;
            }
        };
        let images: Vec<Image> = match config.attr("name_regex").as_str() {
            Some(re) => match Regex::new(re) {
                Ok(re) => images.into_iter().filter(|i| i.name().is_some_and(|n| re.is_match(n))).collect(),
                Err(_) => return None, // reported by the validator
            },
            None => images,
        };
        let query = describe_query(config);
        let chosen = match images.len() {
            0 => {
                diags.error(
                    "TDM-EC2-175",
                    format!("no AMI matches {query}"),
                    "Check the owner (an account ID or `amazon`, `self`, `aws-marketplace`), the filter names and \
                     values (wildcards `*` and `?`), the name_regex, and the region.",
                );
                return None;
            }
            1 => &images[0],
            n if config.attr("most_recent").as_bool() != Some(true) => {
                let mut ids: Vec<&str> = images.iter().filter_map(Image::image_id).take(5).collect();
                if n > 5 {
                    ids.push("…");
                }
                diags.error(
                    "TDM-EC2-176",
                    format!("{n} AMIs match {query}"),
                    format!(
                        "Matching images: {}. Narrow the filters or name_regex, or set most_recent = true to take \
                         the newest.",
                        ids.join(", ")
                    ),
                );
                return None;
            }
            _ => newest(&images)?,
        };
        let arch = chosen.architecture().map(|a| a.as_str());
        Some(object([
            ("id", opt_str(chosen.image_id())),
            ("owners", config.attr("owners").clone()),
            ("most_recent", config.attr("most_recent").clone()),
            ("name_regex", config.attr("name_regex").clone()),
            ("filter", config.attr("filter").clone()),
            ("image_id", opt_str(chosen.image_id())),
            ("name", opt_str(chosen.name())),
            ("architecture", opt_str(arch)),
            ("root_device_name", opt_str(chosen.root_device_name())),
            ("creation_date", opt_str(chosen.creation_date())),
            ("owner_id", opt_str(chosen.owner_id())),
        ]))
    }
}

/// A small backtracking regular-expression matcher for `name_regex`: literals, `.`, classes `[a-z0-9_]` and
/// `[^…]`, escapes `\d \w \s \D \W \S` and escaped punctuation, groups `(…)` / `(?:…)` with `|`, anchors
/// `^ $`, and the quantifiers `* + ? {m} {m,} {m,n}` (greedy, or lazy with a trailing `?`). Matching is
/// unanchored, as Go's `regexp.MatchString` that the AWS provider uses. Anything else is refused at
/// validation, so a pattern never silently means something else.
#[derive(Debug)]
pub(crate) struct Regex {
    alternatives: Vec<Vec<Item>>,
}

#[derive(Debug)]
struct Item {
    node: Node,
    min: usize,
    max: Option<usize>,
    greedy: bool,
}

#[derive(Debug)]
enum Node {
    Char(char),
    Any,
    Class { ranges: Vec<(char, char)>, negated: bool },
    Start,
    End,
    Group(Vec<Vec<Item>>),
}

struct Parser<'a> {
    chars: Vec<char>,
    pos: usize,
    text: &'a str,
}

const DIGIT: &[(char, char)] = &[('0', '9')];
const WORD: &[(char, char)] = &[('0', '9'), ('A', 'Z'), ('_', '_'), ('a', 'z')];
const SPACE: &[(char, char)] = &[('\t', '\n'), ('\x0c', '\r'), (' ', ' ')];

impl Parser<'_> {
    fn error(&self, what: &str) -> String {
        format!("{:?} is not a supported regular expression: {what} at offset {}", self.text, self.pos)
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn alternatives(&mut self) -> Result<Vec<Vec<Item>>, String> {
        let mut alts = vec![self.sequence()?];
        while self.peek() == Some('|') {
            self.pos += 1;
            alts.push(self.sequence()?);
        }
        Ok(alts)
    }

    fn sequence(&mut self) -> Result<Vec<Item>, String> {
        let mut items = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let node = self.atom()?;
            let (min, max) = self.quantifier()?;
            let greedy = if (min, max) != (1, Some(1)) && self.peek() == Some('?') {
                self.pos += 1;
                false
            } else {
                true
            };
            if matches!(node, Node::Start | Node::End) && (min, max) != (1, Some(1)) {
                return Err(self.error("a quantifier after an anchor"));
            }
            items.push(Item { node, min, max, greedy });
        }
        Ok(items)
    }

    fn atom(&mut self) -> Result<Node, String> {
        let c = self.peek().ok_or_else(|| self.error("unexpected end"))?;
        self.pos += 1;
        Ok(match c {
            '.' => Node::Any,
            '^' => Node::Start,
            '$' => Node::End,
            '(' => {
                if self.peek() == Some('?') {
                    if self.chars.get(self.pos + 1) == Some(&':') {
                        self.pos += 2;
                    } else {
                        return Err(self.error("only (?:…) groups are supported"));
                    }
                }
                let alts = self.alternatives()?;
                if self.peek() != Some(')') {
                    return Err(self.error("missing )"));
                }
                self.pos += 1;
                Node::Group(alts)
            }
            ')' => return Err(self.error("unmatched )")),
            '[' => self.class()?,
            '\\' => self.escape(false)?,
            '*' | '+' | '?' | '{' => return Err(self.error("a quantifier with nothing to repeat")),
            c => Node::Char(c),
        })
    }

    /// After a `\`: a class shorthand or an escaped non-alphanumeric character.
    fn escape(&mut self, in_class: bool) -> Result<Node, String> {
        let c = self.peek().ok_or_else(|| self.error("trailing \\"))?;
        self.pos += 1;
        let class = |ranges: &[(char, char)], negated| Node::Class { ranges: ranges.to_vec(), negated };
        Ok(match c {
            'd' => class(DIGIT, false),
            'D' if !in_class => class(DIGIT, true),
            'w' => class(WORD, false),
            'W' if !in_class => class(WORD, true),
            's' => class(SPACE, false),
            'S' if !in_class => class(SPACE, true),
            't' => Node::Char('\t'),
            'n' => Node::Char('\n'),
            c if !c.is_ascii_alphanumeric() => Node::Char(c),
            c => return Err(self.error(&format!("the escape \\{c}"))),
        })
    }

    fn class(&mut self) -> Result<Node, String> {
        let negated = self.peek() == Some('^');
        if negated {
            self.pos += 1;
        }
        let mut ranges = Vec::new();
        let mut first = true;
        loop {
            let c = self.peek().ok_or_else(|| self.error("missing ]"))?;
            self.pos += 1;
            if c == ']' && !first {
                break;
            }
            first = false;
            let lo = if c == '\\' {
                match self.escape(true)? {
                    Node::Char(c) => c,
                    Node::Class { ranges: r, .. } => {
                        ranges.extend(r);
                        continue;
                    }
                    _ => return Err(self.error("an escape in a class")),
                }
            } else {
                c
            };
            if self.peek() == Some('-') && self.chars.get(self.pos + 1).is_some_and(|&n| n != ']') {
                self.pos += 1;
                let mut hi = self.peek().ok_or_else(|| self.error("missing ]"))?;
                self.pos += 1;
                if hi == '\\' {
                    match self.escape(true)? {
                        Node::Char(c) => hi = c,
                        _ => return Err(self.error("a class shorthand as a range end")),
                    }
                }
                if hi < lo {
                    return Err(self.error("a reversed range"));
                }
                ranges.push((lo, hi));
            } else {
                ranges.push((lo, lo));
            }
        }
        Ok(Node::Class { ranges, negated })
    }

    fn number(&mut self) -> Option<usize> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect::<String>().parse().ok()
    }

    fn quantifier(&mut self) -> Result<(usize, Option<usize>), String> {
        let q = match self.peek() {
            Some('*') => (0, None),
            Some('+') => (1, None),
            Some('?') => (0, Some(1)),
            Some('{') => {
                self.pos += 1;
                let min = self.number().ok_or_else(|| self.error("a repetition count"))?;
                let max = if self.peek() == Some(',') {
                    self.pos += 1;
                    if self.peek() == Some('}') {
                        None
                    } else {
                        Some(self.number().ok_or_else(|| self.error("a count"))?)
                    }
                } else {
                    Some(min)
                };
                if self.peek() != Some('}') {
                    return Err(self.error("missing }"));
                }
                if max.is_some_and(|m| m < min) || min > 1000 {
                    return Err(self.error("a repetition range"));
                }
                (min, max)
            }
            _ => return Ok((1, Some(1))),
        };
        self.pos += 1;
        Ok(q)
    }
}

type Cont<'k> = &'k mut dyn FnMut(usize) -> bool;

impl Regex {
    pub(crate) fn new(text: &str) -> Result<Regex, String> {
        let mut p = Parser { chars: text.chars().collect(), pos: 0, text };
        let alternatives = p.alternatives()?;
        if p.pos != p.chars.len() {
            return Err(p.error("unmatched )"));
        }
        Ok(Regex { alternatives })
    }

    /// True when some part of `text` matches (unanchored).
    pub(crate) fn is_match(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        (0..=chars.len()).any(|start| match_alternatives(&self.alternatives, &chars, start, &mut |_| true))
    }
}

fn match_alternatives(alts: &[Vec<Item>], text: &[char], pos: usize, k: Cont<'_>) -> bool {
    alts.iter().any(|seq| match_sequence(seq, text, pos, k))
}

fn match_sequence(seq: &[Item], text: &[char], pos: usize, k: Cont<'_>) -> bool {
    match seq.split_first() {
        None => k(pos),
        Some((item, rest)) => match_item(item, 0, text, pos, &mut |p| match_sequence(rest, text, p, k)),
    }
}

fn match_item(item: &Item, count: usize, text: &[char], pos: usize, k: Cont<'_>) -> bool {
    let can_stop = count >= item.min;
    let can_go_on = item.max.is_none_or(|m| count < m);
    if !item.greedy && can_stop && k(pos) {
        return true;
    }
    if can_go_on
        && match_node(&item.node, text, pos, &mut |p| {
            // An empty repetition cannot make progress: stop repeating instead of looping forever.
            if p == pos && can_stop {
                return false;
            }
            match_item(item, count + 1, text, p, k)
        })
    {
        return true;
    }
    item.greedy && can_stop && k(pos)
}

fn match_node(node: &Node, text: &[char], pos: usize, k: Cont<'_>) -> bool {
    match node {
        Node::Char(c) => text.get(pos) == Some(c) && k(pos + 1),
        Node::Any => text.get(pos).is_some_and(|&c| c != '\n') && k(pos + 1),
        Node::Class { ranges, negated } => {
            text.get(pos).is_some_and(|&c| ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated) && k(pos + 1)
        }
        Node::Start => pos == 0 && k(pos),
        Node::End => pos == text.len() && k(pos),
        Node::Group(alts) => match_alternatives(alts, text, pos, k),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(re: &str, text: &str) -> bool {
        Regex::new(re).unwrap().is_match(text)
    }

    #[test]
    fn regex_matches_unanchored_like_go() {
        assert!(m("amzn2", "amzn2-ami-hvm-2.0.20180810-x86_64-gp2"));
        assert!(m("^amzn2-ami-hvm-.*-x86_64-gp2$", "amzn2-ami-hvm-2.0.20180810-x86_64-gp2"));
        assert!(!m("^amzn2-ami-hvm-.*-x86_64-gp2$", "amzn2-ami-hvm-2.0.20180810-x86_64-ebs"));
        assert!(m(r"hvm-2\.0\.\d{8}", "amzn2-ami-hvm-2.0.20180810-x86_64-gp2"));
        assert!(!m(r"hvm-2\.0\.\d{9}", "amzn2-ami-hvm-2.0.20180810-x86_64-gp2"));
        assert!(m("ubuntu-(jammy|noble)-", "ubuntu/images/ubuntu-noble-24.04"));
        assert!(!m("^(jammy|noble)$", "ubuntu-noble"));
        assert!(m("^[a-z0-9-]+$", "al2023-ami"));
        assert!(!m("^[^-]+$", "al2023-ami"));
        assert!(m("x(?:86)?_64", "x_64"));
        assert!(m("a{2,3}b", "caaab") && !m("^a{2,3}b", "ab"));
        assert!(m("a*?b", "b") && m("(a|)*b", "aab"));
        assert!(m("", "anything"));
    }

    #[test]
    fn unsupported_syntax_is_refused_with_the_offset() {
        for bad in ["(?i)amzn", "a(b", "a)b", "*a", "[abc", r"\bword", "a{3,1}", "^*"] {
            let e = Regex::new(bad).unwrap_err();
            assert!(e.contains("not a supported regular expression"), "{bad}: {e}");
        }
        assert!(name_regex(&"^amzn2-.*$".into()).is_ok());
    }

    #[test]
    fn most_recent_breaks_ties_by_name() {
        let img =
            |id: &str, name: &str, date: &str| Image::builder().image_id(id).name(name).creation_date(date).build();
        let images = vec![
            img("ami-1", "b", "2024-01-01T00:00:00.000Z"),
            img("ami-2", "c", "2024-01-01T00:00:00.000Z"),
            img("ami-3", "a", "2023-01-01T00:00:00.000Z"),
        ];
        assert_eq!(newest(&images).and_then(Image::image_id), Some("ami-2"));
    }

    #[test]
    fn query_description_names_owners_filters_and_regex() {
        let config = object([
            ("owners", Value::List(vec!["amazon".into()])),
            (
                "filter",
                Value::List(vec![object([("name", "name".into()), ("values", Value::List(vec!["amzn2-*".into()]))])]),
            ),
            ("name_regex", "gp2$".into()),
        ]);
        assert_eq!(describe_query(&config), "owners [amazon], filter name = [amzn2-*], name_regex \"gp2$\"");
    }
}
