# AWS Backup of the data volumes: crash-consistent EBS snapshots, one per node per day. They are a
# second line of defence; the primary backup is `certplane snapshot save` (consistent, portable,
# restorable into a new cluster), see deploy/runbooks/snapshot-backup-restore.md.

resource "aws_backup_vault" "data" {
  name        = "${var.name}-data"
  kms_key_arn = aws_kms_key.data.arn
  tags        = local.tags
}

resource "aws_backup_plan" "data" {
  name = "${var.name}-data"
  tags = local.tags

  rule {
    rule_name         = "daily"
    target_vault_name = aws_backup_vault.data.name
    schedule          = var.backup_schedule
    start_window      = 60
    completion_window = 360

    lifecycle {
      delete_after = var.backup_retention_days
    }

    recovery_point_tags = merge(local.tags, { "certplane:backup" = "aws-backup" })

    dynamic "copy_action" {
      for_each = var.backup_copy_vault_arn == null ? [] : [var.backup_copy_vault_arn]
      content {
        destination_vault_arn = copy_action.value
        lifecycle {
          delete_after = var.backup_retention_days
        }
      }
    }
  }
}

data "aws_iam_policy_document" "backup_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["backup.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "backup" {
  name               = "${var.name}-backup"
  assume_role_policy = data.aws_iam_policy_document.backup_assume.json
  tags               = local.tags
}

resource "aws_iam_role_policy_attachment" "backup" {
  role       = aws_iam_role.backup.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AWSBackupServiceRolePolicyForBackup"
}

resource "aws_iam_role_policy_attachment" "restore" {
  role       = aws_iam_role.backup.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AWSBackupServiceRolePolicyForRestores"
}

resource "aws_backup_selection" "data" {
  name         = "${var.name}-data-volumes"
  plan_id      = aws_backup_plan.data.id
  iam_role_arn = aws_iam_role.backup.arn
  resources    = [for v in aws_ebs_volume.data : v.arn]
}
