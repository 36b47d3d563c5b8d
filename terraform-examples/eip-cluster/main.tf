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

module "base" {
  source        = "../modules/cluster-base"
  name          = var.name
  private_nodes = false
  node_ips      = ["10.0.0.11", "10.0.1.11"]
  ami_name      = var.ami_name
}

# The service address. The runtime moves it between the nodes; Terraform only makes the first association.
resource "tandem_eip" "service" {
  tags = { Name = "${var.name}-service" }
}

resource "tandem_eip_association" "initial" {
  allocation_id        = tandem_eip.service.allocation_id
  network_interface_id = module.base.node_eni_ids[0]
  lifecycle {
    ignore_changes = [network_interface_id, private_ip_address]
  }
}

# Least privilege for EIP control, and the lease table.
resource "tandem_iam_policy" "node" {
  name = "${var.name}-node"
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "EipDescribe"
        Effect   = "Allow"
        Action   = ["ec2:DescribeNetworkInterfaces", "ec2:DescribeAddresses"]
        Resource = "*"
      },
      {
        Sid      = "EipMove"
        Effect   = "Allow"
        Action   = ["ec2:AssociateAddress", "ec2:DisassociateAddress"]
        Resource = "*"
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

output "service_ip" {
  value = tandem_eip.service.public_ip
}

output "allocation_id" {
  value = tandem_eip.service.allocation_id
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
