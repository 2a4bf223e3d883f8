# Inputs of the certplane-cluster module. README.md lists every one of them with its default.

# --- Naming -----------------------------------------------------------------------------------

variable "name" {
  description = "Name of the cluster; prefixes every resource name and tag."
  type        = string
  default     = "certplane"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "tags" {
  description = "Tags added to every resource the module creates."
  type        = map(string)
  default     = {}
}

# --- Network ----------------------------------------------------------------------------------

variable "vpc_id" {
  description = "VPC the cluster runs in."
  type        = string

  validation {
    condition     = can(regex("^vpc-[0-9a-f]{8,17}$", var.vpc_id))
    error_message = "vpc_id must look like vpc-0123456789abcdef0."
  }
}

variable "private_subnet_ids" {
  description = "One private subnet per availability zone: 3 (the default layout) or up to 5. Node i runs in subnet (i-1) mod N."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 3 && length(var.private_subnet_ids) <= 5
    error_message = "private_subnet_ids must hold 3, 4 or 5 subnets, one per availability zone."
  }

  validation {
    condition     = length(distinct(var.private_subnet_ids)) == length(var.private_subnet_ids)
    error_message = "private_subnet_ids must not repeat a subnet."
  }

  validation {
    condition     = alltrue([for s in var.private_subnet_ids : can(regex("^subnet-[0-9a-f]{8,17}$", s))])
    error_message = "every entry of private_subnet_ids must look like subnet-0123456789abcdef0."
  }
}

variable "node_count" {
  description = "Number of voting nodes: 3 or 5. null means one node per subnet."
  type        = number
  default     = null

  validation {
    condition     = var.node_count == null || contains([3, 5], coalesce(var.node_count, 3))
    error_message = "node_count must be 3 or 5 (an odd number of voters; 5 survives two lost zones)."
  }
}

variable "node_host_number" {
  description = "Host number of each node's fixed private IP inside its subnet (cidrhost). Nodes sharing a subnet take the following numbers."
  type        = number
  default     = 10

  validation {
    condition     = var.node_host_number >= 4 && var.node_host_number <= 250
    error_message = "node_host_number must be between 4 and 250 (AWS reserves the first four addresses of a subnet)."
  }
}

variable "allowed_client_cidrs" {
  description = "CIDR blocks allowed to reach the API (through the load balancer and on each node, for the CLI and Prometheus)."
  type        = list(string)

  validation {
    condition     = length(var.allowed_client_cidrs) > 0 && alltrue([for c in var.allowed_client_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "allowed_client_cidrs must be a non-empty list of valid CIDR blocks, and not 0.0.0.0/0."
  }
}

variable "https_egress_cidrs" {
  description = "Extra CIDR blocks the nodes may reach on 443, for AWS APIs outside this region (ACM in other regions) through a NAT or proxy. The VPC endpoints cover this region."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.https_egress_cidrs : can(cidrhost(c, 0))])
    error_message = "https_egress_cidrs must hold valid CIDR blocks."
  }
}

variable "api_port" {
  description = "HTTP API port of each node (--api-addr)."
  type        = number
  default     = 8200
}

variable "cluster_port" {
  description = "gRPC port for node-to-node traffic with mutual TLS (--cluster-addr)."
  type        = number
  default     = 8201
}

variable "create_vpc_endpoints" {
  description = "Create interface endpoints for ACM, ACM PCA, STS, SSM, ssmmessages, ec2messages (and Secrets Manager when the KEK lives there). Set false when the VPC already has them."
  type        = bool
  default     = true
}

# --- Instances --------------------------------------------------------------------------------

variable "ami_id" {
  description = "AMI for the nodes: Linux with systemd, cloud-init, the AWS CLI v2 and the certplane binary at certplane_binary_path."
  type        = string

  validation {
    condition     = can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must look like ami-0123456789abcdef0."
  }
}

variable "node_ami_ids" {
  description = "Per-node AMI overrides keyed by node id (\"1\", \"2\", ...), for rolling upgrades one node at a time."
  type        = map(string)
  default     = {}
}

variable "instance_type" {
  description = "EC2 instance type of every node."
  type        = string
  default     = "m6i.large"
}

variable "root_volume_size_gb" {
  description = "Size of each node's root volume."
  type        = number
  default     = 20
}

variable "data_volume_size_gb" {
  description = "Size of each node's data volume (RocksDB and snapshots), mounted at /var/lib/certplane."
  type        = number
  default     = 100

  validation {
    condition     = var.data_volume_size_gb >= 10 && var.data_volume_size_gb <= 16384
    error_message = "data_volume_size_gb must be between 10 and 16384."
  }
}

variable "data_volume_iops" {
  description = "Provisioned IOPS of each gp3 data volume."
  type        = number
  default     = 3000
}

variable "data_volume_throughput" {
  description = "Provisioned throughput (MiB/s) of each gp3 data volume."
  type        = number
  default     = 125
}

variable "certplane_binary_path" {
  description = "Path of the certplane binary on the AMI."
  type        = string
  default     = "/usr/local/bin/certplane"
}

# --- certplane configuration -------------------------------------------------------------------

variable "kek_source" {
  description = "Where each node reads the key-encryption key at boot through its instance role: type \"ssm\" (id = SecureString parameter name) or \"secretsmanager\" (id = secret ARN). The value is 64 hex characters (certplane operator generate-kek)."
  type = object({
    type = string
    id   = string
  })

  validation {
    condition     = contains(["ssm", "secretsmanager"], var.kek_source.type)
    error_message = "kek_source.type must be \"ssm\" or \"secretsmanager\"."
  }

  validation {
    condition = (
      (var.kek_source.type == "ssm" && can(regex("^/[A-Za-z0-9_./-]+$", var.kek_source.id))) ||
      (var.kek_source.type == "secretsmanager" && can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+$", var.kek_source.id)))
    )
    error_message = "kek_source.id must be an SSM parameter name starting with / (type ssm) or a Secrets Manager secret ARN (type secretsmanager)."
  }
}

variable "tls_ssm_prefix" {
  description = "SSM path holding the cluster TLS material as SecureString parameters: <prefix>/ca.pem, <prefix>/node-<id>.pem and <prefix>/node-<id>-key.pem (the files of certplane tls init)."
  type        = string

  validation {
    condition     = can(regex("^/[A-Za-z0-9_./-]+[^/]$", var.tls_ssm_prefix))
    error_message = "tls_ssm_prefix must start with / and not end with /."
  }
}

variable "secrets_kms_key_arn" {
  description = "Customer managed KMS key that encrypts the KEK, TLS and join-token parameters; the instance role may decrypt with it through SSM and Secrets Manager only. null when they use the AWS managed keys."
  type        = string
  default     = null
}

variable "join_token_ssm_parameter" {
  description = "SecureString parameter with an operator token, used by nodes that join a running cluster (those not in initial_member_ids)."
  type        = string
  default     = null
}

variable "initial_member_ids" {
  description = "Node ids that form the cluster with --initial-cluster when they first boot on an empty data volume; other nodes with an empty volume join the running cluster with the token in join_token_ssm_parameter. null means every node. Once the cluster has formed, set [] so that a node given a new, empty volume joins instead of bootstrapping (deploy/runbooks/lost-node.md)."
  type        = list(number)
  default     = null
}

variable "start_mode" {
  description = "What a node with an empty data volume does at boot: \"bootstrap\" (start, forming or joining the cluster) or \"restore\" (prepare and wait for certplane operator restore, see deploy/runbooks/snapshot-backup-restore.md)."
  type        = string
  default     = "bootstrap"

  validation {
    condition     = contains(["bootstrap", "restore"], var.start_mode)
    error_message = "start_mode must be \"bootstrap\" or \"restore\"."
  }
}

variable "raft_timing" {
  description = "Raft heartbeat and election timeouts in milliseconds. Wider than the LAN defaults to ride out cross-zone jitter and EBS stalls; failover takes about two election timeouts."
  type = object({
    heartbeat_ms    = number
    election_min_ms = number
    election_max_ms = number
  })
  default = {
    heartbeat_ms    = 50
    election_min_ms = 300
    election_max_ms = 600
  }

  validation {
    condition     = var.raft_timing.heartbeat_ms > 0 && var.raft_timing.heartbeat_ms < var.raft_timing.election_min_ms && var.raft_timing.election_min_ms < var.raft_timing.election_max_ms
    error_message = "raft_timing needs 0 < heartbeat_ms < election_min_ms < election_max_ms."
  }
}

variable "log_filter" {
  description = "certplane log filter (--log)."
  type        = string
  default     = "info,openraft=warn"
}

# --- AWS services certplane governs -------------------------------------------------------------

variable "acm_regions" {
  description = "Regions whose ACM certificates certplane may import, read, tag (and delete, with acm_cleanup_enabled). Empty means this region only."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for r in var.acm_regions : can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", r))])
    error_message = "acm_regions must hold region names such as eu-west-1."
  }
}

variable "acm_pca_arns" {
  description = "ARNs of the ACM Private CAs certplane may issue from and revoke at. Empty grants no ACM PCA permission."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.acm_pca_arns : can(regex("^arn:aws[a-z-]*:acm-pca:[a-z0-9-]+:[0-9]{12}:certificate-authority/[0-9a-f-]+$", a))])
    error_message = "acm_pca_arns must hold ACM PCA certificate authority ARNs."
  }
}

variable "acm_cleanup_enabled" {
  description = "Grant acm:DeleteCertificate so certplane can remove ACM certificates it imported and no longer deploys."
  type        = bool
  default     = false
}

# --- Load balancer and DNS ----------------------------------------------------------------------

variable "route53_zone_id" {
  description = "Route 53 private hosted zone (associated with the VPC) that receives the cluster record and one record per node."
  type        = string
}

variable "dns_name" {
  description = "Label of the cluster record in the private zone (the load balancer alias)."
  type        = string
  default     = "certplane"
}

variable "create_node_records" {
  description = "Create node-<id>.<zone> A records pointing at each node's fixed IP."
  type        = bool
  default     = true
}

variable "listener_certificate_arn" {
  description = "ACM certificate for a TLS listener on the load balancer (clients then use https on listener_port). null keeps a plain TCP listener on the API port."
  type        = string
  default     = null
}

variable "listener_port" {
  description = "Load balancer listener port. null means 443 with a TLS listener, the API port otherwise."
  type        = number
  default     = null
}

variable "nlb_deletion_protection" {
  description = "Deletion protection on the load balancer."
  type        = bool
  default     = true
}

variable "nlb_access_log_bucket" {
  description = "S3 bucket for the load balancer's access logs (written for TLS listeners only). null disables them."
  type        = string
  default     = null
}

# --- Audit: CloudTrail and the ImportCertificate alarm --------------------------------------------

variable "create_cloudtrail" {
  description = "Create a multi-region CloudTrail trail (KMS-encrypted, log file validation, S3 and CloudWatch Logs). Set false and give existing_cloudtrail_log_group_name when an organisation trail already delivers to CloudWatch Logs."
  type        = bool
  default     = true
}

variable "existing_cloudtrail_log_group_name" {
  description = "CloudWatch Logs group of an existing trail; used for the metric filter when create_cloudtrail is false."
  type        = string
  default     = null
}

variable "cloudtrail_access_log_bucket" {
  description = "Existing S3 bucket that receives server access logs of the CloudTrail bucket. null disables access logging."
  type        = string
  default     = null
}

variable "log_retention_days" {
  description = "Retention of the CloudTrail log group and of CloudTrail objects in S3."
  type        = number
  default     = 400

  validation {
    condition     = var.log_retention_days >= 365
    error_message = "log_retention_days must be at least 365 (a year of audit history)."
  }
}

variable "alarm_sns_topic_arn" {
  description = "SNS topic for the alarms. null creates an encrypted topic (subscribe to it yourself)."
  type        = string
  default     = null
}

# --- Backup ---------------------------------------------------------------------------------------

variable "backup_schedule" {
  description = "AWS Backup schedule (cron expression, UTC) for the data volumes."
  type        = string
  default     = "cron(0 3 * * ? *)"
}

variable "backup_retention_days" {
  description = "Days each data volume recovery point is kept."
  type        = number
  default     = 35

  validation {
    condition     = var.backup_retention_days >= 7
    error_message = "backup_retention_days must be at least 7."
  }
}

variable "backup_copy_vault_arn" {
  description = "Backup vault in another region or account that receives a copy of every recovery point. null copies nothing."
  type        = string
  default     = null
}
