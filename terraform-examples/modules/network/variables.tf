variable "name" {
  description = "Cluster name: prefixes every object's Name tag."
  type        = string
}

variable "vpc_cidr" {
  description = "CIDR block of the VPC."
  type        = string
  default     = "10.0.0.0/16"
}

variable "private_subnets" {
  description = "Also build private subnets A/B, each routed through the NAT gateway of its zone (VIP and DNS topologies)."
  type        = bool
}
