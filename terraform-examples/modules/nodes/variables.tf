variable "name" {
  description = "Cluster name: prefixes every object's Name tag."
  type        = string
}

variable "vpc_id" {
  description = "The VPC the nodes live in."
  type        = string
}

variable "subnet_ids" {
  description = "One subnet per node, in two zones."
  type        = list(string)
}

variable "zones" {
  description = "The zone of each subnet (for the mirror-disk volumes)."
  type        = list(string)
}

variable "node_ips" {
  description = "Fixed private IPs of the nodes, one per subnet: the cluster names them before the instances exist."
  type        = list(string)
}

variable "user_data" {
  description = "Per node, the user_data the cluster rendered for it (tandem_cluster.user_data[name])."
  type        = list(string)
  default     = null
}

variable "source_dest_check" {
  description = "Source/destination check of the nodes' ENIs; VIP control needs it off."
  type        = bool
  default     = true
}

variable "ports" {
  description = "Ports the nodes open to each other: the cluster's heartbeat (UDP), mirror (TCP) and control API (TCP) ports."
  type        = object({ heartbeat = number, mirror = number, api = number })
  default     = { heartbeat = 7400, mirror = 7410, api = 7402 }
}

variable "admin_cidr" {
  description = "Where operators reach the nodes' control API from."
  type        = string
  default     = "10.0.0.0/16"
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
