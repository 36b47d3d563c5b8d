# EIP control: clients on the Internet reach the service at an Elastic IP, associated with the active
# node's ENI. Nodes live in public subnets.

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "name" {
  type    = string
  default = "tandem-eip"
}

variable "ami_name" {
  description = "Name filter of the node image."
  type        = string
  default     = "al2023-ami-2023.*-x86_64"
}

locals {
  node_names = ["node1", "node2"]
  node_ips   = ["10.0.0.11", "10.0.1.11"]
}

module "network" {
  source          = "../modules/network"
  name            = var.name
  private_subnets = false
}

module "nodes" {
  source     = "../modules/nodes"
  name       = var.name
  vpc_id     = module.network.vpc_id
  subnet_ids = module.network.public_subnet_ids
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
      subnet_id         = module.network.public_subnet_ids[node.key]
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
    aws_eip {
      name          = "eip"
      allocation_id = tandem_eip.service.allocation_id
    }
    exec {
      name       = "app"
      start      = "systemctl start tandem-app"
      stop       = "systemctl stop tandem-app"
      probe      = "systemctl is-active --quiet tandem-app"
      cgroup     = "system.slice/tandem-app.service"
      depends_on = ["data", "eip"]
    }
  }

  monitor {
    name = "zone"
    kind = "aws_az"
  }

  # On the active node only, read-only: the Elastic IP is associated with this node's ENI.
  # Someone changing it by hand is an error; recovery restarts the resource, which puts it back. An AWS API
  # that fails or throttles is "unknown": a warning, never a failover (on_aws_error = "warn").
  monitor {
    name     = "eip"
    kind     = "aws_eip"
    resource = "eip"
  }
}

# The service address. The runtime moves it between the nodes; Terraform makes only the initial
# association (so clients reach the service before tandemd starts) and never moves it back.
resource "tandem_eip" "service" {
  tags = { Name = "${var.name}-service" }
}

resource "tandem_eip_association" "initial" {
  allocation_id        = tandem_eip.service.allocation_id
  network_interface_id = module.nodes.eni_ids[0]
  lifecycle {
    ignore_changes = [network_interface_id, private_ip_address]
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

output "service_ip" {
  value = tandem_eip.service.public_ip
}

output "allocation_id" {
  value = tandem_eip.service.allocation_id
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
