# CloudTrail, and an alarm when anyone but the certplane role imports a certificate into ACM: a
# certificate placed behind certplane's back is one it does not govern.
#
#   trail (multi-region, KMS, log file validation) ──► S3 bucket (versioned, KMS, no public access)
#                                                  └─► CloudWatch Logs group ──► metric filter ──► alarm ──► SNS

locals {
  trail_name           = "${var.name}-trail"
  trail_log_group_name = "/aws/cloudtrail/${var.name}"
  # The group the metric filter reads: the module's trail, or an existing organisation trail's.
  audit_log_group_name = var.create_cloudtrail ? local.trail_log_group_name : var.existing_cloudtrail_log_group_name

  # CloudWatch Logs filter: an ACM ImportCertificate whose caller is not a session of the node role
  # (an IAM user, the root user, another role, a federated principal).
  foreign_import_filter = join(" ", [
    "{ ($.eventSource = \"acm.amazonaws.com\") && ($.eventName = \"ImportCertificate\") &&",
    "(($.userIdentity.type != \"AssumedRole\") ||",
    "($.userIdentity.sessionContext.sessionIssuer.arn != \"${aws_iam_role.node.arn}\")) }",
  ])
}

resource "aws_s3_bucket" "trail" {
  count         = var.create_cloudtrail ? 1 : 0
  bucket_prefix = "${var.name}-trail-"
  force_destroy = false
  tags          = local.tags
  #checkov:skip=CKV_AWS_144:Cross-region replication needs a second provider and bucket chosen by the operator; the trail is multi-region and the bucket versioned.
}

resource "aws_s3_bucket_public_access_block" "trail" {
  count                   = var.create_cloudtrail ? 1 : 0
  bucket                  = aws_s3_bucket.trail[0].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "trail" {
  count  = var.create_cloudtrail ? 1 : 0
  bucket = aws_s3_bucket.trail[0].id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_versioning" "trail" {
  count  = var.create_cloudtrail ? 1 : 0
  bucket = aws_s3_bucket.trail[0].id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "trail" {
  count  = var.create_cloudtrail ? 1 : 0
  bucket = aws_s3_bucket.trail[0].id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.audit.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "trail" {
  count  = var.create_cloudtrail ? 1 : 0
  bucket = aws_s3_bucket.trail[0].id

  rule {
    id     = "retain-then-expire"
    status = "Enabled"
    filter {}

    transition {
      days          = 90
      storage_class = "GLACIER_IR"
    }
    expiration {
      days = var.log_retention_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 30
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

resource "aws_s3_bucket_logging" "trail" {
  count         = var.create_cloudtrail && var.cloudtrail_access_log_bucket != null ? 1 : 0
  bucket        = aws_s3_bucket.trail[0].id
  target_bucket = coalesce(var.cloudtrail_access_log_bucket, "unset")
  target_prefix = "s3/${local.trail_name}/"
}

# Object events go to EventBridge, where an organisation's tooling can watch the trail bucket.
resource "aws_s3_bucket_notification" "trail" {
  count       = var.create_cloudtrail ? 1 : 0
  bucket      = aws_s3_bucket.trail[0].id
  eventbridge = true
}

data "aws_iam_policy_document" "trail_bucket" {
  count = var.create_cloudtrail ? 1 : 0

  statement {
    sid       = "CloudTrailChecksAcl"
    actions   = ["s3:GetBucketAcl"]
    resources = [aws_s3_bucket.trail[0].arn]
    principals {
      type        = "Service"
      identifiers = ["cloudtrail.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:cloudtrail:${local.region}:${local.account_id}:trail/${local.trail_name}"]
    }
  }

  statement {
    sid       = "CloudTrailWrites"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.trail[0].arn}/AWSLogs/${local.account_id}/*"]
    principals {
      type        = "Service"
      identifiers = ["cloudtrail.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:cloudtrail:${local.region}:${local.account_id}:trail/${local.trail_name}"]
    }
  }

  statement {
    sid       = "TlsOnly"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.trail[0].arn, "${aws_s3_bucket.trail[0].arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "trail" {
  count      = var.create_cloudtrail ? 1 : 0
  bucket     = aws_s3_bucket.trail[0].id
  policy     = data.aws_iam_policy_document.trail_bucket[0].json
  depends_on = [aws_s3_bucket_public_access_block.trail]
}

resource "aws_cloudwatch_log_group" "trail" {
  count             = var.create_cloudtrail ? 1 : 0
  name              = local.trail_log_group_name
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.audit.arn
  tags              = local.tags
}

data "aws_iam_policy_document" "trail_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["cloudtrail.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "trail" {
  count              = var.create_cloudtrail ? 1 : 0
  name               = "${var.name}-trail-logs"
  assume_role_policy = data.aws_iam_policy_document.trail_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "trail_logs" {
  count = var.create_cloudtrail ? 1 : 0
  statement {
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.trail[0].arn}:log-stream:*"]
  }
}

resource "aws_iam_role_policy" "trail" {
  count  = var.create_cloudtrail ? 1 : 0
  name   = "${var.name}-trail-logs"
  role   = aws_iam_role.trail[0].id
  policy = data.aws_iam_policy_document.trail_logs[0].json
}

resource "aws_cloudtrail" "this" {
  count                         = var.create_cloudtrail ? 1 : 0
  name                          = local.trail_name
  s3_bucket_name                = aws_s3_bucket.trail[0].id
  kms_key_id                    = aws_kms_key.audit.arn
  enable_log_file_validation    = true
  is_multi_region_trail         = true
  include_global_service_events = true
  cloud_watch_logs_group_arn    = "${aws_cloudwatch_log_group.trail[0].arn}:*"
  cloud_watch_logs_role_arn     = aws_iam_role.trail[0].arn
  tags                          = local.tags
  #checkov:skip=CKV_AWS_252:Per-file delivery notifications are not wanted; the ImportCertificate alarm below notifies SNS about what matters.

  event_selector {
    read_write_type           = "All"
    include_management_events = true
  }

  depends_on = [aws_s3_bucket_policy.trail, aws_iam_role_policy.trail]
}

# --- The alarm ---------------------------------------------------------------------------------

resource "aws_sns_topic" "alarms" {
  count             = var.alarm_sns_topic_arn == null ? 1 : 0
  name              = "${var.name}-alarms"
  kms_master_key_id = aws_kms_key.audit.arn
  tags              = local.tags
}

resource "aws_cloudwatch_log_metric_filter" "foreign_acm_import" {
  name           = "${var.name}-acm-import-by-other-principal"
  log_group_name = local.audit_log_group_name
  pattern        = local.foreign_import_filter

  metric_transformation {
    name          = "AcmImportByOtherPrincipal"
    namespace     = "certplane/${var.name}"
    value         = "1"
    default_value = "0"
  }

  depends_on = [aws_cloudwatch_log_group.trail]

  lifecycle {
    precondition {
      condition     = local.audit_log_group_name != null
      error_message = "with create_cloudtrail = false, set existing_cloudtrail_log_group_name to the log group of the trail that records ACM calls."
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "foreign_acm_import" {
  alarm_name          = "${var.name}-acm-import-by-other-principal"
  alarm_description   = "ACM ImportCertificate was called by a principal other than the certplane node role ${aws_iam_role.node.arn}: a certificate certplane does not govern, or an overwrite of one it does."
  namespace           = "certplane/${var.name}"
  metric_name         = "AcmImportByOtherPrincipal"
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  actions_enabled     = true
  alarm_actions       = [local.alarm_topic_arn]
  ok_actions          = [local.alarm_topic_arn]
  tags                = local.tags
  depends_on          = [aws_cloudwatch_log_metric_filter.foreign_acm_import]
}
