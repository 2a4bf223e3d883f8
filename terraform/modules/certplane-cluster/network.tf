# Security groups, the nodes' stable network interfaces and the interface VPC endpoints.
#
#   clients (allowed_client_cidrs) ──► NLB sg ──api──► node sg ◄──cluster/api──► node sg
#   node sg ──443──► endpoint sg (ACM, ACM PCA, STS, SSM, ...)
#
# No rule opens SSH; operators use Session Manager.

resource "aws_security_group" "nlb" {
  name        = "${var.name}-nlb"
  description = "certplane internal load balancer"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-nlb" })
}

resource "aws_vpc_security_group_ingress_rule" "nlb_from_clients" {
  for_each          = toset(var.allowed_client_cidrs)
  security_group_id = aws_security_group.nlb.id
  description       = "certplane API clients"
  ip_protocol       = "tcp"
  from_port         = local.listener_port
  to_port           = local.listener_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "nlb_to_nodes" {
  security_group_id            = aws_security_group.nlb.id
  description                  = "forward to the nodes' API and health checks"
  ip_protocol                  = "tcp"
  from_port                    = var.api_port
  to_port                      = var.api_port
  referenced_security_group_id = aws_security_group.node.id
}

resource "aws_security_group" "node" {
  name        = "${var.name}-node"
  description = "certplane nodes"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-node" })
}

resource "aws_vpc_security_group_ingress_rule" "node_api_from_nlb" {
  security_group_id            = aws_security_group.node.id
  description                  = "API and /readyz health checks from the load balancer"
  ip_protocol                  = "tcp"
  from_port                    = var.api_port
  to_port                      = var.api_port
  referenced_security_group_id = aws_security_group.nlb.id
}

resource "aws_vpc_security_group_ingress_rule" "node_api_from_clients" {
  for_each          = toset(var.allowed_client_cidrs)
  security_group_id = aws_security_group.node.id
  description       = "API on each node for the CLI and Prometheus"
  ip_protocol       = "tcp"
  from_port         = var.api_port
  to_port           = var.api_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "node_api_from_nodes" {
  security_group_id            = aws_security_group.node.id
  description                  = "API between nodes (join, cluster status)"
  ip_protocol                  = "tcp"
  from_port                    = var.api_port
  to_port                      = var.api_port
  referenced_security_group_id = aws_security_group.node.id
}

resource "aws_vpc_security_group_ingress_rule" "node_cluster_from_nodes" {
  security_group_id            = aws_security_group.node.id
  description                  = "Raft gRPC with mutual TLS, between nodes only"
  ip_protocol                  = "tcp"
  from_port                    = var.cluster_port
  to_port                      = var.cluster_port
  referenced_security_group_id = aws_security_group.node.id
}

resource "aws_vpc_security_group_egress_rule" "node_cluster_to_nodes" {
  security_group_id            = aws_security_group.node.id
  description                  = "Raft gRPC to the other nodes"
  ip_protocol                  = "tcp"
  from_port                    = var.cluster_port
  to_port                      = var.cluster_port
  referenced_security_group_id = aws_security_group.node.id
}

resource "aws_vpc_security_group_egress_rule" "node_api_to_nodes" {
  security_group_id            = aws_security_group.node.id
  description                  = "API of the other nodes (join)"
  ip_protocol                  = "tcp"
  from_port                    = var.api_port
  to_port                      = var.api_port
  referenced_security_group_id = aws_security_group.node.id
}

resource "aws_vpc_security_group_egress_rule" "node_to_endpoints" {
  count                        = var.create_vpc_endpoints ? 1 : 0
  security_group_id            = aws_security_group.node.id
  description                  = "AWS APIs through the interface endpoints"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.endpoints[0].id
}

resource "aws_vpc_security_group_egress_rule" "node_https_extra" {
  for_each          = toset(var.https_egress_cidrs)
  security_group_id = aws_security_group.node.id
  description       = "AWS APIs of other regions through NAT or a proxy"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value
}

# Network interfaces that outlive the instances: fixed IPs, so the Raft membership, the node
# certificates' addresses and the target group entries stay valid when an instance is replaced.
resource "aws_network_interface" "node" {
  for_each          = local.nodes
  subnet_id         = each.value.subnet_id
  private_ips       = [each.value.ip]
  security_groups   = [aws_security_group.node.id]
  source_dest_check = true
  description       = "${var.name} node ${each.key}"
  tags              = merge(local.tags, { Name = "${var.name}-node-${each.key}", "certplane:node-id" = each.key })

  lifecycle {
    precondition {
      condition     = alltrue([for id in local.initial_member_ids : contains(keys(local.nodes), tostring(id))])
      error_message = "initial_member_ids must name existing node ids (1..node_count)."
    }
    precondition {
      condition     = length(local.initial_member_ids) == local.node_count || var.join_token_ssm_parameter != null
      error_message = "nodes outside initial_member_ids join a running cluster and need join_token_ssm_parameter."
    }
  }
}

# --- Interface VPC endpoints -------------------------------------------------------------------

locals {
  endpoint_services = var.create_vpc_endpoints ? toset(concat(
    ["acm", "acm-pca", "sts", "ssm", "ssmmessages", "ec2messages"],
    var.kek_source.type == "secretsmanager" ? ["secretsmanager"] : [],
  )) : toset([])
}

resource "aws_security_group" "endpoints" {
  count       = var.create_vpc_endpoints ? 1 : 0
  name        = "${var.name}-endpoints"
  description = "Interface endpoints used by the certplane nodes"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-endpoints" })
}

resource "aws_vpc_security_group_ingress_rule" "endpoints_from_nodes" {
  count                        = var.create_vpc_endpoints ? 1 : 0
  security_group_id            = aws_security_group.endpoints[0].id
  description                  = "HTTPS from the certplane nodes"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.node.id
}

resource "aws_vpc_endpoint" "interface" {
  for_each            = local.endpoint_services
  vpc_id              = var.vpc_id
  service_name        = "com.amazonaws.${local.region}.${each.value}"
  vpc_endpoint_type   = "Interface"
  subnet_ids          = var.private_subnet_ids
  security_group_ids  = [aws_security_group.endpoints[0].id]
  private_dns_enabled = true
  tags                = merge(local.tags, { Name = "${var.name}-${each.value}" })
}
