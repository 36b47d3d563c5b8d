//! Acceptance: tandem_route53_zone and tandem_route53_record against moto through the real terraform CLI.
//!
//! moto deviations (see /work/shared/MOTO.md), worked around here only:
//! - every change is INSYNC at once, so the PENDING → INSYNC wait is covered by unit tests only;
//! - CREATE of an existing record succeeds on moto (AWS: InvalidChangeBatch). The resource looks the record
//!   up before its CREATE, which is what `record_made_out_of_band_is_not_adopted` exercises here; on AWS the
//!   CREATE itself would refuse too;
//! - DELETE of a missing record succeeds on moto, and so does a DELETE with wrong values when the Rust SDK sends
//!   it (moto answers 200 and deletes the record; AWS: InvalidChangeBatch). The resource compares the current
//!   values before its DELETE, which is what the ownership test exercises here.

use serde_json::Value as Json;
use tandem_tests::Env;
use tandem_tests::terraform::provider_block;

fn zone_config(name: &str, comment: &str, vpcs: &[&str], tag: &str, force_destroy: bool) -> String {
    let vpc_blocks: String =
        vpcs.iter().map(|v| format!("  vpc {{\n    vpc_id = tandem_vpc.{v}.id\n  }}\n")).collect::<Vec<_>>().join("");
    format!(
        r#"{}
resource "tandem_vpc" "a" {{
  cidr_block           = "10.80.0.0/16"
  enable_dns_hostnames = true
}}

resource "tandem_vpc" "b" {{
  cidr_block           = "10.81.0.0/16"
  enable_dns_hostnames = true
}}

resource "tandem_route53_zone" "test" {{
  name          = "{name}"
  comment       = "{comment}"
  force_destroy = {force_destroy}
{vpc_blocks}  tags = {{ Cluster = "{tag}" }}
}}
"#,
        provider_block()
    )
}

fn zone_ids(env: &Env) -> Vec<String> {
    env.block_on(async {
        let out = env.route53.list_hosted_zones().send().await.expect("ListHostedZones");
        out.hosted_zones().iter().map(|z| z.id().rsplit('/').next().unwrap_or_default().to_string()).collect()
    })
}

fn zone_vpcs(env: &Env, id: &str) -> (bool, Vec<String>) {
    env.block_on(async {
        let out = env.route53.get_hosted_zone().id(id).send().await.expect("GetHostedZone");
        let private = out.hosted_zone().and_then(|z| z.config()).is_some_and(|c| c.private_zone());
        let mut vpcs: Vec<String> = out.vpcs().iter().filter_map(|v| v.vpc_id().map(str::to_string)).collect();
        vpcs.sort();
        (private, vpcs)
    })
}

/// The state without the attributes named (to compare an import, whose name is in canonical form).
fn without(mut v: Json, keys: &[&str]) -> Json {
    if let Some(m) = v.as_object_mut() {
        for k in keys {
            m.remove(*k);
        }
    }
    v
}

#[test]
fn private_zone_basic_import_update_replace_destroy() {
    let env = Env::start();
    // Upper case and a trailing dot: the zone is example.com all the same, and no plan ever shows a diff.
    let wd = env.workdir("zone", &zone_config("Tandem.Example.COM.", "one", &["a"], "x", false));
    wd.init();
    wd.apply();
    wd.assert_plans_empty();
    let state = wd.state_of("tandem_route53_zone.test");
    let id = state["id"].as_str().expect("id").to_string();
    assert!(!id.contains('/'), "the ID has no /hostedzone/ prefix: {id}");
    assert_eq!(state["zone_id"], id.as_str());
    assert_eq!(state["arn"], format!("arn:aws:route53:::hostedzone/{id}").as_str());
    assert_eq!(state["name"], "Tandem.Example.COM.", "after create, state keeps the configuration's spelling");
    assert!(state["name_servers"].as_array().is_some_and(|n| !n.is_empty()), "{state}");
    assert!(state["primary_name_server"].as_str().is_some_and(|n| !n.is_empty()), "{state}");
    assert_eq!(state["vpc"][0]["vpc_region"], "us-east-1");
    let vpc_a = wd.state_of("tandem_vpc.a")["id"].as_str().expect("vpc a").to_string();
    assert_eq!(zone_vpcs(&env, &id), (true, vec![vpc_a.clone()]), "a private zone, sent with PrivateZone=true");

    // Import in a fresh directory: the same zone, its name in canonical form, and no diff against the
    // configuration's spelling.
    let imp = env.workdir("zone-import", &zone_config("Tandem.Example.COM.", "one", &["a"], "x", false));
    imp.init();
    imp.ok(&["import", "-no-color", "tandem_route53_zone.test", &id]);
    let imported = imp.state_of("tandem_route53_zone.test");
    assert_eq!(imported["name"], "tandem.example.com");
    assert_eq!(without(imported, &["name"]), without(state.clone(), &["name"]));

    // In place: comment, tags, a second VPC associated, then the first disassociated.
    wd.write(&zone_config("tandem.example.com", "two", &["a", "b"], "y", false));
    assert!(wd.planned_actions().contains(&("tandem_route53_zone.test".to_string(), vec!["update".to_string()])));
    wd.apply();
    wd.assert_plans_empty();
    let vpc_b = wd.state_of("tandem_vpc.b")["id"].as_str().expect("vpc b").to_string();
    let mut both = vec![vpc_a.clone(), vpc_b.clone()];
    both.sort();
    assert_eq!(zone_vpcs(&env, &id), (true, both));
    let updated = wd.state_of("tandem_route53_zone.test");
    assert_eq!(updated["id"], id.as_str());
    assert_eq!(updated["comment"], "two");
    assert_eq!(updated["name"], "Tandem.Example.COM.", "respelling the name changes nothing");
    let comment = env.block_on(async {
        let out = env.route53.get_hosted_zone().id(&id).send().await.expect("GetHostedZone");
        out.hosted_zone().and_then(|z| z.config()).and_then(|c| c.comment()).map(str::to_string)
    });
    assert_eq!(comment.as_deref(), Some("two"));
    wd.write(&zone_config("tandem.example.com", "two", &["b"], "y", false));
    wd.apply();
    wd.assert_plans_empty();
    assert_eq!(zone_vpcs(&env, &id), (true, vec![vpc_b.clone()]));

    // A new name, and a private zone turning public, replace the zone.
    wd.write(&zone_config("other.example.com", "two", &["b"], "y", false));
    assert!(
        wd.planned_actions()
            .contains(&("tandem_route53_zone.test".to_string(), vec!["delete".to_string(), "create".to_string()]))
    );
    wd.apply();
    wd.assert_plans_empty();
    let renamed = wd.state_of("tandem_route53_zone.test")["id"].as_str().expect("id").to_string();
    assert_ne!(renamed, id);
    wd.write(&zone_config("other.example.com", "two", &[], "y", false));
    assert!(
        wd.planned_actions()
            .contains(&("tandem_route53_zone.test".to_string(), vec!["delete".to_string(), "create".to_string()]))
    );
    wd.apply();
    wd.assert_plans_empty();
    let public = wd.state_of("tandem_route53_zone.test")["id"].as_str().expect("id").to_string();
    assert_eq!(zone_vpcs(&env, &public), (false, vec![]));

    wd.destroy();
    assert!(zone_ids(&env).is_empty(), "destroy leaves no zone: {:?}", zone_ids(&env));
}

#[test]
fn zone_disappears_and_non_empty_zone_needs_force_destroy() {
    let env = Env::start();
    let wd = env.workdir("zone", &zone_config("gone.example.com", "c", &[], "x", false));
    wd.init();
    wd.apply();
    let id = wd.state_of("tandem_route53_zone.test")["id"].as_str().expect("id").to_string();
    env.block_on(async { env.route53.delete_hosted_zone().id(&id).send().await.expect("DeleteHostedZone") });
    let plan = wd.plan_code(&[]);
    assert_eq!(plan.code, Some(2), "a vanished zone is planned again:\n{}", plan.output());
    wd.apply();
    wd.assert_plans_empty();
    let id = wd.state_of("tandem_route53_zone.test")["id"].as_str().expect("id").to_string();

    // A record made outside Terraform keeps the zone from being deleted: a clear diagnostic, no retries.
    env.block_on(async {
        let set = aws_sdk_route53::types::ResourceRecordSet::builder()
            .name("stray.gone.example.com.")
            .r#type(aws_sdk_route53::types::RrType::A)
            .ttl(60)
            .resource_records(aws_sdk_route53::types::ResourceRecord::builder().value("10.0.0.9").build().expect("rr"))
            .build()
            .expect("rrset");
        let change = aws_sdk_route53::types::Change::builder()
            .action(aws_sdk_route53::types::ChangeAction::Create)
            .resource_record_set(set)
            .build()
            .expect("change");
        env.route53
            .change_resource_record_sets()
            .hosted_zone_id(&id)
            .change_batch(aws_sdk_route53::types::ChangeBatch::builder().changes(change).build().expect("batch"))
            .send()
            .await
            .expect("ChangeResourceRecordSets")
    });
    let r = wd.run(&["destroy", "-auto-approve", "-no-color"]);
    assert_eq!(r.code, Some(1));
    assert!(r.output().contains("TDM-R53-002") && r.output().contains("force_destroy"), "{}", r.output());
    assert_eq!(zone_ids(&env), vec![id.clone()]);

    wd.write(&zone_config("gone.example.com", "c", &[], "x", true));
    wd.apply();
    wd.destroy();
    assert!(zone_ids(&env).is_empty(), "force_destroy deleted the records and the zone");
}

fn record_config(zone: &str, name: &str, rr_type: &str, ttl: u32, records: &[&str]) -> String {
    let values = records.iter().map(|r| format!("\"{r}\"")).collect::<Vec<_>>().join(", ");
    format!(
        r#"{}
resource "tandem_route53_zone" "test" {{
  name = "{zone}"
}}

resource "tandem_route53_record" "test" {{
  zone_id = tandem_route53_zone.test.zone_id
  name    = "{name}"
  type    = "{rr_type}"
  ttl     = {ttl}
  records = [{values}]
}}
"#,
        provider_block()
    )
}

/// The record sets of the zone other than its apex SOA and NS: (name, type, ttl, values).
fn records(env: &Env, zone: &str) -> Vec<(String, String, i64, Vec<String>)> {
    env.block_on(async {
        let out = env.route53.list_resource_record_sets().hosted_zone_id(zone).send().await.expect("ListRRSets");
        out.resource_record_sets()
            .iter()
            .filter(|r| !matches!(r.r#type().as_str(), "SOA" | "NS"))
            .map(|r| {
                let mut values: Vec<String> = r.resource_records().iter().map(|v| v.value().to_string()).collect();
                values.sort();
                (r.name().to_string(), r.r#type().as_str().to_string(), r.ttl().unwrap_or(0), values)
            })
            .collect()
    })
}

#[test]
fn record_basic_import_update_replace_disappears_destroy() {
    let env = Env::start();
    let wd = env.workdir("record", &record_config("example.com", "DB.example.com", "A", 60, &["10.0.1.10"]));
    wd.init();
    wd.apply();
    wd.assert_plans_empty();
    let zone = wd.state_of("tandem_route53_zone.test")["id"].as_str().expect("zone").to_string();
    let state = wd.state_of("tandem_route53_record.test");
    let id = state["id"].as_str().expect("id").to_string();
    assert_eq!(id, format!("{zone}_db.example.com_A"));
    assert_eq!(state["name"], "DB.example.com");
    assert_eq!(state["fqdn"], "db.example.com.");
    assert_eq!(
        records(&env, &zone),
        vec![("db.example.com.".to_string(), "A".to_string(), 60, vec!["10.0.1.10".to_string()])],
        "Route 53 holds the lower-case FQDN"
    );

    let imp = env.workdir("record-import", &record_config("example.com", "DB.example.com", "A", 60, &["10.0.1.10"]));
    imp.init();
    imp.ok(&["import", "-no-color", "tandem_route53_zone.test", &zone]);
    imp.ok(&["import", "-no-color", "tandem_route53_record.test", &id]);
    let imported = imp.state_of("tandem_route53_record.test");
    assert_eq!(imported["name"], "db.example.com.", "an import holds the canonical FQDN");
    assert_eq!(without(imported, &["name"]), without(state.clone(), &["name"]));
    imp.assert_plans_empty();

    // In place: TTL and values (UPSERT).
    wd.write(&record_config("example.com", "db.example.com.", "A", 30, &["10.0.2.10", "10.0.1.10"]));
    assert!(wd.planned_actions().contains(&("tandem_route53_record.test".to_string(), vec!["update".to_string()])));
    wd.apply();
    wd.assert_plans_empty();
    assert_eq!(
        records(&env, &zone),
        vec![(
            "db.example.com.".to_string(),
            "A".to_string(),
            30,
            vec!["10.0.1.10".to_string(), "10.0.2.10".to_string()]
        )]
    );

    // Another name: replaced.
    wd.write(&record_config("example.com", "db2.example.com", "A", 30, &["10.0.2.10"]));
    assert!(
        wd.planned_actions()
            .contains(&("tandem_route53_record.test".to_string(), vec!["delete".to_string(), "create".to_string()]))
    );
    wd.apply();
    wd.assert_plans_empty();
    assert_eq!(
        records(&env, &zone),
        vec![("db2.example.com.".to_string(), "A".to_string(), 30, vec!["10.0.2.10".to_string()])]
    );

    // TXT values are written bare and quoted for Route 53.
    wd.write(&record_config("example.com", "db2.example.com", "TXT", 30, &["owner=tandem"]));
    wd.apply();
    wd.assert_plans_empty();
    assert_eq!(
        records(&env, &zone),
        vec![("db2.example.com.".to_string(), "TXT".to_string(), 30, vec!["\"owner=tandem\"".to_string()])]
    );

    // Deleted outside Terraform: planned again and restored.
    let txt_id = wd.state_of("tandem_route53_record.test")["id"].as_str().expect("id").to_string();
    env.block_on(async {
        let set = aws_sdk_route53::types::ResourceRecordSet::builder()
            .name("db2.example.com.")
            .r#type(aws_sdk_route53::types::RrType::Txt)
            .ttl(30)
            .resource_records(
                aws_sdk_route53::types::ResourceRecord::builder().value("\"owner=tandem\"").build().expect("rr"),
            )
            .build()
            .expect("rrset");
        let change = aws_sdk_route53::types::Change::builder()
            .action(aws_sdk_route53::types::ChangeAction::Delete)
            .resource_record_set(set)
            .build()
            .expect("change");
        env.route53
            .change_resource_record_sets()
            .hosted_zone_id(&zone)
            .change_batch(aws_sdk_route53::types::ChangeBatch::builder().changes(change).build().expect("batch"))
            .send()
            .await
            .expect("delete out of band")
    });
    assert!(records(&env, &zone).is_empty());
    let plan = wd.plan_code(&[]);
    assert_eq!(plan.code, Some(2), "a vanished record is planned again:\n{}", plan.output());
    wd.apply();
    wd.assert_plans_empty();
    assert_eq!(wd.state_of("tandem_route53_record.test")["id"], txt_id.as_str());
    assert_eq!(records(&env, &zone).len(), 1);

    wd.destroy();
    assert!(zone_ids(&env).is_empty(), "destroy leaves no zone (the record went first)");
}

fn upsert_a(env: &Env, zone: &str, name: &str, value: &str) {
    env.block_on(async {
        let set = aws_sdk_route53::types::ResourceRecordSet::builder()
            .name(name)
            .r#type(aws_sdk_route53::types::RrType::A)
            .ttl(60)
            .resource_records(aws_sdk_route53::types::ResourceRecord::builder().value(value).build().expect("rr"))
            .build()
            .expect("rrset");
        let change = aws_sdk_route53::types::Change::builder()
            .action(aws_sdk_route53::types::ChangeAction::Upsert)
            .resource_record_set(set)
            .build()
            .expect("change");
        env.route53
            .change_resource_record_sets()
            .hosted_zone_id(zone)
            .change_batch(aws_sdk_route53::types::ChangeBatch::builder().changes(change).build().expect("batch"))
            .send()
            .await
            .expect("UPSERT out of band")
    });
}

#[test]
fn record_made_out_of_band_is_not_adopted_and_delete_checks_ownership() {
    let env = Env::start();
    let zone_only =
        format!("{}\nresource \"tandem_route53_zone\" \"test\" {{\n  name = \"example.com\"\n}}\n", provider_block());
    let wd = env.workdir("owned", &zone_only);
    wd.init();
    wd.apply();
    let zone = wd.state_of("tandem_route53_zone.test")["id"].as_str().expect("zone").to_string();
    upsert_a(&env, &zone, "vip.example.com.", "10.0.9.9");

    // Never silently adopt: the create fails and the record keeps its value.
    wd.write(&record_config("example.com", "vip.example.com", "A", 60, &["10.0.1.1"]));
    let r = wd.run(&["apply", "-auto-approve", "-no-color"]);
    assert_eq!(r.code, Some(1));
    let out = r.output();
    assert!(out.contains("TDM-R53-015") && out.contains("already exists"), "{out}");
    assert!(out.contains(&format!("{zone}_vip.example.com_A")), "the hint names the import ID:\n{out}");
    assert_eq!(records(&env, &zone)[0].3, vec!["10.0.9.9".to_string()]);

    // Once imported it is ours; then someone else changes it, and a destroy without refresh must not delete
    // a record whose values are no longer ours.
    wd.ok(&["import", "-no-color", "tandem_route53_record.test", &format!("{zone}_vip.example.com_A")]);
    wd.apply();
    assert_eq!(records(&env, &zone)[0].3, vec!["10.0.1.1".to_string()]);
    upsert_a(&env, &zone, "vip.example.com.", "10.0.7.7");
    let r = wd.run(&["destroy", "-auto-approve", "-refresh=false", "-no-color"]);
    assert_eq!(r.code, Some(1));
    assert!(r.output().contains("TDM-R53-016") && r.output().contains("changed outside Terraform"), "{}", r.output());
    assert_eq!(records(&env, &zone)[0].3, vec!["10.0.7.7".to_string()]);
    // With a refresh the state learns the current values, and the destroy goes through.
    wd.destroy();
    assert!(zone_ids(&env).is_empty());
}

#[test]
fn bad_names_and_values_are_diagnostics_on_the_attribute_and_create_nothing() {
    let env = Env::start();
    let wd = env.workdir("bad-zone", &zone_config("exa mple.com", "c", &[], "x", false));
    wd.init();
    let r = wd.run(&["validate", "-no-color"]);
    assert_eq!(r.code, Some(1));
    assert!(r.output().contains("TDM-R53-001") && r.output().contains("name"), "{}", r.output());

    // The zone exists first, so that the record's zone check runs at plan time.
    let zone = env.block_on(async {
        let out = env
            .route53
            .create_hosted_zone()
            .name("example.com")
            .caller_reference("bad-inputs")
            .send()
            .await
            .expect("CreateHostedZone");
        out.hosted_zone().map(|z| z.id().rsplit('/').next().unwrap_or_default().to_string()).expect("zone id")
    });
    let cfg = |name: &str, records: &str| {
        format!(
            "{}\nresource \"tandem_route53_record\" \"bad\" {{\n  zone_id = \"{zone}\"\n  name    = \"{name}\"\n  type    = \"A\"\n  ttl     = 60\n  records = [{records}]\n}}\n",
            provider_block()
        )
    };
    let wd = env.workdir("bad-record", &cfg("db.example.org", "\"10.0.0.1\""));
    wd.init();
    let r = wd.plan_code(&[]);
    assert_eq!(r.code, Some(1));
    let out = r.output();
    assert!(out.contains("TDM-R53-011") && out.contains("not inside zone example.com"), "{out}");
    assert!(out.contains("name    = \"db.example.org\""), "the diagnostic points at name:\n{out}");

    wd.write(&cfg("db.example.com", "\"10.0.0.300\""));
    let r = wd.run(&["validate", "-no-color"]);
    assert_eq!(r.code, Some(1));
    assert!(r.output().contains("TDM-R53-014") && r.output().contains("10.0.0.300"), "{}", r.output());

    wd.write(&format!(
        "{}\nresource \"tandem_route53_record\" \"bad\" {{\n  zone_id = \"Z0000000000000NOPE\"\n  name    = \"db.example.com\"\n  type    = \"A\"\n  ttl     = 60\n  records = [\"10.0.0.1\"]\n}}\n",
        provider_block()
    ));
    let r = wd.plan_code(&[]);
    assert!(r.output().contains("TDM-R53-012") && r.output().contains("zone_id"), "{}", r.output());

    let apply = wd.run(&["apply", "-auto-approve", "-no-color"]);
    assert_eq!(apply.code, Some(1));
    assert!(records(&env, &zone).is_empty(), "nothing was created");
    assert_eq!(zone_ids(&env), vec![zone]);
}
