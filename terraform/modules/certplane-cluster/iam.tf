# The nodes' instance role. Credentials reach certplane only through the instance profile (IMDSv2);
# the policy grants exactly the ACM and ACM PCA calls certplane makes, in the governed regions and on
# the governed CAs, plus reading its own secrets.
#
# The action lists are kept in locals named acm_actions and acm_pca_actions so that a test can
# compare them with the permissions the binary reports (`certplane aws iam-policy`).

locals {
  acm_regions = length(var.acm_regions) > 0 ? var.acm_regions : [local.region]

  # Calls that name one certificate (or create one) in a governed region.
  acm_certificate_actions = concat(
    [
      "acm:ImportCertificate",
      "acm:DescribeCertificate",
      "acm:AddTagsToCertificate",
      "acm:ListTagsForCertificate",
    ],
    var.acm_cleanup_enabled ? ["acm:DeleteCertificate"] : [],
    # acm-native issuers: ACM requests the certificate from the CA, certplane reads it back.
    length(var.acm_pca_arns) > 0 ? ["acm:RequestCertificate", "acm:GetCertificate"] : [],
  )
  # ListCertificates has no resource type: it is granted on "*" and held to the governed regions
  # with aws:RequestedRegion.
  acm_list_actions = ["acm:ListCertificates"]

  # Every ACM action granted, in one list.
  acm_actions = sort(concat(local.acm_certificate_actions, local.acm_list_actions))

  # Every ACM Private CA action granted, on the CAs in acm_pca_arns only.
  acm_pca_actions = length(var.acm_pca_arns) > 0 ? sort([
    "acm-pca:IssueCertificate",
    "acm-pca:GetCertificate",
    "acm-pca:GetCertificateAuthorityCertificate",
    "acm-pca:RevokeCertificate",
    "acm-pca:DescribeCertificateAuthority",
  ]) : []

  acm_certificate_arns = [
    for r in local.acm_regions : "arn:${local.partition}:acm:${r}:${local.account_id}:certificate/*"
  ]

  kek_ssm_parameter_arn = var.kek_source.type == "ssm" ? "arn:${local.partition}:ssm:${local.region}:${local.account_id}:parameter/${trimprefix(var.kek_source.id, "/")}" : null
  kek_secret_arn        = var.kek_source.type == "secretsmanager" ? var.kek_source.id : null

  # The SSM parameters a node reads at boot: the KEK (when in SSM), its TLS files, the join token.
  node_ssm_parameter_arns = compact(concat(
    [
      local.kek_ssm_parameter_arn,
      "arn:${local.partition}:ssm:${local.region}:${local.account_id}:parameter/${trimprefix(var.tls_ssm_prefix, "/")}/*",
    ],
    var.join_token_ssm_parameter == null ? [] : [
      "arn:${local.partition}:ssm:${local.region}:${local.account_id}:parameter/${trimprefix(var.join_token_ssm_parameter, "/")}",
    ],
  ))
}

data "aws_iam_policy_document" "assume_ec2" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "node" {
  name                 = "${var.name}-node"
  description          = "certplane nodes of cluster ${var.name}"
  assume_role_policy   = data.aws_iam_policy_document.assume_ec2.json
  max_session_duration = 3600
  tags                 = local.tags
}

resource "aws_iam_instance_profile" "node" {
  name = "${var.name}-node"
  role = aws_iam_role.node.name
  tags = local.tags
}

# Session Manager instead of SSH: the nodes open no port for administration.
resource "aws_iam_role_policy_attachment" "ssm_core" {
  role       = aws_iam_role.node.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

data "aws_iam_policy_document" "node" {
  statement {
    sid       = "AcmGovernedCertificates"
    actions   = local.acm_certificate_actions
    resources = local.acm_certificate_arns
  }

  statement {
    sid       = "AcmListInGovernedRegions"
    actions   = local.acm_list_actions
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "aws:RequestedRegion"
      values   = local.acm_regions
    }
  }

  dynamic "statement" {
    for_each = length(var.acm_pca_arns) > 0 ? [1] : []
    content {
      sid       = "AcmPcaGovernedAuthorities"
      actions   = local.acm_pca_actions
      resources = var.acm_pca_arns
    }
  }

  statement {
    sid       = "ReadNodeParameters"
    actions   = ["ssm:GetParameter"]
    resources = local.node_ssm_parameter_arns
  }

  dynamic "statement" {
    for_each = local.kek_secret_arn == null ? [] : [local.kek_secret_arn]
    content {
      sid       = "ReadKekSecret"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = var.secrets_kms_key_arn == null ? [] : [var.secrets_kms_key_arn]
    content {
      sid       = "DecryptNodeSecretsThroughTheirService"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["ssm.${local.region}.amazonaws.com", "secretsmanager.${local.region}.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role_policy" "node" {
  name   = "${var.name}-node"
  role   = aws_iam_role.node.id
  policy = data.aws_iam_policy_document.node.json
}
