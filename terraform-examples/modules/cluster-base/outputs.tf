output "vpc_id" {
  value = tandem_vpc.this.id
}

output "vpc_cidr" {
  value = tandem_vpc.this.cidr_block
}

output "route_table_ids" {
  description = "Every route table of the VPC (public, then private per zone)."
  value       = local.route_table_ids
}

output "node_instance_ids" {
  value = tandem_instance.node[*].id
}

output "node_eni_ids" {
  value = tandem_instance.node[*].primary_network_interface_id
}

output "node_private_ips" {
  value = tandem_instance.node[*].private_ip
}

output "node_public_ips" {
  value = tandem_instance.node[*].public_ip
}

output "zones" {
  value = local.zones
}

output "lease_table" {
  value = tandem_dynamodb_table.leases.name
}

output "node_role_name" {
  description = "The nodes' IAM role: attach the topology's policy to it."
  value       = tandem_iam_role.node.name
}

output "lease_table_arn" {
  value = tandem_dynamodb_table.leases.arn
}
