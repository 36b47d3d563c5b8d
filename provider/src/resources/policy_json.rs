//! IAM policy documents compared by meaning, as the AWS provider's `awspolicyequivalence` does: whitespace,
//! key order, the order of list elements, duplicates, and "a" versus ["a"] make no difference. Account IDs
//! and their root ARNs in principals are the same principal (IAM rewrites one into the other).

use serde_json::Value as Json;

use crate::framework::{AttrPath, Diagnostics, Value};

/// Codes of the policy-document diagnostics (TDM-IAM range), shared by every attribute holding a document.
pub(crate) const NOT_JSON: &str = "TDM-IAM-001";
pub(crate) const NOT_A_POLICY: &str = "TDM-IAM-002";

/// What is wrong with a policy document, for a diagnostic on the attribute that holds it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PolicyError {
    /// Not JSON at all; the text says where the parser stopped.
    Syntax(String),
    /// JSON, but not an IAM policy document: not an object, or no `Version` / `Statement`.
    Shape(String),
}

/// Checks that `text` is a policy document IAM could accept: a JSON object with a `Version` of
/// `2012-10-17` or `2008-10-17` and a `Statement` that is an object or a non-empty list of objects.
pub(crate) fn check(text: &str) -> Result<(), PolicyError> {
    let doc: Json = serde_json::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
    let Json::Object(map) = &doc else {
        return Err(PolicyError::Shape("the document must be a JSON object".into()));
    };
    match map.get("Version") {
        Some(Json::String(v)) if v == "2012-10-17" || v == "2008-10-17" => {}
        Some(other) => {
            return Err(PolicyError::Shape(format!(
                "\"Version\" is {other}; IAM accepts \"2012-10-17\" (current) or \"2008-10-17\""
            )));
        }
        None => return Err(PolicyError::Shape("the document has no \"Version\" (use \"2012-10-17\")".into())),
    }
    match map.get("Statement") {
        Some(Json::Object(_)) => Ok(()),
        Some(Json::Array(items)) if !items.is_empty() && items.iter().all(Json::is_object) => Ok(()),
        Some(_) => Err(PolicyError::Shape("\"Statement\" must be an object or a non-empty list of objects".into())),
        None => Err(PolicyError::Shape("the document has no \"Statement\"".into())),
    }
}

/// Validate-time check of the policy document in `attr` (skipped while unknown), as a diagnostic on it.
pub(crate) fn check_attribute(config: &Value, attr: &str, diags: &mut Diagnostics) {
    let Some(text) = config.attr(attr).as_str() else { return };
    match check(text) {
        Ok(()) => {}
        Err(PolicyError::Syntax(e)) => diags.error_at(
            AttrPath::root(attr),
            NOT_JSON,
            format!("{attr} is not valid JSON"),
            format!("{e}. Write the document with jsonencode({{...}}) or a data source to avoid syntax errors."),
        ),
        Err(PolicyError::Shape(e)) => diags.error_at(
            AttrPath::root(attr),
            NOT_A_POLICY,
            format!("{attr} is not an IAM policy document"),
            format!("{e}. A policy document looks like {{\"Version\": \"2012-10-17\", \"Statement\": [...]}}."),
        ),
    }
}

/// Plans the prior document when the configured one means the same (no diff for formatting).
pub(crate) fn keep_prior_in_plan(plan: &mut crate::framework::Plan<'_>, attr: &str) {
    if plan.is_create() {
        return;
    }
    if let (Some(p), Some(n)) = (plan.prior.attr(attr).as_str(), plan.get(attr).as_str())
        && p != n
        && equivalent(p, n)
    {
        let prior = Value::from(p);
        plan.set(attr, prior);
    }
}

/// True when both texts are JSON documents with the same meaning as IAM policies.
pub(crate) fn equivalent(a: &str, b: &str) -> bool {
    match (serde_json::from_str::<Json>(a), serde_json::from_str::<Json>(b)) {
        (Ok(x), Ok(y)) => canonical(&x) == canonical(&y),
        _ => a == b,
    }
}

/// The document as state should hold it: `prior` (the user's spelling) when AWS's copy means the same,
/// else AWS's copy. IAM answers documents URL-encoded; they are decoded first.
pub(crate) fn keep_prior(prior: &Value, from_aws: &str) -> Value {
    let decoded = decode_document(from_aws);
    match prior.as_str() {
        Some(p) if equivalent(p, &decoded) => Value::from(p),
        _ => Value::from(decoded),
    }
}

/// IAM returns policy documents URL-encoded (RFC 3986); moto returns them as sent. JSON text starts with
/// `{` (after whitespace), an encoded document with `%7B`.
pub(crate) fn decode_document(text: &str) -> String {
    if text.trim_start().starts_with('{') {
        return text.to_string();
    }
    percent_decode(text)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%'
            && let (Some(h), Some(l)) = (bytes.get(i + 1).and_then(hex), bytes.get(i + 2).and_then(hex))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(if b == b'+' { b' ' } else { b });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: &u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A canonical text of a policy value: object keys sorted, every list sorted and deduplicated (all lists in
/// the IAM policy grammar are sets), a one-element list written as its element, and an account's root ARN
/// written as the account ID.
fn canonical(v: &Json) -> String {
    match v {
        Json::Object(map) => {
            let mut entries: Vec<(String, String)> =
                map.iter().map(|(k, v)| (k.clone(), canonical(v))).collect::<Vec<_>>();
            entries.sort();
            let inner: Vec<String> =
                entries.into_iter().map(|(k, v)| format!("{}:{v}", Json::String(k))).collect::<Vec<_>>();
            format!("{{{}}}", inner.join(","))
        }
        Json::Array(items) => {
            let mut parts: Vec<String> = items.iter().map(canonical).collect();
            parts.sort();
            parts.dedup();
            if parts.len() == 1 { parts.remove(0) } else { format!("[{}]", parts.join(",")) }
        }
        Json::String(s) => Json::String(root_arn_to_account(s).to_string()).to_string(),
        other => other.to_string(),
    }
}

/// `arn:aws:iam::123456789012:root` → `123456789012` (IAM stores an account principal as its root ARN).
fn root_arn_to_account(s: &str) -> &str {
    let Some(rest) = s.strip_prefix("arn:") else { return s };
    let mut fields = rest.splitn(5, ':');
    let (_partition, service, region, account, resource) =
        (fields.next(), fields.next(), fields.next(), fields.next(), fields.next());
    match (service, region, account, resource) {
        (Some("iam"), Some(""), Some(acct), Some("root"))
            if acct.len() == 12 && acct.bytes().all(|b| b.is_ascii_digit()) =>
        {
            acct
        }
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ec2:B","ec2:A"],"Resource":"*"}]}"#;

    #[test]
    fn whitespace_key_order_and_list_order_do_not_matter() {
        let q = r#"{
          "Statement": {"Resource": ["*"], "Action": ["ec2:A", "ec2:B", "ec2:A"], "Effect": "Allow"},
          "Version": "2012-10-17"
        }"#;
        assert!(equivalent(P, q));
        let r = P.replace("ec2:B", "ec2:C");
        assert!(!equivalent(P, &r));
    }

    #[test]
    fn statements_compare_as_a_set() {
        let a = r#"{"Version":"2012-10-17","Statement":[{"Sid":"1","Effect":"Allow","Action":"a:x","Resource":"*"},{"Sid":"2","Effect":"Deny","Action":"a:y","Resource":"*"}]}"#;
        let b = r#"{"Version":"2012-10-17","Statement":[{"Sid":"2","Effect":"Deny","Action":"a:y","Resource":"*"},{"Sid":"1","Effect":"Allow","Action":"a:x","Resource":"*"}]}"#;
        assert!(equivalent(a, b));
    }

    #[test]
    fn account_id_principal_equals_its_root_arn() {
        let a = r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"123456789012"},"Action":"sts:AssumeRole"}}"#;
        let b = a.replace("\"123456789012\"", "\"arn:aws:iam::123456789012:root\"");
        assert!(equivalent(a, &b));
        let c = a.replace("\"123456789012\"", "\"arn:aws:iam::123456789012:user/bob\"");
        assert!(!equivalent(a, &c));
    }

    #[test]
    fn check_rejects_non_json_and_missing_parts() {
        assert!(check(P).is_ok());
        assert!(matches!(check("{not json"), Err(PolicyError::Syntax(_))));
        assert!(matches!(check("[]"), Err(PolicyError::Shape(_))));
        let no_version = r#"{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
        assert!(matches!(check(no_version), Err(PolicyError::Shape(m)) if m.contains("Version")));
        let old_version = r#"{"Version":"2012-10-18","Statement":{}}"#;
        assert!(matches!(check(old_version), Err(PolicyError::Shape(m)) if m.contains("2012-10-17")));
        let no_statement = r#"{"Version":"2012-10-17"}"#;
        assert!(matches!(check(no_statement), Err(PolicyError::Shape(m)) if m.contains("Statement")));
        let empty = r#"{"Version":"2012-10-17","Statement":[]}"#;
        assert!(check(empty).is_err());
    }

    #[test]
    fn attribute_check_points_at_the_attribute() {
        let mut d = Diagnostics::new();
        let cfg = Value::object([("policy", Value::from("{\"Version\":\"2012-10-17\"")), ("other", Value::Unknown)]);
        check_attribute(&cfg, "policy", &mut d);
        check_attribute(&cfg, "other", &mut d);
        assert_eq!(d.0.len(), 1);
        assert!(d.0[0].summary.contains(NOT_JSON));
        assert_eq!(d.0[0].path, Some(AttrPath::root("policy")));
    }

    #[test]
    fn url_encoded_documents_from_iam_are_decoded_and_prior_spelling_kept() {
        let encoded = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%5B%22ec2%3AA%22%2C%22ec2%3AB%22%5D%2C%22Resource%22%3A%22%2A%22%7D%5D%7D";
        let pretty = "{\n  \"Version\": \"2012-10-17\",\n  \"Statement\": [{\"Effect\": \"Allow\", \"Action\": [\"ec2:B\", \"ec2:A\"], \"Resource\": \"*\"}]\n}";
        assert_eq!(keep_prior(&Value::from(pretty), encoded), Value::from(pretty));
        let decoded = keep_prior(&Value::Null, encoded);
        assert!(decoded.as_str().is_some_and(|d| d.starts_with("{\"Version\"")), "{decoded:?}");
        assert_eq!(decode_document(P), P);
    }
}
