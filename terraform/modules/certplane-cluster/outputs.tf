output "api_url" {
  description = "URL clients use (CERTPLANE_ADDR): the private DNS name of the load balancer."
  value       = "${local.api_scheme}://${local.api_fqdn}:${local.listener_port}"
}

output "api_fqdn" {
  description = "Private DNS name of the cluster record."
  value       = aws_route53_record.api.fqdn
}

output "nlb_dns_name" {
  description = "DNS name of the internal load balancer."
  value       = aws_lb.api.dns_name
}

output "nlb_arn" {
  description = "ARN of the internal load balancer."
  value       = aws_lb.api.arn
}

output "target_group_arn" {
  description = "ARN of the API target group (health check GET /readyz)."
  value       = aws_lb_target_group.api.arn
}

output "node_ips" {
  description = "Fixed private IP of each node, by node id."
  value       = { for k, n in local.nodes : k => n.ip }
}

output "node_api_urls" {
  description = "API URL of each node, by node id (for `certplane --addr` against one node)."
  value       = { for k, n in local.nodes : k => "http://${n.ip}:${var.api_port}" }
}

output "node_availability_zones" {
  description = "Availability zone of each node, by node id."
  value       = { for k, n in local.nodes : k => n.az }
}

output "initial_cluster" {
  description = "The --initial-cluster value the initial members start with (id=ip:cluster_port,...); also the member list for certplane operator restore."
  value       = local.initial_cluster
}

output "instance_ids" {
  description = "EC2 instance id of each node, by node id (for Session Manager: aws ssm start-session --target ...)."
  value       = { for k, i in aws_instance.node : k => i.id }
}

output "network_interface_ids" {
  description = "Network interface of each node, by node id; it outlives the instance."
  value       = { for k, e in aws_network_interface.node : k => e.id }
}

output "data_volume_ids" {
  description = "Data volume of each node, by node id."
  value       = { for k, v in aws_ebs_volume.data : k => v.id }
}

output "node_security_group_id" {
  description = "Security group of the nodes."
  value       = aws_security_group.node.id
}

output "nlb_security_group_id" {
  description = "Security group of the load balancer."
  value       = aws_security_group.nlb.id
}

output "instance_role_arn" {
  description = "ARN of the node role: the only principal the ImportCertificate alarm accepts."
  value       = aws_iam_role.node.arn
}

output "instance_role_name" {
  description = "Name of the node role."
  value       = aws_iam_role.node.name
}

output "instance_policy_json" {
  description = "The node role's inline policy (ACM, ACM PCA, secrets), for review and comparison with `certplane aws iam-policy`."
  value       = data.aws_iam_policy_document.node.json
}

output "acm_actions" {
  description = "ACM actions granted to the nodes."
  value       = local.acm_actions
}

output "acm_pca_actions" {
  description = "ACM Private CA actions granted to the nodes."
  value       = local.acm_pca_actions
}

output "data_kms_key_arn" {
  description = "KMS key of the volumes and backups."
  value       = aws_kms_key.data.arn
}

output "audit_kms_key_arn" {
  description = "KMS key of the trail, its log group and the alarm topic."
  value       = aws_kms_key.audit.arn
}

output "cloudtrail_arn" {
  description = "ARN of the trail the module created (null when create_cloudtrail is false)."
  value       = var.create_cloudtrail ? aws_cloudtrail.this[0].arn : null
}

output "cloudtrail_bucket" {
  description = "S3 bucket of the trail (null when create_cloudtrail is false)."
  value       = var.create_cloudtrail ? aws_s3_bucket.trail[0].id : null
}

output "alarm_topic_arn" {
  description = "SNS topic the alarms notify."
  value       = local.alarm_topic_arn
}

output "acm_import_alarm_arn" {
  description = "ARN of the alarm on ImportCertificate by another principal."
  value       = aws_cloudwatch_metric_alarm.foreign_acm_import.arn
}

output "backup_vault_name" {
  description = "AWS Backup vault holding the data volume recovery points."
  value       = aws_backup_vault.data.name
}

output "backup_plan_id" {
  description = "AWS Backup plan of the data volumes."
  value       = aws_backup_plan.data.id
}

output "vpc_endpoint_ids" {
  description = "Interface endpoint id of each AWS service, by service name."
  value       = { for k, e in aws_vpc_endpoint.interface : k => e.id }
}
