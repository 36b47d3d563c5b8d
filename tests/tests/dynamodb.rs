//! Acceptance: tandem_dynamodb_table (the runtime's lease table) against moto through the real terraform CLI.
//! moto makes tables ACTIVE at once, so the CREATING → ACTIVE wait runs one poll here.

use tandem_tests::Env;
use tandem_tests::terraform::provider_block;

struct Table<'a> {
    hash_key: &'a str,
    billing: &'a str,
    pitr: bool,
    protection: bool,
    ttl: Option<(&'a str, bool)>,
    tag: &'a str,
}

impl Table<'_> {
    fn config(&self) -> String {
        let capacity = if self.billing == "PROVISIONED" { "  read_capacity  = 2\n  write_capacity = 3\n" } else { "" };
        let ttl = self
            .ttl
            .map(|(name, on)| format!("  ttl {{\n    attribute_name = \"{name}\"\n    enabled        = {on}\n  }}\n"))
            .unwrap_or_default();
        format!(
            r#"{}
resource "tandem_dynamodb_table" "leases" {{
  name                        = "tandem-leases"
  hash_key                    = "{hash_key}"
  billing_mode                = "{billing}"
{capacity}  deletion_protection_enabled = {protection}

  attribute {{
    name = "{hash_key}"
    type = "S"
  }}

  point_in_time_recovery {{
    enabled = {pitr}
  }}
{ttl}
  tags = {{ Cluster = "{tag}" }}
}}
"#,
            provider_block(),
            hash_key = self.hash_key,
            billing = self.billing,
            protection = self.protection,
            pitr = self.pitr,
            tag = self.tag,
        )
    }
}

const LEASES: Table<'static> = Table {
    hash_key: "group",
    billing: "PAY_PER_REQUEST",
    pitr: true,
    protection: false,
    ttl: Some(("expires_at", true)),
    tag: "a",
};

fn tables(env: &Env) -> Vec<String> {
    env.block_on(async { env.dynamodb.list_tables().send().await.expect("ListTables").table_names().to_vec() })
}

struct Aws {
    billing: String,
    read: i64,
    protection: bool,
    pitr: bool,
    ttl: Option<String>,
}

fn aws_table(env: &Env) -> Aws {
    env.block_on(async {
        let t = env.dynamodb.describe_table().table_name("tandem-leases").send().await.expect("DescribeTable");
        let t = t.table().expect("table");
        let pitr = env
            .dynamodb
            .describe_continuous_backups()
            .table_name("tandem-leases")
            .send()
            .await
            .expect("DescribeContinuousBackups");
        let ttl = env.dynamodb.describe_time_to_live().table_name("tandem-leases").send().await.expect("DescribeTTL");
        let ttl =
            ttl.time_to_live_description().filter(|d| d.time_to_live_status().is_some_and(|s| s.as_str() == "ENABLED"));
        Aws {
            billing: t
                .billing_mode_summary()
                .and_then(|b| b.billing_mode())
                .map_or("PROVISIONED", |b| b.as_str())
                .into(),
            read: t.provisioned_throughput().and_then(|p| p.read_capacity_units()).unwrap_or(0),
            protection: t.deletion_protection_enabled().unwrap_or(false),
            pitr: pitr
                .continuous_backups_description()
                .and_then(|d| d.point_in_time_recovery_description())
                .and_then(|p| p.point_in_time_recovery_status())
                .is_some_and(|s| s.as_str() == "ENABLED"),
            ttl: ttl.and_then(|d| d.attribute_name()).map(str::to_string),
        }
    })
}

#[test]
fn lease_table_basic_import_update_protect_replace_disappears_destroy() {
    let env = Env::start();
    let wd = env.workdir("table", &LEASES.config());
    wd.init();
    wd.apply();
    wd.assert_plans_empty();
    let state = wd.state_of("tandem_dynamodb_table.leases");
    assert_eq!(state["id"], "tandem-leases");
    assert!(state["arn"].as_str().is_some_and(|a| a.ends_with(":table/tandem-leases")), "{state}");
    assert_eq!(state["read_capacity"], 0);
    let aws = aws_table(&env);
    assert_eq!(aws.billing, "PAY_PER_REQUEST");
    assert!(aws.pitr);
    assert_eq!(aws.ttl.as_deref(), Some("expires_at"));

    let imp = env.workdir("table-import", &LEASES.config());
    imp.init();
    imp.ok(&["import", "-no-color", "tandem_dynamodb_table.leases", "tandem-leases"]);
    assert_eq!(imp.state_of("tandem_dynamodb_table.leases"), state);
    imp.assert_plans_empty();

    // In place: provisioned capacity, PITR off, TTL off, deletion protection on, tags.
    let updated = Table {
        billing: "PROVISIONED",
        pitr: false,
        protection: true,
        ttl: Some(("expires_at", false)),
        tag: "b",
        ..LEASES
    };
    wd.write(&updated.config());
    assert_eq!(wd.planned_actions(), vec![("tandem_dynamodb_table.leases".to_string(), vec!["update".to_string()])]);
    wd.apply();
    wd.assert_plans_empty();
    let aws = aws_table(&env);
    assert_eq!((aws.billing.as_str(), aws.read, aws.protection, aws.pitr), ("PROVISIONED", 2, true, false));
    assert_eq!(aws.ttl, None);
    assert_eq!(wd.state_of("tandem_dynamodb_table.leases")["arn"], state["arn"]);

    // Protected: destroy is refused with a clear diagnostic, and the table stays.
    let r = wd.run(&["destroy", "-auto-approve", "-no-color"]);
    assert_eq!(r.code, Some(1));
    assert!(r.output().contains("TDM-DDB-010") && r.output().contains("deletion_protection_enabled"), "{}", r.output());
    assert_eq!(tables(&env), vec!["tandem-leases".to_string()]);

    // Back to on demand without protection, then a new hash key: replaced.
    wd.write(&LEASES.config());
    wd.apply();
    wd.assert_plans_empty();
    assert_eq!(aws_table(&env).billing, "PAY_PER_REQUEST");
    wd.write(&Table { hash_key: "cluster_group", ..LEASES }.config());
    assert!(
        wd.planned_actions()
            .contains(&("tandem_dynamodb_table.leases".to_string(), vec!["delete".to_string(), "create".to_string()]))
    );
    wd.apply();
    wd.assert_plans_empty();
    assert_eq!(wd.state_of("tandem_dynamodb_table.leases")["hash_key"], "cluster_group");

    // Deleted outside Terraform: planned again and restored.
    env.block_on(async { env.dynamodb.delete_table().table_name("tandem-leases").send().await.expect("DeleteTable") });
    let plan = wd.plan_code(&[]);
    assert_eq!(plan.code, Some(2), "{}", plan.output());
    wd.apply();
    wd.assert_plans_empty();

    wd.destroy();
    assert!(tables(&env).is_empty(), "destroy leaves no table: {:?}", tables(&env));
}

#[test]
fn bad_keys_and_capacity_are_diagnostics_on_the_attribute_and_create_nothing() {
    let env = Env::start();
    let cfg = |hash_key: &str, attr: &str, billing: &str| {
        format!(
            "{}\nresource \"tandem_dynamodb_table\" \"bad\" {{\n  name         = \"bad\"\n  hash_key     = \"{hash_key}\"\n  billing_mode = \"{billing}\"\n  attribute {{\n    name = \"{attr}\"\n    type = \"S\"\n  }}\n}}\n",
            provider_block()
        )
    };
    let wd = env.workdir("bad-table", &cfg("group", "grp", "PAY_PER_REQUEST"));
    wd.init();
    let r = wd.run(&["validate", "-no-color"]);
    assert_eq!(r.code, Some(1));
    let out = r.output();
    assert!(out.contains("TDM-DDB-001") && out.contains("hash_key     = \"group\""), "points at hash_key:\n{out}");
    assert!(out.contains("TDM-DDB-002"), "the stray attribute block is reported too:\n{out}");

    wd.write(&cfg("group", "group", "PROVISIONED"));
    let out = wd.run(&["validate", "-no-color"]).output();
    assert!(out.contains("TDM-DDB-004") && out.contains("read_capacity") && out.contains("write_capacity"), "{out}");

    let apply = wd.run(&["apply", "-auto-approve", "-no-color"]);
    assert_eq!(apply.code, Some(1));
    assert!(tables(&env).is_empty());
}
