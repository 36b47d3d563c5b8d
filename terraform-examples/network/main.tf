# The network every tandem cluster starts from: a VPC, one public subnet in each of two availability
# zones, and an Internet gateway. Later examples (vip-cluster, eip-cluster, dns-cluster) build on it.

terraform {
  required_version = ">= 1.6"
  required_providers {
    tandem = {
      source  = "tandem/tandem"
      version = "0.1.0"
    }
  }
}

variable "region" {
  description = "AWS region to build in."
  type        = string
  default     = "us-east-1"
}

variable "vpc_cidr" {
  description = "CIDR block of the VPC."
  type        = string
  default     = "10.0.0.0/16"
}

provider "tandem" {
  region = var.region
  default_tags {
    tags = {
      Project = "tandem-example"
    }
  }
}

data "tandem_availability_zones" "available" {
  state = "available"
}

resource "tandem_vpc" "main" {
  cidr_block           = var.vpc_cidr
  enable_dns_hostnames = true
  tags = {
    Name = "tandem-example"
  }
}

resource "tandem_subnet" "public" {
  count                   = 2
  vpc_id                  = tandem_vpc.main.id
  cidr_block              = cidrsubnet(var.vpc_cidr, 8, count.index)
  availability_zone       = data.tandem_availability_zones.available.names[count.index]
  map_public_ip_on_launch = true
  tags = {
    Name = "tandem-example-public-${count.index}"
  }
}

resource "tandem_internet_gateway" "main" {
  vpc_id = tandem_vpc.main.id
  tags = {
    Name = "tandem-example"
  }
}

output "vpc_id" {
  value = tandem_vpc.main.id
}

output "subnet_ids" {
  value = tandem_subnet.public[*].id
}

output "subnet_zones" {
  value = tandem_subnet.public[*].availability_zone
}

output "internet_gateway_id" {
  value = tandem_internet_gateway.main.id
}
