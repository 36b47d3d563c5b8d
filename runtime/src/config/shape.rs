//! Offline shape checks of single values: names, AWS IDs, zone and region names, DNS names, endpoints, paths.
//! Each returns `Err(message)`; the caller attaches the code and the path.

/// Names of nodes, groups, resources, monitors and interconnects: 1-63 characters of letters, digits, `-`, `_`
/// and `.`, starting with a letter or digit (so a host name works as a node name).
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok { Ok(()) } else { Err(format!("{name:?} is not a valid name")) }
}

/// Environment variable names for `exec` resources and `custom` monitors.
pub fn check_env_name(name: &str) -> Result<(), String> {
    let ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok { Ok(()) } else { Err(format!("{name:?} is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)")) }
}

/// `prefix-` followed by 8 or 17 lower-case hex digits, as EC2 IDs are (`vpc-`, `rtb-`, `eipalloc-`, `i-`, `eni-`).
pub fn check_ec2_id(id: &str, prefix: &str) -> Result<(), String> {
    let ok = id.strip_prefix(prefix).and_then(|rest| rest.strip_prefix('-')).is_some_and(|hex| {
        (8..=17).contains(&hex.len()) && hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    });
    if ok { Ok(()) } else { Err(format!("{id:?} is not an ID of the form {prefix}-0123abcd")) }
}

/// Route 53 hosted zone IDs: upper-case letters and digits (without `/hostedzone/`). AWS's IDs start with `Z`
/// in practice, but AWS documents only the length, so no prefix is required.
pub fn check_hosted_zone_id(id: &str) -> Result<(), String> {
    if let Some(bare) = id.strip_prefix("/hostedzone/") {
        return Err(format!("{id:?} has a /hostedzone/ prefix: write {bare:?}"));
    }
    let ok = (2..=32).contains(&id.len()) && id.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    if ok { Ok(()) } else { Err(format!("{id:?} is not a hosted zone ID such as \"Z0123456789ABCDEFGHIJ\"")) }
}

/// Region names: `us-east-1`, `eu-central-2`, `us-gov-west-1`, `cn-north-1`.
pub fn check_region(region: &str) -> Result<(), String> {
    if region_shape(region) { Ok(()) } else { Err(format!("{region:?} is not a region name such as \"us-east-1\"")) }
}

fn region_shape(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    let (geo, middle, number) = match parts.as_slice() {
        [geo, area, number] => (*geo, vec![*area], *number),
        [geo, partition, area, number] => (*geo, vec![*partition, *area], *number),
        _ => return false,
    };
    geo.len() == 2
        && geo.chars().all(|c| c.is_ascii_lowercase())
        && middle.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && !number.is_empty()
        && number.len() <= 2
        && number.chars().all(|c| c.is_ascii_digit())
}

/// The region of an availability zone name, or an error when the name does not have the shape of one:
/// `us-east-1a` -> `us-east-1`; Local Zones `us-west-2-lax-1a` -> `us-west-2`. Zone IDs (`use1-az1`) are not
/// zone names.
pub fn region_of_az(az: &str) -> Result<String, String> {
    let err = || format!("{az:?} is not an availability zone name such as \"us-east-1a\"");
    let letter = az.chars().last().ok_or_else(err)?;
    if !letter.is_ascii_lowercase() {
        return Err(err());
    }
    let stem = &az[..az.len() - 1];
    if region_shape(stem) {
        return Ok(stem.to_string());
    }
    // Local Zone: <region>-<place>-<n><letter>
    let parts: Vec<&str> = stem.rsplitn(3, '-').collect();
    if let [n, place, region] = parts.as_slice()
        && !n.is_empty()
        && n.chars().all(|c| c.is_ascii_digit())
        && !place.is_empty()
        && place.chars().all(|c| c.is_ascii_lowercase())
        && region_shape(region)
    {
        return Ok((*region).to_string());
    }
    Err(err())
}

/// A DNS record name as Route 53 stores it: lower case, fully qualified with a trailing dot, at least two
/// labels, each 1-63 of `a-z 0-9 - _` not starting or ending with `-`, at most 254 characters in all.
pub fn check_record_name(name: &str) -> Result<(), String> {
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "record name {name:?} is not lower case (Route 53 stores {:?})",
            name.to_ascii_lowercase()
        ));
    }
    let Some(stem) = name.strip_suffix('.') else {
        return Err(format!("record name {name:?} has no trailing dot: write \"{name}.\""));
    };
    if name.len() > 254 {
        return Err(format!("record name {name:?} is longer than 254 characters"));
    }
    let labels: Vec<&str> = stem.split('.').collect();
    if labels.len() < 2 {
        return Err(format!(
            "record name {name:?} is not fully qualified (it needs a domain, e.g. \"app.example.com.\")"
        ));
    }
    for label in labels {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !ok {
            return Err(format!("record name {name:?} has an invalid label {label:?}"));
        }
    }
    Ok(())
}

/// An `http://` or `https://` URL with a host.
pub fn check_http_url(url: &str) -> Result<(), String> {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') && !rest.contains(char::is_whitespace) => Ok(()),
        _ => Err(format!("{url:?} is not an http:// or https:// URL")),
    }
}

/// An absolute path without NUL.
pub fn check_absolute_path(path: &std::path::Path) -> Result<(), String> {
    let text = path.to_string_lossy();
    if path.is_absolute() && !text.contains('\0') { Ok(()) } else { Err(format!("{text:?} is not an absolute path")) }
}

/// Levenshtein distance, for "did you mean" hints.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb { prev } else { 1 + prev.min(cur).min(row[j]) };
            prev = cur;
        }
    }
    row[b.len()]
}

/// The closest candidate within distance 2, if any.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates.into_iter().map(|c| (edit_distance(word, c), c)).filter(|(d, _)| *d <= 2).min().map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_allow_host_names_but_not_spaces_or_leading_dashes() {
        assert!(check_name("node-a").is_ok());
        assert!(check_name("ip-10-0-1-10.ec2.internal").is_ok());
        assert!(check_name("web_1").is_ok());
        for bad in ["", "-a", "a b", "a/b", &"x".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ec2_ids_need_prefix_and_hex() {
        assert!(check_ec2_id("vpc-0abc12de", "vpc").is_ok());
        assert!(check_ec2_id("rtb-0123456789abcdef0", "rtb").is_ok());
        assert!(check_ec2_id("eipalloc-12345678", "eipalloc").is_ok());
        assert!(check_ec2_id("vpc-xyz12345", "vpc").is_err());
        assert!(check_ec2_id("subnet-12345678", "vpc").is_err());
        assert!(check_ec2_id("vpc-123", "vpc").is_err());
    }

    #[test]
    fn hosted_zone_ids_reject_the_path_prefix() {
        assert!(check_hosted_zone_id("Z0123456789ABC").is_ok());
        let e = check_hosted_zone_id("/hostedzone/Z0123456789ABC").unwrap_err();
        assert!(e.contains("\"Z0123456789ABC\""));
        assert!(check_hosted_zone_id("z123").is_err());
        assert!(check_hosted_zone_id("8Z6245AHUTRTVAW0LOXS5K").is_ok(), "no Z prefix required");
    }

    #[test]
    fn zone_names_yield_their_region() {
        assert_eq!(region_of_az("us-east-1a").unwrap(), "us-east-1");
        assert_eq!(region_of_az("ap-northeast-3c").unwrap(), "ap-northeast-3");
        assert_eq!(region_of_az("us-gov-west-1b").unwrap(), "us-gov-west-1");
        assert_eq!(region_of_az("us-west-2-lax-1a").unwrap(), "us-west-2");
        for bad in ["us-east-1", "use1-az1", "us-east-1A", "useast1a", "us-east-a", ""] {
            assert!(region_of_az(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn record_names_must_be_lower_case_fqdns_with_trailing_dot() {
        assert!(check_record_name("app.example.internal.").is_ok());
        assert!(check_record_name("_svc.app-1.example.com.").is_ok());
        assert!(check_record_name("App.example.com.").unwrap_err().contains("lower case"));
        assert!(check_record_name("app.example.com").unwrap_err().contains("trailing dot"));
        assert!(check_record_name("app.").unwrap_err().contains("fully qualified"));
        assert!(check_record_name("a..b.").is_err());
        assert!(check_record_name("-a.b.").is_err());
    }

    #[test]
    fn urls_and_paths() {
        assert!(check_http_url("http://10.0.0.5/health").is_ok());
        assert!(check_http_url("https://example.com").is_ok());
        assert!(check_http_url("ftp://x").is_err());
        assert!(check_http_url("http://").is_err());
        assert!(check_absolute_path(std::path::Path::new("/dev/xvdf")).is_ok());
        assert!(check_absolute_path(std::path::Path::new("dev/xvdf")).is_err());
    }

    #[test]
    fn did_you_mean_finds_close_words_only() {
        assert_eq!(did_you_mean("privte_ip", ["private_ip", "instance_id"]), Some("private_ip"));
        assert_eq!(did_you_mean("zzz", ["private_ip"]), None);
    }
}
