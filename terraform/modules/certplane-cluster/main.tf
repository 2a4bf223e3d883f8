data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_region" "current" {}

# Indexed by position (count), not by id: the ids may be unknown until apply when the subnets are
# created in the same configuration.
data "aws_subnet" "private" {
  count = length(var.private_subnet_ids)
  id    = var.private_subnet_ids[count.index]

  lifecycle {
    postcondition {
      condition     = self.vpc_id == var.vpc_id
      error_message = "every subnet of private_subnet_ids must belong to vpc_id."
    }
  }
}

data "aws_route53_zone" "private" {
  zone_id      = var.route53_zone_id
  private_zone = true
}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name

  tags = merge(var.tags, {
    "certplane:cluster" = var.name
    "managed-by"        = "terraform"
  })

  node_count   = coalesce(var.node_count, length(var.private_subnet_ids))
  subnet_count = length(var.private_subnet_ids)

  # Node "1".."N": subnet, zone and a fixed private IP. The IP lives on a network interface that
  # outlives the instance, so a replaced instance keeps its address, its TLS identity and its data.
  nodes = {
    for i in range(local.node_count) : tostring(i + 1) => {
      id        = i + 1
      subnet_id = var.private_subnet_ids[i % local.subnet_count]
      az        = data.aws_subnet.private[i % local.subnet_count].availability_zone
      ip = cidrhost(
        data.aws_subnet.private[i % local.subnet_count].cidr_block,
        var.node_host_number + floor(i / local.subnet_count)
      )
      ami = lookup(var.node_ami_ids, tostring(i + 1), var.ami_id)
    }
  }

  initial_member_ids = var.initial_member_ids == null ? [for n in local.nodes : n.id] : var.initial_member_ids
  initial_cluster = join(",", [
    for n in local.nodes : "${n.id}=${n.ip}:${var.cluster_port}" if contains(local.initial_member_ids, n.id)
  ])

  tls_listener  = var.listener_certificate_arn != null
  listener_port = coalesce(var.listener_port, local.tls_listener ? 443 : var.api_port)
  api_scheme    = local.tls_listener ? "https" : "http"
  zone_name     = trimsuffix(data.aws_route53_zone.private.name, ".")
  api_fqdn      = "${var.dns_name}.${local.zone_name}"

  data_dir = "/var/lib/certplane"

  alarm_topic_arn = var.alarm_sns_topic_arn != null ? var.alarm_sns_topic_arn : aws_sns_topic.alarms[0].arn
}
