//! Tags as the AWS provider handles them: `tags` (the user's) merged over the provider's `default_tags`
//! into `tags_all`, which is what the object carries in AWS.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};

use crate::framework::Value;

pub type Tags = BTreeMap<String, String>;

/// Reads a `map(string)` value; null and unknown give an empty map.
pub fn tags_of(v: &Value) -> Tags {
    match v {
        Value::Map(m) => m.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect(),
        _ => Tags::new(),
    }
}

pub fn to_value(tags: &Tags) -> Value {
    Value::Map(tags.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect())
}

/// `tags_all` as planned: unknown while the user's tags are unknown, else defaults overlaid with tags.
pub fn plan_tags_all(default_tags: &Tags, tags: &Value) -> Value {
    if !tags.is_wholly_known() {
        return Value::Unknown;
    }
    let mut all = default_tags.clone();
    all.extend(tags_of(tags));
    to_value(&all)
}

/// The `tags` attribute as read back from AWS: everything the object carries except the provider's default
/// tags (unless the user set the same key to another value). Empty means null, unless the prior state held `{}`.
pub fn tags_from_aws(all: &Tags, default_tags: &Tags, prior: &Value) -> Value {
    let prior_tags = tags_of(prior);
    let own: Tags = all
        .iter()
        .filter(|(k, v)| prior_tags.contains_key(*k) || default_tags.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if own.is_empty() && !matches!(prior, Value::Map(_)) { Value::Null } else { to_value(&own) }
}

pub fn from_ec2(tags: &[Tag]) -> Tags {
    tags.iter().filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string()))).collect()
}

pub fn to_ec2(tags: &Tags) -> Vec<Tag> {
    tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()
}

/// Tags applied in the create call itself, so the object is never visible untagged.
pub fn ec2_tag_spec(resource_type: ResourceType, tags: &Tags) -> Option<TagSpecification> {
    (!tags.is_empty())
        .then(|| TagSpecification::builder().resource_type(resource_type).set_tags(Some(to_ec2(tags))).build())
}

/// What to remove and what to set to go from `old` to `new`.
pub fn diff(old: &Tags, new: &Tags) -> (Vec<String>, Tags) {
    let removed = old.keys().filter(|k| !new.contains_key(*k)).cloned().collect();
    let set = new.iter().filter(|(k, v)| old.get(*k) != Some(*v)).map(|(k, v)| (k.clone(), v.clone())).collect();
    (removed, set)
}

/// Brings an EC2 object's tags from the prior `tags_all` to the planned one.
pub async fn update_ec2(ctx: &super::AwsContext, id: &str, old: &Value, new: &Value) -> Result<(), super::AwsError> {
    let (removed, set) = diff(&tags_of(old), &tags_of(new));
    if !removed.is_empty() {
        let keys = removed.iter().map(|k| Tag::builder().key(k).build()).collect();
        ctx.ec2.delete_tags().resources(id).set_tags(Some(keys)).send().await.map_err(super::AwsError::from_sdk)?;
    }
    if !set.is_empty() {
        ctx.ec2
            .create_tags()
            .resources(id)
            .set_tags(Some(to_ec2(&set)))
            .send()
            .await
            .map_err(super::AwsError::from_sdk)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(pairs: &[(&str, &str)]) -> Tags {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn resource_tags_win_over_default_tags() {
        let all = plan_tags_all(&t(&[("env", "dev"), ("team", "a")]), &to_value(&t(&[("team", "b")])));
        assert_eq!(tags_of(&all), t(&[("env", "dev"), ("team", "b")]));
        assert!(plan_tags_all(&Tags::new(), &Value::Unknown).is_unknown());
    }

    #[test]
    fn read_back_leaves_default_tags_out_of_tags() {
        let defaults = t(&[("env", "dev")]);
        let all = t(&[("env", "dev"), ("Name", "x")]);
        assert_eq!(tags_of(&tags_from_aws(&all, &defaults, &Value::Null)), t(&[("Name", "x")]));
        assert!(tags_from_aws(&defaults, &defaults, &Value::Null).is_null());
        let empty_prior = to_value(&Tags::new());
        assert_eq!(tags_from_aws(&defaults, &defaults, &empty_prior), empty_prior);
    }

    #[test]
    fn diff_lists_removed_and_changed() {
        let (removed, set) = diff(&t(&[("a", "1"), ("b", "2")]), &t(&[("b", "3"), ("c", "4")]));
        assert_eq!(removed, vec!["a".to_string()]);
        assert_eq!(set, t(&[("b", "3"), ("c", "4")]));
    }
}
