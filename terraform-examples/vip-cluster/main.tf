# VIP control: clients inside the VPC reach the service at a virtual IP outside the VPC CIDR; a /32 route
# for it in every route table of the VPC points at the active node's ENI. Nodes live in private subnets
# (NAT gateway per zone for AWS API access), with source/destination check off.

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "name" {
  type    = string
  default = "tandem-vip"
}

variable "vip" {
  description = "The virtual IP; must lie outside the VPC CIDR (10.0.0.0/16)."
  type        = string
  default     = "10.1.0.10"
}

variable "ami_name" {
  description = "Name filter of the node image."
  type        = string
  default     = "al2023-ami-2023.*-x86_64"
}

locals {
  node_names = ["node1", "node2"]
  node_ips   = ["10.0.10.11", "10.0.11.11"]
}

module "network" {
  source          = "../modules/network"
  name            = var.name
  private_subnets = true
}

module "nodes" {
  source            = "../modules/nodes"
  name              = var.name
  vpc_id            = module.network.vpc_id
  subnet_ids        = module.network.private_subnet_ids
  zones             = module.network.zones
  node_ips          = local.node_ips
  source_dest_check = false
  ami_name          = var.ami_name
  user_data         = [for n in local.node_names : tandem_cluster.this.user_data[n]]
}

resource "tandem_cluster" "this" {
  name = var.name

  dynamic "node" {
    for_each = local.node_names
    content {
      name              = node.value
      private_ip        = local.node_ips[node.key]
      availability_zone = module.network.zones[node.key]
      subnet_id         = module.network.private_subnet_ids[node.key]
    }
  }

  np_resolution {
    on_isolated = "stop_groups"
    tcp {
      address = "ec2.${var.region}.amazonaws.com:443"
    }
  }

  arbitration {
    table = module.nodes.lease_table
  }

  group {
    name    = "service"
    servers = local.node_names
    mirror_disk {
      name            = "data"
      data_device     = "/dev/nvme1n1p2"
      metadata_device = "/dev/nvme1n1p1"
      mount_point     = "/srv/data"
    }
    aws_vip {
      name            = "vip"
      ip              = var.vip
      vpc_id          = module.network.vpc_id
      route_table_ids = module.network.route_table_ids
    }
    exec {
      name       = "app"
      start      = "systemctl start tandem-app"
      stop       = "systemctl stop tandem-app"
      probe      = "systemctl is-active --quiet tandem-app"
      cgroup     = "system.slice/tandem-app.service"
      depends_on = ["data", "vip"]
    }
  }

  monitor {
    name = "zone"
    kind = "aws_az"
  }

  # On the active node only, read-only: the VIP is bound here and every VIP route targets this node's ENI.
  # Someone changing it by hand is an error; recovery restarts the resource, which puts it back. An AWS API
  # that fails or throttles is "unknown": a warning, never a failover (on_aws_error = "warn").
  monitor {
    name     = "vip"
    kind     = "aws_vip"
    resource = "vip"
  }

  # On both nodes: the mirror's replication. A failed store or export on the active node is an error (recovery
  # restarts it, then fails over); a lost peer or a standby without a link is a warning, never a failover.
  monitor {
    name     = "data"
    kind     = "mirror"
    resource = "data"
  }
}

# The VIP route in every route table, initially to node 1, so clients reach the service before tandemd
# starts. tandemd re-points these at failover: Terraform must not undo that.
resource "tandem_route" "vip" {
  count                  = 3
  route_table_id         = module.network.route_table_ids[count.index]
  destination_cidr_block = "${var.vip}/32"
  network_interface_id   = module.nodes.eni_ids[0]
  lifecycle {
    ignore_changes = [network_interface_id]
  }
}

# Least privilege, rendered by the cluster for exactly its resources and monitors.
resource "tandem_iam_policy" "node" {
  name   = "${var.name}-node"
  policy = tandem_cluster.this.iam_policy_json
}

resource "tandem_iam_role_policy_attachment" "node" {
  role       = module.nodes.role_name
  policy_arn = tandem_iam_policy.node.arn
}

output "vip" {
  value = var.vip
}

output "vip_route_tables" {
  value = module.network.route_table_ids
}

output "nodes" {
  value = zipmap(local.node_names, module.nodes.private_ips)
}

output "node_enis" {
  value = module.nodes.eni_ids
}

output "vpc_id" {
  value = module.network.vpc_id
}

output "node_config" {
  description = "The rendered cluster config per node (also installed by user_data)."
  value       = tandem_cluster.this.node_config
}

output "iam_policy_json" {
  value = tandem_cluster.this.iam_policy_json
}
