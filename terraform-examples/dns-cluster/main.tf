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
  description = "The name clients resolve, inside zone_name."
  type        = string
  default     = "db.tandem.internal"
}

variable "ami_name" {
  description = "Name filter of the node image."
  type        = string
  default     = "al2023-ami-2023.*-x86_64"
}

module "base" {
  source        = "../modules/cluster-base"
  name          = var.name
  private_nodes = true
  node_ips      = ["10.0.10.11", "10.0.11.11"]
  ami_name      = var.ami_name
}

resource "tandem_route53_zone" "private" {
  name          = var.zone_name
  comment       = "tandem ${var.name}"
  force_destroy = true
  vpc {
    vpc_id = module.base.vpc_id
  }
}

# The service record, initially node 1. The runtime UPSERTs it at failover; ignore its value here.
resource "tandem_route53_record" "service" {
  zone_id = tandem_route53_zone.private.zone_id
  name    = var.service_name
  type    = "A"
  ttl     = 10
  records = [module.base.node_private_ips[0]]
  lifecycle {
    ignore_changes = [records]
  }
}

# Least privilege for DNS control on exactly this zone, and the lease table.
resource "tandem_iam_policy" "node" {
  name = "${var.name}-node"
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "DnsRecord"
        Effect   = "Allow"
        Action   = ["route53:ChangeResourceRecordSets", "route53:ListResourceRecordSets"]
        Resource = "arn:aws:route53:::hostedzone/${tandem_route53_zone.private.zone_id}"
      },
      {
        Sid      = "DnsChange"
        Effect   = "Allow"
        Action   = ["route53:GetChange"]
        Resource = "arn:aws:route53:::change/*"
      },
      {
        Sid      = "Lease"
        Effect   = "Allow"
        Action   = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"]
        Resource = module.base.lease_table_arn
      },
    ]
  })
}

resource "tandem_iam_role_policy_attachment" "node" {
  role       = module.base.node_role_name
  policy_arn = tandem_iam_policy.node.arn
}

output "zone_id" {
  value = tandem_route53_zone.private.zone_id
}

output "service_name" {
  value = tandem_route53_record.service.fqdn
}

output "nodes" {
  value = zipmap(["node1", "node2"], module.base.node_private_ips)
}

output "vpc_id" {
  value = module.base.vpc_id
}
