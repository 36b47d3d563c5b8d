output "instance_ids" {
  value = tandem_instance.node[*].id
}

output "eni_ids" {
  value = tandem_instance.node[*].primary_network_interface_id
}

output "private_ips" {
  value = tandem_instance.node[*].private_ip
}

output "public_ips" {
  value = tandem_instance.node[*].public_ip
}

output "role_name" {
  description = "The nodes' IAM role: attach the cluster's policy to it."
  value       = tandem_iam_role.node.name
}

output "lease_table" {
  value = tandem_dynamodb_table.leases.name
}
