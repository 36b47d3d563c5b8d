# What every tandem cluster needs on top of a network: the lease table, a security group for exactly the
# cluster's ports, the nodes' IAM role (the cluster renders its policy; the root module attaches it), two
# nodes in two zones with the user_data the cluster rendered for each, and a mirror-disk volume per node.

resource "tandem_dynamodb_table" "leases" {
  name                        = "${var.name}-leases"
  hash_key                    = "group"
  billing_mode                = "PAY_PER_REQUEST"
  deletion_protection_enabled = false
  attribute {
    name = "group"
    type = "S"
  }
  point_in_time_recovery {
    enabled = true
  }
}

resource "tandem_security_group" "nodes" {
  name        = "${var.name}-nodes"
  description = "tandem cluster nodes"
  vpc_id      = var.vpc_id
  tags        = { Name = "${var.name}-nodes" }
}

# Node to node: heartbeat (UDP), mirror stream and control API (TCP). (No descriptions on these rules: the
# local AWS endpoint the examples are tested against drops descriptions of security-group-to-group rules.)
locals {
  peer_ports = {
    heartbeat = { protocol = "udp", port = var.ports.heartbeat }
    mirror    = { protocol = "tcp", port = var.ports.mirror }
    control   = { protocol = "tcp", port = var.ports.api }
  }
}

resource "tandem_security_group_rule" "peer" {
  for_each                 = local.peer_ports
  type                     = "ingress"
  security_group_id        = tandem_security_group.nodes.id
  protocol                 = each.value.protocol
  from_port                = each.value.port
  to_port                  = each.value.port
  source_security_group_id = tandem_security_group.nodes.id
}

resource "tandem_security_group_rule" "admin" {
  type              = "ingress"
  security_group_id = tandem_security_group.nodes.id
  protocol          = "tcp"
  from_port         = var.ports.api
  to_port           = var.ports.api
  cidr_ipv4         = var.admin_cidr
  description       = "tandem control API from operators"
}

resource "tandem_security_group_rule" "https_out" {
  type              = "egress"
  security_group_id = tandem_security_group.nodes.id
  protocol          = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
  description       = "AWS APIs"
}

resource "tandem_security_group_rule" "peer_out" {
  for_each                 = local.peer_ports
  type                     = "egress"
  security_group_id        = tandem_security_group.nodes.id
  protocol                 = each.value.protocol
  from_port                = each.value.port
  to_port                  = each.value.port
  source_security_group_id = tandem_security_group.nodes.id
}

resource "tandem_iam_role" "node" {
  name = "${var.name}-node"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ec2.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "tandem_iam_instance_profile" "node" {
  name = "${var.name}-node"
  role = tandem_iam_role.node.name
}

data "tandem_ami" "node" {
  owners      = ["amazon"]
  most_recent = true
  filter {
    name   = "name"
    values = [var.ami_name]
  }
  filter {
    name   = "architecture"
    values = ["x86_64"]
  }
}

resource "tandem_instance" "node" {
  count                  = 2
  ami                    = data.tandem_ami.node.id
  instance_type          = var.instance_type
  subnet_id              = var.subnet_ids[count.index]
  private_ip             = var.node_ips[count.index]
  vpc_security_group_ids = [tandem_security_group.nodes.id]
  iam_instance_profile   = tandem_iam_instance_profile.node.name
  source_dest_check      = var.source_dest_check
  user_data              = var.user_data == null ? null : var.user_data[count.index]
  metadata_options {
    http_tokens = "required"
  }
  tags = { Name = "${var.name}-node${count.index + 1}" }
}

resource "tandem_ebs_volume" "mirror" {
  count             = 2
  availability_zone = var.zones[count.index]
  size              = var.mirror_disk_size
  type              = "gp3"
  tags              = { Name = "${var.name}-mirror-node${count.index + 1}" }
}

resource "tandem_volume_attachment" "mirror" {
  count       = 2
  device_name = "/dev/sdf"
  volume_id   = tandem_ebs_volume.mirror[count.index].id
  instance_id = tandem_instance.node[count.index].id
}
