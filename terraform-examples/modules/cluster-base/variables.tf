variable "name" {
  description = "Cluster name: prefixes every object's Name tag."
  type        = string
}

variable "vpc_cidr" {
  description = "CIDR block of the VPC."
  type        = string
  default     = "10.0.0.0/16"
}

variable "private_nodes" {
  description = "Put the nodes in private subnets behind a NAT gateway per zone (VIP and DNS topologies); false puts them in the public subnets (EIP topology)."
  type        = bool
}

variable "node_ips" {
  description = "Fixed private IPs of the two nodes, one per zone. Chosen up front so the cluster configuration can name them before the instances exist."
  type        = list(string)
}

variable "source_dest_check" {
  description = "Source/destination check of the nodes' ENIs; VIP control needs it off."
  type        = bool
  default     = true
}

variable "ami_name" {
  description = "Name filter of the node image (owner: Amazon)."
  type        = string
  default     = "al2023-ami-2023.*-x86_64"
}

variable "instance_type" {
  description = "EC2 instance type of the nodes."
  type        = string
  default     = "t3.small"
}

variable "mirror_disk_size" {
  description = "Size in GiB of each node's mirror-disk EBS volume."
  type        = number
  default     = 20
}

variable "admin_cidr" {
  description = "Where operators reach the nodes' control API from."
  type        = string
  default     = "10.0.0.0/16"
}
