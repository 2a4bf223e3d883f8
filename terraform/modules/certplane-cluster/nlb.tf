# Internal network load balancer in front of every node's API. Its target check is GET /readyz:
# a node answers 200 only when it is in a cluster with a known leader and caught up, so a node that
# lost its quorum or is still catching up receives no traffic.

resource "aws_lb" "api" {
  name                             = "${var.name}-api"
  internal                         = true
  load_balancer_type               = "network"
  subnets                          = var.private_subnet_ids
  security_groups                  = [aws_security_group.nlb.id]
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = var.nlb_deletion_protection
  tags                             = local.tags

  dynamic "access_logs" {
    for_each = var.nlb_access_log_bucket == null ? [] : [var.nlb_access_log_bucket]
    content {
      bucket  = access_logs.value
      prefix  = "${var.name}-api"
      enabled = true
    }
  }
}

resource "aws_lb_target_group" "api" {
  name                 = "${var.name}-api"
  vpc_id               = var.vpc_id
  port                 = var.api_port
  protocol             = "TCP"
  target_type          = "ip"
  deregistration_delay = 10
  tags                 = local.tags

  health_check {
    enabled             = true
    protocol            = "HTTP"
    port                = "traffic-port"
    path                = "/readyz"
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
}

# Targets are the fixed IPs of the network interfaces, so they stay registered across instance
# replacement.
resource "aws_lb_target_group_attachment" "api" {
  for_each         = local.nodes
  target_group_arn = aws_lb_target_group.api.arn
  target_id        = each.value.ip
  port             = var.api_port
  depends_on       = [aws_network_interface.node]
}

resource "aws_lb_listener" "api" {
  load_balancer_arn = aws_lb.api.arn
  port              = local.listener_port
  protocol          = local.tls_listener ? "TLS" : "TCP"
  certificate_arn   = var.listener_certificate_arn
  ssl_policy        = local.tls_listener ? "ELBSecurityPolicy-TLS13-1-2-2021-06" : null
  tags              = local.tags

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.api.arn
  }
}

# --- DNS in the private zone -------------------------------------------------------------------

resource "aws_route53_record" "api" {
  zone_id = var.route53_zone_id
  name    = local.api_fqdn
  type    = "A"

  alias {
    name                   = aws_lb.api.dns_name
    zone_id                = aws_lb.api.zone_id
    evaluate_target_health = true
  }
}

resource "aws_route53_record" "node" {
  for_each = var.create_node_records ? local.nodes : {}
  zone_id  = var.route53_zone_id
  name     = "node-${each.key}.${local.zone_name}"
  type     = "A"
  ttl      = 60
  records  = [aws_instance.node[each.key].private_ip] # = the network interface's fixed IP
}
