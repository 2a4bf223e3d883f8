# A production-shaped certplane cluster: its own VPC with one private subnet per availability
# zone and no internet gateway (AWS APIs through interface endpoints), a private hosted zone, and
# the certplane-cluster module. The KEK and the TLS files are put into SSM beforehand (README.md).

locals {
  name  = "certplane-${var.environment}"
  zones = var.availability_zones
}

# --- Network ------------------------------------------------------------------------------------

resource "aws_vpc" "this" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = { Name = local.name }
}

resource "aws_subnet" "private" {
  count                   = length(local.zones)
  vpc_id                  = aws_vpc.this.id
  availability_zone       = local.zones[count.index]
  cidr_block              = cidrsubnet(var.vpc_cidr, 8, count.index + 1)
  map_public_ip_on_launch = false
  tags                    = { Name = "${local.name}-private-${local.zones[count.index]}" }
}

resource "aws_route_table" "private" {
  vpc_id = aws_vpc.this.id
  tags   = { Name = "${local.name}-private" }
}

resource "aws_route_table_association" "private" {
  count          = length(local.zones)
  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private.id
}

# The default security group allows nothing; every resource uses its own group.
resource "aws_default_security_group" "this" {
  vpc_id = aws_vpc.this.id
  tags   = { Name = "${local.name}-default-unused" }
}

# VPC flow logs, encrypted, kept a year.
resource "aws_kms_key" "flow_logs" {
  description         = "${local.name}: VPC flow logs"
  enable_key_rotation = true
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministers"
        Effect    = "Allow"
        Principal = { AWS = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchLogsEncrypts"
        Effect    = "Allow"
        Principal = { Service = "logs.${var.region}.amazonaws.com" }
        Action    = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]
        Resource  = "*"
        Condition = {
          ArnLike = {
            "kms:EncryptionContext:aws:logs:arn" = "arn:${data.aws_partition.current.partition}:logs:${var.region}:${data.aws_caller_identity.current.account_id}:log-group:/aws/vpc/${local.name}"
          }
        }
      },
    ]
  })
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

resource "aws_cloudwatch_log_group" "flow_logs" {
  name              = "/aws/vpc/${local.name}"
  retention_in_days = 400
  kms_key_id        = aws_kms_key.flow_logs.arn
}

data "aws_iam_policy_document" "flow_logs_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_iam_role" "flow_logs" {
  name               = "${local.name}-flow-logs"
  assume_role_policy = data.aws_iam_policy_document.flow_logs_assume.json
}

data "aws_iam_policy_document" "flow_logs" {
  statement {
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.flow_logs.arn}:*"]
  }
}

resource "aws_iam_role_policy" "flow_logs" {
  name   = "${local.name}-flow-logs"
  role   = aws_iam_role.flow_logs.id
  policy = data.aws_iam_policy_document.flow_logs.json
}

resource "aws_flow_log" "this" {
  vpc_id          = aws_vpc.this.id
  traffic_type    = "ALL"
  log_destination = aws_cloudwatch_log_group.flow_logs.arn
  iam_role_arn    = aws_iam_role.flow_logs.arn
}

# --- DNS ----------------------------------------------------------------------------------------

resource "aws_route53_zone" "private" {
  name    = var.private_zone_name
  comment = "certplane ${var.environment}"

  vpc {
    vpc_id = aws_vpc.this.id
  }
}

# --- Secrets the nodes read at boot ---------------------------------------------------------------
# Created outside Terraform so their values never enter the state (README.md, step 1):
#   /certplane/<environment>/kek                 64 hex characters (certplane operator generate-kek)
#   /certplane/<environment>/tls/ca.pem          certplane tls init --nodes <number of zones>
#   /certplane/<environment>/tls/node-<id>.pem
#   /certplane/<environment>/tls/node-<id>-key.pem
#   /certplane/<environment>/join-token          an operator token, for nodes added later

# --- Alarms -------------------------------------------------------------------------------------

resource "aws_sns_topic_subscription" "alarm_email" {
  count     = var.alarm_email == null ? 0 : 1
  topic_arn = module.certplane.alarm_topic_arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

# --- certplane ----------------------------------------------------------------------------------

module "certplane" {
  source = "../../modules/certplane-cluster"

  name               = local.name
  vpc_id             = aws_vpc.this.id
  private_subnet_ids = aws_subnet.private[*].id
  route53_zone_id    = aws_route53_zone.private.zone_id

  ami_id              = var.ami_id
  instance_type       = "m6i.large"
  data_volume_size_gb = 100

  allowed_client_cidrs = var.client_cidrs

  kek_source = {
    type = "ssm"
    id   = "/certplane/${var.environment}/kek"
  }
  tls_ssm_prefix           = "/certplane/${var.environment}/tls"
  join_token_ssm_parameter = "/certplane/${var.environment}/join-token"
  secrets_kms_key_arn      = var.secrets_kms_key_arn

  acm_regions         = var.acm_regions
  acm_pca_arns        = var.acm_pca_arns
  acm_cleanup_enabled = false

  cloudtrail_access_log_bucket = var.access_log_bucket
  backup_retention_days        = 35

  tags = {
    owner = "platform-security"
  }

  depends_on = [aws_route_table_association.private]
}
