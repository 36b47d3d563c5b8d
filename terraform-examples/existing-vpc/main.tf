# A VIP-control cluster in a VPC made elsewhere (another team's Terraform, the console): the network comes
# in as variables; this configuration adds only the cluster's own objects — lease table, security group,
# IAM, two nodes with mirror-disk volumes, the VIP routes and the tandem_cluster. The subnets need a path to
# the EC2 API (NAT or an interface endpoint) and to DynamoDB (NAT or a gateway endpoint).

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "name" {
  type    = string
  default = "tandem-existing"
}

variable "vpc_id" {
  description = "The existing VPC."
  type        = string
}

variable "subnet_ids" {
  description = "Two existing subnets in two zones, one per node."
  type        = list(string)
}

variable "zones" {
  description = "The zone of each subnet, in the same order."
  type        = list(string)
}

variable "route_table_ids" {
  description = "Every route table of the VPC that must carry the VIP route."
  type        = list(string)
}

variable "node_ips" {
  description = "Free private IPs for the nodes, one inside each subnet."
  type        = list(string)
}

variable "vip" {
  description = "The virtual IP; must lie outside the VPC's CIDR blocks (the plan checks it)."
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
  node_ips   = var.node_ips
}

module "nodes" {
  source            = "../modules/nodes"
  name              = var.name
  vpc_id            = var.vpc_id
  subnet_ids        = var.subnet_ids
  zones             = var.zones
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
      availability_zone = var.zones[node.key]
      subnet_id         = var.subnet_ids[node.key]
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
      vpc_id          = var.vpc_id
      route_table_ids = var.route_table_ids
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
}

# The VIP route in every route table, initially to node 1, so clients reach the service before tandemd
# starts. tandemd re-points these at failover: Terraform must not undo that.
resource "tandem_route" "vip" {
  count                  = length(var.route_table_ids)
  route_table_id         = var.route_table_ids[count.index]
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
  value = var.route_table_ids
}

output "nodes" {
  value = zipmap(local.node_names, module.nodes.private_ips)
}

output "node_enis" {
  value = module.nodes.eni_ids
}

output "vpc_id" {
  value = var.vpc_id
}

output "node_config" {
  description = "The rendered cluster config per node (also installed by user_data)."
  value       = tandem_cluster.this.node_config
}

output "iam_policy_json" {
  value = tandem_cluster.this.iam_policy_json
}
