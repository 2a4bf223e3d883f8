output "api_url" {
  description = "Set CERTPLANE_ADDR to this."
  value       = module.certplane.api_url
}

output "node_api_urls" {
  description = "API URL of each node."
  value       = module.certplane.node_api_urls
}

output "instance_ids" {
  description = "Instance of each node (aws ssm start-session --target <id>)."
  value       = module.certplane.instance_ids
}

output "initial_cluster" {
  description = "Member list of the cluster (also what certplane operator restore needs)."
  value       = module.certplane.initial_cluster
}

output "instance_role_arn" {
  description = "The certplane node role."
  value       = module.certplane.instance_role_arn
}

output "instance_policy_json" {
  description = "The node role's policy."
  value       = module.certplane.instance_policy_json
}

output "alarm_topic_arn" {
  description = "Topic of the ImportCertificate alarm."
  value       = module.certplane.alarm_topic_arn
}

output "vpc_id" {
  description = "VPC the example created."
  value       = aws_vpc.this.id
}
