# DNS name control: clients resolve a name in a Route 53 private hosted zone; its A record is UPSERTed to
# the active node's IP. Nodes live in private subnets behind a NAT gateway per zone (Route 53 has no VPC
# endpoint, so its API is reached through NAT).

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "name" {
  type    = string
  default = "tandem-dns"
}

variable "zone_name" {
  description = "The private hosted zone."
  type        = string
  default     = "tandem.internal"
}

variable "service_name" {
  description = "The name clients resolve: a lower-case FQDN inside zone_name, with the trailing dot."
  type        = string
  default     = "db.tandem.internal."
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
  source     = "../modules/nodes"
  name       = var.name
  vpc_id     = module.network.vpc_id
  subnet_ids = module.network.private_subnet_ids
  zones      = module.network.zones
  node_ips   = local.node_ips
  ami_name   = var.ami_name
  user_data  = [for n in local.node_names : tandem_cluster.this.user_data[n]]
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
    aws_dns {
      name           = "dns"
      hosted_zone_id = tandem_route53_zone.private.zone_id
      record_name    = var.service_name
      ttl            = 10
    }
    exec {
      name       = "app"
      start      = "systemctl start tandem-app"
      stop       = "systemctl stop tandem-app"
      probe      = "systemctl is-active --quiet tandem-app"
      cgroup     = "system.slice/tandem-app.service"
      depends_on = ["data", "dns"]
    }
  }

  monitor {
    name = "zone"
    kind = "aws_az"
  }

  # On the active node only, read-only: the record set exists and holds this node's IP.
  # Someone changing it by hand is an error; recovery restarts the resource, which puts it back. An AWS API
  # that fails or throttles is "unknown": a warning, never a failover (on_aws_error = "warn").
  monitor {
    name     = "dns"
    kind     = "aws_dns"
    resource = "dns"
  }
}

resource "tandem_route53_zone" "private" {
  name          = var.zone_name
  comment       = "tandem ${var.name}"
  force_destroy = true
  vpc {
    vpc_id = module.network.vpc_id
  }
}

# The service record, initially node 1, so clients resolve it before tandemd starts. The runtime UPSERTs
# it at failover; Terraform must not undo that.
resource "tandem_route53_record" "service" {
  zone_id = tandem_route53_zone.private.zone_id
  name    = var.service_name
  type    = "A"
  ttl     = 10
  records = [local.node_ips[0]]
  lifecycle {
    ignore_changes = [records]
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

output "zone_id" {
  value = tandem_route53_zone.private.zone_id
}

output "service_name" {
  value = tandem_route53_record.service.fqdn
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
