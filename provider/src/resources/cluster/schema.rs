//! The schema of `tandem_cluster`: the cluster config model (`tandem_runtime::config`) in Terraform syntax.
//! Labels of the model's blocks become a `name` (or `node`) attribute; `resource "<kind>" "<name>"` inside a
//! group becomes one nested block type per kind; `monitor "<kind>" "<name>"` becomes a `monitor` block with a
//! `kind` attribute. Values stay as the model writes them (durations as `"5s"`, addresses as strings) and are
//! checked by the model's own rules, so `tandemctl config check` and `terraform plan` agree.

use crate::framework::{Attribute, Block, Nesting, Schema, Type, Value};

/// The computed attributes; everything else is the user's input.
pub(super) const COMPUTED: [&str; 11] = [
    "id",
    "node_config",
    "user_data",
    "iam_policy_json",
    "lease_table",
    "ports",
    "heartbeat_key",
    "ca_cert_pem",
    "ca_key_pem",
    "node_cert_pem",
    "node_key_pem",
];

/// The per-kind resource blocks of a group, in the order their resources join the group's start order.
pub(super) const RESOURCE_KINDS: [&str; 5] = ["mirror_disk", "aws_vip", "aws_eip", "aws_dns", "exec"];

fn string_list() -> Type {
    Type::list(Type::String)
}

fn string_map() -> Type {
    Type::map(Type::String)
}

fn opt(name: &'static str, ty: Type, description: &'static str) -> Attribute {
    Attribute::optional(name, ty).describe(description)
}

fn req(name: &'static str, ty: Type, description: &'static str) -> Attribute {
    Attribute::required(name, ty).describe(description)
}

fn node_block() -> Block {
    Block::new("A machine of the cluster (the model's `node \"<name>\"`). One per availability zone.")
        .attr(req("name", Type::String, "The node's name; `tandemd --node NAME` picks it."))
        .attr(req(
            "private_ip",
            Type::String,
            "The primary private IPv4 address you give the instance, so it is known before the instance exists.",
        ))
        .attr(req("availability_zone", Type::String, "The zone name, e.g. `us-east-1a`."))
        .attr(opt(
            "subnet_id",
            Type::String,
            "The node's subnet. Not part of the rendered config: when set, `private_ip` must lie inside it (and not \
             be one of the five addresses AWS reserves) and the subnet must be in `availability_zone`.",
        ))
        .attr(opt("instance_id", Type::String, "The EC2 instance, when it exists before the cluster."))
        .attr(opt("eni_id", Type::String, "The ENI carrying `private_ip`, when known."))
}

fn heartbeat_block() -> Block {
    Block::new("Heartbeat timing shared by every interconnect.")
        .attr(opt("interval", Type::String, "How often each node sends a heartbeat. Default `\"1s\"`."))
        .attr(opt("timeout", Type::String, "Silence after which a peer is lost; > interval. Default `\"5s\"`."))
}

fn interconnect_block() -> Block {
    Block::new("A heartbeat network (UDP). Without any, `primary` on port 7400 over the private IPs is implied.")
        .attr(req("name", Type::String, "The interconnect's name."))
        .attr(opt("port", Type::Number, "UDP port. Default 7400."))
        .attr(opt("addresses", string_map(), "Per-node address on this network (default: the node's private_ip)."))
}

fn mirror_connect_block() -> Block {
    Block::new("The network for mirror-disk replication (TCP).")
        .attr(opt("port", Type::Number, "TCP port. Default 7410."))
        .attr(opt("addresses", string_map(), "Per-node address (default: the node's private_ip)."))
}

fn witness_block(target: &'static str, description: &'static str) -> Block {
    Block::new(description).attr(req(target, Type::String, "What to probe.")).attr(opt(
        "nodes",
        string_list(),
        "The nodes that use this witness. Default: every node.",
    ))
}

fn np_resolution_block() -> Block {
    Block::new("Network-partition resolution: the witnesses a node probes when it loses its peer.")
        .attr(opt(
            "on_isolated",
            Type::String,
            "`warn`, `stop_groups` (default) or `shutdown`: what an isolated node does.",
        ))
        .attr(opt("timeout", Type::String, "Time limit of one probe. Default `\"2s\"`."))
        .block("ping", Nesting::List, 0, witness_block("address", "ICMP echo to an IPv4 address."))
        .block("tcp", Nesting::List, 0, witness_block("address", "TCP connect to `host:port`."))
        .block("http", Nesting::List, 0, witness_block("url", "HTTP HEAD that must answer 200."))
}

fn arbitration_block() -> Block {
    Block::new("The lease per failover group (DynamoDB, conditional writes).")
        .attr(opt("table", Type::String, "The lease table. Default `tandem-<name>-leases`."))
        .attr(opt("region", Type::String, "The table's region. Default: the nodes' region."))
        .attr(opt("ttl", Type::String, "Lease validity after each renewal; > 2 x renew_interval. Default `\"5s\"`."))
        .attr(opt("renew_interval", Type::String, "How often the holder renews. Default `\"1s\"`."))
}

/// The settings every group resource has, plus the kind's own attributes and its override block.
fn resource_block(description: &'static str, kind: Block, override_attrs: Option<Block>) -> Block {
    let mut b = kind
        .attr(req("name", Type::String, "The resource's name (unique among groups and resources)."))
        .attr(opt("depends_on", string_list(), "Resources of the same group that must be active first."))
        .attr(opt("activation_retries", Type::Number, "Retries of a failed start. Default 0."))
        .attr(opt("deactivation_retries", Type::Number, "Retries of a failed stop. Default 0."))
        .attr(opt(
            "activation_final_action",
            Type::String,
            "After the retries and one failover: `none` (default), `stop_cluster` or `shutdown`.",
        ))
        .attr(opt(
            "deactivation_final_action",
            Type::String,
            "When a stop keeps failing: `none`, `stop_cluster` or `shutdown` (default).",
        ));
    b.description = description;
    if let Some(o) = override_attrs {
        let o = o.attr(req("node", Type::String, "The node this override applies to (a server of the group)."));
        b = b.block("override", Nesting::List, 0, o);
    }
    b
}

fn group_block() -> Block {
    let vip = Block::new("")
        .attr(req("ip", Type::String, "The virtual IP (`10.1.0.10` or `10.1.0.10/32`), outside the VPC's CIDR blocks."))
        .attr(req("vpc_id", Type::String, "The VPC whose route tables carry the VIP route."))
        .attr(opt(
            "route_table_ids",
            string_list(),
            "The route tables to update. Default: every route table of the VPC that has a route for the VIP.",
        ))
        .attr(opt("device", Type::String, "Network device to bind the VIP on. Default: the private IP's device."));
    let vip_override = Block::new("Per-node settings of the VIP.").attr(opt("device", Type::String, "Device name."));
    let eip = Block::new("").attr(req("allocation_id", Type::String, "The Elastic IP's allocation ID."));
    let dns = Block::new("")
        .attr(req("hosted_zone_id", Type::String, "The hosted zone (`Z...`)."))
        .attr(req("record_name", Type::String, "Lower-case FQDN with a trailing dot, e.g. `app.example.internal.`."))
        .attr(opt("ttl", Type::Number, "Record TTL in seconds. Default 60."))
        .attr(opt("ip", Type::String, "The record's address for every node. Default: the active node's private IP."))
        .attr(opt("delete_on_deactivate", Type::Bool, "DELETE the record when the group stops. Default true."));
    let dns_override = Block::new("Per-node settings of the record.").attr(opt("ip", Type::String, "Address."));
    let mirror = Block::new("")
        .attr(req("data_device", Type::String, "The data partition, e.g. `/dev/nvme1n1p2`."))
        .attr(req("metadata_device", Type::String, "The cluster (metadata) partition, e.g. `/dev/nvme1n1p1`."))
        .attr(opt(
            "mount_point",
            Type::String,
            "Where the active node mounts the data. Omit it to serve the NBD export only (a client that speaks NBD).",
        ))
        .attr(opt("filesystem", Type::String, "`ext4` (default) or `xfs`."));
    let mirror_override = Block::new("Per-node device names.")
        .attr(opt("data_device", Type::String, "Data partition on this node."))
        .attr(opt("metadata_device", Type::String, "Metadata partition on this node."));
    let exec = Block::new("")
        .attr(req("start", Type::String, "Starts the application (idempotent)."))
        .attr(opt("stop", Type::String, "Stops it (idempotent)."))
        .attr(opt("probe", Type::String, "Exit 0 = running, 7 = stopped, else failed."))
        .attr(opt("start_timeout", Type::String, "Default `\"60s\"`."))
        .attr(opt("stop_timeout", Type::String, "Default `\"60s\"`."))
        .attr(opt("probe_timeout", Type::String, "Default `\"10s\"`."))
        .attr(opt(
            "cgroup",
            Type::String,
            "The application's cgroup (e.g. `system.slice/tandem-app.service`): the fencer kills it when this node's \
             right to run the group ends while tandemd is down or frozen.",
        ))
        .attr(opt("env", string_map(), "Extra environment."));
    let exec_override = Block::new("Per-node environment, merged over `env`.").attr(opt("env", string_map(), "Env."));
    Block::new("A failover group: servers in priority order and its resources.")
        .attr(req("name", Type::String, "The group's name."))
        .attr(req("servers", string_list(), "Node names that may run the group, highest priority first."))
        .attr(opt("failback", Type::String, "`manual` (default) or `auto`."))
        .block(
            "mirror_disk",
            Nesting::List,
            0,
            resource_block("A replicated block device.", mirror, Some(mirror_override)),
        )
        .block(
            "aws_vip",
            Nesting::List,
            0,
            resource_block("A virtual IP routed to the active node's ENI.", vip, Some(vip_override)),
        )
        .block("aws_eip", Nesting::List, 0, resource_block("An Elastic IP on the active node.", eip, None))
        .block(
            "aws_dns",
            Nesting::List,
            0,
            resource_block("A Route 53 A record pointing at the active node.", dns, Some(dns_override)),
        )
        .block(
            "exec",
            Nesting::List,
            0,
            resource_block("The application: start/stop/probe commands.", exec, Some(exec_override)),
        )
}

fn monitor_block() -> Block {
    Block::new("A monitor. Monitors for each aws_vip / aws_eip / aws_dns resource are implied unless written.")
        .attr(req("name", Type::String, "The monitor's name."))
        .attr(req(
            "kind",
            Type::String,
            "`aws_vip`, `aws_eip`, `aws_dns`, `aws_az`, `ip`, `tcp`, `mirror` or `custom`.",
        ))
        .attr(opt("resource", Type::String, "aws_vip, aws_eip, aws_dns, mirror: the resource watched."))
        .attr(opt("check_resolution", Type::Bool, "aws_dns: also resolve the name. Default true."))
        .attr(opt("targets", string_list(), "ip: addresses to ping (the check fails when none answers)."))
        .attr(opt("address", Type::String, "tcp: `host:port` to connect to."))
        .attr(opt("command", Type::String, "custom: the check command (exit 0 = healthy)."))
        .attr(opt("env", string_map(), "custom: extra environment."))
        .attr(opt("interval", Type::String, "Time between checks. Default `\"30s\"`."))
        .attr(opt("timeout", Type::String, "A check taking longer fails. Default `\"60s\"`."))
        .attr(opt("retries", Type::Number, "Failed checks tolerated before recovery. Default 1."))
        .attr(opt("start_wait", Type::String, "Delay before the first check. Default `\"0s\"` (aws_dns `\"60s\"`)."))
        .attr(opt("when", Type::String, "`always` or `active` (default: active for resource monitors)."))
        .attr(opt("on_aws_error", Type::String, "aws_* monitors: `recover`, `warn` (default) or `ignore`."))
        .attr(opt("recovery_target", Type::String, "A resource or group. Default: the watched resource."))
        .attr(opt("recovery_action", Type::String, "`restart`, `failover` or `final`."))
        .attr(opt("final_action", Type::String, "`none` (default), `stop_cluster` or `shutdown`."))
        .block(
            "override",
            Nesting::List,
            0,
            Block::new("ip monitors: per-node targets.").attr(req("node", Type::String, "The node.")).attr(opt(
                "targets",
                string_list(),
                "Addresses to ping from this node.",
            )),
        )
}

pub(super) fn schema() -> Schema {
    let string_map_sensitive =
        |name, description| Attribute::computed(name, string_map()).sensitive().describe(description);
    let port = Type::object([("description", Type::String), ("protocol", Type::String), ("port", Type::Number)]);
    Schema::new(
        0,
        Block::new(
            "A tandem HA cluster: validated at plan time, rendered into one config, user_data and IAM policy per \
             node. Creates nothing in AWS.",
        )
        .attr(Attribute::computed("id", Type::String).describe("The cluster's name."))
        .attr(req("name", Type::String, "The cluster's name; names the default lease table."))
        .attr(opt("api_port", Type::Number, "TCP port of the node-to-node control API. Default 7402."))
        .attr(opt(
            "rotate_secrets",
            Type::String,
            "Any string; changing it generates a new heartbeat key, CA and node certificates.",
        ))
        .attr(Attribute::with_default("tandemd_source", Value::from("ami")).describe(
            "Where user_data gets tandemd: `ami` (already at /usr/local/bin/tandemd), an `https://` URL or an \
             `s3://bucket/key` path.",
        ))
        .attr(opt("tandemd_sha256", Type::String, "The SHA-256 (hex) the downloaded tandemd must have."))
        .block("node", Nesting::List, 0, node_block())
        .block("heartbeat", Nesting::List, 1, heartbeat_block())
        .block("interconnect", Nesting::List, 0, interconnect_block())
        .block("mirror_connect", Nesting::List, 1, mirror_connect_block())
        .block("np_resolution", Nesting::List, 1, np_resolution_block())
        .block("arbitration", Nesting::List, 1, arbitration_block())
        .block("group", Nesting::List, 0, group_block())
        .block("monitor", Nesting::List, 0, monitor_block())
        .attr(
            Attribute::computed_volatile("node_config", string_map())
                .describe("Node name → the rendered cluster config (HCL) that node reads."),
        )
        .attr(
            Attribute::computed_volatile("user_data", string_map())
                .sensitive()
                .describe("Node name → `#cloud-config` writing the config, the secrets and the tandemd unit."),
        )
        .attr(
            Attribute::computed_volatile("iam_policy_json", Type::String)
                .describe("The least-privilege IAM policy the nodes' role needs for this cluster."),
        )
        .attr(Attribute::computed_volatile("lease_table", Type::String).describe("The lease table's name."))
        .attr(
            Attribute::computed_volatile("ports", Type::list(port))
                .describe("Every port the nodes open to each other: description, protocol, port."),
        )
        .attr(Attribute::computed("heartbeat_key", Type::String).sensitive().describe("The heartbeat key (base64)."))
        .attr(Attribute::computed("ca_cert_pem", Type::String).describe("The cluster CA certificate (PEM)."))
        .attr(Attribute::computed("ca_key_pem", Type::String).sensitive().describe("The cluster CA's key (PEM)."))
        .attr(
            Attribute::computed("node_cert_pem", string_map())
                .describe("Node name → its certificate (PEM), signed by the cluster CA."),
        )
        .attr(string_map_sensitive("node_key_pem", "Node name → its private key (PEM).")),
    )
}
