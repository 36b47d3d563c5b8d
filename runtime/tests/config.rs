//! The cluster config contract: every validation rule with its code and position, the round trip
//! `parse(render(c)) == c`, how a node finds itself, and `tandemctl config check`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::Duration;

use tandem_runtime::config::*;

const VIP_EXAMPLE: &str = include_str!("../src/config/examples/vip.hcl");
const EIP_EXAMPLE: &str = include_str!("../src/config/examples/eip.hcl");
const DNS_EXAMPLE: &str = include_str!("../src/config/examples/dns.hcl");
const DOCS: &str = include_str!("../../docs/runtime-config.md");

const BASE: &str = r#"cluster "web" {}

node "node-a" {
  private_ip        = "10.0.1.10"
  availability_zone = "us-east-1a"
}

node "node-b" {
  private_ip        = "10.0.2.10"
  availability_zone = "us-east-1b"
}

group "web" {
  servers = ["node-a", "node-b"]

  resource "exec" "app" {
    start = "/opt/app/start"
  }

  resource "aws_vip" "vip" {
    ip         = "10.1.0.10"
    vpc_id     = "vpc-0abc1234"
    depends_on = ["app"]
  }
}
"#;

// ---- helpers ----

/// BASE with `old` replaced by `new` (which must occur).
fn with(old: &str, new: &str) -> String {
    assert!(BASE.contains(old), "BASE has no {old:?}");
    BASE.replacen(old, new, 1)
}

/// BASE with `extra` appended.
fn plus(extra: &str) -> String {
    format!("{BASE}\n{extra}")
}

/// Line and column (1-based, characters) of the `n`th (0-based) occurrence of `needle` in `src`.
fn nth(src: &str, needle: &str, n: usize) -> Location {
    let offset = src.match_indices(needle).nth(n).unwrap_or_else(|| panic!("{needle:?} #{n} not in source")).0;
    Location::of_offset(src, offset)
}

fn at(src: &str, needle: &str) -> Location {
    nth(src, needle, 0)
}

/// Parsing `src` fails with an error `code` at `location`; returns that error.
fn expect(src: &str, code: &str, location: Location) -> ConfigError {
    let errors = parse_named("t.hcl", src).expect_err("the config should be rejected");
    errors
        .errors
        .iter()
        .find(|e| e.code.code() == code && e.location == Some(location))
        .cloned()
        .unwrap_or_else(|| panic!("no {code} at {location:?}; got:\n{errors}"))
}

fn ok(src: &str) -> Config {
    parse_named("t.hcl", src).unwrap_or_else(|e| panic!("rejected:\n{e}\n---\n{src}"))
}

// ---- structure ----

#[test]
fn base_config_is_valid_and_gets_its_implied_objects() {
    let c = ok(BASE);
    assert_eq!(c.summary(), "ok: cluster web, 2 nodes, 1 group");
    assert_eq!(c.interconnects, vec![Interconnect::default()]);
    let implied: Vec<(&str, &str)> = c.monitors.iter().map(|m| (m.name.as_str(), m.kind.kind_name())).collect();
    assert_eq!(implied, vec![("vip-monitor", "aws_vip")]);
    assert_eq!(c.monitors[0].settings.when, When::Active);
    assert_eq!(c.monitors[0].on_aws_error(), Some(AwsErrorPolicy::Warn));
}

#[test]
fn explicit_monitor_of_the_same_kind_replaces_the_implied_one() {
    let c = ok(&plus("monitor \"aws_vip\" \"routes\" {\n  resource = \"vip\"\n  interval = \"10s\"\n}\n"));
    assert_eq!(c.monitors.len(), 1);
    assert_eq!(c.monitors[0].name, "routes");
    assert_eq!(c.monitors[0].settings.interval, Duration::from_secs(10));
}

#[test]
fn implied_monitor_name_avoids_taken_names() {
    let c = ok(&plus("monitor \"tcp\" \"vip-monitor\" {\n  address = \"127.0.0.1:80\"\n}\n"));
    let names: Vec<&str> = c.monitors.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, vec!["vip-monitor", "vip-monitor-2"]);
}

#[test]
fn syntax_error_001_has_hcl_position() {
    let src = with("  servers = [\"node-a\", \"node-b\"]", "  servers = [\"node-a\" \"node-b\"]");
    let errors = parse_named("t.hcl", &src).unwrap_err();
    assert_eq!(errors.codes(), vec!["TDM-CFG-001"]);
    assert_eq!(errors.errors[0].location.map(|l| l.line), Some(at(&src, "servers").line));
}

#[test]
fn unknown_attribute_002_suggests_the_right_name() {
    let src = with("  private_ip        = \"10.0.1.10\"", "  privte_ip = \"10.0.1.10\"");
    let e = expect(&src, "TDM-CFG-002", at(&src, "privte_ip"));
    assert!(e.hint.contains("did you mean \"private_ip\""), "{}", e.hint);
    // ... and the now-missing private_ip is reported too, at the node's label.
    expect(&src, "TDM-CFG-003", at(&src, "\"node-a\""));
}

#[test]
fn removed_fencing_attributes_002_name_the_fencer() {
    for line in ["fencing = \"stop_instance\"", "fencing = \"none\"", "race_delay = \"5s\""] {
        let src = plus(&format!("arbitration {{\n  {line}\n}}\n"));
        let e = expect(&src, "TDM-CFG-002", at(&src, line));
        let shown = e.display_in("t.hcl");
        assert!(shown.contains("removed") && shown.contains("stop_instance fencing"), "{shown}");
        assert!(shown.contains("docs/fencing.md") && !shown.contains("unknown attribute"), "{shown}");
    }
}

#[test]
fn unknown_block_002() {
    let src = plus("hartbeat {\n  interval = \"1s\"\n}\n");
    let e = expect(&src, "TDM-CFG-002", at(&src, "hartbeat"));
    assert!(e.hint.contains("did you mean \"heartbeat\""), "{}", e.hint);
}

#[test]
fn missing_attribute_003_points_at_the_block() {
    let src = with("    vpc_id     = \"vpc-0abc1234\"\n", "");
    let e = expect(&src, "TDM-CFG-003", at(&src, "\"vip\""));
    assert!(e.message.contains("\"vpc_id\""), "{}", e.message);
}

#[test]
fn missing_cluster_block_003() {
    let src = BASE.replacen("cluster \"web\" {}\n", "", 1);
    let errors = parse_named("t.hcl", &src).unwrap_err();
    assert_eq!(errors.codes(), vec!["TDM-CFG-003"]);
}

#[test]
fn wrong_type_004_names_expected_and_found() {
    let src = plus("interconnect \"primary\" {\n  port = \"7400\"\n}\n");
    let e = expect(&src, "TDM-CFG-004", at(&src, "\"7400\""));
    assert!(e.message.contains("expected a number, found a string"), "{}", e.message);
}

#[test]
fn interpolation_is_rejected_004() {
    let src = with("\"/opt/app/start\"", "\"${var.start}\"");
    let e = expect(&src, "TDM-CFG-004", at(&src, "\"${var.start}\""));
    assert!(e.message.contains("no variables"), "{}", e.message);
}

#[test]
fn wrong_label_count_004() {
    let src = with("resource \"exec\" \"app\"", "resource \"app\"");
    expect(&src, "TDM-CFG-004", at(&src, "\"app\" {"));
}

#[test]
fn duplicate_singleton_block_005() {
    let src = plus("heartbeat {}\nheartbeat {}\n");
    expect(&src, "TDM-CFG-005", nth(&src, "heartbeat", 1));
}

#[test]
fn duplicate_map_key_005_and_override_005() {
    let src =
        plus("interconnect \"hb\" {\n  addresses = { \"node-a\" = \"10.9.0.1\", \"node-a\" = \"10.9.0.2\" }\n}\n");
    let errors = parse_named("t.hcl", &src).unwrap_err();
    // hcl-edit itself may reject repeated object keys as a syntax error; either way the file is refused.
    assert!(errors.codes() == vec!["TDM-CFG-005"] || errors.codes() == vec!["TDM-CFG-001"], "{errors}");
    let src = with(
        "    depends_on = [\"app\"]\n",
        "    depends_on = [\"app\"]\n    override \"node-a\" {}\n    override \"node-a\" {}\n",
    );
    expect(&src, "TDM-CFG-005", nth(&src, "\"node-a\" {}", 1));
}

#[test]
fn bad_choice_006_lists_the_choices() {
    let src = with(
        "  servers = [\"node-a\", \"node-b\"]\n",
        "  servers = [\"node-a\", \"node-b\"]\n  failback = \"sometimes\"\n",
    );
    let e = expect(&src, "TDM-CFG-006", at(&src, "\"sometimes\""));
    assert!(e.message.contains("\"manual\" or \"auto\""), "{}", e.message);
}

#[test]
fn unknown_kinds_006() {
    let src = with("resource \"exec\" \"app\"", "resource \"script\" \"app\"");
    expect(&src, "TDM-CFG-006", at(&src, "\"app\""));
    let src = plus("monitor \"http\" \"m\" {\n  url = \"x\"\n}\n");
    let errors = parse_named("t.hcl", &src).unwrap_err();
    assert_eq!(errors.codes(), vec!["TDM-CFG-006"], "one error, no cascade of unknown attributes");
}

#[test]
fn bad_duration_007() {
    let src = plus("heartbeat {\n  interval = \"1.5s\"\n}\n");
    expect(&src, "TDM-CFG-007", at(&src, "\"1.5s\""));
}

#[test]
fn bad_address_008() {
    let src = with("\"10.0.2.10\"", "\"10.0.2.300\"");
    expect(&src, "TDM-CFG-008", at(&src, "\"10.0.2.300\""));
    let src = with("    depends_on = [\"app\"]\n", "    depends_on = [\"app\"]\n    vpc_cidrs = [\"10.0.0.1/16\"]\n");
    let e = expect(&src, "TDM-CFG-008", at(&src, "\"10.0.0.1/16\""));
    assert!(e.message.contains("10.0.0.0/16"), "{}", e.message);
}

#[test]
fn bad_name_009() {
    let src = with("node \"node-b\"", "node \"node b\"").replace("\"node-b\"]", "\"node b\"]");
    expect(&src, "TDM-CFG-009", at(&src, "\"node b\" {"));
}

#[test]
fn duplicate_node_name_010_points_at_the_second() {
    let src = with("node \"node-b\"", "node \"node-a\"");
    let errors = parse_named("t.hcl", &src).unwrap_err();
    let e = errors.errors.iter().find(|e| e.code == ErrorCode::DuplicateName).unwrap();
    assert_eq!(e.location, Some(nth(&src, "\"node-a\" {", 1)));
}

#[test]
fn group_and_resource_names_share_a_namespace_010() {
    let src = with("resource \"exec\" \"app\"", "resource \"exec\" \"web\"").replace("[\"app\"]", "[\"web\"]");
    let e = expect(&src, "TDM-CFG-010", at(&src, "\"web\" {\n    start"));
    assert!(e.message.contains("already used by a group"), "{}", e.message);
}

#[test]
fn duplicate_monitor_name_010_and_duplicate_server_010() {
    let src = plus("monitor \"aws_az\" \"az\" {}\nmonitor \"aws_az\" \"az\" {}\n");
    expect(&src, "TDM-CFG-010", nth(&src, "\"az\"", 1));
    let src = with("[\"node-a\", \"node-b\"]", "[\"node-a\", \"node-a\"]");
    expect(&src, "TDM-CFG-010", nth(&src, "\"node-a\"", 2));
}

#[test]
fn unknown_server_011_points_at_the_list_element() {
    let src = with("[\"node-a\", \"node-b\"]", "[\"node-a\", \"node-c\"]");
    let e = expect(&src, "TDM-CFG-011", at(&src, "\"node-c\""));
    assert!(e.hint.contains("did you mean \"node-a\""), "{}", e.hint);
}

#[test]
fn override_for_a_non_server_011() {
    let src = with("[\"node-a\", \"node-b\"]", "[\"node-a\"]").replace(
        "    depends_on = [\"app\"]\n",
        "    depends_on = [\"app\"]\n    override \"node-b\" {\n      device = \"ens6\"\n    }\n",
    );
    let e = expect(&src, "TDM-CFG-011", at(&src, "\"node-b\" {\n      device"));
    assert!(e.message.contains("not a server"), "{}", e.message);
}

#[test]
fn interconnect_address_for_unknown_node_011() {
    let src = plus("interconnect \"hb\" {\n  addresses = {\n    \"node-x\" = \"10.9.0.1\"\n  }\n}\n");
    expect(&src, "TDM-CFG-011", at(&src, "\"node-x\""));
}

#[test]
fn np_target_for_unknown_node_011() {
    let src = plus("np_resolution {\n  ping {\n    address = \"10.0.0.5\"\n    nodes = [\"nodeb\"]\n  }\n}\n");
    expect(&src, "TDM-CFG-011", at(&src, "\"nodeb\""));
}

#[test]
fn unknown_dependency_012() {
    let src = with("depends_on = [\"app\"]", "depends_on = [\"ap\"]");
    expect(&src, "TDM-CFG-012", at(&src, "\"ap\""));
}

#[test]
fn dependency_on_another_groups_resource_012() {
    let src = plus(
        "group \"other\" {\n  servers = [\"node-b\"]\n  resource \"exec\" \"x\" {\n    start = \"true\"\n    depends_on = [\"app\"]\n  }\n}\n",
    );
    let e = expect(&src, "TDM-CFG-012", nth(&src, "\"app\"", 2));
    assert!(e.message.contains("group \"web\""), "{}", e.message);
}

#[test]
fn monitor_of_missing_resource_012_and_recovery_target_012() {
    let src = plus("monitor \"aws_vip\" \"m\" {\n  resource = \"vip2\"\n}\n");
    expect(&src, "TDM-CFG-012", at(&src, "\"vip2\""));
    let src = plus("monitor \"aws_az\" \"m\" {\n  recovery_target = \"webb\"\n}\n");
    expect(&src, "TDM-CFG-012", at(&src, "\"webb\""));
}

#[test]
fn dependency_cycle_013_names_the_cycle() {
    let src = with("    start = \"/opt/app/start\"\n", "    start = \"/opt/app/start\"\n    depends_on = [\"vip\"]\n");
    let e = expect(&src, "TDM-CFG-013", at(&src, "\"vip\"]"));
    assert!(e.message.ends_with("dependency cycle app -> vip -> app"), "{}", e.message);
    let src = with("depends_on = [\"app\"]", "depends_on = [\"vip\"]");
    let e = expect(&src, "TDM-CFG-013", at(&src, "\"vip\"]"));
    assert!(e.message.ends_with("vip -> vip"), "{}", e.message);
}

#[test]
fn duplicate_node_ip_014() {
    let src = with("\"10.0.2.10\"", "\"10.0.1.10\"");
    let e = expect(&src, "TDM-CFG-014", nth(&src, "\"10.0.1.10\"", 1));
    assert!(e.message.contains("node \"node-a\""), "{}", e.message);
}

#[test]
fn duplicate_interconnect_address_014() {
    let src = plus("interconnect \"hb\" {\n  addresses = {\n    \"node-b\" = \"10.0.1.10\"\n  }\n}\n");
    expect(&src, "TDM-CFG-014", at(&src, "\"node-b\" = "));
}

#[test]
fn vip_must_be_a_single_address_015() {
    let src = with("\"10.1.0.10\"", "\"10.1.0.0/24\"");
    expect(&src, "TDM-CFG-015", at(&src, "\"10.1.0.0/24\""));
    ok(&with("\"10.1.0.10\"", "\"10.1.0.10/32\""));
}

#[test]
fn vip_inside_vpc_cidr_016() {
    let src = with("    depends_on = [\"app\"]\n", "    depends_on = [\"app\"]\n    vpc_cidrs = [\"10.1.0.0/16\"]\n");
    let e = expect(&src, "TDM-CFG-016", at(&src, "\"10.1.0.10\""));
    assert!(e.message.contains("inside the VPC CIDR 10.1.0.0/16"), "{}", e.message);
    ok(&with("    depends_on = [\"app\"]\n", "    depends_on = [\"app\"]\n    vpc_cidrs = [\"10.0.0.0/16\"]\n"));
    // Without vpc_cidrs, a VIP equal to a node's IP is still caught.
    let src = with("\"10.1.0.10\"", "\"10.0.2.10\"");
    expect(&src, "TDM-CFG-016", nth(&src, "\"10.0.2.10\"", 1));
}

const DNS_RESOURCE: &str =
    "\n  resource \"aws_dns\" \"name\" {\n    hosted_zone_id = \"Z0123ABC\"\n    record_name    = \"RECORD\"\n  }\n";

fn with_dns(record: &str) -> String {
    with(
        "    depends_on = [\"app\"]\n  }\n",
        &format!("    depends_on = [\"app\"]\n  }}\n{}", DNS_RESOURCE.replace("RECORD", record)),
    )
}

#[test]
fn record_name_017() {
    ok(&with_dns("app.example.internal."));
    for (bad, why) in
        [("App.example.com.", "lower case"), ("app.example.com", "trailing dot"), ("app.", "fully qualified")]
    {
        let src = with_dns(bad);
        let e = expect(&src, "TDM-CFG-017", at(&src, &format!("\"{bad}\"")));
        assert!(e.message.contains(why), "{}", e.message);
    }
}

#[test]
fn availability_zone_shape_018() {
    for bad in ["us-east-1", "use1-az1", "us-east-1A"] {
        let src = with("\"us-east-1b\"", &format!("\"{bad}\""));
        expect(&src, "TDM-CFG-018", at(&src, &format!("\"{bad}\"")));
    }
    let src = plus("arbitration {\n  region = \"us-east\"\n}\n");
    expect(&src, "TDM-CFG-018", at(&src, "\"us-east\""));
}

#[test]
fn heartbeat_timeout_must_exceed_interval_019() {
    let src = plus("heartbeat {\n  interval = \"1s\"\n  timeout  = \"1s\"\n}\n");
    let e = expect(&src, "TDM-CFG-019", nth(&src, "\"1s\"", 1));
    assert!(e.message.contains("(1s) must be larger than the interval (1s)"), "{}", e.message);
    ok(&plus("heartbeat {\n  interval = \"100ms\"\n  timeout  = \"500ms\"\n}\n"));
}

#[test]
fn lease_ttl_must_exceed_twice_the_renew_interval_020() {
    let src = plus("arbitration {\n  ttl = \"2s\"\n  renew_interval = \"1s\"\n}\n");
    expect(&src, "TDM-CFG-020", at(&src, "\"2s\""));
    ok(&plus("arbitration {\n  ttl = \"2100ms\"\n  renew_interval = \"1s\"\n}\n"));
}

#[test]
fn monitor_kind_must_match_resource_kind_021() {
    let src = plus("monitor \"aws_eip\" \"m\" {\n  resource = \"vip\"\n}\n");
    let e = expect(&src, "TDM-CFG-021", at(&src, "\"vip\"\n}"));
    assert!(
        e.message.contains("an aws_eip monitor watches an aws_eip resource, but \"vip\" is an aws_vip resource"),
        "{}",
        e.message
    );
}

#[test]
fn not_applicable_022() {
    let src = plus("monitor \"tcp\" \"m\" {\n  address = \"127.0.0.1:80\"\n  on_aws_error = \"recover\"\n}\n");
    expect(&src, "TDM-CFG-022", at(&src, "\"recover\""));
    let src = plus("monitor \"aws_az\" \"m\" {\n  when = \"active\"\n}\n");
    expect(&src, "TDM-CFG-022", at(&src, "\"active\""));
    let src = with(
        "    depends_on = [\"app\"]\n  }\n",
        "    depends_on = [\"app\"]\n  }\n  resource \"aws_eip\" \"eip\" {\n    allocation_id = \"eipalloc-12345678\"\n    override \"node-a\" {}\n  }\n",
    );
    expect(&src, "TDM-CFG-022", at(&src, "override"));
}

#[test]
fn out_of_range_023() {
    let src = plus("interconnect \"primary\" {\n  port = 0\n}\n");
    expect(&src, "TDM-CFG-023", at(&src, "0\n}"));
    let src = plus("heartbeat {\n  interval = \"0s\"\n}\n");
    expect(&src, "TDM-CFG-023", at(&src, "\"0s\""));
}

#[test]
fn empty_024() {
    let src = with("[\"node-a\", \"node-b\"]", "[]");
    expect(&src, "TDM-CFG-024", at(&src, "[]"));
    let src = plus("monitor \"ip\" \"gw\" {\n  override \"node-a\" {\n    targets = [\"10.0.0.1\"]\n  }\n}\n");
    let e = expect(&src, "TDM-CFG-024", at(&src, "\"gw\""));
    assert!(e.message.contains("no target for node \"node-b\""), "{}", e.message);
}

#[test]
fn bad_aws_ids_025() {
    let src = with("\"vpc-0abc1234\"", "\"my-vpc\"");
    expect(&src, "TDM-CFG-025", at(&src, "\"my-vpc\""));
    let src = with_dns("app.example.com.").replace("\"Z0123ABC\"", "\"/hostedzone/Z0123ABC\"");
    let e = expect(&src, "TDM-CFG-025", at(&src, "\"/hostedzone/Z0123ABC\""));
    assert!(e.message.contains("write \"Z0123ABC\""), "{}", e.message);
}

#[test]
fn bad_endpoints_026() {
    let src = plus("monitor \"tcp\" \"m\" {\n  address = \"ec2.amazonaws.com\"\n}\n");
    expect(&src, "TDM-CFG-026", at(&src, "\"ec2.amazonaws.com\""));
    let src = plus("np_resolution {\n  http {\n    url = \"10.0.0.5/health\"\n  }\n}\n");
    expect(&src, "TDM-CFG-026", at(&src, "\"10.0.0.5/health\""));
}

#[test]
fn relative_paths_027() {
    let src = plus("secrets {\n  ca_cert_file = \"ca.crt\"\n}\n");
    expect(&src, "TDM-CFG-027", at(&src, "\"ca.crt\""));
}

#[test]
fn zones_of_another_region_028() {
    let src = with("\"us-east-1b\"", "\"us-west-2b\"");
    let e = expect(&src, "TDM-CFG-028", at(&src, "\"us-west-2b\""));
    assert!(e.message.contains("not in us-east-1"), "{}", e.message);
    let src = plus("arbitration {\n  region = \"eu-west-1\"\n}\n");
    expect(&src, "TDM-CFG-028", at(&src, "\"us-east-1a\""));
}

#[test]
fn port_conflicts_029() {
    let src = plus("mirror_connect {\n  port = 7400\n}\n");
    let e = expect(&src, "TDM-CFG-029", at(&src, "7400"));
    assert!(e.message.contains("interconnect \"primary\""), "{}", e.message);
}

#[test]
fn unreadable_file_030() {
    let errors = load(std::path::Path::new("/nonexistent/tandem.hcl")).unwrap_err();
    assert_eq!(errors.codes(), vec!["TDM-CFG-030"]);
    assert!(errors.to_string().starts_with("/nonexistent/tandem.hcl: TDM-CFG-030 "), "{errors}");
}

#[test]
fn errors_come_in_source_order_as_file_line_col_code_message_hint() {
    let src = with("\"10.0.2.10\"", "\"10.0.1.10\"").replace("[\"node-a\", \"node-b\"]", "[\"node-a\", \"node-c\"]");
    let errors = parse_named("c.hcl", &src).unwrap_err();
    assert_eq!(errors.codes(), vec!["TDM-CFG-014", "TDM-CFG-011"]);
    let text = errors.to_string();
    let lines: Vec<&str> = text.lines().collect();
    let l = at(&src, "\"node-c\"");
    assert_eq!(lines.len(), 2);
    assert!(
        lines[1].starts_with(&format!(
            "c.hcl:{}:{}: TDM-CFG-011 group.web.servers[1]: no node is named \"node-c\" (",
            l.line, l.column
        )),
        "{}",
        lines[1]
    );
    assert!(lines[1].ends_with(')'));
}

#[test]
fn structural_errors_suppress_semantic_ones() {
    // The bad port makes the interconnect unreadable; no cascade of reference errors follows.
    let src = plus("interconnect \"x\" {\n  port = \"a\"\n}\ngroup \"g\" {\n  servers = [\"nobody\"]\n}\n");
    assert_eq!(parse(&src).unwrap_err().codes(), vec!["TDM-CFG-004"]);
}

// ---- a node finds itself ----

#[test]
fn node_found_by_name_and_by_local_address() {
    let c = ok(&plus("interconnect \"backup\" {\n  port = 7401\n  addresses = { \"node-b\" = \"192.168.7.2\" }\n}\n"));
    assert_eq!(c.node_by_name("node-b").map(|n| n.private_ip), Some(Ipv4Addr::new(10, 0, 2, 10)));
    assert!(c.node_by_name("node-z").is_none());
    let local: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "10.0.1.10".parse().unwrap()];
    assert_eq!(c.node_by_local_addresses(&local).unwrap().name, "node-a");
    // By an interconnect address, and as an IPv4-mapped IPv6 address.
    assert_eq!(c.node_by_local_addresses(&["192.168.7.2".parse().unwrap()]).unwrap().name, "node-b");
    assert_eq!(c.node_by_local_addresses(&["::ffff:10.0.2.10".parse().unwrap()]).unwrap().name, "node-b");
}

#[test]
fn find_self_errors_031_032_033() {
    let c = ok(BASE);
    assert_eq!(c.find_self(Some("node-z"), &[]).unwrap_err().code.code(), "TDM-CFG-031");
    let none: Vec<IpAddr> = vec!["192.0.2.1".parse().unwrap()];
    assert_eq!(c.find_self(None, &none).unwrap_err().code.code(), "TDM-CFG-032");
    let both: Vec<IpAddr> = vec!["10.0.1.10".parse().unwrap(), "10.0.2.10".parse().unwrap()];
    assert_eq!(c.find_self(None, &both).unwrap_err().code.code(), "TDM-CFG-033");
    assert_eq!(c.find_self(Some("node-b"), &both).unwrap().name, "node-b");
}

// ---- round trip ----

#[test]
fn examples_round_trip_and_render_is_a_fixpoint() {
    for (name, src) in [("vip", VIP_EXAMPLE), ("eip", EIP_EXAMPLE), ("dns", DNS_EXAMPLE)] {
        let config = parse_named(name, src).unwrap_or_else(|e| panic!("{e}"));
        let text = render(&config);
        let back = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back, config, "{name}");
        assert_eq!(render(&back), text, "{name}");
    }
}

#[test]
fn examples_mean_what_their_comments_say() {
    let vip = parse(VIP_EXAMPLE).unwrap();
    let (group, res) = vip.resource_by_name("vip").unwrap();
    let ResourceKind::AwsVip(spec) = &res.kind else { panic!() };
    assert_eq!((spec.device_for("node-a"), spec.device_for("node-b")), (None, Some("ens6")));
    let order: Vec<&str> = group.start_order().iter().map(|r| r.name.as_str()).collect();
    assert_eq!(order, vec!["data", "app", "vip"]);
    assert!(vip.monitor_by_name("vip-monitor").is_some());
    assert_eq!(vip.ports().iter().map(|p| p.2).collect::<Vec<_>>(), vec![7402, 7400, 7410]);

    let eip = parse(EIP_EXAMPLE).unwrap();
    assert!(eip.monitor_by_name("public-monitor").is_none(), "the explicit aws_eip monitor replaces the implied one");
    assert_eq!(eip.lease_table(), "tandem-shop-leases");
    assert_eq!(eip.lease_region().as_deref(), Some("eu-west-1"));
    let https = eip.monitor_by_name("https").unwrap();
    assert_eq!(
        https.recovery_target(&eip),
        RecoveryTarget::Resource { group: "shop".into(), resource: "nginx".into() }
    );

    let dns = parse(DNS_EXAMPLE).unwrap();
    let (_, res) = dns.resource_by_name("name").unwrap();
    let ResourceKind::AwsDns(spec) = &res.kind else { panic!() };
    let ips: Vec<Ipv4Addr> = dns.nodes.iter().map(|n| spec.ip_for(n)).collect();
    assert_eq!(ips, vec![Ipv4Addr::new(10, 0, 1, 20), Ipv4Addr::new(10, 0, 3, 21)]);
    let gw = dns.monitor_by_name("gateway").unwrap();
    assert_eq!(gw.kind.ip_targets_for("db-c"), &[Ipv4Addr::new(10, 0, 103, 5)]);
    assert_eq!(gw.recovery_target(&dns), RecoveryTarget::LocalGroups);
}

/// xorshift64*: deterministic variety without a property-testing dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn duration(&mut self) -> Duration {
        Duration::from_millis(*self.pick(&[1, 100, 250, 500, 1000, 1500, 2000, 30_000, 60_000, 90_000, 3_600_000]))
    }
    fn hex(&mut self, len: usize) -> String {
        (0..len).map(|_| *self.pick(&['0', '7', 'a', 'f'])).collect()
    }
    fn text(&mut self) -> String {
        let parts = [
            "/opt/app/run",
            " --flag",
            " \"quoted\"",
            " back\\slash",
            " ${HOME}",
            " %{x}",
            "\n",
            "\t",
            " ünïcode",
            " $$",
        ];
        let tail: String = (0..self.below(4)).map(|_| *self.pick(&parts)).collect();
        format!("/opt/app/run{tail}")
    }
    fn subset(&mut self, items: &[String]) -> Vec<String> {
        items.iter().filter(|_| self.chance(50)).cloned().collect()
    }
}

fn generate(seed: u64) -> Config {
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let cluster_name: &&str = r.pick(&["web", "db-1", "x.y_z"]);
    let mut c = Config::new(cluster_name);
    c.cluster.api_port = 7000 + r.below(100) as u16;
    if r.chance(30) {
        c.secrets.ca_cert_file = "/run/tandem/ca with space.pem".into();
    }
    let zones = ["us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d"];
    let node_count = 1 + r.below(4);
    for (i, zone) in zones.iter().enumerate().take(node_count) {
        let name = if r.chance(50) { format!("n{i}") } else { format!("ip-10-0-{i}-10.ec2.internal") };
        let mut node = Node::new(&name, Ipv4Addr::new(10, 0, i as u8, 10 + r.below(100) as u8), zone);
        if r.chance(40) {
            node.instance_id = Some(format!("i-{}", r.hex(17)));
        }
        if r.chance(20) {
            node.eni_id = Some(format!("eni-{}", r.hex(8)));
        }
        c.nodes.push(node);
    }
    let names: Vec<String> = c.nodes.iter().map(|n| n.name.clone()).collect();
    c.heartbeat.interval = Duration::from_millis(*r.pick(&[100, 200, 1000]));
    c.heartbeat.timeout = c.heartbeat.interval * (2 + r.below(9) as u32);
    for k in 0..r.below(3) {
        let mut ic = Interconnect { name: format!("ic{k}"), port: 8000 + k as u16, addresses: BTreeMap::new() };
        for (i, n) in names.iter().enumerate() {
            if r.chance(50) {
                ic.addresses.insert(n.clone(), Ipv4Addr::new(192, 168, k as u8, i as u8 + 1));
            }
        }
        c.interconnects.push(ic);
    }
    c.mirror_connect.port = 9000;
    if r.chance(50) {
        c.mirror_connect.addresses.insert(names[0].clone(), Ipv4Addr::new(172, 16, 0, 1));
    }
    c.np_resolution.on_isolated = *r.pick(IsolationAction::ALL);
    c.np_resolution.timeout = r.duration();
    for _ in 0..r.below(4) {
        let probe = match r.below(3) {
            0 => NpProbe::Ping { address: Ipv4Addr::new(10, 0, 100, r.below(250) as u8) },
            1 => NpProbe::Tcp { address: HostPort { host: "ec2.us-east-1.amazonaws.com".into(), port: 443 } },
            _ => NpProbe::Http { url: "http://10.0.0.5/health?x=\"1\"".into() },
        };
        let nodes = r.subset(&names);
        c.np_resolution.targets.push(NpTarget { probe, nodes });
    }
    if r.chance(50) {
        c.arbitration.table = Some("leases.table-1".into());
    }
    if r.chance(50) {
        c.arbitration.region = Some("us-east-1".into());
    }
    c.arbitration.renew_interval = Duration::from_millis(*r.pick(&[250, 1000, 1500]));
    c.arbitration.ttl = c.arbitration.renew_interval * 2 + Duration::from_millis(1 + r.below(5000) as u64);
    for g in 0..r.below(4) {
        let mut servers = r.subset(&names);
        if servers.is_empty() {
            servers.push(names[0].clone());
        }
        if r.chance(50) {
            servers.reverse();
        }
        let mut group = Group::new(&format!("g{g}"), &[]);
        group.servers = servers.clone();
        group.failback = *r.pick(Failback::ALL);
        for k in 0..r.below(6) {
            let kind = match r.below(5) {
                0 => {
                    let mut vip = AwsVip::new(Ipv4Addr::new(10, 200, g as u8, k as u8), &format!("vpc-{}", r.hex(8)));
                    vip.route_table_ids = (0..r.below(3)).map(|i| format!("rtb-{}{i}", r.hex(7))).collect();
                    if r.chance(50) {
                        vip.vpc_cidrs = vec!["10.0.0.0/16".parse().expect("a CIDR")];
                    }
                    if r.chance(50) {
                        vip.device = Some("eth0".into());
                    }
                    for s in r.subset(&servers) {
                        vip.per_node
                            .insert(s, AwsVipNode { device: if r.chance(70) { Some("ens6".into()) } else { None } });
                    }
                    ResourceKind::AwsVip(vip)
                }
                1 => ResourceKind::AwsEip(AwsEip::new(&format!("eipalloc-{}", r.hex(17)))),
                2 => {
                    let mut dns = AwsDns::new("Z0123456789ABC", &format!("app{g}{k}.example.internal."));
                    dns.ttl = r.below(100_000) as u32;
                    dns.delete_on_deactivate = r.chance(50);
                    if r.chance(50) {
                        dns.ip = Some(Ipv4Addr::new(203, 0, 113, k as u8));
                    }
                    for s in r.subset(&servers) {
                        dns.per_node.insert(s, AwsDnsNode { ip: Some(Ipv4Addr::new(10, 9, 9, 9)) });
                    }
                    ResourceKind::AwsDns(dns)
                }
                // A mirror disk replicates between exactly two servers.
                3 if servers.len() == 2 => {
                    let mut md = MirrorDisk::new("/dev/xvdf2", "/dev/xvdf1", "/srv/data");
                    if r.chance(30) {
                        md.mount_point = None;
                    }
                    md.filesystem = *r.pick(Filesystem::ALL);
                    for s in r.subset(&servers) {
                        md.per_node.insert(
                            s,
                            MirrorDiskNode { data_device: Some("/dev/nvme1n1p2".into()), metadata_device: None },
                        );
                    }
                    ResourceKind::MirrorDisk(md)
                }
                _ => {
                    let mut exec = Exec::new(&r.text());
                    exec.stop = r.chance(60).then(|| r.text());
                    exec.probe = r.chance(40).then(|| r.text());
                    exec.start_timeout = r.duration();
                    exec.stop_timeout = r.duration();
                    exec.probe_timeout = r.duration();
                    if r.chance(50) {
                        exec.env.insert("APP_MODE".into(), r.text());
                    }
                    for s in r.subset(&servers) {
                        let mut env = BTreeMap::new();
                        env.insert("NODE_ROLE".into(), "x \"y\"".into());
                        exec.per_node.insert(s, ExecNode { env });
                    }
                    ResourceKind::Exec(exec)
                }
            };
            let mut resource = Resource::new(&format!("g{g}r{k}"), kind);
            let earlier: Vec<String> = group.resources.iter().map(|x| x.name.clone()).collect();
            resource.depends_on = r.subset(&earlier);
            resource.activation_retries = r.below(4) as u32;
            resource.deactivation_retries = r.below(4) as u32;
            resource.activation_final_action = *r.pick(FinalAction::ALL);
            resource.deactivation_final_action = *r.pick(FinalAction::ALL);
            group.resources.push(resource);
        }
        c.groups.push(group);
    }
    let resources: Vec<(String, &'static str)> =
        c.groups.iter().flat_map(|g| g.resources.iter().map(|x| (x.name.clone(), x.kind.kind_name()))).collect();
    let group_names: Vec<String> = c.groups.iter().map(|g| g.name.clone()).collect();
    for m in 0..r.below(5) {
        let of_kind = |kind: &str| resources.iter().find(|(_, k)| *k == kind).map(|(n, _)| n.clone());
        let kind = match r.below(8) {
            0 => of_kind("aws_vip").map(|resource| MonitorKind::AwsVip { resource }),
            1 => of_kind("aws_eip").map(|resource| MonitorKind::AwsEip { resource }),
            2 => of_kind("aws_dns").map(|resource| MonitorKind::AwsDns { resource, check_resolution: r.chance(50) }),
            3 => Some(MonitorKind::AwsAz),
            4 => {
                let mut per_node = BTreeMap::new();
                if r.chance(50) {
                    per_node.insert(names[0].clone(), vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)]);
                }
                Some(MonitorKind::Ip { targets: vec![Ipv4Addr::new(10, 0, 100, 1)], per_node })
            }
            5 => Some(MonitorKind::Tcp { address: HostPort { host: "::1".into(), port: 8443 } }),
            6 => of_kind("mirror_disk").map(|resource| MonitorKind::Mirror { resource }),
            _ => {
                let mut env = BTreeMap::new();
                if r.chance(50) {
                    env.insert("CHECK".into(), r.text());
                }
                Some(MonitorKind::Custom { command: r.text(), env })
            }
        };
        let Some(kind) = kind else { continue };
        let mut monitor = Monitor::new(&format!("m{m}"), kind);
        let s = &mut monitor.settings;
        s.interval = r.duration();
        s.timeout = r.duration();
        s.retries = r.below(5) as u32;
        s.start_wait = if r.chance(30) { Duration::ZERO } else { r.duration() };
        if monitor.kind.calls_aws() && r.chance(60) {
            s.on_aws_error = Some(*r.pick(AwsErrorPolicy::ALL));
        }
        if !group_names.is_empty() && r.chance(40) {
            s.recovery_target = Some(r.pick(&group_names).clone());
        }
        s.when = if monitor.kind.resource().is_some() || s.recovery_target.is_some() {
            *r.pick(When::ALL)
        } else {
            When::Always
        };
        s.recovery_action = *r.pick(RecoveryAction::ALL);
        s.final_action = *r.pick(FinalAction::ALL);
        c.monitors.push(monitor);
    }
    c.fill_implied();
    c
}

#[test]
fn generated_configs_round_trip() {
    for seed in 0..300 {
        let config = generate(seed);
        if let Err(e) = config.validate() {
            panic!("seed {seed}: generator made an invalid config:\n{e}\n{config:#?}");
        }
        let text = render(&config);
        let back = parse(&text).unwrap_or_else(|e| panic!("seed {seed}:\n{e}\n---\n{text}"));
        assert_eq!(back, config, "seed {seed}\n{text}");
        assert_eq!(render(&back), text, "seed {seed}");
    }
}

#[test]
fn fill_implied_is_idempotent() {
    for seed in 0..50 {
        let mut config = generate(seed);
        let once = config.clone();
        config.fill_implied();
        assert_eq!(config, once, "seed {seed}");
    }
}

#[test]
fn validate_reports_paths_for_configs_built_in_code() {
    let mut c = parse(BASE).unwrap();
    c.heartbeat.timeout = Duration::from_millis(500);
    c.groups[0].servers.push("node-z".into());
    let errors = c.validate().unwrap_err();
    let found: Vec<(String, &str)> = errors.errors.iter().map(|e| (e.path.to_string(), e.code.code())).collect();
    assert_eq!(
        found,
        vec![("heartbeat.timeout".to_string(), "TDM-CFG-019"), ("group.web.servers[2]".to_string(), "TDM-CFG-011")]
    );
    assert!(errors.errors.iter().all(|e| e.location.is_none()));
}

// ---- docs ----

#[test]
fn docs_list_every_code_and_embed_the_examples() {
    for code in ErrorCode::ALL {
        assert!(DOCS.contains(&format!("| {} |", code.code())), "docs/runtime-config.md lacks {}", code.code());
    }
    for (name, example) in [("vip", VIP_EXAMPLE), ("eip", EIP_EXAMPLE), ("dns", DNS_EXAMPLE)] {
        assert!(DOCS.contains(example.trim_end()), "docs/runtime-config.md does not embed the {name} example verbatim");
    }
}

// ---- tandemctl ----

fn tandemctl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tandemctl")).args(args).output().expect("tandemctl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn tandemctl_config_check_prints_ok() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.hcl");
    std::fs::write(&file, VIP_EXAMPLE).unwrap();
    let path = file.to_str().unwrap();
    let (code, stdout, _) = tandemctl(&["config", "check", path]);
    assert_eq!((code, stdout.as_str()), (0, "ok: cluster web, 2 nodes, 1 group\n"));
    let (code, _, _) = tandemctl(&["config", "check", path, "--node", "node-b"]);
    assert_eq!(code, 0);
    let (code, _, stderr) = tandemctl(&["config", "check", path, "--node", "node-z"]);
    assert_eq!(code, 1);
    assert!(stderr.starts_with(&format!("{path}: TDM-CFG-031 --node \"node-z\"")), "{stderr}");
}

#[test]
fn tandemctl_config_check_prints_every_error_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.hcl");
    let src = with("\"us-east-1b\"", "\"us-east-1\"").replace("\"vpc-0abc1234\"", "\"vpc-x\"");
    std::fs::write(&file, &src).unwrap();
    let path = file.to_str().unwrap();
    let (code, stdout, stderr) = tandemctl(&["config", "check", path]);
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    let lines: Vec<&str> = stderr.lines().collect();
    let az = at(&src, "\"us-east-1\"");
    let vpc = at(&src, "\"vpc-x\"");
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].starts_with(&format!("{path}:{}:{}: TDM-CFG-018 ", az.line, az.column)), "{stderr}");
    assert!(lines[1].starts_with(&format!("{path}:{}:{}: TDM-CFG-025 ", vpc.line, vpc.column)), "{stderr}");
    assert!(lines.iter().all(|l| l.ends_with(')')), "every line ends with its hint: {stderr}");
}

#[test]
fn tandemctl_config_check_says_stop_instance_fencing_was_removed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("old.hcl");
    let src = plus("arbitration {\n  fencing    = \"stop_instance\"\n  race_delay = \"5s\"\n}\n");
    std::fs::write(&file, &src).unwrap();
    let path = file.to_str().unwrap();
    let (code, stdout, stderr) = tandemctl(&["config", "check", path]);
    assert_eq!((code, stdout.as_str()), (1, ""), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    let (fencing, race_delay) = (at(&src, "fencing "), at(&src, "race_delay"));
    assert!(
        lines[0].starts_with(&format!(
            "{path}:{}:{}: TDM-CFG-002 arbitration.fencing: stop_instance fencing was removed",
            fencing.line, fencing.column
        )),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "{path}:{}:{}: TDM-CFG-002 arbitration.race_delay: race_delay was removed",
            race_delay.line, race_delay.column
        )),
        "{stderr}"
    );
    assert!(lines.iter().all(|l| l.contains("docs/fencing.md") && l.ends_with(')')), "{stderr}");
}
