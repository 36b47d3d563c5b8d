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

module "base" {
  source            = "../modules/cluster-base"
  name              = var.name
  private_nodes     = true
  node_ips          = ["10.0.10.11", "10.0.11.11"]
  source_dest_check = false
  ami_name          = var.ami_name
}

# The VIP route in every route table, initially to node 1. tandemd re-points these at failover, so
# Terraform must not undo that: ignore the target.
resource "tandem_route" "vip" {
  count                  = 3
  route_table_id         = module.base.route_table_ids[count.index]
  destination_cidr_block = "${var.vip}/32"
  network_interface_id   = module.base.node_eni_ids[0]
  lifecycle {
    ignore_changes = [network_interface_id]
  }
}

# Least privilege for VIP control: describe calls, ReplaceRoute on exactly the tables carrying the VIP
# route, and the lease table.
resource "tandem_iam_policy" "node" {
  name = "${var.name}-node"
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "VipDescribe"
        Effect   = "Allow"
        Action   = ["ec2:DescribeNetworkInterfaces", "ec2:DescribeVpcs", "ec2:DescribeRouteTables"]
        Resource = "*"
      },
      {
        Sid      = "VipMoveRoute"
        Effect   = "Allow"
        Action   = ["ec2:ReplaceRoute"]
        Resource = [for id in module.base.route_table_ids : "arn:aws:ec2:${var.region}:*:route-table/${id}"]
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

output "vip" {
  value = var.vip
}

output "vip_route_tables" {
  value = module.base.route_table_ids
}

output "nodes" {
  value = zipmap(["node1", "node2"], module.base.node_private_ips)
}

output "node_enis" {
  value = module.base.node_eni_ids
}

output "vpc_id" {
  value = module.base.vpc_id
}
