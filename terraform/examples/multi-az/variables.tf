variable "region" {
  description = "Region of the cluster."
  type        = string
  default     = "eu-west-1"
}

variable "environment" {
  description = "Environment name, used in resource names and tags."
  type        = string
  default     = "prod"
}

variable "vpc_cidr" {
  description = "CIDR block of the VPC the example creates."
  type        = string
  default     = "10.40.0.0/16"
}

variable "availability_zones" {
  description = "Availability zones of the nodes, one private subnet and one node each: 3, or 5 in regions that have them."
  type        = list(string)
  default     = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]

  validation {
    condition     = contains([3, 5], length(var.availability_zones))
    error_message = "availability_zones must list 3 or 5 zones."
  }
}

variable "ami_id" {
  description = "AMI with certplane installed at /usr/local/bin/certplane (and systemd, cloud-init, the AWS CLI v2)."
  type        = string
}

variable "client_cidrs" {
  description = "Networks allowed to use the API (office VPN, CI runners, the Prometheus server)."
  type        = list(string)
  default     = ["10.0.0.0/8"]
}

variable "private_zone_name" {
  description = "Private hosted zone the example creates for the cluster's records."
  type        = string
  default     = "certplane.internal"
}

variable "acm_regions" {
  description = "Regions whose ACM certificates certplane governs."
  type        = list(string)
  default     = ["eu-west-1", "us-east-1"]
}

variable "acm_pca_arns" {
  description = "ACM Private CAs certplane may issue from."
  type        = list(string)
  default     = []
}

variable "secrets_kms_key_arn" {
  description = "Customer managed KMS key of the SecureString parameters below (null for the aws/ssm key)."
  type        = string
  default     = null
}

variable "alarm_email" {
  description = "Address subscribed to the alarm topic (confirm the subscription mail). null subscribes nobody."
  type        = string
  default     = null
}

variable "access_log_bucket" {
  description = "Existing bucket for S3 server access logs of the CloudTrail bucket (an organisation's logging bucket)."
  type        = string
  default     = null
}
