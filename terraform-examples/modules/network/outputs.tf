output "vpc_id" {
  value = tandem_vpc.this.id
}

output "vpc_cidr" {
  value = tandem_vpc.this.cidr_block
}

output "zones" {
  description = "The two zones, in the order of the subnets."
  value       = local.zones
}

output "public_subnet_ids" {
  value = tandem_subnet.public[*].id
}

output "private_subnet_ids" {
  value = tandem_subnet.private[*].id
}

output "route_table_ids" {
  description = "Every route table of the VPC (public, then private per zone)."
  value       = local.route_table_ids
}
